//! Upstream behaviour with real upstream processes being stopped and started: retries, balancing, passive and
//! active health, and the distinct errors for refused, timed-out and unhealthy upstreams.

use std::time::Duration;

use http::Method;
use modelgate_test_support::{Gateway, Upstream, eventually, get, refusing_addr, send};

fn config(targets: &[&str], upstream_extra: &str, route_extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"http://{t}\"")).collect();
    format!(
        "listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  u:
    targets: [{}]
{upstream_extra}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: u
{route_extra}
",
        targets.join(", ")
    )
}

async fn upstream_health(gw: &Gateway) -> Vec<bool> {
    let j = get(&gw.admin_url("/admin/upstreams")).await.json();
    j[0]["targets"].as_array().unwrap().iter().map(|t| t["healthy"].as_bool().unwrap()).collect()
}

#[tokio::test]
async fn connect_errors_retry_idempotent_requests_on_another_target() {
    let (_dead_guard, dead) = refusing_addr();
    let live = Upstream::start("live").await;
    let gw = Gateway::start(&config(&[&dead, &live.addr], "    passive_health: { consecutive_failures: 0 }", "")).await;
    for _ in 0..6 {
        let r = get(&gw.url("/x")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["upstream"], "live");
    }
    // POST is not retried unless the route opts in: round robin sends some of them to the dead target.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = send(Method::POST, &gw.url("/x"), &[], "{}").await;
        if r.status != 200 {
            r.assert_error(502, "upstream_refused");
        }
        statuses.push(r.status.as_u16());
    }
    assert!(statuses.contains(&502) && statuses.contains(&200), "{statuses:?}");
}

#[tokio::test]
async fn post_is_retried_where_the_route_opts_in() {
    let (_dead_guard, dead) = refusing_addr();
    let live = Upstream::start("live").await;
    let gw =
        Gateway::start(&config(&[&dead, &live.addr], "    passive_health: { consecutive_failures: 0 }", "    retry_non_idempotent: true"))
            .await;
    for _ in 0..6 {
        let r = send(Method::POST, &gw.url("/v2/models/m/infer"), &[], r#"{"inputs":[]}"#).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["method"], "POST");
    }
}

#[tokio::test]
async fn status_503_is_retried_on_another_target() {
    let bad = Upstream::failing("bad", 503).await;
    let good = Upstream::start("good").await;
    let gw = Gateway::start(&config(&[&bad.addr, &good.addr], "    passive_health: { consecutive_failures: 0 }", "")).await;
    for _ in 0..4 {
        let r = get(&gw.url("/x")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["upstream"], "good");
    }
    assert!(bad.count().await >= 1, "the failing target was tried, then the request retried");
    // With only failing targets the upstream's own 503 is passed through after the retries.
    let gw = Gateway::start(&config(&[&bad.addr], "", "")).await;
    let r = get(&gw.url("/x")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["upstream"], "bad");
}

#[tokio::test]
async fn passive_health_ejects_after_consecutive_failures() {
    let (_dead_guard, dead) = refusing_addr();
    let live = Upstream::start("live").await;
    let gw = Gateway::start(&config(
        &[&dead, &live.addr],
        "    passive_health: { consecutive_failures: 2, cooldown: 1h }\n    retries: { attempts: 0 }",
        "",
    ))
    .await;
    // Without retries, requests sent to the dead target fail until it is ejected.
    let mut failures = 0;
    for _ in 0..8 {
        if get(&gw.url("/x")).await.status != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "exactly `consecutive_failures` requests fail before the target is ejected");
    assert_eq!(upstream_health(&gw).await, vec![false, true]);
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
}

#[tokio::test]
async fn active_health_marks_stopped_targets_down_and_readmits_them() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&config(
        &[&a.addr, &b.addr],
        "    passive_health: { consecutive_failures: 0 }\n    retries: { attempts: 0 }\n    health: { path: /healthz, interval: 50ms, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2 }",
        "",
    ))
    .await;
    let b_addr = b.stop().await;
    assert!(eventually(Duration::from_secs(10), || async { upstream_health(&gw).await == vec![true, false] }).await);
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/x")).await.json()["upstream"], "a", "the unhealthy target gets no traffic");
    }
    let _b = Upstream::start_on("b", &b_addr).await;
    assert!(eventually(Duration::from_secs(10), || async { upstream_health(&gw).await == vec![true, true] }).await);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(get(&gw.url("/x")).await.json()["upstream"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "the readmitted target serves again: {seen:?}");

    // With every target down the gateway answers 503 itself.
    drop(_b);
    let _ = a.stop().await;
    assert!(eventually(Duration::from_secs(10), || async { upstream_health(&gw).await == vec![false, false] }).await);
    let r = get(&gw.url("/x")).await;
    r.assert_error(503, "no_healthy_upstream");
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn slow_upstream_times_out_with_504() {
    let up = Upstream::start("slow").await;
    let gw = Gateway::start(&config(&[&up.addr], "    timeouts: { response: 200ms }", "")).await;
    get(&gw.url("/slow/5000")).await.assert_error(504, "upstream_timeout");
    assert_eq!(get(&gw.url("/slow/0")).await.status, 200);
}

#[tokio::test]
async fn least_outstanding_avoids_the_busy_target() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&config(&[&a.addr, &b.addr], "    balance: least_outstanding", "")).await;
    let slow_url = gw.url("/slow/3000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    assert!(eventually(Duration::from_secs(5), || async { a.count().await + b.count().await == 1 }).await);
    let busy = if a.count().await == 1 { "a" } else { "b" };
    for _ in 0..8 {
        let who = get(&gw.url("/x")).await.json()["upstream"].as_str().unwrap().to_string();
        assert_ne!(who, busy, "requests go to the target with fewer in flight");
    }
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test]
async fn upstream_dying_mid_request_is_a_502_upstream_failed() {
    let up = Upstream::start("crashy").await;
    let gw = Gateway::start(&config(&[&up.addr], "", "")).await;
    get(&gw.url("/abort")).await.assert_error(502, "upstream_failed");
}

/// One of two replicas killed (`SIGKILL`) under load, with requests waiting on it: every idempotent request still
/// succeeds — those cut off before their answer's head are retried on the other replica, new ones go there — and
/// with both down the gateway answers fast; a replica started again is used without a gateway restart.
#[tokio::test]
async fn a_replica_killed_under_load_fails_no_idempotent_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&config(&[&a.addr, &b.addr], "    passive_health: { cooldown: 1s }", "")).await;
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, done) = (gw.url("/slow/20"), done.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..40 {
                    let r = get(&url).await;
                    if r.status != 200 {
                        failed.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failed
            })
        })
        .collect();
    // Kill `a` once traffic is flowing, so that some requests are waiting on it.
    assert!(eventually(Duration::from_secs(10), || async { done.load(Ordering::SeqCst) >= 40 }).await);
    let a_addr = a.stop().await;
    for c in clients {
        assert_eq!(c.await.unwrap(), vec![], "no idempotent request failed");
    }
    assert_eq!(done.load(Ordering::SeqCst), 320);
    // Both down: a fast answer, not a hang.
    let b_addr = b.stop().await;
    let r = get(&gw.url("/x")).await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    // `a` back on its port: served again with no restart (once its 1 s ejection, if any, has expired).
    let _a = Upstream::start_on("a", &a_addr).await;
    let _ = b_addr;
    assert!(eventually(Duration::from_secs(20), || async { get(&gw.url("/x")).await.status == 200 }).await);
}
