//! `index_session`: writes a session's search document, read fresh from PostgreSQL when the job
//! runs, so however many changes queued it, one run indexes the latest state.
//!
//! Debounce: a trigger sets a per-session key in Redis (`SET NX`, a few seconds) and pushes a
//! delayed job only when it set the key; the job deletes the key before reading, so a change made
//! while it runs queues the next run. A burst of updates is indexed a bounded number of times.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::ids::{OrgId, SessionId};
use crate::lifecycle::JobError;
use crate::queue::{JobKind, Queues};
use crate::search_index::SearchBackend;

/// How long a trigger waits for more changes before the index runs.
pub const DEBOUNCE_SECS: u64 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexSession {
    pub org_id: OrgId,
    pub session_id: SessionId,
    #[serde(default)]
    pub request_id: Option<String>,
    /// Wait until every event batch accepted for the session so far is persisted before reading
    /// it (as analysis does): set by `end`, whose job is queued at once and would otherwise race
    /// the last batch and index the session without its last prompt.
    #[serde(default)]
    pub after_ingestion: bool,
}

fn debounce_key(queues: &Queues, session: SessionId) -> String {
    format!("{}:index-debounce:{session}", queues.prefix())
}

/// Asks for the session to be (re)indexed soon. Failures are logged, not raised: search is
/// derived data, and the reconcile job re-indexes what was missed.
pub async fn request(queues: &Queues, org: OrgId, session: SessionId, request_id: Option<String>) {
    let mut conn = queues.connection();
    let set: Result<Option<String>, _> = redis::cmd("SET")
        .arg(debounce_key(queues, session))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(DEBOUNCE_SECS * 5)
        .query_async(&mut conn)
        .await;
    match set {
        Ok(Some(_)) => {
            let job = IndexSession { org_id: org, session_id: session, request_id, after_ingestion: false };
            if let Err(e) = queues.push_delayed(JobKind::IndexSession, &job, DEBOUNCE_SECS).await {
                tracing::warn!(error = %e, %session, "could not queue index_session");
            }
        }
        Ok(None) => tracing::debug!(%session, "index already pending"),
        Err(e) => tracing::warn!(error = %e, %session, "could not debounce index_session"),
    }
}

/// Indexes the session right away, outside the debounce: for `end`, after which a session changes
/// rarely and users look for it at once. At most one extra run per session.
pub async fn request_now(queues: &Queues, org: OrgId, session: SessionId, request_id: Option<String>) {
    let job = IndexSession { org_id: org, session_id: session, request_id, after_ingestion: true };
    if let Err(e) = queues.push(JobKind::IndexSession, &job).await {
        tracing::warn!(error = %e, %session, "could not queue index_session");
    }
}

/// Runs the job: re-reads the session and upserts its document, in PostgreSQL or in Meilisearch
/// (waiting for the Meilisearch task; a failed task fails the job, which is retried).
#[tracing::instrument(skip_all, fields(session = %job.session_id, engine = backend.engine()))]
pub async fn run(db: &PgPool, queues: &Queues, backend: &SearchBackend, job: &IndexSession) -> Result<(), JobError> {
    let mut conn = queues.connection();
    let _: Result<i64, _> = redis::cmd("DEL").arg(debounce_key(queues, job.session_id)).query_async(&mut conn).await;
    backend.index_session(db, job.org_id, job.session_id).await?;
    Ok(())
}
