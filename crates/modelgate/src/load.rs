//! `modelgate bench-load` (hidden): a constant-rate HTTP/1.1 load generator for bench/chain.sh's added-latency
//! figure, where wrk (which sends as fast as answers come) cannot hold a rate. Request `i` is due at
//! `start + i / rate`; each of `connections` keep-alive connections takes the next due request, waits for its time,
//! sends it, and records the latency **from when it was due** (or from when it left, if the timer woke it early)
//! — so a stall delays and counts every request behind it (no coordinated omission, as in wrk2). Prints one JSON line: requests, achieved rate, errors, percentiles.

#![allow(
    clippy::disallowed_methods,
    reason = "a load generator measures wall time and paces requests by it; it never runs inside the gateway"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};

/// What to send and how fast.
pub struct Load {
    pub url: http::Uri,
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Runs the load on a single-threaded runtime (pin it with taskset) and prints the result.
pub fn run(load: Load) -> anyhow::Result<()> {
    anyhow::ensure!(load.rate > 0.0 && load.connections > 0, "--rate and --connections must be positive");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let summary = rt.block_on(drive(Arc::new(load)))?;
    println!("{summary}");
    Ok(())
}

async fn drive(load: Arc<Load>) -> anyhow::Result<serde_json::Value> {
    let authority = load.url.authority().context("the URL needs host:port")?.to_string();
    let total = (load.rate * load.duration.as_secs_f64()) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let stream = tokio::net::TcpStream::connect(&authority).await.with_context(|| format!("connect {authority}"))?;
        stream.set_nodelay(true)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let (load, next, authority) = (load.clone(), next.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / load.rate);
                // tokio's timer fires on the millisecond tick at or after its deadline: aim a millisecond early,
                // and time the request from when it was due or from when it left, whichever is later (a
                // connection still busy with earlier requests is charged from the due time).
                tokio::time::sleep_until(due.checked_sub(Duration::from_millis(1)).unwrap_or(due)).await;
                let from = due.into_std().max(Instant::now());
                let mut req = http::Request::get(load.url.clone()).header(http::header::HOST, &authority);
                for (k, v) in &load.headers {
                    req = req.header(k, v);
                }
                let ok = match send.ready().await {
                    Ok(()) => match send.send_request(req.body(Empty::<bytes::Bytes>::new()).expect("a valid request")).await {
                        Ok(resp) => {
                            let status = resp.status();
                            resp.into_body().collect().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if !ok {
                    errors += 1;
                }
                latencies.push(Instant::now().saturating_duration_since(from).as_micros() as u32);
            }
            (latencies, errors)
        }));
    }
    let began = Instant::now();
    let mut all = Vec::with_capacity(total as usize);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let took = began.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    Ok(serde_json::json!({
        "requests": all.len(),
        "rate_target": load.rate,
        "rate_achieved": (all.len() as f64 / took).round(),
        "errors": errors,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": all.last().copied().unwrap_or(0),
    }))
}
