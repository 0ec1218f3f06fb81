//! Per-request state that phases read and write.
//!
//! What the gateway knows about the request (id, client, path, matched route) is set before any plugin runs and is
//! read-only to plugins. Plugins leave their results through a few narrow, plugin-neutral methods: who is calling
//! ([`Ctx::set_principal`]), the upstream to use ([`Ctx::set_upstream`]), a cap on the streamed body
//! ([`Ctx::limit_body`]), guards to hold until the response has been sent ([`Ctx::hold`]) and headers for the
//! response ([`Ctx::add_response_header`]). A plugin's own per-request state stays in the plugin's future or is
//! derived again in a later phase; it never becomes a field here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use modelgate_telemetry::request::{Timings, TraceContext};
use modelgate_upstream::Upstream;
use tokio::time::Instant;

use crate::grpc::Call;
use crate::oip::Parsed;
use crate::principal::Principal;
use crate::slot::Slot;

/// A header a plugin asked to add to the response.
type Header = (HeaderName, HeaderValue);

/// One request's state, from match to log.
pub struct Ctx {
    request_id: HeaderValue,
    client_addr: SocketAddr,
    client_ip: HeaderValue,
    tls: bool,
    started: Instant,
    method: http::Method,
    /// The normalized path and the query: what routes matched, what policies see and what is forwarded.
    target: String,
    /// The forwarded target after the route's rewrite (`strip_prefix`, `upstream_path`), when it has one.
    rewritten: Option<Box<str>>,
    /// Length of the path part of `target`.
    path_len: usize,
    route: Option<usize>,
    upstream: Option<Arc<Upstream>>,
    body_limit: Option<u64>,
    principal: Option<Arc<Principal>>,
    held: Vec<Slot>,
    /// Headers for the response: the first two inline (a rate limit's pair), more spill into a Vec, so the common
    /// case allocates nothing per request.
    response_headers: ([Option<Header>; 2], Vec<Header>),
    body: Option<Bytes>,
    infer_json_len: Option<usize>,
    infer: OnceLock<Parsed>,
    /// The request is a gRPC call (`content-type: application/grpc…`): errors are answered as gRPC statuses.
    grpc: bool,
    client_cert: Option<Arc<crate::peer::ClientCert>>,
    /// An OIP gRPC call's first message, read before authorize: the model, version and tensors it names.
    call: Option<Box<Call>>,
    /// The version of a managed model (`models`) the route step chose, and the target forwarded to it.
    routed: Option<(Arc<Routed>, Box<str>)>,
    /// The version a REST request pins with `x-model-version` (managed models only; the path's `/versions/` wins).
    version_header: Option<Box<str>>,
    bytes_in: Option<u64>,
    upstream_us: AtomicU64,
    trace: TraceContext,
    timings: Option<Box<Timings>>,
}

/// A version of a managed model chosen for a request: the version label and its tags as the access log shows
/// them. Built once per version and config, shared by the requests routed to it.
#[derive(Debug)]
pub struct Routed {
    pub version: Arc<str>,
    /// The version's `tags` as a JSON object (`{}` when none).
    pub tags_json: Box<str>,
    /// Chosen by the request (a `/versions/{v}` path or the `x-model-version` header), not by the split.
    pub pinned: bool,
    /// The version's SLO statistics (counted for split requests only).
    pub stats: Arc<crate::slo::VersionStats>,
    /// The version's path prefix on its upstream (`/v2/models/{m}/versions/{v}` by default): its metadata
    /// endpoint, and what the forwarded target starts with.
    pub prefix: Box<str>,
}

/// What the gateway knows of a request when it arrives.
pub struct Arrival {
    /// `x-request-id`: the client's if well-formed, else generated.
    pub request_id: HeaderValue,
    pub client_addr: SocketAddr,
    /// The client's IP rendered as a header value (once per connection).
    pub client_ip: HeaderValue,
    /// The client connected over TLS.
    pub tls: bool,
    /// The request is a gRPC call ([`crate::grpc::is_grpc`]).
    pub grpc: bool,
    /// The connection's verified client certificate (mTLS).
    pub client_cert: Option<Arc<crate::peer::ClientCert>>,
    pub method: http::Method,
    /// The request body's size, when the client declared it.
    pub bytes_in: Option<u64>,
    /// W3C trace context: the caller's trace continued, or a new one.
    pub trace: TraceContext,
    /// Kept only for sampled requests when spans are exported.
    pub timings: Option<Box<Timings>>,
}

// === impl Ctx ===

impl Ctx {
    pub fn new(a: Arrival) -> Ctx {
        Ctx {
            request_id: a.request_id,
            client_addr: a.client_addr,
            client_ip: a.client_ip,
            tls: a.tls,
            started: Instant::now(),
            method: a.method,
            target: String::new(),
            rewritten: None,
            path_len: 0,
            route: None,
            upstream: None,
            body_limit: None,
            principal: None,
            held: Vec::new(),
            response_headers: ([None, None], Vec::new()),
            body: None,
            infer_json_len: None,
            infer: OnceLock::new(),
            grpc: a.grpc,
            client_cert: a.client_cert,
            call: None,
            routed: None,
            version_header: None,
            bytes_in: a.bytes_in,
            upstream_us: AtomicU64::new(0),
            trace: a.trace,
            timings: a.timings,
        }
    }

    // --- what the request is (read-only to plugins) ---

    /// `x-request-id`, returned on every response.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }
    /// The client's IP as a header value.
    pub fn client_ip(&self) -> &HeaderValue {
        &self.client_ip
    }
    /// The client connected over TLS (`X-Forwarded-Proto: https`).
    pub fn client_tls(&self) -> bool {
        self.tls
    }
    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }
    pub fn method(&self) -> &http::Method {
        &self.method
    }
    /// The normalized request path.
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }
    /// The normalized path and the query, as forwarded.
    pub fn target(&self) -> &str {
        &self.target
    }
    /// Index of the matched route in the snapshot (`None` before match, or when nothing matched).
    pub fn route(&self) -> Option<usize> {
        self.route
    }
    /// The request body's size, when known (declared, or the buffered body's).
    pub fn bytes_in(&self) -> Option<u64> {
        self.bytes_in
    }
    /// The request is a gRPC call: the gateway's errors are answered as gRPC statuses.
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }
    /// The client's verified TLS certificate, when the connection presented one (mTLS).
    pub fn client_cert(&self) -> Option<&crate::peer::ClientCert> {
        self.client_cert.as_deref()
    }
    /// The OIP gRPC call's first message, when the request is one.
    pub fn grpc_call(&self) -> Option<&Call> {
        self.call.as_deref()
    }
    /// The model and version the request is for: from an OIP gRPC call's message, or from the path (REST).
    pub fn model_target(&self) -> (Option<&str>, Option<&str>) {
        match &self.call {
            Some(call) => call.target(),
            None => match crate::model::model_target(self.path()) {
                (Some(m), None) => (Some(m), self.version_header.as_deref()),
                t => t,
            },
        }
    }
    /// Records the version a request pins with its `x-model-version` header, which [`Ctx::model_target`] then
    /// returns when the path names none (so policy rules' `versions` decide who may pin).
    pub fn pin_version(&mut self, version: &str) {
        self.version_header = Some(version.into());
    }
    /// Whether the request runs a model: `POST …/infer` (REST) or a gRPC `ModelInfer`/`ModelStreamInfer`.
    pub fn is_inference(&self) -> bool {
        match &self.call {
            Some(call) => call.rpc.is_infer(),
            None => self.method == http::Method::POST && self.path().ends_with("/infer"),
        }
    }
    /// The request's place in a trace.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    // --- what plugins decide ---

    /// Who is calling; set in the authenticate phase.
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        self.principal.as_ref()
    }
    pub fn set_principal(&mut self, p: Arc<Principal>) {
        self.principal = Some(p);
    }
    /// The upstream the request goes to: the route's, unless a route-phase plugin replaced it.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.upstream.as_ref()
    }
    pub fn set_upstream(&mut self, up: Arc<Upstream>) {
        self.upstream = Some(up);
    }
    /// The managed model version the route step chose (`models`).
    pub fn routed(&self) -> Option<&Arc<Routed>> {
        self.routed.as_ref().map(|(r, _)| r)
    }
    /// What is forwarded: the target with a managed version's path prefix in place of the first `replaced` bytes
    /// of the path, else the target.
    pub fn forward_target(&self) -> &str {
        match (&self.routed, &self.rewritten) {
            (Some((_, t)), _) if !t.is_empty() => t,
            (_, Some(t)) => t,
            _ => &self.target,
        }
    }
    /// Forwards `prefix` in place of the first `strip` bytes of the path (the route's `strip_prefix` and
    /// `upstream_path`); what is left of the path starts with `/` (an empty rest is `/`), the query stays.
    pub fn rewrite_path(&mut self, strip: usize, prefix: &str) {
        let Some(rest) = self.target.get(strip.min(self.path_len)..) else { return };
        let mut t = String::with_capacity(prefix.len() + rest.len() + 1);
        t.push_str(prefix);
        if !rest.starts_with('/') {
            t.push('/');
        }
        t.push_str(rest);
        self.rewritten = Some(t.into_boxed_str());
    }
    /// Sends the request to `version` at `upstream`, forwarding `prefix` in place of the first `replaced` bytes of
    /// the target (`replaced == 0` keeps the target as it is: a gRPC call).
    pub fn route_to_version(&mut self, version: Arc<Routed>, upstream: Arc<Upstream>, replaced: usize, prefix: &str) {
        let forward = if replaced == 0 || replaced > self.path_len {
            Box::from("")
        } else {
            let mut t = String::with_capacity(prefix.len() + self.target.len() - replaced);
            t.push_str(prefix);
            t.push_str(&self.target[replaced..]);
            t.into_boxed_str()
        };
        self.routed = Some((version, forward));
        self.upstream = Some(upstream);
    }
    /// The most bytes the streamed request body may carry (the smallest cap any plugin set).
    pub fn body_limit(&self) -> Option<u64> {
        self.body_limit
    }
    /// Caps the streamed request body at `max` bytes (validate phase); the smallest cap wins.
    pub fn limit_body(&mut self, max: u64) {
        self.body_limit = Some(self.body_limit.map_or(max, |l| l.min(max)));
    }
    /// Keeps `slot` taken until the response has been sent or the client has gone.
    pub fn hold(&mut self, slot: Slot) {
        self.held.push(slot);
    }
    /// Gives back every slot held so far (a later limit refused the request).
    pub fn release_held(&mut self) {
        self.held.clear();
    }
    /// Adds a header to the response, gateway-made errors included (e.g. `RateLimit`); set before respond.
    pub fn add_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        let (inline, spill) = &mut self.response_headers;
        match inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((name, value)),
            None => spill.push((name, value)),
        }
    }

    // --- the request body, when a plugin asked for it ---

    /// The buffered request body ([`crate::plugin::Plugin::wants_body`]); `None` when it streams.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }
    /// The buffered body as an OIP v2 inference request (parsed once); `None` when the body was not buffered.
    pub fn infer(&self) -> Option<&Parsed> {
        if let Some(call) = &self.call {
            return call.infer.as_ref();
        }
        let body = self.body.as_ref()?;
        Some(self.infer.get_or_init(|| crate::oip::parse(body, self.infer_json_len)))
    }

    /// Replaces the buffered body (a plugin rewrote it, e.g. redaction); it is parsed again on next use. The bytes
    /// the client sent ([`Ctx::bytes_in`]) stay as they were.
    pub fn replace_body(&mut self, body: Bytes) {
        self.body = Some(body);
        self.infer = OnceLock::new();
    }

    // --- for the gateway that drives the phases ---

    /// Records the match: the normalized target (path, then `?query`), its path length and the route.
    pub fn matched(&mut self, target: String, path_len: usize, route: usize, upstream: Option<Arc<Upstream>>) {
        self.target = target;
        self.path_len = path_len;
        self.route = Some(route);
        self.upstream = upstream;
    }
    /// Removes every query parameter named in `names` from the forwarded target (a credential read from the query,
    /// which the upstream must not receive). Names are compared as sent, not percent-decoded.
    pub fn remove_query_params(&mut self, names: &[String]) {
        let Some(query) = self.target.get(self.path_len + 1..) else { return };
        let named = |pair: &&str| names.iter().any(|n| pair.split_once('=').map_or(*pair, |(k, _)| k) == n);
        if !query.split('&').any(|p| named(&p)) {
            return;
        }
        let mut target = String::with_capacity(self.target.len());
        target.push_str(&self.target[..self.path_len]);
        for (i, pair) in query.split('&').filter(|p| !p.is_empty() && !named(p)).enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(pair);
        }
        self.target = target;
    }
    /// Records an OIP gRPC call's first message (read after authenticate, before authorize).
    pub fn set_grpc_call(&mut self, call: Call) {
        self.call = Some(Box::new(call));
    }
    /// Records the buffered body and its `Inference-Header-Content-Length`.
    pub fn set_body(&mut self, body: Bytes, infer_json_len: Option<usize>) {
        self.bytes_in = Some(body.len() as u64);
        self.body = Some(body);
        self.infer_json_len = infer_json_len;
    }
    /// Phase and upstream timings, kept only for sampled requests when spans are exported.
    pub fn timings(&self) -> Option<&Timings> {
        self.timings.as_deref()
    }
    pub fn timings_mut(&mut self) -> Option<&mut Timings> {
        self.timings.as_deref_mut()
    }
    /// Microseconds the upstream took to answer (0: not asked).
    pub fn upstream_us(&self) -> u64 {
        self.upstream_us.load(Ordering::Relaxed)
    }
    /// Records how long the upstream took (through `&self`: the exchange borrows the context).
    pub fn set_upstream_us(&self, us: u64) {
        self.upstream_us.store(us, Ordering::Relaxed);
    }
    /// The slots held, to move into the response body.
    pub fn take_held(&mut self) -> Vec<Slot> {
        std::mem::take(&mut self.held)
    }
    /// The headers plugins asked to add to the response, in the order they were added.
    pub fn response_headers(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        let (inline, spill) = &self.response_headers;
        inline.iter().flatten().chain(spill)
    }
    /// Moves the headers plugins asked to add onto the response (the respond phase: no copies).
    pub fn move_response_headers(&mut self, headers: &mut http::HeaderMap) {
        let (inline, spill) = &mut self.response_headers;
        for (name, value) in inline.iter_mut().filter_map(Option::take).chain(spill.drain(..)) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    pub(crate) fn ctx() -> Ctx {
        Ctx::new(Arrival {
            request_id: HeaderValue::from_static("r1"),
            client_addr: "127.0.0.1:9".parse().unwrap(),
            client_ip: HeaderValue::from_static("127.0.0.1"),
            tls: false,
            grpc: false,
            client_cert: None,
            method: http::Method::POST,
            bytes_in: None,
            trace: TraceContext::from_request(&http::HeaderMap::new(), None, || 7),
            timings: None,
        })
    }

    #[test]
    fn response_headers_keep_their_order_past_the_inline_ones() {
        let mut c = ctx();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            c.add_response_header(HeaderName::from_static(name), HeaderValue::from(i));
        }
        let got: Vec<String> = c.response_headers().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect();
        assert_eq!(got, ["a=0", "b=1", "c=2"]);
    }

    #[test]
    fn the_smallest_body_cap_wins() {
        let mut c = ctx();
        c.limit_body(100);
        c.limit_body(10);
        c.limit_body(50);
        assert_eq!(c.body_limit(), Some(10));
    }

    #[test]
    fn held_slots_go_back_when_released_or_taken_and_dropped() {
        let counter = Arc::new(AtomicU64::new(2));
        let mut c = ctx();
        c.hold(Slot::taken(counter.clone()));
        c.hold(Slot::taken(counter.clone()));
        c.release_held();
        assert_eq!(counter.load(Ordering::Acquire), 0);
        counter.store(1, Ordering::Release);
        c.hold(Slot::taken(counter.clone()));
        let held = c.take_held();
        assert_eq!(counter.load(Ordering::Acquire), 1, "moved, not dropped");
        drop(held);
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn named_query_parameters_are_removed_from_the_target() {
        let names = ["apikey".to_string()];
        for (given, forwarded) in [
            ("/m?apikey=k", "/m"),
            ("/m?a=1&apikey=k&b=2", "/m?a=1&b=2"),
            ("/m?apikey=k&apikey=j&a=1", "/m?a=1"),
            ("/m?apikey", "/m"),
            ("/m?apikeys=k&x=apikey", "/m?apikeys=k&x=apikey"),
            ("/m", "/m"),
        ] {
            let mut c = crate::testing::ctx(http::Method::GET, given);
            c.remove_query_params(&names);
            assert_eq!(c.target(), forwarded, "{given}");
            assert_eq!(c.path(), "/m");
        }
    }

    #[tokio::test]
    async fn the_path_is_the_target_without_its_query() {
        let mut c = ctx();
        assert_eq!(c.path(), "");
        let config = modelgate_config::from_yaml(
            "upstreams:\n  u: { targets: [\"http://127.0.0.1:1\"] }\nroutes:\n  - { name: r, match: { path_prefix: / }, upstream: u }\n",
        )
        .unwrap();
        let up = Upstream::new(config.upstreams["u"].clone());
        c.matched("/v2/models/m/infer?x=1".into(), "/v2/models/m/infer".len(), 3, Some(up));
        assert_eq!((c.path(), c.target(), c.route()), ("/v2/models/m/infer", "/v2/models/m/infer?x=1", Some(3)));
        assert!(c.infer().is_none(), "nothing buffered");
        c.set_body(Bytes::from_static(br#"{"inputs":[]}"#), None);
        assert_eq!(c.bytes_in(), Some(13));
        assert!(c.infer().is_some());
    }
}
