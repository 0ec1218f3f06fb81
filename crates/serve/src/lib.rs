//! The model server (`modelgate serve`): a Triton-style model repository served over the KServe Open Inference
//! Protocol v2, over REST and gRPC.
//!
//! A request's life: [`http`] routes it, parses the typed OIP JSON ([`protocol`]), [`validate`]s it against the
//! model version's metadata, and queues it to that version's instance thread ([`repository`]), which runs the
//! backend from `modelgate-runtime` and answers through a oneshot channel.
//!
//! Not yet here (issue 4): instance count and input/output overrides in
//! `config.yaml`.

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
