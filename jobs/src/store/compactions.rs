//! Compaction records: one per `(session, request id)`, with the job that produces its digest.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::StoreResult;
use crate::ids::{CompactionId, JobId, OrgId, SessionId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CompactionRow {
    pub id: CompactionId,
    pub conversation_id: SessionId,
    pub request_id: String,
    pub job_id: Option<JobId>,
    pub status: String,
    pub trigger: String,
    pub digest: Option<serde_json::Value>,
    pub first_event_seq: Option<i64>,
    pub last_event_seq: Option<i64>,
    pub size_before: Option<i64>,
    pub size_after: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, conversation_id, request_id, job_id, status, trigger, digest, first_event_seq,
    last_event_seq, size_before, size_after, created_at, finished_at";

/// Creates the compaction for this request id, or returns the existing one (`false`).
pub async fn create(
    conn: &mut sqlx::PgConnection,
    org: OrgId,
    session: SessionId,
    request_id: &str,
    trigger: &str,
    job: JobId,
) -> StoreResult<(CompactionRow, bool)> {
    let sql = format!(
        "INSERT INTO compactions (id, org_id, conversation_id, request_id, job_id, status, trigger)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6)
         ON CONFLICT (conversation_id, request_id) DO NOTHING RETURNING {COLUMNS}"
    );
    let created: Option<CompactionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(CompactionId::generate())
        .bind(org)
        .bind(session)
        .bind(request_id)
        .bind(job)
        .bind(trigger)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = created {
        return Ok((row, true));
    }
    let sql = format!("SELECT {COLUMNS} FROM compactions WHERE conversation_id = $1 AND request_id = $2");
    let row = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(session).bind(request_id).fetch_one(&mut *conn).await?;
    Ok((row, false))
}

pub async fn list(db: impl PgExecutor<'_>, org: OrgId, session: SessionId) -> StoreResult<Vec<CompactionRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM compactions WHERE org_id = $1 AND conversation_id = $2 ORDER BY created_at DESC, id DESC"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(org).bind(session).fetch_all(db).await?)
}
