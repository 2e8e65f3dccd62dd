//! c12: every payload of every real Claude Code hook log in `../shared/corpus/real` goes through
//! `crewkit hook` into a running stack: 0 refused, one session per distinct `session_id`, every
//! payload stored once, in order. Payloads that name no session (the bare `{"message": …}`
//! entries) are reported by the forwarder and not stored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crewkit_jobs::domain::json_repair::repair_json;
use crewkit_testkit::{TestApp, shared_dir};
use serde_json::Value;

use super::{run_hook, spooled, temp_home};

/// Splits a JSON array into the raw bytes of its elements, without decoding any string, so each
/// payload reaches the forwarder byte for byte as the hook logger wrote it (lone surrogates too).
fn split_array(bytes: &[u8]) -> Vec<&[u8]> {
    let (mut depth, mut in_str, mut esc, mut start) = (0usize, false, false, None);
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                if depth == 1 && start.is_none() {
                    start = Some(i);
                }
                depth += 1;
            }
            b']' | b'}' => {
                depth -= 1;
                if depth == 1
                    && let Some(s) = start.take()
                {
                    out.push(&bytes[s..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

struct HookFile {
    name: String,
    payloads: Vec<Vec<u8>>,
}

/// The hook logs of the corpus: arrays whose entries carry `hook_event_name`. (The transcript
/// `chat.json` and the status-line log hold no hook payloads.)
fn hook_files() -> Option<Vec<HookFile>> {
    let dir: PathBuf = shared_dir().join("corpus/real");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()? {
        let path = entry.ok()?.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let payloads: Vec<Vec<u8>> = split_array(&bytes).into_iter().map(<[u8]>::to_vec).collect();
        let is_hook_log = payloads
            .iter()
            .any(|p| serde_json::from_str::<Value>(&repair_json(p)).is_ok_and(|v| v.get("hook_event_name").is_some()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if is_hook_log {
            files.push(HookFile { name, payloads });
        } else {
            println!("corpus: {name} holds no hook payloads; not piped");
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Some(files)
}

fn parsed(p: &[u8]) -> Value {
    serde_json::from_str(&repair_json(p)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c12_every_real_hook_payload_is_accepted_and_stored_once_in_order() {
    let Some(files) = hook_files() else {
        println!(
            "SKIPPED c12: {} is absent, so the real corpus cannot be replayed",
            shared_dir().join("corpus/real").display()
        );
        return;
    };
    assert!(!files.is_empty(), "the corpus folder holds no hook logs");
    let app = std::sync::Arc::new(TestApp::spawn().await);

    // Each file is piped in order, one hook call per payload; the files go in parallel.
    let mut tasks = Vec::new();
    for file in files {
        let app = app.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let home = temp_home();
            let runs: Vec<_> = file.payloads.iter().map(|p| run_hook(&app, &app.base, &home, p)).collect();
            let left = spooled(&home);
            let _ = std::fs::remove_dir_all(&home);
            (file, runs, left)
        }));
    }

    let mut expected: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut bare = 0;
    let mut per_file: Vec<(String, BTreeMap<String, Vec<Value>>)> = Vec::new();
    for t in tasks {
        let (file, runs, left) = t.await.unwrap();
        assert_eq!(left, 0, "{}: events left in the spool", file.name);
        let mut mine: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (p, run) in file.payloads.iter().zip(&runs) {
            assert_eq!(run.code, Some(0), "{}", file.name);
            let v = parsed(p);
            match v.get("session_id").and_then(Value::as_str) {
                Some(sid) => {
                    assert_eq!(run.stderr, "", "{}: a payload was refused or spooled", file.name);
                    expected.entry(sid.to_string()).or_default().push(v.clone());
                    mine.entry(sid.to_string()).or_default().push(v);
                }
                None => {
                    assert!(run.stderr.contains("no session_id"), "{}: {}", file.name, run.stderr);
                    bare += 1;
                }
            }
        }
        per_file.push((file.name, mine));
    }
    let total: usize = expected.values().map(Vec::len).sum();
    println!("corpus: {total} payloads in {} sessions, {bare} without a session", expected.len());

    // Wait until the workers have stored everything (or the deadline).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(&app.db).await.unwrap();
        if stored as usize >= total || Instant::now() > deadline {
            assert_eq!(stored as usize, total, "stored events = payloads with a session");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sessions,): (i64,) = sqlx::query_as("SELECT count(*) FROM conversations").fetch_one(&app.db).await.unwrap();
    assert_eq!(sessions as usize, expected.len(), "one session per distinct session_id");
    let (failed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM jobs WHERE status <> 'succeeded'").fetch_one(&app.db).await.unwrap();
    assert_eq!(failed, 0, "every persist job succeeded");

    // Within each file, each session's events are stored in the order they were piped.
    let mut stored_by_session: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for sid in expected.keys() {
        stored_by_session.insert(sid.clone(), app.events(sid).await.into_iter().map(|e| e["data"].clone()).collect());
    }
    for (name, mine) in &per_file {
        for (sid, payloads) in mine {
            let stored = &stored_by_session[sid];
            let wanted: BTreeSet<String> = payloads.iter().map(Value::to_string).collect();
            let order: Vec<&Value> = stored.iter().filter(|d| wanted.contains(&d.to_string())).collect();
            assert_eq!(order.len(), payloads.len(), "{name} / {sid}: count");
            assert!(order.iter().zip(payloads).all(|(a, b)| *a == b), "{name} / {sid}: order differs");
        }
    }
}
