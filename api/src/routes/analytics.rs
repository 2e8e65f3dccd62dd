//! `/{org_id}/sessions/analytics/*`: six views of one filtered set of sessions, which agree with
//! each other to the last decimal (see `store::analytics`).

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::{ApiTags, parse_id};
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::models::{Money, UtcTime};
use crate::state::AppState;
use crewkit_jobs::domain::Role;
use crewkit_jobs::domain::ingest::parse_timestamp;
use crewkit_jobs::store::analytics::{self as an, Bound, Dimension, Group, Scope, WindowError};
use crewkit_jobs::store::orgs::Principal;

pub struct AnalyticsApi;

fn bound(field: &str, s: &str) -> Result<Bound, ApiError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Bound::Date(d));
    }
    parse_timestamp(s).map(Bound::Instant).ok_or_else(|| {
        ApiError::invalid(field, "invalid_date", format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 date-time"))
    })
}

/// The parameters every analytics operation takes.
struct Window {
    start_date: Option<String>,
    end_date: Option<String>,
    project_id: Option<String>,
    agent_name: Option<String>,
    tz: String,
}

async fn scope(state: &AppState, p: &Principal, w: Window) -> Result<Scope, ApiError> {
    let has_end = w.end_date.is_some();
    let start = w.start_date.as_deref().map(|s| bound("start_date", s)).transpose()?;
    let end = w.end_date.as_deref().map(|s| bound("end_date", s)).transpose()?;
    let (start, end, tz_whole_hours) = an::resolve_window(&state.db, &w.tz, start, end).await.map_err(|e| match e {
        WindowError::TimeZone(_) => ApiError::invalid("tz", "invalid_time_zone", e.to_string()),
        WindowError::Empty | WindowError::TooLong(_) => {
            let field = if has_end { "end_date" } else { "start_date" };
            ApiError::invalid(field, "invalid_window", e.to_string())
        }
        WindowError::Store(s) => s.into(),
    })?;
    Ok(Scope {
        org: p.org_id,
        start,
        end,
        tz: w.tz,
        project_id: w.project_id.as_deref().map(|s| parse_id("project_id", s)).transpose()?,
        agent_name: w.agent_name.filter(|a| !a.is_empty()),
        tz_whole_hours,
    })
}

fn int(d: Decimal) -> i64 {
    d.to_i64().unwrap_or(i64::MAX)
}

/// The window an answer covers.
#[derive(Debug, Object)]
pub struct Period {
    /// Inclusive start (UTC).
    pub start: UtcTime,
    /// Exclusive end (UTC).
    pub end: UtcTime,
    /// The time zone dates and buckets were read in.
    pub tz: String,
}

fn period(s: &Scope) -> Period {
    Period { start: s.start.into(), end: s.end.into(), tz: s.tz.clone() }
}

/// Headline KPIs.
#[derive(Debug, Object)]
pub struct Summary {
    /// The window.
    pub period: Period,
    /// Sessions started in the window.
    pub total_sessions: i64,
    /// Of those, still active.
    pub active_sessions: i64,
    /// Of those, ended.
    pub ended_sessions: i64,
    /// Their cost in USD (sessions of unknown cost count 0: see `cost_complete`).
    pub total_cost_usd: Money,
    /// False when some session's cost is unknown.
    pub cost_complete: bool,
    /// All tokens.
    pub total_tokens: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: i64,
    /// Tokens written to the prompt cache.
    pub cache_write_tokens: i64,
    /// Mean duration of the ended sessions.
    #[oai(skip_serializing_if_is_none)]
    pub avg_duration_seconds: Option<f64>,
    /// Median duration of the ended sessions: exact up to 10,000 of them, above that estimated
    /// from duration histograms (within a factor of √2; see `median_duration_estimated`).
    #[oai(skip_serializing_if_is_none)]
    pub median_duration_seconds: Option<f64>,
    /// Whether `median_duration_seconds` is an estimate.
    pub median_duration_estimated: bool,
    /// Users with a session in the window.
    pub distinct_users: i64,
}

/// Bucket width: `day` (the default) or `week` (ISO weeks, starting Monday).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum IntervalParam {
    Day,
    Week,
}

/// What is counted in each bucket: `sessions` (the default), `cost` or `tokens`.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum MetricParam {
    Sessions,
    Cost,
    Tokens,
}

/// One bucket.
#[derive(Debug, Object)]
pub struct Bucket {
    /// Local midnight (Monday for weeks) in `tz`, as UTC.
    pub start: UtcTime,
    /// The metric's value.
    pub value: Money,
}

/// A metric over time, every bucket present.
#[derive(Debug, Object)]
pub struct Timeseries {
    /// The window.
    pub period: Period,
    // No doc comments on enum fields, nor defaults on enum parameters: poem-openapi wraps those
    // $refs in an allOf that some client generators (openapi-python-client) refuse.
    pub interval: IntervalParam,
    pub metric: MetricParam,
    /// The buckets, oldest first, zero-filled.
    pub buckets: Vec<Bucket>,
}

/// One agent's share.
#[derive(Debug, Object)]
pub struct AgentRow {
    /// The agent, such as `claude-code`.
    pub agent_name: String,
    /// Sessions.
    pub sessions: i64,
    /// Cost in USD.
    pub cost_usd: Money,
    /// False when some session's cost is unknown.
    pub cost_complete: bool,
    /// All tokens.
    pub tokens: i64,
    /// Distinct users.
    pub users: i64,
}

/// Metrics by agent.
#[derive(Debug, Object)]
pub struct ByAgent {
    /// The window.
    pub period: Period,
    /// One row per agent, costliest first.
    pub data: Vec<AgentRow>,
}

/// One model's share.
#[derive(Debug, Object)]
pub struct ModelRow {
    /// The model id; `(unattributed)` holds cost given for a session as a whole.
    pub model: String,
    /// Sessions that used it.
    pub sessions: i64,
    /// Cost in USD.
    pub cost_usd: Money,
    /// Tokens.
    pub tokens: i64,
}

/// One project's share.
#[derive(Debug, Object)]
pub struct ProjectRow {
    /// The project (`proj_…`); absent for sessions without one.
    #[oai(skip_serializing_if_is_none)]
    pub project_id: Option<String>,
    /// Its name.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    /// Sessions.
    pub sessions: i64,
    /// Cost in USD.
    pub cost_usd: Money,
}

/// One user's share.
#[derive(Debug, Object)]
pub struct UserRow {
    /// The user (`usr_…`).
    pub user_id: String,
    /// Their email.
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// Sessions.
    pub sessions: i64,
    /// Cost in USD.
    pub cost_usd: Money,
    /// False when some session's cost is unknown.
    pub cost_complete: bool,
    /// All tokens.
    pub tokens: i64,
}

/// Cost split by model, project and user; each split sums to the total.
#[derive(Debug, Object)]
pub struct CostBreakdown {
    /// The window.
    pub period: Period,
    /// Total cost in USD.
    pub total_cost_usd: Money,
    /// False when some session's cost is unknown.
    pub cost_complete: bool,
    /// By model.
    pub by_model: Vec<ModelRow>,
    /// By project.
    pub by_project: Vec<ProjectRow>,
    /// By user.
    pub by_user: Vec<UserRow>,
}

/// Per-user metrics.
#[derive(Debug, Object)]
pub struct ByUser {
    /// The window.
    pub period: Period,
    /// One row per user, costliest first.
    pub data: Vec<UserRow>,
}

/// One repository's share.
#[derive(Debug, Object)]
pub struct RepoRow {
    /// The repository slug, such as `acme/backend`; absent for sessions without one.
    #[oai(skip_serializing_if_is_none)]
    pub repo: Option<String>,
    /// Sessions.
    pub sessions: i64,
    /// Cost in USD.
    pub cost_usd: Money,
}

/// Aggregated team performance.
#[derive(Debug, Object)]
pub struct TeamOverview {
    /// The window.
    pub period: Period,
    /// Users with a session in the window.
    pub active_users: i64,
    /// Sessions in the window.
    pub total_sessions: i64,
    /// Sessions per active user.
    pub sessions_per_user: f64,
    /// Total cost in USD.
    pub total_cost_usd: Money,
    /// Cost per active user, in USD.
    pub cost_per_user: Money,
    /// Share of the analysed sessions whose analysis outcome is `failed` (the agent stopped on a
    /// failure), 0 to 1; 0 when none has been analysed.
    pub failure_rate: f64,
    /// Sessions analysed to a final outcome (completed, completed with errors, failed, abandoned).
    pub analysed_sessions: i64,
    /// Analysed sessions whose outcome is `failed`.
    pub failed_sessions: i64,
    /// Sessions with at least one failed tool call or failed stop.
    pub sessions_with_errors: i64,
    /// The five costliest agents.
    pub top_agents: Vec<AgentRow>,
    /// The five costliest repositories.
    pub top_repositories: Vec<RepoRow>,
}

fn agent_row(g: Group) -> AgentRow {
    AgentRow {
        agent_name: g.key.unwrap_or_default(),
        sessions: g.sessions,
        cost_usd: Money(g.cost_usd),
        cost_complete: g.cost_complete,
        tokens: int(g.tokens),
        users: g.users,
    }
}

fn user_row(g: Group) -> UserRow {
    UserRow {
        user_id: g
            .key
            .and_then(|k| k.parse().ok())
            .map(|u| crewkit_jobs::ids::UserId(u).to_string())
            .unwrap_or_default(),
        email: g.label,
        sessions: g.sessions,
        cost_usd: Money(g.cost_usd),
        cost_complete: g.cost_complete,
        tokens: int(g.tokens),
    }
}

/// Declares the parameters every analytics operation takes, then the handler body.
macro_rules! window {
    ($start:ident, $end:ident, $project:ident, $agent:ident, $tz:ident) => {
        Window { start_date: $start.0, end_date: $end.0, project_id: $project.0, agent_name: $agent.0, tz: $tz.0 }
    };
}

#[OpenApi(tag = "ApiTags::Analytics")]
impl AnalyticsApi {
    /// Summary
    ///
    /// Headline KPIs of the sessions started in the window: sessions (active, ended), cost,
    /// tokens by kind, mean and median duration, distinct users. Default window: the last 30
    /// days; at most 366 days.
    #[oai(path = "/:org_id/sessions/analytics/summary", method = "get", operation_id = "analytics_summary")]
    #[allow(clippy::too_many_arguments)]
    async fn summary(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// First day (YYYY-MM-DD, in `tz`) or instant (RFC 3339).
        start_date: Query<Option<String>>,
        /// Last day, included (YYYY-MM-DD, in `tz`), or an exclusive instant (RFC 3339).
        end_date: Query<Option<String>>,
        /// Only this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only this agent.
        agent_name: Query<Option<String>>,
        /// IANA time zone for dates (default UTC).
        #[oai(default = "utc")]
        tz: Query<String>,
    ) -> Result<Json<Summary>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let s = scope(&state, p, window!(start_date, end_date, project_id, agent_name, tz)).await?;
        let r = an::summary(&state.db, &s).await?;
        let total = r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens;
        Ok(Json(Summary {
            period: period(&s),
            total_sessions: r.total_sessions,
            active_sessions: r.active_sessions,
            ended_sessions: r.ended_sessions,
            total_cost_usd: Money(r.total_cost_usd),
            cost_complete: r.cost_complete,
            total_tokens: int(total),
            input_tokens: int(r.input_tokens),
            output_tokens: int(r.output_tokens),
            cache_read_tokens: int(r.cache_read_tokens),
            cache_write_tokens: int(r.cache_write_tokens),
            avg_duration_seconds: r.avg_duration_seconds,
            median_duration_seconds: r.median_duration_seconds,
            median_duration_estimated: r.median_estimated,
            distinct_users: r.distinct_users,
        }))
    }

    /// Timeseries
    ///
    /// A metric over time for charting: `interval` day or week (ISO weeks, starting Monday, in
    /// `tz`), `metric` sessions, cost or tokens. Every bucket of the window is present
    /// (zero-filled); a daylight-saving day is one bucket of 23 or 25 hours.
    #[oai(path = "/:org_id/sessions/analytics/timeseries", method = "get", operation_id = "analytics_timeseries")]
    #[allow(clippy::too_many_arguments)]
    async fn timeseries(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// First day (YYYY-MM-DD, in `tz`) or instant (RFC 3339).
        start_date: Query<Option<String>>,
        /// Last day, included (YYYY-MM-DD, in `tz`), or an exclusive instant (RFC 3339).
        end_date: Query<Option<String>>,
        /// Only this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only this agent.
        agent_name: Query<Option<String>>,
        /// IANA time zone for dates and buckets (default UTC).
        #[oai(default = "utc")]
        tz: Query<String>,
        interval: Query<Option<IntervalParam>>,
        metric: Query<Option<MetricParam>>,
    ) -> Result<Json<Timeseries>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let s = scope(&state, p, window!(start_date, end_date, project_id, agent_name, tz)).await?;
        let interval = interval.0.unwrap_or(IntervalParam::Day);
        let metric = metric.0.unwrap_or(MetricParam::Sessions);
        let i = match interval {
            IntervalParam::Day => an::Interval::Day,
            IntervalParam::Week => an::Interval::Week,
        };
        let m = match metric {
            MetricParam::Sessions => an::Metric::Sessions,
            MetricParam::Cost => an::Metric::Cost,
            MetricParam::Tokens => an::Metric::Tokens,
        };
        let buckets = an::timeseries(&state.db, &s, i, m).await?;
        Ok(Json(Timeseries {
            period: period(&s),
            interval,
            metric,
            buckets: buckets.into_iter().map(|b| Bucket { start: b.start.into(), value: Money(b.value) }).collect(),
        }))
    }

    /// By agent
    ///
    /// Sessions, cost and tokens broken down by agent.
    #[oai(path = "/:org_id/sessions/analytics/by-agent", method = "get", operation_id = "analytics_by_agent")]
    #[allow(clippy::too_many_arguments)]
    async fn by_agent(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// First day (YYYY-MM-DD, in `tz`) or instant (RFC 3339).
        start_date: Query<Option<String>>,
        /// Last day, included (YYYY-MM-DD, in `tz`), or an exclusive instant (RFC 3339).
        end_date: Query<Option<String>>,
        /// Only this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only this agent.
        agent_name: Query<Option<String>>,
        /// IANA time zone for dates (default UTC).
        #[oai(default = "utc")]
        tz: Query<String>,
    ) -> Result<Json<ByAgent>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let s = scope(&state, p, window!(start_date, end_date, project_id, agent_name, tz)).await?;
        let rows = an::breakdown(&state.db, &s, Dimension::Agent, None).await?;
        Ok(Json(ByAgent { period: period(&s), data: rows.into_iter().map(agent_row).collect() }))
    }

    /// Cost breakdown
    ///
    /// Cost split by model, by project and by user, with the total; each split sums to the
    /// total exactly.
    #[oai(
        path = "/:org_id/sessions/analytics/cost-breakdown",
        method = "get",
        operation_id = "analytics_cost_breakdown"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn cost_breakdown(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// First day (YYYY-MM-DD, in `tz`) or instant (RFC 3339).
        start_date: Query<Option<String>>,
        /// Last day, included (YYYY-MM-DD, in `tz`), or an exclusive instant (RFC 3339).
        end_date: Query<Option<String>>,
        /// Only this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only this agent.
        agent_name: Query<Option<String>>,
        /// IANA time zone for dates (default UTC).
        #[oai(default = "utc")]
        tz: Query<String>,
    ) -> Result<Json<CostBreakdown>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let s = scope(&state, p, window!(start_date, end_date, project_id, agent_name, tz)).await?;
        // Two independent reads of the window, side by side on two connections.
        let (sets, models) = tokio::try_join!(
            an::breakdowns(&state.db, &s, &[Dimension::Project, Dimension::User], None),
            an::by_model(&state.db, &s),
        )?;
        let models = an::with_unattributed(models, &sets.unattributed);
        let total = &sets.total;
        let mut by = sets.by.into_iter().map(|(_, groups)| groups);
        let (projects, users) = (by.next().unwrap_or_default(), by.next().unwrap_or_default());
        Ok(Json(CostBreakdown {
            period: period(&s),
            total_cost_usd: Money(total.cost_usd),
            cost_complete: total.cost_complete,
            by_model: models
                .into_iter()
                .map(|g| ModelRow {
                    model: g.key.unwrap_or_default(),
                    sessions: g.sessions,
                    cost_usd: Money(g.cost_usd),
                    tokens: int(g.tokens),
                })
                .collect(),
            by_project: projects
                .into_iter()
                .map(|g| ProjectRow {
                    project_id: g.key.and_then(|k| k.parse().ok()).map(|u| crewkit_jobs::ids::ProjectId(u).to_string()),
                    name: g.label,
                    sessions: g.sessions,
                    cost_usd: Money(g.cost_usd),
                })
                .collect(),
            by_user: users.into_iter().map(user_row).collect(),
        }))
    }

    /// By user
    ///
    /// Per-user session metrics. Requires the admin or manager role (members get 403).
    #[oai(path = "/:org_id/sessions/analytics/by-user", method = "get", operation_id = "analytics_by_user")]
    #[allow(clippy::too_many_arguments)]
    async fn by_user(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// First day (YYYY-MM-DD, in `tz`) or instant (RFC 3339).
        start_date: Query<Option<String>>,
        /// Last day, included (YYYY-MM-DD, in `tz`), or an exclusive instant (RFC 3339).
        end_date: Query<Option<String>>,
        /// Only this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only this agent.
        agent_name: Query<Option<String>>,
        /// IANA time zone for dates (default UTC).
        #[oai(default = "utc")]
        tz: Query<String>,
    ) -> Result<Json<ByUser>, ApiError> {
        let p = auth.require_role(&org_id, Role::Manager)?;
        let s = scope(&state, p, window!(start_date, end_date, project_id, agent_name, tz)).await?;
        let rows = an::breakdown(&state.db, &s, Dimension::User, None).await?;
        Ok(Json(ByUser { period: period(&s), data: rows.into_iter().map(user_row).collect() }))
    }

    /// Team overview
    ///
    /// Aggregated team performance: active users, sessions and cost per user, failure rate, and
    /// the top agents and repositories by cost.
    #[oai(path = "/:org_id/sessions/analytics/team-overview", method = "get", operation_id = "analytics_team_overview")]
    #[allow(clippy::too_many_arguments)]
    async fn team_overview(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// First day (YYYY-MM-DD, in `tz`) or instant (RFC 3339).
        start_date: Query<Option<String>>,
        /// Last day, included (YYYY-MM-DD, in `tz`), or an exclusive instant (RFC 3339).
        end_date: Query<Option<String>>,
        /// Only this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only this agent.
        agent_name: Query<Option<String>>,
        /// IANA time zone for dates (default UTC).
        #[oai(default = "utc")]
        tz: Query<String>,
    ) -> Result<Json<TeamOverview>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let s = scope(&state, p, window!(start_date, end_date, project_id, agent_name, tz)).await?;
        let sets = an::breakdowns(&state.db, &s, &[Dimension::Agent, Dimension::Repository], Some(5)).await?;
        let sum = &sets.total;
        let (analysed, failed, with_errors) = (sets.analysed_sessions, sets.failed_sessions, sets.sessions_with_errors);
        let mut by = sets.by.into_iter().map(|(_, groups)| groups);
        let (agents, repos) = (by.next().unwrap_or_default(), by.next().unwrap_or_default());
        let users = sum.users;
        let per_user = if users > 0 { (sum.cost_usd / Decimal::from(users)).round_dp(6) } else { Decimal::ZERO };
        Ok(Json(TeamOverview {
            period: period(&s),
            active_users: users,
            total_sessions: sum.sessions,
            sessions_per_user: if users > 0 { sum.sessions as f64 / users as f64 } else { 0.0 },
            total_cost_usd: Money(sum.cost_usd),
            cost_per_user: Money(per_user),
            failure_rate: if analysed > 0 { failed as f64 / analysed as f64 } else { 0.0 },
            analysed_sessions: analysed,
            failed_sessions: failed,
            sessions_with_errors: with_errors,
            top_agents: agents.into_iter().map(agent_row).collect(),
            top_repositories: repos
                .into_iter()
                .map(|g| RepoRow { repo: g.label, sessions: g.sessions, cost_usd: Money(g.cost_usd) })
                .collect(),
        }))
    }
}

fn utc() -> String {
    "UTC".to_string()
}
