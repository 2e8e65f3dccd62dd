//! Ingestion behaviour beyond the cases: paths, ordering, counters, jobs.

use crewkit_testkit::TestApp;
use serde_json::json;

#[tokio::test]
async fn events_can_be_sent_to_the_agents_own_session_id() {
    let app = TestApp::spawn().await;
    let s = app.create_session(json!({"agent_session_id": "claude-123"})).await;
    app.ingest_and_wait("claude-123", &TestApp::json(json!({"events": [{"event_type": "Stop", "data": {}}]}))).await;
    let events = app.events(s["id"].as_str().unwrap()).await;
    assert_eq!(events.len(), 1);
    let (status, p) = app.ingest("no-such-agent-session", &TestApp::json(json!({"events": []}))).await;
    assert_eq!((status.as_u16(), p["detail"].as_str()), (404, Some("session not found")), "{p}");
}

#[tokio::test]
async fn counters_and_times_follow_the_events_really_stored() {
    let app = TestApp::spawn().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let body = TestApp::json(json!({"events": [
        {"event_type": "PreToolUse", "timestamp": "2026-05-01T10:00:00Z", "data": {"tool_name": "Bash", "tool_use_id": "t1"}},
        {"event_type": "PostToolUseFailure", "timestamp": "2026-05-01T10:00:02Z", "data": {"tool_name": "Bash", "tool_use_id": "t1", "error": "exit 1"}},
        {"event_type": "SomethingNew", "timestamp": "2026-05-01T09:59:00Z", "data": {"x": 1}}
    ]}));
    app.ingest_and_wait(&sid, &body).await;
    app.ingest_and_wait(&sid, &body).await; // the same content again: deduplicated by hash
    let (_, s) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    assert_eq!(s["event_count"], 3);
    assert_eq!(s["tool_call_count"], 1);
    assert_eq!(s["error_count"], 1);
    assert_eq!(s["first_event_at"], "2026-05-01T09:59:00Z");
    assert_eq!(s["last_event_at"], "2026-05-01T10:00:02Z");
    let types: Vec<_> = app.events(&sid).await.iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["SomethingNew", "PreToolUse", "PostToolUseFailure"], "timeline order, unknown types kept");
}

#[tokio::test]
async fn a_queued_job_is_visible_before_any_worker_runs_it_and_only_to_its_org() {
    let app = TestApp::spawn_without_worker().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let (_, accepted) = app.ingest(&sid, &TestApp::json(json!({"events": [{"event_type": "Stop"}]}))).await;
    let job_id = accepted["job_id"].as_str().unwrap();
    let (status, job) = app.get(&format!("/{}/jobs/{job_id}", app.org)).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["kind"], "persist_events");
    assert_eq!(job["session_id"], sid.as_str());

    let (other, other_key) = app.other_org().await;
    let (status, _) = app.get_as(&other_key, &format!("/{other}/jobs/{job_id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_unknown_job_is_404() {
    let app = TestApp::spawn_without_worker().await;
    let (status, p) = app.get(&format!("/{}/jobs/job_0123456789abcdef0123456789abcdef", app.org)).await;
    assert_eq!((status.as_u16(), p["detail"].as_str()), (404, Some("job not found")));
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn_without_worker().await;
    let (s, h) = app.get("/healthz").await;
    assert_eq!((s.as_u16(), h["status"].as_str()), (200, Some("ok")));
    let (s, h) = app.get("/readyz").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["checks"]["postgres"], "ok");
    assert_eq!(h["checks"]["redis"], "ok");
}

#[tokio::test]
async fn readiness_is_503_when_redis_is_unreachable_and_ingestion_accepts_nothing() {
    let vars = std::collections::HashMap::from([("REDIS_URL".to_string(), "redis://127.0.0.1:1".to_string())]);
    let app = TestApp::spawn_with(false, vars).await;
    let (s, h) = app.get("/readyz").await;
    assert_eq!(s, 503, "{h}");
    assert_ne!(h["checks"]["redis"], "ok");
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let resp = app
        .http
        .post(app.url(&format!("/{}/observability/sessions/{sid}/events", app.org)))
        .bearer_auth(&app.api_key)
        .body(r#"{"events":[{"event_type":"Stop"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_full_ingestion_queue_answers_503_with_retry_after_and_accepts_nothing() {
    let vars = std::collections::HashMap::from([("CREWKIT_MAX_QUEUE_DEPTH".to_string(), "1".to_string())]);
    let app = TestApp::spawn_with(false, vars).await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let batch = |i: u32| TestApp::json(json!({"events": [{"event_type": "Stop", "id": format!("e{i}")}]}));
    for i in 0..2 {
        assert_eq!(app.ingest(&sid, &batch(i)).await.0, 202);
    }
    // No worker drains the queue: once the sampler sees 2 waiting jobs, ingestion refuses.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut i = 2;
    let resp = loop {
        let resp = app
            .http
            .post(app.url(&format!("/{}/observability/sessions/{sid}/events", app.org)))
            .bearer_auth(&app.api_key)
            .body(batch(i))
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            break resp;
        }
        assert_eq!(resp.status(), 202);
        i += 1;
        assert!(std::time::Instant::now() < deadline, "ingestion never pushed back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(resp.headers()["retry-after"], "5");
    let pushed = app.jobs_pushed("persist_events").await;
    assert_eq!(pushed, u64::from(i), "the refused batch was not queued");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "queue_full");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_events_and_show_queue_depths() {
    let app = TestApp::spawn_without_worker().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    app.ingest(&sid, &TestApp::json(json!({"events": [{"event_type": "Stop"}, {"event_type": ""}]}))).await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for needle in [
        r#"crewkit_http_requests_total{route="/{org}/sessions",method="POST",status="201"}"#,
        r#"crewkit_http_request_duration_seconds_bucket{route="/{org}/observability/sessions/{id}/events",method="POST",le="+Inf"}"#,
        "# TYPE crewkit_events_accepted_total counter",
        "# TYPE crewkit_events_rejected_total counter",
        r#"crewkit_queue_depth{kind="persist_events"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[tokio::test]
async fn a_burst_over_the_keys_limit_gets_429_with_retry_after_across_api_processes() {
    let vars = std::collections::HashMap::from([("CREWKIT_RATE_LIMIT_PER_MINUTE".to_string(), "20".to_string())]);
    let app = TestApp::spawn_with(false, vars).await;
    let other = app.another_api().await;
    // The windows are calendar minutes: keep the burst inside one.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
    let list = format!("/{}/sessions", app.org);
    let get = |base: String| {
        let (http, key, path) = (app.http.clone(), app.api_key.clone(), list.clone());
        async move { http.get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap() }
    };
    for i in 0..15 {
        let resp = get(app.base.clone()).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["ratelimit-limit"], "20");
        assert_eq!(resp.headers()["ratelimit-remaining"].to_str().unwrap(), (19 - i).to_string());
    }
    // The first process's count reaches Redis within a flush period; the second process then
    // has only what is left of the window.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let mut allowed = 0;
    let refused = loop {
        let resp = get(other.clone()).await;
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.status(), 200);
        allowed += 1;
        assert!(allowed <= 5, "the second process ignored the first one's count");
    };
    assert_eq!(allowed, 5);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    // Once the second process's count has reached the first, ingestion there is refused as well
    // and nothing is queued; another key is not limited.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let sid = "no-matter";
    let (status, _) = app.ingest(sid, &TestApp::json(json!({"events": [{"event_type": "Stop"}]}))).await;
    assert_eq!(status, 429);
    assert_eq!(app.jobs_pushed("persist_events").await, 0);
    let member = app.key_with_role("burst@example.com", "member").await;
    let (status, _) = app.get_as(&member, &list).await;
    assert_eq!(status, 200);
}

/// A Redis of this test's own, durable (appendonly, fsync always) so a restart keeps its queue.
struct OwnRedis {
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16, dir: std::path::PathBuf) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir", dir.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (script/test needs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        OwnRedis { dir, child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn redis_stopped_means_503_and_after_it_returns_nothing_accepted_is_lost() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("ck-redis-{port}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = OwnRedis::start(port, dir.clone());
    let vars = std::collections::HashMap::from([("REDIS_URL".to_string(), format!("redis://127.0.0.1:{port}"))]);
    let app = TestApp::spawn_with(true, vars).await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let batch = |id: &str| {
        TestApp::json(json!({"events": [{"event_type": "Notification", "id": id, "data": {"message": id}}]}))
    };
    assert_eq!(app.ingest(&sid, &batch("before")).await.0, 202);

    redis.stop();
    let (status, p) = app.ingest(&sid, &batch("during")).await;
    assert_eq!(status, 503, "{p}");
    let (ready, _) = app.get("/readyz").await;
    assert_eq!(ready, 503);

    let _redis = OwnRedis::start(port, dir);
    // A worker process that lost Redis exits (apalis ends its workers on a broken stream) and its
    // supervisor starts it again (compose: `restart: unless-stopped`); so does this test.
    app.start_another_worker();
    // The refused batch is sent again (as the forwarder does from its spool), and a new one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.ingest(&sid, &batch("during")).await.0 != 202 {
        assert!(std::time::Instant::now() < deadline, "ingestion never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(app.ingest(&sid, &batch("after")).await.0, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = app.events(&sid).await;
        let mut ids = Vec::new();
        for m in ["before", "during", "after"] {
            let marker = format!("\"message\":\"{m}\"");
            ids.extend(events.iter().filter(|e| e.to_string().contains(&marker)).map(|_| m.to_string()));
        }
        assert_eq!(ids.len(), events.len(), "{events:?}");
        if ids.len() == 3 {
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, ["after", "before", "during"], "{ids:?}");
            break;
        }
        assert!(ids.len() < 3, "duplicates: {ids:?}");
        assert!(std::time::Instant::now() < deadline, "events lost: {ids:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn data_too_deep_to_read_back_is_refused_and_a_stored_one_does_not_break_the_timeline() {
    let app = TestApp::spawn_without_worker().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep = format!(r#"{{"events":[{{"event_type":"Stop","data":{{"a":{}}}}}]}}"#, nest(130));
    let (status, p) = app.ingest(&sid, deep.as_bytes()).await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(
        (p["errors"][0]["field"].as_str(), p["errors"][0]["code"].as_str()),
        (Some("events[0].data"), Some("invalid_data")),
        "{p}"
    );
    // A row stored before ingestion refused such data: its page still reads, the row shows a note.
    let uuid = uuid::Uuid::parse_str(sid.trim_start_matches("ses_")).unwrap();
    sqlx::query(
        "INSERT INTO events (id, org_id, conversation_id, event_type, dedup_key, timestamp, received_at, order_at, data)
         SELECT $1, org_id, id, 'Stop', 'deep', now(), now(), now(), $2::jsonb FROM conversations WHERE id = $3",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(format!(r#"{{"a":{}}}"#, nest(130)))
    .bind(uuid)
    .execute(&app.db)
    .await
    .unwrap();
    let events = app.events(&sid).await;
    assert_eq!(events.len(), 1);
    assert!(events[0]["data"]["crewkit_unreadable"].as_str().unwrap().contains("recursion limit"), "{}", events[0]);
}
