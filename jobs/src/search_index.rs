//! The search backend: Meilisearch when `MEILI_URL` is set, else the embedded PostgreSQL full-text
//! table (`store::search`). Both take the same document, read fresh from PostgreSQL, and answer
//! the same request with the same shape.
//!
//! Meilisearch follows its task model exactly: every write returns a task, and each is awaited and
//! checked (`Task::is_success`); a failed or timed-out task is an error, so the `index_session`
//! job fails and is retried with backoff. Index set-up (primary key `id`, filterable, sortable and
//! searchable attributes) runs at start-up and is awaited before anything is served.
//!
//! Tenant isolation: the org filter is always added by the server, first; every user value is a
//! quoted string literal with `"` and `\` escaped (`quote`), never spliced raw, so `"`, `OR` or
//! `org_id` inside `q` or a filter are only text.

use std::time::Duration;

use chrono::{DateTime, Utc};
use meilisearch_sdk::client::Client;
use meilisearch_sdk::errors::{Error as MeiliError, ErrorCode};
use meilisearch_sdk::search::Selectors;
use meilisearch_sdk::settings::Settings;
use meilisearch_sdk::task_info::TaskInfo;
use meilisearch_sdk::tasks::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use crate::config::Config;
use crate::ids::{OrgId, SessionId};
use crate::store::StoreError;
use crate::store::search::{self, Hit};
use crate::store::sessions::SessionFilter;

/// How long an indexing job waits for its Meilisearch task.
const TASK_TIMEOUT: Duration = Duration::from_secs(30);
const TASK_POLL: Duration = Duration::from_millis(25);

const FILTERABLE: [&str; 7] = ["org_id", "agent_name", "status", "project_id", "repo", "user_id", "started_at"];
const SORTABLE: [&str; 2] = ["started_at", "cost_usd"];
/// In order of importance (Meilisearch's attribute ranking rule follows it).
const SEARCHABLE: [&str; 9] =
    ["title", "summary", "prompts", "files", "repo", "tools", "agent_name", "agent_session_id", "metadata"];

/// Why search could not answer or index.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Meilisearch did not answer, or a task failed: retry later.
    #[error("meilisearch: {0}")]
    Unavailable(String),
}

impl From<MeiliError> for SearchError {
    fn from(e: MeiliError) -> Self {
        SearchError::Unavailable(e.to_string())
    }
}

/// One session's document in Meilisearch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    /// The session id (`ses_…`): the primary key.
    pub id: String,
    pub org_id: String,
    pub agent_name: String,
    pub status: String,
    pub project_id: Option<String>,
    pub repo: Option<String>,
    pub user_id: String,
    /// Unix seconds, so ranges filter numerically.
    pub started_at: i64,
    pub cost_usd: Option<f64>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub prompts: String,
    pub files: String,
    pub tools: String,
    pub agent_session_id: Option<String>,
    pub metadata: String,
}

impl From<search::DocumentRow> for Document {
    fn from(r: search::DocumentRow) -> Self {
        Document {
            id: r.session_id.to_string(),
            org_id: r.org_id.to_string(),
            agent_name: r.agent_name,
            status: r.status,
            project_id: r.project_id.map(|p| p.to_string()),
            repo: r.repo,
            user_id: r.user_id.to_string(),
            started_at: r.started_at.timestamp(),
            cost_usd: r.cost_usd.and_then(|c| rust_decimal::prelude::ToPrimitive::to_f64(&c)),
            title: r.title,
            summary: r.summary,
            prompts: r.prompts,
            files: r.files,
            tools: r.tools,
            agent_session_id: r.agent_session_id,
            metadata: r.metadata,
        }
    }
}

/// A Meilisearch index of sessions.
#[derive(Clone)]
pub struct Meili {
    client: Client,
    index: String,
}

/// Where sessions are indexed and searched.
#[derive(Clone)]
pub enum SearchBackend {
    Postgres,
    Meili(Meili),
}

/// A string literal for a Meilisearch filter: double-quoted, `\` and `"` escaped.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for ch in value.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// The filter expression: the org first, then each filter the caller set, all ANDed.
pub fn filter_expression(org: OrgId, f: &SessionFilter) -> String {
    let mut parts = vec![format!("org_id = {}", quote(&org.to_string()))];
    if let Some(p) = f.project_id {
        parts.push(format!("project_id = {}", quote(&p.to_string())));
    }
    if let Some(r) = &f.repo_slug {
        parts.push(format!("repo = {}", quote(r)));
    }
    if let Some(a) = &f.agent_name {
        parts.push(format!("agent_name = {}", quote(a)));
    }
    if let Some(u) = f.user_id {
        parts.push(format!("user_id = {}", quote(&u.to_string())));
    }
    if let Some(s) = &f.status {
        parts.push(format!("status = {}", quote(s)));
    }
    if let Some(t) = f.started_after {
        parts.push(format!("started_at >= {}", t.timestamp()));
    }
    if let Some(t) = f.started_before {
        // started_before is exclusive; documents hold whole seconds.
        parts.push(format!("started_at < {}", ceil_secs(t)));
    }
    parts.join(" AND ")
}

fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

/// Awaits a task and fails unless it succeeded.
async fn settle(client: &Client, task: TaskInfo, what: &str) -> Result<Task, SearchError> {
    let task = task.wait_for_completion(client, Some(TASK_POLL), Some(TASK_TIMEOUT)).await?;
    if task.is_success() {
        return Ok(task);
    }
    let detail = match &task {
        Task::Failed { content } => content.error.to_string(),
        other => format!("{other:?}"),
    };
    Err(SearchError::Unavailable(format!("{what} task failed: {detail}")))
}

impl Meili {
    pub fn new(url: &str, key: Option<&str>, index: String) -> Result<Self, SearchError> {
        let client = Client::new(url.trim_end_matches('/'), key).map_err(SearchError::from)?;
        Ok(Meili { client, index })
    }

    /// Creates the index with its primary key (if new) and applies the settings, awaiting both.
    pub async fn set_up(&self) -> Result<(), SearchError> {
        let created = self.client.create_index(&self.index, Some("id")).await?;
        let task = created.wait_for_completion(&self.client, Some(TASK_POLL), Some(TASK_TIMEOUT)).await?;
        if let Task::Failed { content } = &task
            && content.error.error_code != ErrorCode::IndexAlreadyExists
        {
            return Err(SearchError::Unavailable(format!("creating index {}: {}", self.index, content.error)));
        }
        let settings = Settings::new()
            .with_filterable_attributes(FILTERABLE)
            .with_sortable_attributes(SORTABLE)
            .with_searchable_attributes(SEARCHABLE);
        let task = self.client.index(&self.index).set_settings(&settings).await?;
        settle(&self.client, task, "settings").await?;
        Ok(())
    }

    pub async fn healthy(&self) -> Result<(), SearchError> {
        self.client.health().await?;
        Ok(())
    }

    /// Upserts documents (by `id`), waiting for the task.
    pub async fn upsert(&self, docs: &[Document]) -> Result<(), SearchError> {
        if docs.is_empty() {
            return Ok(());
        }
        let task = self.client.index(&self.index).add_or_replace(docs, Some("id")).await?;
        settle(&self.client, task, "documents").await?;
        Ok(())
    }

    pub async fn search(
        &self,
        org: OrgId,
        q: &str,
        filter: &SessionFilter,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<Hit>, i64), SearchError> {
        let expr = filter_expression(org, filter);
        let index = self.client.index(&self.index);
        let highlight: &[&str] = &["title", "summary", "prompts"];
        let results = index
            .search()
            .with_query(q)
            .with_filter(&expr)
            .with_page(page as usize)
            .with_hits_per_page(per_page as usize)
            .with_attributes_to_retrieve(Selectors::Some(&["id"]))
            .with_attributes_to_highlight(Selectors::Some(highlight))
            .with_attributes_to_crop(Selectors::Some(&[("prompts", Some(40))]))
            .with_highlight_pre_tag("<em>")
            .with_highlight_post_tag("</em>")
            .with_show_ranking_score(true)
            .execute::<Value>()
            .await?;
        let mut hits = Vec::with_capacity(results.hits.len());
        for h in results.hits {
            let Some(id) = h.result.get("id").and_then(Value::as_str).and_then(|s| s.parse::<SessionId>().ok()) else {
                continue;
            };
            let formatted = h.formatted_result.unwrap_or_default();
            // Only fragments that really hold a match are highlights.
            let fragment = |field: &str| {
                formatted.get(field).and_then(Value::as_str).filter(|s| s.contains("<em>")).map(str::to_string)
            };
            hits.push(Hit {
                session_id: id,
                score: h.ranking_score.unwrap_or(0.0) as f32,
                title_highlight: fragment("title"),
                summary_highlight: fragment("summary"),
                prompts_highlight: fragment("prompts"),
                indexed_at: Utc::now(),
            });
        }
        Ok((hits, results.total_hits.unwrap_or(0) as i64))
    }
}

impl SearchBackend {
    /// Meilisearch when the configuration names one, else PostgreSQL.
    pub fn from_config(config: &Config) -> Result<Self, SearchError> {
        match &config.meili_url {
            Some(url) => Ok(SearchBackend::Meili(Meili::new(
                url,
                config.meili_master_key.as_deref(),
                format!("{}sessions", config.meili_index_prefix),
            )?)),
            None => Ok(SearchBackend::Postgres),
        }
    }

    /// `postgres` or `meilisearch`, as the search response names it.
    pub fn engine(&self) -> &'static str {
        match self {
            SearchBackend::Postgres => "postgres",
            SearchBackend::Meili(_) => "meilisearch",
        }
    }

    /// Index set-up, awaited; nothing to do for PostgreSQL (the migrations made its table).
    pub async fn set_up(&self) -> Result<(), SearchError> {
        match self {
            SearchBackend::Postgres => Ok(()),
            SearchBackend::Meili(m) => m.set_up().await,
        }
    }

    /// Writes the session's current document.
    pub async fn index_session(&self, db: &PgPool, org: OrgId, session: SessionId) -> Result<(), SearchError> {
        match self {
            SearchBackend::Postgres => Ok(search::index_session(db, org, session).await?),
            SearchBackend::Meili(m) => {
                let row = search::document(db, org, session).await?.ok_or(StoreError::NotFound("session"))?;
                m.upsert(&[row.into()]).await
            }
        }
    }

    /// Re-indexes many sessions (admin reindex): in batches, each one Meilisearch task.
    pub async fn index_sessions(&self, db: &PgPool, sessions: &[(SessionId, OrgId)]) -> Result<usize, SearchError> {
        match self {
            SearchBackend::Postgres => {
                for (session, org) in sessions {
                    search::index_session(db, *org, *session).await?;
                }
            }
            SearchBackend::Meili(m) => {
                for chunk in sessions.chunks(500) {
                    let mut docs = Vec::with_capacity(chunk.len());
                    for (session, org) in chunk {
                        if let Some(row) = search::document(db, *org, *session).await? {
                            docs.push(row.into());
                        }
                    }
                    m.upsert(&docs).await?;
                }
            }
        }
        Ok(sessions.len())
    }

    pub async fn search(
        &self,
        db: &PgPool,
        org: OrgId,
        q: &str,
        filter: &SessionFilter,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<Hit>, i64), SearchError> {
        match self {
            SearchBackend::Postgres => Ok(search::search(db, org, q, filter, page, per_page).await?),
            SearchBackend::Meili(m) => m.search(org, q, filter, page, per_page).await,
        }
    }

    /// For readiness: `Ok` when the backend answers.
    pub async fn healthy(&self) -> Result<(), SearchError> {
        match self {
            SearchBackend::Postgres => Ok(()),
            SearchBackend::Meili(m) => m.healthy().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_values_are_quoted_literals_and_the_org_comes_first() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        let org = OrgId(uuid::Uuid::nil());
        let f = SessionFilter {
            agent_name: Some(r#"x" OR org_id = "other"#.into()),
            repo_slug: Some("acme/api".into()),
            ..SessionFilter::default()
        };
        let expr = filter_expression(org, &f);
        assert!(expr.starts_with(&format!("org_id = \"{org}\" AND ")), "{expr}");
        assert!(expr.contains(r#"agent_name = "x\" OR org_id = \"other""#), "{expr}");
    }
}
