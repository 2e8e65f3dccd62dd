//! crewkit-jobs: the domain, the job payloads and their handlers, the store, the queues and the
//! configuration, shared by the API (`crewkit-api`) and the workers (`crewkit-worker`). Nothing
//! here knows about HTTP.
//!
//! The path of an event: the API validates a batch (`domain::ingest`, after `domain::json_repair`)
//! and pushes one `persist_events` job (`queue`); a worker runs `persist_events::run`, which writes
//! the batch in one statement (`store::events`) and derives counters and tasks (`store::tasks`).

pub mod analyze_session;
pub mod compact_session;
pub mod config;
pub mod domain;
pub mod ids;
pub mod index_session;
pub mod lifecycle;
pub mod metrics;
pub mod persist_events;
pub mod pricing;
pub mod queue;
pub mod search_index;
pub mod service;
pub mod store;
pub mod telemetry;

pub use config::Config;
