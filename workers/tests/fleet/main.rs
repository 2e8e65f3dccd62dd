//! The worker fleet: each job kind's result on real input, and the fleet's semantics with real
//! processes (`crewkit-worker`), real Redis and real PostgreSQL.

mod compose;
mod jobs;
mod processes;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crewkit_testkit::TestApp;
use serde_json::Value;

/// Starts a `crewkit-worker` process against the test's database and Redis prefix.
pub fn worker_process(app: &TestApp, queues: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crewkit-worker"));
    cmd.arg("--queues")
        .arg(queues)
        .env("DATABASE_URL", &app.config.database_url)
        .env("REDIS_URL", &app.config.redis_url)
        .env("CREWKIT_QUEUE_PREFIX", &app.config.queue_prefix)
        .env("CREWKIT_WORKER_POLL_MS", "20")
        .env("CREWKIT_SCHEDULE_SECS", "3600")
        .env("RUST_LOG", "warn")
        // The API under test searches PostgreSQL whatever this shell exports.
        .env_remove("MEILI_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("crewkit-worker starts")
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The job's current JSON.
pub async fn job(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/{}/jobs/{id}", app.org)).await.1
}

pub async fn job_in(app: &TestApp, id: &str, status: &str, secs: u64) -> Value {
    eventually(secs, &format!("job {id} to be {status}"), || async {
        let j = job(app, id).await;
        (j["status"] == status).then_some(j)
    })
    .await
}
