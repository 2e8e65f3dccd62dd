//! Scheduled work, every `CREWKIT_SCHEDULE_SECS`: close idle sessions and reconcile lost work.
//! Every worker process that serves the analysis queue runs this loop; a Redis lock (`SET NX`
//! with an expiry just under the interval) lets one of them do each round, and the queries use
//! `SKIP LOCKED`, so even two at once would not do the work twice.

use std::time::Duration;

use crate::WorkerState;
use crewkit_jobs::service;

pub async fn run(state: WorkerState) {
    let every = state.config.schedule_interval;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !take_turn(&state, every).await {
            continue;
        }
        let idle = state.config.idle_timeout.as_secs() as i64;
        if let Err(e) = service::close_idle(&state.db, &state.queues, idle).await {
            tracing::warn!(error = %e, "close_idle failed; next round retries");
        }
        if let Err(e) = service::reconcile(&state.db, &state.queues).await {
            tracing::warn!(error = %e, "reconcile failed; next round retries");
        }
    }
}

async fn take_turn(state: &WorkerState, every: Duration) -> bool {
    let mut conn = state.queues.connection();
    let lock = format!("{}:lock:schedule", state.queues.prefix());
    let ttl_ms = (every.as_millis() as u64).saturating_sub(100).max(100);
    let got: Result<Option<String>, _> = redis::cmd("SET")
        .arg(lock)
        .arg(std::process::id())
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(&mut conn)
        .await;
    matches!(got, Ok(Some(_)))
}
