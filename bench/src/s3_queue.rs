//! S3, the apalis-redis queue on its own: push-only (our `Queues::push`, one Lua round trip per
//! job, 64 in flight) and consumption from a 100k backlog by one and by two OS processes of
//! no-op workers (`crewkit-bench consume`), each against `redis-benchmark` LPUSH with -P 16
//! (values of the same size as our job payloads) on the same Redis, run just before.

use std::time::{Duration, Instant};

use anyhow::Context;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId as QueueTaskId;
use serde_json::{Value, json};

use crate::ctx::Bench;
use crate::stack::Proc;
use crate::stats::{Pairs, median};
use crewkit_jobs::domain::ingest::QueuedEvent;
use crewkit_jobs::ids::{OrgId, SessionId};
use crewkit_jobs::persist_events::PersistEvents;
use crewkit_jobs::queue::{JobKind, Queues};

const PREFIX: &str = "ckbench-s3";
const KIND: JobKind = JobKind::PersistEvents;

/// A real ingestion job of one event, as the API queues it.
fn job() -> PersistEvents {
    let session = uuid::Uuid::now_v7().to_string();
    let ev: Value = serde_json::from_str(&crate::payload::event(0, &session, "queue")).expect("event json");
    PersistEvents {
        org_id: OrgId::generate(),
        session_id: SessionId::generate(),
        received_at: chrono::Utc::now(),
        request_id: Some("bench".into()),
        events: vec![QueuedEvent {
            client_id: ev["id"].as_str().map(str::to_owned),
            event_type: ev["event_type"].as_str().unwrap_or_default().to_string(),
            timestamp: chrono::Utc::now(),
            data: serde_json::value::to_raw_value(&ev["data"]).expect("raw data"),
        }],
    }
}

/// `redis-benchmark` LPUSH with 16 commands pipelined: jobs/s.
async fn lpush_baseline(b: &Bench, bytes: usize) -> anyhow::Result<f64> {
    let rest = b.redis_url.trim_start_matches("redis://");
    let (host, port) = rest.trim_end_matches('/').split_once(':').unwrap_or((rest, "6379"));
    let n = if b.quick() { "100000" } else { "300000" };
    let out = tokio::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-t", "lpush", "-n", n, "-P", "16", "-d", &bytes.to_string(), "-q", "--csv"])
        .output()
        .await
        .context("redis-benchmark (Debian package redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut conn = b.redis.clone();
    let _: () = redis::cmd("DEL").arg("mylist").query_async(&mut conn).await?;
    text.lines()
        .filter(|l| l.to_ascii_uppercase().contains("LPUSH"))
        .find_map(|l| l.split(',').nth(1).and_then(|v| v.trim_matches('"').parse().ok()))
        .with_context(|| format!("redis-benchmark output: {text}"))
}

/// Our push for `dur` with 64 pushes in flight: jobs/s.
async fn push_only(queues: &Queues, job: &PersistEvents, dur: Duration) -> f64 {
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (q, job) = (queues.clone(), job.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if q.push(KIND, &job).await.is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let n: u64 = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap_or(0)).sum();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Fills the queue to `backlog` jobs with the same push script, 1,000 tasks a call.
async fn fill(queues: &Queues, job: &PersistEvents, backlog: usize) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(job)?;
    let config = queues.config(KIND);
    let mut conn = queues.connection();
    let mut left = backlog;
    while left > 0 {
        let n = left.min(1000);
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                TaskBuilder::new(bytes.clone())
                    .task_id(QueueTaskId::from(ulid::Ulid::generate()))
                    .max_attempts(KIND.max_attempts())
                    .build()
            })
            .collect();
        apalis_redis::queries::push_tasks(&mut conn, &config, &tasks).await?;
        left -= n;
    }
    promote(queues).await
}

/// Moves due tasks from the scheduled set to the active list, 1,000 at a time.
///
/// apalis-redis 1.0.0 files every pushed task under the scheduled set (`push_tasks` clamps
/// `run_at` to now), and `fetch_next.lua` promotes all due ones with one `unpack()`, which fails
/// above Lua's ~8,000-value limit ("too many results to unpack"): a worker facing a larger due
/// backlog dies on every poll. The backlog is promoted here in chunks so S3 measures
/// consumption; the limit itself is reported in the README's Performance section.
async fn promote(queues: &Queues) -> anyhow::Result<()> {
    let config = queues.config(KIND);
    let mut conn = queues.connection();
    loop {
        let ids: Vec<String> =
            redis::cmd("ZRANGE").arg(config.scheduled_jobs_set()).arg(0).arg(999).query_async(&mut conn).await?;
        if ids.is_empty() {
            return Ok(());
        }
        let _: () = redis::pipe()
            .atomic()
            .rpush(config.active_jobs_list(), &ids)
            .ignore()
            .zrem(config.scheduled_jobs_set(), &ids)
            .ignore()
            .query_async(&mut conn)
            .await?;
    }
}

async fn done_count(queues: &Queues) -> anyhow::Result<u64> {
    let mut conn = queues.connection();
    Ok(redis::cmd("SCARD").arg(queues.config(KIND).done_jobs_set()).query_async(&mut conn).await?)
}

/// `procs` consumer processes draining a full backlog of `backlog` jobs: jobs/s from when the
/// first 5% are done (every process started and at its pace) until 95% are (the last jobs, when
/// the processes run out unevenly, do not count), or for at most `max`; and how many jobs that
/// window holds.
async fn consume(b: &Bench, queues: &Queues, procs: usize, backlog: u64, max: Duration) -> anyhow::Result<(f64, u64)> {
    let exe = std::env::current_exe()?;
    let mut running = Vec::new();
    for i in 0..procs {
        running.push(Proc::spawn(
            &format!("consumer-{i}"),
            &exe,
            &["consume", "--prefix", PREFIX],
            &[],
            &b.log("consume"),
        )?);
    }
    let (lo, hi) = (backlog / 20, backlog - backlog / 20);
    let wait_until = Instant::now() + Duration::from_secs(30);
    let mut start: Option<(Instant, u64)> = None;
    let result = loop {
        let done = done_count(queues).await?;
        let now = Instant::now();
        match start {
            None if done >= lo => start = Some((now, done)),
            None if now > wait_until => break Err(anyhow::anyhow!("the consumers took fewer than {lo} jobs in 30 s")),
            Some((t0, d0)) if done >= hi || now - t0 >= max => {
                break Ok(((done - d0) as f64 / (now - t0).as_secs_f64(), done - d0));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for p in running {
        p.kill().await;
    }
    result
}

pub async fn run(b: &Bench) -> anyhow::Result<Value> {
    let queues = Queues::new(&b.redis_url, PREFIX, Duration::from_secs(10), Duration::from_secs(5))?;
    let job = job();
    let bytes = serde_json::to_vec(&job)?.len();
    let backlog = if b.quick() { 30_000 } else { 100_000 };
    b.clear_prefix(PREFIX).await?;

    let mut push = Pairs::new("jobs/s");
    for _ in 0..b.pairs() {
        let load = push.begin();
        let base = lpush_baseline(b, bytes).await?;
        let ours = push_only(&queues, &job, b.secs(3.0, 1.0)).await;
        b.clear_prefix(PREFIX).await?;
        push.push(load, base, ours, json!({}));
    }
    eprintln!("   push: ours {:.0} jobs/s, ratio {:.3}", median(&push.ours), push.ratio_median());

    let mut by_procs = Vec::new();
    for procs in [1usize, 2] {
        let mut pairs = Pairs::new("jobs/s");
        for _ in 0..b.pairs() {
            b.clear_prefix(PREFIX).await?;
            fill(&queues, &job, backlog).await?;
            let load = pairs.begin();
            let base = lpush_baseline(b, bytes).await?;
            let (ours, measured) = consume(b, &queues, procs, backlog as u64, Duration::from_secs(30)).await?;
            pairs.push(load, base, ours, json!({"jobs_measured": measured}));
        }
        eprintln!("   consume x{procs}: ours {:.0} jobs/s, ratio {:.3}", median(&pairs.ours), pairs.ratio_median());
        by_procs.push(pairs);
    }
    b.clear_prefix(PREFIX).await?;
    let (one, two) = (&by_procs[0], &by_procs[1]);
    // Scaling with the baseline taken out: (ours2/base2) / (ours1/base1), pair by pair.
    let scaling: Vec<f64> = two.ratios().iter().zip(one.ratios()).map(|(r2, r1)| r2 / r1).collect();
    let scale = median(&scaling);
    let worst = [push.ratio_median(), one.ratio_median(), two.ratio_median()].into_iter().fold(f64::INFINITY, f64::min);
    let mut out = one.json();
    out["target"] = json!(">= 0.1x of LPUSH -P 16 (push, consume x1, consume x2); 2 processes >= 1.6x one");
    out["met"] = json!(worst >= 0.1 && scale >= 1.6);
    out["ratio_note"] = json!("headline ratio: consume with 1 process");
    out["push_only"] = push.json();
    out["consume_1_process"] = one.json();
    out["consume_2_processes"] = two.json();
    out["scaling_2_over_1"] =
        json!({"median": scale, "values": scaling, "raw_median": median(&two.ours) / median(&one.ours)});
    out["job_bytes"] = json!(bytes);
    out["backlog"] = json!(backlog);
    out["worker_concurrency"] = json!(crewkit_jobs::Config::from_env()?.concurrency_for(KIND.queue()));
    Ok(out)
}
