//! Integration tests: the real API and worker over HTTP, against real PostgreSQL and Redis, each
//! test isolated by its own database and Redis prefix (see `crewkit-testkit`). One binary, tests
//! in parallel.

mod admin;
mod analytics;
mod cases;
mod errors;
mod ingest;
mod openapi;
mod search;
mod sessions;
mod tenancy;
mod updates;
