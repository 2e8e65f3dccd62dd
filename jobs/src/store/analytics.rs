//! Analytics over sessions, in SQL with exact NUMERIC sums.
//!
//! Every query reads the same filtered set (`WINDOW_CTE`): the org's sessions whose `started_at`
//! falls in the window, optionally of one project or agent. Breakdowns group that set without
//! joins that could repeat a session (tasks, threads, events), so each session's cost is counted
//! once everywhere and every breakdown sums to the summary exactly. Per-model cost comes from
//! `conversation_models`; what a session's total has beyond its models is reported under the
//! model `(unattributed)`, so the model breakdown sums to the total as well.
//!
//! Time zones: bucketing converts with `AT TIME ZONE $tz` explicitly, so results never depend on
//! the server's or the database session's time zone, and a DST day is one bucket of 23 or 25 hours.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use super::{StoreError, StoreResult};
use crate::ids::{OrgId, ProjectId};

/// A bound of the window as the client gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A calendar day in the request's time zone.
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

/// The filtered set of sessions every analytics query reads.
#[derive(Debug, Clone)]
pub struct Scope {
    pub org: OrgId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub tz: String,
    pub project_id: Option<ProjectId>,
    pub agent_name: Option<String>,
}

const WINDOW_CTE: &str = "WITH s AS (
    SELECT c.id, c.user_id, c.agent_name, c.project_id, c.repository_id, c.status, c.started_at,
           c.ended_at, c.cost_usd, c.input_tokens, c.output_tokens, c.cache_read_tokens,
           c.cache_write_tokens, c.error_count
      FROM conversations c
     WHERE c.org_id = $1 AND c.started_at >= $2 AND c.started_at < $3
       AND ($4::uuid IS NULL OR c.project_id = $4) AND ($5::text IS NULL OR c.agent_name = $5))";

/// Why a window is refused.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    #[error("start_date must be before end_date")]
    Empty,
    #[error("the window is {0} days; at most 366 are allowed")]
    TooLong(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves the window's bounds in `tz` (a date is that day's local midnight; an end date
/// includes its whole day) and validates the zone with PostgreSQL's own zone database.
pub async fn resolve_window(
    pool: &PgPool,
    tz: &str,
    start: Option<Bound>,
    end: Option<Bound>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), WindowError> {
    let known: Option<(String,)> = sqlx::query_as("SELECT name FROM pg_timezone_names WHERE name = $1")
        .bind(tz)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)?;
    if known.is_none() && tz != "UTC" {
        return Err(WindowError::TimeZone(tz.to_string()));
    }
    let local_midnight = |d: NaiveDate| async move {
        let (t,): (DateTime<Utc>,) = sqlx::query_as("SELECT ($1::timestamp AT TIME ZONE $2)")
            .bind(d.and_hms_opt(0, 0, 0).expect("midnight"))
            .bind(tz)
            .fetch_one(pool)
            .await
            .map_err(StoreError::from)?;
        Ok::<_, WindowError>(t)
    };
    let end = match end {
        None => Utc::now(),
        Some(Bound::Instant(t)) => t,
        Some(Bound::Date(d)) => local_midnight(d.succ_opt().unwrap_or(d)).await?,
    };
    let start = match start {
        None => end - chrono::Duration::days(30),
        Some(Bound::Instant(t)) => t,
        Some(Bound::Date(d)) => local_midnight(d).await?,
    };
    if start >= end {
        return Err(WindowError::Empty);
    }
    let days = ((end - start).num_seconds() + 86_399) / 86_400;
    if days > 366 {
        return Err(WindowError::TooLong(days));
    }
    Ok((start, end))
}

fn query<'q, O>(
    sql: String,
    scope: &'q Scope,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(scope.org)
        .bind(scope.start)
        .bind(scope.end)
        .bind(scope.project_id)
        .bind(scope.agent_name.clone())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Summary {
    pub total_sessions: i64,
    pub active_sessions: i64,
    pub ended_sessions: i64,
    pub total_cost_usd: Decimal,
    pub cost_complete: bool,
    pub input_tokens: Decimal,
    pub output_tokens: Decimal,
    pub cache_read_tokens: Decimal,
    pub cache_write_tokens: Decimal,
    pub avg_duration_seconds: Option<f64>,
    pub median_duration_seconds: Option<f64>,
    pub distinct_users: i64,
    pub sessions_with_errors: i64,
}

pub async fn summary(pool: &PgPool, scope: &Scope) -> StoreResult<Summary> {
    let sql = format!(
        "{WINDOW_CTE}
         SELECT count(*) AS total_sessions,
                count(*) FILTER (WHERE status = 'active') AS active_sessions,
                count(*) FILTER (WHERE status = 'ended') AS ended_sessions,
                COALESCE(sum(cost_usd), 0) AS total_cost_usd,
                COALESCE(bool_and(cost_usd IS NOT NULL), true) AS cost_complete,
                COALESCE(sum(input_tokens), 0) AS input_tokens,
                COALESCE(sum(output_tokens), 0) AS output_tokens,
                COALESCE(sum(cache_read_tokens), 0) AS cache_read_tokens,
                COALESCE(sum(cache_write_tokens), 0) AS cache_write_tokens,
                avg(extract(epoch FROM ended_at - started_at))::float8 AS avg_duration_seconds,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at))
                    FILTER (WHERE ended_at IS NOT NULL) AS median_duration_seconds,
                count(DISTINCT user_id) AS distinct_users,
                count(*) FILTER (WHERE error_count > 0) AS sessions_with_errors
           FROM s"
    );
    Ok(query(sql, scope).fetch_one(pool).await?)
}

/// One group of a breakdown.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Group {
    /// The group's key (an id, a name or a slug); `None` for sessions without one.
    pub key: Option<String>,
    /// A readable label (email, repository slug), where there is one.
    pub label: Option<String>,
    pub sessions: i64,
    pub cost_usd: Decimal,
    pub cost_complete: bool,
    pub tokens: Decimal,
    pub users: i64,
}

/// The dimensions sessions can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Agent,
    Project,
    User,
    Repository,
}

pub async fn breakdown(pool: &PgPool, scope: &Scope, by: Dimension, limit: Option<i64>) -> StoreResult<Vec<Group>> {
    let (key, label, join) = match by {
        Dimension::Agent => ("s.agent_name", "NULL::text", ""),
        Dimension::Project => ("s.project_id::text", "p.name", "LEFT JOIN projects p ON p.id = s.project_id"),
        Dimension::User => ("s.user_id::text", "u.email", "LEFT JOIN users u ON u.id = s.user_id"),
        Dimension::Repository => {
            ("s.repository_id::text", "r.slug", "LEFT JOIN repositories r ON r.id = s.repository_id")
        }
    };
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let sql = format!(
        "{WINDOW_CTE}
         SELECT {key} AS key, max({label}) AS label, count(*) AS sessions,
                COALESCE(sum(s.cost_usd), 0) AS cost_usd,
                bool_and(s.cost_usd IS NOT NULL) AS cost_complete,
                COALESCE(sum(s.input_tokens::numeric + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens), 0) AS tokens,
                count(DISTINCT s.user_id) AS users
           FROM s {join}
          GROUP BY {key}
          ORDER BY cost_usd DESC, sessions DESC, key{limit}"
    );
    Ok(query(sql, scope).fetch_all(pool).await?)
}

/// Cost by model; what session totals hold beyond their models is the model `(unattributed)`.
pub async fn by_model(pool: &PgPool, scope: &Scope) -> StoreResult<Vec<Group>> {
    let sql = format!(
        "{WINDOW_CTE},
         m AS (
            SELECT m.model, s.id AS session, s.user_id, COALESCE(m.cost_usd, 0) AS cost,
                   m.cost_usd IS NOT NULL AS known,
                   m.input_tokens::numeric + m.output_tokens + m.cache_read_tokens + m.cache_write_tokens AS tokens
              FROM s JOIN conversation_models m ON m.conversation_id = s.id
            UNION ALL
            SELECT '(unattributed)', s.id, s.user_id,
                   s.cost_usd - COALESCE((SELECT sum(cm.cost_usd) FROM conversation_models cm WHERE cm.conversation_id = s.id), 0),
                   true,
                   (s.input_tokens::numeric + s.output_tokens + s.cache_read_tokens + s.cache_write_tokens)
                     - COALESCE((SELECT sum(cm.input_tokens::numeric + cm.output_tokens + cm.cache_read_tokens + cm.cache_write_tokens)
                                   FROM conversation_models cm WHERE cm.conversation_id = s.id), 0)
              FROM s WHERE s.cost_usd IS NOT NULL
         )
         SELECT model AS key, NULL::text AS label, count(DISTINCT session) AS sessions,
                COALESCE(sum(cost), 0) AS cost_usd, bool_and(known) AS cost_complete,
                COALESCE(sum(tokens), 0) AS tokens, count(DISTINCT user_id) AS users
           FROM m
          GROUP BY model
         HAVING model <> '(unattributed)' OR sum(cost) <> 0
          ORDER BY cost_usd DESC, key"
    );
    Ok(query(sql, scope).fetch_all(pool).await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Sessions,
    Cost,
    Tokens,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub value: Decimal,
}

/// Every bucket of the window (zero-filled), each starting at a local midnight (Monday for weeks).
pub async fn timeseries(pool: &PgPool, scope: &Scope, interval: Interval, metric: Metric) -> StoreResult<Vec<Bucket>> {
    let unit = match interval {
        Interval::Day => "day",
        Interval::Week => "week",
    };
    let value = match metric {
        Metric::Sessions => "count(*)::numeric",
        Metric::Cost => "COALESCE(sum(cost_usd), 0)",
        Metric::Tokens => {
            "COALESCE(sum(input_tokens::numeric + output_tokens + cache_read_tokens + cache_write_tokens), 0)"
        }
    };
    let sql = format!(
        "{WINDOW_CTE},
         b AS (
            SELECT gs AS local_start
              FROM generate_series(date_trunc('{unit}', $2 AT TIME ZONE $6),
                                   ($3 AT TIME ZONE $6) - interval '1 microsecond',
                                   interval '1 {unit}') gs
         ),
         agg AS (
            SELECT date_trunc('{unit}', started_at AT TIME ZONE $6) AS local_start, {value} AS value
              FROM s GROUP BY 1
         )
         SELECT (b.local_start AT TIME ZONE $6) AS start, COALESCE(agg.value, 0) AS value
           FROM b LEFT JOIN agg USING (local_start)
          ORDER BY b.local_start"
    );
    Ok(query(sql, scope).bind(scope.tz.clone()).fetch_all(pool).await?)
}
