//! The spool: events that could not be sent wait here, one file each, until a later call sends
//! them. Files are named `<timestamp>-<event id>.json`, so sorting the names replays them in the
//! order they were read; each event carries its own id, so a replay the server already has is
//! dropped by its deduplication.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event waiting to be sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spooled {
    /// The agent's session id (the payload's `session_id`).
    pub agent_session_id: String,
    /// What to create the session with, if it does not exist yet.
    pub session: Value,
    /// The event, as the ingestion endpoint takes it.
    pub event: Value,
}

pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the entry (atomically: a temp file renamed into place).
    pub fn put(&self, name_hint: &str, entry: &Spooled) -> std::io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{name_hint}.json"));
        let tmp = self.dir.join(format!(".{name_hint}.tmp"));
        fs::write(&tmp, serde_json::to_vec(entry)?)?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Waiting entries, oldest first. Unreadable files are moved aside rather than retried forever.
    pub fn pending(&self) -> Vec<(PathBuf, Spooled)> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| match fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                Some(entry) => Some((p, entry)),
                None => {
                    self.set_aside(&p);
                    None
                }
            })
            .collect()
    }

    pub fn remove(&self, path: &Path) {
        let _ = fs::remove_file(path);
    }

    /// Moves an entry the server refused for good into `rejected/`, where a person can look.
    pub fn set_aside(&self, path: &Path) {
        let dir = self.dir.join("rejected");
        if fs::create_dir_all(&dir).is_ok()
            && let Some(name) = path.file_name()
        {
            let _ = fs::rename(path, dir.join(name));
        }
    }
}
