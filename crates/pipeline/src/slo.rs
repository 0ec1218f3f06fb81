//! A managed model version's own request statistics for the rollout's SLO checks: requests, errors and a latency
//! histogram, counted for the callers the split placed (pinned requests are kept out). Monotonic counters: a window
//! is the difference of two [`VersionStats::read`]s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets: four per power of two of microseconds (≤ 25 % apart), up to ~2^31 µs (36 min).
pub const LATENCY_BUCKETS: usize = 128;

/// Counters of one version (shared by the snapshots that route to it).
pub struct VersionStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// A reading of [`VersionStats`] (or the difference of two).
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    pub requests: u64,
    /// Answers with status 500 or above (the gateway's own 502/503/504 for the version's upstream included).
    pub errors: u64,
    latency: Box<[u64; LATENCY_BUCKETS]>,
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats { requests: AtomicU64::new(0), errors: AtomicU64::new(0), latency: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Default for Counts {
    fn default() -> Self {
        Counts { requests: 0, errors: 0, latency: Box::new([0; LATENCY_BUCKETS]) }
    }
}

impl std::fmt::Debug for VersionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionStats").field("requests", &self.requests).field("errors", &self.errors).finish_non_exhaustive()
    }
}

impl VersionStats {
    /// Counts one answer: its status and the time to its response head.
    pub fn count(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> Counts {
        let mut latency = Box::new([0; LATENCY_BUCKETS]);
        for (out, b) in latency.iter_mut().zip(&self.latency) {
            *out = b.load(Ordering::Relaxed);
        }
        Counts { requests: self.requests.load(Ordering::Relaxed), errors: self.errors.load(Ordering::Relaxed), latency }
    }
}

impl Counts {
    /// What was counted after `base` was read.
    pub fn since(&self, base: &Counts) -> Counts {
        let mut latency = Box::new([0; LATENCY_BUCKETS]);
        for (i, out) in latency.iter_mut().enumerate() {
            *out = self.latency[i].saturating_sub(base.latency[i]);
        }
        Counts { requests: self.requests.saturating_sub(base.requests), errors: self.errors.saturating_sub(base.errors), latency }
    }

    /// Errors per request (0 with no requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The 99th percentile latency: the upper bound of the bucket holding it (`None` with no requests).
    pub fn p99(&self) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest bucket with at least 99 % of the answers at or below it.
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper(i));
            }
        }
        Some(upper(LATENCY_BUCKETS - 1))
    }
}

fn bucket(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    let log = 63 - us.leading_zeros() as usize;
    let sub = if log >= 2 { ((us >> (log - 2)) & 3) as usize } else { 0 };
    (log * 4 + sub).min(LATENCY_BUCKETS - 1)
}

/// The largest latency in bucket `i`.
fn upper(i: usize) -> Duration {
    let (log, sub) = (i / 4, (i % 4) as u64);
    let us = if log >= 2 { ((5 + sub) << (log - 2)) - 1 } else { (1u64 << (log + 1)) - 1 };
    Duration::from_micros(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values() {
        for us in [1u64, 2, 3, 4, 5, 7, 8, 100, 999, 1_000, 1_234, 65_535, 1_000_000, 5_000_000] {
            let d = Duration::from_micros(us);
            let b = bucket(d);
            assert!(upper(b) >= d, "{us} µs in bucket {b} up to {:?}", upper(b));
            assert!(b == 0 || upper(b - 1) < d, "{us} µs: bucket {b} is not the first holding it");
            assert!(upper(b).as_secs_f64() <= d.as_secs_f64() * 1.25 + 1e-6, "{us} µs: bucket too wide");
        }
    }

    #[test]
    fn p99_and_error_rate_of_a_window() {
        let s = VersionStats::default();
        for i in 0..1_000u64 {
            s.count(if i % 50 == 0 { 503 } else { 200 }, Duration::from_millis(if i % 100 == 0 { 500 } else { 10 }));
        }
        let base = s.read();
        assert_eq!((base.requests, base.errors), (1_000, 20));
        let p99 = base.p99().unwrap();
        assert!(p99 >= Duration::from_millis(10) && p99 < Duration::from_millis(13), "{p99:?}");
        for _ in 0..100 {
            s.count(200, Duration::from_millis(400));
        }
        let window = s.read().since(&base);
        assert_eq!((window.requests, window.errors, window.error_rate()), (100, 0, 0.0));
        assert!(window.p99().unwrap() >= Duration::from_millis(400));
        assert_eq!(Counts::default().p99(), None);
    }
}
