//! The model server's spans: a server span per sampled inference, its parent the caller's `traceparent` (the
//! gateway's upstream call), with children for the queue wait and the inference itself (the batch execution it
//! was part of, with the batch size).

#![allow(clippy::disallowed_methods, reason = "span timestamps: std instants, mapped to wall time by the telemetry clock")]

use std::time::Instant;

use modelgate_telemetry::{Clock, Exporter, Kind, Span, TraceParent};

use crate::repository::{Timing, Version};

/// A sampled request's trace, begun when it arrived.
pub struct Trace {
    trace_id: u128,
    parent: u64,
    span: u64,
    arrived: Instant,
}

impl Trace {
    /// `Some` when this request is sampled: its `traceparent` says so, or it starts a trace the ratio picks.
    pub fn begin(exporter: &Exporter, headers: &http::HeaderMap) -> Option<Trace> {
        let (trace_id, parent) = match TraceParent::from_headers(headers) {
            Some(p) if p.sampled => (p.trace_id, p.span_id),
            Some(_) => return None,
            None => {
                let trace_id = modelgate_telemetry::random128() | 1;
                (trace_id, 0)
            }
        };
        if parent == 0 && !exporter.sample_root(trace_id) {
            return None;
        }
        Some(Trace { trace_id, parent, span: (modelgate_telemetry::random128() as u64) | 1, arrived: Instant::now() })
    }

    /// Hands the spans to the exporter.
    pub fn finish(self, exporter: &Exporter, v: &Version, status: u16, timing: Option<Timing>) {
        let clock = Clock::at(self.arrived);
        let mut server = Span::new(
            self.trace_id,
            self.span,
            self.parent,
            format!("infer {}", v.model),
            Kind::Server,
            clock.wall(self.arrived),
            clock.wall(Instant::now()),
        )
        .attr("modelgate.model", v.model.clone())
        .attr("modelgate.model_version", v.version.clone())
        .attr("http.response.status_code", status as i64);
        server.parent_remote = self.parent != 0;
        if status >= 400 {
            server.error = Some(format!("status {status}"));
        }
        if let Some(t) = timing {
            let ids = modelgate_telemetry::random128();
            exporter.emit(Span::new(
                self.trace_id,
                (ids as u64) | 1,
                self.span,
                "queue",
                Kind::Internal,
                clock.wall(t.enqueued),
                clock.wall(t.started),
            ));
            exporter.emit(
                Span::new(
                    self.trace_id,
                    ((ids >> 64) as u64) | 1,
                    self.span,
                    "inference",
                    Kind::Internal,
                    clock.wall(t.compute),
                    clock.wall(t.done),
                )
                .attr("modelgate.batch_size", t.batch_size as i64),
            );
        }
        exporter.emit(server);
    }
}
