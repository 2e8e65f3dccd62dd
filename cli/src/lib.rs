//! crewkit-cli: the client side. `hook` is the forwarder that agent hooks call; it never blocks
//! or fails the agent, and never loses an event it could read (see `spool`).

pub mod api;
pub mod hook;
pub mod import;
pub mod spool;
