//! One error type for the HTTP edge, rendered as RFC 9457 `application/problem+json` with a stable
//! `code`. Handlers return `ApiError`; everything poem or poem-openapi rejects before a handler
//! runs (bad path or query parameters, missing auth, unknown routes) is turned into the same shape
//! by `catch_all`. The client sees a safe message; the log gets the cause.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

use crewkit_jobs::domain::ingest::BatchError;
use crewkit_jobs::ids::IdError;
use crewkit_jobs::queue::QueueError;
use crewkit_jobs::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field-level problem in a request.
#[derive(Debug, Clone, Object)]
pub struct FieldProblem {
    /// Where the problem is: a parameter name or a JSON path such as `events[3].timestamp`.
    pub field: String,
    /// A stable, machine-readable code.
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

/// An error, as RFC 9457 problem details.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[oai(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable, machine-readable error code.
    pub code: String,
    /// Field-level problems, for validation errors.
    #[oai(skip_serializing_if_is_empty, default)]
    pub errors: Vec<FieldProblem>,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    /// Boxed: handlers return `Result<_, ApiError>` on every path, so keep the error small.
    pub problem: Box<Problem>,
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.problem.status, self.problem.code, self.problem.detail)
    }
}

impl std::error::Error for ApiError {}

fn title_for(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            problem: Box::new(Problem {
                kind: format!("https://crewkit.dev/problems/{code}"),
                title: title_for(status).to_string(),
                status: status.as_u16(),
                detail: detail.into(),
                code: code.to_string(),
                errors: Vec::new(),
            }),
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldProblem>) -> Self {
        self.problem.errors = errors;
        self
    }

    /// 400 naming the parameter or body field at fault.
    pub fn invalid(field: &str, code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(StatusCode::BAD_REQUEST, code, format!("{field}: {message}")).with_errors(vec![FieldProblem {
            field: field.to_string(),
            code: code.to_string(),
            message,
        }])
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn unavailable(detail: &str, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        e.retry_after = Some(retry_after);
        e
    }

    /// An unexpected failure: logged with its cause, shown without it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred; it has been logged")
    }

    pub fn id(field: &str, e: IdError) -> Self {
        Self::invalid(field, "invalid_id", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(msg) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            StoreError::Invalid(msg) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry later", 5)
            }
            e => ApiError::internal(&e),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "queue unavailable");
        ApiError::unavailable("the job queue is unavailable; nothing was accepted, retry later", 5)
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match &e {
            BatchError::Json(_) => ApiError::invalid("body", "invalid_json", e.to_string()),
            BatchError::NoEvents => ApiError::invalid("events", "missing_field", e.to_string()),
            BatchError::TooManyEvents { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_events", e.to_string())
            }
        }
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn as_response(&self) -> Response {
        let body = self.problem.to_json_string();
        let mut resp = Response::builder().status(self.status()).content_type(PROBLEM_JSON).body(body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert("retry-after", secs.into());
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self)
    }
}

/// Every operation may answer with these; they are declared so generated clients know the shape.
const DECLARED: &[(u16, &str)] = &[
    (400, "The request is malformed; `errors` names each field at fault."),
    (401, "Missing or unknown API key."),
    (403, "The key's role may not do this."),
    (404, "No such resource in this organisation."),
    (409, "The request conflicts with the resource's state."),
    (413, "The body or the batch is over its limit."),
    (422, "Nothing in the request could be accepted."),
    (429, "Too many requests for this key; see Retry-After."),
    (503, "A backing service is unavailable; nothing was accepted. See Retry-After."),
];

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: DECLARED
                .iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(*status),
                    status_range: None,
                    content: vec![MetaMediaType { content_type: PROBLEM_JSON, schema: Problem::schema_ref() }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

/// poem-openapi's parameter errors, in words a client can act on.
fn humanize(reason: &str) -> String {
    if reason.contains("expects an input value") {
        "is required".to_string()
    } else if let Some(rule) = reason.strip_prefix("verification failed. ") {
        format!("is out of range ({rule})")
    } else if reason.starts_with("failed to parse") {
        let got = reason.split("expected").nth(1).map(|s| s.trim()).unwrap_or_default();
        if got.is_empty() {
            "has an invalid value".to_string()
        } else {
            format!("has an invalid value (expected {got})")
        }
    } else {
        reason.to_string()
    }
}

/// Renders anything that failed outside a handler as a problem, keeping our own errors as they are.
pub async fn catch_all(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.clone().into_response();
    }
    if let Some(p) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        return ApiError::invalid(p.name, "invalid_parameter", humanize(&p.reason)).into_response();
    }
    if let Some(p) = err.downcast_ref::<poem_openapi::error::ParseRequestPayloadError>() {
        return ApiError::invalid("body", "invalid_body", p.reason.clone()).into_response();
    }
    let status = err.status();
    let (code, detail) = match status {
        StatusCode::UNAUTHORIZED => {
            ("unauthorized", "missing or malformed `Authorization: Bearer <api key>` header".to_string())
        }
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed on this route".to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", err.to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", err.to_string()),
        s if s.is_client_error() => ("bad_request", err.to_string()),
        _ => return ApiError::internal(&err).into_response(),
    };
    ApiError::new(status, code, detail).into_response()
}
