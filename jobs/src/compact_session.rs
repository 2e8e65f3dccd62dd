//! `compact_session`: a digest of a session so far, for one compaction record (the handler comes
//! with the worker-fleet work; the payload is fixed now so jobs queued today still decode).

use serde::{Deserialize, Serialize};

use crate::ids::{CompactionId, OrgId, SessionId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactSession {
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub compaction_id: CompactionId,
    #[serde(default)]
    pub request_id: Option<String>,
}
