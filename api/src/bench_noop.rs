//! `POST /_bench/noop`: the baseline of the ingestion benchmark (`script/bench`, S1 and S2).
//!
//! It does what the real ingestion endpoint does up to the point where our own work starts: the
//! same body read under the same limit (`body::read_repaired`, which also repairs the JSON) and a
//! parse of the batch into the same lazy shape (`events` as borrowed raw values, each event's
//! fields as raw values), then drops it and answers 202. What the real endpoint does beyond this
//! (auth, session lookup, validation, the Redis push) is what the benchmark's ratio measures.
//!
//! It is a plain poem route, not part of the OpenAPI service (the committed document must not
//! change), and it is mounted only when `CREWKIT_BENCH_NOOP=1` is set, so production never has it.

use poem::http::StatusCode;
use poem::web::RequestBody;
use poem::{Body, Request, Route, handler};

use crate::body::read_repaired;

/// The variable that mounts the route.
pub const ENV: &str = "CREWKIT_BENCH_NOOP";

#[handler]
async fn noop(req: &Request, body: Body) -> poem::Result<StatusCode> {
    let text = read_repaired(req, &mut RequestBody::new(body)).await?;
    let events = crewkit_jobs::domain::ingest::decode_only(&text).map_err(crate::error::ApiError::from)?;
    std::hint::black_box(events);
    Ok(StatusCode::ACCEPTED)
}

/// Adds the route when `CREWKIT_BENCH_NOOP=1`.
pub fn mount(route: Route) -> Route {
    if std::env::var(ENV).is_ok_and(|v| v == "1") { route.at("/_bench/noop", poem::post(noop)) } else { route }
}
