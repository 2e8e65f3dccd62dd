//! `crewkit hook`: forwards one hook payload from stdin to the API.
//!
//! Hook payloads carry no timestamp and no id, so the forwarder stamps both the moment it reads
//! the payload: a retry from the spool is then the same event, and the server stores it once.
//! It creates the session on first sight of a `session_id` (remembered on disk), flushes older
//! spooled events first (so order is kept), then sends this one. Whatever fails, the event is
//! spooled, the reason goes to stderr, and the process exits 0 within its time budget (default
//! 900 ms): a hook must never block or fail the agent.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{Client, Sent, Target};
use crate::spool::{Spool, Spooled};
use crewkit_jobs::domain::json_repair::repair_json;

const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;
const MAX_BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// API base URL.
    #[arg(long, env = "CREWKIT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (`ck_…`).
    #[arg(long, env = "CREWKIT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Organisation slug or id.
    #[arg(long, env = "CREWKIT_ORG")]
    pub org: Option<String>,
    /// Where unsent events wait (default: ~/.crewkit/spool).
    #[arg(long, env = "CREWKIT_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// The agent's name, sent when a session is created.
    #[arg(long, env = "CREWKIT_AGENT", default_value = "claude-code")]
    pub agent: String,
    /// Total time budget in milliseconds.
    #[arg(long, default_value_t = 900)]
    pub budget_ms: u64,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".crewkit")
}

pub fn main(args: HookArgs) {
    let deadline = Instant::now() + Duration::from_millis(args.budget_ms);
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_PAYLOAD).read_to_end(&mut input) {
        eprintln!("crewkit hook: could not read stdin: {e}");
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crewkit hook: {e}");
            return;
        }
    };
    runtime.block_on(async {
        if tokio::time::timeout_at(deadline.into(), run(&args, &input, deadline)).await.is_err() {
            eprintln!("crewkit hook: out of time; unsent events stay in the spool");
        }
    });
}

/// Turns the raw payload into a spool entry, stamped now. `None` (reported) when it names no session.
pub fn stamp(input: &[u8], agent: &str) -> Result<Spooled, String> {
    let text = repair_json(input);
    let payload: Value = serde_json::from_str(&text).map_err(|e| format!("payload is not JSON ({e}); not recorded"))?;
    let Some(obj) = payload.as_object() else {
        return Err("payload is not a JSON object; not recorded".into());
    };
    let Some(agent_sid) = obj.get("session_id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
        return Err(format!("payload has no session_id (keys: {}); not recorded", keys.join(", ")));
    };
    let event_type = obj.get("hook_event_name").and_then(Value::as_str).unwrap_or("Unknown");
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let id = uuid::Uuid::now_v7().to_string();
    let mut metadata = serde_json::Map::new();
    for key in ["cwd", "source", "model", "transcript_path"] {
        if let Some(v) = obj.get(key) {
            metadata.insert(key.to_string(), v.clone());
        }
    }
    Ok(Spooled {
        agent_session_id: agent_sid.to_string(),
        session: json!({ "agent_session_id": agent_sid, "agent_name": agent, "started_at": now, "metadata": metadata }),
        event: json!({ "id": id, "event_type": event_type, "timestamp": now, "data": payload }),
    })
}

async fn run(args: &HookArgs, input: &[u8], deadline: Instant) {
    let entry = match stamp(input, &args.agent) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("crewkit hook: {msg}");
            return;
        }
    };
    let spool = Spool::new(args.spool_dir.clone().unwrap_or_else(|| home().join("spool")));
    let name = format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%6f"),
        entry.event.get("id").and_then(Value::as_str).unwrap_or_default()
    );
    let (Some(api_key), Some(org)) = (args.api_key.clone(), args.org.clone()) else {
        keep(&spool, &name, &entry, "CREWKIT_API_KEY and CREWKIT_ORG must be set");
        return;
    };
    // The API asked us to wait (429/503 with Retry-After): spool without trying until then.
    if let Some(until) = paused_until(&spool) {
        keep(&spool, &name, &entry, &format!("the API asked to wait until {until}"));
        return;
    }
    let target = Target { url: args.url.clone(), api_key, org };
    let sessions = SessionCache::new(home().join("sessions"), &target);
    let client = Client::new(target, deadline);

    let result = deliver(&client, &sessions, &spool, &name, &entry).await;
    if let Some(secs) = client.retry_after() {
        pause(&spool, secs);
    }
    result
}

async fn deliver(client: &Client, sessions: &SessionCache, spool: &Spool, name: &str, entry: &Spooled) {
    let pending = spool.pending();
    if !pending.is_empty()
        && let Err(why) = flush(client, sessions, spool, pending).await
    {
        keep(spool, name, entry, &format!("spooled events could not be sent yet ({why})"));
        return;
    }
    let event = std::slice::from_ref(&entry.event);
    if let Err(why) = send(client, sessions, &entry.agent_session_id, &entry.session, event).await {
        match why {
            Outcome::Refused(msg) => eprintln!("crewkit hook: the API refused the event: {msg}"),
            Outcome::Failed(msg) => keep(spool, name, entry, &msg),
        }
    }
}

fn pause_file(spool: &Spool) -> PathBuf {
    spool.dir().join(".retry-after")
}

/// Remembers until when the API asked us not to send (Unix seconds in a small file).
fn pause(spool: &Spool, secs: u64) {
    let until = Utc::now().timestamp() + secs.min(3600) as i64;
    let _ = std::fs::create_dir_all(spool.dir());
    let _ = std::fs::write(pause_file(spool), until.to_string());
}

fn paused_until(spool: &Spool) -> Option<chrono::DateTime<Utc>> {
    let until: i64 = std::fs::read_to_string(pause_file(spool)).ok()?.trim().parse().ok()?;
    let until = chrono::DateTime::from_timestamp(until, 0)?;
    (until > Utc::now()).then_some(until)
}

fn keep(spool: &Spool, name: &str, entry: &Spooled, why: &str) {
    match spool.put(name, entry) {
        Ok(_) => eprintln!("crewkit hook: {why}; event spooled in {}", spool.dir().display()),
        Err(e) => eprintln!("crewkit hook: {why}; and the spool is not writable ({e}): event lost"),
    }
}

enum Outcome {
    Refused(String),
    Failed(String),
}

/// Sends spooled entries, oldest first, grouped into batches per session. Stops at the first
/// failure so that order is kept; refused batches are set aside.
async fn flush(
    client: &Client,
    sessions: &SessionCache,
    spool: &Spool,
    pending: Vec<(PathBuf, Spooled)>,
) -> Result<(), String> {
    let mut i = 0;
    while i < pending.len() {
        let sid = pending[i].1.agent_session_id.clone();
        let group: Vec<&(PathBuf, Spooled)> =
            pending[i..].iter().take_while(|(_, e)| e.agent_session_id == sid).take(MAX_BATCH).collect();
        i += group.len();
        let events: Vec<Value> = group.iter().map(|(_, e)| e.event.clone()).collect();
        match send(client, sessions, &sid, &group[0].1.session, &events).await {
            Ok(()) => group.iter().for_each(|(p, _)| spool.remove(p)),
            Err(Outcome::Refused(msg)) => {
                eprintln!("crewkit hook: the API refused spooled events ({msg}); set aside in rejected/");
                group.iter().for_each(|(p, _)| spool.set_aside(p));
            }
            Err(Outcome::Failed(msg)) => return Err(msg),
        }
    }
    Ok(())
}

async fn send(
    client: &Client,
    sessions: &SessionCache,
    agent_sid: &str,
    session: &Value,
    events: &[Value],
) -> Result<(), Outcome> {
    for retry in [false, true] {
        let session_id = match sessions.get(agent_sid) {
            Some(id) if !retry => id,
            _ => {
                let mut body = session.clone();
                if let Some(url) = remote_url(session).await {
                    body["remote_url"] = Value::String(url);
                }
                let cwd = session.pointer("/metadata/cwd").and_then(Value::as_str).unwrap_or_default();
                link_to_previous(&mut body, sessions.last_in(cwd));
                let (id, run) = match client.ensure_session(&body).await {
                    // The remembered previous conversation is unknown to this server: no link.
                    Err(Sent::Refused(404, _))
                        if body.get("run_id").is_some() || body.get("parent_session_id").is_some() =>
                    {
                        if let Some(o) = body.as_object_mut() {
                            o.remove("run_id");
                            o.remove("parent_session_id");
                        }
                        client.ensure_session(&body).await.map_err(outcome)?
                    }
                    other => other.map_err(outcome)?,
                };
                sessions.put(agent_sid, &id);
                sessions.set_last_in(cwd, &id, &run);
                id
            }
        };
        match client.send_events(&session_id, events).await {
            Sent::Ok(_) => return Ok(()),
            // The remembered session is gone (say, a fresh server): create it again, once.
            Sent::Refused(404, _) if !retry => sessions.forget(agent_sid),
            other => return Err(outcome(other)),
        }
    }
    Err(Outcome::Failed("session could not be created".into()))
}

fn outcome(s: Sent) -> Outcome {
    match s {
        Sent::Refused(status @ (400 | 413 | 422), body) => Outcome::Refused(format!("{status}: {body}")),
        Sent::Refused(status, body) => Outcome::Failed(format!("{status}: {body}")),
        Sent::Failed(msg) => Outcome::Failed(msg),
        Sent::Ok(_) => Outcome::Failed("unexpected response".into()),
    }
}

/// A new conversation that continues the previous one in the same directory: `/clear` starts a
/// new conversation in the same run; a resume, fork or compaction continues the previous
/// conversation's thread (and a compaction stays in its run).
fn link_to_previous(body: &mut Value, previous: Option<(String, String)>) {
    let Some((prev_id, prev_run)) = previous else {
        return;
    };
    match body.pointer("/metadata/source").and_then(Value::as_str) {
        Some("clear") => body["run_id"] = Value::String(prev_run),
        Some("compact") => {
            body["run_id"] = Value::String(prev_run);
            body["parent_session_id"] = Value::String(prev_id);
        }
        Some("resume" | "fork") => body["parent_session_id"] = Value::String(prev_id),
        _ => {}
    }
}

/// The `origin` remote of the payload's working directory, if it is a git checkout.
async fn remote_url(session: &Value) -> Option<String> {
    let cwd = session.pointer("/metadata/cwd").and_then(Value::as_str)?;
    let out = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::process::Command::new("git").args(["-C", cwd, "remote", "get-url", "origin"]).output(),
    )
    .await
    .ok()?
    .ok()?;
    let url = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !url.is_empty()).then_some(url)
}

/// Remembers which server session an agent session id maps to, one small file each.
struct SessionCache {
    dir: PathBuf,
    scope: String,
}

impl SessionCache {
    fn new(dir: PathBuf, target: &Target) -> Self {
        Self { dir, scope: format!("{}|{}", target.url.trim_end_matches('/'), target.org) }
    }

    fn path(&self, agent_sid: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(format!("{}|{agent_sid}", self.scope).as_bytes()));
        self.dir.join(&key[..32])
    }

    fn get(&self, agent_sid: &str) -> Option<String> {
        std::fs::read_to_string(self.path(agent_sid))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.starts_with("ses_"))
    }

    fn put(&self, agent_sid: &str, id: &str) {
        let _ = std::fs::create_dir_all(&self.dir);
        let _ = std::fs::write(self.path(agent_sid), id);
    }

    fn forget(&self, agent_sid: &str) {
        let _ = std::fs::remove_file(self.path(agent_sid));
    }

    fn last_path(&self, cwd: &str) -> PathBuf {
        self.path(&format!("last-in-dir|{cwd}"))
    }

    /// The conversation last created from this directory: its id and run id.
    fn last_in(&self, cwd: &str) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.last_path(cwd)).ok()?;
        let (id, run) = text.trim().split_once(' ')?;
        Some((id.to_string(), run.to_string()))
    }

    fn set_last_in(&self, cwd: &str, id: &str, run: &str) {
        let _ = std::fs::create_dir_all(&self.dir);
        let _ = std::fs::write(self.last_path(cwd), format!("{id} {run}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_stamped_with_an_id_and_a_time() {
        let e = stamp(br#"{"session_id":"s1","hook_event_name":"Stop","cwd":"/tmp"}"#, "claude-code").unwrap();
        assert_eq!(e.agent_session_id, "s1");
        assert_eq!(e.event["event_type"], "Stop");
        assert!(e.event["id"].as_str().unwrap().len() == 36);
        assert!(e.event["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e.session["metadata"]["cwd"], "/tmp");
    }

    #[test]
    fn a_payload_without_a_session_is_reported_not_sent() {
        let err = stamp(br#"{"message":"Test notification"}"#, "claude-code").unwrap_err();
        assert!(err.contains("no session_id") && err.contains("message"), "{err}");
        assert!(stamp(b"not json", "claude-code").is_err());
    }

    #[test]
    fn a_new_conversation_links_to_the_previous_one_by_its_source() {
        let prev = || Some(("ses_prev".to_string(), "run_prev".to_string()));
        let body = |source: &str| json!({"metadata": {"source": source}});
        let mut b = body("clear");
        link_to_previous(&mut b, prev());
        assert_eq!((b["run_id"].as_str(), b.get("parent_session_id")), (Some("run_prev"), None));
        let mut b = body("resume");
        link_to_previous(&mut b, prev());
        assert_eq!((b.get("run_id"), b["parent_session_id"].as_str()), (None, Some("ses_prev")));
        let mut b = body("compact");
        link_to_previous(&mut b, prev());
        assert_eq!((b["run_id"].as_str(), b["parent_session_id"].as_str()), (Some("run_prev"), Some("ses_prev")));
        let mut b = body("startup");
        link_to_previous(&mut b, prev());
        assert_eq!(b, body("startup"));
    }

    #[test]
    fn lone_surrogates_in_a_payload_are_repaired_before_sending() {
        let e = stamp(br#"{"session_id":"s","tool_input":{"command":"\udc90"}}"#, "claude-code").unwrap();
        assert_eq!(e.event["data"]["tool_input"]["command"], "\u{fffd}");
    }
}
