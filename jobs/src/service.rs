//! Operations that change a session and queue the work that follows from the change. The change
//! and the job's record (status `queued`) commit together; the push to Redis comes after the
//! commit, so a worker can never read a job before the change that caused it. If the push fails
//! after the commit, the job stays `queued` in PostgreSQL and the reconcile job re-pushes it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::analyze_session::AnalyzeSession;
use crate::compact_session::CompactSession;
use crate::ids::{JobId, OrgId, SessionId};
use crate::index_session;
use crate::queue::{JobKind, Queues};
use crate::store::StoreResult;
use crate::store::compactions::{self, CompactionRow};
use crate::store::jobs::{self, JobStart};
use crate::store::sessions::{self, MetricsSnapshot, SessionChanges};

/// Prices what the client sent without a cost: each model's cost from its tokens, and the
/// session's as their sum when every model's price is known (otherwise it stays unknown).
pub fn fill_costs(m: &MetricsSnapshot) -> MetricsSnapshot {
    let table = crate::pricing::PriceTable::global();
    let mut m = m.clone();
    for u in &mut m.models {
        if u.cost_usd.is_none() {
            let usage = crate::pricing::Usage {
                input: u.input_tokens,
                output: u.output_tokens,
                cache_read: u.cache_read_tokens,
                cache_write: u.cache_write_tokens,
                cache_write_1h: u.cache_write_1h_tokens,
            };
            u.cost_usd = table.cost(&u.model, usage);
        }
    }
    if m.cost_usd.is_none() && !m.models.is_empty() {
        m.cost_usd = m.models.iter().map(|u| u.cost_usd).sum::<Option<rust_decimal::Decimal>>();
    }
    m
}

/// Creates a session (see `sessions::create_session`) and asks for it to be indexed.
pub async fn create_session(
    db: &PgPool,
    queues: &Queues,
    org: OrgId,
    user: crate::ids::UserId,
    new: &sessions::NewSession,
) -> StoreResult<sessions::Created> {
    let created = sessions::create_session(db, org, user, new).await?;
    if let sessions::Created::New(id) = created {
        index_session::request(queues, org, id, None).await;
    }
    Ok(created)
}

/// Applies a PATCH: metrics only ever rise; title and summary replace.
pub async fn update_session(
    db: &PgPool,
    queues: &Queues,
    org: OrgId,
    id: SessionId,
    metrics: Option<&MetricsSnapshot>,
    changes: &SessionChanges,
) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    sessions::lock_session(&mut tx, org, id).await?;
    if let Some(m) = metrics {
        sessions::apply_metrics(&mut tx, id, &fill_costs(m)).await?;
    }
    sessions::apply_changes(&mut tx, id, changes).await?;
    tx.commit().await?;
    index_session::request(queues, org, id, None).await;
    Ok(())
}

/// What ending a session takes.
#[derive(Debug, Clone, Default)]
pub struct EndSession {
    pub summary: Option<String>,
    pub end_reason: String,
    pub metrics: Option<MetricsSnapshot>,
    pub ended_at: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
}

async fn push_after_commit<T: serde::Serialize>(queues: &Queues, kind: JobKind, id: JobId, payload: &T) {
    if let Err(e) = queues.push_with_id(kind, id, payload).await {
        tracing::warn!(error = %e, job = %id, kind = kind.name(), "push after commit failed; reconcile will re-push the queued job");
    }
}

fn queued<'a>(kind: JobKind, org: OrgId, session: SessionId, request_id: Option<&'a str>) -> JobStart<'a> {
    JobStart {
        id: JobId::generate_ulid().0,
        org_id: org,
        kind: kind.name(),
        session_id: Some(session),
        request_id,
        max_attempts: kind.max_attempts() as i32,
    }
}

/// Ends an active session (`Conflict` when it has ended) and queues its analysis; the job id.
pub async fn end_session(
    db: &PgPool,
    queues: &Queues,
    org: OrgId,
    id: SessionId,
    end: &EndSession,
) -> StoreResult<JobId> {
    let mut tx = db.begin().await?;
    let ended_at = end.ended_at.unwrap_or_else(Utc::now);
    sessions::end_session(&mut tx, org, id, &end.end_reason, end.summary.as_deref(), ended_at).await?;
    if let Some(m) = &end.metrics {
        sessions::apply_metrics(&mut tx, id, &fill_costs(m)).await?;
    }
    let job = queued(JobKind::AnalyzeSession, org, id, end.request_id.as_deref());
    jobs::job_queued(&mut *tx, &job).await?;
    tx.commit().await?;
    let payload =
        AnalyzeSession { org_id: org, session_id: id, reason: "end".into(), request_id: end.request_id.clone() };
    push_after_commit(queues, JobKind::AnalyzeSession, job.id, &payload).await;
    index_session::request_now(queues, org, id, end.request_id.clone()).await;
    Ok(job.id)
}

/// Requests a compaction (idempotent on `request_id`): the record and its job.
pub async fn request_compaction(
    db: &PgPool,
    queues: &Queues,
    org: OrgId,
    id: SessionId,
    request_id: &str,
    trigger: &str,
) -> StoreResult<(CompactionRow, JobId, bool)> {
    let mut tx = db.begin().await?;
    sessions::lock_session(&mut tx, org, id).await?;
    let job = queued(JobKind::CompactSession, org, id, Some(request_id));
    let (row, created) = compactions::create(&mut tx, org, id, request_id, trigger, job.id).await?;
    if !created {
        tx.rollback().await?;
        let job_id = row.job_id.unwrap_or(job.id);
        return Ok((row, job_id, false));
    }
    jobs::job_queued(&mut *tx, &job).await?;
    tx.commit().await?;
    let payload =
        CompactSession { org_id: org, session_id: id, compaction_id: row.id, request_id: Some(request_id.to_string()) };
    push_after_commit(queues, JobKind::CompactSession, job.id, &payload).await;
    Ok((row, job.id, true))
}

/// After late events, a session's analysis is re-run once things settle: the first late batch
/// sets a per-session key (`SET NX`, 30 s) and queues an analysis 10 s later; later batches in
/// that window ride on it (the analysis reads the events when it runs).
pub async fn request_reanalysis(db: &PgPool, queues: &Queues, org: OrgId, id: SessionId) -> StoreResult<Option<JobId>> {
    let mut conn = queues.connection();
    let key = format!("{}:analyze-debounce:{id}", queues.prefix());
    let set: Option<String> =
        redis::cmd("SET").arg(&key).arg(1).arg("NX").arg("EX").arg(30).query_async(&mut conn).await.unwrap_or(None);
    if set.is_none() {
        return Ok(None);
    }
    let job = queued(JobKind::AnalyzeSession, org, id, None);
    jobs::job_queued(db, &job).await?;
    let payload = AnalyzeSession { org_id: org, session_id: id, reason: "late_events".into(), request_id: None };
    if let Err(e) = queues.push_at_with_id(JobKind::AnalyzeSession, job.id, &payload, 10).await {
        tracing::warn!(error = %e, "could not queue re-analysis; reconcile will");
    }
    Ok(Some(job.id))
}

/// Ends sessions without any activity for `idle_secs` (`end_reason: idle`) and queues their
/// analysis. `SKIP LOCKED` lets several workers run this at once without doing the work twice.
pub async fn close_idle(db: &PgPool, queues: &Queues, idle_secs: i64) -> StoreResult<usize> {
    let mut tx = db.begin().await?;
    let closed: Vec<(SessionId, OrgId)> = sqlx::query_as(
        "UPDATE conversations c SET status = 'ended', end_reason = 'idle', updated_at = now(),
                ended_at = GREATEST(COALESCE(c.last_event_at, c.started_at), c.started_at)
          WHERE c.id IN (SELECT id FROM conversations
                          WHERE status = 'active'
                            AND GREATEST(COALESCE(last_event_at, started_at), started_at, updated_at)
                                < now() - make_interval(secs => $1)
                          ORDER BY last_event_at NULLS FIRST LIMIT 500
                          FOR UPDATE SKIP LOCKED)
         RETURNING c.id, c.org_id",
    )
    .bind(idle_secs as f64)
    .fetch_all(&mut *tx)
    .await?;
    let mut queued_jobs = Vec::with_capacity(closed.len());
    for (id, org) in &closed {
        let job = queued(JobKind::AnalyzeSession, *org, *id, None);
        jobs::job_queued(&mut *tx, &job).await?;
        queued_jobs
            .push((job.id, AnalyzeSession { org_id: *org, session_id: *id, reason: "idle".into(), request_id: None }));
    }
    tx.commit().await?;
    for (job_id, payload) in &queued_jobs {
        push_after_commit(queues, JobKind::AnalyzeSession, *job_id, payload).await;
    }
    if !closed.is_empty() {
        tracing::info!(closed = closed.len(), "closed idle sessions");
    }
    Ok(closed.len())
}

/// Re-pushes work whose push was lost: jobs recorded `queued` for over a minute that the queue
/// does not hold, and ended sessions with neither an analysis nor an analysis job.
pub async fn reconcile(db: &PgPool, queues: &Queues) -> StoreResult<usize> {
    let stale: Vec<(JobId, OrgId, String, Option<SessionId>)> = sqlx::query_as(
        "SELECT id, org_id, kind, session_id FROM jobs
          WHERE status = 'queued' AND kind IN ('analyze_session', 'compact_session')
            AND created_at < now() - interval '1 minute' ORDER BY created_at LIMIT 500",
    )
    .fetch_all(db)
    .await?;
    let mut fixed = 0;
    for (job_id, org, kind, session) in stale {
        let (Some(kind), Some(session)) = (JobKind::ALL.iter().copied().find(|k| k.name() == kind), session) else {
            continue;
        };
        if queues.peek(kind, job_id).await.map(|q| q.is_some()).unwrap_or(true) {
            continue; // in the queue (or Redis unreachable: try again next time)
        }
        let pushed = match kind {
            JobKind::AnalyzeSession => {
                let payload =
                    AnalyzeSession { org_id: org, session_id: session, reason: "reconcile".into(), request_id: None };
                queues.push_with_id(kind, job_id, &payload).await
            }
            _ => {
                let cmp: Option<(crate::ids::CompactionId,)> =
                    sqlx::query_as("SELECT id FROM compactions WHERE job_id = $1")
                        .bind(job_id)
                        .fetch_optional(db)
                        .await?;
                let Some((compaction_id,)) = cmp else {
                    continue;
                };
                let payload = CompactSession { org_id: org, session_id: session, compaction_id, request_id: None };
                queues.push_with_id(kind, job_id, &payload).await
            }
        };
        if pushed.is_ok() {
            fixed += 1;
        }
    }
    let unanalysed: Vec<(SessionId, OrgId)> = sqlx::query_as(
        "SELECT c.id, c.org_id FROM conversations c
          WHERE c.status = 'ended' AND c.ended_at < now() - interval '1 minute'
            AND NOT EXISTS (SELECT 1 FROM session_analyses a WHERE a.conversation_id = c.id)
            AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.session_id = c.id AND j.kind = 'analyze_session'
                             AND j.status IN ('queued', 'running'))
          LIMIT 500",
    )
    .fetch_all(db)
    .await?;
    for (id, org) in unanalysed {
        let job = queued(JobKind::AnalyzeSession, org, id, None);
        jobs::job_queued(db, &job).await?;
        let payload = AnalyzeSession { org_id: org, session_id: id, reason: "reconcile".into(), request_id: None };
        push_after_commit(queues, JobKind::AnalyzeSession, job.id, &payload).await;
        fixed += 1;
    }
    if fixed > 0 {
        tracing::info!(fixed, "reconcile re-queued lost work");
    }
    Ok(fixed)
}

/// Why a job cannot be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("only a failed job can be retried; this one is {0}")]
    NotFailed(String),
    #[error("the job's payload is no longer in the queue")]
    Gone,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// Re-runs a failed job under the same id, with its attempts reset.
pub async fn retry_job(db: &PgPool, queues: &Queues, org: OrgId, id: JobId) -> Result<(), RetryError> {
    let job = jobs::get_job(db, org, id).await?.ok_or(crate::store::StoreError::NotFound("job"))?;
    if job.status != "failed" {
        return Err(RetryError::NotFailed(job.status));
    }
    let kind = JobKind::ALL.iter().copied().find(|k| k.name() == job.kind).ok_or(RetryError::Gone)?;
    if !queues.requeue(kind, id).await? {
        return Err(RetryError::Gone);
    }
    sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, finished_at = NULL, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await
    .map_err(crate::store::StoreError::from)?;
    Ok(())
}
