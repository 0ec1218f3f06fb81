//! Counters for the `rate_limit` plugin: an in-process store and a Redis store shared by every gateway.
//! ([`Services`] also hands out the concurrency plugin's [`crate::in_flight::InFlight`] counters.)
//!
//! Algorithm (both stores): **fixed windows aligned to the Unix epoch**. A limit of `L` per `W` admits a request
//! when the cost already counted in the current window `[k·W, (k+1)·W)` plus the request's cost is at most `L`;
//! then the cost is counted. So exactly `L` units are admitted per window, never more, across any number of
//! gateways with the Redis store (whose window is taken from the Redis server's clock, one clock for all). The
//! known bound of fixed windows: a client can spend `L` at the end of one window and `L` at the start of the next,
//! so any rolling interval of length `W` sees at most `2L`.
//!
//! Several limits of one plugin are checked together: a request is admitted only if every limit admits it, and
//! only then is it counted in all of them (Redis: one Lua script, one round trip; local: count, and undo on a
//! later refusal).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_config::model::RedisConfig;
use smallvec::SmallVec;

use crate::in_flight::InFlight;
use crate::shard::{SHARD_SWEEP, shard_of};

/// One limit as a store sees it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub limit: u64,
    pub window_ms: u64,
}

/// A store's answer for one request: admitted or not, and per limit the units used in its current window (after
/// counting this request if admitted) and the milliseconds until that window ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    pub used: SmallVec<[(u64, u64); 4]>,
}

/// What outlives snapshots: counters survive reloads, and the Redis connection too while its settings stay.
#[derive(Default)]
pub struct Registry {
    local: Arc<LocalStore>,
    in_flight: Arc<InFlight>,
    redis: Option<Arc<RedisStore>>,
}

/// The stores a snapshot's plugins use.
#[derive(Clone, Default)]
pub struct Services {
    pub local: Arc<LocalStore>,
    pub in_flight: Arc<InFlight>,
    pub redis: Option<Arc<RedisStore>>,
}

/// In-process counters: 16 shards of `key → (window end, used)`, bounded. Keys can be the caller's to choose
/// (`by: [client_ip]`, `header:*`, a path's model on a route without auth), so a shard is swept of passed windows
/// only when it has doubled since the last sweep (amortized, never a full scan per request), and holds at most
/// `max_keys` live keys: past that the eighth whose windows end soonest are evicted (they start again at zero, as
/// Kong's LRU-evicting shared dict would).
pub struct LocalStore {
    shards: [Mutex<Shard>; 16],
    /// Live keys one shard may hold.
    max_keys: usize,
}

#[derive(Default)]
struct Shard {
    counters: HashMap<Box<str>, Counter, foldhash::fast::RandomState>,
    /// Size at which the next sweep runs.
    sweep_at: usize,
}

/// Live keys per shard by default (16 shards: about 260,000 keys, some 25 MB at most).
pub const MAX_KEYS_PER_SHARD: usize = 1 << 14;

#[derive(Clone, Copy)]
struct Counter {
    /// End of the counter's window, epoch ms.
    ends: u64,
    used: u64,
}

/// Counters in Redis, one Lua script per request.
pub struct RedisStore {
    pub config: RedisConfig,
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    /// When the last failure was logged (epoch s), so an outage logs once a second, not once a request.
    last_log: AtomicU64,
}

/// For every limit i: `KEYS[i]` is its key, `ARGV[3i-2..3i]` its window (ms), limit and cost. Windows come from the
/// server's clock. Checks all limits first, counts in all only if all admit. Returns
/// `{admitted, used_1, reset_ms_1, used_2, reset_ms_2, …}`.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {1}
local keys = {}
for i = 1, #KEYS do
  local w, lim, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local idx = math.floor(now / w)
  local k = KEYS[i] .. ':' .. idx
  local used = tonumber(redis.call('GET', k) or '0')
  if used + cost > lim then out[1] = 0 end
  keys[i] = k
  out[2*i] = used
  out[2*i+1] = (idx + 1) * w - now
end
if out[1] == 1 then
  for i = 1, #KEYS do
    local w, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i])
    local used = redis.call('INCRBY', keys[i], cost)
    if used == cost then redis.call('PEXPIRE', keys[i], w + 1000) end
    out[2*i] = used
  end
end
return out
"#;

/// Why the Redis store could not be set up (never shows the URL: it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad Redis URL ({0:?})")]
    BadUrl(redis::ErrorKind),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Why one check in Redis failed; its limits' `on_store_error` applies.
#[derive(Debug, thiserror::Error)]
enum CheckFailure {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("timed out")]
    Timeout,
    #[error("unexpected script answer")]
    Answer,
}

// === impl Registry ===

impl Registry {
    /// The stores for a config (from a tokio runtime: the Redis connection is made lazily there).
    pub fn build(&mut self, redis: Option<&RedisConfig>) -> Result<Services, StoreError> {
        self.redis = match (redis, self.redis.take()) {
            (Some(c), Some(r)) if r.config == *c => Some(r),
            (Some(c), _) => Some(Arc::new(RedisStore::new(c.clone())?)),
            (None, _) => None,
        };
        Ok(Services { local: self.local.clone(), in_flight: self.in_flight.clone(), redis: self.redis.clone() })
    }
}

// === impl LocalStore ===

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore::with_max_keys(MAX_KEYS_PER_SHARD)
    }
}

impl LocalStore {
    /// A store whose shards hold at most `max_keys` live keys each.
    pub fn with_max_keys(max_keys: usize) -> LocalStore {
        let max_keys = max_keys.max(8);
        LocalStore {
            shards: std::array::from_fn(|_| Mutex::new(Shard { counters: HashMap::default(), sweep_at: SHARD_SWEEP.min(max_keys) })),
            max_keys,
        }
    }

    /// Keys held, all shards (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).counters.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks and counts `costs[i]` against each `(keys[i], windows[i])`, all or nothing.
    pub fn check<K: AsRef<str>>(&self, keys: &[K], windows: &[Window], costs: &[u64], now_ms: u64) -> Decision {
        let mut used: SmallVec<[(u64, u64); 4]> = SmallVec::with_capacity(keys.len());
        let mut admitted = true;
        for (i, ((key, w), &cost)) in keys.iter().map(AsRef::as_ref).zip(windows).zip(costs).enumerate() {
            let ends = (now_ms / w.window_ms + 1) * w.window_ms;
            let mut guard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            if shard.counters.len() >= shard.sweep_at && !shard.counters.contains_key(key) {
                self.make_room(shard, now_ms);
            }
            let c = match shard.counters.get_mut(key) {
                Some(c) => c,
                None => shard.counters.entry(key.into()).or_insert(Counter { ends, used: 0 }),
            };
            if c.ends != ends {
                *c = Counter { ends, used: 0 };
            }
            if c.used + cost <= w.limit {
                c.used += cost;
                used.push((c.used, ends - now_ms));
            } else {
                used.push((c.used, ends - now_ms));
                admitted = false;
                drop(guard);
                // Undo what the earlier limits counted for this request.
                for (j, ((key, w), &cost)) in keys[..i].iter().map(AsRef::as_ref).zip(windows).zip(costs).enumerate() {
                    let ends = (now_ms / w.window_ms + 1) * w.window_ms;
                    let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = shard.counters.get_mut(key)
                        && c.ends == ends
                    {
                        c.used = c.used.saturating_sub(cost);
                        used[j].0 = c.used;
                    }
                }
                for (key, w) in keys.iter().map(AsRef::as_ref).zip(windows).skip(i + 1) {
                    let ends = (now_ms / w.window_ms + 1) * w.window_ms;
                    let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
                    let u = shard.counters.get(key).filter(|c| c.ends == ends).map_or(0, |c| c.used);
                    used.push((u, ends - now_ms));
                }
                break;
            }
        }
        Decision { admitted, used }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[shard_of(key, self.shards.len())]
    }

    /// Before a new key goes into a shard at its sweep size: drop passed windows; if the shard is still at its
    /// bound, evict the eighth of the keys whose windows end soonest. The next sweep waits until the shard has
    /// doubled (or reached the bound), so sweeping costs O(1) per insert amortized.
    fn make_room(&self, shard: &mut Shard, now_ms: u64) {
        shard.counters.retain(|_, c| c.ends > now_ms);
        if shard.counters.len() >= self.max_keys {
            let mut ends: Vec<u64> = shard.counters.values().map(|c| c.ends).collect();
            let k = self.max_keys / 8;
            let (_, cut, _) = ends.select_nth_unstable(k);
            let cut = *cut;
            let mut evict = k + 1;
            shard.counters.retain(|_, c| {
                let go = c.ends <= cut && evict > 0;
                evict -= usize::from(go);
                !go
            });
        }
        shard.sweep_at = (shard.counters.len() * 2).clamp(SHARD_SWEEP.min(self.max_keys), self.max_keys);
    }
}

// === impl RedisStore ===

impl RedisStore {
    fn new(config: RedisConfig) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| StoreError::BadUrl(e.kind()))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, cfg)?;
        Ok(RedisStore { config, conn, script: redis::Script::new(SCRIPT), last_log: AtomicU64::new(0) })
    }

    /// Checks and counts `costs[i]` against each `(keys[i], windows[i])` in one round trip. `Err` when Redis did not answer
    /// in time or failed; the caller applies its `on_store_error`.
    pub async fn check(&self, keys: &[String], windows: &[Window], costs: &[u64]) -> Result<Decision, ()> {
        let mut inv = self.script.prepare_invoke();
        for ((k, w), cost) in keys.iter().zip(windows).zip(costs) {
            inv.key(format!("{}rl:{k}", self.config.key_prefix)).arg(w.window_ms).arg(w.limit).arg(cost);
        }
        let mut conn = self.conn.clone();
        let deadline = self.config.command_timeout + self.config.connect_timeout;
        let answer = match tokio::time::timeout(deadline, inv.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(v)) if v.len() == 1 + 2 * keys.len() => Ok(v),
            Ok(Ok(_)) => Err(CheckFailure::Answer),
            Ok(Err(e)) => Err(CheckFailure::Redis(e)),
            Err(_) => Err(CheckFailure::Timeout),
        };
        match answer {
            Ok(v) => {
                Ok(Decision { admitted: v[0] == 1, used: v[1..].chunks(2).map(|c| (c[0].max(0) as u64, c[1].max(0) as u64)).collect() })
            }
            Err(e) => {
                self.failed(&e);
                Err(())
            }
        }
    }

    fn failed(&self, error: &CheckFailure) {
        let now = now_ms() / 1000;
        let last = self.last_log.load(Ordering::Relaxed);
        if now > last && self.last_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(%error, "rate limit store (Redis) unavailable; each limit's on_store_error applies");
        }
    }
}

/// Takes or renews `KEYS[1]` for holder `ARGV[1]` for `ARGV[2]` ms; 1 when the caller holds it after the call.
const LEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// State shared by several gateways through the same Redis (rollouts): a lease for one decision-maker, and
/// values read and written whole. Keys get the store's `key_prefix`. Failures are `Err(())` (logged at debug: the
/// caller keeps its own state and tries again at its next tick).
impl RedisStore {
    /// Whether `holder` holds the lease `key` for `ttl` after this call (taken when free, renewed when its own).
    pub async fn lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, ()> {
        let script = redis::Script::new(LEASE);
        let mut inv = script.prepare_invoke();
        inv.key(format!("{}{key}", self.config.key_prefix)).arg(holder).arg(ttl.as_millis() as u64);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.deadline(), inv.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v == 1),
            other => {
                tracing::debug!(?other, key, "shared state (Redis): lease failed");
                Err(())
            }
        }
    }

    /// The value at `key`, if any.
    pub async fn get_value(&self, key: &str) -> Result<Option<String>, ()> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(format!("{}{key}", self.config.key_prefix)).to_owned();
        match tokio::time::timeout(self.deadline(), cmd.query_async::<Option<String>>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            other => {
                tracing::debug!(?other, key, "shared state (Redis): read failed");
                Err(())
            }
        }
    }

    /// Writes `value` at `key` (no expiry).
    pub async fn set_value(&self, key: &str, value: &str) -> Result<(), ()> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET").arg(format!("{}{key}", self.config.key_prefix)).arg(value).to_owned();
        match tokio::time::timeout(self.deadline(), cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            other => {
                tracing::debug!(?other, key, "shared state (Redis): write failed");
                Err(())
            }
        }
    }

    /// Publishes a new version of a document: `{seq, text}` at `doc_key` with `seq` one past the version counter
    /// at `seq_key`, only if that counter is still `expected` (what the caller's change was made against), and
    /// announces it (the new `seq`) on `channel` ([`RedisStore::follow_channel`]).
    /// `Ok(Some(seq))`: published; `Ok(None)`: another writer got there first.
    pub async fn publish_document(
        &self,
        seq_key: &str,
        doc_key: &str,
        channel: &str,
        expected: u64,
        text: &str,
    ) -> Result<Option<u64>, ()> {
        const PUBLISH: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur ~= tonumber(ARGV[1]) then return -1 end
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], cjson.encode({seq = seq, text = ARGV[2]}))
redis.call('PUBLISH', ARGV[3], seq)
return seq
"#;
        let script = redis::Script::new(PUBLISH);
        let mut inv = script.prepare_invoke();
        let prefix = &self.config.key_prefix;
        inv.key(format!("{prefix}{seq_key}")).key(format!("{prefix}{doc_key}")).arg(expected).arg(text).arg(format!("{prefix}{channel}"));
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.deadline(), inv.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(-1)) => Ok(None),
            Ok(Ok(seq)) => Ok(Some(seq.max(0) as u64)),
            other => {
                tracing::debug!(?other, doc_key, "shared state (Redis): publish failed");
                Err(())
            }
        }
    }

    /// Wakes `wake` at each message on `channel`, and each time the subscription is (re)made — so a subscriber
    /// that missed messages while disconnected reads the documents again. Reconnects (at most once a second)
    /// until the task is aborted.
    pub async fn follow_channel(&self, channel: &str, wake: &tokio::sync::Notify) {
        use futures_util::StreamExt;
        let channel = format!("{}{channel}", self.config.key_prefix);
        loop {
            let subscribed = async {
                let client = redis::Client::open(self.config.url.as_str()).ok()?;
                let mut pubsub = tokio::time::timeout(self.config.connect_timeout, client.get_async_pubsub()).await.ok()?.ok()?;
                tokio::time::timeout(self.deadline(), pubsub.subscribe(&channel)).await.ok()?.ok()?;
                Some(pubsub)
            };
            if let Some(pubsub) = subscribed.await {
                wake.notify_one();
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    wake.notify_one();
                }
            }
            #[allow(clippy::disallowed_methods)] // the reconnection backoff, not a wait for a condition
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The values at `keys`, in order (one round trip).
    pub async fn get_values(&self, keys: &[String]) -> Result<Vec<Option<String>>, ()> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(format!("{}{k}", self.config.key_prefix));
        }
        match tokio::time::timeout(self.deadline(), cmd.query_async::<Vec<Option<String>>>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            other => {
                tracing::debug!(?other, "shared state (Redis): read failed");
                Err(())
            }
        }
    }

    fn deadline(&self) -> Duration {
        self.config.command_timeout + self.config.connect_timeout
    }
}

/// Milliseconds since the Unix epoch (the local store's clock).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_windows_admit_exactly_the_limit_and_reset_on_the_edge() {
        let s = LocalStore::default();
        let w = [Window { limit: 3, window_ms: 1000 }];
        let k = ["a".to_string()];
        let t = 10_000; // a window edge
        for i in 1..=3 {
            assert_eq!(s.check(&k, &w, &[1], t + 10 * i), Decision { admitted: true, used: smallvec::smallvec![(i, 1000 - 10 * i)] });
        }
        assert!(!s.check(&k, &w, &[1], t + 999).admitted, "the 4th in the window is refused");
        assert!(s.check(&k, &w, &[1], t + 1000).admitted, "a new window starts at the edge");
        assert!(!s.check(&k, &w, &[3], t + 1001).admitted, "cost counts: 1 + 3 > 3");
        assert!(s.check(&k, &w, &[2], t + 1002).admitted);
        assert!(s.check(&["b".to_string()], &w, &[3], t + 1003).admitted, "keys are independent");
    }

    /// Caller-chosen keys (a flood of random client addresses) cannot grow the store past its bound; passed
    /// windows are swept; keys evicted under pressure are the ones whose windows end soonest, and a key that stays
    /// is still counted exactly.
    #[test]
    fn the_store_is_bounded_whatever_keys_arrive() {
        let s = LocalStore::with_max_keys(64);
        let long = [Window { limit: 5, window_ms: 3_600_000 }];
        let short = [Window { limit: 5, window_ms: 1000 }];
        let t = 36_000_000; // an hour's edge
        let steady = ["steady".to_string()];
        for i in 0..20_000u64 {
            // A flood of one-off keys in short windows, moving time forward.
            assert!(s.check(&[format!("flood-{i}")], &short, &[1], t + i).admitted);
            if i % 4000 == 0 {
                assert!(s.check(&steady, &long, &[1], t + i).admitted, "the steady key is counted");
            }
            assert!(s.len() <= 16 * 64, "{} keys held after {i}", s.len());
        }
        // Five uses counted in its hour, so the sixth is refused: the flood did not reset it (its window ends last).
        assert!(!s.check(&steady, &long, &[1], t + 20_000).admitted);
        // Live keys past the bound in one long window: still bounded.
        for i in 0..5000u64 {
            s.check(&[format!("live-{i}")], &long, &[1], t + 20_000);
        }
        assert!(s.len() <= 16 * 64);
    }

    #[tokio::test]
    async fn redis_urls_with_tls_and_unix_sockets_are_understood() {
        for url in ["redis://127.0.0.1:1/0", "rediss://:secret@127.0.0.1:1/0", "unix:///tmp/none.sock"] {
            let cfg = RedisConfig {
                url: url.into(),
                key_prefix: "t:".into(),
                connect_timeout: Duration::from_millis(50),
                command_timeout: Duration::from_millis(50),
            };
            assert!(Registry::default().build(Some(&cfg)).is_ok(), "{url}");
        }
        let cfg = RedisConfig {
            url: "http://x".into(),
            key_prefix: "t:".into(),
            connect_timeout: Duration::from_millis(50),
            command_timeout: Duration::from_millis(50),
        };
        assert!(Registry::default().build(Some(&cfg)).is_err());
    }

    #[test]
    fn several_limits_count_only_when_all_admit() {
        let s = LocalStore::default();
        let w = [Window { limit: 10, window_ms: 1000 }, Window { limit: 2, window_ms: 60_000 }];
        let k = ["sec".to_string(), "min".to_string()];
        assert!(s.check(&k, &w, &[1, 1], 0).admitted);
        assert!(s.check(&k, &w, &[1, 1], 1).admitted);
        let d = s.check(&k, &w, &[1, 1], 2);
        assert!(!d.admitted);
        assert_eq!(d.used.as_slice(), [(2, 998), (2, 59_998)], "the refused request was not counted in the first limit");
    }
}
