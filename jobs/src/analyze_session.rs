//! `analyze_session`: the analysis of a session's events, queued when it ends (its handler comes
//! with the worker-fleet work; the payload is fixed now so jobs queued today still decode).

use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, SessionId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyzeSession {
    pub org_id: OrgId,
    pub session_id: SessionId,
    /// Why: `end`, `late_events`, `idle`.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub request_id: Option<String>,
}
