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
    /// The request body, when a plugin of the route asked for it ([`crate::plugins::Plugin::wants_body`]).
    pub body: Option<bytes::Bytes>,
    /// `Inference-Header-Content-Length` of the request, if sent (binary tensor extension).
    pub infer_json_len: Option<usize>,
    /// The body read as an OIP v2 inference request, parsed on first use.
    pub infer: std::sync::OnceLock<crate::oip::Parsed>,
    pub method: http::Method,
    /// The request body's size, when known (`Content-Length` or the buffered body).
    pub bytes_in: Option<u64>,
    /// Microseconds the upstream took to answer (0: not asked).
    pub upstream_us: std::sync::atomic::AtomicU64,
    /// W3C trace context: the caller's trace continued, or a new one.
    pub trace: crate::trace::TraceContext,
    /// Phase and upstream timings, kept only for sampled requests when spans are exported.
    pub timings: Option<Box<crate::trace::Timings>>,
}

impl Ctx {
    /// The buffered body as an OIP v2 inference request (parsed once); `None` when the body was not buffered.
    pub fn infer(&self) -> Option<&crate::oip::Parsed> {
        let body = self.body.as_ref()?;
        Some(self.infer.get_or_init(|| crate::oip::parse(body, self.infer_json_len)))
    }

    /// The normalized request path.
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }
}
