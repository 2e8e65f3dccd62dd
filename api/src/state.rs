//! What every request shares: the pools, the queues and the caches of the hot path.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use moka::future::Cache;
use sqlx::PgPool;

use crewkit_jobs::Config;
use crewkit_jobs::ids::{OrgId, SessionId};
use crewkit_jobs::queue::Queues;
use crewkit_jobs::store::orgs::Principal;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queues: Queues,
    pub config: Arc<Config>,
    /// key hash → principal. Bounded by time so a revoked key stops working within the TTL.
    pub principals: Cache<String, Principal>,
    /// (org, path session id) → session. Sessions are never deleted, so entries stay valid;
    /// the ingestion hot path then needs no PostgreSQL round trip at all.
    pub sessions: Cache<(OrgId, String), SessionId>,
    /// Ingestion jobs waiting in Redis, sampled in the background (`backpressure`), so the hot
    /// path checks a number instead of asking Redis.
    pub ingest_depth: Arc<AtomicU64>,
    /// Per-key request counts, flushed to Redis in the background (`ratelimit`).
    pub limiter: crate::ratelimit::Limiter,
    /// Meilisearch or the embedded PostgreSQL full text.
    pub search: crewkit_jobs::search_index::SearchBackend,
}

impl AppState {
    pub fn new(config: Config, db: PgPool, queues: Queues, search: crewkit_jobs::search_index::SearchBackend) -> Self {
        Self {
            principals: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.auth_cache_ttl.max(Duration::from_millis(1)))
                .build(),
            sessions: Cache::builder().max_capacity(200_000).build(),
            ingest_depth: Arc::new(AtomicU64::new(0)),
            limiter: crate::ratelimit::Limiter::default(),
            search,
            db,
            queues,
            config: Arc::new(config),
        }
    }
}
