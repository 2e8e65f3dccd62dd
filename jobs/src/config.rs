//! Configuration from environment variables, with defaults that work on a developer machine where
//! PostgreSQL and Redis listen on their standard local ports. Every variable is listed in the
//! README's configuration table; `Config::VARIABLES` is that table's source and a test keeps the
//! two in step.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {value:?} ({reason})")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// All settings of the API and the workers.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    pub meili_url: Option<String>,
    pub meili_master_key: Option<String>,
    /// Prepended to the Meilisearch index name (`{prefix}sessions`).
    pub meili_index_prefix: String,
    pub bind: SocketAddr,
    /// Prefix of every Redis key we own (queues included), so deployments and tests can share a
    /// Redis without seeing each other's jobs.
    pub queue_prefix: String,
    pub max_events_per_request: usize,
    pub max_body_bytes: usize,
    pub auth_cache_ttl: Duration,
    pub db_max_connections: u32,
    pub redis_response_timeout: Duration,
    pub worker_poll_interval: Duration,
    pub worker_heartbeat: Duration,
    pub worker_concurrency: usize,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// `CREWKIT_WORKER_CONCURRENCY_<QUEUE>` overrides, by queue name (`ingest`, `analysis`, …).
    pub queue_concurrency: HashMap<String, usize>,
    /// Sessions with no activity for this long are closed (`end_reason: idle`).
    pub idle_timeout: Duration,
    /// How often the scheduled work (idle close, reconcile) runs.
    pub schedule_interval: Duration,
    /// Test-only fault injection, `kind=fail|panic|delay:<ms>,…` (see `workers::faults`).
    pub faults: Option<String>,
    /// Above this many waiting ingestion jobs, ingestion answers 503 and accepts nothing.
    pub max_queue_depth: u64,
    /// Requests per API key per minute, shared by all API processes; 0: no limit.
    pub rate_limit_per_minute: u64,
    /// Where a worker process serves `/metrics` (unset: it does not).
    pub metrics_bind: Option<SocketAddr>,
}

impl Config {
    /// Jobs in flight for one queue in one worker process.
    ///
    /// The ingest queue's default when neither `CREWKIT_WORKER_CONCURRENCY` nor its own override
    /// is set is `INGEST_CONCURRENCY`.
    pub fn concurrency_for(&self, queue: &str) -> usize {
        self.queue_concurrency.get(queue).copied().unwrap_or(self.worker_concurrency)
    }
}

/// The ingest queue's concurrency unless configured (see `concurrency_for`).
pub const INGEST_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// One configuration variable: its name, default (as text) and meaning.
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

impl Config {
    pub const VARIABLES: &'static [Variable] = &[
        Variable {
            name: "DATABASE_URL",
            default: "postgres://localhost/crewkit",
            meaning: "PostgreSQL connection URL",
        },
        Variable { name: "REDIS_URL", default: "redis://127.0.0.1:6379", meaning: "Redis connection URL (job queues)" },
        Variable {
            name: "MEILI_URL",
            default: "(unset)",
            meaning: "Meilisearch URL; unset: search uses PostgreSQL full text",
        },
        Variable { name: "MEILI_MASTER_KEY", default: "(unset)", meaning: "Meilisearch key" },
        Variable {
            name: "MEILI_INDEX_PREFIX",
            default: "crewkit_",
            meaning: "prefix of the Meilisearch index name (`{prefix}sessions`), one per deployment",
        },
        Variable { name: "CREWKIT_BIND", default: "127.0.0.1:8080", meaning: "address the API listens on" },
        Variable { name: "CREWKIT_QUEUE_PREFIX", default: "crewkit", meaning: "prefix of every Redis key (queues)" },
        Variable {
            name: "CREWKIT_MAX_EVENTS_PER_REQUEST",
            default: "1000",
            meaning: "events per ingestion request; more is 413",
        },
        Variable {
            name: "CREWKIT_MAX_BODY_BYTES",
            default: "5242880",
            meaning: "request body limit in bytes; more is 413",
        },
        Variable {
            name: "CREWKIT_AUTH_CACHE_TTL_SECS",
            default: "30",
            meaning: "how long an API process caches a key lookup",
        },
        Variable {
            name: "CREWKIT_DB_MAX_CONNECTIONS",
            default: "10",
            meaning: "PostgreSQL pool size per process (workers open up to half as many again for job records)",
        },
        Variable { name: "CREWKIT_REDIS_TIMEOUT_MS", default: "10000", meaning: "Redis response timeout" },
        Variable {
            name: "CREWKIT_WORKER_POLL_MS",
            default: "100",
            meaning: "how often an idle worker polls its queue",
        },
        Variable {
            name: "CREWKIT_WORKER_HEARTBEAT_SECS",
            default: "5",
            meaning: "worker heartbeat; 3 missed and its jobs go to others",
        },
        Variable {
            name: "CREWKIT_WORKER_CONCURRENCY",
            default: "4",
            meaning: "jobs in flight per queue per worker process (unset: 8 for ingest)",
        },
        Variable {
            name: "CREWKIT_SHUTDOWN_TIMEOUT_SECS",
            default: "20",
            meaning: "grace period for in-flight jobs on SIGTERM",
        },
        Variable {
            name: "CREWKIT_WORKER_CONCURRENCY_<QUEUE>",
            default: "(CREWKIT_WORKER_CONCURRENCY)",
            meaning: "per-queue override, e.g. CREWKIT_WORKER_CONCURRENCY_INGEST=16",
        },
        Variable {
            name: "CREWKIT_IDLE_TIMEOUT_SECS",
            default: "1800",
            meaning: "sessions idle this long are ended with end_reason idle",
        },
        Variable {
            name: "CREWKIT_SCHEDULE_SECS",
            default: "60",
            meaning: "how often workers close idle sessions and reconcile lost work",
        },
        Variable {
            name: "CREWKIT_MAX_QUEUE_DEPTH",
            default: "100000",
            meaning: "ingestion jobs waiting above which ingestion answers 503 with Retry-After",
        },
        Variable {
            name: "CREWKIT_RATE_LIMIT_PER_MINUTE",
            default: "6000",
            meaning: "requests per API key per minute, counted across all API processes in Redis (0: no limit); over it, 429 with `Retry-After`",
        },
        Variable {
            name: "CREWKIT_METRICS_BIND",
            default: "(unset)",
            meaning: "where a worker serves /metrics, e.g. 0.0.0.0:9091 (the API serves it on CREWKIT_BIND)",
        },
        Variable {
            name: "CREWKIT_PRICES_FILE",
            default: "(embedded table)",
            meaning: "a newer LiteLLM model_prices_and_context_window.json to price tokens with",
        },
        Variable {
            name: "CREWKIT_FAULTS",
            default: "(unset)",
            meaning: "tests only: inject faults into jobs, e.g. analyze_session=fail",
        },
        Variable { name: "CREWKIT_LOG_FORMAT", default: "pretty", meaning: "`pretty` or `json`" },
        Variable { name: "RUST_LOG", default: "info", meaning: "log filter (tracing-subscriber syntax)" },
    ];

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the given variables; unset ones take their documented default.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| -> String {
            vars.get(name).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| {
                Self::VARIABLES.iter().find(|v| v.name == name).expect("documented variable").default.to_string()
            })
        };
        let opt = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError { name, reason: e.to_string(), value })
        }
        let num = |name: &'static str| parse::<u64>(name, get(name));
        let log_format = match get("CREWKIT_LOG_FORMAT").as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError {
                    name: "CREWKIT_LOG_FORMAT",
                    value: other.into(),
                    reason: "expected `pretty` or `json`".into(),
                });
            }
        };
        Ok(Self {
            database_url: get("DATABASE_URL"),
            redis_url: get("REDIS_URL"),
            meili_url: opt("MEILI_URL"),
            meili_master_key: opt("MEILI_MASTER_KEY"),
            meili_index_prefix: get("MEILI_INDEX_PREFIX"),
            bind: parse("CREWKIT_BIND", get("CREWKIT_BIND"))?,
            queue_prefix: get("CREWKIT_QUEUE_PREFIX"),
            max_events_per_request: num("CREWKIT_MAX_EVENTS_PER_REQUEST")? as usize,
            max_body_bytes: num("CREWKIT_MAX_BODY_BYTES")? as usize,
            auth_cache_ttl: Duration::from_secs(num("CREWKIT_AUTH_CACHE_TTL_SECS")?),
            db_max_connections: num("CREWKIT_DB_MAX_CONNECTIONS")? as u32,
            redis_response_timeout: Duration::from_millis(num("CREWKIT_REDIS_TIMEOUT_MS")?),
            worker_poll_interval: Duration::from_millis(num("CREWKIT_WORKER_POLL_MS")?.max(1)),
            worker_heartbeat: Duration::from_secs(num("CREWKIT_WORKER_HEARTBEAT_SECS")?.max(1)),
            worker_concurrency: (num("CREWKIT_WORKER_CONCURRENCY")? as usize).max(1),
            shutdown_timeout: Duration::from_secs(num("CREWKIT_SHUTDOWN_TIMEOUT_SECS")?),
            log_format,
            queue_concurrency: {
                let mut by_queue = queue_concurrency(vars)?;
                // Ingestion jobs mostly wait on PostgreSQL, a few milliseconds a batch: unless the
                // operator chose a concurrency for every queue, they get twice the slots (S4,
                // events accepted to persisted: 0.46 of COPY at 4 in flight, 0.55 at 8).
                if !vars.contains_key("CREWKIT_WORKER_CONCURRENCY") {
                    by_queue.entry("ingest".to_string()).or_insert(INGEST_CONCURRENCY);
                }
                by_queue
            },
            idle_timeout: Duration::from_secs(num("CREWKIT_IDLE_TIMEOUT_SECS")?),
            schedule_interval: Duration::from_secs(num("CREWKIT_SCHEDULE_SECS")?.max(1)),
            faults: opt("CREWKIT_FAULTS"),
            max_queue_depth: num("CREWKIT_MAX_QUEUE_DEPTH")?,
            rate_limit_per_minute: num("CREWKIT_RATE_LIMIT_PER_MINUTE")?,
            metrics_bind: opt("CREWKIT_METRICS_BIND").map(|v| parse("CREWKIT_METRICS_BIND", v)).transpose()?,
        })
    }
}

/// `CREWKIT_WORKER_CONCURRENCY_<QUEUE>=N` for known queues; anything else there is an error, not
/// a silently ignored setting.
fn queue_concurrency(vars: &HashMap<String, String>) -> Result<HashMap<String, usize>, ConfigError> {
    let mut out = HashMap::new();
    for (key, value) in vars {
        let Some(queue) = key.strip_prefix("CREWKIT_WORKER_CONCURRENCY_") else { continue };
        let err = |reason: String| ConfigError {
            name: "CREWKIT_WORKER_CONCURRENCY_<QUEUE>",
            value: format!("{key}={value}"),
            reason,
        };
        let queue = queue.to_ascii_lowercase();
        if crate::queue::JobKind::from_queue(&queue).is_none() {
            return Err(err(format!(
                "unknown queue `{queue}`; the queues are {}",
                crate::queue::JobKind::queue_names()
            )));
        }
        let n: usize = value.parse().map_err(|_| err("expected a whole number".into()))?;
        out.insert(queue, n.max(1));
    }
    Ok(out)
}

/// Secrets (database password, Meilisearch key) never reach a log line.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("meili_url", &self.meili_url)
            .field("meili_master_key", &self.meili_master_key.as_ref().map(|_| "[redacted]"))
            .field("bind", &self.bind)
            .field("queue_prefix", &self.queue_prefix)
            .field("max_events_per_request", &self.max_events_per_request)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("worker_concurrency", &self.worker_concurrency)
            .finish_non_exhaustive()
    }
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_parse() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.database_url, "postgres://localhost/crewkit");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_events_per_request, 1000);
        assert_eq!(c.max_body_bytes, 5 * 1024 * 1024);
        assert!(c.meili_url.is_none());
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let vars = HashMap::from([("CREWKIT_BIND".to_string(), "nowhere".to_string())]);
        let err = Config::from_vars(&vars).unwrap_err();
        assert_eq!(err.name, "CREWKIT_BIND");
    }

    #[test]
    fn per_queue_concurrency_must_name_a_queue_and_a_number() {
        let vars = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        let c = Config::from_vars(&vars("CREWKIT_WORKER_CONCURRENCY_INGEST", "16")).unwrap();
        assert_eq!((c.concurrency_for("ingest"), c.concurrency_for("search")), (16, 4));
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!((c.concurrency_for("ingest"), c.concurrency_for("analysis")), (8, 4), "ingest's own default");
        let c = Config::from_vars(&vars("CREWKIT_WORKER_CONCURRENCY", "2")).unwrap();
        assert_eq!((c.concurrency_for("ingest"), c.concurrency_for("analysis")), (2, 2), "one setting for all queues");
        assert!(Config::from_vars(&vars("CREWKIT_WORKER_CONCURRENCY_INGEST", "abc")).is_err());
        assert!(Config::from_vars(&vars("CREWKIT_WORKER_CONCURRENCY_PERSIST_EVENTS", "4")).is_err());
    }

    #[test]
    fn debug_output_hides_passwords_and_keys() {
        let vars = HashMap::from([
            ("DATABASE_URL".to_string(), "postgres://u:hunter2@db/crewkit".to_string()),
            ("MEILI_MASTER_KEY".to_string(), "sekrit".to_string()),
        ]);
        let text = format!("{:?}", Config::from_vars(&vars).unwrap());
        assert!(!text.contains("hunter2") && !text.contains("sekrit"), "{text}");
    }

    #[test]
    fn the_readme_table_lists_every_variable() {
        let readme = include_str!("../../README.md");
        for v in Config::VARIABLES {
            assert!(readme.contains(&format!("`{}`", v.name)), "README lacks {}", v.name);
        }
    }
}
