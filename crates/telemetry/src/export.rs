//! Traces shared by the gateway and the model server.
//!
//! - [`TraceParent`]: the W3C Trace Context `traceparent` header, parsed and written.
//! - [`Exporter`]: OpenTelemetry spans exported over OTLP (gRPC through tonic, or HTTP/protobuf through hyper) by
//!   the SDK's batch span processor, which runs on its own thread and drops spans when its queue is full — the
//!   request path never waits for the collector.
//!
//! Spans are recorded after the fact: a sampled request keeps the instants its phases started and ended, and its
//! spans are handed to the batch processor when it finishes ([`Exporter::emit`]). That keeps a request's span ids
//! the ones already sent downstream in `traceparent`, and costs an unsampled request nothing but the sampling
//! decision.

#![allow(clippy::disallowed_methods, reason = "span timestamps: the clock maps std instants to wall time")]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor};

pub use opentelemetry::Value;
pub use opentelemetry::trace::SpanKind as Kind;

pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` for anything but a valid version-00 header with non-zero ids.
    pub fn parse(v: &[u8]) -> Option<TraceParent> {
        if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id = lower_hex(&v[3..35])?;
        let span_id = lower_hex(&v[36..52])? as u64;
        let flags = std::str::from_utf8(&v[53..55]).ok().and_then(|s| u8::from_str_radix(s, 16).ok())?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// From a request's headers.
    pub fn from_headers(h: &http::HeaderMap) -> Option<TraceParent> {
        h.get(&TRACEPARENT).and_then(|v| TraceParent::parse(v.as_bytes()))
    }

    /// The header value.
    pub fn header(&self) -> http::HeaderValue {
        let mut v = [0u8; 55];
        v[..3].copy_from_slice(b"00-");
        v[3..35].copy_from_slice(&hex::<32>(self.trace_id));
        v[35] = b'-';
        v[36..52].copy_from_slice(&hex::<16>(self.span_id as u128));
        v[52] = b'-';
        v[53..55].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        http::HeaderValue::from_bytes(&v).expect("ascii")
    }
}

/// Lowercase hex only (W3C forbids uppercase).
fn lower_hex(s: &[u8]) -> Option<u128> {
    let mut v = 0u128;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u128;
    }
    Some(v)
}

thread_local! {
    static ID_STATE: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((thread_seed(), 0));
}

fn thread_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6d67);
    h.finish()
}

/// 128 bits for trace and span ids: a random per-thread seed and a counter, mixed (splitmix64; unique per thread,
/// no shared state, no system call per id).
pub fn random128() -> u128 {
    let (seed, n) = ID_STATE.with(|c| {
        let (seed, n) = c.get();
        c.set((seed, n.wrapping_add(1)));
        (seed, n)
    });
    let mix = |x: u64| {
        let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    ((mix(seed ^ n) as u128) << 64) | mix(seed.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u128
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The low `N` hex digits of `v`, most significant first.
pub fn hex<const N: usize>(mut v: u128) -> [u8; N] {
    let mut out = [0u8; N];
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
    out
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (collector port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (collector port 4318, path `/v1/traces`).
    Http,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP; `/v1/traces` is added when no path is
    /// given). `https://` for TLS.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Fraction of new traces sampled, 0.0–1.0; a caller's `traceparent` decides for the traces it continues.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Extra headers (gRPC metadata) on every export, e.g. a vendor's API key.
    pub headers: Vec<(String, String)>,
    /// Limit for one export call.
    pub timeout: Duration,
    /// Spans waiting for export before new ones are dropped.
    pub max_queue_size: usize,
}

/// One finished span, recorded after the fact.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: a root span.
    pub parent_id: u64,
    /// The parent came from another process (`traceparent`).
    pub parent_remote: bool,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set: the span's status is Error with this description.
    pub error: Option<String>,
}

impl Span {
    pub fn new(
        trace_id: u128,
        span_id: u64,
        parent_id: u64,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        start: SystemTime,
        end: SystemTime,
    ) -> Span {
        Span {
            trace_id,
            span_id,
            parent_id,
            parent_remote: false,
            name: name.into(),
            kind,
            start,
            end,
            attributes: Vec::new(),
            error: None,
        }
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<Value>) -> Span {
        self.attributes.push(KeyValue::new(key, value));
        self
    }
}

/// Maps monotonic instants to wall-clock times for span timestamps: one `SystemTime` read per request.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    pub fn at(mono: Instant) -> Clock {
        let now = Instant::now();
        Clock { wall: SystemTime::now() - now.saturating_duration_since(mono), mono }
    }

    pub fn wall(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.mono) {
            Some(d) => self.wall + d,
            None => self.wall - self.mono.duration_since(t),
        }
    }
}

/// Exports spans over OTLP through the SDK's batch processor.
#[derive(Debug)]
pub struct Exporter {
    /// `None` only while being dropped.
    processor: Option<BatchSpanProcessor>,
    scope: InstrumentationScope,
    ratio: f64,
    pub config: ExportConfig,
}

/// Runs each export on the tokio runtime the exporter was built in: the batch processor's own thread has no
/// runtime, and both OTLP clients (tonic, hyper) need one.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    rt: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        match self.rt.spawn(async move { inner.export(batch).await }).await {
            Ok(r) => r,
            Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string())),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the trace exporter needs a tokio runtime")]
    NoRuntime,
    #[error("header name `{0}` is not valid gRPC metadata")]
    HeaderName(String),
    #[error("the value of header `{0}` is not valid gRPC metadata")]
    HeaderValue(String),
    #[error("invalid endpoint `{0}`: {1}")]
    Endpoint(String, http::uri::InvalidUri),
    #[error("cannot start the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

impl Exporter {
    /// Starts the exporter. Must be called inside a tokio runtime, which then carries the exports.
    pub fn start(config: ExportConfig) -> Result<Exporter, ExportError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let exporter = match config.protocol {
            Protocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &config.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| ExportError::HeaderName(k.clone()))?;
                    let value = v.parse().map_err(|_| ExportError::HeaderValue(k.clone()))?;
                    metadata.insert(key, value);
                }
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&config.endpoint)
                    .with_timeout(config.timeout)
                    .with_metadata(metadata);
                if config.endpoint.starts_with("https://") {
                    b = b.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots());
                }
                b.build()
            }
            Protocol::Http => {
                let mut endpoint = config.endpoint.clone();
                let uri: http::Uri = endpoint.parse().map_err(|e| ExportError::Endpoint(endpoint.clone(), e))?;
                if uri.path() == "/" {
                    endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
                }
                let connector = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
                let client = opentelemetry_http::hyper::HyperClient::new(connector, config.timeout, None);
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .with_timeout(config.timeout)
                    .with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>())
                    .with_http_client(client)
                    .build()
            }
        }?;
        let mut processor = BatchSpanProcessor::builder(OnRuntime { inner: Arc::new(exporter), rt })
            .with_batch_config(
                opentelemetry_sdk::trace::BatchConfigBuilder::default().with_max_queue_size(config.max_queue_size.max(1)).build(),
            )
            .build();
        processor.set_resource(&Resource::builder_empty().with_service_name(config.service_name.clone()).build());
        Ok(Exporter {
            processor: Some(processor),
            scope: InstrumentationScope::builder("modelgate").with_version(env!("CARGO_PKG_VERSION")).build(),
            ratio: config.sample_ratio,
            config,
        })
    }

    /// Whether a new trace (no caller's `traceparent`) is sampled: the SDK's trace-id ratio rule, so every
    /// process that sees the same trace id decides alike.
    pub fn sample_root(&self, trace_id: u128) -> bool {
        use opentelemetry_sdk::trace::ShouldSample;
        let r = opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(self.ratio).should_sample(
            None,
            TraceId::from(trace_id),
            "",
            &SpanKind::Server,
            &[],
            &[],
        );
        matches!(r.decision, opentelemetry_sdk::trace::SamplingDecision::RecordAndSample)
    }

    /// Queues a finished span for export (dropped, and counted by the SDK, when the queue is full).
    pub fn emit(&self, span: Span) {
        let status = match span.error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        };
        let Some(processor) = &self.processor else { return };
        processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from(span.trace_id),
                SpanId::from(span.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(span.parent_id),
            parent_span_is_remote: span.parent_remote,
            span_kind: span.kind,
            name: span.name,
            start_time: span.start,
            end_time: span.end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Exports what is queued now (used at shutdown and by tests).
    pub fn flush(&self) {
        if let Some(Err(e)) = self.processor.as_ref().map(BatchSpanProcessor::force_flush) {
            tracing::warn!(error = %e, "trace export flush failed");
        }
    }
}

impl Drop for Exporter {
    /// Flushes what is queued on a thread of its own: the last reference may go on a runtime thread (a reload), which
    /// must not wait for the collector.
    fn drop(&mut self) {
        if let Some(processor) = self.processor.take() {
            let _ = std::thread::Builder::new().name("span-flush".into()).spawn(move || {
                let _ = processor.shutdown_with_timeout(Duration::from_secs(2));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_traceparent() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(v).unwrap();
        assert_eq!(p, TraceParent { trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736, span_id: 0x00f067aa0ba902b7, sampled: true });
        assert_eq!(p.header().as_bytes(), v);
        let unsampled = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
        assert!(!unsampled.sampled);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            b"garbage",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn clock_maps_instants_to_wall_time() {
        let start = Instant::now();
        let c = Clock::at(start);
        let later = start + Duration::from_millis(5);
        assert_eq!(c.wall(later).duration_since(c.wall(start)).unwrap(), Duration::from_millis(5));
    }
}
