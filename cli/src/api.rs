//! The few API calls the forwarder makes, with a deadline on each.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where and as whom to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub api_key: String,
    pub org: String,
}

/// How a call ended.
#[derive(Debug)]
pub enum Sent {
    Ok(Value),
    /// The server refused the request for good (4xx other than 408/429): do not retry it.
    Refused(u16, String),
    /// Not sent, or not acknowledged: keep it for later.
    Failed(String),
}

pub struct Client {
    http: reqwest::Client,
    target: Target,
    deadline: Instant,
    pause: std::sync::Mutex<Option<u64>>,
}

impl Client {
    pub fn new(target: Target, deadline: Instant) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .user_agent(concat!("crewkit-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client builds");
        Self { http, target, deadline, pause: std::sync::Mutex::new(None) }
    }

    /// The `Retry-After` (seconds) of a 429 or 503 answer, if one came.
    pub fn retry_after(&self) -> Option<u64> {
        *self.pause.lock().expect("pause lock")
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| *d > Duration::from_millis(20))
    }

    async fn post(&self, path: &str, body: &Value) -> Sent {
        let Some(timeout) = self.remaining() else {
            return Sent::Failed("out of time".into());
        };
        let url = format!("{}/{}{}", self.target.url.trim_end_matches('/'), self.target.org, path);
        let res = self.http.post(url).bearer_auth(&self.target.api_key).timeout(timeout).json(body).send().await;
        match res {
            Err(e) => Sent::Failed(e.to_string()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                if matches!(status, 429 | 503) {
                    let secs =
                        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                    if let Some(secs) = secs {
                        *self.pause.lock().expect("pause lock") = Some(secs);
                    }
                }
                let text = resp.text().await.unwrap_or_default();
                match status {
                    200..=299 => Sent::Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
                    408 | 429 => Sent::Failed(format!("{status}: {text}")),
                    400..=499 => Sent::Refused(status, text),
                    _ => Sent::Failed(format!("{status}: {text}")),
                }
            }
        }
    }

    /// Creates (or finds: the call is idempotent on `agent_session_id`) the session; its id and
    /// its run's id.
    pub async fn ensure_session(&self, session: &Value) -> Result<(String, String), Sent> {
        match self.post("/sessions", session).await {
            Sent::Ok(v) => {
                let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
                match (field("id"), field("run_id")) {
                    (Some(id), Some(run)) => Ok((id, run)),
                    _ => Err(Sent::Failed("no id in response".into())),
                }
            }
            other => Err(other),
        }
    }

    pub async fn send_events(&self, session_id: &str, events: &[Value]) -> Sent {
        self.post(&format!("/observability/sessions/{session_id}/events"), &json!({ "events": events })).await
    }
}
