//! Live request rate, error rate and p99 per route and per model version, for `GET /admin/routes` and
//! `GET /admin/models`: per-key atomic counters and a latency histogram (counted on the request path: three atomic
//! adds), sampled every 5 s by a background task; the views compare the newest state with the sample about a
//! minute old.

#![allow(clippy::disallowed_methods, reason = "live stats are rates over wall-clock intervals, sampled on their own thread")]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const BUCKETS: usize = 22;
/// Upper bound of bucket `i` in µs: 100·2^i (100 µs … ~3.5 min); the last bucket takes the rest.
fn bucket_of(us: u64) -> usize {
    let mut i = 0;
    let mut bound = 100u64;
    while us > bound && i < BUCKETS - 1 {
        bound *= 2;
        i += 1;
    }
    i
}

const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const KEEP: usize = 13;

/// Counters of one route or model version.
#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Clone)]
struct Sample {
    at: Instant,
    requests: u64,
    errors: u64,
    buckets: [u64; BUCKETS],
}

/// What a view shows for one key.
#[derive(Debug, serde::Serialize)]
pub struct View {
    pub requests_total: u64,
    pub errors_total: u64,
    /// Over the window (up to a minute; since start when younger).
    pub requests_per_second: f64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
    pub window_seconds: f64,
}

/// The stats of every route (by name) and model version; kept across reloads.
#[derive(Default)]
pub struct Live {
    routes: Mutex<HashMap<String, Arc<Stats>>>,
    models: RwLock<HashMap<String, HashMap<String, Arc<Stats>>>>,
    sampler: std::sync::OnceLock<()>,
}

impl Stats {
    /// Counts one answered request; a 5xx is an error.
    pub fn count(&self, status: u16, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket_of(took.as_micros() as u64)].fetch_add(1, Ordering::Relaxed);
    }

    fn now(&self) -> Sample {
        Sample {
            at: Instant::now(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }

    fn sample(&self) {
        let s = self.now();
        if let Ok(mut samples) = self.samples.lock() {
            samples.push_back(s);
            while samples.len() > KEEP {
                samples.pop_front();
            }
        }
    }

    pub fn view(&self, started: Instant) -> View {
        let now = self.now();
        let zero = Sample { at: started, requests: 0, errors: 0, buckets: [0; BUCKETS] };
        let old = self.samples.lock().ok().and_then(|s| s.front().cloned()).unwrap_or(zero);
        let secs = now.at.duration_since(old.at).as_secs_f64().max(0.001);
        let (n, e) = (now.requests - old.requests, now.errors - old.errors);
        let deltas: Vec<u64> = (0..BUCKETS).map(|i| now.buckets[i] - old.buckets[i]).collect();
        let p99 = (n > 0).then(|| {
            let want = (n as f64 * 0.99).ceil() as u64;
            let mut seen = 0;
            let i = deltas.iter().position(|d| {
                seen += d;
                seen >= want
            });
            100.0 * 2f64.powi(i.unwrap_or(BUCKETS - 1) as i32) / 1000.0
        });
        View {
            requests_total: now.requests,
            errors_total: now.errors,
            requests_per_second: n as f64 / secs,
            error_rate: if n > 0 { e as f64 / n as f64 } else { 0.0 },
            p99_ms: p99,
            window_seconds: secs,
        }
    }
}

impl Live {
    /// The stats of a route, made on first use.
    pub fn route(&self, name: &str) -> Arc<Stats> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.entry(name.to_string()).or_default().clone()
    }

    /// Counts a request against its model version (read lock; a write lock only for a new model version).
    pub fn count_model(&self, model: &str, version: &str, status: u16, took: Duration) {
        if let Ok(models) = self.models.read()
            && let Some(s) = models.get(model).and_then(|v| v.get(version))
        {
            s.count(status, took);
            return;
        }
        let Ok(mut models) = self.models.write() else { return };
        models.entry(model.to_string()).or_default().entry(version.to_string()).or_default().count(status, took);
    }

    /// Starts the sampler once (from a tokio runtime); it stops when `Live` is dropped.
    pub fn start_sampling(self: &Arc<Self>) {
        if self.sampler.set(()).is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let Some(live) = weak.upgrade() else { return };
                for s in live.routes.lock().map(|r| r.values().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                    s.sample();
                }
                let models: Vec<Arc<Stats>> =
                    live.models.read().map(|m| m.values().flat_map(|v| v.values().cloned()).collect()).unwrap_or_default();
                for s in models {
                    s.sample();
                }
            }
        });
    }

    /// Per model and version: (model, version, view).
    pub fn models(&self, started: Instant) -> Vec<(String, String, View)> {
        let models = self
            .models
            .read()
            .map(|m| {
                m.iter()
                    .flat_map(|(m, v)| v.iter().map(|(ver, s)| (m.clone(), ver.clone(), s.clone())).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut out: Vec<_> = models.into_iter().map(|(m, v, s)| (m, v, s.view(started))).collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_p99_from_counters() {
        let s = Stats::default();
        for i in 0..100 {
            s.count(if i < 2 { 503 } else { 200 }, Duration::from_micros(if i == 99 { 50_000 } else { 150 }));
        }
        let v = s.view(Instant::now() - Duration::from_secs(10));
        assert_eq!((v.requests_total, v.errors_total), (100, 2));
        assert!((v.error_rate - 0.02).abs() < 1e-9);
        assert_eq!(v.p99_ms, Some(0.2), "99 of 100 took ≤ 200 µs");
        assert!(v.requests_per_second > 9.0 && v.requests_per_second < 11.0);
        assert_eq!(bucket_of(100), 0);
        assert_eq!(bucket_of(101), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }
}
