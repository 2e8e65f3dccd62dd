//! Analytics: six endpoints that agree to the last decimal, in any time zone.

use std::collections::HashMap;

use crewkit_testkit::TestApp;
use serde_json::{Value, json};

fn dec(v: &Value) -> rust_decimal::Decimal {
    v.to_string().parse().unwrap_or_else(|_| panic!("not a decimal: {v}"))
}

async fn analytics(app: &TestApp, key: &str, view: &str, q: &str) -> Value {
    let (status, v) = app.get_as(key, &format!("/{}/sessions/analytics/{view}?{q}", app.org)).await;
    assert_eq!(status, 200, "{view}?{q}: {v}");
    v
}

async fn ended_session(app: &TestApp, key: &str, started: &str, agent: &str, cost: &str, models: Value) {
    let (_, s) = app
        .post_as(
            key,
            &format!("/{}/sessions", app.org),
            TestApp::json(json!({"started_at": started, "agent_name": agent})),
        )
        .await;
    let sid = s["id"].as_str().unwrap();
    let body = format!(
        r#"{{"model_metrics": {{"cost_usd": {cost}, "input_tokens": 100, "output_tokens": 10, "models": {models}}}}}"#
    );
    let (status, _) = app.post_as(key, &format!("/{}/sessions/{sid}/end", app.org), body.into_bytes()).await;
    assert_eq!(status, 202);
}

/// Checks the cross-endpoint invariant over one window; returns the total.
async fn assert_all_agree(app: &TestApp, q: &str) -> rust_decimal::Decimal {
    let key = &app.api_key;
    let summary = analytics(app, key, "summary", q).await;
    let total = dec(&summary["total_cost_usd"]);
    let sessions = summary["total_sessions"].as_i64().unwrap();
    let sum = |rows: &Value, field: &str| {
        rows.as_array().unwrap().iter().map(|r| dec(&r[field])).sum::<rust_decimal::Decimal>()
    };
    let count = |rows: &Value| rows.as_array().unwrap().iter().map(|r| r["sessions"].as_i64().unwrap()).sum::<i64>();

    let by_agent = analytics(app, key, "by-agent", q).await;
    assert_eq!(sum(&by_agent["data"], "cost_usd"), total, "by-agent");
    assert_eq!(count(&by_agent["data"]), sessions);
    let cb = analytics(app, key, "cost-breakdown", q).await;
    assert_eq!(dec(&cb["total_cost_usd"]), total);
    assert_eq!(sum(&cb["by_model"], "cost_usd"), total, "by model: {cb}");
    assert_eq!(sum(&cb["by_project"], "cost_usd"), total, "by project");
    assert_eq!(sum(&cb["by_user"], "cost_usd"), total, "by user");
    assert_eq!(count(&cb["by_project"]), sessions);
    let by_user = analytics(app, key, "by-user", q).await;
    assert_eq!(sum(&by_user["data"], "cost_usd"), total);
    for interval in ["day", "week"] {
        let ts = analytics(app, key, "timeseries", &format!("{q}&metric=cost&interval={interval}")).await;
        assert_eq!(sum(&ts["buckets"], "value"), total, "timeseries {interval}");
        let ts = analytics(app, key, "timeseries", &format!("{q}&metric=sessions&interval={interval}")).await;
        assert_eq!(sum(&ts["buckets"], "value"), rust_decimal::Decimal::from(sessions));
    }
    let team = analytics(app, key, "team-overview", q).await;
    assert_eq!(dec(&team["total_cost_usd"]), total);
    total
}

#[tokio::test]
async fn c07_costs_sum_exactly_across_every_endpoint() {
    let app = TestApp::spawn_without_worker().await;
    for cost in ["0.1", "0.2", "0.3"] {
        ended_session(&app, &app.api_key, "2026-05-02T10:00:00Z", "claude-code", cost, json!([])).await;
    }
    let s = app.create_session(json!({"started_at": "2026-05-03T10:00:00Z", "agent_name": "codex"})).await;
    let sid = s["id"].as_str().unwrap();
    for cost in ["1.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"] {
        let resp = app
            .http
            .patch(app.url(&format!("/{}/sessions/{sid}", app.org)))
            .bearer_auth(&app.api_key)
            .body(format!(r#"{{"model_metrics": {{"cost_usd": {cost}}}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let q = "start_date=2026-05-01&end_date=2026-05-31";
    let total = assert_all_agree(&app, q).await;
    assert_eq!(total.to_string(), "1.6");
    let summary = analytics(&app, &app.api_key, "summary", q).await;
    assert_eq!(summary["total_cost_usd"].to_string(), "1.6");
    assert_eq!((summary["total_sessions"].as_i64(), summary["ended_sessions"].as_i64()), (Some(4), Some(3)));
    assert_eq!(summary["cost_complete"], true);
    let text = analytics(&app, &app.api_key, "cost-breakdown", q).await.to_string();
    assert!(!text.contains("0000000"), "{text}");
}

#[tokio::test]
async fn random_data_sets_agree_across_endpoints_exactly() {
    let app = TestApp::spawn_without_worker().await;
    let member = app.key_with_role("m@example.com", "member").await;
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..30 {
        let key = if next(2) == 0 { app.api_key.clone() } else { member.clone() };
        let day = 1 + next(28);
        let hour = next(24);
        let agent = ["claude-code", "codex", "gemini"][next(3) as usize];
        let cents = next(100_000);
        let cost = format!("{}.{:05}", cents / 100_000, cents % 100_000 + 1);
        let models = if next(2) == 0 {
            json!([{"model": "claude-sonnet-4-6", "cost_usd": format!("0.{:05}", next(1000))}])
        } else {
            json!([])
        };
        ended_session(&app, &key, &format!("2026-04-{day:02}T{hour:02}:00:00Z"), agent, &cost, models).await;
    }
    for tz in ["UTC", "America/New_York", "Asia/Kolkata"] {
        let total = assert_all_agree(&app, &format!("start_date=2026-04-01&end_date=2026-04-30&tz={tz}")).await;
        assert!(total > rust_decimal::Decimal::ZERO);
    }
}

fn day_buckets(ts: &Value) -> Vec<(String, i64)> {
    ts["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["start"].as_str().unwrap().to_string(), b["value"].as_i64().unwrap()))
        .collect()
}

#[tokio::test]
async fn dst_days_are_one_bucket_of_23_or_25_hours_whatever_the_database_time_zone() {
    let vars = HashMap::from([("TEST_DB_TIMEZONE".to_string(), "Asia/Seoul".to_string())]);
    let app = TestApp::spawn_with(false, vars).await;
    // 2026-03-08 is 23 hours long in New York, 2026-11-01 is 25 hours long.
    for t in ["2026-03-08T04:59:00Z", "2026-03-08T05:00:00Z", "2026-03-09T03:59:00Z", "2026-03-09T04:00:00Z"] {
        app.create_session(json!({"started_at": t})).await;
    }
    for t in ["2026-11-01T04:00:00Z", "2026-11-02T04:59:00Z", "2026-11-02T05:00:00Z"] {
        app.create_session(json!({"started_at": t})).await;
    }
    let key = &app.api_key;
    let spring =
        analytics(&app, key, "timeseries", "start_date=2026-03-07&end_date=2026-03-09&tz=America/New_York").await;
    assert_eq!(
        day_buckets(&spring),
        [("2026-03-07T05:00:00Z".into(), 1), ("2026-03-08T05:00:00Z".into(), 2), ("2026-03-09T04:00:00Z".into(), 1)]
    );
    let autumn =
        analytics(&app, key, "timeseries", "start_date=2026-10-31&end_date=2026-11-02&tz=America/New_York").await;
    assert_eq!(
        day_buckets(&autumn),
        [("2026-10-31T04:00:00Z".into(), 0), ("2026-11-01T04:00:00Z".into(), 2), ("2026-11-02T05:00:00Z".into(), 1)]
    );
}

#[tokio::test]
async fn weeks_start_on_monday_in_the_requested_zone() {
    let vars = HashMap::from([("TEST_DB_TIMEZONE".to_string(), "Asia/Seoul".to_string())]);
    let app = TestApp::spawn_with(false, vars).await;
    // Sunday 2026-03-22 23:30 in Berlin (CET): still the week of Monday 2026-03-16 there, though
    // it is already Monday in Seoul.
    app.create_session(json!({"started_at": "2026-03-22T22:30:00Z"})).await;
    let ts = analytics(
        &app,
        &app.api_key,
        "timeseries",
        "start_date=2026-03-16&end_date=2026-03-29&tz=Europe/Berlin&interval=week",
    )
    .await;
    assert_eq!(day_buckets(&ts), [("2026-03-15T23:00:00Z".into(), 1), ("2026-03-22T23:00:00Z".into(), 0)]);
}

#[tokio::test]
async fn a_session_with_tasks_and_threads_counts_its_cost_once() {
    let app = TestApp::spawn().await;
    let root = app.create_session(json!({"agent_session_id": "fan", "started_at": "2026-04-01T11:00:00Z"})).await;
    let sid = root["id"].as_str().unwrap();
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"event_type": "SubagentStart", "timestamp": "2026-04-01T12:00:00Z", "data": {"agent_id": format!("a{i}"), "agent_type": "Explore"}}))
        .collect();
    app.ingest_and_wait(sid, &TestApp::json(json!({"events": events}))).await;
    app.create_session(json!({"parent_session_id": sid, "started_at": "2026-04-01T13:00:00Z"})).await;
    app.create_session(json!({"parent_session_id": sid, "started_at": "2026-04-01T14:00:00Z"})).await;
    app.post(&format!("/{}/sessions/{sid}/end", app.org), &json!({"model_metrics": {"cost_usd": 0.5}})).await;
    let (_, h) = app.get(&format!("/{}/sessions/{sid}", app.org)).await;
    assert_eq!(h["task_count"], 3);
    let total = assert_all_agree(&app, "start_date=2026-04-01&end_date=2026-04-01").await;
    assert_eq!(total.to_string(), "0.5");
}

#[tokio::test]
async fn bad_parameters_are_400_and_members_may_not_see_per_user_numbers() {
    let app = TestApp::spawn_without_worker().await;
    let member = app.key_with_role("m@example.com", "member").await;
    let (status, _) = app.get_as(&member, &format!("/{}/sessions/analytics/by-user", app.org)).await;
    assert_eq!(status, 403);
    let manager = app.key_with_role("g@example.com", "manager").await;
    let (status, _) = app.get_as(&manager, &format!("/{}/sessions/analytics/by-user", app.org)).await;
    assert_eq!(status, 200);
    for (q, field) in [
        ("tz=Mars/Olympus", "tz"),
        ("start_date=2025-01-01&end_date=2026-06-01", "end_date"),
        ("start_date=2026-02-01&end_date=2026-01-01", "end_date"),
        ("start_date=yesterday", "start_date"),
        ("interval=month", "interval"),
        ("metric=lines", "metric"),
        ("project_id=ses_0123456789abcdef0123456789abcdef", "project_id"),
    ] {
        let (status, p) = app.get(&format!("/{}/sessions/analytics/timeseries?{q}", app.org)).await;
        assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some(field)), "{q}: {p}");
    }
    let empty = analytics(&app, &app.api_key, "summary", "").await;
    assert_eq!((empty["total_sessions"].as_i64(), empty["cost_complete"].as_bool()), (Some(0), Some(true)));
    let ts = analytics(&app, &app.api_key, "timeseries", "").await;
    assert!(ts["buckets"].as_array().unwrap().len() >= 30, "the default window is the last 30 days, zero-filled");
}

#[tokio::test]
async fn an_unknown_cost_is_reported_as_unknown_not_zero() {
    let app = TestApp::spawn_without_worker().await;
    app.create_session(json!({})).await;
    let s = analytics(&app, &app.api_key, "summary", "").await;
    assert_eq!(s["total_sessions"], 1);
    assert_eq!(s["cost_complete"], false);
}

/// What the raw rows say for one window: sessions, cost, users, failed / analysed, mean and
/// median duration (ended sessions), and cost per agent.
async fn raw_truth(app: &TestApp, start: &str, end: &str) -> (i64, rust_decimal::Decimal, i64, i64, i64, Option<f64>) {
    sqlx::query_as(
        "SELECT count(*), COALESCE(sum(cost_usd), 0), count(DISTINCT user_id),
                count(*) FILTER (WHERE outcome = 'failed'), count(*) FILTER (WHERE outcome IS NOT NULL),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at))::float8
           FROM conversations
          WHERE started_at >= $1::timestamptz AND started_at < $2::timestamptz",
    )
    .bind(start)
    .bind(end)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

async fn rollup_rows(app: &TestApp) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT r::text FROM (SELECT * FROM conversation_rollups WHERE sessions <> 0
                               ORDER BY grain, bucket, agent_name, user_id, project_id, repository_id) r
         UNION ALL
         SELECT m::text FROM (SELECT * FROM model_rollups WHERE sessions <> 0
                               ORDER BY grain, bucket, agent_name, user_id, project_id, model) m",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn rollups_answer_exactly_what_the_raw_rows_say_for_any_window() {
    let app = TestApp::spawn_without_worker().await;
    let member = app.key_with_role("r@example.com", "member").await;
    let mut seed: u64 = 0x0bad_5eed;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut ids = Vec::new();
    for i in 0..40 {
        let key = if next(3) == 0 { member.clone() } else { app.api_key.clone() };
        let started = format!("2026-04-{:02}T{:02}:{:02}:{:02}Z", 1 + next(19), next(24), next(60), next(60));
        let agent = ["claude-code", "codex", "gemini"][next(3) as usize];
        let (_, s) = app
            .post_as(
                &key,
                &format!("/{}/sessions", app.org),
                TestApp::json(json!({"started_at": started, "agent_name": agent})),
            )
            .await;
        let sid = s["id"].as_str().unwrap().to_string();
        // A third stay active; some have no cost at all (unknown, never 0).
        if i % 3 != 0 {
            let ended = chrono::DateTime::parse_from_rfc3339(&started).unwrap()
                + chrono::Duration::seconds(5 + next(20_000) as i64);
            let cost = if next(4) == 0 { "null".to_string() } else { format!("0.{:04}", 1 + next(9999)) };
            let models = if next(2) == 0 {
                json!([{"model": "claude-sonnet-4-6", "input_tokens": 7, "cost_usd": format!("0.000{}", next(10))}])
            } else {
                json!([])
            };
            let body = json!({"ended_at": ended.to_rfc3339(), "model_metrics":
                {"input_tokens": next(5000), "output_tokens": next(500), "models": models}});
            let mut body = body;
            if cost != "null" {
                body["model_metrics"]["cost_usd"] = json!(cost);
            }
            let (status, v) = app.post_as(&key, &format!("/{}/sessions/{sid}/end", app.org), TestApp::json(body)).await;
            assert_eq!(status, 202, "{v}");
        }
        ids.push(sid);
    }
    // Outcomes as the analysis job writes them (the trigger moves them into the rollups).
    sqlx::query(
        "UPDATE conversations SET outcome = CASE WHEN random() < 0.4 THEN 'failed' ELSE 'completed' END
          WHERE status = 'ended'",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let windows = [
        ("2026-04-01T00:00:00Z", "2026-04-21T00:00:00Z"),
        ("2026-04-03T10:17:31Z", "2026-04-15T05:43:02Z"),
        ("2026-04-05T10:05:00Z", "2026-04-05T10:55:00Z"),
        ("2026-04-02T23:59:59Z", "2026-04-04T00:00:01Z"),
    ];
    for (start, end) in windows {
        let q = format!("start_date={start}&end_date={end}");
        let (sessions, cost, users, failed, analysed, median) = raw_truth(&app, start, end).await;
        let total = assert_all_agree(&app, &q).await;
        assert_eq!(total, cost, "cost over {q}");
        let summary = analytics(&app, &app.api_key, "summary", &q).await;
        assert_eq!(summary["total_sessions"].as_i64(), Some(sessions), "{q}: {summary}");
        assert_eq!(summary["distinct_users"].as_i64(), Some(users), "{q}");
        assert_eq!(summary["median_duration_seconds"].as_f64(), median, "{q}");
        assert_eq!(summary["median_duration_estimated"], false);
        assert_eq!(summary["cost_complete"], json!(sessions == 0 || !summary_has_unknown(&app, start, end).await));
        let team = analytics(&app, &app.api_key, "team-overview", &q).await;
        assert_eq!(
            (team["failed_sessions"].as_i64(), team["analysed_sessions"].as_i64()),
            (Some(failed), Some(analysed))
        );
    }
    // A zone of half hours reads raw rows for its buckets, and still agrees.
    let total = assert_all_agree(&app, "start_date=2026-04-01&end_date=2026-04-20&tz=Asia/Kolkata").await;
    assert!(total > rust_decimal::Decimal::ZERO);

    // What the triggers kept equals a rebuild from the raw rows, row for row.
    let kept = rollup_rows(&app).await;
    assert!(kept.len() > 40, "{} rollup rows", kept.len());
    sqlx::query("SELECT crewkit_rebuild_rollups()").execute(&app.db).await.unwrap();
    assert_eq!(kept, rollup_rows(&app).await);
}

async fn summary_has_unknown(app: &TestApp, start: &str, end: &str) -> bool {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM conversations WHERE cost_usd IS NULL AND started_at >= $1::timestamptz AND started_at < $2::timestamptz",
    )
    .bind(start)
    .bind(end)
    .fetch_one(&app.db)
    .await
    .unwrap();
    n > 0
}
