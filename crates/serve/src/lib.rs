//! The model server (`modelgate serve`): a Triton-style model repository served over the KServe Open Inference
//! Protocol v2, over REST and gRPC.
//!
//! A request's life: [`http`] (or [`grpc`]) routes it, parses the typed OIP JSON ([`protocol`]) or binary tensors
//! ([`binary`]), [`validate`]s it against the model version's metadata, and queues it to that version's bounded
//! queue ([`repository`]); an instance thread forms a dynamic batch, runs the backend from `modelgate-runtime` on one
//! of the version's model copies (`instances` in `config.yaml`, with input/output overrides: [`config`]) and answers
//! each request through a oneshot channel. [`metrics`] and [`spans`] record queue and compute time per version.

#![deny(unsafe_code)]

pub mod binary;
pub mod config;
pub mod doctor;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod repository;
pub mod spans;
pub mod validate;

pub use config::Host;
pub use repository::Repository;

/// Looks for onnxruntime's library once (`modelgate_runtime::ort_lib`), logs one line with what was found (or why
/// not, and how to get it), and returns the host every model's defaults are decided for. Blocking (it may run
/// `python3`).
pub fn detect_host(ort_lib: Option<&std::path::Path>) -> Host {
    let discovery = modelgate_runtime::ort_lib::discover(ort_lib);
    match &discovery.loaded {
        Some(_) => tracing::info!("{}", discovery.summary()),
        None => tracing::warn!("{}", discovery.summary()),
    }
    Host::detect(discovery.loaded.is_some())
}
