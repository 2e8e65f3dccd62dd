//! `/{org_id}/sessions`: create, list, get, hierarchy.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use super::session_updates::{UpdateSession, text_field};
use super::{ApiTags, parse_id};
use crate::auth::ApiKey;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::models::{Compaction, ModelUsage, Run, Session, SessionStatus, Task};
use crate::state::AppState;
use crewkit_jobs::domain::RemoteUrl;
use crewkit_jobs::domain::ingest::parse_timestamp;
use crewkit_jobs::ids::{ProjectId, RepoId, RunId, SessionId};
use crewkit_jobs::store::sessions::{self, Created, NewSession};
use crewkit_jobs::store::sessions::{MetricsSnapshot, SessionChanges};
use crewkit_jobs::store::{compactions, tasks};

pub struct SessionsApi;

/// Creates a Run and its first conversation (or, with `run_id`, a later conversation of a run).
#[derive(Debug, Object, Deserialize)]
pub struct CreateSession {
    /// The repository's git remote; normalised, so SSH and HTTPS spellings are one repository.
    #[oai(skip_serializing_if_is_none)]
    pub remote_url: Option<String>,
    /// The component of the repository worked on.
    #[oai(skip_serializing_if_is_none)]
    pub component: Option<String>,
    /// An existing repository (`repo_…`); takes precedence over `remote_url`.
    #[oai(skip_serializing_if_is_none)]
    pub repository_id: Option<String>,
    /// The project (`proj_…`).
    #[oai(skip_serializing_if_is_none)]
    pub project_id: Option<String>,
    /// Add this conversation to an existing run (`run_…`), e.g. after `/clear`.
    #[oai(skip_serializing_if_is_none)]
    pub run_id: Option<String>,
    /// The conversation this one continues; it joins that conversation's thread.
    #[oai(skip_serializing_if_is_none)]
    pub parent_session_id: Option<String>,
    /// The agent (default `claude-code`).
    #[oai(skip_serializing_if_is_none)]
    pub agent_name: Option<String>,
    /// The agent's own session id. Creating again with the same value returns the same session.
    #[oai(skip_serializing_if_is_none)]
    pub agent_session_id: Option<String>,
    /// A title for the session.
    #[oai(skip_serializing_if_is_none)]
    pub title: Option<String>,
    /// When it started (RFC 3339; default: now).
    #[oai(skip_serializing_if_is_none)]
    pub started_at: Option<String>,
    /// Free-form metadata (a JSON object).
    #[oai(skip_serializing_if_is_none)]
    pub metadata: Option<Value>,
}

#[derive(ApiResponse)]
pub enum CreateResponse {
    /// The session was created.
    #[oai(status = 201)]
    Created(Json<Session>),
    /// A session with this `agent_session_id` exists already; here it is.
    #[oai(status = 200)]
    Existing(Json<Session>),
}

/// A page of sessions.
#[derive(Debug, Object)]
pub struct SessionList {
    /// The sessions, newest first.
    pub data: Vec<Session>,
    /// This page's number (from 1).
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Sessions matching the filters, over all pages, counted up to 10,000.
    pub total: i64,
    /// Number of pages (of the counted matches).
    pub total_pages: i64,
    /// More sessions match than were counted: `total` is a lower bound. Narrow the filters
    /// (e.g. `started_after`) for an exact count; later pages can still be read.
    pub total_capped: bool,
}

/// A session with everything known about it.
#[derive(Debug, Object)]
pub struct SessionDetail {
    #[oai(flatten)]
    pub session: Session,
    /// The run it belongs to.
    pub run: Run,
    /// Tasks (subagents, team tasks) in it.
    pub task_count: i64,
    /// Its tasks, as trees.
    pub tasks: Vec<Task>,
    /// Usage per model.
    pub models: Vec<ModelUsage>,
    /// Its compactions, newest first.
    pub compactions: Vec<Compaction>,
    /// The latest analysis (tool use, failures, files, commands, active time, outcome), once made.
    #[oai(skip_serializing_if_is_none)]
    pub analysis: Option<serde_json::Value>,
}

/// A conversation of a run, with its tasks.
#[derive(Debug, Object)]
pub struct ConversationNode {
    #[oai(flatten)]
    pub session: Session,
    /// Its tasks, as trees.
    pub tasks: Vec<Task>,
}

/// Run > Conversations > Tasks.
#[derive(Debug, Object)]
pub struct Hierarchy {
    /// The run.
    pub run: Run,
    /// Its conversations, oldest first.
    pub conversations: Vec<ConversationNode>,
}

fn opt_trimmed(field: &str, v: &Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.chars().count() > max => {
            Err(ApiError::invalid(field, "too_long", format!("at most {max} characters")))
        }
        Some(s) => Ok(Some(s.to_string())),
    }
}

impl CreateSession {
    fn parse(self) -> Result<NewSession, ApiError> {
        let metadata = match self.metadata {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => {
                return Err(ApiError::invalid("metadata", "invalid_field", "must be a JSON object"));
            }
        };
        Ok(NewSession {
            agent_name: opt_trimmed("agent_name", &self.agent_name, 64)?.unwrap_or_else(|| "claude-code".into()),
            agent_session_id: match opt_trimmed("agent_session_id", &self.agent_session_id, 256)? {
                None if self.agent_session_id.is_some() => {
                    return Err(ApiError::invalid("agent_session_id", "invalid_field", "must not be empty"));
                }
                other => other,
            },
            component: opt_trimmed("component", &self.component, 256)?,
            title: opt_trimmed("title", &self.title, 1024)?,
            remote_url: match opt_trimmed("remote_url", &self.remote_url, 2048)? {
                None => None,
                Some(u) => Some(
                    RemoteUrl::parse(&u)
                        .map_err(|e| ApiError::invalid("remote_url", "invalid_remote_url", e.to_string()))?,
                ),
            },
            repository_id: self.repository_id.as_deref().map(|s| parse_id::<RepoId>("repository_id", s)).transpose()?,
            project_id: self.project_id.as_deref().map(|s| parse_id::<ProjectId>("project_id", s)).transpose()?,
            run_id: self.run_id.as_deref().map(|s| parse_id::<RunId>("run_id", s)).transpose()?,
            parent_session_id: self
                .parent_session_id
                .as_deref()
                .map(|s| parse_id::<SessionId>("parent_session_id", s))
                .transpose()?,
            started_at: self
                .started_at
                .as_deref()
                .map(|s| {
                    parse_timestamp(s).ok_or_else(|| {
                        ApiError::invalid("started_at", "invalid_timestamp", "not an RFC 3339 date-time")
                    })
                })
                .transpose()?,
            metadata,
        })
    }
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Create session
    ///
    /// Creates a Run and its first Conversation and returns the conversation. Idempotent on
    /// `agent_session_id`: the same value again returns the existing session with 200. The
    /// repository is taken from `repository_id`, else derived from `remote_url`.
    #[oai(path = "/:org_id/sessions", method = "post", operation_id = "create_session")]
    async fn create(
        &self,
        state: poem::web::Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        body: JsonBody<CreateSession>,
    ) -> Result<CreateResponse, ApiError> {
        let p = auth.for_org(&org_id)?;
        let new = body.0.parse()?;
        let created =
            crewkit_jobs::service::create_session(&state.db, &state.queues, p.org_id, p.user_id, &new).await?;
        let session = Json(sessions::get_session(&state.db, p.org_id, created.id()).await?.into());
        Ok(match created {
            Created::New(_) => CreateResponse::Created(session),
            Created::Existing(_) => CreateResponse::Existing(session),
        })
    }

    /// List sessions
    ///
    /// Sessions of the organisation, newest first (`started_at desc, id desc`, a stable order: pages
    /// never overlap), with the total over all pages.
    #[oai(path = "/:org_id/sessions", method = "get", operation_id = "list_sessions")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: poem::web::Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Page number, from 1.
        #[oai(default = "super::default_page", validator(minimum(value = "1")))]
        page: Query<u32>,
        /// Items per page, 1 to 100.
        #[oai(default = "super::default_per_page", validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<u32>,
        /// Only sessions of this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only sessions of this repository slug, such as `acme/backend`.
        repo: Query<Option<String>>,
        /// Only sessions of this agent, such as `claude-code`.
        agent_name: Query<Option<String>>,
        /// Only the caller's own sessions.
        #[oai(default)]
        current_user_only: Query<bool>,
        /// Only sessions in this status.
        status: Query<Option<SessionStatus>>,
        /// Only the session with this agent session id.
        agent_session_id: Query<Option<String>>,
        /// Only sessions started at or after this time (RFC 3339 or a date).
        started_after: Query<Option<String>>,
        /// Only sessions started before this time (RFC 3339 or a date).
        started_before: Query<Option<String>>,
    ) -> Result<Json<SessionList>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let filter = super::ListParams {
            project_id: project_id.0,
            repo: repo.0,
            agent_name: agent_name.0,
            current_user_only: current_user_only.0,
            status: status.0,
            agent_session_id: agent_session_id.0,
            started_after: started_after.0,
            started_before: started_before.0,
        }
        .into_filter(p)?;
        let (rows, total) = sessions::list_sessions(&state.db, p.org_id, &filter, page.0, per_page.0).await?;
        Ok(Json(SessionList {
            data: rows.into_iter().map(Session::from).collect(),
            page: page.0,
            per_page: per_page.0,
            total,
            total_pages: super::total_pages(total, per_page.0),
            total_capped: total >= sessions::LIST_COUNT_CAP,
        }))
    }

    /// Get session
    ///
    /// The session with full details: run, repository, metrics, counters and tasks.
    #[oai(path = "/:org_id/sessions/:id", method = "get", operation_id = "get_session")]
    async fn get(
        &self,
        state: poem::web::Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`).
        id: Path<String>,
    ) -> Result<Json<SessionDetail>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: SessionId = parse_id("id", &id)?;
        let row = sessions::get_session(&state.db, p.org_id, id).await?;
        let run = sessions::get_run(&state.db, p.org_id, row.run_id).await?;
        let task_rows = tasks::tasks_of_sessions(&state.db, p.org_id, &[id]).await?;
        let models = sessions::models_of_session(&state.db, id).await?;
        let compactions = compactions::list(&state.db, p.org_id, id).await?;
        Ok(Json(SessionDetail {
            session: row.into(),
            run: run.into(),
            task_count: task_rows.len() as i64,
            tasks: Task::forest(&task_rows),
            models: models.into_iter().map(ModelUsage::from).collect(),
            compactions: compactions.into_iter().map(Compaction::from).collect(),
            analysis: crewkit_jobs::analyze_session::latest(&state.db, id).await?,
        }))
    }

    /// Update session
    ///
    /// Used by the CLI to update a session's metrics periodically. `model_metrics` is a
    /// cumulative snapshot: every counter only ever rises, so a late, older PATCH cannot undo a
    /// newer one. `cost_usd` is a decimal (no float rounding).
    #[oai(path = "/:org_id/sessions/:id", method = "patch", operation_id = "update_session")]
    async fn update(
        &self,
        state: poem::web::Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`).
        id: Path<String>,
        body: JsonBody<UpdateSession>,
    ) -> Result<Json<Session>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: SessionId = parse_id("id", &id)?;
        let b = body.0;
        if let Some(m) = &b.model_metrics {
            m.check()?;
        }
        let metrics = b.model_metrics.as_ref().map(MetricsSnapshot::from);
        let changes = SessionChanges {
            title: text_field("title", b.title, 1024)?,
            summary: text_field("summary", b.summary, 65_536)?,
        };
        crewkit_jobs::service::update_session(&state.db, &state.queues, p.org_id, id, metrics.as_ref(), &changes)
            .await?;
        Ok(Json(sessions::get_session(&state.db, p.org_id, id).await?.into()))
    }

    /// Session hierarchy
    ///
    /// The full hierarchy of the session's run: Run > Conversations > Tasks (with nested tasks as
    /// `children`).
    #[oai(path = "/:org_id/sessions/:id/hierarchy", method = "get", operation_id = "get_session_hierarchy")]
    async fn hierarchy(
        &self,
        state: poem::web::Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Session id (`ses_…`).
        id: Path<String>,
    ) -> Result<Json<Hierarchy>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let id: SessionId = parse_id("id", &id)?;
        let row = sessions::get_session(&state.db, p.org_id, id).await?;
        let run = sessions::get_run(&state.db, p.org_id, row.run_id).await?;
        let convs = sessions::sessions_of_run(&state.db, p.org_id, row.run_id).await?;
        let ids: Vec<SessionId> = convs.iter().map(|c| c.id).collect();
        let all_tasks = tasks::tasks_of_sessions(&state.db, p.org_id, &ids).await?;
        let conversations = convs
            .into_iter()
            .map(|c| {
                let mine: Vec<_> = all_tasks.iter().filter(|t| t.conversation_id == c.id).cloned().collect();
                ConversationNode { tasks: Task::forest(&mine), session: c.into() }
            })
            .collect();
        Ok(Json(Hierarchy { run: run.into(), conversations }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_session_defaults_to_claude_code_and_an_empty_metadata_object() {
        let body: CreateSession =
            serde_json::from_str(r#"{"remote_url":"git@github.com:acme/backend","unknown":1}"#).unwrap();
        let new = body.parse().unwrap();
        assert_eq!(new.agent_name, "claude-code");
        assert_eq!(new.remote_url.unwrap().slug(), "acme/backend");
        assert_eq!(new.metadata, serde_json::json!({}));
    }

    #[test]
    fn a_wrong_id_prefix_names_the_field() {
        let body: CreateSession = serde_json::from_str(r#"{"repository_id":"run_0190"}"#).unwrap();
        let err = body.parse().unwrap_err();
        assert_eq!(err.problem.errors[0].field, "repository_id");
        assert_eq!(err.problem.status, 400);
    }
}
