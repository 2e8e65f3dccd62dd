//! Event ingestion: `POST /{org_id}/observability/sessions/{session_id}/events`, the hot path.
//!
//! Auth (cached), session lookup (cached), repair + validation, one Redis push. No PostgreSQL
//! write happens here: the `persist_events` job does that. The API answers 202 only once Redis
//! has the job; if Redis cannot take it, 503 with Retry-After and nothing is accepted.

use chrono::Utc;
use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use super::{ApiTags, parse_id};
use crate::auth::ApiKey;
use crate::body::RawJsonBody;
use crate::error::{ApiError, FieldProblem};
use crate::models::Event;
use crate::state::AppState;
use crewkit_jobs::domain::ingest::validate_batch;
use crewkit_jobs::ids::{OrgId, SessionId};
use crewkit_jobs::persist_events::PersistEventsRef;
use crewkit_jobs::store::StoreError;
use crewkit_jobs::store::events as event_store;
use crewkit_jobs::store::sessions::{self, SessionRef};

pub struct EventsApi;

/// One hook event.
#[derive(Debug, Object)]
pub struct EventInput {
    /// The hook event name, such as `PreToolUse` (unknown names are stored too).
    pub event_type: String,
    /// When it happened: RFC 3339; without an offset it is UTC; absent means "when received".
    #[oai(skip_serializing_if_is_none)]
    pub timestamp: Option<String>,
    /// The hook payload, stored verbatim (a JSON object).
    #[oai(skip_serializing_if_is_none)]
    pub data: Option<Value>,
    /// The client's id for the event: the dedup key. Without it, the key is a hash of the
    /// session, type, timestamp and data, so an identical resend is still stored once.
    #[oai(skip_serializing_if_is_none)]
    pub id: Option<String>,
}

/// A batch of up to 1,000 events (5 MiB).
#[derive(Debug, Object)]
pub struct EventBatch {
    /// The events, in order.
    pub events: Vec<EventInput>,
}

/// Why one event of a batch was refused.
#[derive(Debug, Object)]
pub struct RejectedEvent {
    /// Its position in `events`.
    pub index: u32,
    /// A stable code, such as `invalid_timestamp`.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

/// The batch was accepted: the valid events are queued for storage.
#[derive(Debug, Object)]
pub struct IngestAccepted {
    /// Events queued.
    pub accepted: u32,
    /// Events refused, by index; the others were accepted.
    pub rejected: Vec<RejectedEvent>,
    /// The `persist_events` job (`job_…`); see `/jobs/{id}`.
    pub job_id: String,
}

#[derive(ApiResponse)]
pub enum IngestResponse {
    /// Accepted and durably queued.
    #[oai(status = 202)]
    Accepted(Json<IngestAccepted>),
}

/// A page of a session's events in timeline order.
#[derive(Debug, Object)]
pub struct EventPage {
    /// The events.
    pub data: Vec<Event>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<i64>,
}

/// Resolves the path's session (our id or the agent's), through the per-process cache.
async fn resolve(state: &AppState, org: OrgId, raw: &str) -> Result<SessionId, ApiError> {
    let key = (org, raw.to_string());
    if let Some(id) = state.sessions.get(&key).await {
        return Ok(id);
    }
    let r = if raw.starts_with("ses_") {
        SessionRef::Id(parse_id("session_id", raw)?)
    } else {
        SessionRef::Agent(raw.to_string())
    };
    let id = sessions::resolve_session(&state.db, org, &r).await?;
    state.sessions.insert(key, id).await;
    Ok(id)
}

#[OpenApi(tag = "ApiTags::Observability")]
impl EventsApi {
    /// Ingest events
    ///
    /// Batched ingestion of hook events from the CLI. `session_id` is the session's id (`ses_…`)
    /// or the agent's own session id. The whole batch is validated first; invalid events are
    /// listed in `rejected` by index and the rest are queued (202). None valid: 422. Over 1,000
    /// events or 5 MiB: 413 and nothing is queued. Events are deduplicated by `id` (or content),
    /// so resending a batch is safe. Lone UTF-16 surrogates and NUL characters are replaced by
    /// U+FFFD rather than refused.
    #[oai(path = "/:org_id/observability/sessions/:session_id/events", method = "post", operation_id = "ingest_events")]
    async fn ingest(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`) or the agent's session id.
        session_id: Path<String>,
        body: RawJsonBody<EventBatch>,
    ) -> Result<IngestResponse, ApiError> {
        let p = auth.for_org(&org_id)?;
        let session = resolve(&state, p.org_id, &session_id).await?;
        let received_at = Utc::now();
        let batch = validate_batch(&body.0, state.config.max_events_per_request, received_at)?;
        let rejected: Vec<RejectedEvent> = batch
            .rejected
            .into_iter()
            .map(|r| RejectedEvent { index: r.index as u32, code: r.code.to_string(), message: r.message })
            .collect();
        if batch.accepted.is_empty() {
            crewkit_jobs::metrics::inc(
                "crewkit_events_rejected_total",
                "hook events rejected",
                &[],
                rejected.len() as u64,
            );
            let errors = rejected
                .iter()
                .map(|r| FieldProblem {
                    field: format!(
                        "events[{}]{}",
                        r.index,
                        match r.code.as_str() {
                            "invalid_timestamp" => ".timestamp",
                            "invalid_event_type" => ".event_type",
                            "invalid_id" => ".id",
                            "invalid_data" => ".data",
                            _ => "",
                        }
                    ),
                    code: r.code.clone(),
                    message: r.message.clone(),
                })
                .collect::<Vec<_>>();
            let errors = if errors.is_empty() {
                vec![FieldProblem {
                    field: "events".into(),
                    code: "empty_batch".into(),
                    message: "`events` is empty: send at least one event".into(),
                }]
            } else {
                errors
            };
            return Err(ApiError::new(
                poem::http::StatusCode::UNPROCESSABLE_ENTITY,
                "no_valid_events",
                "no event in the batch could be accepted",
            )
            .with_errors(errors));
        }
        let accepted = batch.accepted.len() as u32;
        let request_id = super::request_id(req);
        let job = PersistEventsRef {
            org_id: p.org_id,
            session_id: session,
            received_at,
            request_id: request_id.as_deref(),
            events: &batch.accepted,
        };
        crate::backpressure::check(&state)?;
        let job_id = state.queues.push_ingest(&job).await?;
        crewkit_jobs::metrics::inc("crewkit_events_accepted_total", "hook events accepted", &[], u64::from(accepted));
        crewkit_jobs::metrics::inc("crewkit_events_rejected_total", "hook events rejected", &[], rejected.len() as u64);
        tracing::debug!(%job_id, accepted, rejected = rejected.len(), "batch queued");
        Ok(IngestResponse::Accepted(Json(IngestAccepted { accepted, rejected, job_id: job_id.to_string() })))
    }

    /// List events
    ///
    /// A session's stored events in timeline order (timestamp, then arrival; events with a
    /// far-future timestamp are placed by their arrival). Page with `after`.
    #[oai(path = "/:org_id/observability/sessions/:session_id/events", method = "get", operation_id = "list_events")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`) or the agent's session id.
        session_id: Path<String>,
        /// The `seq` of the last event already read.
        after: Query<Option<i64>>,
        /// Events per page, 1 to 1000.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<u32>,
    ) -> Result<Json<EventPage>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let session = resolve(&state, p.org_id, &session_id).await?;
        // One more than asked tells whether another page exists.
        let mut rows = event_store::list_events(&state.db, p.org_id, session, after.0, limit.0 + 1).await.map_err(
            |e| match e {
                StoreError::NotFound(_) => {
                    ApiError::invalid("after", "invalid_parameter", "no event of this session has this seq")
                }
                other => other.into(),
            },
        )?;
        let more = rows.len() > limit.0 as usize;
        rows.truncate(limit.0 as usize);
        let next_after = more.then(|| rows.last().map(|r| r.seq)).flatten();
        Ok(Json(EventPage { data: rows.into_iter().map(Event::from).collect(), next_after }))
    }
}

fn default_limit() -> u32 {
    100
}
