//! PATCH, end, compact, threads.

use crewkit_testkit::TestApp;
use serde_json::{Value, json};

async fn session(app: &TestApp) -> String {
    app.create_session(json!({})).await["id"].as_str().unwrap().to_string()
}

async fn patch(app: &TestApp, sid: &str, body: Value) -> (u16, Value) {
    let resp = app
        .http
        .patch(app.url(&format!("/{}/sessions/{sid}", app.org)))
        .bearer_auth(&app.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn c07_cumulative_metrics_never_go_down_and_decimals_stay_exact() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    // Ten cumulative snapshots 0.1 … 1.0, the last one arriving first.
    let mut costs: Vec<String> = (1..=10).map(|i| format!("0.{i}")).collect();
    costs[9] = "1.0".into();
    costs.rotate_right(1);
    for (i, cost) in costs.iter().enumerate() {
        let tokens = if i == 0 { 10_000 } else { i * 1000 };
        let body = format!(
            r#"{{"model_metrics": {{"input_tokens": {tokens}, "output_tokens": 5, "cost_usd": {cost},
                "models": [{{"model": "claude-sonnet-4-6", "input_tokens": {tokens}, "cost_usd": {cost}}}]}}}}"#
        );
        let (status, s) = patch(&app, &sid, serde_json::from_str(&body).unwrap()).await;
        assert_eq!(status, 200, "{s}");
    }
    let (_, s) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    let text = s.to_string();
    assert_eq!(s["model_metrics"]["cost_usd"].to_string(), "1", "{text}");
    assert_eq!(s["model_metrics"]["input_tokens"], 10_000);
    assert_eq!(s["models"][0]["model"], "claude-sonnet-4-6");
    assert_eq!(s["models"][0]["cost_usd"].to_string(), "1");
    assert!(!text.contains("0000000"), "no float artefacts: {text}");

    let (status, s) = patch(&app, &sid, json!({"model_metrics": {"cost_usd": 0.30000000000000004}})).await;
    assert_eq!(status, 200);
    assert_eq!(s["model_metrics"]["cost_usd"].to_string(), "1", "a lower snapshot changes nothing");
    let (status, s) = patch(&app, &sid, json!({"model_metrics": {"cost_usd": 1.05}, "title": "t"})).await;
    assert_eq!(
        (status, s["model_metrics"]["cost_usd"].to_string(), s["title"].as_str()),
        (200, "1.05".into(), Some("t"))
    );
}

#[tokio::test]
async fn bad_metrics_are_400_naming_the_field_and_unknown_sessions_404() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    let (status, p) = patch(&app, &sid, json!({"model_metrics": {"input_tokens": -5}})).await;
    assert_eq!((status, p["errors"][0]["field"].as_str()), (400, Some("model_metrics.input_tokens")), "{p}");
    let (status, p) = patch(&app, &sid, json!({"model_metrics": {"cost_usd": "lots"}})).await;
    assert_eq!((status, p["errors"][0]["field"].as_str()), (400, Some("model_metrics.cost_usd")), "{p}");
    let (status, _) = patch(&app, "ses_0123456789abcdef0123456789abcdef", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn ending_a_session_queues_its_analysis_and_ending_it_again_is_409() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    let end = format!("/{}/sessions/{sid}/end", app.org);
    let (status, ended) =
        app.post(&end, &json!({"summary": "Refactored auth", "model_metrics": {"cost_usd": 0.25}})).await;
    assert_eq!(status, 202, "{ended}");
    assert_eq!(ended["session"]["status"], "ended");
    assert_eq!(ended["session"]["end_reason"], "client");
    assert_eq!(ended["session"]["summary"], "Refactored auth");
    assert_eq!(ended["session"]["model_metrics"]["cost_usd"].to_string(), "0.25");
    assert!(ended["session"]["ended_at"].is_string());
    assert_eq!(ended["job"]["kind"], "analyze_session");
    assert_eq!(ended["job"]["status"], "queued");
    let (status, job) = app.get(&format!("/{}/jobs/{}", app.org, ended["job"]["id"].as_str().unwrap())).await;
    assert_eq!((status.as_u16(), job["status"].as_str()), (200, Some("queued")));
    assert_eq!(app.jobs_pushed("analyze_session").await, 1);

    let (status, p) = app.post(&end, &json!({})).await;
    assert_eq!((status.as_u16(), p["code"].as_str()), (409, Some("already_ended")), "{p}");
    // Events for an ended session are still accepted (a late PostToolUse is common).
    let (status, _) = app.ingest(&sid, &TestApp::json(json!({"events": [{"event_type": "PostToolUse"}]}))).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn end_takes_no_body_at_all() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    let resp = app
        .http
        .post(app.url(&format!("/{}/sessions/{sid}/end", app.org)))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn a_compaction_is_queued_once_per_request_id_and_listed() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    let compact = format!("/{}/sessions/{sid}/compact", app.org);
    let (status, first) = app.post(&compact, &json!({"request_id": "r1"})).await;
    assert_eq!(status, 202, "{first}");
    assert!(first["compaction"]["id"].as_str().unwrap().starts_with("cmp_"));
    assert_eq!(first["compaction"]["status"], "queued");
    assert_eq!(first["job"]["kind"], "compact_session");
    let (_, again) = app.post(&compact, &json!({"request_id": "r1"})).await;
    assert_eq!(again["compaction"]["id"], first["compaction"]["id"]);
    assert_eq!(again["job"]["id"], first["job"]["id"]);
    let (_, other) = app.post(&compact, &json!({})).await;
    assert_ne!(other["compaction"]["id"], first["compaction"]["id"]);
    assert_eq!(app.jobs_pushed("compact_session").await, 2);

    let (status, list) = app.get(&format!("/{}/sessions/{sid}/compactions", app.org)).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (_, detail) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    assert_eq!(detail["compactions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn threads_group_continued_conversations_newest_activity_first() {
    let app = TestApp::spawn_without_worker().await;
    let root = app.create_session(json!({"started_at": "2026-05-01T10:00:00Z"})).await;
    app.create_session(json!({"parent_session_id": root["id"], "started_at": "2026-05-01T11:00:00Z"})).await;
    let lone = app.create_session(json!({"started_at": "2026-05-01T09:00:00Z"})).await;
    let (status, threads) = app.get(&format!("/{}/sessions/threads?per_page=1", app.org)).await;
    assert_eq!(status, 200, "{threads}");
    assert_eq!((threads["total"].as_i64(), threads["total_pages"].as_i64()), (Some(2), Some(2)));
    let t = &threads["data"][0];
    assert_eq!(t["thread_id"], root["id"]);
    assert_eq!(t["session_count"], 2);
    assert_eq!(t["last_activity_at"], "2026-05-01T11:00:00Z");
    let (_, page2) = app.get(&format!("/{}/sessions/threads?per_page=1&page=2", app.org)).await;
    assert_eq!(page2["data"][0]["thread_id"], lone["id"]);
    let (status, p) = app.get(&format!("/{}/sessions/threads?per_page=0", app.org)).await;
    assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("per_page")));
}

#[tokio::test]
async fn impossible_values_are_refused_and_analytics_survive_the_largest_allowed() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    let (status, p) = patch(&app, &sid, json!({"model_metrics": {"input_tokens": 9223372036854775807u64}})).await;
    assert_eq!((status, p["errors"][0]["field"].as_str()), (400, Some("model_metrics.input_tokens")), "{p}");
    let (status, p) = patch(&app, &sid, json!({"model_metrics": {"cost_usd": 1e16}})).await;
    assert_eq!((status, p["errors"][0]["field"].as_str()), (400, Some("model_metrics.cost_usd")), "{p}");
    // The largest allowed counters, on several sessions: sums must not overflow.
    for _ in 0..3 {
        let sid = session(&app).await;
        let max = 1_000_000_000_000_000u64;
        let body = json!({"model_metrics": {"input_tokens": max, "output_tokens": max, "cache_read_input_tokens": max,
            "cache_creation_input_tokens": max, "cost_usd": 999999999.99, "models": [{"model": "m", "input_tokens": max}]}});
        assert_eq!(patch(&app, &sid, body).await.0, 200);
    }
    for view in ["summary", "timeseries?metric=tokens", "by-agent", "cost-breakdown", "by-user", "team-overview"] {
        let sep = if view.contains('?') { "&" } else { "?" };
        let (status, v) = app.get(&format!("/{}/sessions/analytics/{view}{sep}tz=UTC", app.org)).await;
        assert_eq!(status, 200, "{view}: {v}");
    }
    let (status, p) =
        app.post(&format!("/{}/sessions/{sid}/end", app.org), &json!({"ended_at": "2000-01-01T00:00:00Z"})).await;
    assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("ended_at")), "{p}");
    let (status, p) = app.post(&format!("/{}/sessions", app.org), &json!({"agent_session_id": ""})).await;
    assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("agent_session_id")), "{p}");
    let (status, p) = app
        .ingest(&sid, &TestApp::json(json!({"events": [{"event_type": "Stop", "timestamp": "0000-01-01T00:00:00Z"}]})))
        .await;
    assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (422, Some("events[0].timestamp")), "{p}");
}

#[tokio::test]
async fn a_cost_not_given_is_computed_from_tokens_and_an_unknown_models_stays_unknown() {
    let app = TestApp::spawn_without_worker().await;
    let sid = session(&app).await;
    // c06's one API call: 10 in, 300 out, 1000 cache read, 2000 cache written for one hour.
    let body = json!({"model_metrics": {"input_tokens": 10, "output_tokens": 300, "models": [{
        "model": "claude-sonnet-4-6", "input_tokens": 10, "output_tokens": 300, "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 2000, "cache_creation_1h_input_tokens": 2000}]}});
    let (status, s) = patch(&app, &sid, body).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["model_metrics"]["cost_usd"].to_string(), "0.01683");

    let other = session(&app).await;
    let body = json!({"model_metrics": {"models": [{"model": "glm-4.6", "input_tokens": 500}]}});
    let (_, s) = patch(&app, &other, body).await;
    assert!(s["model_metrics"].get("cost_usd").is_none(), "unknown, not 0: {s}");
    let (_, summary) = app.get(&format!("/{}/sessions/analytics/summary", app.org)).await;
    assert_eq!(summary["cost_complete"], false);
    assert_eq!(summary["total_cost_usd"].to_string(), "0.01683");
}
