//! The API's operations, grouped by resource. Handlers only translate: parse the request into
//! domain types, call one store or queue function, map the result.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::Tags;

use crate::error::ApiError;
use crewkit_jobs::domain::ingest::parse_timestamp;
use crewkit_jobs::ids::IdError;
use crewkit_jobs::store::orgs::Principal;
use crewkit_jobs::store::sessions::SessionFilter;

pub mod admin;
pub mod analytics;
pub mod events;
pub mod health;
pub mod jobs;
pub mod search;
pub mod session_updates;
pub mod sessions;
pub mod threads;

#[derive(Tags)]
pub enum ApiTags {
    /// Coding sessions: Run > Conversation > Tasks.
    Sessions,
    /// Batched ingestion of agent hook events.
    Observability,
    /// Analytics over sessions.
    Analytics,
    /// Background jobs.
    Jobs,
    /// Users and API keys of an organisation (admin role).
    Admin,
    /// Liveness and readiness.
    Health,
}

/// Parses a prefixed id, naming the field on failure.
pub fn parse_id<T: FromStr<Err = IdError>>(field: &str, s: &str) -> Result<T, ApiError> {
    s.parse().map_err(|e| ApiError::id(field, e))
}

/// An RFC 3339 time, or a date (midnight UTC).
pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_timestamp(s)
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        })
        .ok_or_else(|| {
            ApiError::invalid(field, "invalid_timestamp", format!("{s:?} is not an RFC 3339 date-time or a date"))
        })
}

/// The request id (from `X-Request-Id` or generated), carried into the jobs a request queues.
pub fn request_id(req: &poem::Request) -> Option<String> {
    req.extensions().get::<poem::middleware::ReqId>().map(|r| r.to_string())
}

/// Pages needed for `total` items.
pub fn total_pages(total: i64, per_page: u32) -> i64 {
    (total + i64::from(per_page) - 1) / i64::from(per_page)
}

/// The list's filters as their query parameters give them (shared by list and search).
pub struct ListParams {
    pub project_id: Option<String>,
    pub repo: Option<String>,
    pub agent_name: Option<String>,
    pub current_user_only: bool,
    pub status: Option<crate::models::SessionStatus>,
    pub agent_session_id: Option<String>,
    pub started_after: Option<String>,
    pub started_before: Option<String>,
}

impl ListParams {
    pub fn into_filter(self, p: &Principal) -> Result<SessionFilter, ApiError> {
        Ok(SessionFilter {
            project_id: self.project_id.as_deref().map(|s| parse_id("project_id", s)).transpose()?,
            repo_slug: self.repo.filter(|s| !s.is_empty()),
            agent_name: self.agent_name.filter(|s| !s.is_empty()),
            user_id: self.current_user_only.then_some(p.user_id),
            status: self.status.map(|s| s.as_str().to_string()),
            agent_session_id: self.agent_session_id,
            started_after: self.started_after.as_deref().map(|s| parse_time("started_after", s)).transpose()?,
            started_before: self.started_before.as_deref().map(|s| parse_time("started_before", s)).transpose()?,
        })
    }
}

pub fn default_page() -> u32 {
    1
}

pub fn default_per_page() -> u32 {
    25
}

pub type AllApis = (
    threads::ThreadsApi,
    search::SearchApi,
    analytics::AnalyticsApi,
    sessions::SessionsApi,
    session_updates::SessionUpdatesApi,
    events::EventsApi,
    jobs::JobsApi,
    admin::AdminApi,
    health::HealthApi,
);

pub fn apis() -> AllApis {
    (
        threads::ThreadsApi,
        search::SearchApi,
        analytics::AnalyticsApi,
        sessions::SessionsApi,
        session_updates::SessionUpdatesApi,
        events::EventsApi,
        jobs::JobsApi,
        admin::AdminApi,
        health::HealthApi,
    )
}
