//! Sessions: create (idempotent, repository from the remote URL), list filters, get.

use crewkit_testkit::TestApp;
use serde_json::json;

#[tokio::test]
async fn creating_a_session_twice_with_one_agent_session_id_returns_the_first() {
    let app = TestApp::spawn_without_worker().await;
    let body = json!({"agent_session_id": "abc", "remote_url": "git@github.com:acme/backend", "component": "api"});
    let (s1, first) = app.post(&format!("/{}/sessions", app.org), &body).await;
    let (s2, second) = app.post(&format!("/{}/sessions", app.org), &body).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 200));
    assert_eq!(first["id"], second["id"]);
    assert!(first["id"].as_str().unwrap().starts_with("ses_"));
    assert!(first["run_id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(first["thread_id"], first["id"]);
    assert_eq!(first["repo"], "acme/backend");
    assert_eq!(first["remote_url"], "https://github.com/acme/backend");
    assert_eq!(first["agent_name"], "claude-code");
    assert_eq!(first["status"], "active");
}

#[tokio::test]
async fn ssh_and_https_remotes_are_one_repository() {
    let app = TestApp::spawn_without_worker().await;
    let a = app.create_session(json!({"remote_url": "git@github.com:acme/backend"})).await;
    let b = app.create_session(json!({"remote_url": "https://github.com/acme/backend.git"})).await;
    assert_eq!(a["repository_id"], b["repository_id"]);
    let c = app.create_session(json!({"repository_id": a["repository_id"]})).await;
    assert_eq!(c["repo"], "acme/backend");
}

#[tokio::test]
async fn a_later_conversation_joins_its_run_and_its_parents_thread() {
    let app = TestApp::spawn_without_worker().await;
    let first = app.create_session(json!({})).await;
    let second = app.create_session(json!({"run_id": first["run_id"], "parent_session_id": first["id"]})).await;
    assert_eq!(second["run_id"], first["run_id"]);
    assert_eq!(second["thread_id"], first["id"]);
    let (_, h) = app.get(&format!("/{}/sessions/{}/hierarchy", app.org, second["id"].as_str().unwrap())).await;
    assert_eq!(h["run"]["id"], first["run_id"]);
    assert_eq!(h["conversations"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_list_filters_by_repo_agent_user_and_status() {
    let app = TestApp::spawn_without_worker().await;
    let member = app.key_with_role("m@example.com", "member").await;
    app.create_session(json!({"remote_url": "git@github.com:acme/backend", "agent_name": "claude-code"})).await;
    app.create_session(json!({"remote_url": "git@github.com:acme/web", "agent_name": "codex"})).await;
    app.post_as(&member, &format!("/{}/sessions", app.org), TestApp::json(json!({"agent_name": "codex"}))).await;

    let total = |q: &'static str| {
        let app = &app;
        let member = member.clone();
        async move {
            let (s, list) = app.get_as(&member, &format!("/{}/sessions?{q}", app.org)).await;
            assert_eq!(s, 200, "{list}");
            list["total"].as_i64().unwrap()
        }
    };
    assert_eq!(total("").await, 3);
    assert_eq!(total("repo=acme/backend").await, 1);
    assert_eq!(total("agent_name=codex").await, 2);
    assert_eq!(total("current_user_only=true").await, 1);
    assert_eq!(total("status=active").await, 3);
    assert_eq!(total("status=ended").await, 0);
    assert_eq!(total("started_after=2000-01-01").await, 3);
    assert_eq!(total("started_before=2000-01-01").await, 0);
}

#[tokio::test]
async fn a_session_can_be_read_by_its_org_slug_or_its_org_id() {
    let app = TestApp::spawn_without_worker().await;
    let s = app.create_session(json!({"title": "fix login"})).await;
    let id = s["id"].as_str().unwrap();
    let (st, by_slug) = app.get(&format!("/{}/sessions/{id}", app.org)).await;
    let (st2, by_id) = app.get(&format!("/{}/sessions/{id}", app.org_id)).await;
    assert_eq!((st.as_u16(), st2.as_u16()), (200, 200));
    assert_eq!(by_slug["title"], "fix login");
    assert_eq!(by_id["id"], by_slug["id"]);
    assert_eq!(by_slug["run"]["id"], s["run_id"]);
    assert_eq!(by_slug["task_count"], 0);
}

#[tokio::test]
async fn a_list_counts_up_to_ten_thousand_and_says_when_it_stopped() {
    let app = TestApp::spawn_without_worker().await;
    let first = app.create_session(serde_json::json!({"started_at": "2026-06-01T12:00:00Z"})).await;
    sqlx::query(
        "INSERT INTO conversations (id, org_id, run_id, user_id, thread_id, started_at)
         SELECT gen_random_uuid(), org_id, run_id, user_id, gen_random_uuid(), started_at - g * interval '1 minute'
           FROM conversations, generate_series(1, 10005) g",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (status, page) = app.get(&format!("/{}/sessions?per_page=5", app.org)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["total"].as_i64(), page["total_capped"].as_bool()), (Some(10_000), Some(true)));
    assert_eq!(page["data"][0]["id"], first["id"], "newest first");
    // A narrower filter counts exactly again.
    let (_, narrow) = app.get(&format!("/{}/sessions?started_after=2026-06-01T11:00:00Z", app.org)).await;
    assert_eq!((narrow["total"].as_i64(), narrow["total_capped"].as_bool()), (Some(61), Some(false)), "{narrow}");
}
