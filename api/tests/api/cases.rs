//! The cases of `../shared/cases` that the foundation covers, each named after what it shows.

use crewkit_testkit::{TestApp, case};
use serde_json::{Value, json};

async fn session(app: &TestApp, agent_sid: &str) -> String {
    app.create_session(json!({ "agent_session_id": agent_sid })).await["id"].as_str().unwrap().to_string()
}

fn data_of<'a>(events: &'a [Value], tool_use_id: &str) -> &'a Value {
    &events.iter().find(|e| e["tool_use_id"] == tool_use_id).expect("event stored")["data"]
}

#[tokio::test]
async fn c01_lone_surrogates_are_stored_as_replacement_characters() {
    let app = TestApp::spawn().await;
    let sid = session(&app, "0f4c2a51-8d3e-4b7a-9c11-5e2f7a9b3c10").await;
    let accepted = app.ingest_and_wait(&sid, &case("c01-lone-surrogates.body.json")).await;
    assert_eq!(accepted["accepted"], 2);
    assert_eq!(accepted["rejected"], json!([]));
    let events = app.events(&sid).await;
    assert_eq!(events.len(), 2);
    assert_eq!(data_of(&events, "toolu_01A")["tool_input"]["command"], "echo \u{e2}\u{2022}\u{fffd} done");
    assert_eq!(data_of(&events, "toolu_01B")["tool_input"]["file_path"], "C:\\Users\\user\\Project\\a\u{fffd}.txt");
}

#[tokio::test]
async fn c02_a_nul_byte_is_stored_as_a_replacement_character_and_the_job_succeeds_first_time() {
    let app = TestApp::spawn().await;
    let sid = session(&app, "c02").await;
    let (status, accepted) = app.ingest(&sid, &case("c02-nul-byte.body.json")).await;
    assert_eq!(status, 202);
    assert_eq!(accepted["accepted"], 2);
    let job = app.wait_for_job(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempts"], 1, "no retry loop: {job}");
    let events = app.events(&sid).await;
    assert_eq!(data_of(&events, "toolu_02A")["tool_response"]["stdout"], "abc\u{fffd}def");
}

#[tokio::test]
async fn c03_duplicate_ids_are_stored_once_however_often_and_however_concurrently_they_are_sent() {
    let app = TestApp::spawn().await;
    let sid = session(&app, "c03").await;
    let body = case("c03-duplicate-ids.body.json");
    app.ingest_and_wait(&sid, &body).await;
    app.ingest_and_wait(&sid, &body).await;
    // Five connections at once.
    futures::future::join_all((0..5).map(|_| app.ingest_and_wait(&sid, &body))).await;

    let events = app.events(&sid).await;
    let ids: Vec<&str> = events.iter().map(|e| e["client_event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-client-7", "evt-client-8"]);
    assert_eq!(events[0]["data"]["prompt"], "first version", "the first one wins");
    let (_, s) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    assert_eq!(s["event_count"], 2);
}

#[tokio::test]
async fn c04_timestamps_naive_means_utc_offsets_are_honoured_the_far_future_is_flagged_and_garbage_is_rejected_by_index()
 {
    let app = TestApp::spawn().await;
    let sid = session(&app, "c04").await;
    let accepted = app.ingest_and_wait(&sid, &case("c04-timestamps.body.json")).await;
    assert_eq!(accepted["accepted"], 3);
    let rejected = accepted["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["index"], 3);
    assert_eq!(rejected[0]["code"], "invalid_timestamp");

    let events = app.events(&sid).await;
    let by_msg =
        |m: &str| events.iter().find(|e| e["data"]["message"].as_str().unwrap().starts_with(m)).unwrap().clone();
    assert_eq!(by_msg("naive")["timestamp"], "2026-03-10T02:30:00Z");
    assert_eq!(by_msg("offset")["timestamp"], "2026-03-09T21:00:00Z");
    let future = by_msg("far future");
    assert_eq!(future["timestamp"], "2099-01-01T00:00:00Z");
    assert_eq!(future["timestamp_in_future"], true);
    // Ordered by when it was received (now), so after the 2026-03 events, not in 2099.
    assert_eq!(events.last().unwrap()["id"], future["id"]);
    let (_, s) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    assert!(s["last_event_at"].as_str().unwrap() < "2099", "{s}");
}

#[tokio::test]
async fn c05_a_subagent_becomes_one_task_with_its_tool_call_and_its_launching_agent_call() {
    let app = TestApp::spawn().await;
    let sid = session(&app, "7d1e0b6a-2c4f-4e38-8a5b-93c0f1d2e4a7").await;
    app.ingest_and_wait(&sid, &case("c05-subagent-tasks.body.json")).await;

    let (status, h) = app.get(&format!("/{}/sessions/{sid}/hierarchy", app.org)).await;
    assert_eq!(status, 200, "{h}");
    let conv = &h["conversations"][0];
    assert_eq!(conv["id"], sid.as_str());
    let tasks = conv["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let t = &tasks[0];
    assert_eq!(t["external_id"], "a11aa11aa11aa11a");
    assert_eq!(t["agent_type"], "Explore", "SubagentStop's empty agent_type does not erase it");
    assert_eq!(t["started_at"], "2026-04-01T12:00:01Z");
    assert_eq!(t["ended_at"], "2026-04-01T12:00:09Z");
    assert_eq!(t["status"], "completed");
    assert_eq!(t["tool_call_count"], 1, "the Read call counts under the task");
    assert_eq!(t["tool_use_id"], "toolu_05A", "the Agent tool call links to it");
    assert_eq!(t["description"], "Explore the schema");

    let events = app.events(&sid).await;
    let read = events.iter().find(|e| e["tool_use_id"] == "toolu_05B").unwrap();
    assert_eq!(read["task_id"], t["id"]);
    let (_, detail) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    assert_eq!(detail["task_count"], 1);
    assert_eq!(detail["tool_call_count"], 2);
}

#[tokio::test]
async fn c08_a_thousand_events_are_all_persisted_and_one_more_is_refused_whole() {
    let app = TestApp::spawn().await;
    let sid = session(&app, "c08").await;
    let batch = |n: usize| {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"event_type": "PostToolUse", "timestamp": "2026-05-01T00:00:00Z", "id": format!("e{i}"), "data": {"tool_name": "Bash", "i": i}}))
            .collect();
        TestApp::json(json!({ "events": events }))
    };
    let accepted = app.ingest_and_wait(&sid, &batch(1000)).await;
    assert_eq!(accepted["accepted"], 1000);
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 1000);

    let before = app.jobs_pushed("persist_events").await;
    let (status, problem) = app.ingest(&sid, &batch(1001)).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "too_many_events");
    assert_eq!(app.jobs_pushed("persist_events").await, before, "nothing enqueued");
}

#[tokio::test]
async fn c09_sessions_with_the_same_start_time_page_without_overlap() {
    let app = TestApp::spawn_without_worker().await;
    for i in 0..25 {
        app.create_session(json!({ "agent_session_id": format!("c09-{i}"), "started_at": "2026-05-01T10:00:00Z" }))
            .await;
    }
    let mut seen = std::collections::HashSet::new();
    for page in 1..=3 {
        let (status, list) = app.get(&format!("/{}/sessions?per_page=10&page={page}", app.org)).await;
        assert_eq!(status, 200);
        assert_eq!(list["total"], 25);
        assert_eq!(list["total_pages"], 3);
        for s in list["data"].as_array().unwrap() {
            assert!(seen.insert(s["id"].as_str().unwrap().to_string()), "duplicate across pages");
        }
    }
    assert_eq!(seen.len(), 25);
}
