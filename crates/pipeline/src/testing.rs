//! Helpers for plugin unit tests in the crates above (`auth`, `limits`, the gateway's own plugins): a route built
//! from YAML, a request context matched to it, request parts, and a phase run to its outcome. Not used by the
//! gateway itself. Needs a tokio runtime (the route's upstream is a real `Upstream`, never contacted).

use http::{HeaderValue, Method, request};
use modelgate_config::Config;
use modelgate_config::model::RouteConfig;
use modelgate_telemetry::request::TraceContext;
use modelgate_upstream::Upstream;

use crate::context::{Arrival, Ctx};
use crate::error::GatewayError;
use crate::plugin::{Flow, Phase, Plugin};

/// The route `r` of a config whose only route takes `plugins` (a YAML flow list such as
/// `[{request_size: {max_body: 10B}}]`) in front of an upstream that is never contacted; `extra` is more top-level
/// YAML (an `identity:` block, say).
pub fn route(plugins: &str, extra: &str) -> RouteConfig {
    config(plugins, extra).routes.into_iter().next().expect("one route")
}

/// The whole config [`route`] builds its route from (for the identity or limit services a plugin needs).
pub fn config(plugins: &str, extra: &str) -> Config {
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"http://127.0.0.1:9\"] }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, plugins: {plugins} }}\n{extra}"
    );
    modelgate_config::from_yaml(&yaml).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A context for a request from 127.0.0.1 to `target` (path and query), matched to route 0.
pub fn ctx(method: Method, target: &str) -> Ctx {
    let mut ctx = Ctx::new(Arrival {
        request_id: HeaderValue::from_static("test-request"),
        client_addr: "127.0.0.1:40000".parse().expect("an address"),
        client_ip: HeaderValue::from_static("127.0.0.1"),
        tls: false,
        grpc: false,
        client_cert: None,
        method,
        bytes_in: None,
        trace: TraceContext::from_request(&http::HeaderMap::new(), None, || 1),
        timings: None,
    });
    let config = modelgate_config::from_yaml(
        "upstreams:\n  u: { targets: [\"http://127.0.0.1:9\"] }\nroutes:\n  - { name: r, match: { path_prefix: / }, upstream: u }\n",
    )
    .expect("a valid config");
    let path_len = target.find('?').unwrap_or(target.len());
    ctx.matched(target.to_string(), path_len, 0, Some(Upstream::new(config.upstreams["u"].clone())));
    ctx
}

/// Request parts with `headers`.
pub fn parts(method: Method, target: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = http::Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("a valid request").into_parts().0
}

/// Runs one phase of `plugin` to its outcome.
pub async fn run(plugin: &dyn Plugin, phase: Phase, ctx: &mut Ctx, parts: &mut request::Parts) -> Result<(), GatewayError> {
    match phase.call(plugin, ctx, parts) {
        Flow::Continue => Ok(()),
        Flow::Reject(e) => Err(e),
        Flow::Wait(f) => f.await,
    }
}

/// Makes `plugin`'s changes for the upstream on `parts`, as the gateway does when it forwards.
pub fn forward(plugin: &dyn Plugin, ctx: &Ctx, parts: &mut request::Parts) {
    let mut edits = crate::HeaderEdits::default();
    plugin.upstream_request(ctx, parts, &mut edits);
    edits.apply(&mut parts.headers);
}
