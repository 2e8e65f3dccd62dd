//! Revoked keys stop working at once on every API process: a revocation is published on a Redis
//! channel, and every process drops its cached key lookups when it hears one. Revocations are
//! rare, so dropping the whole cache is simpler than finding the one entry and costs one lookup
//! per active key. A process that misses a message (Redis briefly away) still refuses the key
//! once its cache entry expires (`CREWKIT_AUTH_CACHE_TTL_SECS`).

use std::time::Duration;

use futures::StreamExt;

use crate::state::AppState;
use crewkit_jobs::ids::ApiKeyId;

fn channel(state: &AppState) -> String {
    format!("{}:revocations", state.config.queue_prefix)
}

/// Clears this process's cache and tells the others.
pub async fn announce(state: &AppState, key: ApiKeyId) {
    state.principals.invalidate_all();
    let mut conn = state.queues.connection();
    let res: Result<i64, _> =
        redis::cmd("PUBLISH").arg(channel(state)).arg(key.to_string()).query_async(&mut conn).await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "could not broadcast a key revocation; other processes refuse the key when their cache expires");
    }
}

/// Listens for revocations for as long as the process lives, reconnecting after errors.
pub async fn listen(state: AppState) {
    loop {
        match subscribe(&state).await {
            Ok(()) => tracing::warn!("revocation subscription ended; reconnecting"),
            Err(e) => tracing::debug!(error = %e, "revocation subscription failed; retrying"),
        }
        // Anything may have been missed while disconnected.
        state.principals.invalidate_all();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe(state: &AppState) -> redis::RedisResult<()> {
    let client = redis::Client::open(state.config.redis_url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel(state)).await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let key: String = msg.get_payload().unwrap_or_default();
        tracing::info!(key = %key, "key revoked elsewhere; dropping cached key lookups");
        state.principals.invalidate_all();
    }
    Ok(())
}
