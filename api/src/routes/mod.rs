//! The API's operations, grouped by resource. Handlers only translate: parse the request into
//! domain types, call one store or queue function, map the result.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::Tags;

use crate::error::ApiError;
use crewkit_jobs::domain::ingest::parse_timestamp;
use crewkit_jobs::ids::IdError;

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
