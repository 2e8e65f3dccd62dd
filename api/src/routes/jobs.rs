//! `GET /{org_id}/jobs/{id}`: any job id the API returned.
//!
//! A job has a record in PostgreSQL from its first attempt on (written by the worker). Before
//! that, only the queue knows it, so the queue is asked; the payload's `org_id` keeps another
//! organisation's jobs invisible (404) there too.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;

use super::{ApiTags, parse_id};
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::models::{Job, JobStatus};
use crate::state::AppState;
use crewkit_jobs::domain::Role;
use crewkit_jobs::ids::{JobId, OrgId, SessionId};
use crewkit_jobs::queue::JobKind;
use crewkit_jobs::service::{self, RetryError};
use crewkit_jobs::store::jobs as job_store;

pub struct JobsApi;

#[derive(serde::Deserialize)]
struct Owner {
    org_id: OrgId,
    #[serde(default)]
    session_id: Option<SessionId>,
}

async fn from_queue(state: &AppState, org: OrgId, id: JobId) -> Result<Option<Job>, ApiError> {
    for kind in JobKind::ALL {
        let Some(queued) = state.queues.peek(*kind, id).await? else {
            continue;
        };
        let Ok(owner) = serde_json::from_slice::<Owner>(&queued.payload) else {
            continue;
        };
        if owner.org_id != org {
            return Ok(None);
        }
        let status = match queued.status.as_str() {
            "Running" => JobStatus::Running,
            "Done" => JobStatus::Succeeded,
            "Killed" => JobStatus::Failed,
            _ => JobStatus::Queued,
        };
        let created_at =
            DateTime::<Utc>::from_timestamp_millis(id.ulid().timestamp_ms() as i64).unwrap_or_else(Utc::now);
        return Ok(Some(Job {
            id: id.to_string(),
            kind: kind.name().to_string(),
            status,
            attempts: queued.attempts,
            max_attempts: kind.max_attempts() as i64,
            error: None,
            session_id: owner.session_id.map(|s| s.to_string()),
            result: None,
            created_at: created_at.into(),
            started_at: None,
            finished_at: None,
        }));
    }
    Ok(None)
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Get job
    ///
    /// A background job's kind, status (queued → running → succeeded | failed), attempts, last
    /// error and timestamps.
    #[oai(path = "/:org_id/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Job id (`job_…`).
        id: Path<String>,
    ) -> Result<Json<Job>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: JobId = parse_id("id", &id)?;
        if let Some(row) = job_store::get_job(&state.db, p.org_id, id).await? {
            return Ok(Json(row.into()));
        }
        from_queue(&state, p.org_id, id).await?.map(Json).ok_or_else(|| ApiError::not_found("job"))
    }

    /// Retry job
    ///
    /// Re-runs a failed job under the same id, its attempts reset. Admin only. A job that has not
    /// failed is 409.
    #[oai(path = "/:org_id/jobs/:id/retry", method = "post", operation_id = "retry_job")]
    async fn retry(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Job id (`job_…`).
        id: Path<String>,
    ) -> Result<RetryResponse, ApiError> {
        let p = auth.require_role(&org_id, Role::Admin)?;
        let id: JobId = parse_id("id", &id)?;
        service::retry_job(&state.db, &state.queues, p.org_id, id).await.map_err(|e| match e {
            RetryError::NotFailed(_) | RetryError::Gone => {
                ApiError::new(poem::http::StatusCode::CONFLICT, "not_retryable", e.to_string())
            }
            RetryError::Store(s) => s.into(),
            RetryError::Queue(q) => q.into(),
        })?;
        let job = job_store::get_job(&state.db, p.org_id, id).await?.ok_or_else(|| ApiError::not_found("job"))?;
        Ok(RetryResponse::Accepted(Json(job.into())))
    }
}

#[derive(poem_openapi::ApiResponse)]
pub enum RetryResponse {
    /// Queued again.
    #[oai(status = 202)]
    Accepted(Json<Job>),
}
