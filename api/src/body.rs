//! `JsonBody<T>`: a JSON request body that tolerates what real agents send.
//!
//! poem-openapi's own `Json<T>` parses strictly (a lone surrogate escape fails the whole request)
//! and insists on a JSON content type. This payload instead reads the body under the configured
//! size limit (413 above it), repairs it (`json_repair`), and decodes it with serde, reporting the
//! path of the first bad field. `S` is the documented schema, which may differ from the Rust
//! type the body decodes into (the event batch decodes lazily, see `routes::events`).

use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;
use crewkit_jobs::domain::json_repair::repair_json;

/// A body decoded into `T`, documented as `S`.
pub struct JsonBody<T, S = T>(pub T, PhantomData<S>);

/// A body that may be absent (then `T::default()`), decoded into `T`.
pub struct OptionalJsonBody<T>(pub T);

/// A body's text after repair, documented as `S`, for handlers that decode it themselves.
pub struct RawJsonBody<S>(pub String, PhantomData<S>);

/// Reads the body within the limit and repairs it; an empty body is a 400.
pub async fn read_repaired(req: &Request, body: &mut RequestBody) -> Result<String, ApiError> {
    read_repaired_or_empty(req, body)
        .await?
        .ok_or_else(|| ApiError::invalid("body", "missing_body", "a JSON body is required"))
}

/// Reads the body within the limit and repairs it; `None` when there is none.
pub async fn read_repaired_or_empty(req: &Request, body: &mut RequestBody) -> Result<Option<String>, ApiError> {
    let limit = req.data::<AppState>().map_or(5 * 1024 * 1024, |s| s.config.max_body_bytes);
    let too_large = || {
        ApiError::new(
            poem::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over the {limit}-byte limit"),
        )
    };
    if let Some(len) = req.header("content-length").and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    let Ok(taken) = body.take() else {
        return Ok(None);
    };
    let bytes = taken.into_bytes_limit(limit).await.map_err(|e| match e {
        poem::error::ReadBodyError::PayloadTooLarge => too_large(),
        other => ApiError::invalid("body", "unreadable_body", other.to_string()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(Some(repair_json(&bytes).into_owned()))
}

fn check_content_type(req: &Request) -> Result<(), ApiError> {
    match req.content_type() {
        // curl and many hook scripts send no content type, or a form one by default: a JSON body
        // is what every operation takes, so anything but an explicit non-JSON type is read as JSON.
        None => Ok(()),
        Some(ct)
            if ct.starts_with("application/x-www-form-urlencoded")
                || ct.contains("json")
                || ct.starts_with("text/plain") =>
        {
            Ok(())
        }
        Some(ct) => Err(ApiError::new(
            poem::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type `{ct}` is not supported; send application/json"),
        )),
    }
}

/// The OpenAPI description of a JSON body documented as `S`.
fn json_request<S: Type>(required: bool) -> Option<MetaRequest> {
    Some(MetaRequest {
        description: None,
        content: vec![MetaMediaType { content_type: "application/json", schema: S::schema_ref() }],
        required,
    })
}

/// Decodes repaired JSON text into `T`, naming the path of the first bad field.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = inner.is_syntax() || inner.is_eof();
        let field = if syntax || path == "." || path.is_empty() { "body".to_string() } else { path };
        let code = if inner.is_syntax() || inner.is_eof() { "invalid_json" } else { "invalid_field" };
        ApiError::invalid(&field, code, inner.to_string())
    })
}

impl<'a, T: DeserializeOwned + Send, S: Type> ApiExtractor<'a> for JsonBody<T, S> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        S::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        json_request::<S>(true)
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        check_content_type(req)?;
        let text = read_repaired(req, body).await?;
        Ok(JsonBody(decode(&text)?, PhantomData))
    }
}

impl<'a, S: Type> ApiExtractor<'a> for RawJsonBody<S> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        S::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        json_request::<S>(true)
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        check_content_type(req)?;
        Ok(RawJsonBody(read_repaired(req, body).await?, PhantomData))
    }
}

impl<'a, T: DeserializeOwned + Default + Type + Send> ApiExtractor<'a> for OptionalJsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        json_request::<T>(false)
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        check_content_type(req)?;
        match read_repaired_or_empty(req, body).await? {
            None => Ok(OptionalJsonBody(T::default())),
            Some(text) => Ok(OptionalJsonBody(decode(&text)?)),
        }
    }
}
