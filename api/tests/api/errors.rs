//! Bad input gets the documented 4xx with a problem+json body naming what is wrong, never a 5xx.
//! (`TestApp` asserts the problem+json content type on every 4xx/5xx it sees.)

use crewkit_testkit::TestApp;
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_problem_details_naming_the_fault() {
    let app = TestApp::spawn_without_worker().await;
    let org = &app.org;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let events = format!("/{org}/observability/sessions/{sid}/events");

    let (s, p) = app.post_as(&app.api_key, &events, b"{\"events\": [".to_vec()).await;
    assert_eq!((s.as_u16(), p["code"].as_str()), (400, Some("invalid_json")), "{p}");

    let (s, p) = app.post_as(&app.api_key, &events, b"{\"evnts\": []}".to_vec()).await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("events")), "{p}");

    let (s, p) = app.post_as(&app.api_key, &events, b"".to_vec()).await;
    assert_eq!((s.as_u16(), p["code"].as_str()), (400, Some("missing_body")), "{p}");

    let (s, p) = app.post_as(&app.api_key, &events, TestApp::json(json!({"events": [{"event_type": 5}]}))).await;
    assert_eq!((s.as_u16(), p["errors"][0]["code"].as_str()), (422, Some("invalid_event_type")), "{p}");

    let (s, p) = app.post_as(&app.api_key, &events, TestApp::json(json!({"events": []}))).await;
    assert_eq!(
        (s.as_u16(), p["errors"][0]["field"].as_str(), p["errors"][0]["code"].as_str()),
        (422, Some("events"), Some("empty_batch")),
        "{p}"
    );

    let (s, p) = app.get(&format!("/{org}/sessions/run_0123456789abcdef0123456789abcdef")).await;
    assert_eq!(
        (s.as_u16(), p["errors"][0]["field"].as_str(), p["code"].as_str()),
        (400, Some("id"), Some("invalid_id")),
        "{p}"
    );

    let (s, p) = app.get(&format!("/{org}/sessions/ses_0123456789abcdef0123456789abcdef")).await;
    assert_eq!((s.as_u16(), p["code"].as_str()), (404, Some("not_found")), "{p}");

    let (s, p) = app.get(&format!("/{org}/jobs/evt_0123456789abcdef0123456789abcdef")).await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("id")), "{p}");

    for bad in ["per_page=0", "per_page=1000", "page=0", "page=x", "status=paused"] {
        let (s, p) = app.get(&format!("/{org}/sessions?{bad}")).await;
        let param = bad.split('=').next().unwrap();
        assert_eq!(s, 400, "{bad}: {p}");
        assert_eq!(p["errors"][0]["field"], param, "{bad}: {p}");
    }
    let (s, p) = app.get(&format!("/{org}/sessions?started_after=yesterday")).await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("started_after")), "{p}");

    let (s, p) = app.post(&format!("/{org}/sessions"), &json!({"remote_url": "not a url"})).await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("remote_url")), "{p}");
    let (s, p) =
        app.post(&format!("/{org}/sessions"), &json!({"repository_id": "repo_0123456789abcdef0123456789abcdef"})).await;
    assert_eq!((s.as_u16(), p["detail"].as_str()), (404, Some("repository not found")), "{p}");
    let (s, p) = app.post(&format!("/{org}/sessions"), &json!({"metadata": "text"})).await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("metadata")), "{p}");
    let (s, p) = app.post(&format!("/{org}/sessions"), &json!({"agent_session_id": 7})).await;
    assert_eq!((s.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("agent_session_id")), "{p}");
}

#[tokio::test]
async fn missing_or_unknown_keys_are_401_and_unknown_orgs_are_404() {
    let app = TestApp::spawn_without_worker().await;
    let resp = app.http.get(app.url(&format!("/{}/sessions", app.org))).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let (s, p) = app.get_as("ck_not_a_real_key", &format!("/{}/sessions", app.org)).await;
    assert_eq!((s.as_u16(), p["code"].as_str()), (401, Some("unauthorized")), "{p}");

    let (s, p) = app.get("/no-such-org/sessions").await;
    assert_eq!((s.as_u16(), p["code"].as_str()), (404, Some("not_found")), "{p}");

    let (s, _) = app.get("/no/such/route/at/all").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_nothing_is_enqueued() {
    let app = TestApp::spawn_without_worker().await;
    let sid = app.create_session(json!({})).await["id"].as_str().unwrap().to_string();
    let big = "x".repeat(6 * 1024 * 1024);
    let body = TestApp::json(json!({"events": [{"event_type": "Stop", "data": {"blob": big}}]}));
    let (s, p) = app.ingest(&sid, &body).await;
    assert_eq!((s.as_u16(), p["code"].as_str()), (413, Some("payload_too_large")), "{p}");
    assert_eq!(app.jobs_pushed("persist_events").await, 0);
}
