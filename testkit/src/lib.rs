//! The test harness: spawns the real API and a real worker in-process against the real PostgreSQL
//! and Redis, each test with its own database and its own Redis key prefix, so tests run in
//! parallel without seeing each other. Helpers speak the domain (`create_session`, `ingest`,
//! `wait_for_job`) and poll with deadlines instead of sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;

use crewkit_api::admin::{self, AdminCommand};
use crewkit_api::startup::Application;
use crewkit_jobs::Config;

/// Where the shared test inputs live (`../shared` beside the checkout).
pub fn shared_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// Reads a file of `../shared/cases`; panics with a clear message when it is absent.
pub fn case(name: &str) -> Vec<u8> {
    let path = shared_dir().join("cases").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("case file {} is needed: {e}", path.display()))
}

fn base_database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://localhost/crewkit".into())
}

/// The same server URL with another database name.
fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("DATABASE_URL has a scheme");
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{authority}/{db}{query}")
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub config: Config,
    pub org: String,
    pub org_id: String,
    pub api_key: String,
    db_name: String,
    worker_stop: Option<oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// The API and one worker serving every queue.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(true, HashMap::new()).await
    }

    /// The variables that point a test at the Meilisearch of `MEILI_URL` (and `MEILI_MASTER_KEY`),
    /// or `None` when none is configured: the caller prints that it skipped.
    pub fn meilisearch_vars() -> Option<HashMap<String, String>> {
        let url = std::env::var("MEILI_URL").ok().filter(|u| !u.is_empty())?;
        let mut vars = HashMap::from([("MEILI_URL".to_string(), url)]);
        if let Ok(key) = std::env::var("MEILI_MASTER_KEY") {
            vars.insert("MEILI_MASTER_KEY".into(), key);
        }
        Some(vars)
    }

    /// The API alone: jobs stay queued.
    pub async fn spawn_without_worker() -> TestApp {
        Self::spawn_with(false, HashMap::new()).await
    }

    pub async fn spawn_with(worker: bool, mut vars: HashMap<String, String>) -> TestApp {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("ck_test_{}", &id[..16]);
        let base = base_database_url();
        let admin_db = crewkit_jobs::store::lazy_pool(&with_database(&base, "postgres"), 1).expect("pool");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin_db)
            .await
            .expect("PostgreSQL must be running (script/test starts one)");
        // A test may set the database's own time zone, to prove results do not depend on it.
        if let Some(tz) = vars.remove("TEST_DB_TIMEZONE") {
            sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {db_name} SET timezone = '{tz}'")))
                .execute(&admin_db)
                .await
                .expect("set database time zone");
        }
        admin_db.close().await;

        vars.insert("DATABASE_URL".into(), with_database(&base, &db_name));
        vars.entry("REDIS_URL".into())
            .or_insert_with(|| std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()));
        vars.insert("CREWKIT_QUEUE_PREFIX".into(), format!("ck_test_{}", &id[..16]));
        vars.insert("CREWKIT_BIND".into(), "127.0.0.1:0".into());
        vars.entry("CREWKIT_WORKER_POLL_MS".into()).or_insert_with(|| "20".into());
        vars.entry("CREWKIT_SHUTDOWN_TIMEOUT_SECS".into()).or_insert_with(|| "2".into());
        // A test that asks for Meilisearch (`with_meilisearch`) gets an index of its own.
        if vars.contains_key("MEILI_URL") {
            vars.insert("MEILI_INDEX_PREFIX".into(), format!("ck_test_{}_", &id[..16]));
        }
        let config = Config::from_vars(&vars).expect("test config");

        let app = Application::build(config.clone(), true).await.expect("API builds");
        let port = app.port();
        let db = app.state().db.clone();
        tokio::spawn(app.run_until_stopped(std::future::pending()));

        let (worker_stop, worker) = if worker {
            let (tx, rx) = oneshot::channel::<()>();
            let handle = tokio::spawn(crewkit_workers::run(config.clone(), &[], async {
                let _ = rx.await;
            }));
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };

        let org = format!("org-{}", &id[..8]);
        let out = admin::run(
            &config,
            AdminCommand::CreateOrg { slug: org.clone(), admin_email: "admin@example.com".into(), name: None },
        )
        .await
        .expect("create org");
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            db,
            org_id: out["org_id"].as_str().unwrap().to_string(),
            api_key: out["api_key"].as_str().unwrap().to_string(),
            org,
            config,
            db_name,
            worker_stop,
            worker,
        }
    }

    /// Starts another API process on the same database and Redis (as a second replica would
    /// run); returns its base URL.
    pub async fn another_api(&self) -> String {
        let app = Application::build(self.config.clone(), false).await.expect("second API builds");
        let port = app.port();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        format!("http://127.0.0.1:{port}")
    }

    /// Starts another worker process's worth of workers (as a supervisor restarting one would);
    /// it runs until the test ends.
    pub fn start_another_worker(&self) {
        let config = self.config.clone();
        tokio::spawn(async move { crewkit_workers::run(config, &[], std::future::pending()).await });
    }

    /// A key for another user of this org with the given role.
    pub async fn key_with_role(&self, email: &str, role: &str) -> String {
        let out = admin::run(
            &self.config,
            AdminCommand::CreateKey { org: self.org.clone(), email: email.into(), role: role.into() },
        )
        .await
        .expect("create key");
        out["api_key"].as_str().unwrap().to_string()
    }

    /// A second organisation on the same stack; its slug and admin key.
    pub async fn other_org(&self) -> (String, String) {
        let slug = format!("other-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let out = admin::run(
            &self.config,
            AdminCommand::CreateOrg { slug: slug.clone(), admin_email: "b@example.com".into(), name: None },
        )
        .await
        .expect("create org");
        (slug, out["api_key"].as_str().unwrap().to_string())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET `path` with this org's admin key; status and JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(&self.api_key, path).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).bearer_auth(key).send().await.expect("request");
        into_json(resp, path != "/readyz").await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        into_json(resp, true).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_as(&self.api_key, path, serde_json::to_vec(body).unwrap()).await
    }

    /// Creates a session; its JSON.
    pub async fn create_session(&self, body: Value) -> Value {
        let (status, v) = self.post(&format!("/{}/sessions", self.org), &body).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "create session: {status} {v}");
        v
    }

    /// Posts raw bytes as an event batch for the session (our id or the agent's).
    pub async fn ingest(&self, session: &str, body: &[u8]) -> (StatusCode, Value) {
        self.post_as(&self.api_key, &format!("/{}/observability/sessions/{session}/events", self.org), body.to_vec())
            .await
    }

    /// Waits (at most 30 s) until the job has ended; its final JSON.
    pub async fn wait_for_job(&self, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, job) = self.get(&format!("/{}/jobs/{job_id}", self.org)).await;
            assert_eq!(status, StatusCode::OK, "job {job_id}: {job}");
            if job["status"] == "succeeded" || job["status"] == "failed" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} did not finish: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ingests and waits for the job to succeed; the 202 body.
    pub async fn ingest_and_wait(&self, session: &str, body: &[u8]) -> Value {
        let (status, accepted) = self.ingest(session, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let job = self.wait_for_job(accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        accepted
    }

    /// Every stored event of a session, in timeline order.
    pub async fn events(&self, session: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
            let (status, page) =
                self.get(&format!("/{}/observability/sessions/{session}/events?limit=1000{q}", self.org)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            out.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(a) => after = Some(a),
                None => return out,
            }
        }
    }

    /// Jobs ever pushed to a queue kind (apalis keeps every job's data in one hash).
    pub async fn jobs_pushed(&self, kind: &str) -> u64 {
        let client = redis::Client::open(self.config.redis_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("HLEN")
            .arg(format!("{}:{kind}:data", self.config.queue_prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Stops the in-process worker and waits for it to finish its in-flight jobs.
    pub async fn stop_worker(&mut self) {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.worker.take() {
            let _ = h.await;
        }
    }

    pub fn json(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }
}

/// Status and JSON body; with `problem`, asserts that an error status came as problem+json.
async fn into_json(resp: reqwest::Response, problem: bool) -> (StatusCode, Value) {
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "_raw": text, "_content_type": ct }));
    if problem && (status.is_client_error() || status.is_server_error()) {
        assert_eq!(ct, "application/problem+json", "errors are problem+json: {status} {text}");
    }
    (status, body)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        let db_url = with_database(&base_database_url(), "postgres");
        let db_name = self.db_name.clone();
        let redis_url = self.config.redis_url.clone();
        let prefix = self.config.queue_prefix.clone();
        // Best effort, on a thread of its own: Drop cannot await on the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(pool) = crewkit_jobs::store::lazy_pool(&db_url, 1) {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")))
                        .execute(&pool)
                        .await;
                }
                if let Ok(client) = redis::Client::open(redis_url.as_str())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> =
                        redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            });
        })
        .join();
    }
}
