//! Scheduled work, every `CREWKIT_SCHEDULE_SECS`: close idle sessions, reconcile lost work, and
//! vacuum ended tasks out of Redis.
//! Every worker process that serves the analysis queue runs this loop; a Redis lock (`SET NX`
//! with an expiry just under the interval) lets one of them do each round, and the queries use
//! `SKIP LOCKED`, so even two at once would not do the work twice.

use std::time::Duration;

use crate::WorkerState;
use crewkit_jobs::queue::JobKind;

/// How long the queue keeps an ended task (its payload, for `retry`, and its state); the job
/// record in PostgreSQL stays. apalis-redis itself never deletes anything.
const KEEP_ENDED_TASKS: Duration = Duration::from_secs(7 * 24 * 3600);
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
        for kind in JobKind::ALL {
            match state.queues.vacuum(*kind, KEEP_ENDED_TASKS, 10_000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(kind = kind.name(), removed = n, "vacuumed ended tasks from Redis"),
                Err(e) => tracing::warn!(error = %e, "vacuum failed; next round retries"),
            }
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
