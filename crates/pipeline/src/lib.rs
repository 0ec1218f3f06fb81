//! The request pipeline's vocabulary, shared by every crate that takes part in a request: the [`plugin::Plugin`]
//! trait with its fixed phases (authenticate → authorize → admit → validate → route → proxy → respond → log) and
//! [`plugin::Flow`], the per-request [`context::Ctx`] with the caller's [`principal::Principal`], the errors the
//! gateway answers with and their one rendering ([`error`]), the response [`body::Body`], and the request helpers
//! every phase needs: [`path`] normalization, the [`model`] a path targets, [`oip`] parsing of inference bodies,
//! [`request_id`], the connection's [`peer::Peer`] and RAII in-flight [`slot::Slot`]s.
//!
//! It depends on `config`, `telemetry` and `upstream` only. Plugins live above it (`auth`, `limits`, and the
//! gateway's own), and the gateway drives the phases (`modelgate_gateway::pipeline`).

#![deny(unsafe_code)]

pub mod body;
pub mod context;
pub mod edits;
pub mod error;
pub mod grpc;
pub mod model;
pub mod oip;
pub mod path;
pub mod peer;
pub mod plugin;
pub mod principal;
pub mod request_id;
pub mod slo;
pub mod slot;
pub mod testing;

pub use body::Body;
pub use context::Ctx;
pub use edits::HeaderEdits;
pub use error::GatewayError;
pub use plugin::{Flow, Phase, Plugin};
