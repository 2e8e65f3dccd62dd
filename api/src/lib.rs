//! crewkit-api: the HTTP edge. Routes translate requests into calls on `crewkit-jobs` (store and
//! queues) and map results and errors to HTTP; no SQL or Redis command is written here.

pub mod admin;
pub mod auth;
pub mod backpressure;
pub mod bench_noop;
pub mod body;
pub mod error;
pub mod models;
pub mod ratelimit;
pub mod revocation;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry_http;
