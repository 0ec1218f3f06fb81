//! Upstream runtimes: targets with their health, balancing, and a pooled client.
//!
//! An [`Upstream`] lives as long as some snapshot references it; a reload that leaves an upstream's config
//! unchanged reuses the same `Arc`, keeping its pooled connections and health state.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use modelgate_config::model::{Balance, Protocol, UpstreamConfig};
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::pool::Pool;
use crate::tls::TlsClient;

/// One upstream service at run time.
pub struct Upstream {
    pub config: Arc<UpstreamConfig>,
    pub targets: Vec<TargetState>,
    next: AtomicUsize,
    epoch: Instant,
    pub transport: Transport,
}

/// How requests reach the targets.
pub enum Transport {
    /// HTTP/1.1 through our own keep-alive pool.
    Http1(Arc<Pool>),
    /// HTTP/2 (prior knowledge, or ALPN `h2` over TLS) through hyper-util's client, which multiplexes on one
    /// connection per target.
    Http2(Box<Http2Client>),
}

/// The HTTP/2 client of an upstream (hyper-util's, over rustls or plain TCP).
pub type Http2Client = Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>;

/// One target's live state.
pub struct TargetState {
    /// `http://host:port`, the prefix of request URIs.
    pub base: String,
    pub authority: http::uri::Authority,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since the upstream's epoch until which the target is ejected (0: not ejected).
    ejected_until: AtomicU64,
    /// Verdict of active health checks (true when they are off).
    active_healthy: AtomicBool,
}

/// Holds a target's in-flight slot; released on drop (STYLE §8), so cancelled requests give it back.
pub struct InFlight<'a>(&'a TargetState);

// === impl Upstream ===

impl Upstream {
    pub fn new(config: Arc<UpstreamConfig>) -> Arc<Upstream> {
        let transport = match config.protocol {
            Protocol::Http1 => {
                let mut pool =
                    Pool::new(config.targets.len(), config.idle_timeout, config.connect_timeout, crate::pool::MAX_IDLE_PER_TARGET);
                if config.targets.iter().any(|t| t.tls) {
                    let client = TlsClient::new(&config.tls, &[b"http/1.1"]);
                    pool = pool.with_tls(client, config.targets.iter().map(|t| t.tls).collect());
                }
                let pool = Arc::new(pool);
                pool.start_reaper();
                Transport::Http1(pool)
            }
            Protocol::Http2 => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(config.connect_timeout));
                connector.set_nodelay(true);
                connector.enforce_http(false);
                let connector = TlsClient::new(&config.tls, &[b"h2"]).connector(connector, true);
                Transport::Http2(Box::new(
                    Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(config.idle_timeout)
                        .pool_timer(TokioTimer::new())
                        .timer(TokioTimer::new())
                        .http2_only(true)
                        .build(connector),
                ))
            }
        };
        let targets = config
            .targets
            .iter()
            .map(|t| TargetState {
                base: format!("{}://{}", if t.tls { "https" } else { "http" }, t.authority),
                authority: t.authority.clone(),
                in_flight: AtomicUsize::new(0),
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                active_healthy: AtomicBool::new(true),
            })
            .collect();
        let up = Arc::new(Upstream { config, targets, next: AtomicUsize::new(0), epoch: Instant::now(), transport });
        if up.config.active.is_some() {
            tokio::spawn(crate::health::run(Arc::downgrade(&up)));
        }
        up
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether target `i` may receive traffic now.
    pub fn is_healthy(&self, i: usize) -> bool {
        let t = &self.targets[i];
        t.active_healthy.load(Ordering::Relaxed) && t.ejected_until.load(Ordering::Relaxed) <= self.now_ms()
    }

    /// Picks a healthy target not in `tried` (a bitmask of target indexes; targets past 64 are never excluded).
    pub fn pick(&self, tried: u64) -> Option<usize> {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let usable = |i: usize| (i >= 64 || tried & (1 << i) == 0) && self.is_healthy(i);
        match self.config.balance {
            Balance::RoundRobin => (0..n).map(|k| (start + k) % n).find(|&i| usable(i)),
            Balance::LeastOutstanding => {
                (0..n).map(|k| (start + k) % n).filter(|&i| usable(i)).min_by_key(|&i| self.targets[i].in_flight.load(Ordering::Relaxed))
            }
        }
    }

    pub fn acquire(&self, i: usize) -> InFlight<'_> {
        let t = &self.targets[i];
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(t)
    }

    /// Records a failed exchange for passive health; ejects the target at the threshold.
    pub fn record_failure(&self, i: usize) {
        let Some(p) = &self.config.passive else { return };
        let t = &self.targets[i];
        let n = t.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= p.consecutive_failures {
            t.failures.store(0, Ordering::Relaxed);
            t.ejected_until.store(self.now_ms() + p.cooldown.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name(), target = %t.authority, cooldown = ?p.cooldown, "target ejected after consecutive failures");
        }
    }

    pub fn record_success(&self, i: usize) {
        let t = &self.targets[i];
        if t.failures.load(Ordering::Relaxed) != 0 {
            t.failures.store(0, Ordering::Relaxed);
        }
    }

    fn record_active_health(&self, i: usize, healthy: bool) {
        let t = &self.targets[i];
        if t.active_healthy.swap(healthy, Ordering::Relaxed) != healthy {
            tracing::warn!(upstream = %self.name(), target = %t.authority, healthy, "active health changed");
        }
    }

    /// A request URI for target `i`.
    pub fn uri(&self, i: usize, path_and_query: &str) -> Result<Uri, http::Error> {
        let t = &self.targets[i];
        let scheme = if self.config.targets[i].tls { "https" } else { "http" };
        Uri::builder().scheme(scheme).authority(t.authority.clone()).path_and_query(path_and_query).build()
    }

    /// Requests in flight to target `i`.
    pub fn in_flight(&self, i: usize) -> usize {
        self.targets[i].in_flight.load(Ordering::Relaxed)
    }

    /// A JSON view for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let targets: Vec<_> = (0..self.targets.len())
            .map(|i| {
                let t = &self.targets[i];
                serde_json::json!({
                    "target": t.base,
                    "healthy": self.is_healthy(i),
                    "active_healthy": t.active_healthy.load(Ordering::Relaxed),
                    "ejected": t.ejected_until.load(Ordering::Relaxed) > self.now_ms(),
                    "in_flight": t.in_flight.load(Ordering::Relaxed),
                })
            })
            .collect();
        serde_json::json!({ "name": self.name(), "targets": targets })
    }
}

impl crate::health::Probed for Upstream {
    fn active_health(&self) -> Option<&modelgate_config::model::ActiveHealth> {
        self.config.active.as_ref()
    }
    fn target_count(&self) -> usize {
        self.targets.len()
    }
    fn uri(&self, i: usize, path_and_query: &str) -> Result<Uri, http::Error> {
        Upstream::uri(self, i, path_and_query)
    }
    fn set_active_health(&self, i: usize, healthy: bool) {
        self.record_active_health(i, healthy);
    }
    fn tls(&self) -> TlsClient {
        TlsClient::new(&self.config.tls, &[b"http/1.1"])
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reuses upstream runtimes across reloads when their config is unchanged.
#[derive(Default)]
pub struct Registry {
    live: std::collections::HashMap<String, Weak<Upstream>>,
}

impl Registry {
    pub fn get_or_create(&mut self, config: &Arc<UpstreamConfig>) -> Arc<Upstream> {
        if let Some(up) = self.live.get(&config.name).and_then(Weak::upgrade)
            && *up.config == **config
        {
            return up;
        }
        let up = Upstream::new(config.clone());
        self.live.insert(config.name.clone(), Arc::downgrade(&up));
        up
    }

    /// Forgets entries whose runtime is gone.
    pub fn prune(&mut self) {
        self.live.retain(|_, w| w.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Probed;

    /// An upstream over `targets` (never contacted) with `extra` YAML settings.
    fn upstream(targets: usize, extra: &str) -> Arc<Upstream> {
        let list: Vec<String> = (0..targets).map(|i| format!("\"http://127.0.0.1:{}\"", 1000 + i)).collect();
        let yaml = format!(
            "upstreams:\n  u: {{ targets: [{}]{extra} }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
            list.join(", ")
        );
        Upstream::new(modelgate_config::from_yaml(&yaml).unwrap().upstreams["u"].clone())
    }

    #[tokio::test]
    async fn round_robin_visits_every_target_and_skips_the_tried_and_the_unhealthy() {
        let up = upstream(3, "");
        let mut seen: Vec<usize> = (0..6).map(|_| up.pick(0).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [0, 0, 1, 1, 2, 2]);
        assert_eq!(up.pick(0b011), Some(2), "a retry goes to a target not yet tried");
        assert_eq!(up.pick(0b111), None);
        up.set_active_health(2, false);
        assert!(!up.is_healthy(2));
        assert!((0..6).all(|_| up.pick(0) != Some(2)), "unhealthy targets get no traffic");
        assert_eq!(up.pick(0b011), None);
        up.set_active_health(2, true);
        assert_eq!(up.pick(0b011), Some(2));
    }

    #[tokio::test]
    async fn least_outstanding_prefers_the_target_with_fewest_in_flight() {
        let up = upstream(3, ", balance: least_outstanding");
        let _a = up.acquire(0);
        let _b = up.acquire(0);
        let c = up.acquire(1);
        assert_eq!(up.pick(0), Some(2));
        assert_eq!((up.in_flight(0), up.in_flight(1)), (2, 1));
        drop(c);
        assert_eq!(up.in_flight(1), 0, "an in-flight slot is given back on drop");
        let picked = up.pick(0).unwrap();
        assert!(picked == 1 || picked == 2, "ties go round robin among the idle ones");
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_a_target_for_the_cooldown() {
        let up = upstream(2, ", passive_health: { consecutive_failures: 2, cooldown: 10s }");
        up.record_failure(0);
        up.record_success(0);
        up.record_failure(0);
        assert!(up.is_healthy(0), "a success resets the count");
        up.record_failure(0);
        assert!(!up.is_healthy(0), "ejected at the threshold");
        assert_eq!(up.pick(0b10), None);
        tokio::time::advance(std::time::Duration::from_millis(9_900)).await;
        assert!(!up.is_healthy(0));
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        assert!(up.is_healthy(0), "back after the cooldown");
        assert_eq!(up.status()["targets"][0]["healthy"], true);
    }

    #[tokio::test]
    async fn the_registry_reuses_an_unchanged_upstream_across_reloads() {
        let mut reg = Registry::default();
        let first = upstream(1, "");
        let a = reg.get_or_create(&first.config);
        let b = reg.get_or_create(&first.config);
        assert!(Arc::ptr_eq(&a, &b));
        let changed = upstream(2, "");
        assert!(!Arc::ptr_eq(&a, &reg.get_or_create(&changed.config)), "a changed config gets a new runtime");
        assert_eq!(up_uri(&a), "http://127.0.0.1:1000/v2/health/ready");
    }

    fn up_uri(up: &Upstream) -> String {
        up.uri(0, "/v2/health/ready").unwrap().to_string()
    }
}
