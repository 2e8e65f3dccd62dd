//! S1, accept throughput: batches of 1, 10 and 100 events posted as fast as 16 connections go,
//! against the no-op handler in the same binary (same body read, repair and parse, then 202).
//! No worker runs; the queue is emptied between runs so every run starts alike.

use serde_json::{Value, json};

use crate::ctx::Bench;
use crate::http::{self, Counts};
use crate::payload;
use crate::stack::CpuMeter;
use crate::stats::{Pairs, median};

/// CPU microseconds per accepted request of the API, Redis and this process (the load generator).
fn per_request(used: [f64; 3], requests: u64) -> [f64; 3] {
    used.map(|s| s * 1e6 / requests.max(1) as f64)
}

/// CPU µs per request of (API, Redis, load generator), for the baseline and for ours.
type CpuPair = ([f64; 3], [f64; 3]);

/// The medians over the pairs, by process.
fn cpu_summary(runs: &[CpuPair]) -> Value {
    let side = |pick: fn(&CpuPair) -> [f64; 3]| {
        let col = |i: usize| median(&runs.iter().map(|r| pick(r)[i]).collect::<Vec<_>>());
        json!({"api": col(0), "redis": col(1), "load_generator": col(2)})
    };
    json!({"baseline": side(|r| r.0), "ours": side(|r| r.1)})
}

pub const SIZES: [usize; 3] = [1, 10, 100];
const CONNS: usize = 16;
/// Distinct bodies cycled through (their ids repeat across runs; nothing is persisted here).
const BODIES: usize = 64;

pub struct Target {
    pub urls: Vec<String>,
    pub noop: Vec<String>,
}

/// The ingestion URLs of a few fresh sessions, and the no-op URL.
pub async fn target(b: &Bench, sessions: usize) -> anyhow::Result<Target> {
    let mut urls = Vec::new();
    for _ in 0..sessions {
        let s = b.create_session("acme/bench-accept").await?;
        urls.push(b.url(&format!("/{}/observability/sessions/{s}/events", b.org)));
    }
    Ok(Target { urls, noop: vec![b.url("/_bench/noop")] })
}

pub fn bodies(size: usize) -> std::sync::Arc<Vec<&'static str>> {
    let session = uuid::Uuid::now_v7().to_string();
    http::leak((0..BODIES).map(|i| payload::batch((i * size) as u64, size, &session, "accept")).collect())
}

fn check(c: &Counts, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(c.ok > 0, "{what}: no request accepted ({:?})", c.first_error);
    if c.errors > 0 {
        eprintln!("   {what}: {} errors, first: {:?}", c.errors, c.first_error);
    }
    Ok(())
}

/// Returns the scenario and ours' maximum requests/s at one event a batch (S2's reference).
pub async fn run(b: &Bench, api_pid: u32) -> anyhow::Result<(Value, f64)> {
    let t = target(b, 4).await?;
    let pids = [api_pid, b.redis_pid().await?, std::process::id()];
    let dur = b.secs(3.0, 0.7);
    let auth = b.auth();
    let mut by_size = serde_json::Map::new();
    let mut max_rps_1 = 0.0;
    let mut headline = Value::Null;
    for size in SIZES {
        let bodies = bodies(size);
        // Warm-up: connections, caches.
        http::closed_loop(&b.http, &auth, &t.urls, &bodies, CONNS, b.secs(0.5, 0.3)).await;
        let mut pairs = Pairs::new("events/s");
        let mut rps = Vec::new();
        let mut cpu_us = Vec::new();
        for _ in 0..b.pairs() {
            b.clear_prefix(&b.prefix).await?;
            let load = pairs.begin();
            let cpu = CpuMeter::start(pids);
            let base = http::closed_loop(&b.http, &auth, &t.noop, &bodies, CONNS, dur).await;
            let base_cpu = per_request(cpu.used(), base.ok);
            check(&base, "S1 baseline")?;
            let cpu = CpuMeter::start(pids);
            let ours = http::closed_loop(&b.http, &auth, &t.urls, &bodies, CONNS, dur).await;
            let ours_cpu = per_request(cpu.used(), ours.ok);
            check(&ours, "S1 ours")?;
            cpu_us.push((base_cpu, ours_cpu));
            let ev = |c: &Counts| c.rps() * size as f64;
            rps.push(ours.rps());
            pairs.push(
                load,
                ev(&base),
                ev(&ours),
                json!({"baseline_rps": base.rps(), "ours_rps": ours.rps(), "errors": base.errors + ours.errors,
                       "cpu_us_per_request": {"baseline": base_cpu, "ours": ours_cpu}}),
            );
        }
        eprintln!(
            "   {size}/batch: ours {:.0} ev/s, baseline {:.0} ev/s, ratio {:.2}",
            median(&pairs.ours),
            median(&pairs.baseline),
            pairs.ratio_median()
        );
        let cpu = cpu_summary(&cpu_us);
        let g = |side: &str, k: &str| cpu[side][k].as_f64().unwrap_or(0.0);
        eprintln!(
            "   {size}/batch CPU µs per request (API / Redis / load generator): no-op {:.0} / {:.0} / {:.0}, ours {:.0} / {:.0} / {:.0}",
            g("baseline", "api"),
            g("baseline", "redis"),
            g("baseline", "load_generator"),
            g("ours", "api"),
            g("ours", "redis"),
            g("ours", "load_generator"),
        );
        if size == 1 {
            max_rps_1 = median(&rps);
        }
        let mut v = pairs.json();
        v["cpu_us_per_request_median"] = cpu;
        v["ours_requests_per_s_median"] = json!(median(&rps));
        if size == 100 {
            headline = v.clone();
        }
        by_size.insert(format!("batch_{size}"), v);
    }
    b.clear_prefix(&b.prefix).await?;
    let ratio = headline["ratio_median"].as_f64().unwrap_or(0.0);
    let mut out = headline;
    out["target"] = json!(">= 0.8x at 100/batch");
    out["met"] = json!(ratio >= 0.8);
    out["by_batch_size"] = Value::Object(by_size);
    out["event_bytes_mean"] = json!(payload::mean_event_bytes());
    out["connections"] = json!(CONNS);
    out["seconds_per_run"] = json!(dur.as_secs_f64());
    Ok((out, max_rps_1))
}
