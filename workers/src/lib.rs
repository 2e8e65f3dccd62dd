//! crewkit-workers: the worker fleet. One apalis worker per job kind (so each kind has its own
//! queue, concurrency and scaling), all in one `Monitor` per process; `--queues` picks which ones
//! a process serves.
//!
//! Fleet rules learned from apalis-redis 1.0.0 (see the README's apalis section):
//! - worker names are unique per process (host, pid, random): a reused name within the heartbeat
//!   window makes registration fail;
//! - heartbeat 5 s × 3 missed: a killed worker's in-flight jobs go to the others after ~15 s;
//! - shutdown goes through `MonitorContext::shutdown()` with our own deadline, never
//!   `run_with_signal`, which can drop worker errors.

use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{BackendExt, Monitor, WorkerBuilder};
use apalis_redis::RedisStorage;
use sqlx::PgPool;

use crewkit_jobs::Config;
use crewkit_jobs::analyze_session::AnalyzeSession;
use crewkit_jobs::compact_session::CompactSession;
use crewkit_jobs::index_session::IndexSession;
use crewkit_jobs::persist_events::PersistEvents;
use crewkit_jobs::queue::{JobKind, Queues};
use crewkit_jobs::store;

pub mod faults;
pub mod lifecycle;
pub mod poll;
pub mod schedule;
mod tasks;

use faults::Faults;
use poll::RearmingInterval;
use tasks::{analyze_session_task, compact_session_task, index_session_task, persist_events_task};

/// What every handler shares.
#[derive(Clone)]
pub struct WorkerState {
    pub db: PgPool,
    /// Job records only (`store::lazy_pool_async_commit`).
    pub records: PgPool,
    pub queues: Queues,
    pub config: Arc<Config>,
    pub faults: Arc<Faults>,
    pub search: crewkit_jobs::search_index::SearchBackend,
}

/// A name no other live worker has.
pub fn worker_name(kind: JobKind) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "host".into());
    format!("{}-{}-{}-{:08x}", kind.name(), host, std::process::id(), rand::random::<u32>())
}

/// How many tasks one fetch takes for a queue worked `concurrency` at a time.
///
/// Ingestion jobs are short (a few milliseconds of PostgreSQL each) and many, so a fetch takes
/// sixteen per slot: apalis-redis fetches again only when its buffer is empty, and its fetches and
/// acks are round trips in turn, which at one task per slot was what bounded a worker (S3, no-op
/// handler: 13k jobs/s with 4 a fetch, 33k with 16, 47k with 64). At ingest's default of 8 in
/// flight that is 128 tasks, about 100 ms of work held by one process. Analysis, compaction and
/// indexing jobs are slow; taking more than a worker runs would let one process hoard them while
/// another idles, so they prefetch what they run.
pub fn prefetch_for(kind: JobKind, concurrency: usize) -> usize {
    match kind {
        JobKind::PersistEvents => concurrency * 16,
        _ => concurrency,
    }
}

/// Registers one apalis worker for a job kind: its queue, concurrency, prefetch and poller.
macro_rules! register {
    ($monitor:ident, $state:ident, $kind:expr, $args:ty, $handler:ident) => {{
        let state = $state.clone();
        let kind = $kind;
        $monitor.register(move |_restarts| {
            let config = &state.config;
            let concurrency = config.concurrency_for(kind.queue());
            tracing::info!(queue = kind.queue(), job = kind.name(), concurrency, "worker starting");
            let storage = RedisStorage::<$args>::new(state.queues.connection())
                .with_config(state.queues.config(kind).batch_size(prefetch_for(kind, concurrency)))
                .poll_with_strategy(RearmingInterval::new(config.worker_poll_interval));
            WorkerBuilder::new(worker_name(kind))
                .backend(storage)
                .concurrency(concurrency)
                .data(state.clone())
                .build($handler)
        })
    }};
}

/// Builds the monitor for the given kinds (all of them when empty).
pub fn monitor(state: WorkerState, kinds: &[JobKind]) -> Monitor {
    let mut monitor = Monitor::new();
    for kind in kinds.iter().copied() {
        monitor = match kind {
            JobKind::PersistEvents => {
                register!(monitor, state, kind, PersistEvents, persist_events_task)
            }
            JobKind::AnalyzeSession => {
                register!(monitor, state, kind, AnalyzeSession, analyze_session_task)
            }
            JobKind::CompactSession => {
                register!(monitor, state, kind, CompactSession, compact_session_task)
            }
            JobKind::IndexSession => {
                register!(monitor, state, kind, IndexSession, index_session_task)
            }
        };
    }
    monitor
}

/// Connects, runs migrations, and runs the workers until `shutdown` resolves; then stops fetching
/// and gives in-flight jobs the configured grace period. The scheduled work (idle close,
/// reconcile) runs in processes that serve the analysis queue.
pub async fn run(
    config: Config,
    kinds: &[JobKind],
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let kinds: Vec<JobKind> = if kinds.is_empty() { JobKind::ALL.to_vec() } else { kinds.to_vec() };
    let db = store::lazy_pool(&config.database_url, config.db_max_connections)?;
    store::migrate(&db).await?;
    let queues =
        Queues::new(&config.redis_url, &config.queue_prefix, config.redis_response_timeout, config.worker_heartbeat)?;
    let grace = config.shutdown_timeout;
    let faults = Arc::new(Faults::parse(config.faults.as_deref()));
    let search = crewkit_jobs::search_index::SearchBackend::from_config(&config)?;
    if kinds.contains(&JobKind::IndexSession) {
        // Documents carry their primary key, so indexing works before this; the settings make
        // filters work. A failure here is not fatal: the API retries the set-up too.
        if let Err(e) = search.set_up().await {
            tracing::error!(error = %e, "search index set-up failed; index_session jobs will retry");
        }
    }
    let records = store::lazy_pool_async_commit(&config.database_url, config.db_max_connections.div_ceil(2))?;
    let state = WorkerState { db, records, queues, config: Arc::new(config), faults, search };
    let scheduler = kinds.contains(&JobKind::AnalyzeSession).then(|| tokio::spawn(schedule::run(state.clone())));
    let metrics_server = state.config.metrics_bind.map(|addr| tokio::spawn(serve_metrics(addr, state.queues.clone())));
    let monitor = monitor(state, &kinds);
    let ctx = monitor.context();
    let running = tokio::spawn(monitor.run());
    tokio::pin!(running);
    let result = tokio::select! {
        res = &mut running => Some(res),
        () = shutdown => None,
    };
    if let Some(s) = scheduler {
        s.abort();
    }
    if let Some(m) = metrics_server {
        m.abort();
    }
    if let Some(res) = result {
        return Ok(res??);
    }
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: no new jobs, finishing in-flight ones");
    let _ = ctx.shutdown();
    match tokio::time::timeout(grace + Duration::from_millis(500), &mut running).await {
        Ok(res) => Ok(res??),
        Err(_) => {
            tracing::warn!("grace period over; in-flight jobs will be re-run by other workers");
            Ok(())
        }
    }
}

/// `GET /metrics` of a worker process: its job counters and durations, and the queues' depths.
async fn serve_metrics(addr: std::net::SocketAddr, queues: Queues) {
    let app = poem::Route::new().at(
        "/metrics",
        poem::get(poem::endpoint::make(move |_| {
            let queues = queues.clone();
            async move {
                let mut gauges = Vec::new();
                for kind in JobKind::ALL {
                    if let Ok(depth) = queues.depth(*kind).await {
                        gauges.push((
                            "crewkit_queue_depth",
                            "jobs waiting in a queue",
                            vec![("kind", kind.name().to_string())],
                            depth as f64,
                        ));
                    }
                }
                poem::Response::builder()
                    .content_type("text/plain; version=0.0.4")
                    .body(crewkit_jobs::metrics::render(&gauges))
            }
        })),
    );
    if let Err(e) = poem::Server::new(poem::listener::TcpListener::bind(addr)).run(app).await {
        tracing::error!(%addr, error = %e, "the metrics server stopped");
    }
}
