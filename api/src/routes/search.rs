//! `GET /{org_id}/sessions/search`: full text over summaries, titles, prompts, files, repository
//! and metadata, from the documents the `index_session` job writes.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::models::{Session, SessionStatus};
use crate::state::AppState;
use crewkit_jobs::search_index::SearchError;
use crewkit_jobs::store::sessions;

pub struct SearchApi;

/// Matched fragments, with the matches in `<em>…</em>`.
#[derive(Debug, Object)]
pub struct Highlights {
    /// From the title.
    #[oai(skip_serializing_if_is_none)]
    pub title: Option<String>,
    /// From the summary.
    #[oai(skip_serializing_if_is_none)]
    pub summary: Option<String>,
    /// From the prompts.
    #[oai(skip_serializing_if_is_none)]
    pub prompts: Option<String>,
}

/// One matching session.
#[derive(Debug, Object)]
pub struct SearchHit {
    #[oai(flatten)]
    pub session: Session,
    /// Relevance; higher is better.
    pub score: f32,
    /// Where it matched.
    pub highlights: Highlights,
}

/// A page of search results, best first.
#[derive(Debug, Object)]
pub struct SearchResults {
    /// The hits.
    pub data: Vec<SearchHit>,
    /// This page's number (from 1).
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Matches over all pages.
    pub total: i64,
    /// Number of pages.
    pub total_pages: i64,
    /// The backend that answered: `postgres` (embedded full text) or `meilisearch`.
    pub engine: String,
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl SearchApi {
    /// Search
    ///
    /// Full-text search across session summaries, titles, prompts, files, repository and
    /// metadata, typo-tolerant, with the list's filters. Sessions are searchable once indexed
    /// (a few seconds after a change). Never returns another organisation's sessions.
    #[oai(path = "/:org_id/sessions/search", method = "get", operation_id = "search_sessions")]
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// What to look for (1 to 512 characters).
        #[oai(validator(min_length = 1, max_length = 512))]
        q: Query<String>,
        /// Page number, from 1.
        #[oai(default = "super::default_page", validator(minimum(value = "1")))]
        page: Query<u32>,
        /// Items per page, 1 to 100.
        #[oai(default = "super::default_per_page", validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<u32>,
        /// Only sessions of this project (`proj_…`).
        project_id: Query<Option<String>>,
        /// Only sessions of this repository slug.
        repo: Query<Option<String>>,
        /// Only sessions of this agent.
        agent_name: Query<Option<String>>,
        /// Only the caller's own sessions.
        #[oai(default)]
        current_user_only: Query<bool>,
        /// Only sessions in this status.
        status: Query<Option<SessionStatus>>,
        /// Only sessions started at or after this time (RFC 3339 or a date).
        started_after: Query<Option<String>>,
        /// Only sessions started before this time (RFC 3339 or a date).
        started_before: Query<Option<String>>,
    ) -> Result<Json<SearchResults>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let q = q.0.trim().to_string();
        if q.is_empty() {
            return Err(ApiError::invalid("q", "invalid_parameter", "must not be blank"));
        }
        let filter = super::ListParams {
            project_id: project_id.0,
            repo: repo.0,
            agent_name: agent_name.0,
            current_user_only: current_user_only.0,
            status: status.0,
            agent_session_id: None,
            started_after: started_after.0,
            started_before: started_before.0,
        }
        .into_filter(p)?;
        let (hits, total) =
            state.search.search(&state.db, p.org_id, &q, &filter, page.0, per_page.0).await.map_err(|e| match e {
                SearchError::Store(e) => ApiError::from(e),
                unavailable => {
                    tracing::warn!(error = %unavailable, "search backend unavailable");
                    ApiError::unavailable("search is unavailable right now; retry later", 5)
                }
            })?;
        let ids: Vec<_> = hits.iter().map(|h| h.session_id).collect();
        let rows = sessions::sessions_by_ids(&state.db, p.org_id, &ids).await?;
        let data = rows
            .into_iter()
            .zip(hits)
            .map(|(row, hit)| SearchHit {
                session: row.into(),
                score: hit.score,
                highlights: Highlights {
                    title: hit.title_highlight,
                    summary: hit.summary_highlight,
                    prompts: hit.prompts_highlight,
                },
            })
            .collect();
        Ok(Json(SearchResults {
            data,
            page: page.0,
            per_page: per_page.0,
            total,
            total_pages: super::total_pages(total, per_page.0),
            engine: state.search.engine().to_string(),
        }))
    }
}
