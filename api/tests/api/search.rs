//! Search, fed by index_session jobs: every test runs on the embedded PostgreSQL backend, and
//! again on Meilisearch when `MEILI_URL` names one (else that run says it skipped).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crewkit_testkit::TestApp;
use serde_json::{Value, json};

/// Searches until the expected number of hits shows up (indexing is asynchronous) or 20 s pass.
async fn search_until(app: &TestApp, key: &str, org: &str, q: &str, want: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("/{org}/sessions/search?q={}", urlencode(q));
        let (status, res) = app.get_as(key, &url).await;
        assert_eq!(status, 200, "{q}: {res}");
        if res["data"].as_array().unwrap().len() >= want || Instant::now() > deadline {
            return res;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Postgres,
    Meilisearch,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Meilisearch => "meilisearch",
        }
    }

    /// The app on this engine; `None` (after saying so) when Meilisearch is not configured.
    async fn spawn(self, worker: bool, test: &str) -> Option<TestApp> {
        let vars = match self {
            Engine::Postgres => HashMap::new(),
            Engine::Meilisearch => match TestApp::meilisearch_vars() {
                Some(vars) => vars,
                None => {
                    eprintln!("SKIPPED {test} on meilisearch: MEILI_URL is not set");
                    return None;
                }
            },
        };
        Some(TestApp::spawn_with(worker, vars).await)
    }
}

/// One test per engine: `name::postgres` and `name::meilisearch`.
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Engine::Postgres).await
            }
            #[tokio::test]
            async fn meilisearch() {
                super::$name(super::Engine::Meilisearch).await
            }
        }
    };
}

on_both_engines!(sessions_are_found_by_summary_prompt_and_file_even_with_a_typo);
on_both_engines!(c10_search_never_returns_another_orgs_sessions_whatever_the_query);
on_both_engines!(a_burst_of_updates_is_indexed_a_bounded_number_of_times);
on_both_engines!(admin_reindex_rebuilds_the_index_from_postgres);

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn sessions_are_found_by_summary_prompt_and_file_even_with_a_typo(engine: Engine) {
    let Some(app) = engine.spawn(true, "typo search").await else { return };
    let s = app.create_session(json!({"agent_session_id": "srch", "remote_url": "git@github.com:acme/backend"})).await;
    let sid = s["id"].as_str().unwrap();
    let events = json!({"events": [
        {"event_type": "UserPromptSubmit", "data": {"prompt": "please speed up the ingestion worker"}},
        {"event_type": "PreToolUse", "data": {"tool_name": "Edit", "tool_use_id": "t1", "tool_input": {"file_path": "/src/worker/batcher.rs"}}}
    ]});
    app.ingest_and_wait(sid, &TestApp::json(events)).await;
    let ended = Instant::now();
    app.post(
        &format!("/{}/sessions/{sid}/end", app.org),
        &json!({"summary": "Added context compaction to the worker"}),
    )
    .await;
    // Time from `end` to searchable (the debounce is most of it).
    let deadline = ended + Duration::from_secs(20);
    loop {
        let (_, res) = app.get(&format!("/{}/sessions/search?q=compaction", app.org)).await;
        if res["total"] == 1 {
            eprintln!("end → searchable on {}: {} ms", engine.name(), ended.elapsed().as_millis());
            break;
        }
        assert!(Instant::now() < deadline, "never searchable: {res}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for q in ["compaction", "compactoin", "ingestion", "batcher.rs", "acme/backend"] {
        let res = search_until(&app, &app.api_key, &app.org, q, 1).await;
        assert_eq!(res["data"][0]["id"], sid, "{q}: {res}");
        assert_eq!(res["engine"], engine.name());
    }
    let res = search_until(&app, &app.api_key, &app.org, "compaction", 1).await;
    assert!(res["data"][0]["highlights"]["summary"].as_str().unwrap().contains("<em>compaction</em>"), "{res}");
    assert_eq!(res["data"][0]["status"], "ended");
    let (_, none) = app.get(&format!("/{}/sessions/search?q=kubernetes", app.org)).await;
    assert_eq!(none["total"], 0);
    let (_, filtered) = app.get(&format!("/{}/sessions/search?q=compaction&status=active", app.org)).await;
    assert_eq!(filtered["total"], 0);
}

async fn c10_search_never_returns_another_orgs_sessions_whatever_the_query(engine: Engine) {
    let Some(app) = engine.spawn(true, "c10").await else { return };
    let (b, b_key) = app.other_org().await;
    let (_, bs) =
        app.post_as(&b_key, &format!("/{b}/sessions"), TestApp::json(json!({"title": "secret merger plan"}))).await;
    let mine = app.create_session(json!({"title": "public roadmap plan"})).await;
    search_until(&app, &b_key, &b, "secret", 1).await;
    search_until(&app, &app.api_key, &app.org, "roadmap", 1).await;

    for q in ["plan", "secret", r#"" OR org_id = ""#, "secret OR plan", "org_id", r#"\" OR 1=1 --"#, "plan\") OR (\"x"]
    {
        let url = format!("/{}/sessions/search?q={}", app.org, urlencode(q));
        let (status, res) = app.get(&url).await;
        assert_eq!(status, 200, "{q}: {res}");
        for hit in res["data"].as_array().unwrap() {
            assert_eq!(hit["id"], mine["id"], "{q}: leaked {hit}");
        }
        assert!(!res.to_string().contains(bs["id"].as_str().unwrap()), "{q}");
    }
    // Filter values are typed literals too: quotes and operators in them match nothing else.
    for f in
        [r#"agent_name=x" OR org_id != "none"#, r#"repo=a\" OR status = "active"#, "status=active&repo=%22%20OR%20%22"]
    {
        let f = f.replace(' ', "%20").replace('"', "%22");
        let (status, res) = app.get(&format!("/{}/sessions/search?q=plan&{f}", app.org)).await;
        assert!(status == 200 || status == 400, "{f}: {status} {res}");
        if status == 200 {
            assert_eq!(res["total"], 0, "{f}: {res}");
        }
    }
    let (status, _) = app.get(&format!("/{b}/sessions/search?q=secret")).await;
    assert_eq!(status, 404, "another org's path");
}

#[tokio::test]
async fn meilisearch_down_means_503_and_not_ready_never_empty_results() {
    // Nothing listens on port 9: every Meilisearch call fails as it would with the server down.
    let vars = HashMap::from([("MEILI_URL".to_string(), "http://127.0.0.1:9".to_string())]);
    let app = TestApp::spawn_with(true, vars).await;
    let s = app.create_session(json!({"title": "unreachable"})).await;
    let (status, p) = app.get(&format!("/{}/sessions/search?q=unreachable", app.org)).await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(p["code"], "unavailable");
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_ne!(ready["checks"]["meilisearch"], "ok", "{ready}");
    assert_eq!(ready["checks"]["postgres"], "ok");
    // The index job fails and is retried, never marked done.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, error FROM jobs WHERE kind = 'index_session' AND session_id = $1")
                .bind(s["id"].as_str().unwrap().parse::<crewkit_jobs::ids::SessionId>().unwrap())
                .fetch_optional(&app.db)
                .await
                .unwrap();
        if let Some((status, Some(err))) = &row {
            assert_ne!(status, "succeeded");
            assert!(err.contains("meilisearch"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "the index job never ran: {row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_burst_of_updates_is_indexed_a_bounded_number_of_times(engine: Engine) {
    let Some(app) = engine.spawn(true, "burst").await else { return };
    let s = app.create_session(json!({})).await;
    let sid = s["id"].as_str().unwrap();
    for i in 0..50 {
        let resp = app
            .http
            .patch(app.url(&format!("/{}/sessions/{sid}", app.org)))
            .bearer_auth(&app.api_key)
            .json(&json!({"title": format!("revision {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The last update is what ends up indexed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = search_until(&app, &app.api_key, &app.org, "revision", 1).await;
        if res["data"][0]["title"] == "revision 49" {
            break;
        }
        assert!(Instant::now() < deadline, "the last update was never indexed: {res}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A job's record is written when its attempt ends, just after the document it wrote.
    let runs = loop {
        let (runs,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE kind = 'index_session'").fetch_one(&app.db).await.unwrap();
        if runs > 0 || Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!((1..=10).contains(&runs), "50 updates were indexed {runs} times");
}

#[tokio::test]
async fn a_blank_or_oversized_query_is_400() {
    let app = TestApp::spawn_without_worker().await;
    for q in ["", "%20%20", &"x".repeat(513)] {
        let (status, p) = app.get(&format!("/{}/sessions/search?q={q}", app.org)).await;
        assert_eq!((status.as_u16(), p["errors"][0]["field"].as_str()), (400, Some("q")), "{p}");
    }
    let (status, p) = app.get(&format!("/{}/sessions/search", app.org)).await;
    assert_eq!(status, 400, "{p}");
}

async fn admin_reindex_rebuilds_the_index_from_postgres(engine: Engine) {
    // No worker: nothing gets indexed by jobs.
    let Some(app) = engine.spawn(false, "reindex").await else { return };
    let s = app.create_session(json!({"title": "rebuild me"})).await;
    let (_, before) = app.get(&format!("/{}/sessions/search?q=rebuild", app.org)).await;
    assert_eq!(before["total"], 0);
    let out =
        crewkit_api::admin::run(&app.config, crewkit_api::admin::AdminCommand::Reindex { org: Some(app.org.clone()) })
            .await
            .unwrap();
    assert_eq!((out["indexed"].as_i64(), out["engine"].as_str()), (Some(1), Some(engine.name())));
    let (_, after) = app.get(&format!("/{}/sessions/search?q=rebuild", app.org)).await;
    assert_eq!(after["data"][0]["id"], s["id"]);
}

/// Waits for a Meilisearch task (by uid) to finish; returns it.
async fn meili_task(app: &TestApp, url: &str, key: &str, uid: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t: Value =
            app.http.get(format!("{url}/tasks/{uid}")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
        if matches!(t["status"].as_str(), Some("succeeded" | "failed" | "canceled")) {
            return t;
        }
        assert!(Instant::now() < deadline, "task {uid} never finished: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn c11_the_index_has_primary_key_id_and_a_failed_indexing_task_fails_the_job() {
    let Some(vars) = TestApp::meilisearch_vars() else {
        eprintln!("SKIPPED c11 on meilisearch: MEILI_URL is not set");
        return;
    };
    let app = TestApp::spawn_with(true, vars).await;
    let url = app.config.meili_url.clone().unwrap();
    let key = app.config.meili_master_key.clone().unwrap_or_default();
    let index = format!("{}sessions", app.config.meili_index_prefix);
    // Documents carry id, org_id, user_id and project_id: the primary key was set, not guessed.
    let s = app.create_session(json!({"title": "primary key check"})).await;
    let found = search_until(&app, &app.api_key, &app.org, "primary", 1).await;
    assert_eq!(found["data"][0]["id"], s["id"], "{found}");
    let idx: Value =
        app.http.get(format!("{url}/indexes/{index}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(idx["primaryKey"], "id", "{idx}");

    // Replace the index by one keyed on org_id: the next document write's task fails.
    let del: Value =
        app.http.delete(format!("{url}/indexes/{index}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    meili_task(&app, &url, &key, del["taskUid"].as_u64().unwrap()).await;
    let created: Value = app
        .http
        .post(format!("{url}/indexes"))
        .bearer_auth(&key)
        .json(&json!({"uid": index, "primaryKey": "org_id"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meili_task(&app, &url, &key, created["taskUid"].as_u64().unwrap()).await["status"], "succeeded");
    let doomed = app.create_session(json!({"title": "never indexed"})).await;
    let sid: crewkit_jobs::ids::SessionId = doomed["id"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, error) = loop {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, error FROM jobs WHERE kind = 'index_session' AND session_id = $1")
                .bind(sid)
                .fetch_optional(&app.db)
                .await
                .unwrap();
        if let Some((status, Some(err))) = row {
            break (status, err);
        }
        assert!(Instant::now() < deadline, "the index job never reported its failure");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(status, "succeeded");
    assert!(error.contains("task failed"), "{error}");
}
