//! Active health checks: one task per upstream, probing every target on an interval. The task ends when the
//! upstream is no longer referenced by any snapshot. It knows upstreams only through [`Probed`].

use std::sync::Weak;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use modelgate_config::model::ActiveHealth;

/// What a health-check task probes and reports to: an upstream's targets.
pub trait Probed: Send + Sync + 'static {
    /// The active health check settings (`None`: no checks, the task ends).
    fn active_health(&self) -> Option<&ActiveHealth>;
    /// How many targets there are.
    fn target_count(&self) -> usize;
    /// The URI of `path_and_query` on target `i`.
    fn uri(&self, i: usize, path_and_query: &str) -> Result<http::Uri, http::Error>;
    /// Records the checks' verdict for target `i`.
    fn set_active_health(&self, i: usize, healthy: bool);
    /// How `https://` targets are reached.
    fn tls(&self) -> crate::tls::TlsClient;
}

/// Probes every target of `up` on its interval until `up` is dropped.
pub async fn run<P: Probed>(up: Weak<P>) {
    let Some(cfg) = up.upgrade().and_then(|u| u.active_health().cloned()) else { return };
    let n = up.upgrade().map_or(0, |u| u.target_count());
    let Some(tls) = up.upgrade().map(|u| u.tls()) else { return };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(tls.connector(http, false));
    let mut ok_streak = vec![0u32; n];
    let mut fail_streak = vec![0u32; n];
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(upstream) = up.upgrade() else { return };
        let probes: Vec<_> = (0..n)
            .map(|i| {
                let uri = upstream.uri(i, cfg.path.as_str());
                let client = client.clone();
                let timeout = cfg.timeout;
                async move {
                    let Ok(uri) = uri else { return false };
                    let req = http::Request::get(uri).header("user-agent", "modelgate-health").body(Empty::new());
                    let Ok(req) = req else { return false };
                    matches!(tokio::time::timeout(timeout, client.request(req)).await, Ok(Ok(r)) if r.status().is_success())
                }
            })
            .collect();
        drop(upstream);
        let handles: Vec<_> = probes.into_iter().map(tokio::spawn).collect();
        let mut results = Vec::with_capacity(n);
        for h in handles {
            results.push(h.await.unwrap_or(false));
        }
        let Some(upstream) = up.upgrade() else { return };
        for (i, ok) in results.into_iter().enumerate() {
            if ok {
                fail_streak[i] = 0;
                ok_streak[i] += 1;
                if ok_streak[i] >= cfg.healthy_threshold {
                    upstream.set_active_health(i, true);
                }
            } else {
                ok_streak[i] = 0;
                fail_streak[i] += 1;
                if fail_streak[i] >= cfg.unhealthy_threshold {
                    upstream.set_active_health(i, false);
                }
            }
        }
    }
}
