//! Changing a session: PATCH (metrics, title, summary), end, compact, and its compactions.

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::{ApiTags, parse_id, parse_time, request_id};
use crate::auth::ApiKey;
use crate::body::OptionalJsonBody;
use crate::error::ApiError;
use crate::models::{Compaction, Job, MoneyInput, Session};
use crate::state::AppState;
use crewkit_jobs::ids::SessionId;
use crewkit_jobs::service::{self, EndSession};
use crewkit_jobs::store::jobs as job_store;
use crewkit_jobs::store::sessions::{self, MetricsSnapshot, ModelUsage};
use crewkit_jobs::store::{StoreError, compactions};

pub struct SessionUpdatesApi;

/// Usage of one model, cumulative since the session started.
#[derive(Debug, Object, Deserialize)]
pub struct ModelMetricsInput {
    /// The model id, such as `claude-sonnet-4-6`.
    pub model: String,
    /// Input tokens.
    #[oai(skip_serializing_if_is_none)]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[oai(skip_serializing_if_is_none)]
    pub output_tokens: Option<u64>,
    /// Tokens read from the prompt cache.
    #[oai(skip_serializing_if_is_none)]
    pub cache_read_input_tokens: Option<u64>,
    /// Tokens written to the prompt cache.
    #[oai(skip_serializing_if_is_none)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Of `cache_creation_input_tokens`, those written for one hour (priced higher).
    #[oai(skip_serializing_if_is_none)]
    pub cache_creation_1h_input_tokens: Option<u64>,
    /// Cost in USD (a decimal number); absent: computed from the tokens with the price table.
    #[oai(skip_serializing_if_is_none)]
    pub cost_usd: Option<MoneyInput>,
}

/// A cumulative snapshot of a session's usage. Counters never go down: an older snapshot that
/// arrives after a newer one changes nothing.
#[derive(Debug, Object, Deserialize)]
pub struct ModelMetricsInputTotals {
    /// Input tokens.
    #[oai(skip_serializing_if_is_none)]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[oai(skip_serializing_if_is_none)]
    pub output_tokens: Option<u64>,
    /// Tokens read from the prompt cache.
    #[oai(skip_serializing_if_is_none)]
    pub cache_read_input_tokens: Option<u64>,
    /// Tokens written to the prompt cache.
    #[oai(skip_serializing_if_is_none)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Cost in USD (a decimal number).
    #[oai(skip_serializing_if_is_none)]
    pub cost_usd: Option<MoneyInput>,
    /// The same per model.
    #[oai(skip_serializing_if_is_none)]
    pub models: Option<Vec<ModelMetricsInput>>,
}

/// The most tokens a counter may hold (far above any real session, far below overflow).
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000;

impl ModelMetricsInputTotals {
    /// Refuses counters no session can reach, naming the field.
    pub fn check(&self) -> Result<(), ApiError> {
        let too_big = |field: &str, v: Option<u64>| match v {
            Some(n) if n > MAX_TOKENS => Err(ApiError::invalid(
                &format!("model_metrics.{field}"),
                "out_of_range",
                format!("at most {MAX_TOKENS}"),
            )),
            _ => Ok(()),
        };
        too_big("input_tokens", self.input_tokens)?;
        too_big("output_tokens", self.output_tokens)?;
        too_big("cache_read_input_tokens", self.cache_read_input_tokens)?;
        too_big("cache_creation_input_tokens", self.cache_creation_input_tokens)?;
        for (i, m) in self.models.iter().flatten().enumerate() {
            for (field, v) in [
                ("input_tokens", m.input_tokens),
                ("output_tokens", m.output_tokens),
                ("cache_read_input_tokens", m.cache_read_input_tokens),
                ("cache_creation_input_tokens", m.cache_creation_input_tokens),
                ("cache_creation_1h_input_tokens", m.cache_creation_1h_input_tokens),
            ] {
                too_big(&format!("models[{i}].{field}"), v)?;
            }
        }
        Ok(())
    }
}

fn tokens(v: Option<u64>) -> i64 {
    v.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl From<&ModelMetricsInputTotals> for MetricsSnapshot {
    fn from(m: &ModelMetricsInputTotals) -> Self {
        MetricsSnapshot {
            input_tokens: tokens(m.input_tokens),
            output_tokens: tokens(m.output_tokens),
            cache_read_tokens: tokens(m.cache_read_input_tokens),
            cache_write_tokens: tokens(m.cache_creation_input_tokens),
            cost_usd: m.cost_usd.map(|c| c.0),
            models: m
                .models
                .iter()
                .flatten()
                .map(|u| ModelUsage {
                    model: u.model.clone(),
                    input_tokens: tokens(u.input_tokens),
                    output_tokens: tokens(u.output_tokens),
                    cache_read_tokens: tokens(u.cache_read_input_tokens),
                    cache_write_tokens: tokens(u.cache_creation_input_tokens),
                    cache_write_1h_tokens: tokens(u.cache_creation_1h_input_tokens),
                    cost_usd: u.cost_usd.map(|c| c.0),
                })
                .collect(),
        }
    }
}

/// What a PATCH may change.
#[derive(Debug, Object, Deserialize)]
pub struct UpdateSession {
    /// A cumulative usage snapshot.
    #[oai(skip_serializing_if_is_none)]
    pub model_metrics: Option<ModelMetricsInputTotals>,
    /// A new title.
    #[oai(skip_serializing_if_is_none)]
    pub title: Option<String>,
    /// A new summary.
    #[oai(skip_serializing_if_is_none)]
    pub summary: Option<String>,
}

/// Ending a session.
#[derive(Debug, Default, Object, Deserialize)]
pub struct EndSessionInput {
    /// What happened in the session.
    #[oai(skip_serializing_if_is_none)]
    pub summary: Option<String>,
    /// The final usage snapshot.
    #[oai(skip_serializing_if_is_none)]
    pub model_metrics: Option<ModelMetricsInputTotals>,
    /// Why it ended (default `client`).
    #[oai(skip_serializing_if_is_none)]
    pub end_reason: Option<String>,
    /// When it ended (RFC 3339; default: now).
    #[oai(skip_serializing_if_is_none)]
    pub ended_at: Option<String>,
}

/// The ended session and its analysis job.
#[derive(Debug, Object)]
pub struct EndedSession {
    /// The session, now ended.
    pub session: Session,
    /// The `analyze_session` job.
    pub job: Job,
}

#[derive(ApiResponse)]
pub enum EndResponse {
    /// Ended; the analysis is queued.
    #[oai(status = 202)]
    Accepted(Json<EndedSession>),
}

/// Asking for a compaction.
#[derive(Debug, Default, Object, Deserialize)]
pub struct CompactInput {
    /// Makes the request idempotent: the same request id returns the same compaction. Default:
    /// the request's `Idempotency-Key` header, else a new id.
    #[oai(skip_serializing_if_is_none)]
    pub request_id: Option<String>,
}

/// A compaction and the job producing it.
#[derive(Debug, Object)]
pub struct CompactionAccepted {
    /// The compaction record.
    pub compaction: Compaction,
    /// The `compact_session` job.
    pub job: Job,
}

#[derive(ApiResponse)]
pub enum CompactResponse {
    /// Queued.
    #[oai(status = 202)]
    Accepted(Json<CompactionAccepted>),
}

/// The compactions of a session, newest first.
#[derive(Debug, Object)]
pub struct CompactionList {
    /// The compactions.
    pub data: Vec<Compaction>,
}

pub(super) fn text_field(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.chars().count() > max => {
            Err(ApiError::invalid(field, "too_long", format!("at most {max} characters")))
        }
        other => Ok(other),
    }
}

async fn job_of(
    state: &AppState,
    org: crewkit_jobs::ids::OrgId,
    id: crewkit_jobs::ids::JobId,
) -> Result<Job, ApiError> {
    job_store::get_job(&state.db, org, id).await?.map(Job::from).ok_or_else(|| ApiError::not_found("job"))
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionUpdatesApi {
    /// End session
    ///
    /// Marks the session as ended (with its summary and final metrics) and queues its analysis;
    /// returns the session and the job. Ending an ended session is 409.
    #[oai(path = "/:org_id/sessions/:id/end", method = "post", operation_id = "end_session")]
    async fn end(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`).
        id: Path<String>,
        body: OptionalJsonBody<EndSessionInput>,
    ) -> Result<EndResponse, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: SessionId = parse_id("id", &id)?;
        let b = body.0;
        let end = EndSession {
            summary: text_field("summary", b.summary, 65_536)?,
            end_reason: text_field("end_reason", b.end_reason, 64)?.unwrap_or_else(|| "client".into()),
            metrics: match &b.model_metrics {
                Some(m) => {
                    m.check()?;
                    Some(MetricsSnapshot::from(m))
                }
                None => None,
            },
            ended_at: b.ended_at.as_deref().map(|t| parse_time("ended_at", t)).transpose()?,
            request_id: request_id(req),
        };
        let job_id = service::end_session(&state.db, &state.queues, p.org_id, id, &end).await.map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::new(poem::http::StatusCode::CONFLICT, "already_ended", "the session has ended already")
            }
            StoreError::Invalid(msg) => ApiError::invalid("ended_at", "invalid_field", msg),
            other => other.into(),
        })?;
        let session = sessions::get_session(&state.db, p.org_id, id).await?.into();
        Ok(EndResponse::Accepted(Json(EndedSession { session, job: job_of(&state, p.org_id, job_id).await? })))
    }

    /// Compact
    ///
    /// Triggers context compaction for the session: a digest of the conversation so far is made
    /// by a `compact_session` job. Idempotent on `request_id` (or the `Idempotency-Key` header).
    #[oai(path = "/:org_id/sessions/:id/compact", method = "post", operation_id = "compact_session")]
    async fn compact(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`).
        id: Path<String>,
        body: OptionalJsonBody<CompactInput>,
    ) -> Result<CompactResponse, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: SessionId = parse_id("id", &id)?;
        let request_id = text_field("request_id", body.0.request_id, 256)?
            .or_else(|| req.header("idempotency-key").map(str::to_owned))
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (row, job_id, _) =
            service::request_compaction(&state.db, &state.queues, p.org_id, id, &request_id, "manual").await?;
        Ok(CompactResponse::Accepted(Json(CompactionAccepted {
            compaction: row.into(),
            job: job_of(&state, p.org_id, job_id).await?,
        })))
    }

    /// List compactions
    ///
    /// The session's compactions, newest first.
    #[oai(path = "/:org_id/sessions/:id/compactions", method = "get", operation_id = "list_compactions")]
    async fn compactions(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`).
        id: Path<String>,
    ) -> Result<Json<CompactionList>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: SessionId = parse_id("id", &id)?;
        sessions::resolve_session(&state.db, p.org_id, &sessions::SessionRef::Id(id)).await?;
        let rows = compactions::list(&state.db, p.org_id, id).await?;
        Ok(Json(CompactionList { data: rows.into_iter().map(Compaction::from).collect() }))
    }
}
