//! How the gateway reaches model services, below the request pipeline: an [`upstream::Upstream`] is a set of
//! targets with load balancing, passive ejection and active [`health`] checks, reached over HTTP/1.1 through our
//! own keep-alive [`pool`] or over HTTP/2 through hyper-util's client, in clear or over [`tls`] for `https://` targets. [`body`] is the request body sent to them
//! (a replayable buffer or the client's counted stream). [`fetch`] GETs small JSON documents from other services
//! (IdP discovery and keys, AWS STS, model metadata).
//!
//! The pipeline (`modelgate-pipeline`) holds the chosen upstream in each request's context; the gateway's proxy
//! step sends through it.

#![deny(unsafe_code)]

pub mod body;
pub mod fetch;
pub mod health;
pub mod pool;
pub mod tls;
pub mod upstream;

pub use upstream::{Http2Client, Registry, Transport, Upstream};
