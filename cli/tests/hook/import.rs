//! `crewkit import`: transcripts become sessions with their events and metrics, once.

use std::process::Command;
use std::time::{Duration, Instant};

use crewkit_testkit::{TestApp, shared_dir};

fn import(app: &TestApp, path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crewkit"))
        .arg("import")
        .arg(path)
        .env("CREWKIT_URL", &app.base)
        .env("CREWKIT_API_KEY", &app.api_key)
        .env("CREWKIT_ORG", &app.org)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn stored_events(app: &TestApp, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(&app.db).await.unwrap();
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn c06_a_split_message_is_one_call_priced_with_one_hour_cache_writes_and_a_rerun_adds_nothing() {
    let app = TestApp::spawn().await;
    let path = shared_dir().join("cases/c06-transcript-split-message.jsonl");
    for run in 0..2 {
        let (code, out, err) = tokio::task::block_in_place(|| import(&app, &path));
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "imported 1 session, 2 events sent, 3310 tokens, $0.01683", "run {run}");
        assert_eq!(stored_events(&app, 2).await, 2, "run {run}: no duplicates");
    }
    let (_, list) =
        app.get(&format!("/{}/sessions?agent_session_id=7d1e0b6a-2c4f-4e38-8a5b-93c0f1d2e4a7", app.org)).await;
    let s = &list["data"][0];
    assert_eq!(s["model_metrics"]["cost_usd"].to_string(), "0.01683");
    assert_eq!(s["model_metrics"]["output_tokens"], 300);
    assert_eq!(s["started_at"], "2026-04-01T12:00:00Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_transcript_keeps_the_last_lines_usage_of_each_message() {
    let path = shared_dir()
        .join("corpus/real/SantiagoCoronado__pragma-web-design-test__4698259d-c5d2-4fab-89f8-9fdf918ee2b5_pre_compact_manual_20260403_143731.jsonl");
    if !path.exists() {
        println!("SKIPPED: {} is absent", path.display());
        return;
    }
    let app = TestApp::spawn().await;
    let (code, out, err) = tokio::task::block_in_place(|| import(&app, &path));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("imported 1 session,"), "{out}");
    let (_, list) = app.get(&format!("/{}/sessions", app.org)).await;
    let s = &list["data"][0];
    // The corpus notes: summed output tokens are 35,255 when the last line of each message wins.
    assert_eq!(s["model_metrics"]["output_tokens"], 35255, "{s}");
    assert_eq!(s["metadata"]["source"], "import");
}
