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
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod repository;
pub mod spans;
pub mod validate;

pub use repository::Repository;
