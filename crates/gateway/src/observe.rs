//! Request metrics and the access log: after each response is ready, one counter, one or two histogram
//! observations and (if configured) one JSON line handed to the access-log thread. Every request is tied to the
//! model version that answered it: the upstream's `x-model-version`, else the version named in the path.

#![allow(clippy::disallowed_methods, reason = "uptime for the admin views (reported, never a timer)")]

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http::HeaderValue;
use modelgate_config::Config;

use modelgate_pipeline::Ctx;
use modelgate_telemetry::jsonline::{JsonLine, Stamps};
use modelgate_telemetry::live::{Live, Stats};
use modelgate_telemetry::metrics::{BytesLabels, DurationLabels, Metrics, RequestLabels, UpstreamLabels};
use modelgate_telemetry::request::{Finished, ServerSpan};
use prometheus_client::metrics::counter::Counter;

pub static X_MODEL_VERSION: http::HeaderName = http::HeaderName::from_static("x-model-version");

/// Distinct model names with their own label, and versions per model: only names an upstream answered for become
/// labels, and these bound them even then.
const MODEL_LABELS: usize = 1000;
const VERSION_LABELS: usize = 100;

/// What outlives snapshots: the access-log writer and the consumers that have their own label.
#[derive(Default)]
pub struct Registry {
    access_log: Option<Arc<AccessLog>>,
    consumers: Arc<BoundedLabels>,
    models: Arc<ModelLabels>,
    live: Arc<Live>,
    started: Option<std::time::Instant>,
    tracer: Option<Arc<modelgate_telemetry::Exporter>>,
    /// The gateway's metric families: one per gateway, for its whole life.
    families: Arc<Metrics>,
}

/// What a snapshot records into.
#[derive(Clone, Default)]
pub struct Services {
    pub access_log: Option<Arc<AccessLog>>,
    pub consumers: Arc<BoundedLabels>,
    pub models: Arc<ModelLabels>,
    pub metrics: bool,
    /// Live stats for the admin views; `routes[i]` belongs to the snapshot's route `i`.
    pub live: Arc<Live>,
    pub routes: Vec<Arc<Stats>>,
    pub started: Option<std::time::Instant>,
    /// Span export (`observability.tracing`).
    pub tracer: Option<Arc<modelgate_telemetry::Exporter>>,
    /// The gateway's metric families (`/metrics`), shared with the plugins that count into them.
    pub families: Arc<Metrics>,
}

/// Bounded label values: the first `limit` values seen keep their name, later ones are `other` (consumer names,
/// which only authenticated requests bring).
#[derive(Default)]
pub struct BoundedLabels {
    limit: AtomicU64,
    seen: RwLock<HashSet<String>>,
}

/// The models and versions that have their own label (metrics, live stats, access log, spans). A request's path
/// names a model and version, but anyone can write any path: a name becomes a label only once an upstream answered
/// for it — a response from the upstream, not a 404 — and at most [`MODEL_LABELS`] models with [`VERSION_LABELS`]
/// versions each. Until then, and past the bounds, requests count under `other`. So unauthenticated or refused
/// requests can never add a label, and the per-version stats behind `/admin/models` stay bounded.
#[derive(Default)]
pub struct ModelLabels {
    known: RwLock<HashMap<String, HashSet<String>>>,
}

/// The access log: request threads append finished lines to one shared buffer (a lock, a copy); the writer
/// thread takes the whole buffer every few milliseconds and writes it with one call. No wake-ups, no allocation
/// per line.
pub struct AccessLog {
    pending: Arc<std::sync::Mutex<Pending>>,
    /// Lines the buffer may hold before new ones are dropped (and counted).
    queue: usize,
    /// The fields written: bit `i` is `ACCESS_LOG_FIELDS[i]`.
    fields: u32,
    /// Counts lines dropped because the writer fell behind.
    dropped: Counter,
}

/// Lines not yet taken by the writer.
#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    lines: usize,
    /// No more handles: the writer writes what is left and stops.
    closed: bool,
}

/// Why observability could not be set up for a config.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot open the access log {path}: {source}")]
    AccessLog { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start the access-log writer thread: {0}")]
    Writer(std::io::Error),
    #[error(transparent)]
    Tracing(#[from] modelgate_telemetry::ExportError),
}

impl ObserveError {
    /// The config path the error is about.
    pub fn config_path(&self) -> &'static str {
        match self {
            ObserveError::AccessLog { .. } | ObserveError::Writer(_) => "observability.access_log",
            ObserveError::Tracing(_) => "observability.tracing",
        }
    }
}

// === impl Registry ===

impl Registry {
    /// The services for a config; the access log starts once (a changed `access_log` takes effect on restart).
    /// Errors name the config path they come from.
    pub fn build(&mut self, config: &Config) -> Result<Services, ObserveError> {
        self.consumers.limit.store(config.consumer_labels as u64, Ordering::Relaxed);
        if self.access_log.is_none()
            && let Some(a) = &config.access_log
        {
            let dropped = self.families.access_log_dropped.clone();
            self.access_log = Some(Arc::new(AccessLog::start(a.path.clone(), a.queue, a.fields.clone(), dropped)?));
        }
        self.tracer = match &config.tracing {
            None => None,
            // Kept across reloads that leave it unchanged, so queued spans are not lost.
            Some(t) => match self.tracer.take() {
                Some(e) if e.config == export_config(t) => Some(e),
                _ => Some(Arc::new(modelgate_telemetry::Exporter::start(export_config(t))?)),
            },
        };
        self.live.start_sampling();
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        Ok(Services {
            access_log: self.access_log.clone(),
            consumers: self.consumers.clone(),
            models: self.models.clone(),
            metrics: config.request_metrics,
            routes: config.routes.iter().map(|r| self.live.route(&r.name)).collect(),
            live: self.live.clone(),
            started: Some(started),
            tracer: self.tracer.clone(),
            families: self.families.clone(),
        })
    }
}

/// The exporter settings for `observability.tracing`.
pub fn export_config(t: &modelgate_config::model::TracingConfig) -> modelgate_telemetry::ExportConfig {
    modelgate_telemetry::ExportConfig {
        endpoint: t.endpoint.clone(),
        protocol: if t.grpc { modelgate_telemetry::Protocol::Grpc } else { modelgate_telemetry::Protocol::Http },
        sample_ratio: t.sample_ratio,
        service_name: t.service_name.clone(),
        headers: t.headers.clone(),
        timeout: t.timeout,
        max_queue_size: t.queue,
    }
}

// === impl BoundedLabels ===

impl BoundedLabels {
    /// `name`'s label: itself while fewer than the limit have been seen (or it was seen before), else `other`.
    /// No allocation once a name is known.
    fn label<'a>(&self, name: &'a str) -> &'a str {
        if let Ok(seen) = self.seen.read() {
            if seen.contains(name) {
                return name;
            }
            // Full: no write lock for the names counted as `other`.
            if seen.len() as u64 >= self.limit.load(Ordering::Relaxed) {
                return "other";
            }
        }
        let Ok(mut seen) = self.seen.write() else { return "other" };
        if seen.contains(name) || (seen.len() as u64) < self.limit.load(Ordering::Relaxed) {
            seen.insert(name.to_string());
            name
        } else {
            "other"
        }
    }
}

// === impl ModelLabels ===

impl ModelLabels {
    /// The labels for `model` (and `version`, `-` if none): their names if known, or now confirmed and within the
    /// bounds; `other` otherwise. No allocation and no write lock once a pair is known.
    pub fn labels<'a>(&self, model: &'a str, version: Option<&'a str>, confirmed: bool) -> (&'a str, &'a str) {
        let unknown_version = if version.is_some() { "other" } else { "-" };
        if let Ok(known) = self.known.read() {
            match (known.get(model), version) {
                (Some(_), None) => return (model, "-"),
                (Some(versions), Some(v)) if versions.contains(v) => return (model, v),
                (Some(_), Some(_)) if !confirmed => return (model, "other"),
                (None, _) if !confirmed => return ("other", unknown_version),
                _ => {}
            }
        }
        let Ok(mut known) = self.known.write() else { return ("other", "other") };
        if !known.contains_key(model) {
            if known.len() >= MODEL_LABELS {
                return ("other", unknown_version);
            }
            known.insert(model.to_string(), HashSet::new());
        }
        let versions = known.get_mut(model).expect("inserted above");
        match version {
            None => (model, "-"),
            Some(v) if versions.contains(v) => (model, v),
            Some(v) if versions.len() < VERSION_LABELS => {
                versions.insert(v.to_string());
                (model, v)
            }
            Some(_) => (model, "other"),
        }
    }
}

// === impl AccessLog ===

impl AccessLog {
    fn start(
        path: Option<std::path::PathBuf>,
        queue: usize,
        fields: Option<Vec<String>>,
        dropped: Counter,
    ) -> Result<AccessLog, ObserveError> {
        let mut out: Box<dyn std::io::Write + Send> = match &path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| ObserveError::AccessLog { path: p.clone(), source })?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
        let shared = pending.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                // Polls instead of waiting to be woken, so a request never pays for waking this thread; lines
                // reach the file within a few milliseconds. Two buffers trade places: no allocation once warm.
                let mut spare = Vec::new();
                loop {
                    let closed = {
                        let mut p = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        std::mem::swap(&mut p.text, &mut spare);
                        p.lines = 0;
                        p.closed
                    };
                    if !spare.is_empty() {
                        let _ = out.write_all(&spare).and_then(|()| out.flush());
                        spare.clear();
                    }
                    if closed {
                        return;
                    }
                    #[allow(clippy::disallowed_methods)] // the writer's own thread, not a runtime thread
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
            .map_err(ObserveError::Writer)?;
        Ok(AccessLog { pending, queue, fields: field_mask(fields.as_deref()), dropped })
    }

    /// Appends one finished line (with its newline), or counts it dropped when the writer is behind.
    fn send(&self, line: &[u8]) {
        let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if p.lines >= self.queue {
            drop(p);
            self.dropped.inc();
            return;
        }
        p.text.extend_from_slice(line);
        p.lines += 1;
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closed = true;
    }
}

/// The model a request addressed (from its path, or its gRPC message) and the version that answered it.
pub struct Lineage<'a> {
    pub model: Option<&'a str>,
    pub version: Option<String>,
}

/// Respond phase: the model version that answered — the upstream's `x-model-version`, else the version the path
/// (or the gRPC message's `model_version`) named, which is then set on a successful response too.
pub fn lineage<'a>(ctx: &'a Ctx, parts: &mut http::response::Parts) -> Lineage<'a> {
    let (model, path_version) = ctx.model_target();
    // A managed model's version is the gateway's choice, named as in `models` whatever the upstream calls it.
    if let Some(routed) = ctx.routed() {
        if let Ok(h) = HeaderValue::from_str(&routed.version) {
            parts.headers.insert(X_MODEL_VERSION.clone(), h);
        }
        return Lineage { model, version: Some(routed.version.to_string()) };
    }
    let version = match parts.headers.get(&X_MODEL_VERSION).and_then(|v| v.to_str().ok()) {
        Some(v) => Some(v.to_string()),
        None => {
            if let Some(v) = path_version.filter(|_| parts.status.is_success())
                && let Ok(h) = HeaderValue::from_str(v)
            {
                parts.headers.insert(X_MODEL_VERSION.clone(), h);
            }
            path_version.map(String::from)
        }
    };
    Lineage { model, version }
}

/// Log phase: records one answered request — metrics, live stats, access log, and the spans of a sampled
/// request — all but its server span, returned to end with the response body. `lineage` is the respond phase's.
#[must_use = "the server span is emitted when dropped: keep it with the response body"]
// Long on purpose: the log phase in one place on the hot path (metrics, live stats, spans, access log), so the
// borrowed label values are computed once and no intermediate struct is built per request.
pub fn record(
    services: &Services,
    route: Option<&str>,
    ctx: &Ctx,
    parts: &http::response::Parts,
    error: Option<&'static str>,
    lineage: &Lineage<'_>,
) -> Option<ServerSpan> {
    let (model, version) = (lineage.model, lineage.version.as_deref());
    let elapsed = ctx.started().elapsed();
    // A managed version's SLO statistics (the rollout's), for the callers the split placed.
    if let Some(r) = ctx.routed().filter(|r| !r.pinned) {
        r.stats.count(parts.status.as_u16(), elapsed);
    }
    if !services.metrics && services.access_log.is_none() && ctx.timings().is_none() {
        return None;
    }
    let route = route.unwrap_or("-");
    // A model the upstream does not know (404) is not a model: the caller made up the path.
    // The upstream answered for this model and version (not the gateway refusing, not a 404 for a made-up name).
    let confirmed = error.is_none() && ctx.upstream().is_some() && parts.status != http::StatusCode::NOT_FOUND;
    let (model, version) = match model {
        Some(m) => services.models.labels(m, version, confirmed),
        None => ("-", "-"),
    };
    let mut server_span = None;
    if let (Some(tracer), Some(timings)) = (&services.tracer, ctx.timings()) {
        let finished = Finished {
            method: ctx.method().as_str(),
            route,
            path: ctx.path(),
            upstream: ctx.upstream().map(|u| u.name()),
            model,
            version,
            consumer: ctx.principal().map(|p| p.consumer.as_str()),
            status: parts.status.as_u16(),
            error,
            model_tags: ctx.routed().map(|r| &*r.tags_json),
        };
        server_span = Some(modelgate_telemetry::request::export(tracer, ctx.trace(), ctx.started().into_std(), timings, finished));
    }
    let upstream_us = ctx.upstream_us();
    if let Some(stats) = ctx.route().and_then(|i| services.routes.get(i)) {
        stats.count(parts.status.as_u16(), elapsed);
        if model != "-" {
            services.live.count_model(model, version, parts.status.as_u16(), elapsed);
        }
    }
    let bytes_out = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if services.metrics {
        count(services, route, model, version, ctx, parts.status, bytes_out, elapsed, upstream_us);
    }
    let Some(log) = &services.access_log else { return server_span };
    let client = ctx.client_ip().to_str().unwrap_or("");
    let line = Line {
        time: SystemTime::now(),
        request_id: ctx.request_id().to_str().unwrap_or(""),
        trace_id: ctx.trace().trace_id(),
        client,
        method: ctx.method().as_str(),
        path: ctx.path(),
        route,
        upstream: ctx.upstream().map(|u| u.name()),
        model,
        model_version: version,
        consumer: ctx.principal().map(|p| p.consumer.as_str()),
        auth_method: ctx.principal().map(|p| p.method.as_str()),
        status: parts.status.as_u16(),
        bytes_in: ctx.bytes_in(),
        bytes_out,
        duration_us: elapsed.as_micros() as u64,
        upstream_us: (upstream_us > 0).then_some(upstream_us),
        error,
        model_tags: ctx.routed().map(|r| &*r.tags_json),
        pinned: ctx.routed().is_some_and(|r| r.pinned),
    };
    // Written into this thread's scratch buffer, then copied into the shared one.
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        line.write(buf, log.fields);
        buf.push(b'\n');
        log.send(buf);
    });
    server_span
}

thread_local! {
    /// The access-log line being built on this thread.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    /// This thread's access-log times.
    static STAMPS: std::cell::RefCell<Stamps> = std::cell::RefCell::new(Stamps::default());
}

/// One access-log line, from borrowed fields.
struct Line<'a> {
    time: SystemTime,
    request_id: &'a str,
    trace_id: &'a str,
    client: &'a str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    upstream: Option<&'a str>,
    model: &'a str,
    model_version: &'a str,
    consumer: Option<&'a str>,
    auth_method: Option<&'static str>,
    status: u16,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    duration_us: u64,
    upstream_us: Option<u64>,
    error: Option<&'static str>,
    /// A managed model version's tags (a JSON object), when the request was routed to one.
    model_tags: Option<&'a str>,
    /// The managed version was named by the request (path or `x-model-version`), not chosen by the split.
    pinned: bool,
}

impl Line<'_> {
    /// Writes the fields in `fields` (bit `i` = `ACCESS_LOG_FIELDS[i]`), in that order, as one JSON object.
    fn write(&self, buf: &mut Vec<u8>, fields: u32) {
        use modelgate_config::model::ACCESS_LOG_FIELDS as F;
        let mut out = JsonLine::start(buf);
        let mut text = [0; 32];
        for i in 0..F.len() {
            if fields & (1 << i) == 0 {
                continue;
            }
            match i {
                0 => out.str("time", STAMPS.with_borrow_mut(|s| s.format(self.time, 3, &mut text))),
                1 => out.str("request_id", self.request_id),
                2 => out.str("trace_id", self.trace_id),
                3 => out.str("client", self.client),
                4 => out.str("method", self.method),
                5 => out.str("path", self.path),
                6 => out.str("route", self.route),
                7 => out.opt_str("upstream", self.upstream),
                8 => out.str("model", self.model),
                9 => out.str("model_version", self.model_version),
                10 => out.opt_str("consumer", self.consumer),
                11 => out.opt_str("auth_method", self.auth_method),
                12 => out.u64("status", u64::from(self.status)),
                13 => out.opt_u64("bytes_in", self.bytes_in),
                14 => out.opt_u64("bytes_out", self.bytes_out),
                15 => out.millis("duration_ms", self.duration_us),
                16 => match self.upstream_us {
                    Some(us) => out.millis("upstream_ms", us),
                    None => out.raw("upstream_ms", "null"),
                },
                17 => out.opt_str("error", self.error),
                18 => match self.model_tags {
                    Some(tags) => out.raw("model_tags", tags),
                    None => &mut out,
                },
                _ if self.pinned => out.raw("model_version_pinned", "true"),
                _ => &mut out,
            };
        }
        out.end();
    }
}

/// The field mask for `observability.access_log.fields` (`None`: all).
fn field_mask(fields: Option<&[String]>) -> u32 {
    use modelgate_config::model::ACCESS_LOG_FIELDS as F;
    let all = (1u32 << F.len()) - 1;
    fields.map_or(all, |fs| F.iter().enumerate().filter(|(_, f)| fs.iter().any(|x| x == *f)).fold(0, |m, (i, _)| m | 1 << i))
}

#[allow(clippy::too_many_arguments)]
fn count(
    services: &Services,
    route: &str,
    model: &str,
    version: &str,
    ctx: &Ctx,
    status: http::StatusCode,
    bytes_out: Option<u64>,
    elapsed: std::time::Duration,
    upstream_us: u64,
) {
    let consumer = ctx.principal().map_or("-", |p| services.consumers.label(&p.consumer));
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let upstream = ctx.upstream().map_or("-", |u| u.name());
    let labels = [route, model, version, consumer, upstream, class];
    let m = &*services.families;
    HANDLES.with_borrow_mut(|cache| {
        let h = cache.get(m, labels);
        h.requests.inc();
        h.duration.observe(elapsed.as_secs_f64());
        // Series that only exist once they have something to count.
        if let Some(n) = ctx.bytes_in().filter(|n| *n > 0) {
            h.bytes_in
                .get_or_insert_with(|| m.body_bytes.get_or_create(&BytesLabels { route: route.into(), direction: "in" }).clone())
                .inc_by(n);
        }
        if let Some(n) = bytes_out.filter(|n| *n > 0) {
            h.bytes_out
                .get_or_insert_with(|| m.body_bytes.get_or_create(&BytesLabels { route: route.into(), direction: "out" }).clone())
                .inc_by(n);
        }
        if upstream_us > 0 {
            let labels = || UpstreamLabels { upstream: upstream.into(), model_version: version.into() };
            h.upstream.get_or_insert_with(|| m.upstream_duration.get_or_create(&labels()).clone()).observe(upstream_us as f64 / 1e6);
        }
    });
}

thread_local! {
    static HANDLES: std::cell::RefCell<HandleCache> = std::cell::RefCell::new(HandleCache::default());
}

/// Label sets a worker thread keeps handles for before it starts over (the families keep every series; this only
/// bounds the cache).
const CACHED_LABEL_SETS: usize = 4096;

/// Per worker thread: the metric handles of each label set (route, model, version, consumer, upstream, status
/// class) seen, so a request costs one hash lookup and no allocation instead of five family lookups with owned
/// labels (measured in bench/observe.sh).
#[derive(Default)]
struct HandleCache {
    /// By the hash of the labels; a collision keeps both entries.
    sets: std::collections::HashMap<u64, Vec<(LabelSet, Handles)>, foldhash::fast::RandomState>,
    /// Hashes the label sets (seeded per thread; foldhash: a fraction of SipHash's cost per request).
    hasher: foldhash::fast::RandomState,
    len: usize,
    /// The metric families the handles belong to (a thread that serves another gateway starts over).
    owner: usize,
}

/// route, model, version, consumer, upstream, status class.
type LabelSet = [Box<str>; 6];

struct Handles {
    requests: prometheus_client::metrics::counter::Counter,
    duration: prometheus_client::metrics::histogram::Histogram,
    bytes_in: Option<prometheus_client::metrics::counter::Counter>,
    bytes_out: Option<prometheus_client::metrics::counter::Counter>,
    upstream: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl HandleCache {
    fn get(&mut self, families: &Metrics, labels: [&str; 6]) -> &mut Handles {
        use std::hash::BuildHasher as _;
        let owner = std::ptr::from_ref(families) as usize;
        if self.owner != owner {
            self.sets.clear();
            self.len = 0;
            self.owner = owner;
        }
        let key = self.hasher.hash_one(labels);
        let found = self.sets.get(&key).and_then(|e| e.iter().position(|(l, _)| l.iter().map(|b| &**b).eq(labels)));
        let at = match found {
            Some(at) => at,
            None => {
                if self.len >= CACHED_LABEL_SETS {
                    self.sets.clear();
                    self.len = 0;
                }
                let entry = self.sets.entry(key).or_default();
                entry.push((labels.map(Box::from), Handles::new(families, labels)));
                self.len += 1;
                entry.len() - 1
            }
        };
        &mut self.sets.get_mut(&key).expect("just found or inserted")[at].1
    }
}

impl Handles {
    fn new(m: &Metrics, [route, model, version, consumer, _upstream, class]: [&str; 6]) -> Handles {
        let code = match class {
            "1xx" => "1xx",
            "2xx" => "2xx",
            "3xx" => "3xx",
            "4xx" => "4xx",
            _ => "5xx",
        };
        Handles {
            requests: m
                .requests
                .get_or_create(&RequestLabels {
                    route: route.into(),
                    model: model.into(),
                    model_version: version.into(),
                    consumer: consumer.into(),
                    code,
                })
                .clone(),
            duration: m
                .request_duration
                .get_or_create(&DurationLabels { route: route.into(), model: model.into(), model_version: version.into() })
                .clone(),
            bytes_in: None,
            bytes_out: None,
            upstream: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ModelLabels;

    #[test]
    fn only_names_an_upstream_answered_for_become_labels() {
        let l = ModelLabels::default();
        // Refused or made up before any upstream answered: `other` (a version-less path keeps `-`).
        assert_eq!(l.labels("digits", Some("1"), false), ("other", "other"));
        assert_eq!(l.labels("digits", None, false), ("other", "-"));
        // Confirmed once: a label from then on, for refused requests too; an unconfirmed version stays `other`.
        assert_eq!(l.labels("digits", Some("1"), true), ("digits", "1"));
        assert_eq!(l.labels("digits", Some("1"), false), ("digits", "1"));
        assert_eq!(l.labels("digits", None, false), ("digits", "-"));
        assert_eq!(l.labels("digits", Some("x-random"), false), ("digits", "other"));
        // Bounded per model even when confirmed.
        for v in 0..super::VERSION_LABELS + 10 {
            l.labels("digits", Some(&format!("v{v}")), true);
        }
        assert_eq!(l.labels("digits", Some("one-more"), true), ("digits", "other"));
    }
}
