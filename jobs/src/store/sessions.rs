//! Runs and conversations (sessions), with their repository.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};

use super::{StoreError, StoreResult};
use crate::domain::RemoteUrl;
use crate::ids::{OrgId, ProjectId, RepoId, RunId, SessionId, UserId};

/// What a client gives to create a session.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub agent_name: String,
    pub agent_session_id: Option<String>,
    pub component: Option<String>,
    pub title: Option<String>,
    pub remote_url: Option<RemoteUrl>,
    pub repository_id: Option<RepoId>,
    pub project_id: Option<ProjectId>,
    pub run_id: Option<RunId>,
    pub parent_session_id: Option<SessionId>,
    pub started_at: Option<DateTime<Utc>>,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New(SessionId),
    Existing(SessionId),
}

impl Created {
    pub fn id(&self) -> SessionId {
        match self {
            Created::New(id) | Created::Existing(id) => *id,
        }
    }
}

const SESSION_COLUMNS: &str = "c.id, c.org_id, c.run_id, c.user_id, c.project_id, c.repository_id,
    r.slug AS repo_slug, r.remote_url AS repo_remote_url, c.thread_id, c.parent_id, c.agent_name,
    c.agent_session_id, c.component, c.title, c.status, c.end_reason, c.summary, c.metadata,
    c.started_at, c.ended_at, c.first_event_at, c.last_event_at, c.input_tokens, c.output_tokens,
    c.cache_read_tokens, c.cache_write_tokens, c.cost_usd, c.event_count, c.tool_call_count,
    c.error_count, c.created_at, c.updated_at";

/// A session as stored, with its repository's slug.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: SessionId,
    pub org_id: OrgId,
    pub run_id: RunId,
    pub user_id: UserId,
    pub project_id: Option<ProjectId>,
    pub repository_id: Option<RepoId>,
    pub repo_slug: Option<String>,
    pub repo_remote_url: Option<String>,
    pub thread_id: SessionId,
    pub parent_id: Option<SessionId>,
    pub agent_name: String,
    pub agent_session_id: Option<String>,
    pub component: Option<String>,
    pub title: Option<String>,
    pub status: String,
    pub end_reason: Option<String>,
    pub summary: Option<String>,
    pub metadata: serde_json::Value,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: Option<Decimal>,
    pub event_count: i64,
    pub tool_call_count: i64,
    pub error_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

async fn find_by_agent_session(
    db: impl PgExecutor<'_>,
    org: OrgId,
    agent_session_id: &str,
) -> StoreResult<Option<SessionId>> {
    let row: Option<(SessionId,)> =
        sqlx::query_as("SELECT id FROM conversations WHERE org_id = $1 AND agent_session_id = $2")
            .bind(org)
            .bind(agent_session_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.0))
}

/// Creates a Run (unless `run_id` names one) and a conversation in it. Idempotent on
/// `agent_session_id`: a second create, even a concurrent one, returns the first session.
#[tracing::instrument(skip_all, fields(org = %org, agent_session_id = new.agent_session_id.as_deref()))]
pub async fn create_session(pool: &PgPool, org: OrgId, user: UserId, new: &NewSession) -> StoreResult<Created> {
    if let Some(agent_sid) = &new.agent_session_id
        && let Some(id) = find_by_agent_session(pool, org, agent_sid).await?
    {
        return Ok(Created::Existing(id));
    }
    let mut tx = pool.begin().await?;
    let started_at = new.started_at.unwrap_or_else(Utc::now);

    if let Some(project) = new.project_id {
        let found: Option<(ProjectId,)> = sqlx::query_as("SELECT id FROM projects WHERE id = $1 AND org_id = $2")
            .bind(project)
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
        found.ok_or(StoreError::NotFound("project"))?;
    }
    let (repository_id, repo_project) = match (&new.repository_id, &new.remote_url) {
        (Some(repo), _) => {
            let found: Option<(RepoId, Option<ProjectId>)> =
                sqlx::query_as("SELECT id, project_id FROM repositories WHERE id = $1 AND org_id = $2")
                    .bind(repo)
                    .bind(org)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (id, project) = found.ok_or(StoreError::NotFound("repository"))?;
            (Some(id), project)
        }
        (None, Some(url)) => {
            let (id, project): (RepoId, Option<ProjectId>) = sqlx::query_as(
                "INSERT INTO repositories (id, org_id, host, slug, remote_url) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (org_id, host, slug) DO UPDATE SET remote_url = repositories.remote_url
                 RETURNING id, project_id",
            )
            .bind(RepoId::generate())
            .bind(org)
            .bind(url.host())
            .bind(url.slug())
            .bind(url.canonical())
            .fetch_one(&mut *tx)
            .await?;
            (Some(id), project)
        }
        (None, None) => (None, None),
    };
    let project_id = new.project_id.or(repo_project);

    let run_id = match new.run_id {
        Some(run) => {
            let found: Option<(RunId,)> = sqlx::query_as("SELECT id FROM runs WHERE id = $1 AND org_id = $2")
                .bind(run)
                .bind(org)
                .fetch_optional(&mut *tx)
                .await?;
            found.ok_or(StoreError::NotFound("run"))?.0
        }
        None => {
            let run = RunId::generate();
            sqlx::query(
                "INSERT INTO runs (id, org_id, user_id, project_id, repository_id, component, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(run)
            .bind(org)
            .bind(user)
            .bind(project_id)
            .bind(repository_id)
            .bind(&new.component)
            .bind(started_at)
            .execute(&mut *tx)
            .await?;
            run
        }
    };

    let id = SessionId::generate();
    let thread_id = match new.parent_session_id {
        Some(parent) => {
            let found: Option<(SessionId,)> =
                sqlx::query_as("SELECT thread_id FROM conversations WHERE id = $1 AND org_id = $2")
                    .bind(parent)
                    .bind(org)
                    .fetch_optional(&mut *tx)
                    .await?;
            found.ok_or(StoreError::NotFound("parent session"))?.0
        }
        None => id,
    };

    let inserted: Option<(SessionId,)> = sqlx::query_as(
        "INSERT INTO conversations (id, org_id, run_id, user_id, project_id, repository_id, thread_id,
                parent_id, agent_name, agent_session_id, component, title, metadata, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (org_id, agent_session_id) WHERE agent_session_id IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(id)
    .bind(org)
    .bind(run_id)
    .bind(user)
    .bind(project_id)
    .bind(repository_id)
    .bind(thread_id)
    .bind(new.parent_session_id)
    .bind(&new.agent_name)
    .bind(&new.agent_session_id)
    .bind(&new.component)
    .bind(&new.title)
    .bind(&new.metadata)
    .bind(started_at)
    .fetch_optional(&mut *tx)
    .await?;

    match inserted {
        Some(_) => {
            tx.commit().await?;
            Ok(Created::New(id))
        }
        None => {
            // A concurrent create with the same agent_session_id won: drop our run with the rest.
            tx.rollback().await?;
            let agent_sid = new.agent_session_id.as_deref().unwrap_or_default();
            let existing = find_by_agent_session(pool, org, agent_sid).await?;
            existing.map(Created::Existing).ok_or(StoreError::NotFound("session"))
        }
    }
}

pub async fn get_session(db: impl PgExecutor<'_>, org: OrgId, id: SessionId) -> StoreResult<SessionRow> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM conversations c LEFT JOIN repositories r ON r.id = c.repository_id
          WHERE c.org_id = $1 AND c.id = $2"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(StoreError::NotFound("session"))
}

/// A session named by our id or by the agent's own session id.
pub enum SessionRef {
    Id(SessionId),
    Agent(String),
}

/// Resolves a session reference within an org.
pub async fn resolve_session(db: impl PgExecutor<'_>, org: OrgId, r: &SessionRef) -> StoreResult<SessionId> {
    let found = match r {
        SessionRef::Id(id) => {
            let row: Option<(SessionId,)> =
                sqlx::query_as("SELECT id FROM conversations WHERE org_id = $1 AND id = $2")
                    .bind(org)
                    .bind(id)
                    .fetch_optional(db)
                    .await?;
            row.map(|r| r.0)
        }
        SessionRef::Agent(agent_sid) => find_by_agent_session(db, org, agent_sid).await?,
    };
    found.ok_or(StoreError::NotFound("session"))
}

/// Filters of the list endpoint; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub project_id: Option<ProjectId>,
    pub repo_slug: Option<String>,
    pub agent_name: Option<String>,
    pub user_id: Option<UserId>,
    pub status: Option<String>,
    pub agent_session_id: Option<String>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, org: OrgId, f: &SessionFilter) {
    qb.push(" WHERE c.org_id = ").push_bind(org);
    if let Some(p) = f.project_id {
        qb.push(" AND c.project_id = ").push_bind(p);
    }
    if let Some(slug) = &f.repo_slug {
        qb.push(" AND r.slug = ").push_bind(slug);
    }
    if let Some(a) = &f.agent_name {
        qb.push(" AND c.agent_name = ").push_bind(a);
    }
    if let Some(u) = f.user_id {
        qb.push(" AND c.user_id = ").push_bind(u);
    }
    if let Some(s) = &f.status {
        qb.push(" AND c.status = ").push_bind(s);
    }
    if let Some(a) = &f.agent_session_id {
        qb.push(" AND c.agent_session_id = ").push_bind(a);
    }
    if let Some(t) = f.started_after {
        qb.push(" AND c.started_at >= ").push_bind(t);
    }
    if let Some(t) = f.started_before {
        qb.push(" AND c.started_at < ").push_bind(t);
    }
}

/// Above this many matches a list reports `total` as this many and `total_capped`: counting a
/// million rows per page costs more than the page (Sentry and GitHub cap their counts too).
pub const LIST_COUNT_CAP: i64 = 10_000;

/// One page of sessions, newest first (ties broken by id so pages never overlap), and the
/// number of matches, counted up to `LIST_COUNT_CAP`.
#[tracing::instrument(skip_all, fields(org = %org, page, per_page))]
pub async fn list_sessions(
    pool: &PgPool,
    org: OrgId,
    filter: &SessionFilter,
    page: u32,
    per_page: u32,
) -> StoreResult<(Vec<SessionRow>, i64)> {
    let from = " FROM conversations c LEFT JOIN repositories r ON r.id = c.repository_id";
    let mut count = QueryBuilder::new(format!("SELECT count(*) FROM (SELECT 1{from}"));
    push_filters(&mut count, org, filter);
    count.push(" LIMIT ").push_bind(LIST_COUNT_CAP).push(") matches");
    let (total,): (i64,) = count.build_query_as().fetch_one(pool).await?;

    let mut qb = QueryBuilder::new(format!("SELECT {SESSION_COLUMNS}{from}"));
    push_filters(&mut qb, org, filter);
    qb.push(" ORDER BY c.started_at DESC, c.id DESC LIMIT ")
        .push_bind(i64::from(per_page))
        .push(" OFFSET ")
        .push_bind(i64::from(page.saturating_sub(1)) * i64::from(per_page));
    let rows = qb.build_query_as().fetch_all(pool).await?;
    Ok((rows, total))
}

/// A run with the conversations in it, oldest first.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub user_id: UserId,
    pub project_id: Option<ProjectId>,
    pub repository_id: Option<RepoId>,
    pub component: Option<String>,
    pub started_at: DateTime<Utc>,
}

pub async fn get_run(db: impl PgExecutor<'_>, org: OrgId, id: RunId) -> StoreResult<RunRow> {
    sqlx::query_as(
        "SELECT id, user_id, project_id, repository_id, component, started_at FROM runs WHERE org_id = $1 AND id = $2",
    )
    .bind(org)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(StoreError::NotFound("run"))
}

pub async fn sessions_of_run(db: impl PgExecutor<'_>, org: OrgId, run: RunId) -> StoreResult<Vec<SessionRow>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM conversations c LEFT JOIN repositories r ON r.id = c.repository_id
          WHERE c.org_id = $1 AND c.run_id = $2 ORDER BY c.started_at, c.id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(org).bind(run).fetch_all(db).await?)
}

/// Token usage of one model within a session, cumulative.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelUsage {
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// Of `cache_write_tokens`, those written for one hour (only used to price them; not stored).
    pub cache_write_1h_tokens: i64,
    pub cost_usd: Option<Decimal>,
}

/// A cumulative snapshot of a session's usage, as the CLI sends it. Every counter only ever
/// rises: applying an older snapshot after a newer one changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: Option<Decimal>,
    pub models: Vec<ModelUsage>,
}

/// Raises the session's counters to the snapshot's (never lowers them).
pub async fn apply_metrics(conn: &mut sqlx::PgConnection, session: SessionId, m: &MetricsSnapshot) -> StoreResult<()> {
    sqlx::query(
        "UPDATE conversations SET input_tokens = GREATEST(input_tokens, $2),
                output_tokens = GREATEST(output_tokens, $3), cache_read_tokens = GREATEST(cache_read_tokens, $4),
                cache_write_tokens = GREATEST(cache_write_tokens, $5),
                cost_usd = CASE WHEN $6::numeric IS NULL THEN cost_usd ELSE GREATEST(cost_usd, $6::numeric) END,
                updated_at = now()
          WHERE id = $1",
    )
    .bind(session)
    .bind(m.input_tokens)
    .bind(m.output_tokens)
    .bind(m.cache_read_tokens)
    .bind(m.cache_write_tokens)
    .bind(m.cost_usd)
    .execute(&mut *conn)
    .await?;
    for u in &m.models {
        sqlx::query(
            "INSERT INTO conversation_models (conversation_id, model, input_tokens, output_tokens,
                    cache_read_tokens, cache_write_tokens, cost_usd)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (conversation_id, model) DO UPDATE SET
                    input_tokens = GREATEST(conversation_models.input_tokens, EXCLUDED.input_tokens),
                    output_tokens = GREATEST(conversation_models.output_tokens, EXCLUDED.output_tokens),
                    cache_read_tokens = GREATEST(conversation_models.cache_read_tokens, EXCLUDED.cache_read_tokens),
                    cache_write_tokens = GREATEST(conversation_models.cache_write_tokens, EXCLUDED.cache_write_tokens),
                    cost_usd = CASE WHEN EXCLUDED.cost_usd IS NULL THEN conversation_models.cost_usd
                                    ELSE GREATEST(conversation_models.cost_usd, EXCLUDED.cost_usd) END,
                    updated_at = now()",
        )
        .bind(session)
        .bind(&u.model)
        .bind(u.input_tokens)
        .bind(u.output_tokens)
        .bind(u.cache_read_tokens)
        .bind(u.cache_write_tokens)
        .bind(u.cost_usd)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Fields a PATCH may change besides the metrics.
#[derive(Debug, Clone, Default)]
pub struct SessionChanges {
    pub title: Option<String>,
    pub summary: Option<String>,
}

pub async fn apply_changes(conn: &mut sqlx::PgConnection, session: SessionId, c: &SessionChanges) -> StoreResult<()> {
    if c.title.is_none() && c.summary.is_none() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE conversations SET title = COALESCE($2, title), summary = COALESCE($3, summary), updated_at = now()
          WHERE id = $1",
    )
    .bind(session)
    .bind(&c.title)
    .bind(&c.summary)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks the session row for the rest of the transaction; `NotFound` outside the org.
pub async fn lock_session(conn: &mut sqlx::PgConnection, org: OrgId, id: SessionId) -> StoreResult<String> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT status FROM conversations WHERE org_id = $1 AND id = $2 FOR UPDATE")
            .bind(org)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| r.0).ok_or(StoreError::NotFound("session"))
}

/// Marks an active session ended. `Conflict` when it has ended already.
pub async fn end_session(
    conn: &mut sqlx::PgConnection,
    org: OrgId,
    id: SessionId,
    end_reason: &str,
    summary: Option<&str>,
    ended_at: DateTime<Utc>,
) -> StoreResult<()> {
    if lock_session(conn, org, id).await? == "ended" {
        return Err(StoreError::Conflict("the session has ended already".into()));
    }
    let (started_at,): (DateTime<Utc>,) =
        sqlx::query_as("SELECT started_at FROM conversations WHERE id = $1").bind(id).fetch_one(&mut *conn).await?;
    if ended_at < started_at {
        return Err(StoreError::Invalid(format!("ended_at is before the session started ({started_at})")));
    }
    sqlx::query(
        "UPDATE conversations SET status = 'ended', end_reason = $2, summary = COALESCE($3, summary),
                ended_at = $4, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(end_reason)
    .bind(summary)
    .bind(ended_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One thread: related conversations, with its latest activity.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThreadRow {
    pub thread_id: SessionId,
    pub session_count: i64,
    pub last_activity_at: DateTime<Utc>,
}

/// Threads of the org, most recently active first, one page of them and their total.
pub async fn list_threads(pool: &PgPool, org: OrgId, page: u32, per_page: u32) -> StoreResult<(Vec<ThreadRow>, i64)> {
    let (total,): (i64,) = sqlx::query_as("SELECT count(DISTINCT thread_id) FROM conversations WHERE org_id = $1")
        .bind(org)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query_as(
        "SELECT thread_id, count(*) AS session_count,
                max(GREATEST(COALESCE(last_event_at, started_at), started_at, COALESCE(ended_at, started_at))) AS last_activity_at
           FROM conversations WHERE org_id = $1
          GROUP BY thread_id
          ORDER BY last_activity_at DESC, thread_id DESC
          LIMIT $2 OFFSET $3",
    )
    .bind(org)
    .bind(i64::from(per_page))
    .bind(i64::from(page.saturating_sub(1)) * i64::from(per_page))
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

/// The conversations of these threads, oldest first.
pub async fn sessions_of_threads(
    db: impl PgExecutor<'_>,
    org: OrgId,
    threads: &[SessionId],
) -> StoreResult<Vec<SessionRow>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM conversations c LEFT JOIN repositories r ON r.id = c.repository_id
          WHERE c.org_id = $1 AND c.thread_id = ANY($2) ORDER BY c.started_at, c.id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(threads.iter().map(|t| t.uuid()).collect::<Vec<_>>())
        .fetch_all(db)
        .await?)
}

/// Per-model usage of a session.
pub async fn models_of_session(db: impl PgExecutor<'_>, id: SessionId) -> StoreResult<Vec<ModelUsage>> {
    let rows: Vec<(String, i64, i64, i64, i64, Option<Decimal>)> = sqlx::query_as(
        "SELECT model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd
           FROM conversation_models WHERE conversation_id = $1 ORDER BY model",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)| ModelUsage {
            model,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cache_write_1h_tokens: 0,
            cost_usd,
        })
        .collect())
}

/// The sessions with these ids, in the order given (missing ones skipped).
pub async fn sessions_by_ids(db: impl PgExecutor<'_>, org: OrgId, ids: &[SessionId]) -> StoreResult<Vec<SessionRow>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM conversations c LEFT JOIN repositories r ON r.id = c.repository_id
          WHERE c.org_id = $1 AND c.id = ANY($2)"
    );
    let mut rows: Vec<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(ids.iter().map(|i| i.uuid()).collect::<Vec<_>>())
        .fetch_all(db)
        .await?;
    rows.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    Ok(rows)
}
