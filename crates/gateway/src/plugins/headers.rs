//! `headers`: adds, replaces or removes request headers (toward the upstream) and response headers (toward the
//! client). Header names and values are parsed once at load.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, request, response};
use serde::Deserialize;

use modelgate_config::ConfigError;
use modelgate_config::model::PluginSpec;

use modelgate_pipeline::Ctx;
use modelgate_pipeline::edits::HeaderEdits as Edits;
use modelgate_pipeline::plugin::{Flow, Plugin, settings};

pub const NAME: &str = "headers";

/// Settings of `headers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Changes to the request sent upstream.
    #[serde(default)]
    pub request: HeaderEdits,
    /// Changes to the response sent to the client (gateway errors included).
    #[serde(default)]
    pub response: HeaderEdits,
}

/// One direction's edits; `remove` runs before `set`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers to set, replacing any existing value. Values may use `${ENV}`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

struct Compiled {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

pub struct Headers {
    request: Compiled,
    response: Compiled,
}

pub fn build(spec: &PluginSpec) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: HeadersConfig = settings(spec)?;
    Ok(Box::new(Headers { request: compile(spec, "request", c.request)?, response: compile(spec, "response", c.response)? }))
}

fn compile(spec: &PluginSpec, side: &str, e: HeaderEdits) -> Result<Compiled, ConfigError> {
    let err = |sub: String, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{side}.{sub}", spec.origin.path), msg);
    let mut set = Vec::new();
    for (name, value) in e.set {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| err(format!("set.{name}"), "invalid header name".into()))?;
        // The value may be a secret: never echo it.
        let v =
            HeaderValue::from_str(&value).map_err(|_| err(format!("set.{name}"), "invalid header value (control characters?)".into()))?;
        set.push((n, v));
    }
    let mut remove = Vec::new();
    for (i, name) in e.remove.iter().enumerate() {
        remove.push(
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| err(format!("remove[{i}]"), format!("invalid header name {name:?}")))?,
        );
    }
    Ok(Compiled { set, remove })
}

// === impl Headers ===

impl Compiled {
    /// The request side: recorded for the gateway to apply (or `modelgate authz` to answer).
    fn record(&self, edits: &mut Edits) {
        for n in &self.remove {
            edits.remove(n);
        }
        for (n, v) in &self.set {
            edits.set(n.clone(), v.clone());
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
    }
}

impl Plugin for Headers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }

    fn upstream_request(&self, _ctx: &Ctx, _req: &request::Parts, edits: &mut Edits) {
        self.request.record(edits);
    }

    fn response(&self, _ctx: &Ctx, resp: &mut response::Parts) {
        self.response.apply(&mut resp.headers);
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use modelgate_pipeline::testing::{ctx, forward, parts, route};

    use super::*;

    #[tokio::test]
    async fn edits_remove_then_set_on_the_request_upstream_and_the_response() {
        let spec = "[{headers: {request: {remove: [x-debug, authorization], set: {authorization: Bearer upstream-token}}, response: {remove: [server], set: {x-frame-options: DENY}}}}]";
        let p = build(&route(spec, "").plugins[0]).unwrap();
        let c = ctx(Method::GET, "/x");
        let mut req = parts(Method::GET, "/x", &[("x-debug", "1"), ("authorization", "Bearer client"), ("x-kept", "1")]);
        forward(&*p, &c, &mut req);
        assert!(req.headers.get("x-debug").is_none());
        assert_eq!(req.headers["authorization"], "Bearer upstream-token", "the client's credential is replaced");
        assert_eq!(req.headers["x-kept"], "1");
        let (mut resp, ()) = http::Response::builder().header("server", "uvicorn").body(()).unwrap().into_parts();
        p.response(&c, &mut resp);
        assert!(resp.headers.get("server").is_none());
        assert_eq!(resp.headers["x-frame-options"], "DENY");
    }

    #[tokio::test]
    async fn a_bad_header_name_or_value_is_a_config_error() {
        assert!(build(&route("[{headers: {request: {set: {\"bad name\": x}}}}]", "").plugins[0]).is_err());
        assert!(build(&route("[{headers: {response: {remove: [\"bad name\"]}}}]", "").plugins[0]).is_err());
    }
}
