//! Model performance metrics at `/metrics` (Prometheus text format), one series per model and version. The
//! gateway reports traffic health with its own family; both carry `model` and `model_version` so they join.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub model_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub model_version: String,
    /// `success` or `failure`.
    pub status: &'static str,
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// Every metric family of the model server.
pub struct Metrics {
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    inferences: Family<ModelLabels, Counter>,
    executions: Family<ModelLabels, Counter>,
    queue_seconds: HistogramFamily,
    compute_seconds: HistogramFamily,
    batch_size: HistogramFamily,
    queue_depth: Family<ModelLabels, Gauge>,
}

/// The handles one model version records into (cheap clones of shared atomics).
#[derive(Clone)]
pub struct VersionMetrics {
    pub success: Counter,
    pub failure: Counter,
    pub inferences: Counter,
    pub executions: Counter,
    pub queue_seconds: Histogram,
    pub compute_seconds: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    /// Cumulative durations for the statistics extension.
    pub stats: std::sync::Arc<Stats>,
}

/// Cumulative durations in nanoseconds, as Triton's statistics extension reports them: per request (success
/// covers queue + compute; compute counts the whole execution a request was part of) and per batch size.
#[derive(Default)]
pub struct Stats {
    pub success_ns: std::sync::atomic::AtomicU64,
    pub queue_ns: std::sync::atomic::AtomicU64,
    pub compute_ns: std::sync::atomic::AtomicU64,
    /// Unix milliseconds of the last execution.
    pub last_inference_ms: std::sync::atomic::AtomicU64,
    /// Executions and their total nanoseconds, by batch size (written by the instance threads once per execution).
    pub batches: std::sync::Mutex<std::collections::BTreeMap<usize, (u64, u64)>>,
}

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        fn latency() -> Histogram {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        }
        fn batch() -> Histogram {
            Histogram::new(exponential_buckets(1.0, 2.0, 8))
        }
        let mut registry = Registry::with_prefix("modelgate_inference");
        let m = Metrics {
            requests: Family::default(),
            inferences: Family::default(),
            executions: Family::default(),
            queue_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            compute_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            batch_size: Family::new_with_constructor(batch as fn() -> Histogram),
            queue_depth: Family::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Inference requests answered, by outcome", m.requests.clone());
        registry.register("count", "Inferences run (batch items)", m.inferences.clone());
        registry.register("exec_count", "Model executions (batches)", m.executions.clone());
        registry.register("queue_duration_seconds", "Time requests waited in the queue", m.queue_seconds.clone());
        registry.register("compute_duration_seconds", "Time one model execution took", m.compute_seconds.clone());
        registry.register("batch_size", "Rows per model execution", m.batch_size.clone());
        registry.register("queue_depth", "Requests waiting for the model", m.queue_depth.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn version(&self, model: &str, version: &str) -> VersionMetrics {
        let labels = ModelLabels { model: model.to_string(), model_version: version.to_string() };
        let req = |status| RequestLabels { model: model.to_string(), model_version: version.to_string(), status };
        // One statement per handle: `get_or_create` returns a read guard, and a second call while the first guard
        // is alive (temporaries live to the end of the statement) may need the write lock and deadlock.
        let success = self.requests.get_or_create(&req("success")).clone();
        let failure = self.requests.get_or_create(&req("failure")).clone();
        let inferences = self.inferences.get_or_create(&labels).clone();
        let executions = self.executions.get_or_create(&labels).clone();
        let queue_seconds = self.queue_seconds.get_or_create(&labels).clone();
        let compute_seconds = self.compute_seconds.get_or_create(&labels).clone();
        let batch_size = self.batch_size.get_or_create(&labels).clone();
        let queue_depth = self.queue_depth.get_or_create(&labels).clone();
        VersionMetrics {
            success,
            failure,
            inferences,
            executions,
            queue_seconds,
            compute_seconds,
            batch_size,
            queue_depth,
            stats: Default::default(),
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
