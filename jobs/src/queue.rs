//! The job queues in Redis (apalis-redis 1.0), as the API and the workers both see them.
//!
//! Choices that apalis-redis 1.0.0 forces (see NOTES and the README's "apalis 1.0" section):
//! - queue names are set explicitly (`{prefix}:{kind}`); the default is the Rust type path, and
//!   moving a type would silently rename the queue;
//! - the connection manager is built here with a long response timeout: the 500 ms default of
//!   `apalis_redis::connect` ends a worker on one slow reply;
//! - `push` returns no id, so every task is pushed with an id we generate (a ULID, which is also
//!   the job id the API returns), in one round trip (`PushOnce`).

use std::time::Duration;

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId as QueueTaskId;
use apalis_redis::{Config as QueueConfig, ConnectionManager};
use redis::aio::ConnectionManagerConfig;
use serde::Serialize;

use crate::ids::{JobId, SessionId};

/// One task pushed to run now, onto the active list (see `lua/push_now.lua` for why).
static PUSH_NOW: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/push_now.lua")));

/// Every kind of job, each with its own queue so ops can scale workers per queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    PersistEvents,
    AnalyzeSession,
    CompactSession,
    IndexSession,
}

impl JobKind {
    pub const ALL: &'static [JobKind] =
        &[JobKind::PersistEvents, JobKind::AnalyzeSession, JobKind::CompactSession, JobKind::IndexSession];

    pub fn name(&self) -> &'static str {
        match self {
            JobKind::PersistEvents => "persist_events",
            JobKind::AnalyzeSession => "analyze_session",
            JobKind::CompactSession => "compact_session",
            JobKind::IndexSession => "index_session",
        }
    }

    /// The `--queues` name of this kind's queue.
    pub fn queue(&self) -> &'static str {
        match self {
            JobKind::PersistEvents => "ingest",
            JobKind::AnalyzeSession => "analysis",
            JobKind::CompactSession => "compaction",
            JobKind::IndexSession => "search",
        }
    }

    pub fn max_attempts(&self) -> usize {
        match self {
            JobKind::PersistEvents => 8,
            JobKind::AnalyzeSession | JobKind::CompactSession | JobKind::IndexSession => 5,
        }
    }

    /// The queue names, for messages: `ingest, analysis, compaction, search`.
    pub fn queue_names() -> String {
        Self::ALL.iter().map(|k| k.queue()).collect::<Vec<_>>().join(", ")
    }

    pub fn from_queue(name: &str) -> Option<JobKind> {
        Self::ALL.iter().copied().find(|k| k.queue() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Apalis(#[from] apalis_redis::Error),
    #[error("encoding job: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A handle on all queues: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Queues {
    conn: ConnectionManager,
    prefix: String,
    heartbeat: Duration,
}

impl Queues {
    /// Builds the connection manager without connecting (it connects on first use), so processes
    /// start while Redis is still coming up.
    pub fn new(
        redis_url: &str,
        prefix: &str,
        response_timeout: Duration,
        heartbeat: Duration,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Self { conn, prefix: prefix.to_string(), heartbeat })
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The apalis-redis configuration of one kind's queue. A worker misses 3 heartbeats before
    /// its in-flight jobs are handed to others (the default is 10 × 30 s = 5 minutes).
    ///
    /// Lease locking is off: a fetch already moves each task from the active list into the
    /// worker's in-flight set (which is what a dead worker's jobs are re-enqueued from), and the
    /// lock step then ran `LREM active 1 id` per task, a scan of the whole backlog for an id no
    /// longer in it, so consuming was O(backlog) per job (about 300 jobs/s from 100k). What the
    /// lock wrote, `status: Running` in the task's meta hash, our job record holds instead.
    pub fn config(&self, kind: JobKind) -> QueueConfig {
        QueueConfig::default()
            .queue(format!("{}:{}", self.prefix, kind.name()))
            .heartbeat_interval(self.heartbeat)
            .missed_heartbeats(3)
            .lock_tasks(false)
            // apalis-redis publishes every push and every ack on a pub/sub channel by default;
            // nothing here subscribes, and it was Redis work on both hot paths.
            .emit_events(false)
    }

    /// Pushes one job and returns its id once Redis has it. A connection error is retried once
    /// (the first command after a Redis restart fails while the manager reconnects).
    pub async fn push<T: Serialize>(&self, kind: JobKind, job: &T) -> Result<JobId, QueueError> {
        let (job_id, _) = JobId::generate_ulid();
        self.push_with_id(kind, job_id, job).await?;
        Ok(job_id)
    }

    /// Pushes a job whose id was chosen earlier: the caller wrote its record (status `queued`) in
    /// the same transaction as the change that caused it, and pushes only after the commit, so a
    /// worker never picks up a job whose cause it cannot see yet.
    pub async fn push_with_id<T: Serialize>(&self, kind: JobKind, job_id: JobId, job: &T) -> Result<(), QueueError> {
        self.push_at(kind, job_id, job, 0).await
    }

    /// Pushes a job with a chosen id to run `delay_secs` from now.
    pub async fn push_at_with_id<T: Serialize>(
        &self,
        kind: JobKind,
        job_id: JobId,
        job: &T,
        delay_secs: u64,
    ) -> Result<(), QueueError> {
        self.push_at(kind, job_id, job, delay_secs).await
    }

    /// Puts a finished (dead) task back in its queue under the same id, attempts reset: its
    /// payload is kept, its state is cleared and it is pushed again. `false` when the queue no
    /// longer holds its payload.
    pub async fn requeue(&self, kind: JobKind, job_id: JobId) -> Result<bool, QueueError> {
        let config = self.config(kind);
        let task_id = job_id.ulid().to_string();
        let mut conn = self.conn.clone();
        let payload: Option<Vec<u8>> =
            redis::cmd("HGET").arg(config.job_data_hash()).arg(&task_id).query_async(&mut conn).await?;
        let Some(payload) = payload else {
            return Ok(false);
        };
        let _: () = redis::pipe()
            .hdel(config.job_data_hash(), &task_id)
            .del(format!("{}:{}", config.job_meta_hash(), task_id))
            .srem(config.dead_jobs_set(), &task_id)
            .srem(config.done_jobs_set(), &task_id)
            .query_async(&mut conn)
            .await?;
        let task = TaskBuilder::new(payload)
            .task_id(QueueTaskId::from(job_id.ulid()))
            .max_attempts(kind.max_attempts())
            .build();
        apalis_redis::queries::push_tasks(&mut conn, &config, &[task]).await?;
        Ok(true)
    }

    /// Pushes a job to run `delay_secs` from now (apalis-redis delays have 1-second resolution).
    pub async fn push_delayed<T: Serialize>(
        &self,
        kind: JobKind,
        job: &T,
        delay_secs: u64,
    ) -> Result<JobId, QueueError> {
        let (job_id, _) = JobId::generate_ulid();
        self.push_at(kind, job_id, job, delay_secs).await?;
        Ok(job_id)
    }

    async fn push_at<T: Serialize>(
        &self,
        kind: JobKind,
        job_id: JobId,
        job: &T,
        delay_secs: u64,
    ) -> Result<(), QueueError> {
        self.push_counted(kind, job_id, job, delay_secs, None).await
    }

    /// Pushes one job; `counter`, for a job to run now, is a key incremented (and kept an hour) in
    /// the same script, only when the task is new, so a retried push never counts twice.
    async fn push_counted<T: Serialize>(
        &self,
        kind: JobKind,
        job_id: JobId,
        job: &T,
        delay_secs: u64,
        counter: Option<&str>,
    ) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(job)?;
        let config = self.config(kind);
        let once = PushOnce { config: &config, kind, job_id, bytes: &bytes, delay_secs, counter };
        match once.run(self.conn.clone()).await {
            Err(QueueError::Redis(e) | QueueError::Apalis(apalis_redis::Error::Database(e)))
                if e.is_connection_dropped() || e.is_io_error() || e.is_timeout() =>
            {
                tracing::warn!(error = %e, kind = kind.name(), job = %job_id, "redis push failed, retrying once");
                once.run(self.conn.clone()).await
            }
            other => other,
        }
    }

    /// Deletes what apalis-redis keeps forever: the payload and state of tasks that ended (done
    /// or dead) longer ago than `older_than`, walking the done and dead sets in small steps
    /// (`SSCAN`) so Redis is never blocked. Their records stay in PostgreSQL. Returns how many
    /// tasks were removed, at most `max` per call.
    pub async fn vacuum(&self, kind: JobKind, older_than: Duration, max: usize) -> Result<usize, QueueError> {
        let config = self.config(kind);
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_sub(older_than.as_secs());
        let mut conn = self.conn.clone();
        let mut removed = 0;
        for set in [config.done_jobs_set(), config.dead_jobs_set()] {
            let mut cursor: u64 = 0;
            loop {
                let (next, ids): (u64, Vec<String>) =
                    redis::cmd("SSCAN").arg(&set).arg(cursor).arg("COUNT").arg(200).query_async(&mut conn).await?;
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.hget(format!("{}:{id}", config.job_meta_hash()), "done_at");
                }
                let done_at: Vec<Option<u64>> =
                    if ids.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
                let mut delete = redis::pipe();
                let before = removed;
                for (id, at) in ids.iter().zip(done_at) {
                    if at.is_some_and(|t| t <= cutoff) && removed < max {
                        delete.hdel(config.job_data_hash(), id).ignore();
                        delete.del(format!("{}:{id}", config.job_meta_hash())).ignore();
                        delete.srem(&set, id).ignore();
                        removed += 1;
                    }
                }
                if removed > before {
                    let _: () = delete.query_async(&mut conn).await?;
                }
                cursor = next;
                if cursor == 0 || removed >= max {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// The key counting a session's ingestion jobs not yet persisted.
    pub fn pending_key(&self, session: SessionId) -> String {
        format!("{}:pending-ingest:{session}", self.prefix)
    }

    /// Pushes a `persist_events` job and counts it as pending for its session, in one script (one
    /// Redis command on the hot path). The analysis waits for the count to drain, so it sees
    /// every event accepted before the end.
    pub async fn push_ingest(&self, job: &crate::persist_events::PersistEventsRef<'_>) -> Result<JobId, QueueError> {
        let (job_id, _) = JobId::generate_ulid();
        let key = self.pending_key(job.session_id);
        self.push_counted(JobKind::PersistEvents, job_id, job, 0, Some(&key)).await?;
        Ok(job_id)
    }

    /// Marks one of the session's ingestion jobs as done (persisted, or failed for good).
    pub async fn ingest_done(&self, session: SessionId) {
        let mut conn = self.conn.clone();
        let res: Result<i64, _> = redis::cmd("DECR").arg(self.pending_key(session)).query_async(&mut conn).await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not mark an ingestion job done");
        }
    }

    /// Ingestion jobs of the session not yet persisted.
    pub async fn ingest_pending(&self, session: SessionId) -> Result<i64, QueueError> {
        let mut conn = self.conn.clone();
        let n: Option<i64> = redis::cmd("GET").arg(self.pending_key(session)).query_async(&mut conn).await?;
        Ok(n.unwrap_or(0))
    }

    /// The state of a job still known only to the queue: its payload bytes and its status.
    pub async fn peek(&self, kind: JobKind, id: JobId) -> Result<Option<QueuedJob>, QueueError> {
        let config = self.config(kind);
        let task_id = id.ulid().to_string();
        let mut conn = self.conn.clone();
        let (payload, status, attempts): (Option<Vec<u8>>, Option<String>, Option<i64>) = redis::pipe()
            .hget(config.job_data_hash(), &task_id)
            .hget(format!("{}:{}", config.job_meta_hash(), task_id), "status")
            .hget(format!("{}:{}", config.job_meta_hash(), task_id), "attempts")
            .query_async(&mut conn)
            .await?;
        Ok(payload.map(|payload| QueuedJob {
            payload,
            status: status.unwrap_or_default(),
            attempts: attempts.unwrap_or(0),
        }))
    }

    /// Jobs waiting in one kind's queue (active list plus scheduled retries).
    pub async fn depth(&self, kind: JobKind) -> Result<u64, QueueError> {
        let config = self.config(kind);
        let mut conn = self.conn.clone();
        let (active, scheduled): (u64, u64) = redis::pipe()
            .llen(config.active_jobs_list())
            .zcard(config.scheduled_jobs_set())
            .query_async(&mut conn)
            .await?;
        Ok(active + scheduled)
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

/// One attempt at pushing one job (`Queues::push_counted`).
struct PushOnce<'a> {
    config: &'a QueueConfig,
    kind: JobKind,
    job_id: JobId,
    bytes: &'a [u8],
    delay_secs: u64,
    counter: Option<&'a str>,
}

impl PushOnce<'_> {
    async fn run(&self, mut conn: ConnectionManager) -> Result<(), QueueError> {
        let (config, kind, ulid) = (self.config, self.kind, self.job_id.ulid());
        if self.delay_secs > 0 {
            let task = TaskBuilder::new(self.bytes.to_vec())
                .task_id(QueueTaskId::from(ulid))
                .max_attempts(kind.max_attempts())
                .run_in_seconds(self.delay_secs)
                .build();
            apalis_redis::queries::push_tasks(&mut conn, config, &[task]).await?;
            return Ok(());
        }
        // The metadata apalis-redis would write for this task (the payload is not part of it).
        let meta = TaskBuilder::new(()).task_id(QueueTaskId::from(ulid)).max_attempts(kind.max_attempts()).build();
        let meta = serde_json::to_string(meta.metadata())?;
        let id = ulid.to_string();
        let mut script = PUSH_NOW.key(config.job_meta_hash());
        script.key(config.active_jobs_list()).key(config.signal_list());
        if let Some(counter) = self.counter {
            script.key(counter);
        }
        script.arg(&id).arg(0).arg(kind.max_attempts()).arg(meta).arg(if config.emit_events { "1" } else { "0" });
        // The payload goes by HSETNX beside the script, in one MULTI/EXEC: one round trip, atomic,
        // and the payload is never copied into Lua (docs/decisions.md, "Ingestion hot path").
        let mut pipe = redis::pipe();
        pipe.atomic().hset_nx(config.job_data_hash(), &id, self.bytes).ignore().invoke_script(&script);
        match pipe.query_async::<(i64,)>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis lost its script cache (a restart): load the script and run the whole
                // transaction again; the HSETNX and the script both skip what is already done.
                script.load_async(&mut conn).await?;
                pipe.query_async::<(i64,)>(&mut conn).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }
}

/// A job as the queue holds it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub payload: Vec<u8>,
    /// apalis status: Pending, Running, Done, Failed, Killed…
    pub status: String,
    pub attempts: i64,
}
