//! The shapes the API returns, with the doc comments that become the OpenAPI schema. Conversions
//! from store rows live here so handlers stay short.

use chrono::{DateTime, Utc};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use crewkit_jobs::store::events::EventRow;
use crewkit_jobs::store::jobs::JobRow;
use crewkit_jobs::store::sessions::{RunRow, SessionRow};
use crewkit_jobs::store::tasks::TaskRow;

/// The largest amount a session may cost (the column holds ten digits before the point).
pub const MAX_MONEY_USD: i64 = 1_000_000_000;

/// An amount of US dollars: a decimal, written as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub Decimal);

/// An amount of US dollars sent by a client: 0 to below 10⁹, read exactly (never through f64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoneyInput(pub Decimal);

fn money_schema(bounded: bool) -> MetaSchemaRef {
    let mut schema = MetaSchema::new_with_format("number", "decimal");
    if bounded {
        schema.minimum = Some(0.0);
        schema.exclusive_maximum = Some(true);
        schema.maximum = Some(MAX_MONEY_USD as f64);
    }
    MetaSchemaRef::Inline(Box::new(schema))
}

fn money_to_json(d: Decimal) -> Option<Value> {
    // A decimal of up to 15 significant digits survives f64 exactly in its shortest text form,
    // which is what serde_json prints: 0.1 is written `0.1`, never 0.1000000000000000055.
    let normalized = d.normalize();
    if normalized.scale() == 0
        && let Some(i) = normalized.to_i64()
    {
        return Some(Value::from(i));
    }
    normalized.to_f64().and_then(serde_json::Number::from_f64).map(Value::Number)
}

/// Parses the JSON text of a number (or a string) as a decimal.
fn decimal_from_text(text: &str) -> Option<Decimal> {
    let text = text.trim_matches('"');
    text.parse().ok().or_else(|| Decimal::from_scientific(text).ok())
}

macro_rules! money_type {
    ($ty:ident, $name:literal, $bounded:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                money_schema($bounded)
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ToJSON for $ty {
            fn to_json(&self) -> Option<Value> {
                money_to_json(self.0)
            }
        }

        impl ParseFromJSON for $ty {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match &value {
                    Some(Value::Number(n)) => decimal_from_text(&n.to_string()),
                    Some(Value::String(s)) => decimal_from_text(s),
                    _ => None,
                }
                .map($ty)
                .ok_or_else(|| ParseError::expected_type(value.unwrap_or_default()))
            }
        }
    };
}

money_type!(Money, "money", false);
money_type!(MoneyInput, "money_input", true);

/// Read from the JSON text of the number, so `0.1` is exactly one tenth.
impl<'de> serde::Deserialize<'de> for MoneyInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        let value = decimal_from_text(raw.get())
            .ok_or_else(|| serde::de::Error::custom(format!("{} is not a decimal number", raw.get())))?;
        if value.is_sign_negative() || value >= Decimal::from(MAX_MONEY_USD) {
            return Err(serde::de::Error::custom(format!("must be from 0 to below {MAX_MONEY_USD}")));
        }
        // Stored as NUMERIC(20, 10): ten decimal places are kept, rounding half to even.
        Ok(MoneyInput(value.round_dp(10)))
    }
}

/// A point in time, written as RFC 3339 in UTC with a `Z` (fractional seconds only when present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcTime(pub DateTime<Utc>);

impl From<DateTime<Utc>> for UtcTime {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t)
    }
}

impl Type for UtcTime {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date-time")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for UtcTime {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
    }
}

impl ParseFromJSON for UtcTime {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
                .map(|t| UtcTime(t.with_timezone(&Utc)))
                .map_err(|_| ParseError::custom("not an RFC 3339 date-time")),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

/// Whether a session is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Deserialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Ended,
}

impl SessionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Ended => "ended",
        }
    }
}

/// Token usage and cost of a session so far (cumulative).
#[derive(Debug, Clone, Object)]
pub struct ModelMetrics {
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Tokens read from the prompt cache.
    pub cache_read_input_tokens: i64,
    /// Tokens written to the prompt cache.
    pub cache_creation_input_tokens: i64,
    /// Cost in USD; absent while unknown.
    #[oai(skip_serializing_if_is_none)]
    pub cost_usd: Option<Money>,
}

/// A session (a conversation of an agent, inside a run).
#[derive(Debug, Clone, Object)]
pub struct Session {
    /// The session id (`ses_…`).
    pub id: String,
    /// The run this conversation belongs to (`run_…`).
    pub run_id: String,
    /// The thread of related conversations (the id of the conversation that started it).
    pub thread_id: String,
    /// The conversation this one continues (resume, fork, after compaction).
    #[oai(skip_serializing_if_is_none)]
    pub parent_session_id: Option<String>,
    /// The user whose API key created the session (`usr_…`).
    pub user_id: String,
    /// The project (`proj_…`), from the request or the repository.
    #[oai(skip_serializing_if_is_none)]
    pub project_id: Option<String>,
    /// The repository (`repo_…`).
    #[oai(skip_serializing_if_is_none)]
    pub repository_id: Option<String>,
    /// The repository's slug, such as `acme/backend`.
    #[oai(skip_serializing_if_is_none)]
    pub repo: Option<String>,
    /// The repository's normalised remote URL.
    #[oai(skip_serializing_if_is_none)]
    pub remote_url: Option<String>,
    /// The agent, such as `claude-code`.
    pub agent_name: String,
    /// The agent's own session id (Claude Code's `session_id`).
    #[oai(skip_serializing_if_is_none)]
    pub agent_session_id: Option<String>,
    /// The component of the repository worked on.
    #[oai(skip_serializing_if_is_none)]
    pub component: Option<String>,
    /// A title, when the agent or client gave one.
    #[oai(skip_serializing_if_is_none)]
    pub title: Option<String>,
    /// `active` or `ended`.
    pub status: String,
    /// Why the session ended: `client`, `idle`, …
    #[oai(skip_serializing_if_is_none)]
    pub end_reason: Option<String>,
    /// A summary of the session.
    #[oai(skip_serializing_if_is_none)]
    pub summary: Option<String>,
    /// Free-form metadata given at creation.
    pub metadata: Value,
    /// When the session started.
    pub started_at: UtcTime,
    /// When it ended.
    #[oai(skip_serializing_if_is_none)]
    pub ended_at: Option<UtcTime>,
    /// The first stored event's time.
    #[oai(skip_serializing_if_is_none)]
    pub first_event_at: Option<UtcTime>,
    /// The last stored event's time.
    #[oai(skip_serializing_if_is_none)]
    pub last_event_at: Option<UtcTime>,
    /// Usage and cost.
    pub model_metrics: ModelMetrics,
    /// Events stored.
    pub event_count: i64,
    /// Tool calls (PreToolUse events) stored.
    pub tool_call_count: i64,
    /// Failed tool calls and failed stops stored.
    pub error_count: i64,
    /// When the record was created.
    pub created_at: UtcTime,
    /// When the record last changed.
    pub updated_at: UtcTime,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id.to_string(),
            run_id: r.run_id.to_string(),
            thread_id: r.thread_id.to_string(),
            parent_session_id: r.parent_id.map(|p| p.to_string()),
            user_id: r.user_id.to_string(),
            project_id: r.project_id.map(|p| p.to_string()),
            repository_id: r.repository_id.map(|p| p.to_string()),
            repo: r.repo_slug,
            remote_url: r.repo_remote_url,
            agent_name: r.agent_name,
            agent_session_id: r.agent_session_id,
            component: r.component,
            title: r.title,
            status: r.status,
            end_reason: r.end_reason,
            summary: r.summary,
            metadata: r.metadata,
            started_at: r.started_at.into(),
            ended_at: r.ended_at.map(UtcTime),
            first_event_at: r.first_event_at.map(UtcTime),
            last_event_at: r.last_event_at.map(UtcTime),
            model_metrics: ModelMetrics {
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_read_input_tokens: r.cache_read_tokens,
                cache_creation_input_tokens: r.cache_write_tokens,
                cost_usd: r.cost_usd.map(Money),
            },
            event_count: r.event_count,
            tool_call_count: r.tool_call_count,
            error_count: r.error_count,
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
        }
    }
}

/// A run: one start of the CLI, holding one or more conversations.
#[derive(Debug, Clone, Object)]
pub struct Run {
    /// The run id (`run_…`).
    pub id: String,
    /// Who started it.
    pub user_id: String,
    /// Its project.
    #[oai(skip_serializing_if_is_none)]
    pub project_id: Option<String>,
    /// Its repository.
    #[oai(skip_serializing_if_is_none)]
    pub repository_id: Option<String>,
    /// The component worked on.
    #[oai(skip_serializing_if_is_none)]
    pub component: Option<String>,
    /// When it started.
    pub started_at: UtcTime,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Self {
            id: r.id.to_string(),
            user_id: r.user_id.to_string(),
            project_id: r.project_id.map(|p| p.to_string()),
            repository_id: r.repository_id.map(|p| p.to_string()),
            component: r.component,
            started_at: r.started_at.into(),
        }
    }
}

/// Work inside a conversation: a subagent, or an agent-team task.
#[derive(Debug, Clone, Object)]
pub struct Task {
    /// The task id (`task_…`).
    pub id: String,
    /// `subagent` or `team_task`.
    pub kind: String,
    /// The agent's id for it (`agent_id` of a subagent, `task_id` of a team task).
    pub external_id: String,
    /// The subagent's type, such as `Explore`.
    #[oai(skip_serializing_if_is_none)]
    pub agent_type: Option<String>,
    /// What it was asked to do.
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    /// The Agent/Task tool call that launched it.
    #[oai(skip_serializing_if_is_none)]
    pub tool_use_id: Option<String>,
    /// `running` or `completed`.
    pub status: String,
    /// When it started.
    #[oai(skip_serializing_if_is_none)]
    pub started_at: Option<UtcTime>,
    /// When it ended.
    #[oai(skip_serializing_if_is_none)]
    pub ended_at: Option<UtcTime>,
    /// Events it fired.
    pub event_count: i64,
    /// Tool calls it made.
    pub tool_call_count: i64,
    /// Tasks it started.
    pub children: Vec<Task>,
}

impl Task {
    /// Builds the task trees of one conversation from its flat task list.
    pub fn forest(rows: &[TaskRow]) -> Vec<Task> {
        fn build(rows: &[TaskRow], parent: Option<crewkit_jobs::ids::TaskId>) -> Vec<Task> {
            rows.iter()
                .filter(|r| r.parent_task_id == parent)
                .map(|r| Task {
                    id: r.id.to_string(),
                    kind: r.kind.clone(),
                    external_id: r.external_id.clone(),
                    agent_type: r.agent_type.clone(),
                    description: r.description.clone(),
                    tool_use_id: r.tool_use_id.clone(),
                    status: r.status.clone(),
                    started_at: r.started_at.map(UtcTime),
                    ended_at: r.ended_at.map(UtcTime),
                    event_count: r.event_count,
                    tool_call_count: r.tool_call_count,
                    children: build(rows, Some(r.id)),
                })
                .collect()
        }
        build(rows, None)
    }
}

/// A stored hook event.
#[derive(Debug, Clone, Object)]
pub struct Event {
    /// The event id (`evt_…`).
    pub id: String,
    /// The order events were stored in (across all sessions, not their timeline); pass the last one
    /// read as `after` to read on.
    pub seq: i64,
    /// The hook event name, such as `PostToolUse`.
    pub event_type: String,
    /// The client's own id, when it gave one.
    #[oai(skip_serializing_if_is_none)]
    pub client_event_id: Option<String>,
    /// When the event happened, as the client said (UTC).
    pub timestamp: UtcTime,
    /// When the API received it.
    pub received_at: UtcTime,
    /// True when the timestamp was far in the future; the event is then ordered by `received_at`.
    pub timestamp_in_future: bool,
    /// The task (subagent) it belongs to.
    #[oai(skip_serializing_if_is_none)]
    pub task_id: Option<String>,
    /// The tool, for tool events.
    #[oai(skip_serializing_if_is_none)]
    pub tool_name: Option<String>,
    /// The tool call id, for tool events.
    #[oai(skip_serializing_if_is_none)]
    pub tool_use_id: Option<String>,
    /// The hook payload as sent (repaired where it was not valid JSON text).
    pub data: Value,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Self {
            id: r.id.to_string(),
            seq: r.seq,
            event_type: r.event_type,
            client_event_id: r.client_event_id,
            timestamp: r.timestamp.into(),
            received_at: r.received_at.into(),
            timestamp_in_future: r.timestamp_in_future,
            task_id: r.task_id.map(|t| t.to_string()),
            tool_name: r.tool_name,
            tool_use_id: r.tool_use_id,
            data: r.data,
        }
    }
}

/// The state of a background job: queued → running → succeeded | failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// A background job.
#[derive(Debug, Clone, Object)]
pub struct Job {
    /// The job id (`job_…`).
    pub id: String,
    /// What it does: `persist_events`, `analyze_session`, …
    pub kind: String,
    // No doc comment: poem-openapi would wrap the enum's $ref in an allOf, which some client
    // generators (openapi-python-client) refuse. The enum's own description says it all.
    pub status: JobStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// Attempts it may make.
    pub max_attempts: i64,
    /// The last attempt's error.
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
    /// The session it concerns.
    #[oai(skip_serializing_if_is_none)]
    pub session_id: Option<String>,
    /// What it produced (for `persist_events`: inserted, duplicates, skipped).
    #[oai(skip_serializing_if_is_none)]
    pub result: Option<Value>,
    /// When it was queued.
    pub created_at: UtcTime,
    /// When its first attempt started.
    #[oai(skip_serializing_if_is_none)]
    pub started_at: Option<UtcTime>,
    /// When it reached succeeded or failed.
    #[oai(skip_serializing_if_is_none)]
    pub finished_at: Option<UtcTime>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        let status = match r.status.as_str() {
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => JobStatus::Queued,
        };
        Self {
            id: r.id.to_string(),
            kind: r.kind,
            status,
            attempts: r.attempts.into(),
            max_attempts: r.max_attempts.into(),
            error: r.error,
            session_id: r.session_id.map(|s| s.to_string()),
            result: r.result,
            created_at: r.created_at.into(),
            started_at: r.started_at.map(UtcTime),
            finished_at: r.finished_at.map(UtcTime),
        }
    }
}

/// A context compaction of a session.
#[derive(Debug, Clone, Object)]
pub struct Compaction {
    /// The compaction id (`cmp_…`).
    pub id: String,
    /// The session compacted.
    pub session_id: String,
    /// The request id it was created with (one compaction per request id).
    pub request_id: String,
    /// `manual` (the endpoint) or `pre_compact` (a PreCompact hook event).
    pub trigger: String,
    /// queued → running → succeeded | failed.
    pub status: String,
    /// The job producing it (`job_…`).
    #[oai(skip_serializing_if_is_none)]
    pub job_id: Option<String>,
    /// The digest, once done.
    #[oai(skip_serializing_if_is_none)]
    pub digest: Option<Value>,
    /// First event covered (its `seq`).
    #[oai(skip_serializing_if_is_none)]
    pub first_event_seq: Option<i64>,
    /// Last event covered (its `seq`).
    #[oai(skip_serializing_if_is_none)]
    pub last_event_seq: Option<i64>,
    /// Size of the events covered, in bytes.
    #[oai(skip_serializing_if_is_none)]
    pub size_before: Option<i64>,
    /// Size of the digest, in bytes.
    #[oai(skip_serializing_if_is_none)]
    pub size_after: Option<i64>,
    /// When it was requested.
    pub created_at: UtcTime,
    /// When it finished.
    #[oai(skip_serializing_if_is_none)]
    pub finished_at: Option<UtcTime>,
}

impl From<crewkit_jobs::store::compactions::CompactionRow> for Compaction {
    fn from(r: crewkit_jobs::store::compactions::CompactionRow) -> Self {
        Self {
            id: r.id.to_string(),
            session_id: r.conversation_id.to_string(),
            request_id: r.request_id,
            trigger: r.trigger,
            status: r.status,
            job_id: r.job_id.map(|j| j.to_string()),
            digest: r.digest,
            first_event_seq: r.first_event_seq,
            last_event_seq: r.last_event_seq,
            size_before: r.size_before,
            size_after: r.size_after,
            created_at: r.created_at.into(),
            finished_at: r.finished_at.map(UtcTime),
        }
    }
}

/// Usage of one model in a session (cumulative).
#[derive(Debug, Clone, Object)]
pub struct ModelUsage {
    /// The model id, such as `claude-sonnet-4-6`.
    pub model: String,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Tokens read from the prompt cache.
    pub cache_read_input_tokens: i64,
    /// Tokens written to the prompt cache.
    pub cache_creation_input_tokens: i64,
    /// Cost in USD, when known.
    #[oai(skip_serializing_if_is_none)]
    pub cost_usd: Option<Money>,
}

impl From<crewkit_jobs::store::sessions::ModelUsage> for ModelUsage {
    fn from(m: crewkit_jobs::store::sessions::ModelUsage) -> Self {
        Self {
            model: m.model,
            input_tokens: m.input_tokens,
            output_tokens: m.output_tokens,
            cache_read_input_tokens: m.cache_read_tokens,
            cache_creation_input_tokens: m.cache_write_tokens,
            cost_usd: m.cost_usd.map(Money),
        }
    }
}

/// A user of the organisation.
#[derive(Debug, Clone, Object)]
pub struct User {
    /// The user id (`usr_…`).
    pub id: String,
    /// Email (lower-cased).
    pub email: String,
    /// Display name.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    /// `admin`, `manager` or `member`.
    pub role: String,
    /// When the user was added.
    pub created_at: UtcTime,
}

impl From<crewkit_jobs::store::orgs::UserRow> for User {
    fn from(r: crewkit_jobs::store::orgs::UserRow) -> Self {
        Self { id: r.id.to_string(), email: r.email, name: r.name, role: r.role, created_at: r.created_at.into() }
    }
}

/// An API key, without its secret.
#[derive(Debug, Clone, Object)]
pub struct ApiKeyInfo {
    /// The key id (`key_…`).
    pub id: String,
    /// The user it acts as.
    pub user_id: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    /// A name for the key.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    /// When it was created.
    pub created_at: UtcTime,
    /// When it was revoked; a revoked key is refused.
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<UtcTime>,
}

impl From<crewkit_jobs::store::orgs::ApiKeyRow> for ApiKeyInfo {
    fn from(r: crewkit_jobs::store::orgs::ApiKeyRow) -> Self {
        Self {
            id: r.id.to_string(),
            user_id: r.user_id.to_string(),
            prefix: r.key_prefix,
            name: r.name,
            created_at: r.created_at.into(),
            revoked_at: r.revoked_at.map(UtcTime),
        }
    }
}
