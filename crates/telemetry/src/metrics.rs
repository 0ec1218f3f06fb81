//! The gateway's own metrics at `/metrics` on the admin listener (Prometheus text format). Handles are created
//! when a plugin is built, so counting on the request path is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub upstream: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelVersionLabels {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub model: String,
    pub version: String,
    /// `result` of a comparison, or `reason` a copy was dropped.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub model: String,
    pub version: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowDropLabels {
    pub model: String,
    pub version: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    pub route: String,
    /// `authn` or `authz`.
    pub phase: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub route: String,
    /// `in` (request bodies) or `out` (response bodies).
    pub direction: &'static str,
}

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
    pub auth_denied: Family<DenyLabels, Counter>,
    pub body_bytes: Family<BytesLabels, Counter>,
    pub upstream_healthy: Family<TargetLabels, Gauge>,
    pub upstream_in_flight: Family<TargetLabels, Gauge>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_info: Family<VersionLabels, Gauge>,
    /// Managed model versions (`models`): their share of callers in percent, readiness, and tags as labels.
    pub model_version_weight: Family<ModelVersionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub model_version_ready: Family<ModelVersionLabels, Gauge>,
    pub shadow_compare: Family<ShadowLabels, Counter>,
    pub rollout_status: Family<RolloutLabels, Gauge>,
    pub rollout_step: Family<ModelVersionLabels, Gauge>,
    pub rollout_breaches: Family<ModelVersionLabels, Gauge>,
    pub shadow_dropped: Family<ShadowDropLabels, Counter>,
    pub shadow_max_abs_diff: HistogramFamily<ModelVersionLabels>,
    pub shadow_max_rel_diff: HistogramFamily<ModelVersionLabels>,
    pub model_version_info: Family<Vec<(String, String)>, Gauge>,
    pub audit_queue: Gauge,
    /// Writes the disk refused (disk full, I/O error); while failing, records are refused per `when_full`.
    pub audit_write_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A gateway's metric families, registered under the `modelgate` prefix. Each gateway owns one (its registries
    /// outlive config snapshots), and hands handles to the plugins and the log phase when they are built.
    pub fn new() -> Metrics {
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
        registry.register(
            "concurrency_rejected",
            "Requests refused by a concurrency cap (429), by route and limit",
            concurrency_rejected.clone(),
        );
        let guard_detections = Family::<GuardLabels, Counter>::default();
        registry.register(
            "guard_detections",
            "Content guard detections, by route, detector, action and direction",
            guard_detections.clone(),
        );
        fn latency() -> Histogram {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        }
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered, by route, model, model version, consumer and status class", requests.clone());
        let request_duration: HistogramFamily<DurationLabels> = Family::new_with_constructor(latency);
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, gateway and upstream together",
            request_duration.clone(),
        );
        let upstream_duration: HistogramFamily<UpstreamLabels> = Family::new_with_constructor(latency);
        registry.register("upstream_duration_seconds", "Time the upstream took to answer (response headers)", upstream_duration.clone());
        let access_log_dropped = Counter::default();
        registry.register("access_log_dropped", "Access-log lines dropped because the writer fell behind", access_log_dropped.clone());
        let auth_denied = Family::<DenyLabels, Counter>::default();
        registry.register("auth_denied", "Requests refused by authentication (401) or authorization (403), by reason", auth_denied.clone());
        let body_bytes = Family::<BytesLabels, Counter>::default();
        registry.register("body_bytes", "Request and response body bytes (where the size is known), by route", body_bytes.clone());
        let upstream_healthy = Family::<TargetLabels, Gauge>::default();
        registry.register("upstream_healthy", "1 if the target takes traffic (healthy, not ejected), else 0", upstream_healthy.clone());
        let upstream_in_flight = Family::<TargetLabels, Gauge>::default();
        registry.register("upstream_in_flight", "Requests in flight to the target", upstream_in_flight.clone());
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register("config_reloads", "Config reloads, by result", config_reloads.clone());
        let config_info = Family::<VersionLabels, Gauge>::default();
        registry.register("config_info", "The active config version (value 1)", config_info.clone());
        let model_version_weight = Family::<ModelVersionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "model_version_weight",
            "Percent of callers the split gives a managed model version (the stable one gets the rest)",
            model_version_weight.clone(),
        );
        let model_version_ready = Family::<ModelVersionLabels, Gauge>::default();
        registry.register(
            "model_version_ready",
            "1 if the managed model version's readiness probe answered ready (or it is not gated), else 0",
            model_version_ready.clone(),
        );
        let model_version_info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "model_version_info",
            "A managed model version with its state and tags as labels (`tag_<name>`; value 1)",
            model_version_info.clone(),
        );
        let rollout_status = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_status",
            "1 for a rollout's current status (progressing, waiting_for_promotion, paused, rolled_back, completed), else 0",
            rollout_status.clone(),
        );
        let rollout_step = Family::<ModelVersionLabels, Gauge>::default();
        registry.register("rollout_step", "The step (from 0) a rollout's canary is at", rollout_step.clone());
        let rollout_breaches = Family::<ModelVersionLabels, Gauge>::default();
        registry.register("rollout_breaches", "Consecutive evaluations of a rollout that breached its SLOs", rollout_breaches.clone());
        let shadow_compare = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_compare",
            "Shadow copies by the comparison's result: match, top_k_agree, mismatch, shadow_error, primary_error, not_comparable",
            shadow_compare.clone(),
        );
        let shadow_dropped = Family::<ShadowDropLabels, Counter>::default();
        registry.register(
            "shadow_dropped",
            "Sampled requests not copied to the shadow version, by reason: busy, too_large, not_ready",
            shadow_dropped.clone(),
        );
        fn diff() -> Histogram {
            Histogram::new(exponential_buckets(1e-7, 10.0, 11))
        }
        let shadow_max_abs_diff: HistogramFamily<ModelVersionLabels> = Family::new_with_constructor(diff);
        registry.register(
            "shadow_max_abs_diff",
            "Largest absolute difference between the shadow's and the client's output elements, per compared request",
            shadow_max_abs_diff.clone(),
        );
        let shadow_max_rel_diff: HistogramFamily<ModelVersionLabels> = Family::new_with_constructor(diff);
        registry.register(
            "shadow_max_rel_diff",
            "Largest relative difference |shadow − primary| / |primary| of output elements, per compared request",
            shadow_max_rel_diff.clone(),
        );
        let audit_queue = Gauge::default();
        registry.register("audit_queue_depth", "Audit records waiting for the writer", audit_queue.clone());
        let audit_write_errors = Counter::default();
        registry.register("audit_write_errors", "Audit writes the disk refused (records held and retried)", audit_write_errors.clone());
        Metrics {
            registry,
            auth_denied,
            body_bytes,
            upstream_healthy,
            upstream_in_flight,
            config_reloads,
            config_info,
            model_version_weight,
            model_version_ready,
            model_version_info,
            shadow_compare,
            rollout_status,
            rollout_step,
            rollout_breaches,
            shadow_dropped,
            shadow_max_abs_diff,
            shadow_max_rel_diff,
            audit_queue,
            audit_write_errors,
            ratelimit_rejected,
            ratelimit_store_errors,
            concurrency_rejected,
            guard_detections,
            requests,
            request_duration,
            upstream_duration,
            access_log_dropped,
        }
    }

    /// Counts a request refused by authentication (`authn`, 401) or authorization (`authz`, 403).
    pub fn count_denied(&self, route: &str, phase: &'static str, reason: &str) {
        self.auth_denied.get_or_create(&DenyLabels { route: route.to_string(), phase, reason: reason.to_string() }).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_counts_into_its_own_families() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.count_denied("r", "authn", "missing");
        a.count_denied("r", "authn", "missing");
        b.count_denied("r", "authz", "no_rule_matched");
        let line = r#"modelgate_auth_denied_total{route="r",phase="authn",reason="missing"} 2"#;
        assert!(a.render().contains(line), "{}", a.render());
        assert!(!b.render().contains("phase=\"authn\""), "{}", b.render());
        assert!(b.render().contains(r#"modelgate_auth_denied_total{route="r",phase="authz",reason="no_rule_matched"} 1"#));
    }
}
