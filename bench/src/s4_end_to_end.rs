//! S4, end to end: a fixed number of events posted in batches of 100 to fresh sessions, timed
//! from the first request until the last `persist_events` job has committed (its record's
//! `finished_at`), with the queue depth and the rows persisted sampled along the way. The
//! baseline is a COPY of the same number of rows, shaped like ours, into the same `events` table
//! with the same indexes. Also the correctness count at the end of the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ctx::Bench;
use crate::payload;
use crate::stats::{Pairs, median};
use crewkit_jobs::queue::{JobKind, Queues};

const BATCH: usize = 100;
const SESSIONS: usize = 8;
const CONNS: usize = 8;

/// What a scenario put in, for the correctness count.
#[derive(Default)]
pub struct Input {
    pub events_in: u64,
    pub sessions: Vec<Uuid>,
}

pub fn session_uuid(id: &str) -> anyhow::Result<Uuid> {
    Ok(Uuid::parse_str(id.trim_start_matches("ses_"))?)
}

/// Posts every (url, body) once over `conns` connections; returns the events accepted.
pub async fn post_all(b: &Bench, reqs: Vec<(String, String)>, conns: usize) -> anyhow::Result<u64> {
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (reqs, next, accepted, http, auth) =
                (reqs.clone(), next.clone(), accepted.clone(), b.http.clone(), b.auth());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((url, body)) = reqs.get(i) else { return Ok::<_, anyhow::Error>(()) };
                    let r = http.post(url).header("authorization", &auth).body(body.clone()).send().await?;
                    let status = r.status();
                    let v: Value = r.json().await?;
                    anyhow::ensure!(status.as_u16() == 202, "ingest: {status} {v}");
                    accepted.fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t??;
    }
    Ok(accepted.load(Ordering::Relaxed))
}

async fn rows_of(b: &Bench, sessions: &[Uuid]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events WHERE conversation_id = ANY($1)")
        .bind(sessions)
        .fetch_one(&b.db)
        .await?)
}

/// Ours: returns events/s, the backlog series and what went in.
async fn ours(b: &Bench, queues: &Queues, events: usize) -> anyhow::Result<(f64, Vec<[f64; 3]>, Input)> {
    let mut ids = Vec::new();
    let mut reqs = Vec::new();
    for _ in 0..SESSIONS {
        ids.push(b.create_session("acme/bench-e2e").await?);
    }
    let agent = Uuid::now_v7().to_string();
    for j in 0..events / BATCH {
        let url = b.url(&format!("/{}/observability/sessions/{}/events", b.org, ids[j % SESSIONS]));
        reqs.push((url, payload::batch((j * BATCH) as u64, BATCH, &agent, "persist")));
    }
    let sessions: Vec<Uuid> = ids.iter().map(|s| session_uuid(s)).collect::<anyhow::Result<_>>()?;
    let t0 = Utc::now();
    let start = Instant::now();
    let sampler = {
        let (db, q, s) = (b.db.clone(), queues.clone(), sessions.clone());
        tokio::spawn(async move {
            let mut series = Vec::new();
            loop {
                let depth = q.depth(JobKind::PersistEvents).await.unwrap_or(0);
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE conversation_id = ANY($1)")
                    .bind(&s)
                    .fetch_one(&db)
                    .await
                    .unwrap_or(0);
                series.push([start.elapsed().as_secs_f64(), depth as f64, rows as f64]);
                if series.len() > 4000 {
                    return series;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let accepted = post_all(b, reqs, CONNS).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while rows_of(b, &sessions).await? < accepted as i64 {
        anyhow::ensure!(Instant::now() < deadline, "S4: events still not persisted after 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampler.abort();
    let series = sampler.await.unwrap_or_default();
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(finished_at) FROM jobs WHERE kind = 'persist_events' AND session_id = ANY($1)")
            .bind(&sessions)
            .fetch_one(&b.db)
            .await?;
    let secs = (last.context("no persist job record")? - t0).as_seconds_f64();
    Ok((accepted as f64 / secs, series, Input { events_in: accepted, sessions }))
}

/// COPY text format: tabs, newlines and backslashes escaped; `\N` is NULL.
fn copy_field(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// The same rows as ours would be, as COPY input for `sessions` of `org`.
fn copy_rows(org: Uuid, sessions: &[Uuid], events: usize) -> String {
    let agent = Uuid::now_v7().to_string();
    let now = Utc::now().to_rfc3339();
    let mut out = String::with_capacity(events * 560);
    for n in 0..events {
        let ev: Value = serde_json::from_str(&payload::event(n as u64, &agent, "persist")).expect("event json");
        let d = &ev["data"];
        let id = ev["id"].as_str().unwrap_or_default();
        let ts = ev["timestamp"].as_str().unwrap_or_default();
        let fields = [
            Some(Uuid::now_v7().to_string()),
            Some(org.to_string()),
            Some(sessions[(n / BATCH) % sessions.len()].to_string()),
            ev["event_type"].as_str().map(str::to_owned),
            Some(id.to_string()),
            Some(format!("id:{id}")),
            Some(ts.to_string()),
            Some(now.clone()),
            Some(ts.to_string()),
            Some("f".into()),
            d["tool_name"].as_str().map(str::to_owned),
            d["tool_use_id"].as_str().map(str::to_owned),
            None,
            Some(d.to_string()),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            copy_field(&mut out, f.as_deref());
        }
        out.push('\n');
    }
    out
}

async fn baseline(b: &Bench, org: Uuid, events: usize) -> anyhow::Result<f64> {
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(session_uuid(&b.create_session("acme/bench-copy").await?)?);
    }
    let data = copy_rows(org, &sessions, events);
    let mut conn = b.db.acquire().await?;
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY events (id, org_id, conversation_id, event_type, client_event_id, dedup_key, timestamp,
                received_at, order_at, timestamp_in_future, tool_name, tool_use_id, agent_id, data) FROM STDIN",
        )
        .await?;
    copy.send(data.as_bytes()).await?;
    let n = copy.finish().await?;
    anyhow::ensure!(n as usize == events, "COPY wrote {n} rows of {events}");
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(b: &Bench) -> anyhow::Result<(Value, Input)> {
    let queues = Queues::new(&b.redis_url, &b.prefix, Duration::from_secs(10), Duration::from_secs(5))?;
    let org: Uuid = sqlx::query_scalar("SELECT id FROM orgs WHERE slug = $1").bind(&b.org).fetch_one(&b.db).await?;
    let events = if b.quick() { 10_000 } else { 50_000 };
    let mut pairs = Pairs::new("events/s");
    let mut input = Input::default();
    let mut series = Vec::new();
    for _ in 0..b.pairs() {
        let load = pairs.begin();
        let base = baseline(b, org, events).await?;
        let (rate, s, inp) = ours(b, &queues, events).await?;
        input.events_in += inp.events_in;
        input.sessions.extend(inp.sessions);
        series.push(s);
        pairs.push(load, base, rate, json!({}));
    }
    eprintln!(
        "   ours {:.0} ev/s, COPY {:.0} rows/s, ratio {:.3}",
        median(&pairs.ours),
        median(&pairs.baseline),
        pairs.ratio_median()
    );
    let ratio = pairs.ratio_median();
    let mut out = pairs.json();
    out["target"] = json!(">= 0.5x");
    out["met"] = json!(ratio >= 0.5);
    out["events_per_run"] = json!(events);
    out["batch_size"] = json!(BATCH);
    out["backlog_series_note"] =
        json!("[seconds since the first request, ingestion queue depth, rows persisted], every 250 ms");
    out["backlog_series"] = json!(series);
    Ok((out, input))
}

/// Events in = rows in PostgreSQL, none lost, none duplicated.
pub async fn correctness(b: &Bench, sessions: &[Uuid], events_in: u64) -> anyhow::Result<Value> {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT client_event_id) FROM events WHERE conversation_id = ANY($1)")
            .bind(sessions)
            .fetch_one(&b.db)
            .await?;
    let lost = events_in as i64 - distinct;
    let duplicated = rows - distinct;
    let ok = lost == 0 && duplicated == 0 && rows == events_in as i64;
    eprintln!("   correctness: {events_in} events in, {rows} rows, {lost} lost, {duplicated} duplicated");
    Ok(
        json!({"events_in": events_in, "rows": rows, "lost": lost, "duplicated": duplicated, "ok": ok, "sessions": sessions.len()}),
    )
}
