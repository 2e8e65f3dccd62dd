//! Stored hook events: the batch insert of the `persist_events` job and the timeline read.
//!
//! The insert is one statement per batch: the columns travel as arrays through `UNNEST`, so a
//! batch of any size binds 14 parameters (far below PostgreSQL's 65,535 limit, with no chunking
//! to get wrong) and the planner sees one multi-row insert. `ON CONFLICT DO NOTHING` on
//! `(conversation_id, dedup_key)` makes a replayed or concurrent batch a no-op, and `RETURNING`
//! tells the caller which rows were really inserted, so counters are raised for those only.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::StoreResult;
use crate::ids::{EventId, OrgId, SessionId, TaskId};

/// One event ready to insert (the worker has computed everything derived from the data).
#[derive(Debug, Clone)]
pub struct EventInsert {
    pub id: EventId,
    pub event_type: String,
    pub client_event_id: Option<String>,
    pub dedup_key: String,
    pub timestamp: DateTime<Utc>,
    pub order_at: DateTime<Utc>,
    pub timestamp_in_future: bool,
    pub tool_name: Option<String>,
    pub tool_use_id: Option<String>,
    pub agent_id: Option<String>,
    /// JSON text, already repaired (no lone surrogates, no U+0000).
    pub data: String,
}

/// What the insert returns for each row it really inserted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Inserted {
    pub id: EventId,
    pub event_type: String,
    pub order_at: DateTime<Utc>,
    pub tool_name: Option<String>,
    pub agent_id: Option<String>,
}

#[tracing::instrument(skip_all, fields(session = %session, rows = rows.len()))]
pub async fn insert_events(
    db: impl PgExecutor<'_>,
    org: OrgId,
    session: SessionId,
    received_at: DateTime<Utc>,
    rows: &[EventInsert],
) -> StoreResult<Vec<Inserted>> {
    macro_rules! col {
        ($f:ident) => {
            rows.iter().map(|r| r.$f.clone()).collect::<Vec<_>>()
        };
    }
    let inserted = sqlx::query_as(
        "INSERT INTO events (id, org_id, conversation_id, event_type, client_event_id, dedup_key,
                timestamp, received_at, order_at, timestamp_in_future, tool_name, tool_use_id, agent_id, data)
         SELECT t.id, $1, $2, t.event_type, t.client_event_id, t.dedup_key, t.ts, $3, t.order_at,
                t.in_future, t.tool_name, t.tool_use_id, t.agent_id, t.data::jsonb
           FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],
                       $9::timestamptz[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::text[])
                WITH ORDINALITY AS t(id, event_type, client_event_id, dedup_key, ts, order_at, in_future,
                                     tool_name, tool_use_id, agent_id, data, ord)
          ORDER BY t.ord
         ON CONFLICT (conversation_id, dedup_key) DO NOTHING
         RETURNING id, event_type, order_at, tool_name, agent_id",
    )
    .bind(org)
    .bind(session)
    .bind(received_at)
    .bind(rows.iter().map(|r| r.id.uuid()).collect::<Vec<_>>())
    .bind(col!(event_type))
    .bind(col!(client_event_id))
    .bind(col!(dedup_key))
    .bind(col!(timestamp))
    .bind(col!(order_at))
    .bind(col!(timestamp_in_future))
    .bind(col!(tool_name))
    .bind(col!(tool_use_id))
    .bind(col!(agent_id))
    .bind(col!(data))
    .fetch_all(db)
    .await?;
    Ok(inserted)
}

/// Raises a session's counters by what was really inserted and returns the session's status;
/// `None` when nothing was inserted, or when the session is not the org's (then nothing changed).
pub async fn bump_session_counters(
    db: impl PgExecutor<'_>,
    org: OrgId,
    session: SessionId,
    inserted: &[Inserted],
) -> StoreResult<Option<String>> {
    let Some(first) = inserted.iter().map(|r| r.order_at).min() else {
        return Ok(None);
    };
    let last = inserted.iter().map(|r| r.order_at).max();
    let tool_calls = inserted.iter().filter(|r| is_tool_call(&r.event_type)).count() as i64;
    let errors = inserted.iter().filter(|r| is_error(&r.event_type)).count() as i64;
    let status: Option<(String,)> = sqlx::query_as(
        "UPDATE conversations SET event_count = event_count + $3, tool_call_count = tool_call_count + $4,
                error_count = error_count + $5, first_event_at = LEAST(first_event_at, $6),
                last_event_at = GREATEST(last_event_at, $7), updated_at = now()
          WHERE id = $1 AND org_id = $2
      RETURNING status",
    )
    .bind(session)
    .bind(org)
    .bind(inserted.len() as i64)
    .bind(tool_calls)
    .bind(errors)
    .bind(first)
    .bind(last)
    .fetch_optional(db)
    .await?;
    Ok(status.map(|(s,)| s))
}

/// Every tool call fires exactly one PreToolUse (Post may be missing when a call is denied or
/// interrupted), so that is what counts a call.
pub fn is_tool_call(event_type: &str) -> bool {
    event_type == "PreToolUse"
}

pub fn is_error(event_type: &str) -> bool {
    matches!(event_type, "PostToolUseFailure" | "StopFailure")
}

/// A stored event as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: EventId,
    pub seq: i64,
    pub event_type: String,
    pub client_event_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub timestamp_in_future: bool,
    pub task_id: Option<TaskId>,
    pub tool_name: Option<String>,
    pub tool_use_id: Option<String>,
    /// The stored text; `data` is what it decodes to.
    #[sqlx(rename = "data")]
    data_text: String,
    #[sqlx(skip)]
    pub data: serde_json::Value,
}

/// What a stored event's data reads as. Text serde_json cannot read (nesting deeper than its 128
/// levels, which ingestion has refused since `MAX_DATA_DEPTH`, but older rows may hold) shows as
/// a note rather than failing the whole page: the row itself is kept as it was.
fn stored_data(id: EventId, text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(event = %id, error = %e, "stored event data cannot be read back");
        serde_json::json!({"crewkit_unreadable": format!("this event's data cannot be shown: {e}")})
    })
}

/// Events of a session in timeline order, after the event whose `seq` is `after_seq`.
/// `NotFound` when that event is not in the session.
pub async fn list_events(
    db: &sqlx::PgPool,
    org: OrgId,
    session: SessionId,
    after_seq: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<EventRow>> {
    if let Some(seq) = after_seq {
        let found: Option<(i64,)> = sqlx::query_as("SELECT seq FROM events WHERE conversation_id = $1 AND seq = $2")
            .bind(session)
            .bind(seq)
            .fetch_optional(db)
            .await?;
        found.ok_or(super::StoreError::NotFound("event `after`"))?;
    }
    let mut rows: Vec<EventRow> = sqlx::query_as(
        "SELECT e.id, e.seq, e.event_type, e.client_event_id, e.timestamp, e.received_at,
                e.timestamp_in_future, e.task_id, e.tool_name, e.tool_use_id, e.data::text AS data
           FROM events e
          WHERE e.org_id = $1 AND e.conversation_id = $2
            AND ($3::bigint IS NULL OR (e.order_at, e.seq) >
                 (SELECT c.order_at, c.seq FROM events c WHERE c.conversation_id = $2 AND c.seq = $3))
          ORDER BY e.order_at, e.seq
          LIMIT $4",
    )
    .bind(org)
    .bind(session)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(db)
    .await?;
    for r in &mut rows {
        r.data = stored_data(r.id, &std::mem::take(&mut r.data_text));
    }
    Ok(rows)
}
