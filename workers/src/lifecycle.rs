//! The lifecycle of every job attempt, kept in one place rather than in each handler: the job
//! record goes to `running` (for attempts longer than `RECORD_RUNNING_AFTER`), then to
//! `succeeded`, `failed` or back to `queued` (a retry), with the attempt count and the error in
//! the shape `/jobs/{id}` returns.
//!
//! apalis-redis 1.0.0 re-schedules every failed attempt itself (at now + attempt seconds) until a
//! hard-coded 25 attempts and ignores `max_attempts`, so the cap is enforced here: a permanent
//! error, a panic, or the last allowed attempt returns `AbortError`, which apalis-redis treats as
//! final (the task goes to the queue's dead set). Its backoff is linear and fixed, so
//! `hold_before_retry` stretches it to exponential.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use apalis::prelude::{AbortError, BoxDynError, TaskId as QueueTaskId};
use futures::FutureExt;
use serde::Serialize;
use sqlx::PgPool;

use crewkit_jobs::ids::{JobId, OrgId, SessionId};
use crewkit_jobs::lifecycle::JobError;
use crewkit_jobs::metrics;
use crewkit_jobs::queue::JobKind;
use crewkit_jobs::store::jobs::{self, JobStart};

/// Which job an attempt belongs to.
pub struct AttemptOf<'a> {
    pub kind: JobKind,
    pub task_id: &'a QueueTaskId,
    pub attempt: usize,
    pub org_id: OrgId,
    pub session_id: Option<SessionId>,
    pub request_id: Option<&'a str>,
}

fn job_id(task_id: &QueueTaskId) -> Option<JobId> {
    task_id.to_string().parse::<ulid::Ulid>().ok().map(|u| JobId(uuid::Uuid::from_u128(u.0)))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// How long an attempt runs before its `running` record is written. Ingestion batches take a few
/// milliseconds: two record writes each (running, then the outcome) were a fifth of what
/// PostgreSQL did per batch (S4). The cost is that an attempt killed within this time is not
/// counted in the record's `attempts` (the queue still re-runs it).
const RECORD_RUNNING_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs one attempt of a job and records its outcome.
pub async fn tracked<T, Fut>(db: &PgPool, of: AttemptOf<'_>, work: Fut) -> Result<T, BoxDynError>
where
    T: Serialize,
    Fut: Future<Output = Result<T, JobError>>,
{
    let Some(id) = job_id(of.task_id) else {
        return Err(AbortError::new(format!("task id {} is not a ULID", of.task_id)).into());
    };
    let max = of.kind.max_attempts();
    let attempt = of.attempt.max(1);
    let span = tracing::info_span!("job", kind = of.kind.name(), job = %id, attempt, request_id = of.request_id);
    let start = JobStart {
        id,
        org_id: of.org_id,
        kind: of.kind.name(),
        session_id: of.session_id,
        request_id: of.request_id,
        max_attempts: max as i32,
    };
    let kind_label = [("kind", of.kind.name())];
    metrics::inc("crewkit_jobs_started_total", "job attempts started", &kind_label, 1);
    let started = std::time::Instant::now();
    let started_at = chrono::Utc::now();
    let work = AssertUnwindSafe(tracing::Instrument::instrument(work, span.clone())).catch_unwind();
    tokio::pin!(work);
    // An attempt that ends within RECORD_RUNNING_AFTER (nearly every ingestion batch) writes its
    // record once, when it ends; a longer one shows as `running` meanwhile, and if its worker is
    // killed that record is what counts the attempt.
    let mut counted = false;
    let outcome = tokio::select! {
        biased;
        outcome = &mut work => outcome,
        () = tokio::time::sleep(RECORD_RUNNING_AFTER) => {
            let (outcome, recorded) = tokio::join!(&mut work, jobs::job_running(db, &start));
            match recorded {
                Ok(()) => counted = true,
                // Without its record the job can still run; the outcome below writes one.
                Err(e) => tracing::warn!(parent: &span, error = %e, "could not record job start"),
            }
            outcome
        }
    };
    metrics::observe(
        "crewkit_job_duration_seconds",
        "job attempt duration",
        &kind_label,
        started.elapsed().as_secs_f64(),
    );
    let (status, error, result) = match outcome {
        Ok(Ok(value)) => ("succeeded", None, Ok(value)),
        Ok(Err(JobError::Permanent(msg))) => ("failed", Some(msg.clone()), Err(AbortError::new(msg).into())),
        Ok(Err(JobError::Retryable(msg))) if attempt >= max => {
            let msg = format!("{msg} (gave up after {attempt} attempts)");
            ("failed", Some(msg.clone()), Err(AbortError::new(msg).into()))
        }
        Ok(Err(JobError::Retryable(msg))) => ("queued", Some(msg.clone()), Err(BoxDynError::from(msg))),
        Err(panic) => {
            let msg = format!("job panicked: {}", panic_message(&*panic));
            ("failed", Some(msg.clone()), Err(AbortError::new(msg).into()))
        }
    };
    let value = result.as_ref().ok().and_then(|v| serde_json::to_value(v).ok());
    let counter = match status {
        "succeeded" => "crewkit_jobs_succeeded_total",
        "queued" => "crewkit_jobs_retried_total",
        _ => "crewkit_jobs_failed_total",
    };
    metrics::inc(counter, "job attempts by outcome", &kind_label, 1);
    match status {
        "succeeded" => tracing::info!(parent: &span, "job succeeded"),
        "queued" => tracing::warn!(parent: &span, error = error.as_deref(), "job attempt failed; will retry"),
        _ => tracing::error!(parent: &span, error = error.as_deref(), "job failed"),
    }
    if let Err(e) = jobs::job_finished(db, &start, started_at, counted, status, error.as_deref(), value.as_ref()).await
    {
        tracing::warn!(parent: &span, error = %e, "could not record job outcome");
    }
    if status == "queued" {
        tokio::time::sleep(hold_before_retry(attempt)).await;
    }
    result
}

/// apalis-redis re-schedules a failed attempt `attempt` seconds later, a linear backoff that
/// cannot be configured. Holding the failed attempt this much longer before handing it back
/// makes the gaps between attempts exponential: 1, 2, 4, 8, … seconds. The cost is a worker slot
/// held meanwhile, which is also a natural brake while a dependency is down.
pub fn hold_before_retry(attempt: usize) -> std::time::Duration {
    let wanted = 1u64 << attempt.saturating_sub(1).min(10);
    std::time::Duration::from_secs(wanted.saturating_sub(attempt as u64))
}

#[cfg(test)]
mod tests {
    use super::hold_before_retry;

    #[test]
    fn with_apalis_redis_own_delay_the_gaps_double() {
        let gaps: Vec<u64> = (1..=6).map(|a| hold_before_retry(a).as_secs() + a as u64).collect();
        assert_eq!(gaps, [1, 2, 4, 8, 16, 32]);
    }
}
