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
