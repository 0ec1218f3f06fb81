//! What modelgate records about its work, shared by the gateway and the model server. No crate below this one
//! but `config`; everything that handles requests records through it.
//!
//! - [`export`]: W3C `traceparent` parsing and OpenTelemetry span export over OTLP (re-exported at the root).
//! - [`request`]: one gateway request's trace context and phase timings, turned into spans when it finishes.
//! - [`metrics`]: the gateway's Prometheus metric families (the model server keeps its own in `serve`).
//! - [`audit`]: the hash-chained audit log and its verifier.
//! - [`jsonline`]: JSON log lines written straight into a buffer (access and audit logs).
//! - [`live`]: rolling per-route and per-model-version rates, error ratios and latencies for the admin views.

#![deny(unsafe_code)]

pub mod audit;
pub mod export;
pub mod jsonline;
pub mod live;
pub mod metrics;
pub mod request;

pub use export::*;
