//! W3C Trace Context and span export. The gateway continues the caller's trace (`traceparent`) or starts one, and
//! sends upstream a `traceparent` whose parent is the gateway's upstream-call span, so the model server's spans
//! hang under it. With `observability.tracing` set, a sampled request's spans are exported over OTLP when it
//! finishes: a server span `{method} {route}`, a child per phase that ran (authenticate, authorize, read body,
//! admit, validate, route), and a client span `upstream` for the call. `tracestate` passes through untouched.

#![allow(clippy::disallowed_methods, reason = "span timestamps: std instants, mapped to wall time by the telemetry clock")]

use std::sync::Arc;
use std::time::Instant;

use crate::{Clock, Exporter, Kind, Span, TraceParent};
use http::{HeaderMap, HeaderValue};

/// This request's place in a trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    trace_id: u128,
    /// The trace id as hex (the access log's `trace_id`).
    trace_hex: [u8; 32],
    /// The caller's span (0: this trace started here).
    parent: u64,
    /// The gateway's server span.
    span: u64,
    /// The gateway's upstream-call span: the parent the upstream sees.
    upstream_span: u64,
    sampled: bool,
}

/// Phase timings of a sampled request (absent for the others).
#[derive(Debug, Default)]
pub struct Timings {
    /// (phase, started, ended, rejected with this code).
    pub phases: Vec<(&'static str, Instant, Instant, Option<&'static str>)>,
    /// The upstream call: sent, response head received.
    pub upstream: Option<(Instant, Instant)>,
}

impl TraceContext {
    /// Continues a valid `traceparent` (version 00), keeping its sampling decision, or starts a new trace sampled
    /// by `exporter`'s ratio (never, without one). `random` supplies 128 random bits (called twice).
    pub fn from_request(h: &HeaderMap, exporter: Option<&Exporter>, mut random: impl FnMut() -> u128) -> TraceContext {
        let ids = random();
        let (span, upstream_span) = ((ids as u64) | 1, ((ids >> 64) as u64) | 1);
        let (trace_id, parent, sampled) = match TraceParent::from_headers(h) {
            Some(p) => (p.trace_id, p.span_id, p.sampled),
            None => {
                let trace_id = random() | 1;
                (trace_id, 0, exporter.is_some_and(|e| e.sample_root(trace_id)))
            }
        };
        TraceContext { trace_id, trace_hex: crate::hex::<32>(trace_id), parent, span, upstream_span, sampled }
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_hex).unwrap_or("")
    }

    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// `traceparent` for the upstream request: the gateway's upstream-call span is the parent.
    pub fn header(&self) -> HeaderValue {
        TraceParent { trace_id: self.trace_id, span_id: self.upstream_span, sampled: self.sampled }.header()
    }
}

/// What the finished request's spans say about it.
pub struct Finished<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub upstream: Option<&'a str>,
    pub model: &'a str,
    pub version: &'a str,
    pub consumer: Option<&'a str>,
    pub status: u16,
    pub error: Option<&'static str>,
    /// A managed model version's tags (a JSON object), when the gateway chose the version.
    pub model_tags: Option<&'a str>,
}

/// Hands a sampled request's phase and upstream spans to the exporter; the server span is returned, to be
/// emitted when the response body has been sent (or dropped) — see [`ServerSpan`].
pub fn export(exporter: &Arc<Exporter>, t: &TraceContext, started: Instant, timings: &Timings, f: Finished<'_>) -> ServerSpan {
    let clock = Clock::at(started);
    let head = Instant::now();
    let mut server =
        Span::new(t.trace_id, t.span, t.parent, format!("{} {}", f.method, f.route), Kind::Server, clock.wall(started), clock.wall(head))
            .attr("http.request.method", f.method.to_string())
            .attr("url.path", f.path.to_string())
            .attr("http.route", f.route.to_string())
            .attr("http.response.status_code", f.status as i64);
    server.parent_remote = t.parent != 0;
    if f.model != "-" {
        server = server.attr("modelgate.model", f.model.to_string()).attr("modelgate.model_version", f.version.to_string());
    }
    if let Some(tags) = f.model_tags {
        server = server.attr("modelgate.model_tags", tags.to_string());
    }
    if let Some(c) = f.consumer {
        server = server.attr("modelgate.consumer", c.to_string());
    }
    if let Some(u) = f.upstream {
        server = server.attr("modelgate.upstream", u.to_string());
    }
    if f.status >= 500 || f.error.is_some() {
        server.error = Some(f.error.unwrap_or("upstream error").to_string());
    }
    let child_id = |n: usize| t.span ^ ((n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    for (n, (name, from, to, rejected)) in timings.phases.iter().enumerate() {
        let mut s = Span::new(t.trace_id, child_id(n), t.span, *name, Kind::Internal, clock.wall(*from), clock.wall(*to));
        s.error = rejected.map(str::to_string);
        exporter.emit(s);
    }
    if let Some((from, to)) = timings.upstream {
        let mut s = Span::new(t.trace_id, t.upstream_span, t.span, "upstream", Kind::Client, clock.wall(from), clock.wall(to))
            .attr("http.response.status_code", f.status as i64);
        if let Some(u) = f.upstream {
            s = s.attr("modelgate.upstream", u.to_string());
        }
        exporter.emit(s);
    }
    ServerSpan { exporter: exporter.clone(), span: Some(server), clock }
}

/// A sampled request's server span, waiting for the response to finish: it is emitted when dropped — by the
/// response body once its last frame was sent or the client went away — so the span covers the body too.
#[derive(Debug)]
pub struct ServerSpan {
    exporter: Arc<Exporter>,
    span: Option<Span>,
    clock: Clock,
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        if let Some(mut span) = self.span.take() {
            span.end = self.clock.wall(Instant::now());
            self.exporter.emit(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TRACEPARENT;

    #[test]
    fn continues_valid_parents_and_starts_otherwise() {
        let mut n = 0u128;
        let mut rnd = || {
            n += 1;
            n * 0x1234_5678_9abc_def0_1122_3344_5566_7788
        };
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let t = TraceContext::from_request(&h, None, &mut rnd);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled(), "the caller's sampling decision is kept");
        let out = t.header();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"), "this hop is the new parent");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            let t = TraceContext::from_request(&h, None, &mut rnd);
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(!t.sampled(), "no exporter: new traces are not sampled");
            assert_eq!(t.header().len(), 55);
        }
    }
}
