//! `persist_events`: writes one accepted ingestion batch to PostgreSQL.
//!
//! One transaction per job: the batch insert (one statement, see `store::events`), the session's
//! counters raised by the rows really inserted, and the tasks derived from them. A replayed job
//! (a worker died after commit, before the ack) therefore changes nothing the second time.
//!
//! A bad event never poisons the job: the data is repaired again here (the queue may hold jobs
//! from older producers), and if PostgreSQL still refuses the batch for its data, the events are
//! inserted one by one and the refused ones are reported in the job's result instead of failing it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::domain::ingest::{AcceptedEvent, QueuedEvent};
use crate::domain::json_repair::repair_json;
use crate::ids::{EventId, OrgId, SessionId};
use crate::lifecycle::JobError;
use crate::store::events::{self, EventInsert, Inserted};
use crate::store::tasks::{self, TaskObservation};
use crate::store::{StoreError, StoreResult};

/// How far ahead of its arrival an event's timestamp may be before it is flagged and ordered by
/// arrival instead (agents' clocks drift; a year-2099 timestamp must not sort after everything).
pub const FUTURE_TOLERANCE_SECS: i64 = 15 * 60;

/// The job payload. New fields must be `#[serde(default)]` so jobs already queued still decode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistEvents {
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub request_id: Option<String>,
    pub events: Vec<QueuedEvent>,
}

/// The job as the API writes it: the events borrowed from the request body. It serializes to
/// exactly what `PersistEvents` decodes (asserted in the tests below).
#[derive(Debug, Serialize)]
pub struct PersistEventsRef<'a> {
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<&'a str>,
    pub events: &'a [AcceptedEvent<'a>],
}

/// What the job did, kept as the job record's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistOutcome {
    pub inserted: usize,
    pub duplicates: usize,
    /// Indexes (in the job) of events PostgreSQL refused even after repair.
    pub skipped: Vec<usize>,
    /// Ids of inserted PreCompact events: each asks for a compaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_compacts: Vec<String>,
    /// The session had ended already: these are late events, and its analysis is stale.
    #[serde(default)]
    pub late: bool,
}

/// What the worker reads from one event's data, beside the stored row.
struct Facts {
    agent_type: Option<String>,
    team_task: Option<(String, Option<String>)>,
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// JSON with object keys sorted, so the content hash does not depend on key order.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The dedup key: the client's id when given, else a hash of what the event says.
pub fn dedup_key(session: SessionId, ev: &QueuedEvent, data: &Value) -> String {
    if let Some(id) = &ev.client_id {
        return format!("id:{id}");
    }
    let mut text = String::with_capacity(ev.data.get().len() + 64);
    text.push_str(&session.to_string());
    text.push('\n');
    text.push_str(&ev.event_type);
    text.push('\n');
    text.push_str(&ev.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    text.push('\n');
    canonical(data, &mut text);
    format!("h:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn prepare(job: &PersistEvents) -> (Vec<EventInsert>, Vec<Facts>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::with_capacity(job.events.len());
    let mut facts = Vec::with_capacity(job.events.len());
    let mut duplicates = 0;
    for ev in &job.events {
        let text = repair_json(ev.data.get().as_bytes()).into_owned();
        let data: Value = serde_json::from_str(&text).unwrap_or_else(|_| Value::Object(Default::default()));
        let key = dedup_key(job.session_id, ev, &data);
        if !seen.insert(key.clone()) {
            duplicates += 1; // first one wins, within the batch as across batches
            continue;
        }
        let in_future = (ev.timestamp - job.received_at).num_seconds() > FUTURE_TOLERANCE_SECS;
        let team_task = matches!(ev.event_type.as_str(), "TaskCreated" | "TaskCompleted")
            .then(|| str_field(&data, "task_id").map(|id| (id, str_field(&data, "task_subject"))))
            .flatten();
        facts.push(Facts { agent_type: data.get("agent_type").and_then(Value::as_str).map(str::to_owned), team_task });
        rows.push(EventInsert {
            id: EventId::generate(),
            event_type: ev.event_type.clone(),
            client_event_id: ev.client_id.clone(),
            dedup_key: key,
            timestamp: ev.timestamp,
            order_at: if in_future { job.received_at } else { ev.timestamp },
            timestamp_in_future: in_future,
            tool_name: str_field(&data, "tool_name"),
            tool_use_id: str_field(&data, "tool_use_id"),
            agent_id: str_field(&data, "agent_id"),
            data: text,
        });
    }
    (rows, facts, duplicates)
}

fn is_data_error(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(db) if db.as_database_error()
        .and_then(|d| d.code()).is_some_and(|c| c.starts_with("22")))
}

fn is_foreign_key_error(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(db) if db.as_database_error().is_some_and(|d| d.is_foreign_key_violation()))
}

/// Runs the job. Callable without Redis: the worker wraps it with the queue's lifecycle.
#[tracing::instrument(skip_all, fields(org = %job.org_id, session = %job.session_id, events = job.events.len()))]
pub async fn run(db: &PgPool, job: &PersistEvents) -> Result<PersistOutcome, JobError> {
    // The session is checked by the writes themselves (no read first): the events' foreign key
    // refuses a session that does not exist, and the counters' update, which returns the
    // session's status, matches only the org's own.
    let missing = || JobError::Permanent(format!("session {} does not exist in org {}", job.session_id, job.org_id));
    // Repair, parse and hash every event: CPU work, kept off the async threads.
    let owned = job.clone();
    let (rows, facts, duplicates) = tokio::task::spawn_blocking(move || prepare(&owned))
        .await
        .map_err(|e| JobError::Permanent(format!("preparing the batch failed: {e}")))?;
    let mut tx = db.begin().await.map_err(StoreError::from)?;
    let (inserted, skipped) =
        match events::insert_events(&mut *tx, job.org_id, job.session_id, job.received_at, &rows).await {
            Ok(inserted) => (inserted, Vec::new()),
            Err(e) if is_data_error(&e) => {
                tracing::warn!(error = %e, "batch refused for its data; inserting events one by one");
                tx.rollback().await.map_err(StoreError::from)?;
                tx = db.begin().await.map_err(StoreError::from)?;
                insert_one_by_one(&mut tx, job, &rows).await?
            }
            Err(e) if is_foreign_key_error(&e) => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
    let status = events::bump_session_counters(&mut *tx, job.org_id, job.session_id, &inserted).await?;
    if status.is_none() && !inserted.is_empty() {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(missing());
    }
    derive_tasks(&mut tx, job, &rows, &facts, &inserted).await?;
    tx.commit().await.map_err(StoreError::from)?;
    let outcome = PersistOutcome {
        inserted: inserted.len(),
        duplicates: duplicates + rows.len() - inserted.len() - skipped.len(),
        skipped,
        pre_compacts: inserted.iter().filter(|r| r.event_type == "PreCompact").map(|r| r.id.to_string()).collect(),
        late: status.as_deref() == Some("ended"),
    };
    tracing::info!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        skipped = outcome.skipped.len(),
        "events persisted"
    );
    Ok(outcome)
}

async fn insert_one_by_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: &PersistEvents,
    rows: &[EventInsert],
) -> StoreResult<(Vec<Inserted>, Vec<usize>)> {
    let mut inserted = Vec::new();
    let mut skipped = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let mut sp = sqlx::Connection::begin(&mut **tx).await?;
        match events::insert_events(&mut *sp, job.org_id, job.session_id, job.received_at, std::slice::from_ref(row))
            .await
        {
            Ok(mut one) => {
                sp.commit().await?;
                inserted.append(&mut one);
            }
            Err(e) if is_data_error(&e) => {
                sp.rollback().await?;
                tracing::warn!(index = i, event_type = %row.event_type, error = %e, "event refused by the database; skipped");
                skipped.push(i);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((inserted, skipped))
}

async fn derive_tasks(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: &PersistEvents,
    rows: &[EventInsert],
    facts: &[Facts],
    inserted: &[Inserted],
) -> StoreResult<()> {
    let by_id: std::collections::HashMap<EventId, usize> = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut obs = Vec::new();
    let mut subagent_events = Vec::new();
    let mut touches_agents = false;
    for ins in inserted {
        let Some(&i) = by_id.get(&ins.id) else {
            continue;
        };
        let (row, fact) = (&rows[i], &facts[i]);
        let et = row.event_type.as_str();
        touches_agents |= matches!(row.tool_name.as_deref(), Some("Agent" | "Task"));
        if let Some(agent_id) = &row.agent_id {
            touches_agents = true;
            subagent_events.push(row.id);
            obs.push(TaskObservation {
                kind: tasks::SUBAGENT,
                external_id: agent_id.clone(),
                agent_type: fact.agent_type.clone(),
                description: None,
                at: row.order_at,
                starts: et == "SubagentStart",
                ends: et == "SubagentStop",
                tool_call: events::is_tool_call(et),
            });
        }
        if let Some((task_id, subject)) = &fact.team_task {
            obs.push(TaskObservation {
                kind: tasks::TEAM_TASK,
                external_id: task_id.clone(),
                agent_type: None,
                description: subject.clone(),
                at: row.order_at,
                starts: et == "TaskCreated",
                ends: et == "TaskCompleted",
                tool_call: false,
            });
        }
    }
    tasks::apply_observations(tx, job.org_id, job.session_id, &obs, &subagent_events).await?;
    if touches_agents {
        tasks::link_launching_tool_calls(tx, job.session_id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn event(data: &str, id: Option<&str>) -> QueuedEvent {
        QueuedEvent {
            client_id: id.map(str::to_owned),
            event_type: "PreToolUse".into(),
            timestamp: "2026-04-01T12:00:00Z".parse().unwrap(),
            data: RawValue::from_string(data.to_string()).unwrap(),
        }
    }

    #[test]
    fn the_content_hash_ignores_key_order_but_not_values() {
        let s = SessionId::generate();
        let a = event(r#"{"a":1,"b":{"x":[1,2],"y":"z"}}"#, None);
        let b = event(r#"{"b":{"y":"z","x":[1,2]},"a":1}"#, None);
        let c = event(r#"{"a":2,"b":{"x":[1,2],"y":"z"}}"#, None);
        let key = |e: &QueuedEvent| dedup_key(s, e, &serde_json::from_str(e.data.get()).unwrap());
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert_eq!(key(&event("{}", Some("evt-1"))), "id:evt-1");
    }

    #[test]
    fn a_repeated_event_inside_one_batch_is_kept_once_first_wins() {
        let job = PersistEvents {
            org_id: OrgId::generate(),
            session_id: SessionId::generate(),
            received_at: "2026-04-01T12:00:00Z".parse().unwrap(),
            request_id: None,
            events: vec![event(r#"{"v":1}"#, Some("e7")), event(r#"{"v":2}"#, Some("e7")), event("{}", Some("e8"))],
        };
        let (rows, _, dups) = prepare(&job);
        assert_eq!(dups, 1);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].data, r#"{"v":1}"#);
    }

    #[test]
    fn a_far_future_timestamp_is_flagged_and_ordered_by_arrival() {
        let mut far = event("{}", None);
        far.timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
        let job = PersistEvents {
            org_id: OrgId::generate(),
            session_id: SessionId::generate(),
            received_at: "2026-04-01T12:00:00Z".parse().unwrap(),
            request_id: None,
            events: vec![far],
        };
        let (rows, _, _) = prepare(&job);
        assert!(rows[0].timestamp_in_future);
        assert_eq!(rows[0].order_at, job.received_at);
        assert_eq!(rows[0].timestamp, "2099-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn the_borrowed_job_the_api_writes_decodes_as_the_job_the_worker_reads() {
        let body = r#"{"events":[
            {"event_type":"PreToolUse","id":"e1","timestamp":"2026-04-01T12:00:00.123456789+02:00","data":{"a":"\u00e9 \"q\""}},
            {"event_type":"Stop","timestamp":"1999-12-31T23:59:60Z"},
            {"event_type":"Stop\u00e9","timestamp":"2026-04-01T12:00:00","data":null}
        ]}"#;
        let received_at: DateTime<Utc> = "2026-04-01T12:00:05.5Z".parse().unwrap();
        let batch = crate::domain::ingest::validate_batch(body, 10, received_at).unwrap();
        assert_eq!(batch.rejected.len(), 1, "the year-1999 event is refused");
        let job = PersistEventsRef {
            org_id: OrgId::generate(),
            session_id: SessionId::generate(),
            received_at,
            request_id: Some("req-1"),
            events: &batch.accepted,
        };
        let decoded: PersistEvents = serde_json::from_slice(&serde_json::to_vec(&job).unwrap()).unwrap();
        assert_eq!(
            (decoded.org_id, decoded.session_id, decoded.received_at),
            (job.org_id, job.session_id, received_at)
        );
        assert_eq!(decoded.request_id.as_deref(), Some("req-1"));
        assert_eq!(decoded.events.len(), 2);
        for (got, want) in decoded.events.iter().zip(&batch.accepted) {
            assert_eq!(got.client_id.as_deref(), want.client_id.as_deref());
            assert_eq!(got.event_type, want.event_type);
            assert_eq!(got.timestamp, want.timestamp);
            assert_eq!(got.data.get(), want.data.get());
        }
        assert_eq!(decoded.events[0].timestamp, "2026-04-01T10:00:00.123456789Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(decoded.events[0].data.get(), r#"{"a":"\u00e9 \"q\""}"#, "data travels verbatim");
        assert_eq!(decoded.events[1].event_type, "Stop\u{e9}");
        assert_eq!(decoded.events[1].data.get(), "{}");
    }

    #[test]
    fn the_hand_written_timestamp_matches_chrono_to_the_nanosecond() {
        for text in ["2026-04-01T12:00:00Z", "0001-01-01T00:00:00.000000001Z", "9999-12-31T23:59:59.999999999Z"] {
            let t: DateTime<Utc> = text.parse().unwrap();
            let mut out = Vec::new();
            crate::domain::ingest::serialize_rfc3339(&t, &mut serde_json::Serializer::new(&mut out)).unwrap();
            let back: DateTime<Utc> = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, t, "{text} -> {}", String::from_utf8_lossy(&out));
        }
    }
}
