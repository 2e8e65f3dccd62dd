//! Per-API-key rate limit, shared by every API process through Redis, without a Redis round trip
//! on the request path.
//!
//! Fixed one-minute windows. Each process counts its own requests per key in memory and, every
//! `FLUSH_EVERY`, adds them to the key's window counter in Redis (`INCRBY`, one pipeline for all
//! keys), reading back the total of all processes. A request is allowed while the last known total
//! plus what this process has not flushed yet is under the limit. The cost of keeping the hot path
//! at one Redis call (the push) is a bounded overshoot: what other processes accept within one
//! flush period. The answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! (IETF httpapi draft); over the limit it is a 429 with `Retry-After` (the window's end).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poem::{Endpoint, IntoResponse, Request, Response};

use crate::error::ApiError;
use crate::state::AppState;

const WINDOW_SECS: u64 = 60;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
struct Entry {
    window: u64,
    /// Accepted here and not yet added to Redis.
    unflushed: u64,
    /// Being added to Redis by the flush under way.
    inflight: u64,
    /// The window's total over all processes, as Redis last said.
    global: u64,
}

/// The counters of this process.
#[derive(Clone, Default)]
pub struct Limiter {
    keys: Arc<Mutex<HashMap<String, Entry>>>,
}

/// What a request was told: the headers' values.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
    pub allowed: bool,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn redis_key(state: &AppState, key: &str, window: u64) -> String {
    format!("{}:ratelimit:{key}:{window}", state.config.queue_prefix)
}

impl Limiter {
    /// Counts one request of `key` against `limit` per minute. The first request of a key in a
    /// window reads the window's total from Redis (once per key, process and minute), so a
    /// process that has not seen the key yet does not start from zero.
    pub async fn check(&self, state: &AppState, key: &str, limit: u64) -> Verdict {
        let window = now_secs() / WINDOW_SECS;
        let known = self.keys.lock().expect("rate limiter lock").get(key).is_some_and(|e| e.window == window);
        let seed = if known {
            None
        } else {
            let mut conn = state.queues.connection();
            let total: redis::RedisResult<Option<u64>> =
                redis::cmd("GET").arg(redis_key(state, key, window)).query_async(&mut conn).await;
            Some(total.ok().flatten().unwrap_or(0))
        };
        self.count(key, limit, window, seed)
    }

    fn count(&self, key: &str, limit: u64, window: u64, seed: Option<u64>) -> Verdict {
        let now = now_secs();
        let reset_secs = ((window + 1) * WINDOW_SECS).saturating_sub(now).max(1);
        let mut keys = self.keys.lock().expect("rate limiter lock");
        let e = keys.entry(key.to_string()).or_default();
        if e.window != window {
            *e = Entry { window, ..Entry::default() };
        }
        if let Some(total) = seed {
            e.global = e.global.max(total);
        }
        let used = e.global + e.inflight + e.unflushed;
        if used >= limit {
            return Verdict { limit, remaining: 0, reset_secs, allowed: false };
        }
        e.unflushed += 1;
        Verdict { limit, remaining: limit - used - 1, reset_secs, allowed: true }
    }

    /// Adds every key's unflushed count to Redis and reads the totals back.
    async fn flush(&self, state: &AppState) -> redis::RedisResult<()> {
        let window = now_secs() / WINDOW_SECS;
        let batch: Vec<(String, u64)> = {
            let mut keys = self.keys.lock().expect("rate limiter lock");
            keys.retain(|_, e| e.window + 1 >= window);
            keys.iter_mut()
                .filter(|(_, e)| e.window == window)
                .map(|(k, e)| {
                    e.inflight = std::mem::take(&mut e.unflushed);
                    (k.clone(), e.inflight)
                })
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, n) in &batch {
            let rkey = redis_key(state, key, window);
            pipe.cmd("INCRBY").arg(&rkey).arg(*n).cmd("EXPIRE").arg(&rkey).arg(WINDOW_SECS * 2).ignore();
        }
        let mut conn = state.queues.connection();
        let totals: Result<Vec<u64>, _> = pipe.query_async(&mut conn).await;
        let mut keys = self.keys.lock().expect("rate limiter lock");
        match totals {
            Ok(totals) => {
                for ((key, _), total) in batch.iter().zip(totals) {
                    if let Some(e) = keys.get_mut(key).filter(|e| e.window == window) {
                        e.global = total;
                        e.inflight = 0;
                    }
                }
                Ok(())
            }
            Err(err) => {
                // Nothing was counted in Redis: keep the counts for the next flush.
                for (key, n) in batch {
                    if let Some(e) = keys.get_mut(&key).filter(|e| e.window == window) {
                        e.unflushed += n;
                        e.inflight = 0;
                    }
                }
                Err(err)
            }
        }
    }
}

/// Flushes the counters for as long as the process lives.
pub async fn flush_loop(state: AppState) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = state.limiter.flush(&state).await {
            tracing::debug!(error = %e, "could not flush rate-limit counters");
        }
    }
}

/// Where the authenticator leaves its verdict for `headers` to read once the answer is made.
#[derive(Clone, Default)]
pub struct Slot(Arc<Mutex<Option<Verdict>>>);

impl Slot {
    pub fn set(&self, v: Verdict) {
        *self.0.lock().expect("slot lock") = Some(v);
    }
}

/// The 429 for a refused request.
pub fn refused(v: Verdict) -> ApiError {
    let mut e = ApiError::new(
        poem::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("this API key is over its limit of {} requests per minute; retry after the window resets", v.limit),
    );
    e.retry_after = Some(v.reset_secs.max(1));
    e
}

/// Middleware: adds the `RateLimit-*` headers to every answer to an authenticated request.
pub async fn headers<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let slot = Slot::default();
    req.extensions_mut().insert(slot.clone());
    let result = next.call(req).await.map(IntoResponse::into_response);
    let verdict = *slot.0.lock().expect("slot lock");
    let Some(v) = verdict else { return result };
    let add = |mut resp: Response| {
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", v.limit.into());
        h.insert("ratelimit-remaining", v.remaining.into());
        h.insert("ratelimit-reset", v.reset_secs.into());
        if let Ok(policy) = format!("{};w={WINDOW_SECS}", v.limit).parse() {
            h.insert("ratelimit-policy", policy);
        }
        resp
    };
    match result {
        Ok(resp) => Ok(add(resp)),
        Err(err) => Ok(add(err.into_response())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_once_its_window_is_used_up_and_others_are_not() {
        let l = Limiter::default();
        let w = now_secs() / WINDOW_SECS;
        for i in 0..3 {
            let v = l.count("a", 3, w, None);
            assert!(v.allowed);
            assert_eq!(v.remaining, 2 - i);
        }
        let v = l.count("a", 3, w, None);
        assert!(!v.allowed);
        assert_eq!(v.remaining, 0);
        assert!((1..=60).contains(&v.reset_secs));
        assert!(l.count("b", 3, w, None).allowed);
        // A new window starts from what Redis says of it.
        let v = l.count("a", 3, w + 1, Some(2));
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn what_other_processes_used_counts_too() {
        let l = Limiter::default();
        let w = now_secs() / WINDOW_SECS;
        l.count("a", 10, w, None);
        {
            let mut keys = l.keys.lock().unwrap();
            let e = keys.get_mut("a").unwrap();
            e.unflushed = 0;
            e.global = 10;
        }
        assert!(!l.count("a", 10, w, None).allowed);
    }
}
