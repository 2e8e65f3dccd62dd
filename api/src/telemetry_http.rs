//! HTTP metrics (requests and latency by route template and status) and `GET /metrics`.

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};

use crate::state::AppState;
use crewkit_jobs::metrics;
use crewkit_jobs::queue::JobKind;

/// The route template of a path, so ids do not explode the label set: the organisation segment
/// becomes `{org}`, and any segment with a digit (ids, agent session ids) becomes `{id}`.
pub fn route_of(path: &str) -> String {
    if matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json") || path.starts_with("/docs") {
        return path.to_string();
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mapped: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == 0 {
                "{org}"
            } else if s.bytes().any(|b| b.is_ascii_digit()) || s.len() > 40 {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    format!("/{}", mapped.join("/"))
}

pub async fn measure<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let route = route_of(req.uri().path());
    let method = req.method().to_string();
    let resp = next.call(req).await.map(IntoResponse::into_response);
    let status = match &resp {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status().as_u16(),
    }
    .to_string();
    let labels = [("route", route.as_str()), ("method", method.as_str()), ("status", status.as_str())];
    metrics::inc("crewkit_http_requests_total", "HTTP requests by route, method and status", &labels, 1);
    metrics::observe(
        "crewkit_http_request_duration_seconds",
        "HTTP request latency by route",
        &[("route", route.as_str()), ("method", method.as_str())],
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// `GET /metrics`: Prometheus text, with each queue's depth read at scrape time.
#[poem::handler]
pub async fn metrics_endpoint(state: poem::web::Data<&AppState>) -> Response {
    let mut gauges = Vec::new();
    for kind in JobKind::ALL {
        if let Ok(depth) = state.queues.depth(*kind).await {
            gauges.push((
                "crewkit_queue_depth",
                "jobs waiting in a queue (active and scheduled)",
                vec![("kind", kind.name().to_string())],
                depth as f64,
            ));
        }
    }
    Response::builder().content_type("text/plain; version=0.0.4").body(metrics::render(&gauges))
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn ids_and_orgs_become_placeholders() {
        assert_eq!(route_of("/acme/sessions/ses_0123456789abcdef0123456789abcdef/end"), "/{org}/sessions/{id}/end");
        assert_eq!(
            route_of("/acme/observability/sessions/7d1e0b6a-2c4f/events"),
            "/{org}/observability/sessions/{id}/events"
        );
        assert_eq!(route_of("/acme/sessions/analytics/by-agent"), "/{org}/sessions/analytics/by-agent");
        assert_eq!(route_of("/readyz"), "/readyz");
    }
}
