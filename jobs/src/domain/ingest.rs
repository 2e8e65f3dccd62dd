//! Validation of an event batch, as DESIGN §6 asks: the whole batch is checked before anything is
//! enqueued, each bad event is rejected by its index with a stable code, and the good ones go on.
//!
//! The body has already been repaired (`json_repair`), so what fails here is really malformed.
//! Each event's `data` stays a `RawValue`: the API never builds a tree for it, it only forwards
//! the bytes to the queue; the worker is where the data is looked into.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The longest event type and client id we accept.
const MAX_NAME_LEN: usize = 128;
const MAX_CLIENT_ID_LEN: usize = 256;
/// The deepest nesting of arrays and objects accepted in `data`. serde_json reads at most 128
/// levels, so deeper data would be stored and then fail every read of its session's events.
pub const MAX_DATA_DEPTH: usize = 100;

/// One accepted event, as it travels in the `persist_events` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// The client's own id (the dedup key when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: Box<RawValue>,
}

/// One accepted event as the API puts it in the job: borrowed from the request body, so nothing
/// is copied per event. It serializes exactly as a `QueuedEvent` decodes.
#[derive(Debug, Clone, Serialize)]
pub struct AcceptedEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Cow<'a, str>>,
    pub event_type: Cow<'a, str>,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub timestamp: DateTime<Utc>,
    pub data: &'a RawValue,
}

/// `2026-05-01T12:00:00.123456789Z`, written by hand: chrono's `Serialize` goes through
/// `fmt` and was a tenth of the ingestion handler's time. Always nine fraction digits, so nothing
/// is lost; chrono parses it back to the same instant.
pub fn serialize_rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return s.collect_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    }
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    // A leap second shows as nanosecond >= 1e9: keep chrono's own spelling for it.
    if t.nanosecond() >= 1_000_000_000 {
        return s.collect_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    }
    put(20, 9, t.nanosecond());
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (29, b'Z')] {
        buf[at] = c;
    }
    s.serialize_str(std::str::from_utf8(&buf).expect("ASCII"))
}

/// `{}`, for events sent without `data`.
static EMPTY_OBJECT: LazyLock<Box<RawValue>> =
    LazyLock::new(|| RawValue::from_string("{}".to_string()).expect("valid JSON"));

/// A JSON string, borrowed from the body when it has no escapes.
fn json_str(v: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(s) = serde_json::from_str::<&str>(v.get()) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(v.get()).ok().map(Cow::Owned)
}

/// Why one event of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

/// Why a whole batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("the body must be an object with an `events` array of event objects")]
    NoEvents,
    #[error("{count} events in one request; the limit is {max}")]
    TooManyEvents { count: usize, max: usize },
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The outcome of validating a batch.
#[derive(Debug)]
pub struct ValidatedBatch<'a> {
    pub accepted: Vec<AcceptedEvent<'a>>,
    pub rejected: Vec<Rejection>,
}

fn decode_batch(body: &str) -> Result<Vec<&RawValue>, BatchError> {
    let batch: RawBatch<'_> = serde_json::from_str(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() { BatchError::Json(e.to_string()) } else { BatchError::NoEvents }
    })?;
    batch.events.ok_or(BatchError::NoEvents)
}

/// Decodes a batch into the lazy shape `validate_batch` starts from (the events, then each
/// event's fields as raw values) and validates nothing: the benchmark's no-op baseline.
pub fn decode_only(body: &str) -> Result<usize, BatchError> {
    let events = decode_batch(body)?;
    for raw in &events {
        let _: Option<RawEvent<'_>> = serde_json::from_str(raw.get()).ok();
    }
    Ok(events.len())
}

/// Validates a (repaired) batch body. Events without a timestamp take `received_at`.
pub fn validate_batch(
    body: &str,
    max_events: usize,
    received_at: DateTime<Utc>,
) -> Result<ValidatedBatch<'_>, BatchError> {
    let events = decode_batch(body)?;
    if events.len() > max_events {
        return Err(BatchError::TooManyEvents { count: events.len(), max: max_events });
    }
    let mut accepted = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (index, raw) in events.into_iter().enumerate() {
        match validate_event(raw, received_at) {
            Ok(event) => accepted.push(event),
            Err((code, message)) => rejected.push(Rejection { index, code, message }),
        }
    }
    Ok(ValidatedBatch { accepted, rejected })
}

type Refusal = (&'static str, String);

fn validate_event(raw: &RawValue, received_at: DateTime<Utc>) -> Result<AcceptedEvent<'_>, Refusal> {
    let ev: RawEvent<'_> = serde_json::from_str(raw.get())
        .map_err(|_| ("invalid_event", "each event must be a JSON object".to_string()))?;

    let event_type =
        ev.event_type.and_then(json_str).ok_or(("invalid_event_type", "`event_type` must be a string".to_string()))?;
    if event_type.trim().is_empty() || event_type.len() > MAX_NAME_LEN {
        return Err(("invalid_event_type", format!("`event_type` must be 1 to {MAX_NAME_LEN} characters")));
    }

    let timestamp = match ev.timestamp.filter(|v| v.get() != "null") {
        None => received_at,
        Some(v) => {
            let text =
                json_str(v).ok_or(("invalid_timestamp", "`timestamp` must be an RFC 3339 string".to_string()))?;
            let t = parse_timestamp(&text)
                .ok_or_else(|| ("invalid_timestamp", format!("`timestamp` {text:?} is not an RFC 3339 date-time")))?;
            // Nothing an agent sent happened before 2000: such a date is a broken clock or a
            // placeholder, and would place the event decades before its session.
            if t.year() < 2000 {
                return Err(("invalid_timestamp", format!("`timestamp` {text:?} is before the year 2000")));
            }
            t
        }
    };

    let client_id = match ev.id.filter(|v| v.get() != "null") {
        None => None,
        Some(v) => {
            let id = json_str(v)
                .filter(|s| !s.is_empty() && s.len() <= MAX_CLIENT_ID_LEN)
                .ok_or(("invalid_id", format!("`id` must be a string of 1 to {MAX_CLIENT_ID_LEN} characters")))?;
            Some(id)
        }
    };

    let data = match ev.data.filter(|v| v.get() != "null") {
        None => &**EMPTY_OBJECT,
        Some(v) if v.get().starts_with('{') && too_deep(v.get()) => {
            return Err(("invalid_data", format!("`data` nests deeper than {MAX_DATA_DEPTH} levels")));
        }
        Some(v) if v.get().starts_with('{') => v,
        Some(_) => return Err(("invalid_data", "`data` must be a JSON object".to_string())),
    };

    Ok(AcceptedEvent { client_id, event_type, timestamp, data })
}

/// The deepest nesting of arrays and objects in a JSON text (brackets inside strings don't count).
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Whether `data` nests deeper than `MAX_DATA_DEPTH`. A count of opening brackets, which the
/// compiler vectorizes, rules out nearly every event before the exact scan.
fn too_deep(data: &str) -> bool {
    let opening = data.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    opening > MAX_DATA_DEPTH && nesting_depth(data) > MAX_DATA_DEPTH
}

/// RFC 3339; a date-time without an offset is taken as UTC (hook logs often drop the `Z`).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-05-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_naive_timestamp_means_utc_and_an_offset_is_honoured() {
        assert_eq!(parse_timestamp("2026-03-10T02:30:00").unwrap().to_rfc3339(), "2026-03-10T02:30:00+00:00");
        assert_eq!(parse_timestamp("2026-03-10T02:30:00+05:30").unwrap().to_rfc3339(), "2026-03-09T21:00:00+00:00");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn bad_events_are_rejected_by_index_and_the_rest_accepted() {
        let body = r#"{"events":[
            {"event_type":"Stop","timestamp":"2026-01-01T00:00:00Z","data":{}},
            {"event_type":"","data":{}},
            {"event_type":"Stop","timestamp":"soon"},
            {"event_type":"Stop","data":"text"},
            "not an object",
            {"event_type":"Stop","id":7},
            {"event_type":"Notification"}
        ]}"#;
        let v = validate_batch(body, 1000, now()).unwrap();
        assert_eq!(v.accepted.len(), 2);
        let codes: Vec<_> = v.rejected.iter().map(|r| (r.index, r.code)).collect();
        assert_eq!(
            codes,
            [
                (1, "invalid_event_type"),
                (2, "invalid_timestamp"),
                (3, "invalid_data"),
                (4, "invalid_event"),
                (5, "invalid_id")
            ]
        );
        assert_eq!(v.accepted[1].timestamp, now(), "a missing timestamp takes received_at");
        assert_eq!(v.accepted[1].data.get(), "{}");
    }

    #[test]
    fn data_nested_deeper_than_the_limit_is_refused_by_index() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let ok = format!(r#"{{"a":{}}}"#, nest(MAX_DATA_DEPTH - 1));
        let deep = format!(r#"{{"a":{}}}"#, nest(MAX_DATA_DEPTH));
        let strings = format!(r#"{{"a":"{}"}}"#, "[".repeat(500));
        let body = format!(
            r#"{{"events":[{{"event_type":"A","data":{ok}}},{{"event_type":"B","data":{deep}}},{{"event_type":"C","data":{strings}}}]}}"#
        );
        let v = validate_batch(&body, 1000, now()).unwrap();
        assert_eq!(v.accepted.len(), 2, "depth {MAX_DATA_DEPTH} and brackets inside a string pass");
        assert_eq!((v.rejected[0].index, v.rejected[0].code), (1, "invalid_data"));
        assert_eq!(nesting_depth(&deep), MAX_DATA_DEPTH + 1);
        assert_eq!(nesting_depth(r#"{"a":"\"[["}"#), 1);
    }

    #[test]
    fn a_batch_over_the_limit_is_refused_whole() {
        let body = r#"{"events":[{"event_type":"A"},{"event_type":"B"}]}"#;
        assert!(matches!(validate_batch(body, 1, now()), Err(BatchError::TooManyEvents { count: 2, max: 1 })));
        assert!(matches!(validate_batch(r#"{"x":1}"#, 1, now()), Err(BatchError::NoEvents)));
        assert!(matches!(validate_batch(r#"{"events":"#, 1, now()), Err(BatchError::Json(_))));
    }
}
