//! `GET /{org_id}/sessions/threads`: conversations grouped by thread.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::models::{Session, UtcTime};
use crate::state::AppState;
use crewkit_jobs::store::sessions;

pub struct ThreadsApi;

/// Related conversations that share context: a conversation and those that resumed, forked or
/// continued it.
#[derive(Debug, Object)]
pub struct Thread {
    /// The thread id: the id of the conversation that started it.
    pub thread_id: String,
    /// Conversations in the thread.
    pub session_count: i64,
    /// The latest activity in any of them.
    pub last_activity_at: UtcTime,
    /// The conversations, oldest first.
    pub sessions: Vec<Session>,
}

/// A page of threads, most recently active first.
#[derive(Debug, Object)]
pub struct ThreadList {
    /// The threads.
    pub data: Vec<Thread>,
    /// This page's number (from 1).
    pub page: u32,
    /// Threads per page.
    pub per_page: u32,
    /// Threads in all.
    pub total: i64,
    /// Number of pages.
    pub total_pages: i64,
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl ThreadsApi {
    /// Threads
    ///
    /// Conversations grouped by thread (related sessions that share context: created with
    /// `parent_session_id`, which the forwarder sets on a resume, fork or compaction), paginated
    /// by thread, newest activity first.
    #[oai(path = "/:org_id/sessions/threads", method = "get", operation_id = "list_threads")]
    async fn threads(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// Page number, from 1.
        #[oai(default = "super::default_page", validator(minimum(value = "1")))]
        page: Query<u32>,
        /// Threads per page, 1 to 100.
        #[oai(default = "super::default_per_page", validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<u32>,
    ) -> Result<Json<ThreadList>, ApiError> {
        let p = auth.for_org(&org_id)?;
        let (threads, total) = sessions::list_threads(&state.db, p.org_id, page.0, per_page.0).await?;
        let ids: Vec<_> = threads.iter().map(|t| t.thread_id).collect();
        let mut members = sessions::sessions_of_threads(&state.db, p.org_id, &ids).await?;
        let data = threads
            .into_iter()
            .map(|t| {
                let (mine, rest): (Vec<_>, Vec<_>) = members.drain(..).partition(|s| s.thread_id == t.thread_id);
                members = rest;
                Thread {
                    thread_id: t.thread_id.to_string(),
                    session_count: t.session_count,
                    last_activity_at: t.last_activity_at.into(),
                    sessions: mine.into_iter().map(Session::from).collect(),
                }
            })
            .collect();
        Ok(Json(ThreadList {
            data,
            page: page.0,
            per_page: per_page.0,
            total,
            total_pages: super::total_pages(total, per_page.0),
        }))
    }
}
