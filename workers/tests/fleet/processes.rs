//! Fleet semantics with real worker processes: attempts, retries, panics, kills, SIGTERM.

use std::process::Command;

use crewkit_testkit::TestApp;
use serde_json::json;

use super::{eventually, job, job_in, worker_process};

async fn ended_session_job(app: &TestApp) -> (String, String) {
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let (status, ended) = app.post(&format!("/{}/sessions/{sid}/end", app.org), &json!({})).await;
    assert_eq!(status, 202);
    (sid, ended["job"]["id"].as_str().unwrap().to_string())
}

async fn analyses(app: &TestApp) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM session_analyses").fetch_one(&app.db).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_always_fails_makes_exactly_its_attempts_then_fails_and_can_be_retried() {
    let app = TestApp::spawn_without_worker().await;
    let mut faulty = worker_process(&app, "analysis", &[("CREWKIT_FAULTS", "analyze_session=fail")]);
    let (_, job_id) = ended_session_job(&app).await;
    let failed = job_in(&app, &job_id, "failed", 60).await;
    assert_eq!(failed["attempts"], 5, "{failed}");
    assert_eq!(failed["max_attempts"], 5);
    assert!(failed["error"].as_str().unwrap().contains("gave up after 5 attempts"), "{failed}");
    faulty.kill().unwrap();
    faulty.wait().unwrap();

    let member = app.key_with_role("m@example.com", "member").await;
    let (status, _) = app.post_as(&member, &format!("/{}/jobs/{job_id}/retry", app.org), b"{}".to_vec()).await;
    assert_eq!(status, 403);
    let mut healthy = worker_process(&app, "analysis", &[]);
    let (status, retried) = app.post(&format!("/{}/jobs/{job_id}/retry", app.org), &json!({})).await;
    assert_eq!(status, 202, "{retried}");
    let done = job_in(&app, &job_id, "succeeded", 30).await;
    assert_eq!(done["attempts"], 1);
    let (status, p) = app.post(&format!("/{}/jobs/{job_id}/retry", app.org), &json!({})).await;
    assert_eq!((status.as_u16(), p["code"].as_str()), (409, Some("not_retryable")));
    healthy.kill().unwrap();
    let _ = healthy.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_job_fails_alone_and_the_worker_goes_on() {
    let app = TestApp::spawn_without_worker().await;
    let mut worker = worker_process(&app, "ingest", &[("CREWKIT_FAULTS", "persist_events=panic_first:1")]);
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..11 {
        let (_, a) =
            app.ingest(&sid, &TestApp::json(json!({"events": [{"event_type": "Stop", "id": format!("e{i}")}]}))).await;
        ids.push(a["job_id"].as_str().unwrap().to_string());
        if i == 0 {
            job_in(&app, &ids[0], "failed", 30).await;
        }
    }
    let first = job(&app, &ids[0]).await;
    assert!(first["error"].as_str().unwrap().contains("panicked"), "{first}");
    for id in &ids[1..] {
        job_in(&app, id, "succeeded", 30).await;
    }
    assert!(worker.try_wait().unwrap().is_none(), "the worker process is still running");
    worker.kill().unwrap();
    let _ = worker.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_job_completes_once_on_another_worker() {
    let app = TestApp::spawn_without_worker().await;
    let env = [("CREWKIT_FAULTS", "analyze_session=delay:4000"), ("CREWKIT_WORKER_HEARTBEAT_SECS", "1")];
    let mut first = worker_process(&app, "analysis", &env);
    let (_, job_id) = ended_session_job(&app).await;
    job_in(&app, &job_id, "running", 30).await;
    let mut second = worker_process(&app, "analysis", &env);
    first.kill().unwrap(); // SIGKILL: no chance to hand the job back
    first.wait().unwrap();
    let done = job_in(&app, &job_id, "succeeded", 60).await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(analyses(&app).await, 1, "the job's effect happened once");
    second.kill().unwrap();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_job_finish_before_the_worker_exits() {
    let app = TestApp::spawn_without_worker().await;
    let env = [("CREWKIT_FAULTS", "analyze_session=delay:2000"), ("CREWKIT_SHUTDOWN_TIMEOUT_SECS", "15")];
    let mut worker = worker_process(&app, "analysis", &env);
    let (_, job_id) = ended_session_job(&app).await;
    job_in(&app, &job_id, "running", 30).await;
    let term = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status().unwrap();
    assert!(term.success());
    let status = eventually(30, "the worker to exit", || {
        let s = worker.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let done = job(&app, &job_id).await;
    assert_eq!((done["status"].as_str(), done["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{done}");
    assert_eq!(analyses(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_serves_its_job_metrics() {
    let app = TestApp::spawn_without_worker().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let mut worker = worker_process(&app, "ingest", &[("CREWKIT_METRICS_BIND", bind.as_str())]);
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    app.ingest_and_wait(&sid, &TestApp::json(json!({"events": [{"event_type": "Stop"}]}))).await;
    let text = eventually(20, "the worker's metrics", || async {
        let resp = app.http.get(format!("http://{bind}/metrics")).send().await.ok()?;
        let text = resp.text().await.ok()?;
        text.contains(r#"crewkit_jobs_succeeded_total{kind="persist_events"} 1"#).then_some(text)
    })
    .await;
    assert!(text.contains(r#"crewkit_job_duration_seconds_count{kind="persist_events"} 1"#), "{text}");
    assert!(text.contains(r#"crewkit_queue_depth{kind="persist_events"} 0"#), "{text}");
    worker.kill().unwrap();
    let _ = worker.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_queued_by_end_waits_for_the_batch_accepted_before_it() {
    // Persisting takes 1.5 s, so the batch is still in the ingest queue when `end` queues its
    // index job, which runs at once: it must wait for the batch, or the document it writes lacks
    // the session's last prompt until a debounced re-index comes by.
    let app = TestApp::spawn_without_worker().await;
    let mut ingest = worker_process(&app, "ingest", &[("CREWKIT_FAULTS", "persist_events=delay:1500")]);
    let mut search = worker_process(&app, "search", &[]);
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let prompt =
        json!({"events": [{"event_type": "UserPromptSubmit", "data": {"prompt": "why is the quokkabridge slow"}}]});
    let (status, _) = app.ingest(&sid, &TestApp::json(prompt)).await;
    assert_eq!(status, 202);
    let request_id = format!("end-{}", uuid::Uuid::new_v4());
    let ended = app
        .http
        .post(app.url(&format!("/{}/sessions/{sid}/end", app.org)))
        .bearer_auth(&app.api_key)
        .header("x-request-id", &request_id)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 202);
    eventually(30, "the end's index job to succeed", || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM jobs WHERE kind = 'index_session' AND request_id = $1")
                .bind(&request_id)
                .fetch_optional(&app.db)
                .await
                .unwrap();
        (status.as_deref() == Some("succeeded")).then_some(())
    })
    .await;
    let (_, found) = app.get(&format!("/{}/sessions/search?q=quokkabridge", app.org)).await;
    assert_eq!(found["total"], 1, "the document the end's job wrote has the prompt: {found}");
    assert_eq!(found["data"][0]["id"], sid.as_str());
    for w in [&mut ingest, &mut search] {
        w.kill().unwrap();
        let _ = w.wait();
    }
}
