//! Tasks derived from events: subagents (events carrying `agent_id`, SubagentStart/Stop) and
//! agent-team tasks (TaskCreated/TaskCompleted), and the Agent/Task tool call that launched each.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreResult;
use crate::ids::{EventId, OrgId, SessionId, TaskId};

pub const SUBAGENT: &str = "subagent";
pub const TEAM_TASK: &str = "team_task";

/// What one inserted event says about a task.
#[derive(Debug, Clone)]
pub struct TaskObservation {
    pub kind: &'static str,
    pub external_id: String,
    /// Empty strings are ignored: SubagentStop often carries `agent_type: ""`.
    pub agent_type: Option<String>,
    pub description: Option<String>,
    pub at: DateTime<Utc>,
    pub starts: bool,
    pub ends: bool,
    pub tool_call: bool,
}

#[derive(Default)]
struct Folded {
    agent_type: Option<String>,
    description: Option<String>,
    first: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
    completed: bool,
    events: i64,
    tool_calls: i64,
}

/// Upserts the tasks these observations name and links the inserted events to them.
#[tracing::instrument(skip_all, fields(session = %session, observations = obs.len()))]
pub async fn apply_observations(
    conn: &mut PgConnection,
    org: OrgId,
    session: SessionId,
    obs: &[TaskObservation],
    subagent_events: &[EventId],
) -> StoreResult<()> {
    if obs.is_empty() {
        return Ok(());
    }
    let mut folded: BTreeMap<(&str, &str), Folded> = BTreeMap::new();
    for o in obs {
        let f = folded.entry((o.kind, o.external_id.as_str())).or_default();
        if let Some(t) = o.agent_type.as_ref().filter(|t| !t.is_empty()) {
            f.agent_type = Some(t.clone());
        }
        if o.description.is_some() {
            f.description.clone_from(&o.description);
        }
        f.first = Some(f.first.map_or(o.at, |t| t.min(o.at)));
        if o.ends {
            f.ended = Some(f.ended.map_or(o.at, |t| t.max(o.at)));
            f.completed = true;
        }
        f.events += 1;
        f.tool_calls += i64::from(o.tool_call);
    }
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut external = Vec::new();
    let mut types = Vec::new();
    let mut descriptions = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut statuses = Vec::new();
    let mut events = Vec::new();
    let mut tool_calls = Vec::new();
    for ((kind, ext), f) in folded {
        ids.push(TaskId::generate().uuid());
        kinds.push(kind.to_string());
        external.push(ext.to_string());
        types.push(f.agent_type);
        descriptions.push(f.description);
        starts.push(f.first);
        ends.push(f.ended);
        statuses.push(if f.completed { "completed" } else { "running" }.to_string());
        events.push(f.events);
        tool_calls.push(f.tool_calls);
    }
    sqlx::query(
        "INSERT INTO tasks (id, org_id, conversation_id, kind, external_id, agent_type, description,
                started_at, ended_at, status, event_count, tool_call_count)
         SELECT t.id, $1, $2, t.kind, t.ext, t.agent_type, t.description, t.started_at, t.ended_at,
                t.status, t.events, t.tool_calls
           FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],
                       $9::timestamptz[], $10::text[], $11::bigint[], $12::bigint[])
                AS t(id, kind, ext, agent_type, description, started_at, ended_at, status, events, tool_calls)
         ON CONFLICT (conversation_id, kind, external_id) DO UPDATE SET
                agent_type = COALESCE(EXCLUDED.agent_type, tasks.agent_type),
                description = COALESCE(EXCLUDED.description, tasks.description),
                started_at = LEAST(tasks.started_at, EXCLUDED.started_at),
                ended_at = GREATEST(tasks.ended_at, EXCLUDED.ended_at),
                status = CASE WHEN EXCLUDED.status = 'completed' THEN 'completed' ELSE tasks.status END,
                event_count = tasks.event_count + EXCLUDED.event_count,
                tool_call_count = tasks.tool_call_count + EXCLUDED.tool_call_count",
    )
    .bind(org)
    .bind(session)
    .bind(ids)
    .bind(kinds)
    .bind(external)
    .bind(types)
    .bind(descriptions)
    .bind(starts)
    .bind(ends)
    .bind(statuses)
    .bind(events)
    .bind(tool_calls)
    .execute(&mut *conn)
    .await?;

    if !subagent_events.is_empty() {
        sqlx::query(
            "UPDATE events e SET task_id = t.id FROM tasks t
              WHERE e.id = ANY($1) AND t.conversation_id = $2 AND t.kind = 'subagent'
                AND t.external_id = e.agent_id",
        )
        .bind(subagent_events.iter().map(|e| e.uuid()).collect::<Vec<_>>())
        .bind(session)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Links subagent tasks to the Agent/Task tool call that launched them: exactly where the call's
/// response names the agent (`tool_response.agentId`), otherwise the earliest unlinked call made
/// before the subagent started, preferring one whose `subagent_type` matches.
#[tracing::instrument(skip_all, fields(session = %session))]
pub async fn link_launching_tool_calls(conn: &mut PgConnection, session: SessionId) -> StoreResult<()> {
    sqlx::query(
        "UPDATE tasks t SET tool_use_id = e.tool_use_id,
                description = COALESCE(t.description, e.data->'tool_input'->>'description')
           FROM events e
          WHERE t.conversation_id = $1 AND t.kind = 'subagent' AND t.tool_use_id IS NULL
            AND e.conversation_id = $1 AND e.event_type = 'PostToolUse'
            AND e.tool_name IN ('Agent', 'Task') AND e.tool_use_id IS NOT NULL
            AND e.data->'tool_response'->>'agentId' = t.external_id",
    )
    .bind(session)
    .execute(&mut *conn)
    .await?;

    let unlinked: Vec<(TaskId, Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT id, agent_type, started_at FROM tasks
          WHERE conversation_id = $1 AND kind = 'subagent' AND tool_use_id IS NULL
          ORDER BY started_at, id",
    )
    .bind(session)
    .fetch_all(&mut *conn)
    .await?;
    for (task, agent_type, started_at) in unlinked {
        let candidate: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT e.tool_use_id, e.data->'tool_input'->>'description'
               FROM events e
              WHERE e.conversation_id = $1 AND e.event_type = 'PreToolUse'
                AND e.tool_name IN ('Agent', 'Task') AND e.tool_use_id IS NOT NULL
                AND e.order_at <= COALESCE($2, 'infinity'::timestamptz)
                AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.conversation_id = $1 AND o.tool_use_id = e.tool_use_id)
              ORDER BY (e.data->'tool_input'->>'subagent_type' IS NOT DISTINCT FROM $3) DESC, e.order_at, e.seq
              LIMIT 1",
        )
        .bind(session)
        .bind(started_at)
        .bind(&agent_type)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((tool_use_id, description)) = candidate {
            sqlx::query("UPDATE tasks SET tool_use_id = $2, description = COALESCE(description, $3) WHERE id = $1")
                .bind(task)
                .bind(tool_use_id)
                .bind(description)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A task as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: TaskId,
    pub conversation_id: SessionId,
    pub parent_task_id: Option<TaskId>,
    pub kind: String,
    pub external_id: String,
    pub agent_type: Option<String>,
    pub description: Option<String>,
    pub tool_use_id: Option<String>,
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub event_count: i64,
    pub tool_call_count: i64,
}

/// The tasks of these sessions, in start order.
pub async fn tasks_of_sessions(
    db: impl sqlx::PgExecutor<'_>,
    org: OrgId,
    sessions: &[SessionId],
) -> StoreResult<Vec<TaskRow>> {
    Ok(sqlx::query_as(
        "SELECT id, conversation_id, parent_task_id, kind, external_id, agent_type, description,
                tool_use_id, status, started_at, ended_at, event_count, tool_call_count
           FROM tasks WHERE org_id = $1 AND conversation_id = ANY($2)
          ORDER BY started_at NULLS LAST, id",
    )
    .bind(org)
    .bind(sessions.iter().map(|s| s.uuid()).collect::<Vec<_>>())
    .fetch_all(db)
    .await?)
}
