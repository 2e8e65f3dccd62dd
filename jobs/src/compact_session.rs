//! `compact_session`: a compact digest of a conversation so far, for one compaction record.
//!
//! Deterministic (no model is called): goals are the prompts, decisions the assistant's closing
//! messages, then the files changed, the commands run (with their failures) and the open items
//! (the last todo list's unfinished entries and unfinished team tasks). Every list is built and
//! capped inside PostgreSQL, so memory stays bounded however long the session is. The record
//! keeps the event range covered (`seq`) and the sizes before (stored event data) and after.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::ids::{CompactionId, OrgId, SessionId};
use crate::lifecycle::JobError;
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactSession {
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub compaction_id: CompactionId,
    #[serde(default)]
    pub request_id: Option<String>,
}

const DIGEST_SQL: &str = "
WITH e AS (SELECT * FROM events WHERE conversation_id = $1)
SELECT jsonb_build_object(
  'goals', COALESCE((SELECT jsonb_agg(p ORDER BY o, s) FROM (
      SELECT left(data->>'prompt', 500) AS p, order_at AS o, seq AS s FROM e
       WHERE event_type = 'UserPromptSubmit' AND data->>'prompt' IS NOT NULL ORDER BY order_at, seq LIMIT 20) g), '[]'),
  'decisions', COALESCE((SELECT jsonb_agg(m ORDER BY o, s) FROM (
      SELECT left(data->>'last_assistant_message', 800) AS m, order_at AS o, seq AS s FROM e
       WHERE event_type IN ('Stop', 'SubagentStop') AND data->>'last_assistant_message' IS NOT NULL
       ORDER BY order_at DESC, seq DESC LIMIT 10) d), '[]'),
  'files_changed', COALESCE((SELECT jsonb_agg(DISTINCT f) FROM (
      SELECT COALESCE(data->'tool_input'->>'file_path', data->'tool_input'->>'notebook_path') AS f FROM e
       WHERE event_type = 'PreToolUse' AND tool_name IN ('Edit', 'MultiEdit', 'Write', 'NotebookEdit') LIMIT 2000) fc
       WHERE f IS NOT NULL), '[]'),
  'commands', COALESCE((SELECT jsonb_agg(jsonb_build_object('command', c, 'failed', failed) ORDER BY o, s) FROM (
      SELECT left(pre.data->'tool_input'->>'command', 300) AS c, pre.order_at AS o, pre.seq AS s,
             EXISTS (SELECT 1 FROM e f WHERE f.event_type = 'PostToolUseFailure' AND f.tool_use_id = pre.tool_use_id) AS failed
        FROM e pre WHERE pre.event_type = 'PreToolUse' AND pre.tool_name = 'Bash'
       ORDER BY pre.order_at DESC, pre.seq DESC LIMIT 50) c), '[]'),
  'errors', COALESCE((SELECT jsonb_agg(jsonb_build_object('tool', t, 'error', err) ORDER BY o, s) FROM (
      SELECT tool_name AS t, left(COALESCE(data->>'error', ''), 300) AS err, order_at AS o, seq AS s FROM e
       WHERE event_type IN ('PostToolUseFailure', 'StopFailure') ORDER BY order_at DESC, seq DESC LIMIT 50) x), '[]'),
  'open_items', COALESCE((SELECT jsonb_agg(item) FROM (
      SELECT t->>'content' AS item FROM (
          SELECT data FROM e WHERE event_type = 'PreToolUse' AND tool_name = 'TodoWrite'
           ORDER BY order_at DESC, seq DESC LIMIT 1) last_todo,
          jsonb_array_elements(COALESCE(last_todo.data->'tool_input'->'todos', '[]')) t
       WHERE t->>'status' IS DISTINCT FROM 'completed'
      UNION ALL
      SELECT COALESCE(description, external_id) FROM tasks
       WHERE conversation_id = $1 AND kind = 'team_task' AND status <> 'completed') oi), '[]')
) AS digest,
(SELECT min(seq) FROM e) AS first_seq, (SELECT max(seq) FROM e) AS last_seq,
(SELECT COALESCE(sum(octet_length(data::text)), 0)::bigint FROM e) AS size_before";

/// Runs the job: computes the digest and completes the compaction record.
#[tracing::instrument(skip_all, fields(session = %job.session_id, compaction = %job.compaction_id))]
pub async fn run(db: &PgPool, job: &CompactSession) -> Result<Value, JobError> {
    let found = sqlx::query("UPDATE compactions SET status = 'running' WHERE id = $1 AND org_id = $2")
        .bind(job.compaction_id)
        .bind(job.org_id)
        .execute(db)
        .await
        .map_err(StoreError::from)?;
    if found.rows_affected() == 0 {
        return Err(JobError::Permanent(format!("compaction {} not found", job.compaction_id)));
    }
    let (digest, first, last, size_before): (Value, Option<i64>, Option<i64>, i64) =
        sqlx::query_as(DIGEST_SQL).bind(job.session_id).fetch_one(db).await.map_err(StoreError::from)?;
    let size_after = digest.to_string().len() as i64;
    sqlx::query(
        "UPDATE compactions SET status = 'succeeded', digest = $2, first_event_seq = $3, last_event_seq = $4,
                size_before = $5, size_after = $6, finished_at = now()
          WHERE id = $1",
    )
    .bind(job.compaction_id)
    .bind(&digest)
    .bind(first)
    .bind(last)
    .bind(size_before)
    .bind(size_after)
    .execute(db)
    .await
    .map_err(StoreError::from)?;
    Ok(json!({"compaction_id": job.compaction_id, "size_before": size_before, "size_after": size_after}))
}
