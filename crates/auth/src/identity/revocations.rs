//! API key revocations shared through Redis, so every gateway refuses a revoked key within milliseconds instead of
//! when its copy of the key file is next updated.
//!
//! `modelgate keys revoke --redis URL` adds the key id to the set `{prefix}revoked-api-keys` and publishes it on
//! the channel `{prefix}api-key-revocations`. Each gateway subscribes first, then reads the set (so nothing
//! published in between is missed), and keeps the ids in memory: the request path reads an immutable set, never
//! Redis. When the connection drops the ids already known stay revoked; the gateway reconnects with backoff and
//! reads the set again.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use modelgate_config::model::RedisConfig;

type Ids = HashSet<String, foldhash::fast::RandomState>;

pub struct Revocations {
    pub config: RedisConfig,
    revoked: ArcSwap<Ids>,
    task: OnceLock<tokio::task::AbortHandle>,
}

pub fn set_key(prefix: &str) -> String {
    format!("{prefix}revoked-api-keys")
}

pub fn channel(prefix: &str) -> String {
    format!("{prefix}api-key-revocations")
}

/// Why following the revocations through Redis could not start, or stopped (never shows the URL: it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("bad Redis URL ({0:?})")]
    BadUrl(redis::ErrorKind),
    #[error("{0}: timed out")]
    Timeout(&'static str),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("subscription closed")]
    Closed,
}

impl Revocations {
    /// Starts following the revocations (from a tokio runtime).
    pub fn start(config: RedisConfig) -> Result<Arc<Revocations>, RedisError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| RedisError::BadUrl(e.kind()))?;
        let me = Arc::new(Revocations { config, revoked: ArcSwap::from_pointee(Ids::default()), task: OnceLock::new() });
        let task = tokio::spawn(follow(Arc::downgrade(&me), client));
        let _ = me.task.set(task.abort_handle());
        Ok(me)
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.load().contains(id)
    }

    fn add(&self, ids: impl IntoIterator<Item = String>) -> usize {
        let mut next = Ids::clone(&self.revoked.load());
        let before = next.len();
        next.extend(ids);
        let added = next.len() - before;
        if added > 0 {
            self.revoked.store(Arc::new(next));
        }
        added
    }
}

impl Drop for Revocations {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

async fn follow(me: Weak<Revocations>, client: redis::Client) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(cfg) = me.upgrade().map(|m| m.config.clone()) else { return };
        match subscribe(&me, &client, &cfg).await {
            Ok(()) => backoff = Duration::from_millis(100),
            // Never the URL: it may hold a password.
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "API key revocations: Redis unavailable; known revocations stay in force")
            }
        }
        #[allow(clippy::disallowed_methods, reason = "a reconnect back-off, not a wait for a condition")]
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: subscribe, read the set, then apply messages until the connection ends.
async fn subscribe(me: &Weak<Revocations>, client: &redis::Client, cfg: &RedisConfig) -> Result<(), RedisError> {
    let timed = |what: &'static str| move |_| RedisError::Timeout(what);
    let mut pubsub = tokio::time::timeout(cfg.connect_timeout, client.get_async_pubsub()).await.map_err(timed("connect"))??;
    pubsub.subscribe(channel(&cfg.key_prefix)).await?;
    let mut conn =
        tokio::time::timeout(cfg.connect_timeout, client.get_multiplexed_async_connection()).await.map_err(timed("connect"))??;
    let ids: Vec<String> =
        tokio::time::timeout(cfg.command_timeout, redis::cmd("SMEMBERS").arg(set_key(&cfg.key_prefix)).query_async(&mut conn))
            .await
            .map_err(timed("SMEMBERS"))??;
    drop(conn);
    {
        let Some(m) = me.upgrade() else { return Ok(()) };
        let added = m.add(ids);
        tracing::info!(added, total = m.revoked.load().len(), "API key revocations: following Redis");
    }
    let mut messages = pubsub.into_on_message();
    while let Some(msg) = messages.next().await {
        let Ok(id) = msg.get_payload::<String>() else { continue };
        let Some(m) = me.upgrade() else { return Ok(()) };
        if m.add([id.clone()]) > 0 {
            tracing::info!(key_id = %id, "API key revoked through Redis");
        }
    }
    Err(RedisError::Closed)
}

/// Publishes a revocation (for `modelgate keys revoke --redis`).
pub async fn publish(url: &str, prefix: &str, id: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("bad Redis URL ({:?})", e.kind()))?;
    let mut conn = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| anyhow::anyhow!("connecting to Redis timed out"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
    let (_, receivers): (i64, i64) = redis::pipe()
        .cmd("SADD")
        .arg(set_key(prefix))
        .arg(id)
        .cmd("PUBLISH")
        .arg(channel(prefix))
        .arg(id)
        .query_async(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    tracing::debug!(receivers, "revocation published");
    Ok(())
}
