//! The apalis task functions: one per job kind. Each one only wires the job's handler (in
//! `crewkit-jobs`, callable without Redis) into the lifecycle wrapper, and queues what follows.

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId as QueueTaskId};
use serde_json::Value;

use crate::WorkerState;
use crate::lifecycle::{AttemptOf, tracked};
use crewkit_jobs::analyze_session::{self, AnalyzeSession};
use crewkit_jobs::compact_session::{self, CompactSession};
use crewkit_jobs::ids::{OrgId, SessionId};
use crewkit_jobs::index_session::{self, IndexSession};
use crewkit_jobs::lifecycle::JobError;
use crewkit_jobs::persist_events::{self, PersistEvents, PersistOutcome};
use crewkit_jobs::queue::JobKind;
use crewkit_jobs::service;

fn attempt_of<'a>(
    kind: JobKind,
    task_id: &'a QueueTaskId,
    attempt: &Attempt,
    org: OrgId,
    session: SessionId,
    request_id: Option<&'a str>,
) -> AttemptOf<'a> {
    AttemptOf { kind, task_id, attempt: attempt.current(), org_id: org, session_id: Some(session), request_id }
}

/// The job's work, after any injected fault (tests only).
async fn faulted<T>(
    state: &WorkerState,
    kind: JobKind,
    work: impl Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    state.faults.before(kind.name()).await?;
    work.await
}

pub async fn persist_events_task(
    job: PersistEvents,
    state: Data<WorkerState>,
    task_id: QueueTaskId,
    attempt: Attempt,
) -> Result<PersistOutcome, BoxDynError> {
    let kind = JobKind::PersistEvents;
    let of = attempt_of(kind, &task_id, &attempt, job.org_id, job.session_id, job.request_id.as_deref());
    let outcome = tracked(&state.records, of, faulted(&state, kind, persist_events::run(&state.db, &job))).await;
    let (org, session) = (job.org_id, job.session_id);
    // Done unless it will be retried: an error that is not an AbortError goes back to the queue.
    let final_attempt = match &outcome {
        Ok(_) => true,
        Err(e) => e.downcast_ref::<apalis::prelude::AbortError>().is_some(),
    };
    if final_attempt {
        state.queues.ingest_done(session).await;
    }
    let outcome = outcome?;
    for event_id in &outcome.pre_compacts {
        // A PreCompact hook: the agent is about to compact its context, so do ours.
        let request_id = format!("pre_compact:{event_id}");
        if let Err(e) =
            service::request_compaction(&state.db, &state.queues, org, session, &request_id, "pre_compact").await
        {
            tracing::warn!(error = %e, "could not queue the compaction a PreCompact event asks for");
        }
    }
    if outcome.late
        && let Err(e) = service::request_reanalysis(&state.db, &state.queues, org, session).await
    {
        tracing::warn!(error = %e, "could not queue re-analysis after late events");
    }
    if outcome.inserted > 0 {
        index_session::request(&state.queues, org, session, job.request_id.clone()).await;
    }
    Ok(outcome)
}

pub async fn analyze_session_task(
    job: AnalyzeSession,
    state: Data<WorkerState>,
    task_id: QueueTaskId,
    attempt: Attempt,
) -> Result<Value, BoxDynError> {
    let kind = JobKind::AnalyzeSession;
    let of = attempt_of(kind, &task_id, &attempt, job.org_id, job.session_id, job.request_id.as_deref());
    let work = async {
        wait_for_ingestion(&state, job.session_id).await;
        analyze_session::run(&state.db, &job).await
    };
    let result = tracked(&state.records, of, faulted(&state, kind, work)).await?;
    index_session::request(&state.queues, job.org_id, job.session_id, job.request_id.clone()).await;
    Ok(result)
}

/// Waits (at most 10 s) until every ingestion job accepted for the session so far is persisted,
/// so an analysis or index queued by `end` sees all the events sent before it.
async fn wait_for_ingestion(state: &WorkerState, session: SessionId) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match state.queues.ingest_pending(session).await {
            Ok(n) if n > 0 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(n) if n > 0 => {
                tracing::warn!(pending = n, "analysing before every accepted batch was persisted");
                return;
            }
            _ => return,
        }
    }
}

pub async fn compact_session_task(
    job: CompactSession,
    state: Data<WorkerState>,
    task_id: QueueTaskId,
    attempt: Attempt,
) -> Result<Value, BoxDynError> {
    let kind = JobKind::CompactSession;
    let of = attempt_of(kind, &task_id, &attempt, job.org_id, job.session_id, job.request_id.as_deref());
    let result = tracked(&state.records, of, faulted(&state, kind, compact_session::run(&state.db, &job))).await;
    if result.is_err() {
        // The record follows its job: failed once the job has no attempts left.
        let _ = sqlx::query(
            "UPDATE compactions c SET status = 'failed', finished_at = now() FROM jobs j
              WHERE c.id = $1 AND j.id = c.job_id AND j.status = 'failed'",
        )
        .bind(job.compaction_id)
        .execute(&state.db)
        .await;
    }
    result
}

pub async fn index_session_task(
    job: IndexSession,
    state: Data<WorkerState>,
    task_id: QueueTaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let kind = JobKind::IndexSession;
    let of = attempt_of(kind, &task_id, &attempt, job.org_id, job.session_id, job.request_id.as_deref());
    let work = async {
        if job.after_ingestion {
            wait_for_ingestion(&state, job.session_id).await;
        }
        index_session::run(&state.db, &state.queues, &state.search, &job).await
    };
    tracked(&state.records, of, faulted(&state, kind, work)).await
}
