//! The run: its settings, the shared handles (HTTP client, PostgreSQL, Redis), the processes it
//! starts, and the order of the scenarios. Scenarios that need no workers (S1–S3, S6) run
//! without any, so nothing else competes for the two cores; S4 and S5 run the real worker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::stack::{self, Proc};

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Shorter runs and a smaller S6 seed (50k sessions): under 3 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Where the release binaries are (crewkit-api, crewkit-worker).
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// Where latest.json and latest.md are written.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Where the processes' logs go.
    #[arg(long, default_value = ".crewkit/bench")]
    pub log_dir: PathBuf,
    /// The PostgreSQL server log, where auto_explain writes the plans of slow S6 queries.
    #[arg(long)]
    pub pg_log: Option<PathBuf>,
    /// The port the API listens on.
    #[arg(long, default_value_t = 58080)]
    pub port: u16,
    /// Only these scenarios (e.g. `S1,S3`), for working on one.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

pub struct Bench {
    pub args: RunArgs,
    pub base: String,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub redis: redis::aio::ConnectionManager,
    pub redis_url: String,
    pub org: String,
    pub key: String,
    /// The Redis prefix of the API and workers of this run.
    pub prefix: String,
}

impl Bench {
    pub fn quick(&self) -> bool {
        self.args.quick
    }

    /// Interleaved pairs per measurement: at least 5, as the issue asks, in both modes.
    pub fn pairs(&self) -> usize {
        5
    }

    /// A duration, full or quick.
    pub fn secs(&self, full: f64, quick: f64) -> Duration {
        Duration::from_secs_f64(if self.quick() { quick } else { full })
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.key)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("CREWKIT_BIND", format!("127.0.0.1:{}", self.args.port)),
            ("CREWKIT_QUEUE_PREFIX", self.prefix.clone()),
            ("CREWKIT_BENCH_NOOP", "1".into()),
            // Backpressure would turn S1's unconsumed backlog into 503s: the queue is emptied
            // between runs, and the limit is not what is measured.
            ("CREWKIT_MAX_QUEUE_DEPTH", "1000000000".into()),
            // Likewise the per-key rate limit: one key sends everything here.
            ("CREWKIT_RATE_LIMIT_PER_MINUTE", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub async fn start_api(&self) -> anyhow::Result<Proc> {
        let mut api =
            Proc::spawn("crewkit-api", &self.args.bin_dir.join("crewkit-api"), &[], &self.env(), &self.log("api"))?;
        stack::wait_ready(&self.http, &self.url("/healthz"), &mut api, Duration::from_secs(60)).await?;
        Ok(api)
    }

    pub async fn start_worker(&self) -> anyhow::Result<Proc> {
        let mut w = Proc::spawn(
            "crewkit-worker",
            &self.args.bin_dir.join("crewkit-worker"),
            &[],
            &self.env(),
            &self.log("worker"),
        )?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.check_alive()?;
        Ok(w)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.args.log_dir.join(format!("{name}.log"))
    }

    /// Creates a session through the API; returns its `ses_` id.
    pub async fn create_session(&self, prompt_repo: &str) -> anyhow::Result<String> {
        let body = json!({"remote_url": format!("git@github.com:{prompt_repo}"), "agent_session_id": uuid::Uuid::now_v7().to_string()});
        let r = self
            .http
            .post(self.url(&format!("/{}/sessions", self.org)))
            .header("authorization", self.auth())
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        anyhow::ensure!(status.as_u16() == 201, "create session: {status} {v}");
        Ok(v["id"].as_str().context("session id")?.to_string())
    }

    /// Deletes every Redis key under `prefix` (queues, counters) with SCAN + UNLINK.
    pub async fn clear_prefix(&self, prefix: &str) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(2000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    /// The Redis server's process id (`INFO server`), for CPU accounting.
    pub async fn redis_pid(&self) -> anyhow::Result<u32> {
        let mut conn = self.redis.clone();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .context("process_id in INFO server")
    }

    fn wants(&self, id: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|o| o.eq_ignore_ascii_case(id))
    }
}

/// Creates the bench org with the admin command (which runs the migrations) and returns its key.
async fn create_org(bin_dir: &std::path::Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin_dir.join("crewkit-api"))
        .args(["admin", "create-org", "--slug", "bench", "--admin-email", "bench@example.com"])
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "create-org failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).context("create-org output")?;
    Ok(v["api_key"].as_str().context("api_key")?.to_string())
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.log_dir)?;
    std::fs::create_dir_all(&args.out)?;
    let db_url = std::env::var("DATABASE_URL").context("DATABASE_URL (script/bench sets it)")?;
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL (script/bench sets it)")?;
    let key = create_org(&args.bin_dir).await?;
    let db = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&db_url).await?;
    let redis = redis::Client::open(redis_url.as_str())?.get_connection_manager().await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let b = Bench {
        base: format!("http://127.0.0.1:{}", args.port),
        args,
        http,
        db,
        redis,
        redis_url,
        org: "bench".into(),
        key,
        prefix: "ckbench".into(),
    };
    let mut scenarios = serde_json::Map::new();
    let mut extra = serde_json::Map::new();
    let load_start = stack::loadavg();

    if b.wants("S3") {
        eprintln!("== S3: apalis-redis queue");
        scenarios.insert("S3".into(), crate::s3_queue::run(&b).await?);
    }
    let api = b.start_api().await?;
    let mut s1_rps = None;
    if b.wants("S1") || b.wants("S2") {
        eprintln!("== S1: accept throughput");
        let (s1, rps) = crate::s1_accept::run(&b, api.pid()).await?;
        s1_rps = Some(rps);
        scenarios.insert("S1".into(), s1);
    }
    if b.wants("S2") {
        eprintln!("== S2: accept latency at a constant rate");
        scenarios.insert("S2".into(), crate::s2_latency::run(&b, s1_rps.unwrap_or(1000.0)).await?);
    }
    api.stop(Duration::from_secs(10)).await;
    b.clear_prefix(&b.prefix).await?;

    let mut correct = json!({"events_in": 0, "rows": 0, "lost": 0, "duplicated": 0, "ok": true});
    if b.wants("S4") || b.wants("S5") {
        // Fresh processes, so their peak RSS is S4's.
        let api = b.start_api().await?;
        let worker = b.start_worker().await?;
        let mut sessions = Vec::new();
        let mut events_in = 0u64;
        if b.wants("S4") {
            eprintln!("== S4: end to end");
            let (s4, ins) = crate::s4_end_to_end::run(&b).await?;
            let rss = json!({"api_kib": api.peak_rss_kib(), "worker_kib": worker.peak_rss_kib()});
            extra.insert("peak_rss_s4".into(), rss.clone());
            let mut s4 = s4;
            s4["peak_rss"] = rss;
            scenarios.insert("S4".into(), s4);
            events_in += ins.events_in;
            sessions.extend(ins.sessions);
        }
        if b.wants("S5") {
            eprintln!("== S5: end to searchable");
            let (s5, ins) = crate::s5_search::run(&b).await?;
            scenarios.insert("S5".into(), s5);
            events_in += ins.events_in;
            sessions.extend(ins.sessions);
        }
        correct = crate::s4_end_to_end::correctness(&b, &sessions, events_in).await?;
        worker.stop(Duration::from_secs(25)).await;
        api.stop(Duration::from_secs(10)).await;
    }
    if b.wants("S6") {
        eprintln!("== S6: reads over seeded sessions");
        scenarios.insert("S6".into(), crate::s6_reads::run(&b).await?);
    }
    let meta = json!({
        "mode": if b.quick() { "quick" } else { "full" },
        "started_at": chrono::Utc::now() - chrono::Duration::from_std(started.elapsed())?,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_start": load_start,
        "loadavg_end": stack::loadavg(),
        "pairs": b.pairs(),
        "extra": extra,
    });
    crate::report::write(&b.args.out, &meta, &scenarios, &correct)?;
    eprintln!("== done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
