//! Per-request state that phases read and write.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::identity::Principal;
use crate::upstream::Upstream;

/// One request's state, from match to log.
pub struct Ctx {
    /// `x-request-id`: the client's if well-formed, else generated. Returned on every response.
    pub request_id: HeaderValue,
    pub client_addr: SocketAddr,
    /// The client's IP rendered as a header value (once per connection).
    pub client_ip: HeaderValue,
    pub started: Instant,
    /// Index of the matched route in the snapshot.
    pub route: Option<usize>,
    /// The upstream the request goes to; the route's by default, plugins may replace it in the route phase.
    pub upstream: Option<Arc<Upstream>>,
    /// Streamed request body limit in bytes, set by validate-phase plugins.
    pub body_limit: Option<u64>,
    /// The normalized path and the query: what routes matched, what policies see and what is forwarded.
    pub target: String,
    /// Length of the path part of `target`.
    pub path_len: usize,
    /// Who is calling, set in the authenticate phase.
    pub principal: Option<Arc<Principal>>,
    /// `RateLimit-Policy` and `RateLimit` values for the response, set in the admit phase.
    pub rate_limit: Option<(HeaderValue, HeaderValue)>,
    /// Concurrency slots held by this request; they move into the response body, and are given back when it has
    /// been sent or the client has gone.
    pub slots: Vec<crate::limits::Slot>,
}

impl Ctx {
    /// The normalized request path.
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }
}
