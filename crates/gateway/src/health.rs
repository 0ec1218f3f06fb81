//! Active health checks: one task per upstream, probing every target on an interval. The task ends when the
//! upstream is no longer referenced by any snapshot.

use std::sync::Weak;

use http_body_util::Empty;
use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::upstream::Upstream;

pub(crate) async fn run(up: Weak<Upstream>) {
    let Some(cfg) = up.upgrade().and_then(|u| u.config.active.clone()) else { return };
    let n = up.upgrade().map_or(0, |u| u.targets.len());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
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
