//! `/healthz` (the process is up) and `/readyz` (it can serve: PostgreSQL and Redis answer).

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::state::AppState;

pub struct HealthApi;

/// Health of the process and its dependencies.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Each dependency checked: `ok` or what failed.
    pub checks: std::collections::BTreeMap<String, String>,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// A dependency is unavailable.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process runs; checks nothing else.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health { status: "ok".into(), checks: Default::default() })
    }

    /// Readiness
    ///
    /// 200 when PostgreSQL, Redis and (when configured) Meilisearch answer, else 503 naming what
    /// failed.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&AppState>) -> ReadyResponse {
        let mut checks = std::collections::BTreeMap::new();
        let pg = sqlx::query("SELECT 1").execute(&state.db).await;
        checks.insert("postgres".to_string(), pg.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()));
        let redis = state.queues.ping().await;
        checks.insert("redis".to_string(), redis.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()));
        let search = state.search.healthy().await;
        if state.search.engine() != "postgres" {
            checks.insert(
                state.search.engine().to_string(),
                search.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()),
            );
        }
        if pg.is_ok() && redis.is_ok() && search.is_ok() {
            ReadyResponse::Ready(Json(Health { status: "ok".into(), checks }))
        } else {
            ReadyResponse::NotReady(Json(Health { status: "unavailable".into(), checks }))
        }
    }
}
