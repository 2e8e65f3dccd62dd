//! c10: a key of org A on every org-B path gets 404 and enqueues nothing.

use crewkit_testkit::TestApp;
use serde_json::json;

#[tokio::test]
async fn c10_a_key_of_one_org_sees_nothing_of_another() {
    let app = TestApp::spawn().await;
    let (b, b_key) = app.other_org().await;
    let (_, b_session) =
        app.post_as(&b_key, &format!("/{b}/sessions"), TestApp::json(json!({"agent_session_id": "b-1"}))).await;
    let b_sid = b_session["id"].as_str().unwrap();
    let (_, b_job) = app
        .post_as(
            &b_key,
            &format!("/{b}/observability/sessions/{b_sid}/events"),
            TestApp::json(json!({"events": [{"event_type": "Stop"}]})),
        )
        .await;
    let b_job_id = b_job["job_id"].as_str().unwrap();
    let pushed = app.jobs_pushed("persist_events").await;

    // Org A's key on org B's paths.
    let a = &app.api_key;
    for path in [
        format!("/{b}/sessions"),
        format!("/{b}/sessions/{b_sid}"),
        format!("/{b}/sessions/{b_sid}/hierarchy"),
        format!("/{b}/observability/sessions/{b_sid}/events"),
        format!("/{b}/jobs/{b_job_id}"),
    ] {
        let (s, p) = app.get_as(a, &path).await;
        assert_eq!(s, 404, "{path}: {p}");
    }
    let (s, _) = app
        .post_as(
            a,
            &format!("/{b}/observability/sessions/{b_sid}/events"),
            TestApp::json(json!({"events": [{"event_type": "Stop"}]})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app.post_as(a, &format!("/{b}/sessions"), TestApp::json(json!({}))).await;
    assert_eq!(s, 404);
    assert_eq!(app.jobs_pushed("persist_events").await, pushed, "nothing enqueued");

    // Org A's own paths never show B's session, by id or by agent session id.
    let (s, _) = app.get(&format!("/{}/sessions/{b_sid}", app.org)).await;
    assert_eq!(s, 404);
    let (s, _) = app.ingest("b-1", &TestApp::json(json!({"events": [{"event_type": "Stop"}]}))).await;
    assert_eq!(s, 404);
    let (_, list) = app.get(&format!("/{}/sessions?agent_session_id=b-1", app.org)).await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn every_org_scoped_operation_in_the_spec_is_404_for_another_orgs_key() {
    let app = TestApp::spawn_without_worker().await;
    let (b, b_key) = app.other_org().await;
    let post_b = |path: String, body: serde_json::Value| {
        let app = &app;
        let key = b_key.clone();
        async move { app.post_as(&key, &path, TestApp::json(body)).await.1 }
    };
    let session = post_b(format!("/{b}/sessions"), json!({})).await;
    let sid = session["id"].as_str().unwrap().to_string();
    let ended = post_b(format!("/{b}/sessions/{sid}/end"), json!({})).await;
    let job_id = ended["job"]["id"].as_str().unwrap().to_string();
    let key = post_b(format!("/{b}/api-keys"), json!({})).await;
    let key_id = key["id"].as_str().unwrap().to_string();
    let pushed = app.jobs_pushed("analyze_session").await;

    let spec: serde_json::Value = serde_json::from_str(&crewkit_api::startup::openapi_json()).unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/{org_id}") {
            continue;
        }
        let id = if path.starts_with("/{org_id}/jobs/") {
            &job_id
        } else if path.starts_with("/{org_id}/api-keys/") {
            &key_id
        } else {
            &sid
        };
        let url = path.replace("{org_id}", &b).replace("{session_id}", &sid).replace("{id}", id);
        for method in item.as_object().unwrap().keys() {
            let query = if path.ends_with("/search") { "?q=plan" } else { "" };
            let resp = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&format!("{url}{query}")))
                .bearer_auth(&app.api_key)
                .header("content-type", "application/json")
                .body(r#"{"events": [{"event_type": "Stop"}], "email": "x@example.com"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 404, "{method} {url}");
            checked += 1;
        }
    }
    assert!(checked >= 24, "only {checked} operations checked");
    assert_eq!(app.jobs_pushed("analyze_session").await, pushed, "nothing enqueued");
    let (_, still) = app.get_as(&b_key, &format!("/{b}/api-keys")).await;
    assert!(still["data"].as_array().unwrap().iter().all(|k| k["revoked_at"].is_null()), "no key was revoked");
}

#[tokio::test]
async fn every_session_operation_is_404_for_a_session_that_does_not_exist() {
    let app = TestApp::spawn_without_worker().await;
    let missing = "ses_0123456789abcdef0123456789abcdef";
    let org = &app.org;
    for (method, path) in [
        ("GET", format!("/{org}/sessions/{missing}")),
        ("PATCH", format!("/{org}/sessions/{missing}")),
        ("POST", format!("/{org}/sessions/{missing}/end")),
        ("GET", format!("/{org}/sessions/{missing}/hierarchy")),
        ("POST", format!("/{org}/sessions/{missing}/compact")),
        ("GET", format!("/{org}/sessions/{missing}/compactions")),
        ("POST", format!("/{org}/observability/sessions/{missing}/events")),
        ("GET", format!("/{org}/observability/sessions/{missing}/events")),
        ("GET", format!("/{org}/jobs/job_0123456789abcdef0123456789abcdef")),
        ("POST", format!("/{org}/jobs/job_0123456789abcdef0123456789abcdef/retry")),
        ("DELETE", format!("/{org}/api-keys/key_0123456789abcdef0123456789abcdef")),
    ] {
        let resp = app
            .http
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(&app.api_key)
            .header("content-type", "application/json")
            .body(r#"{"events": [{"event_type": "Stop"}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
}
