//! The HTTP load generators, in-process (no external tool to build or install).
//!
//! - `closed_loop`: `conns` connections, each sending its next request as soon as the previous
//!   one is answered, for a fixed time: the maximum throughput.
//! - `open_loop`: requests are due at a constant rate whatever the server does, and each latency
//!   is measured from when its request was *due*, not from when it was sent, so a stalled server
//!   cannot hide its stall by slowing the client down (coordinated omission, as `wrk2`/`oha -q`
//!   correct for). Every latency is kept and sorted: the percentiles are exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

/// Bodies are built once and leaked, so sending one copies nothing.
pub fn leak(bodies: Vec<String>) -> Arc<Vec<&'static str>> {
    Arc::new(bodies.into_iter().map(|b| &*Box::leak(b.into_boxed_str())).collect())
}

#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    pub first_error: Option<String>,
}

impl Counts {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
}

async fn send(http: &reqwest::Client, url: &str, auth: &str, body: &'static str) -> Result<(), String> {
    let r = http
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.bytes().await.map_err(|e| e.to_string())?;
    if status.as_u16() == 202 {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&text[..text.len().min(300)])))
    }
}

/// Maximum throughput: `conns` connections in a loop over `urls` × `bodies` for `dur`.
pub async fn closed_loop(
    http: &reqwest::Client,
    auth: &str,
    urls: &[String],
    bodies: &Arc<Vec<&'static str>>,
    conns: usize,
    dur: Duration,
) -> Counts {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let (http, auth, url, bodies) = (http.clone(), auth.to_string(), urls[c % urls.len()].clone(), bodies.clone());
        let (ok, errors, first_error) = (ok.clone(), errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                match send(&http, &url, &auth, bodies[i % bodies.len()]).await {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.lock().await.get_or_insert(e);
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += conns;
            }
        }));
    }
    futures::future::join_all(tasks).await;
    let secs = start.elapsed().as_secs_f64();
    let first_error = first_error.lock().await.clone();
    Counts { ok: ok.load(Ordering::Relaxed), errors: errors.load(Ordering::Relaxed), secs, first_error }
}

/// Latencies of an open-loop run, in microseconds, sorted.
#[derive(Debug, Default)]
pub struct Latencies {
    pub rate: f64,
    pub counts: Counts,
    pub us: Vec<u64>,
}

impl Latencies {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        crate::stats::percentile(&self.us, p) / 1000.0
    }

    pub fn json(&self) -> Value {
        json!({
            "rate_rps": self.rate,
            "achieved_rps": self.counts.rps(),
            "requests": self.us.len(),
            "errors": self.counts.errors,
            "p50_ms": self.percentile_ms(50.0),
            "p99_ms": self.percentile_ms(99.0),
            "p999_ms": self.percentile_ms(99.9),
            "max_ms": self.us.last().copied().unwrap_or(0) as f64 / 1000.0,
        })
    }
}

/// `rate` requests a second for `dur`, at most `max_in_flight` at once (a request waiting for
/// a slot is still timed from when it was due).
pub async fn open_loop(
    http: &reqwest::Client,
    auth: &str,
    url: &str,
    bodies: &Arc<Vec<&'static str>>,
    rate: f64,
    dur: Duration,
) -> Latencies {
    let slots = Arc::new(Semaphore::new(1024));
    let total = (rate * dur.as_secs_f64()).round() as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None));
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let (http, auth, url, body) =
            (http.clone(), auth.to_string(), url.to_string(), bodies[k as usize % bodies.len()]);
        let (slots, errors, first_error) = (slots.clone(), errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.ok()?;
            let res = send(&http, &url, &auth, body).await;
            let us = due.elapsed().as_micros() as u64;
            match res {
                Ok(()) => Some(us),
                Err(e) => {
                    first_error.lock().await.get_or_insert(e);
                    errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut us: Vec<u64> =
        futures::future::join_all(tasks).await.into_iter().filter_map(|r| r.ok().flatten()).collect();
    let secs = start.elapsed().as_secs_f64();
    us.sort_unstable();
    let first_error = first_error.lock().await.clone();
    let counts = Counts { ok: us.len() as u64, errors: errors.load(Ordering::Relaxed), secs, first_error };
    Latencies { rate, counts, us }
}
