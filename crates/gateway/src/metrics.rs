//! The gateway's own metrics at `/metrics` on the admin listener (Prometheus text format). Handles are created
//! when a plugin is built, so counting on the request path is one atomic add.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub route: String,
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    pub route: String,
    pub detector: String,
    pub action: &'static str,
    /// `request` or `response`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub model: String,
    pub model_version: String,
    pub consumer: String,
    /// Status class: `2xx`, `4xx`, …
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub route: String,
    pub model: String,
    pub model_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub model_version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric family of the gateway.
pub struct Metrics {
    registry: Registry,
    pub ratelimit_rejected: Family<LimitLabels, Counter>,
    pub ratelimit_store_errors: Family<RouteLabels, Counter>,
    pub concurrency_rejected: Family<LimitLabels, Counter>,
    pub guard_detections: Family<GuardLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<DurationLabels>,
    pub upstream_duration: HistogramFamily<UpstreamLabels>,
    pub access_log_dropped: Counter,
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("modelgate");
        let ratelimit_rejected = Family::<LimitLabels, Counter>::default();
        registry.register("ratelimit_rejected", "Requests refused by a rate limit (429), by route and limit", ratelimit_rejected.clone());
        let ratelimit_store_errors = Family::<RouteLabels, Counter>::default();
        registry.register(
            "ratelimit_store_errors",
            "Rate limit checks the store (Redis) could not answer; on_store_error decided them",
            ratelimit_store_errors.clone(),
        );
        let concurrency_rejected = Family::<LimitLabels, Counter>::default();
        registry.register("concurrency_rejected", "Requests refused by a concurrency cap (429), by route and limit", concurrency_rejected.clone());
        let guard_detections = Family::<GuardLabels, Counter>::default();
        registry.register("guard_detections", "Content guard detections, by route, detector, action and direction", guard_detections.clone());
        fn latency() -> Histogram {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        }
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered, by route, model, model version, consumer and status class", requests.clone());
        let request_duration: HistogramFamily<DurationLabels> = Family::new_with_constructor(latency);
        registry.register("request_duration_seconds", "Time from request to response headers, gateway and upstream together", request_duration.clone());
        let upstream_duration: HistogramFamily<UpstreamLabels> = Family::new_with_constructor(latency);
        registry.register("upstream_duration_seconds", "Time the upstream took to answer (response headers)", upstream_duration.clone());
        let access_log_dropped = Counter::default();
        registry.register("access_log_dropped", "Access-log lines dropped because the writer fell behind", access_log_dropped.clone());
        Metrics {
            registry,
            ratelimit_rejected,
            ratelimit_store_errors,
            concurrency_rejected,
            guard_detections,
            requests,
            request_duration,
            upstream_duration,
            access_log_dropped,
        }
    })
}

/// The text exposition of every metric.
pub fn render() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &get().registry);
    out
}
