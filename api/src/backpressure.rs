//! Ingestion refuses what it cannot queue: when more than `CREWKIT_MAX_QUEUE_DEPTH` ingestion jobs
//! wait, new batches get 503 with `Retry-After` and nothing is accepted (the forwarder spools and
//! retries). The depth is sampled every 250 ms in the background, so the hot path reads an atomic
//! instead of making a second Redis round trip; the cost is that the limit may be overshot by
//! what arrives within one sampling period.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::ApiError;
use crate::state::AppState;
use crewkit_jobs::queue::JobKind;

const EVERY: Duration = Duration::from_millis(250);

/// Samples the ingestion queue's depth for as long as the process lives.
pub async fn sample(state: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        match state.queues.depth(JobKind::PersistEvents).await {
            Ok(depth) => state.ingest_depth.store(depth, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "could not sample the ingestion queue"),
        }
    }
}

/// 503 when the ingestion queue is over its limit.
pub fn check(state: &AppState) -> Result<(), ApiError> {
    let depth = state.ingest_depth.load(Ordering::Relaxed);
    if depth > state.config.max_queue_depth {
        tracing::warn!(depth, max = state.config.max_queue_depth, "ingestion queue full; refusing");
        let mut e = ApiError::new(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "the ingestion queue is full; nothing was accepted, retry later",
        );
        e.retry_after = Some(5);
        return Err(e);
    }
    Ok(())
}
