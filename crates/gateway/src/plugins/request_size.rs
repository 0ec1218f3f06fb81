//! `request_size`: rejects bodies over a size (413) and header sets over a count or total size (431).
//!
//! The body limit is checked twice: at once against `Content-Length`, and while streaming, by counting bytes, so
//! a chunked or lying client cannot slip past it. Nothing is buffered.

use http::request;
use serde::Deserialize;

use modelgate_config::model::PluginSpec;
use modelgate_config::{ByteSize, ConfigError};

use modelgate_pipeline::plugin::{Flow, Plugin, settings};
use modelgate_pipeline::{Ctx, GatewayError};

pub const NAME: &str = "request_size";

/// Settings of `request_size`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeConfig {
    /// Largest request body accepted, e.g. `8MiB`. Unset: no body limit.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// Most request headers accepted. Default `100`.
    #[serde(default = "default_count")]
    pub max_header_count: usize,
    /// Largest total size of header names and values, e.g. `32KiB`. Default `32KiB`.
    #[serde(default = "default_header_bytes")]
    pub max_header_bytes: ByteSize,
}

pub struct RequestSize {
    max_body: Option<u64>,
    max_header_count: usize,
    max_header_bytes: usize,
}

fn default_count() -> usize {
    100
}
fn default_header_bytes() -> ByteSize {
    ByteSize(32 << 10)
}

pub fn build(spec: &PluginSpec) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: RequestSizeConfig = settings(spec)?;
    Ok(Box::new(RequestSize {
        max_body: c.max_body.map(|b| b.0),
        max_header_count: c.max_header_count,
        max_header_bytes: c.max_header_bytes.0 as usize,
    }))
}

// === impl RequestSize ===

impl Plugin for RequestSize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate<'a>(&'a self, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        if req.headers.len() > self.max_header_count {
            return Flow::Reject(GatewayError::HeadersTooLarge { what: "more headers", limit: self.max_header_count });
        }
        let bytes: usize = req.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        if bytes > self.max_header_bytes {
            return Flow::Reject(GatewayError::HeadersTooLarge { what: "header bytes", limit: self.max_header_bytes });
        }
        if let Some(max) = self.max_body {
            let declared = req.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Flow::Reject(GatewayError::PayloadTooLarge { limit: max });
            }
            ctx.limit_body(max);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use modelgate_pipeline::Phase;
    use modelgate_pipeline::testing::{ctx, parts, route, run};

    use super::*;

    fn plugin(settings: &str) -> Box<dyn Plugin> {
        build(&route(&format!("[{{request_size: {settings}}}]"), "").plugins[0]).unwrap()
    }

    async fn validate(p: &dyn Plugin, headers: &[(&str, &str)]) -> (Result<(), &'static str>, Option<u64>) {
        let mut c = ctx(Method::POST, "/x");
        let mut req = parts(Method::POST, "/x", headers);
        (run(p, Phase::Validate, &mut c, &mut req).await.map_err(|e| e.code()), c.body_limit())
    }

    #[tokio::test]
    async fn settings_map_to_413_431_and_a_cap_on_the_streamed_body() {
        let p = plugin("{max_body: 10B, max_header_count: 2, max_header_bytes: 40B}");
        assert_eq!(validate(&*p, &[("content-length", "11")]).await.0, Err("payload_too_large"));
        assert_eq!(validate(&*p, &[("content-length", "10")]).await, (Ok(()), Some(10)), "streamed bytes are counted too");
        assert_eq!(validate(&*p, &[]).await, (Ok(()), Some(10)), "no Content-Length (chunked): counted as it streams");
        assert_eq!(validate(&*p, &[("a", "1"), ("b", "2"), ("c", "3")]).await.0, Err("headers_too_large"));
        assert_eq!(validate(&*p, &[("x-long", &"v".repeat(40))]).await.0, Err("headers_too_large"));
    }

    #[tokio::test]
    async fn defaults_leave_the_body_unlimited() {
        let p = plugin("{}");
        assert_eq!(validate(&*p, &[("content-length", "1000000000")]).await, (Ok(()), None));
        assert!(build(&route("[{request_size: {max_body: 10 parsecs}}]", "").plugins[0]).is_err(), "a bad size is a config error");
    }
}
