//! Domain types: parsed at the boundary, trusted past it.

pub mod api_key;
pub mod ingest;
pub mod json_repair;
pub mod remote_url;
pub mod role;

pub use api_key::ApiKeySecret;
pub use remote_url::RemoteUrl;
pub use role::Role;
