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
        sessions::apply_metrics(&mut tx, id, m).await?;
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

async fn push_after_commit<T: serde::Serialize>(
    queues: &Queues,
    kind: JobKind,
    id: JobId,
    payload: &T,
) {
    if let Err(e) = queues.push_with_id(kind, id, payload).await {
        tracing::warn!(error = %e, job = %id, kind = kind.name(), "push after commit failed; reconcile will re-push the queued job");
    }
}

fn queued<'a>(
    kind: JobKind,
    org: OrgId,
    session: SessionId,
    request_id: Option<&'a str>,
) -> JobStart<'a> {
    JobStart {
        id: JobId::generate_ulid().0,
        org_id: org,
        kind: kind.name(),
        session_id: Some(session),
        request_id,
        attempt: 0,
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
    sessions::end_session(
        &mut tx,
        org,
        id,
        &end.end_reason,
        end.summary.as_deref(),
        ended_at,
    )
    .await?;
    if let Some(m) = &end.metrics {
        sessions::apply_metrics(&mut tx, id, m).await?;
    }
    let job = queued(JobKind::AnalyzeSession, org, id, end.request_id.as_deref());
    jobs::job_queued(&mut *tx, &job).await?;
    tx.commit().await?;
    let payload = AnalyzeSession {
        org_id: org,
        session_id: id,
        reason: "end".into(),
        request_id: end.request_id.clone(),
    };
    push_after_commit(queues, JobKind::AnalyzeSession, job.id, &payload).await;
    index_session::request(queues, org, id, end.request_id.clone()).await;
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
    let payload = CompactSession {
        org_id: org,
        session_id: id,
        compaction_id: row.id,
        request_id: Some(request_id.to_string()),
    };
    push_after_commit(queues, JobKind::CompactSession, job.id, &payload).await;
    Ok((row, job.id, true))
}
