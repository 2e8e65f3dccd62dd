//! Each job kind's result, on c05 and on a real corpus session.

use std::collections::{BTreeMap, BTreeSet};

use crewkit_jobs::domain::json_repair::repair_json;
use crewkit_testkit::{TestApp, case, shared_dir};
use serde_json::{Value, json};

use super::{eventually, job_in};

async fn end(app: &TestApp, sid: &str, body: Value) -> String {
    let (status, ended) = app.post(&format!("/{}/sessions/{sid}/end", app.org), &body).await;
    assert_eq!(status, 202, "{ended}");
    ended["job"]["id"].as_str().unwrap().to_string()
}

async fn analysis(app: &TestApp, sid: &str) -> Value {
    app.get(&format!("/{}/sessions/{sid}", app.org)).await.1
}

#[tokio::test]
async fn the_analysis_of_c05_counts_its_tools_and_its_subagent() {
    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({"agent_session_id": "c05"})).await["id"].as_str().unwrap().to_string();
    app.ingest_and_wait(&sid, &case("c05-subagent-tasks.body.json")).await;
    let job = end(&app, &sid, json!({})).await;
    let done = job_in(&app, &job, "succeeded", 30).await;
    assert_eq!(done["attempts"], 1);
    let s = analysis(&app, &sid).await;
    let a = &s["analysis"];
    assert_eq!(a["tool_calls"]["by_tool"], json!({"Agent": 1, "Read": 1}), "{a}");
    assert_eq!(a["files"]["read"], json!(["/home/user/app/schema.sql"]));
    assert_eq!(a["subagents"]["count"], 1);
    assert_eq!(a["subagents"]["by_type"], json!({"Explore": 1}));
    assert_eq!(a["outcome"], "completed");
    assert_eq!(a["event_count"], 5);
    // 12:00:00 → 12:00:10, no gap over five minutes.
    assert_eq!(a["active_seconds"], 10.0);

    // compact_session on c05: nothing changed or run; the subagent's report is a decision.
    let (_, c) = app.post(&format!("/{}/sessions/{sid}/compact", app.org), &json!({})).await;
    job_in(&app, c["job"]["id"].as_str().unwrap(), "succeeded", 30).await;
    let (_, list) = app.get(&format!("/{}/sessions/{sid}/compactions", app.org)).await;
    let d = &list["data"][0]["digest"];
    assert_eq!((d["files_changed"].clone(), d["commands"].clone()), (json!([]), json!([])));
    assert_eq!(d["decisions"], json!(["Found 3 tables."]));

    // index_session on c05: found by the file its subagent read.
    eventually(20, "c05 to be searchable", || async {
        let (_, res) = app.get(&format!("/{}/sessions/search?q=schema.sql", app.org)).await;
        (res["data"][0]["id"] == sid.as_str()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_analysis_of_a_real_session_matches_its_hook_log() {
    let path = shared_dir().join("corpus/real/SantiagoCoronado__pragma-web-design-test__pre_tool_use.json");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("SKIPPED: {} is absent", path.display());
        return;
    };
    let payloads: Vec<Value> = serde_json::from_str(&repair_json(&bytes)).unwrap();
    let mut by_session: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in payloads {
        by_session.entry(p["session_id"].as_str().unwrap().to_string()).or_default().push(p);
    }
    let (agent_sid, payloads) = by_session.into_iter().max_by_key(|(_, v)| v.len()).unwrap();
    let mut tools: BTreeMap<String, i64> = BTreeMap::new();
    let mut read = BTreeSet::new();
    let mut changed = BTreeSet::new();
    for p in &payloads {
        *tools.entry(p["tool_name"].as_str().unwrap().to_string()).or_default() += 1;
        let path = p["tool_input"]["file_path"].as_str().map(str::to_string);
        match (p["tool_name"].as_str().unwrap(), path) {
            ("Read", Some(f)) => {
                read.insert(f);
            }
            ("Edit" | "MultiEdit" | "Write" | "NotebookEdit", Some(f)) => {
                changed.insert(f);
            }
            _ => {}
        }
    }

    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({"agent_session_id": agent_sid})).await["id"].as_str().unwrap().to_string();
    let events: Vec<Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": format!("corpus-{i}"), "event_type": "PreToolUse", "timestamp": format!("2026-04-03T10:{:02}:{:02}Z", i / 60, i % 60), "data": p}))
        .collect();
    app.ingest_and_wait(&sid, &TestApp::json(json!({"events": events}))).await;
    let job = end(&app, &sid, json!({})).await;
    job_in(&app, &job, "succeeded", 30).await;
    let a = analysis(&app, &sid).await["analysis"].clone();
    let counted: BTreeMap<String, i64> = serde_json::from_value(a["tool_calls"]["by_tool"].clone()).unwrap();
    assert_eq!(counted, tools);
    assert_eq!(a["tool_calls"]["total"], payloads.len());
    let files: BTreeSet<String> = serde_json::from_value(a["files"]["read"].clone()).unwrap();
    assert_eq!(files, read);
    assert_eq!(a["commands"]["count"], tools.get("Bash").copied().unwrap_or(0));

    // compact_session on the same real session: the digest lists exactly the files it changed.
    let (_, c) = app.post(&format!("/{}/sessions/{sid}/compact", app.org), &json!({})).await;
    job_in(&app, c["job"]["id"].as_str().unwrap(), "succeeded", 30).await;
    let (_, list) = app.get(&format!("/{}/sessions/{sid}/compactions", app.org)).await;
    let digest = &list["data"][0]["digest"];
    let files: BTreeSet<String> = serde_json::from_value(digest["files_changed"].clone()).unwrap();
    assert_eq!(files, changed);
    assert_eq!(digest["commands"].as_array().unwrap().len() as i64, tools.get("Bash").copied().unwrap_or(0).min(50));
    assert!(list["data"][0]["size_after"].as_i64() < list["data"][0]["size_before"].as_i64(), "a digest is smaller");

    // index_session on it: found by a file it changed.
    let file = changed.iter().next().expect("the session changed files").rsplit('/').next().unwrap().to_string();
    eventually(20, "the real session to be searchable by a file it changed", || async {
        let (_, res) = app.get(&format!("/{}/sessions/search?q={file}", app.org)).await;
        res["data"].as_array().unwrap().iter().any(|h| h["id"] == sid.as_str()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_compaction_digests_the_session_and_a_pre_compact_event_asks_for_one() {
    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let events = json!({"events": [
        {"event_type": "UserPromptSubmit", "timestamp": "2026-04-01T12:00:00Z", "data": {"prompt": "add a migration for users"}},
        {"event_type": "PreToolUse", "timestamp": "2026-04-01T12:00:01Z", "data": {"tool_name": "Write", "tool_use_id": "w1", "tool_input": {"file_path": "/app/migrations/1.sql", "content": "CREATE TABLE users ();"}}},
        {"event_type": "PreToolUse", "timestamp": "2026-04-01T12:00:02Z", "data": {"tool_name": "Bash", "tool_use_id": "b1", "tool_input": {"command": "cargo test"}}},
        {"event_type": "PostToolUseFailure", "timestamp": "2026-04-01T12:00:03Z", "data": {"tool_name": "Bash", "tool_use_id": "b1", "error": "1 test failed"}},
        {"event_type": "PreToolUse", "timestamp": "2026-04-01T12:00:04Z", "data": {"tool_name": "TodoWrite", "tool_use_id": "t1", "tool_input": {"todos": [{"content": "write migration", "status": "completed"}, {"content": "fix failing test", "status": "pending"}]}}},
        {"event_type": "Stop", "timestamp": "2026-04-01T12:00:05Z", "data": {"last_assistant_message": "Migration added; one test still fails."}}
    ]});
    app.ingest_and_wait(&sid, &TestApp::json(events)).await;
    let (_, c) = app.post(&format!("/{}/sessions/{sid}/compact", app.org), &json!({})).await;
    job_in(&app, c["job"]["id"].as_str().unwrap(), "succeeded", 30).await;
    let (_, list) = app.get(&format!("/{}/sessions/{sid}/compactions", app.org)).await;
    let cmp = &list["data"][0];
    assert_eq!(cmp["status"], "succeeded", "{cmp}");
    let d = &cmp["digest"];
    assert_eq!(d["goals"], json!(["add a migration for users"]));
    assert_eq!(d["files_changed"], json!(["/app/migrations/1.sql"]));
    assert_eq!(d["commands"], json!([{"command": "cargo test", "failed": true}]));
    assert_eq!(d["errors"][0]["error"], "1 test failed");
    assert_eq!(d["open_items"], json!(["fix failing test"]));
    assert_eq!(d["decisions"], json!(["Migration added; one test still fails."]));
    assert!(cmp["last_event_seq"].as_i64() > cmp["first_event_seq"].as_i64());
    assert!(cmp["size_before"].as_i64().unwrap() > 0 && cmp["size_after"].as_i64().unwrap() > 0);

    app.ingest_and_wait(
        &sid,
        &TestApp::json(json!({"events": [{"event_type": "PreCompact", "data": {"trigger": "auto"}}]})),
    )
    .await;
    let cmp = eventually(20, "a pre_compact compaction", || async {
        let (_, list) = app.get(&format!("/{}/sessions/{sid}/compactions", app.org)).await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["trigger"] == "pre_compact" && c["status"] == "succeeded")
            .cloned()
    })
    .await;
    assert!(cmp["request_id"].as_str().unwrap().starts_with("pre_compact:"));
}

#[tokio::test]
async fn late_events_after_the_end_make_a_new_analysis() {
    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    app.ingest_and_wait(
        &sid,
        &TestApp::json(json!({"events": [{"event_type": "PreToolUse", "data": {"tool_name": "Read"}}]})),
    )
    .await;
    let job = end(&app, &sid, json!({})).await;
    job_in(&app, &job, "succeeded", 30).await;
    assert_eq!(analysis(&app, &sid).await["analysis"]["event_count"], 1);
    app.ingest_and_wait(
        &sid,
        &TestApp::json(json!({"events": [{"event_type": "PreToolUse", "data": {"tool_name": "Bash"}}]})),
    )
    .await;
    eventually(30, "a re-analysis with the late event", || async {
        let a = analysis(&app, &sid).await["analysis"].clone();
        (a["event_count"] == 2).then_some(())
    })
    .await;
    let a = analysis(&app, &sid).await["analysis"].clone();
    assert_eq!(a["tool_calls"]["by_tool"], json!({"Bash": 1, "Read": 1}));
    let (versions,): (i64,) = sqlx::query_as("SELECT count(*) FROM session_analyses").fetch_one(&app.db).await.unwrap();
    assert_eq!(versions, 2);
}

#[tokio::test]
async fn every_analysis_sees_the_end_and_all_events_sent_before_it() {
    let app = TestApp::spawn().await;
    let mut jobs = Vec::new();
    for i in 0..200 {
        let sid = app.create_session(json!({"agent_session_id": format!("loop-{i}")})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let batch = json!({"events": [
            {"event_type": "UserPromptSubmit", "data": {"prompt": format!("task {i}")}},
            {"event_type": "PreToolUse", "data": {"tool_name": "Bash", "tool_input": {"command": "true"}}},
            {"event_type": "Stop", "data": {"last_assistant_message": "done"}}
        ]});
        let (status, _) = app.ingest(&sid, &TestApp::json(batch)).await;
        assert_eq!(status, 202);
        // End at once: the events are accepted but maybe not yet persisted.
        jobs.push((sid.clone(), end(&app, &sid, json!({})).await));
    }
    for (sid, job) in &jobs {
        job_in(&app, job, "succeeded", 60).await;
        let s = analysis(&app, sid).await;
        assert!(s["ended_at"].is_string());
        assert_eq!(s["analysis"]["event_count"], 3, "{sid}: the analysis missed events");
        assert_eq!(s["analysis"]["outcome"], "completed");
        assert!(s["summary"].as_str().unwrap().starts_with("task "), "{}", s["summary"]);
    }
}

#[tokio::test]
async fn idle_sessions_are_closed_and_analysed() {
    let vars = std::collections::HashMap::from([
        ("CREWKIT_IDLE_TIMEOUT_SECS".to_string(), "1".to_string()),
        ("CREWKIT_SCHEDULE_SECS".to_string(), "1".to_string()),
    ]);
    let app = TestApp::spawn_with(true, vars).await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let s = eventually(30, "the idle session to be closed", || async {
        let s = analysis(&app, &sid).await;
        (s["status"] == "ended" && s["analysis"].is_object()).then_some(s)
    })
    .await;
    assert_eq!(s["end_reason"], "idle");
    assert_eq!(s["analysis"]["outcome"], "abandoned");
}

#[tokio::test]
async fn vacuum_removes_ended_tasks_from_redis_and_their_records_stay() {
    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let accepted = app
            .ingest_and_wait(&sid, &TestApp::json(json!({"events": [{"event_type": "Stop", "id": format!("v{i}")}]})))
            .await;
        jobs.push(accepted["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(app.jobs_pushed("persist_events").await, 3);
    let c = &app.config;
    let queues =
        crewkit_jobs::queue::Queues::new(&c.redis_url, &c.queue_prefix, c.redis_response_timeout, c.worker_heartbeat)
            .unwrap();
    let kind = crewkit_jobs::queue::JobKind::PersistEvents;
    // Too young to go.
    assert_eq!(queues.vacuum(kind, std::time::Duration::from_secs(3600), 100).await.unwrap(), 0);
    eventually(10, "all three tasks to be done in Redis", || async {
        (queues.vacuum(kind, std::time::Duration::ZERO, 100).await.unwrap() > 0).then_some(())
    })
    .await;
    eventually(10, "the data hash to be empty", || async {
        let _ = queues.vacuum(kind, std::time::Duration::ZERO, 100).await;
        (app.jobs_pushed("persist_events").await == 0).then_some(())
    })
    .await;
    for id in &jobs {
        assert_eq!(super::job(&app, id).await["status"], "succeeded");
    }
}

#[tokio::test]
async fn a_log_with_only_post_tool_use_still_counts_its_calls_commands_and_files() {
    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let events = json!({"events": [
        {"event_type": "PostToolUse", "data": {"tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_response": {"stdout": ""}}},
        {"event_type": "PostToolUse", "data": {"tool_name": "Read", "tool_input": {"file_path": "/a.rs"}}},
        {"event_type": "SubagentStart", "data": {"agent_id": "x1", "agent_type": "Explore"}},
        {"event_type": "SubagentStart", "data": {"agent_id": "x2", "agent_type": "Explore"}}
    ]});
    app.ingest_and_wait(&sid, &TestApp::json(events)).await;
    let job = end(&app, &sid, json!({})).await;
    job_in(&app, &job, "succeeded", 30).await;
    let a = analysis(&app, &sid).await["analysis"].clone();
    assert_eq!(a["tool_calls"]["total"], 2, "{a}");
    assert_eq!(a["commands"]["count"], 1);
    assert_eq!(a["files"]["read"], json!(["/a.rs"]));
    assert_eq!(a["subagents"], json!({"count": 2, "by_type": {"Explore": 2}}));
}

/// apalis-redis's own push puts every task in the scheduled set, and its fetch promotes all due
/// ones with one Lua `unpack()`, which fails above about 8,000: a backlog that size stopped every
/// worker. Immediate jobs now go straight onto the active list, and a backlog drains.
#[tokio::test]
async fn a_backlog_of_nine_thousand_jobs_waits_on_the_active_list_and_drains() {
    use crewkit_jobs::index_session::IndexSession;
    use crewkit_jobs::queue::{JobKind, Queues};
    let app = TestApp::spawn_without_worker().await;
    let c = &app.config;
    let queues =
        Queues::new(&c.redis_url, &c.queue_prefix, c.redis_response_timeout, c.worker_heartbeat).expect("queues");
    let org: crewkit_jobs::ids::OrgId = app.org_id.parse().unwrap();
    let job = IndexSession {
        org_id: org,
        session_id: crewkit_jobs::ids::SessionId(uuid::Uuid::now_v7()),
        request_id: None,
        after_ingestion: false,
    };
    for _ in 0..18 {
        let round = (0..500).map(|_| queues.push(JobKind::IndexSession, &job));
        for r in futures::future::join_all(round).await {
            r.expect("push");
        }
    }
    let config = queues.config(JobKind::IndexSession);
    let mut conn = queues.connection();
    let (active, scheduled): (u64, u64) = redis::pipe()
        .llen(config.active_jobs_list())
        .zcard(config.scheduled_jobs_set())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((active, scheduled), (9_000, 0));
    // A worker fetches from that backlog (its jobs fail for good: the session does not exist).
    let handle = tokio::spawn(crewkit_workers::run(c.clone(), &[JobKind::IndexSession], std::future::pending()));
    eventually(30, "the backlog shrinks", || async {
        let left: u64 =
            redis::cmd("LLEN").arg(config.active_jobs_list()).query_async(&mut queues.connection()).await.unwrap();
        (left < 8_900).then_some(())
    })
    .await;
    handle.abort();
}
