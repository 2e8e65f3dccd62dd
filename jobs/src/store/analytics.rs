//! Analytics over sessions, in SQL with exact NUMERIC sums, served from rollups.
//!
//! Every query reads the same set of rows (`ROWS_CTE`): the org's sessions whose `started_at` falls
//! in the window, optionally of one project or agent, as rollup-shaped rows. Whole UTC days of the
//! window come from the day rows of `conversation_rollups`, the remaining whole hours from its hour
//! rows, and the partial hours at the edges from `conversations` itself, each raw session shaped
//! as a rollup row of one. The rollups are kept exact by triggers (migration
//! `20261203000003_rollups.sql`), so the answers are the raw rows' sums to the last decimal, and an
//! endpoint over a million sessions reads a few thousand rows.
//!
//! Breakdowns group that set without joins that could repeat a session (tasks, threads, events),
//! so each session's cost is counted once everywhere and every breakdown sums to the summary
//! exactly. Per-model cost comes from `model_rollups`; what a session's total has beyond its models
//! is reported under the model `(unattributed)`, so the model breakdown sums to the total as well.
//!
//! Time zones: bucketing converts with `AT TIME ZONE $tz` explicitly, so results never depend on
//! the server's or the database session's time zone, and a DST day is one bucket of 23 or 25
//! hours. Local buckets use day rows only in UTC, hour rows only in zones whose offset is whole
//! hours, and raw rows otherwise (India's +05:30, say).

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
    /// `tz`'s offset is whole hours at both ends of the window, so local midnights are UTC hours.
    pub tz_whole_hours: bool,
}

impl Scope {
    fn tz_is_utc(&self) -> bool {
        const UTC: [&str; 12] = [
            "UTC",
            "Etc/UTC",
            "Etc/Universal",
            "Universal",
            "Zulu",
            "Etc/Zulu",
            "UCT",
            "Etc/UCT",
            "GMT",
            "Etc/GMT",
            "Greenwich",
            "Etc/Greenwich",
        ];
        UTC.iter().any(|z| z.eq_ignore_ascii_case(&self.tz))
    }

    /// Where rollup rows take over from raw rows: `[h0, d0, d1, h1]`, hour rows in `[h0, d0)` and
    /// `[d1, h1)`, day rows in `[d0, d1)`, raw rows in `[start, h0)` and `[h1, end)`.
    /// `local_buckets`: the query buckets by local time, so rows must not straddle local midnight.
    fn cuts(&self, local_buckets: bool) -> [DateTime<Utc>; 4] {
        let all_raw = [self.end; 4];
        if local_buckets && !self.tz_whole_hours {
            return all_raw;
        }
        let (h0, h1) = (ceil_to(self.start, 3_600), floor_to(self.end, 3_600));
        if h0 >= h1 {
            return all_raw;
        }
        let (d0, d1) = (ceil_to(h0, 86_400), floor_to(h1, 86_400));
        if d0 >= d1 || (local_buckets && !self.tz_is_utc()) {
            return [h0, h1, h1, h1];
        }
        [h0, d0, d1, h1]
    }
}

fn floor_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let floored = t.timestamp().div_euclid(secs) * secs;
    DateTime::from_timestamp(floored, 0).expect("in range")
}

fn ceil_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let f = floor_to(t, secs);
    if f == t { f } else { f + chrono::Duration::seconds(secs) }
}

/// Rollup rows and raw edge rows of the window; binds $1 org, $2 start, $3 end, $4 project,
/// $5 agent, $6..$9 the cuts (`Scope::cuts`). Use it through `rows_cte`.
const ROWS_CTE: &str = "WITH r AS (
    SELECT bucket AS at, project_id, agent_name, user_id, repository_id, sessions, active, cost_unknown, cost_usd,
           input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, ended, duration_seconds,
           duration_hist, with_errors, analysed, failed, known_tokens, attributed_cost, attributed_tokens
      FROM conversation_rollups
     WHERE org_id = $1 AND ($4::uuid IS NULL OR project_id = $4) AND ($5::text IS NULL OR agent_name = $5)
       AND ((grain = 'd' AND bucket >= $7 AND bucket < $8)
         OR (grain = 'h' AND ((bucket >= $6 AND bucket < $7) OR (bucket >= $8 AND bucket < $9))))
    UNION ALL
    SELECT c.started_at, c.project_id, c.agent_name, c.user_id, c.repository_id, 1, (c.status = 'active')::int,
           (c.cost_usd IS NULL)::int, COALESCE(c.cost_usd, 0), c.input_tokens, c.output_tokens,
           c.cache_read_tokens, c.cache_write_tokens, (c.ended_at IS NOT NULL)::int,
           COALESCE(extract(epoch FROM c.ended_at - c.started_at), 0),
           @RAW_HIST@,
           (c.error_count > 0)::int,
           COALESCE(c.outcome IN ('completed', 'completed_with_errors', 'failed', 'abandoned'), false)::int,
           COALESCE(c.outcome = 'failed', false)::int,
           CASE WHEN c.cost_usd IS NOT NULL
                THEN c.input_tokens::numeric + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens ELSE 0 END,
           CASE WHEN c.cost_usd IS NOT NULL THEN c.models_cost_usd ELSE 0 END,
           CASE WHEN c.cost_usd IS NOT NULL THEN c.models_tokens ELSE 0 END
      FROM conversations c
     WHERE c.org_id = $1 AND ($4::uuid IS NULL OR c.project_id = $4) AND ($5::text IS NULL OR c.agent_name = $5)
       AND ((c.started_at >= $2 AND c.started_at < $6) OR (c.started_at >= $9 AND c.started_at < $3)))";

/// A raw session's duration histogram (one count in its bucket).
const RAW_HIST: &str = "crewkit_hist_add(array_fill(0::bigint, ARRAY[24]), \
                        crewkit_duration_bucket(extract(epoch FROM c.ended_at - c.started_at)))";

/// `ROWS_CTE`, with the raw rows' duration histograms only when the query reads them: PostgreSQL
/// computes every column of a `UNION ALL` branch whether read or not, and the histogram (a
/// PL/pgSQL call and a NUMERIC logarithm per session) was most of the cost of the edge rows.
fn rows_cte(with_hist: bool) -> String {
    ROWS_CTE.replace("@RAW_HIST@", if with_hist { RAW_HIST } else { "NULL::bigint[]" })
}

/// The same window over `model_rollups` and raw `conversation_models`; binds as `ROWS_CTE`.
/// What a session's total holds beyond its models is not here: `Breakdowns::unattributed`.
const MODEL_ROWS_CTE: &str = "WITH mr AS (
    SELECT model, sessions, cost_unknown, cost_usd, tokens
      FROM model_rollups
     WHERE org_id = $1 AND ($4::uuid IS NULL OR project_id = $4) AND ($5::text IS NULL OR agent_name = $5)
       AND ((grain = 'd' AND bucket >= $7 AND bucket < $8)
         OR (grain = 'h' AND ((bucket >= $6 AND bucket < $7) OR (bucket >= $8 AND bucket < $9))))
    UNION ALL
    SELECT m.model, 1, (m.cost_usd IS NULL)::int, COALESCE(m.cost_usd, 0),
           m.input_tokens::numeric + m.output_tokens + m.cache_read_tokens + m.cache_write_tokens
      FROM conversations c JOIN conversation_models m ON m.conversation_id = c.id
     WHERE c.org_id = $1 AND ($4::uuid IS NULL OR c.project_id = $4) AND ($5::text IS NULL OR c.agent_name = $5)
       AND ((c.started_at >= $2 AND c.started_at < $6) OR (c.started_at >= $9 AND c.started_at < $3)))";

/// Sessions whose durations are sorted for an exact median; above it, the median is estimated
/// from the rollups' duration histograms.
pub const EXACT_MEDIAN_MAX: i64 = 10_000;

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

/// Zones PostgreSQL has recognised, so each is checked once per process. (`pg_timezone_names`
/// reads the whole zone database on every query: ~50 ms, most of an analytics request.)
static KNOWN_ZONES: std::sync::LazyLock<std::sync::RwLock<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Whether PostgreSQL knows `tz` as a zone database name (IANA, e.g. `Europe/Berlin`).
async fn known_zone(pool: &PgPool, tz: &str) -> Result<bool, WindowError> {
    if KNOWN_ZONES.read().expect("zones lock").contains(tz) {
        return Ok(true);
    }
    let looks_like_a_name =
        !tz.is_empty() && tz.len() <= 64 && tz.chars().all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
    if !looks_like_a_name {
        return Ok(false);
    }
    // `AT TIME ZONE` would also accept abbreviations and POSIX strings; the list holds only
    // the zone database's names.
    let known: Option<(String,)> = sqlx::query_as("SELECT name FROM pg_timezone_names WHERE name = $1")
        .bind(tz)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)?;
    if known.is_some() || tz == "UTC" {
        KNOWN_ZONES.write().expect("zones lock").insert(tz.to_string());
        return Ok(true);
    }
    Ok(false)
}

/// Resolves the window's bounds in `tz` (a date is that day's local midnight; an end date
/// includes its whole day) and validates the zone with PostgreSQL's own zone database.
pub async fn resolve_window(
    pool: &PgPool,
    tz: &str,
    start: Option<Bound>,
    end: Option<Bound>,
) -> Result<(DateTime<Utc>, DateTime<Utc>, bool), WindowError> {
    if !known_zone(pool, tz).await? {
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
    let (whole_hours,): (bool,) = sqlx::query_as(
        "SELECT extract(epoch FROM ($1::timestamptz AT TIME ZONE $3) - ($1::timestamptz AT TIME ZONE 'UTC'))::bigint % 3600 = 0
            AND extract(epoch FROM ($2::timestamptz AT TIME ZONE $3) - ($2::timestamptz AT TIME ZONE 'UTC'))::bigint % 3600 = 0",
    )
    .bind(start)
    .bind(end)
    .bind(tz)
    .fetch_one(pool)
    .await
    .map_err(StoreError::from)?;
    Ok((start, end, whole_hours))
}

fn query<'q, O>(
    sql: String,
    scope: &'q Scope,
    local_buckets: bool,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let [h0, d0, d1, h1] = scope.cuts(local_buckets);
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(scope.org)
        .bind(scope.start)
        .bind(scope.end)
        .bind(scope.project_id)
        .bind(scope.agent_name.clone())
        .bind(h0)
        .bind(d0)
        .bind(d1)
        .bind(h1)
}

/// Total tokens of a row of `r`.
const TOKENS: &str = "input_tokens + output_tokens + cache_read_tokens + cache_write_tokens";

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
    /// Set by `summary` (exact, or estimated when `median_estimated`).
    #[sqlx(skip)]
    pub median_duration_seconds: Option<f64>,
    #[sqlx(skip)]
    pub median_estimated: bool,
    pub distinct_users: i64,
    /// Sessions with an `ended_at`, and their durations' histogram (`crewkit_duration_bucket`).
    pub timed_sessions: i64,
    pub duration_hist: Vec<i64>,
}

pub async fn summary(pool: &PgPool, scope: &Scope) -> StoreResult<Summary> {
    let hist: Vec<String> = (1..=24).map(|k| format!("COALESCE(sum(duration_hist[{k}]), 0)::bigint")).collect();
    let rows = rows_cte(true);
    let sql = format!(
        "{rows}
         SELECT COALESCE(sum(sessions), 0)::bigint AS total_sessions,
                COALESCE(sum(active), 0)::bigint AS active_sessions,
                COALESCE(sum(sessions - active), 0)::bigint AS ended_sessions,
                COALESCE(sum(cost_usd), 0) AS total_cost_usd,
                COALESCE(sum(cost_unknown), 0) = 0 AS cost_complete,
                COALESCE(sum(input_tokens), 0) AS input_tokens,
                COALESCE(sum(output_tokens), 0) AS output_tokens,
                COALESCE(sum(cache_read_tokens), 0) AS cache_read_tokens,
                COALESCE(sum(cache_write_tokens), 0) AS cache_write_tokens,
                (sum(duration_seconds) / NULLIF(sum(ended), 0))::float8 AS avg_duration_seconds,
                count(DISTINCT user_id) FILTER (WHERE sessions > 0) AS distinct_users,
                COALESCE(sum(ended), 0)::bigint AS timed_sessions,
                ARRAY[{}] AS duration_hist
           FROM r",
        hist.join(", ")
    );
    let mut out: Summary = query(sql, scope, false).fetch_one(pool).await?;
    if out.timed_sessions <= EXACT_MEDIAN_MAX {
        let (median,): (Option<f64>,) = sqlx::query_as(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at))::float8
               FROM conversations c
              WHERE c.org_id = $1 AND c.started_at >= $2 AND c.started_at < $3 AND c.ended_at IS NOT NULL
                AND ($4::uuid IS NULL OR c.project_id = $4) AND ($5::text IS NULL OR c.agent_name = $5)",
        )
        .bind(scope.org)
        .bind(scope.start)
        .bind(scope.end)
        .bind(scope.project_id)
        .bind(scope.agent_name.clone())
        .fetch_one(pool)
        .await?;
        out.median_duration_seconds = median;
    } else {
        out.median_duration_seconds = estimate_median(&out.duration_hist);
        out.median_estimated = true;
    }
    Ok(out)
}

/// Lower bound in seconds of histogram bucket `k` (1-based; see `crewkit_duration_bucket`).
fn bucket_floor(k: usize) -> f64 {
    if k <= 1 { 0.0 } else { 30.0 * 2f64.powf((k as f64 - 2.0) / 2.0) }
}

/// The median of a duration histogram, interpolating linearly inside the bucket that holds it
/// (the last, open bucket is taken to end at twice its start). Within one bucket, that is within
/// a factor of √2 of the true median.
pub fn estimate_median(hist: &[i64]) -> Option<f64> {
    let total: i64 = hist.iter().sum();
    if total <= 0 {
        return None;
    }
    let half = total as f64 / 2.0;
    let mut below = 0.0;
    for (i, &n) in hist.iter().enumerate() {
        let k = i + 1;
        if n > 0 && below + n as f64 >= half {
            let (lo, hi) = (bucket_floor(k), if k == hist.len() { 2.0 * bucket_floor(k) } else { bucket_floor(k + 1) });
            return Some(lo + (hi - lo) * (half - below) / n as f64);
        }
        below += n as f64;
    }
    None
}

/// One group of a breakdown.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
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
        Dimension::Agent => ("r.agent_name", "NULL::text", ""),
        Dimension::Project => ("r.project_id", "p.name", "LEFT JOIN projects p ON p.id = g.key"),
        Dimension::User => ("r.user_id", "u.email", "LEFT JOIN users u ON u.id = g.key"),
        Dimension::Repository => ("r.repository_id", "rp.slug", "LEFT JOIN repositories rp ON rp.id = g.key"),
    };
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let rows = rows_cte(false);
    let sql = format!(
        "{rows},
         g AS (
            SELECT {key} AS key, sum(r.sessions)::bigint AS sessions, COALESCE(sum(r.cost_usd), 0) AS cost_usd,
                   COALESCE(sum(r.cost_unknown), 0) = 0 AS cost_complete,
                   COALESCE(sum({TOKENS}), 0) AS tokens,
                   count(DISTINCT r.user_id) FILTER (WHERE r.sessions > 0) AS users
              FROM r GROUP BY 1 HAVING sum(r.sessions) > 0
         )
         SELECT g.key::text AS key, {label} AS label, g.sessions, g.cost_usd, g.cost_complete, g.tokens, g.users
           FROM g {join}
          ORDER BY g.cost_usd DESC, g.sessions DESC, 1{limit}"
    );
    Ok(query(sql, scope, false).fetch_all(pool).await?)
}

/// The window's totals and several breakdowns, from one scan (`GROUPING SETS`).
#[derive(Debug, Clone, Default)]
pub struct Breakdowns {
    pub total: Group,
    pub analysed_sessions: i64,
    pub failed_sessions: i64,
    pub sessions_with_errors: i64,
    /// What the sessions of known cost hold beyond their models' rows, as the model
    /// `(unattributed)` (see `with_unattributed`).
    pub unattributed: Group,
    /// Per dimension asked for, in `breakdown`'s order.
    pub by: Vec<(Dimension, Vec<Group>)>,
}

#[derive(Debug, sqlx::FromRow)]
struct SetRow {
    set_bits: i32,
    key: Option<String>,
    label: Option<String>,
    sessions: i64,
    cost_usd: Decimal,
    tokens: Decimal,
    users: i64,
    analysed: i64,
    failed: i64,
    with_errors: i64,
    cost_unknown: i64,
    known_tokens: Decimal,
    attributed_cost: Decimal,
    attributed_tokens: Decimal,
}

/// `GROUPING(project_id, user_id, agent_name, repository_id)` of each dimension's grouping set.
fn set_bits(d: Dimension) -> i32 {
    match d {
        Dimension::Project => 0b0111,
        Dimension::User => 0b1011,
        Dimension::Agent => 0b1101,
        Dimension::Repository => 0b1110,
    }
}

/// Totals plus the breakdowns by `dims`, each like `breakdown` (same rows, same order, the first
/// `limit` of each), in one read of the window instead of one per breakdown.
pub async fn breakdowns(
    pool: &PgPool,
    scope: &Scope,
    dims: &[Dimension],
    limit: Option<usize>,
) -> StoreResult<Breakdowns> {
    // All four dimensions are grouped (GROUPING() needs each of its columns in some set); the
    // extra groups are a few rows each, and the scan is shared. The window's rows are summed per
    // combination of the four first (a few hundred rows from thousands), so the grouping sets,
    // each a sort with its `count(DISTINCT)`, sort those instead of every row of the window.
    // Rollup and raw rows hold no negative counts, so a combination has sessions exactly when
    // one of its rows has.
    let rows = rows_cte(false);
    let sql = format!(
        "{rows},
         c AS (
            SELECT r.project_id, r.user_id, r.agent_name, r.repository_id, sum(r.sessions) AS sessions,
                   sum(r.cost_usd) AS cost_usd, sum(r.cost_unknown) AS cost_unknown, sum({TOKENS}) AS tokens,
                   sum(r.analysed) AS analysed, sum(r.failed) AS failed, sum(r.with_errors) AS with_errors,
                   sum(r.known_tokens) AS known_tokens, sum(r.attributed_cost) AS attributed_cost,
                   sum(r.attributed_tokens) AS attributed_tokens
              FROM r GROUP BY 1, 2, 3, 4
         ),
         g AS (
            SELECT GROUPING(r.project_id, r.user_id, r.agent_name, r.repository_id) AS set_bits,
                   r.project_id, r.user_id, r.agent_name, r.repository_id,
                   COALESCE(sum(r.sessions), 0)::bigint AS sessions, COALESCE(sum(r.cost_usd), 0) AS cost_usd,
                   COALESCE(sum(r.tokens), 0) AS tokens,
                   count(DISTINCT r.user_id) FILTER (WHERE r.sessions > 0) AS users,
                   COALESCE(sum(r.analysed), 0)::bigint AS analysed, COALESCE(sum(r.failed), 0)::bigint AS failed,
                   COALESCE(sum(r.with_errors), 0)::bigint AS with_errors,
                   COALESCE(sum(r.cost_unknown), 0)::bigint AS cost_unknown,
                   COALESCE(sum(r.known_tokens), 0) AS known_tokens,
                   COALESCE(sum(r.attributed_cost), 0) AS attributed_cost,
                   COALESCE(sum(r.attributed_tokens), 0) AS attributed_tokens
              FROM c r
             GROUP BY GROUPING SETS ((), (r.project_id), (r.user_id), (r.agent_name), (r.repository_id))
            HAVING sum(r.sessions) > 0 OR GROUPING(r.project_id, r.user_id, r.agent_name, r.repository_id) = 15
         )
         SELECT g.set_bits,
                CASE g.set_bits WHEN 7 THEN g.project_id::text WHEN 11 THEN g.user_id::text
                                WHEN 13 THEN g.agent_name WHEN 14 THEN g.repository_id::text END AS key,
                CASE g.set_bits WHEN 7 THEN p.name WHEN 11 THEN u.email WHEN 14 THEN rp.slug END AS label,
                g.sessions, g.cost_usd, g.tokens, g.users, g.analysed, g.failed, g.with_errors, g.cost_unknown, g.known_tokens, g.attributed_cost, g.attributed_tokens
           FROM g
           LEFT JOIN projects p ON p.id = g.project_id
           LEFT JOIN users u ON u.id = g.user_id
           LEFT JOIN repositories rp ON rp.id = g.repository_id"
    );
    let rows: Vec<SetRow> = query(sql, scope, false).fetch_all(pool).await?;
    let mut out = Breakdowns { by: dims.iter().map(|d| (*d, Vec::new())).collect(), ..Breakdowns::default() };
    for r in rows {
        let group = Group {
            key: r.key,
            label: r.label,
            sessions: r.sessions,
            cost_usd: r.cost_usd,
            cost_complete: r.cost_unknown == 0,
            tokens: r.tokens,
            users: r.users,
        };
        if r.set_bits == 15 {
            out.unattributed = Group {
                key: Some("(unattributed)".into()),
                label: None,
                sessions: r.sessions - r.cost_unknown,
                cost_usd: r.cost_usd - r.attributed_cost,
                cost_complete: true,
                tokens: r.known_tokens - r.attributed_tokens,
                users: 0,
            };
            out.total = group;
            out.analysed_sessions = r.analysed;
            out.failed_sessions = r.failed;
            out.sessions_with_errors = r.with_errors;
        } else if let Some((_, groups)) = out.by.iter_mut().find(|(d, _)| set_bits(*d) == r.set_bits) {
            groups.push(group);
        }
    }
    for (_, groups) in &mut out.by {
        groups.sort_by(|a, b| b.cost_usd.cmp(&a.cost_usd).then(b.sessions.cmp(&a.sessions)).then(a.key.cmp(&b.key)));
        if let Some(n) = limit {
            groups.truncate(n);
        }
    }
    Ok(out)
}

/// Cost by model, from the model rows alone (`users` is not counted: 0). What session totals
/// hold beyond their models, the model `(unattributed)`, comes from `breakdowns`, which reads the
/// session rows anyway; `with_unattributed` adds it, so the list sums to the total.
pub async fn by_model(pool: &PgPool, scope: &Scope) -> StoreResult<Vec<Group>> {
    let sql = format!(
        "{MODEL_ROWS_CTE}
         SELECT model AS key, NULL::text AS label, sum(sessions)::bigint AS sessions,
                COALESCE(sum(cost_usd), 0) AS cost_usd, COALESCE(sum(cost_unknown), 0) = 0 AS cost_complete,
                COALESCE(sum(tokens), 0) AS tokens, 0::bigint AS users
           FROM mr
          GROUP BY model
         HAVING sum(sessions) > 0"
    );
    Ok(query(sql, scope, false).fetch_all(pool).await?)
}

/// The model rows plus the remainder (when it has sessions and cost), most expensive first.
pub fn with_unattributed(mut models: Vec<Group>, unattributed: &Group) -> Vec<Group> {
    if unattributed.sessions > 0 && !unattributed.cost_usd.is_zero() {
        models.push(unattributed.clone());
    }
    models.sort_by(|a, b| b.cost_usd.cmp(&a.cost_usd).then(a.key.cmp(&b.key)));
    models
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
        Metric::Sessions => "COALESCE(sum(sessions), 0)::numeric".to_string(),
        Metric::Cost => "COALESCE(sum(cost_usd), 0)".to_string(),
        Metric::Tokens => format!("COALESCE(sum({TOKENS}), 0)"),
    };
    let rows = rows_cte(false);
    let sql = format!(
        "{rows},
         b AS (
            SELECT gs AS local_start
              FROM generate_series(date_trunc('{unit}', $2 AT TIME ZONE $10),
                                   ($3 AT TIME ZONE $10) - interval '1 microsecond',
                                   interval '1 {unit}') gs
         ),
         agg AS (
            SELECT date_trunc('{unit}', at AT TIME ZONE $10) AS local_start, {value} AS value
              FROM r GROUP BY 1
         )
         SELECT (b.local_start AT TIME ZONE $10) AS start, COALESCE(agg.value, 0) AS value
           FROM b LEFT JOIN agg USING (local_start)
          ORDER BY b.local_start"
    );
    Ok(query(sql, scope, true).bind(scope.tz.clone()).fetch_all(pool).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_interpolated_inside_its_bucket() {
        let mut hist = vec![0; 24];
        assert_eq!(estimate_median(&hist), None);
        // Three sessions under 30 s and one of an hour: the median lies in the first bucket.
        hist[0] = 3;
        hist[12] = 1;
        let m = estimate_median(&hist).unwrap();
        assert!((0.0..30.0).contains(&m), "{m}");
        // All in the bucket [960 s, 1357.6 s): the estimate stays inside it.
        let mut hist = vec![0; 24];
        hist[11] = 10;
        let m = estimate_median(&hist).unwrap();
        assert!((960.0..1357.7).contains(&m), "{m}");
        // The open last bucket (17 h and more) is read as ending at twice its start.
        let mut hist = vec![0; 24];
        hist[23] = 2;
        assert_eq!(estimate_median(&hist), Some(61_440.0 * 1.5));
    }

    #[test]
    fn cuts_split_a_window_into_raw_hour_and_day_parts() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let scope = |start: &str, end: &str, tz: &str, whole: bool| Scope {
            org: OrgId(uuid::Uuid::nil()),
            start: t(start),
            end: t(end),
            tz: tz.into(),
            project_id: None,
            agent_name: None,
            tz_whole_hours: whole,
        };
        let s = scope("2026-11-01T10:15:00Z", "2026-11-05T08:30:00Z", "UTC", true);
        assert_eq!(
            s.cuts(false),
            [
                t("2026-11-01T11:00:00Z"),
                t("2026-11-02T00:00:00Z"),
                t("2026-11-05T00:00:00Z"),
                t("2026-11-05T08:00:00Z")
            ]
        );
        // Local buckets outside UTC: hours only; in a zone of half hours: raw only.
        let s = scope("2026-11-01T10:15:00Z", "2026-11-05T08:30:00Z", "Europe/Berlin", true);
        assert_eq!(
            s.cuts(true),
            [
                t("2026-11-01T11:00:00Z"),
                t("2026-11-05T08:00:00Z"),
                t("2026-11-05T08:00:00Z"),
                t("2026-11-05T08:00:00Z")
            ]
        );
        assert_eq!(s.cuts(false)[1], t("2026-11-02T00:00:00Z"));
        let s = scope("2026-11-01T10:15:00Z", "2026-11-05T08:30:00Z", "Asia/Kolkata", false);
        assert_eq!(s.cuts(true), [s.end; 4]);
        // Inside one hour: raw only.
        let s = scope("2026-11-01T10:15:00Z", "2026-11-01T10:45:00Z", "UTC", true);
        assert_eq!(s.cuts(false), [s.end; 4]);
    }
}
