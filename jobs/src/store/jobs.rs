//! Job records: the lifecycle of background work (queued → running → succeeded | failed), in the
//! shape `/jobs/{id}` returns. Ingestion jobs get their record when a worker first runs them (the
//! ingestion hot path writes nothing to PostgreSQL); until then the queue in Redis answers for them.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::StoreResult;
use crate::ids::{JobId, OrgId, SessionId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: JobId,
    pub org_id: OrgId,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub error: Option<String>,
    pub session_id: Option<SessionId>,
    pub request_id: Option<String>,
    pub result: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What a job record is created with.
#[derive(Debug, Clone)]
pub struct JobStart<'a> {
    pub id: JobId,
    pub org_id: OrgId,
    pub kind: &'a str,
    pub session_id: Option<SessionId>,
    pub request_id: Option<&'a str>,
    pub max_attempts: i32,
}

/// Records that an attempt started (creating the record on the first one). `attempts` counts
/// starts, so an attempt cut short by a killed worker counts too.
pub async fn job_running(db: impl PgExecutor<'_>, j: &JobStart<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, org_id, kind, status, attempts, max_attempts, session_id, request_id, started_at, created_at)
         VALUES ($1, $2, $3, 'running', 1, $4, $5, $6, now(), to_timestamp($7::float8 / 1000))
         ON CONFLICT (id) DO UPDATE SET status = 'running', attempts = jobs.attempts + 1,
                started_at = COALESCE(jobs.started_at, now()), updated_at = now()",
    )
    .bind(j.id)
    .bind(j.org_id)
    .bind(j.kind)
    .bind(j.max_attempts)
    .bind(j.session_id)
    .bind(j.request_id)
    // The job id is a ULID: its first 48 bits are when it was queued.
    .bind(j.id.ulid().timestamp_ms() as f64)
    .execute(db)
    .await?;
    Ok(())
}

/// Records how an attempt ended, in one statement, creating the record when the attempt was too
/// short to have written a `running` one (`counted` says whether it did, so the attempt is
/// counted once either way). `final_status` is `succeeded`, `failed` (no more attempts) or
/// `queued` (failed, will be retried).
pub async fn job_finished(
    db: impl PgExecutor<'_>,
    j: &JobStart<'_>,
    started_at: DateTime<Utc>,
    counted: bool,
    final_status: &str,
    error: Option<&str>,
    result: Option<&serde_json::Value>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, org_id, kind, status, attempts, max_attempts, session_id, request_id, error, result,
                           started_at, created_at, updated_at, finished_at)
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, to_timestamp($11::float8 / 1000), now(),
                 CASE WHEN $4 IN ('succeeded', 'failed') THEN now() END)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error,
                attempts = jobs.attempts + CASE WHEN $12 THEN 0 ELSE 1 END,
                result = COALESCE(EXCLUDED.result, jobs.result),
                started_at = COALESCE(jobs.started_at, EXCLUDED.started_at), updated_at = now(),
                finished_at = EXCLUDED.finished_at",
    )
    .bind(j.id)
    .bind(j.org_id)
    .bind(j.kind)
    .bind(final_status)
    .bind(j.max_attempts)
    .bind(j.session_id)
    .bind(j.request_id)
    .bind(error)
    .bind(result)
    .bind(started_at)
    .bind(j.id.ulid().timestamp_ms() as f64)
    .bind(counted)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get_job(db: impl PgExecutor<'_>, org: OrgId, id: JobId) -> StoreResult<Option<JobRow>> {
    Ok(sqlx::query_as(
        "SELECT id, org_id, kind, status, attempts, max_attempts, error, session_id, request_id, result,
                created_at, started_at, finished_at, updated_at
           FROM jobs WHERE org_id = $1 AND id = $2",
    )
    .bind(org)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Records a job as queued, in the caller's transaction (before the push, see `Queues::push_with_id`).
pub async fn job_queued(db: impl PgExecutor<'_>, j: &JobStart<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, org_id, kind, status, attempts, max_attempts, session_id, request_id)
         VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6)",
    )
    .bind(j.id)
    .bind(j.org_id)
    .bind(j.kind)
    .bind(j.max_attempts)
    .bind(j.session_id)
    .bind(j.request_id)
    .execute(db)
    .await?;
    Ok(())
}
