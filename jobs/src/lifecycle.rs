//! How a job attempt ends, as every job kind reports it to the worker's lifecycle wrapper.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Bad data or a missing referent: retrying cannot help, the job fails at once.
    #[error("{0}")]
    Permanent(String),
    /// The database or another service was unavailable: retry with backoff.
    #[error("{0}")]
    Retryable(String),
}

impl From<crate::search_index::SearchError> for JobError {
    fn from(e: crate::search_index::SearchError) -> Self {
        match e {
            crate::search_index::SearchError::Store(e) => e.into(),
            unavailable => JobError::Retryable(unavailable.to_string()),
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => JobError::Permanent(format!("{what} not found")),
            StoreError::Conflict(msg) | StoreError::Invalid(msg) => JobError::Permanent(msg),
            // Anything else from the database (connection, timeout, lock) is worth another try;
            // data errors are handled inside the job so they never reach this point.
            other => JobError::Retryable(other.to_string()),
        }
    }
}
