//! PostgreSQL access. Every function takes an executor (a pool or a transaction) so the caller
//! decides what is atomic; every query that reads tenant data filters on `org_id`.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub mod analytics;
pub mod compactions;
pub mod events;
pub mod jobs;
pub mod orgs;
pub mod search;
pub mod sessions;
pub mod tasks;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A value that contradicts what is stored (say, an end before the start).
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when retrying later may succeed (the database was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
                ) || e.as_database_error().is_some_and(|d| {
                    // serialization_failure, deadlock_detected, too_many_connections, admin shutdown
                    matches!(d.code().as_deref(), Some("40001" | "40P01" | "53300" | "57P01" | "57P03"))
                })
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A pool that connects on first use, so a process can start (and serve `/healthz`, print its
/// OpenAPI document) while the database is still coming up.
pub fn lazy_pool(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    Ok(pool_with(connect_options(database_url)?, max_connections))
}

/// A pool for writes that may be lost in a PostgreSQL crash: its sessions commit without waiting
/// for the WAL flush (`synchronous_commit = off`; at most about 0.6 s of such commits can be lost,
/// and what is committed stays consistent). The workers' job records use it: they are bookkeeping
/// that the next attempt or the queue corrects, written once per job, and waiting for a flush
/// each time cost the ingestion path a second flush per batch (S4).
pub fn lazy_pool_async_commit(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    Ok(pool_with(connect_options(database_url)?.options([("synchronous_commit", "off")]), max_connections))
}

fn pool_with(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options)
}

fn connect_options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let mut options: PgConnectOptions = database_url.parse()?;
    // Without a user in the URL or PGUSER, sqlx asks the environment ($USER), which services and
    // CI often lack; it then tries a user named "anonymous". Use the OS account, as libpq does.
    if !url_has_user(database_url)
        && std::env::var_os("PGUSER").is_none()
        && let Some(user) = os_username()
    {
        options = options.username(&user);
    }
    Ok(options)
}

fn url_has_user(url: &str) -> bool {
    url.split_once("://").is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|auth| auth.contains('@')))
}

/// The name of the account this process runs as, from /proc and /etc/passwd (no libc call).
fn os_username() -> Option<String> {
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return Some(user);
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_string())
    })
}

/// Runs pending migrations (under PostgreSQL's advisory lock, so concurrent starts are safe).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
