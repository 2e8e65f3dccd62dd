//! `analyze_session`: what happened in a session, computed from its stored events.
//!
//! Everything is aggregated inside PostgreSQL (counts, distinct files, bounded lists, active time
//! by window function), so a 200 MB session is never loaded into the worker; each list is capped.
//! The analysis is stored per session version (the event count it saw): re-running on the same
//! events replaces it, new events make a new version. When the client gave no summary, one is
//! made from the first prompt and the last assistant message.
//!
//! Outcome: `in_progress` (still active), `abandoned` (closed for idleness), `failed` (the last
//! stop was a StopFailure), `completed_with_errors` (tool failures along the way), `completed`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::ids::{OrgId, SessionId};
use crate::lifecycle::JobError;
use crate::store::{StoreError, StoreResult, sessions};

/// Bumped when the analysis' shape changes.
pub const SCHEMA_VERSION: i32 = 1;
/// Gaps between events longer than this are not active time.
pub const IDLE_GAP_SECS: i64 = 300;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyzeSession {
    pub org_id: OrgId,
    pub session_id: SessionId,
    /// Why: `end`, `late_events`, `idle`, `reconcile`.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

fn trim(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>().trim_end())
    }
}

async fn json_of(db: &PgPool, sql: &'static str, session: SessionId) -> StoreResult<Value> {
    let (v,): (Option<Value>,) = sqlx::query_as(sql).bind(session).fetch_one(db).await?;
    Ok(v.unwrap_or(Value::Null))
}

/// The same, for queries over tool calls: `$2` is the event type that stands for a call.
async fn calls_json(db: &PgPool, sql: &'static str, session: SessionId, call_event: &str) -> StoreResult<Value> {
    let (v,): (Option<Value>,) = sqlx::query_as(sql).bind(session).bind(call_event).fetch_one(db).await?;
    Ok(v.unwrap_or(Value::Null))
}

/// Computes the analysis of a session (without storing it).
pub async fn analyze(db: &PgPool, org: OrgId, id: SessionId) -> StoreResult<(Value, i64, Option<String>)> {
    let session = sessions::get_session(db, org, id).await?;
    // A call is its PreToolUse; logs that recorded only PostToolUse (older hook set-ups) count those.
    let (has_pre,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM events WHERE conversation_id = $1 AND event_type = 'PreToolUse')")
            .bind(id)
            .fetch_one(db)
            .await?;
    let call_event = if has_pre { "PreToolUse" } else { "PostToolUse" };
    let by_tool = calls_json(
        db,
        "SELECT COALESCE(jsonb_object_agg(tool_name, n), '{}') FROM (
            SELECT tool_name, count(*) AS n FROM events
             WHERE conversation_id = $1 AND tool_name IS NOT NULL
               AND event_type = $2
             GROUP BY tool_name) t",
        id,
        call_event,
    )
    .await?;
    let failures = json_of(
        db,
        "SELECT jsonb_build_object('count', count(*), 'items', COALESCE(jsonb_agg(item) FILTER (WHERE rn <= 50), '[]'))
           FROM (SELECT row_number() OVER (ORDER BY order_at, seq) AS rn,
                        jsonb_build_object('tool', tool_name, 'at', order_at,
                            'error', left(COALESCE(data->>'error', data->'tool_response'->>'stderr', ''), 300)) AS item
                   FROM events WHERE conversation_id = $1
                    AND (event_type IN ('PostToolUseFailure', 'StopFailure')
                         OR (event_type = 'PostToolUse' AND data->'tool_response'->>'is_error' = 'true'))) f",
        id,
    )
    .await?;
    let files = calls_json(
        db,
        "SELECT jsonb_build_object(
                'read', COALESCE(jsonb_agg(DISTINCT path) FILTER (WHERE tool_name = 'Read'), '[]'),
                'edited', COALESCE(jsonb_agg(DISTINCT path) FILTER (WHERE tool_name IN ('Edit', 'MultiEdit', 'NotebookEdit')), '[]'),
                'written', COALESCE(jsonb_agg(DISTINCT path) FILTER (WHERE tool_name = 'Write'), '[]'))
           FROM (SELECT tool_name, COALESCE(data->'tool_input'->>'file_path', data->'tool_input'->>'notebook_path') AS path
                   FROM events WHERE conversation_id = $1 AND event_type = $2
                    AND tool_name IN ('Read', 'Edit', 'MultiEdit', 'Write', 'NotebookEdit')
                  LIMIT 5000) f WHERE path IS NOT NULL",
        id,
        call_event,
    )
    .await?;
    let commands = calls_json(
        db,
        "SELECT jsonb_build_object('count', count(*), 'items', COALESCE(jsonb_agg(cmd) FILTER (WHERE rn <= 100), '[]'))
           FROM (SELECT row_number() OVER (ORDER BY order_at, seq) AS rn, left(data->'tool_input'->>'command', 500) AS cmd
                   FROM events WHERE conversation_id = $1 AND event_type = $2 AND tool_name = 'Bash'
                    AND data->'tool_input'->>'command' IS NOT NULL) c",
        id,
        call_event,
    )
    .await?;
    let prompts = json_of(
        db,
        "SELECT jsonb_build_object('count', count(*),
                'first', (array_agg(left(data->>'prompt', 2000) ORDER BY order_at, seq))[1])
           FROM events WHERE conversation_id = $1 AND event_type = 'UserPromptSubmit'",
        id,
    )
    .await?;
    let last_message = json_of(
        db,
        "SELECT to_jsonb(left(data->>'last_assistant_message', 4000)) FROM events
          WHERE conversation_id = $1 AND event_type = 'Stop' AND data->>'last_assistant_message' IS NOT NULL
          ORDER BY order_at DESC, seq DESC LIMIT 1",
        id,
    )
    .await
    .or_else(|e| match e {
        StoreError::Database(sqlx::Error::RowNotFound) => Ok(Value::Null),
        e => Err(e),
    })?;
    let subagents = json_of(
        db,
        "SELECT jsonb_build_object('count', COALESCE(sum(n), 0),
                'by_type', COALESCE(jsonb_object_agg(agent_type, n) FILTER (WHERE agent_type IS NOT NULL), '{}'))
           FROM (SELECT agent_type, count(*) AS n FROM tasks WHERE conversation_id = $1 AND kind = 'subagent' GROUP BY agent_type) t",
        id,
    )
    .await?;
    let (active_secs, last_stop): (Option<f64>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT sum(gap) FILTER (WHERE gap <= $2)::float8 FROM (
                    SELECT extract(epoch FROM order_at - lag(order_at) OVER (ORDER BY order_at, seq)) AS gap
                      FROM events WHERE conversation_id = $1) g),
                (SELECT event_type FROM events WHERE conversation_id = $1 AND event_type IN ('Stop', 'StopFailure')
                  ORDER BY order_at DESC, seq DESC LIMIT 1)",
    )
    .bind(id)
    .bind(IDLE_GAP_SECS as f64)
    .fetch_one(db)
    .await?;
    let models = sessions::models_of_session(db, id).await?;

    let failure_count = failures["count"].as_i64().unwrap_or(0);
    let outcome = if session.status == "active" {
        "in_progress"
    } else if session.end_reason.as_deref() == Some("idle") {
        "abandoned"
    } else if last_stop.as_deref() == Some("StopFailure") {
        "failed"
    } else if failure_count > 0 {
        "completed_with_errors"
    } else {
        "completed"
    };
    let tool_calls: i64 = by_tool.as_object().map_or(0, |m| m.values().filter_map(Value::as_i64).sum());
    let analysis = json!({
        "schema_version": SCHEMA_VERSION,
        "outcome": outcome,
        "event_count": session.event_count,
        "tool_calls": {"total": tool_calls, "by_tool": by_tool},
        "failures": failures,
        "files": files,
        "commands": commands,
        "prompts": {"count": prompts["count"]},
        "subagents": subagents,
        "active_seconds": active_secs.unwrap_or(0.0).round(),
        "tokens": {
            "input": session.input_tokens, "output": session.output_tokens,
            "cache_read": session.cache_read_tokens, "cache_write": session.cache_write_tokens,
        },
        "cost_usd": session.cost_usd.map(|c| c.to_string()),
        "models": models.iter().map(|m| json!({
            "model": m.model, "input_tokens": m.input_tokens, "output_tokens": m.output_tokens,
            "cache_read_tokens": m.cache_read_tokens, "cache_write_tokens": m.cache_write_tokens,
            "cost_usd": m.cost_usd.map(|c| c.to_string()),
        })).collect::<Vec<_>>(),
    });
    let summary = session.summary.is_none().then(|| {
        let first = prompts["first"].as_str().map(|p| trim(p, 200));
        let last = last_message.as_str().map(|m| trim(m, 300));
        match (first, last) {
            (Some(p), Some(m)) => format!("{p} → {m}"),
            (Some(p), None) => p,
            (None, Some(m)) => m,
            (None, None) => String::new(),
        }
    });
    Ok((analysis, session.event_count, summary.filter(|s| !s.is_empty())))
}

/// Runs the job: computes and stores the analysis, and fills a missing summary.
#[tracing::instrument(skip_all, fields(session = %job.session_id, reason = %job.reason))]
pub async fn run(db: &PgPool, job: &AnalyzeSession) -> Result<Value, JobError> {
    let (analysis, version, summary) = analyze(db, job.org_id, job.session_id).await?;
    let mut tx = db.begin().await.map_err(StoreError::from)?;
    sqlx::query(
        "INSERT INTO session_analyses (id, org_id, conversation_id, version, schema_version, analysis)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (conversation_id, version) DO UPDATE SET analysis = EXCLUDED.analysis,
                schema_version = EXCLUDED.schema_version, created_at = now()",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(job.org_id)
    .bind(job.session_id)
    .bind(version)
    .bind(SCHEMA_VERSION)
    .bind(&analysis)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    // The outcome feeds analytics (failure rate); the summary fills a missing one.
    sqlx::query(
        "UPDATE conversations SET outcome = $2, summary = COALESCE(summary, $3),
                updated_at = CASE WHEN summary IS NULL AND $3 IS NOT NULL THEN now() ELSE updated_at END
          WHERE id = $1 AND (outcome IS DISTINCT FROM $2 OR (summary IS NULL AND $3 IS NOT NULL))",
    )
    .bind(job.session_id)
    .bind(analysis["outcome"].as_str())
    .bind(summary)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(json!({"version": version, "outcome": analysis["outcome"]}))
}

/// The latest analysis of a session, if any.
pub async fn latest(db: &PgPool, session: SessionId) -> StoreResult<Option<Value>> {
    let row: Option<(Value,)> =
        sqlx::query_as("SELECT analysis FROM session_analyses WHERE conversation_id = $1 ORDER BY version DESC, created_at DESC LIMIT 1")
            .bind(session)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.0))
}
