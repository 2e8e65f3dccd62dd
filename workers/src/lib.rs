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
use apalis::prelude::{
    Attempt, BackendExt, BoxDynError, Data, Monitor, TaskId as QueueTaskId, WorkerBuilder,
};
use apalis_redis::RedisStorage;
use sqlx::PgPool;

use crewkit_jobs::Config;
use crewkit_jobs::index_session::{self, IndexSession};
use crewkit_jobs::persist_events::{self, PersistEvents, PersistOutcome};
use crewkit_jobs::queue::{JobKind, Queues};
use crewkit_jobs::store;

pub mod lifecycle;
pub mod poll;

use lifecycle::{AttemptOf, tracked};
use poll::RearmingInterval;

/// What every handler shares.
#[derive(Clone)]
pub struct WorkerState {
    pub db: PgPool,
    pub queues: Queues,
    pub config: Arc<Config>,
}

/// A name no other live worker has.
pub fn worker_name(kind: JobKind) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "host".into());
    format!(
        "{}-{}-{}-{:08x}",
        kind.name(),
        host,
        std::process::id(),
        rand::random::<u32>()
    )
}

async fn persist_events_task(
    job: PersistEvents,
    state: Data<WorkerState>,
    task_id: QueueTaskId,
    attempt: Attempt,
) -> Result<PersistOutcome, BoxDynError> {
    let of = AttemptOf {
        kind: JobKind::PersistEvents,
        task_id: &task_id,
        attempt: attempt.current(),
        org_id: job.org_id,
        session_id: Some(job.session_id),
        request_id: job.request_id.as_deref(),
    };
    let outcome = tracked(&state.db, of, persist_events::run(&state.db, &job)).await?;
    if outcome.inserted > 0 {
        index_session::request(
            &state.queues,
            job.org_id,
            job.session_id,
            job.request_id.clone(),
        )
        .await;
    }
    Ok(outcome)
}

async fn index_session_task(
    job: IndexSession,
    state: Data<WorkerState>,
    task_id: QueueTaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let of = AttemptOf {
        kind: JobKind::IndexSession,
        task_id: &task_id,
        attempt: attempt.current(),
        org_id: job.org_id,
        session_id: Some(job.session_id),
        request_id: job.request_id.as_deref(),
    };
    tracked(
        &state.db,
        of,
        index_session::run(&state.db, &state.queues, &job),
    )
    .await
}

/// Registers one apalis worker for a job kind: its queue, concurrency, prefetch and poller.
macro_rules! register {
    ($monitor:ident, $state:ident, $kind:expr, $args:ty, $handler:ident) => {{
        let state = $state.clone();
        let kind = $kind;
        $monitor.register(move |_restarts| {
            let config = &state.config;
            let storage = RedisStorage::<$args>::new(state.queues.connection())
                .with_config(
                    state
                        .queues
                        .config(kind)
                        .batch_size(config.worker_concurrency),
                )
                .poll_with_strategy(RearmingInterval::new(config.worker_poll_interval));
            WorkerBuilder::new(worker_name(kind))
                .backend(storage)
                .concurrency(config.worker_concurrency)
                .data(state.clone())
                .build($handler)
        })
    }};
}

/// Builds the monitor for the given kinds (all of them when empty).
pub fn monitor(state: WorkerState, kinds: &[JobKind]) -> Monitor {
    let kinds: Vec<JobKind> = if kinds.is_empty() {
        JobKind::ALL.to_vec()
    } else {
        kinds.to_vec()
    };
    let mut monitor = Monitor::new();
    for kind in kinds {
        monitor = match kind {
            JobKind::PersistEvents => {
                register!(monitor, state, kind, PersistEvents, persist_events_task)
            }
            JobKind::IndexSession => {
                register!(monitor, state, kind, IndexSession, index_session_task)
            }
            // Queued by the API already (end, compact); their handlers are not written yet, so
            // these jobs wait in their queues until a worker that has them starts.
            JobKind::AnalyzeSession | JobKind::CompactSession => {
                tracing::warn!(
                    queue = kind.queue(),
                    "no handler for this queue yet; its jobs stay queued"
                );
                monitor
            }
        };
    }
    monitor
}

/// Connects, runs migrations, and runs the workers until `shutdown` resolves; then stops fetching
/// and gives in-flight jobs the configured grace period.
pub async fn run(
    config: Config,
    kinds: &[JobKind],
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let db = store::lazy_pool(&config.database_url, config.db_max_connections)?;
    store::migrate(&db).await?;
    let queues = Queues::new(
        &config.redis_url,
        &config.queue_prefix,
        config.redis_response_timeout,
        config.worker_heartbeat,
    )?;
    let grace = config.shutdown_timeout;
    let state = WorkerState {
        db,
        queues,
        config: Arc::new(config),
    };
    let monitor = monitor(state, kinds);
    let ctx = monitor.context();
    let running = tokio::spawn(monitor.run());
    tokio::pin!(running);
    tokio::select! {
        res = &mut running => return Ok(res??),
        () = shutdown => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new jobs, finishing in-flight ones"
    );
    let _ = ctx.shutdown();
    match tokio::time::timeout(grace + Duration::from_millis(500), &mut running).await {
        Ok(res) => Ok(res??),
        Err(_) => {
            tracing::warn!("grace period over; in-flight jobs will be re-run by other workers");
            Ok(())
        }
    }
}
