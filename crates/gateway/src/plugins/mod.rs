//! The plugin registry: every plugin by name, built from its config once per config load. The plugins of other
//! crates (`auth`, `policy` from `modelgate-auth`; `rate_limit`, `concurrency` from `modelgate-limits`) are
//! registered here beside the gateway's own, which live in this directory, one file each.
//!
//! Adding a plugin: its file (config struct, `build`, handler), one line in [`build`] and one name in [`NAMES`].

use modelgate_auth::{authenticate, identity, policy};
use modelgate_config::ConfigError;
use modelgate_config::model::{PluginSpec, RouteConfig};
use modelgate_limits::{concurrency, rate_limit};
use modelgate_pipeline::Plugin;

pub mod guard;
pub mod headers;
pub mod json_schema;
pub mod request_size;
pub mod tensor_validation;

/// Every plugin name, in the order the docs list them.
pub const NAMES: [&str; 9] = [
    authenticate::NAME,
    policy::NAME,
    rate_limit::NAME,
    concurrency::NAME,
    request_size::NAME,
    tensor_validation::NAME,
    json_schema::NAME,
    guard::NAME,
    headers::NAME,
];

/// What a plugin may look at while it is built: the snapshot's services and its own route.
pub struct BuildCtx<'a> {
    pub identity: &'a identity::Services,
    pub limits: &'a modelgate_limits::store::Services,
    pub route: &'a RouteConfig,
    /// The gateway's metric families (plugins keep handles to their counters).
    pub metrics: &'a std::sync::Arc<modelgate_telemetry::metrics::Metrics>,
    /// Models whose versions the gateway routes between (`models`).
    pub managed_models: &'a [&'a str],
}

/// Builds a plugin from its config. The registry: one line per plugin.
pub fn build(spec: &PluginSpec, b: &BuildCtx) -> Result<Box<dyn Plugin>, ConfigError> {
    let on_route = |name: &str| b.route.plugins.iter().any(|p| p.name == name);
    match spec.name.as_str() {
        request_size::NAME => request_size::build(spec),
        headers::NAME => headers::build(spec),
        authenticate::NAME => authenticate::build(spec, b.identity, b.route, on_route(policy::NAME), b.metrics),
        policy::NAME => policy::build(spec, b.identity, b.route, on_route(authenticate::NAME), b.metrics, b.managed_models),
        rate_limit::NAME => rate_limit::build(spec, b.limits, b.route, b.metrics),
        concurrency::NAME => concurrency::build(spec, b.limits, b.route, b.metrics),
        tensor_validation::NAME => tensor_validation::build(spec),
        guard::NAME => guard::build(spec, b.route, b.identity.audit.clone(), b.metrics),
        json_schema::NAME => json_schema::build(spec),
        other => Err(ConfigError::new(&spec.origin.file, &spec.origin.path, format!("unknown plugin {other:?}")).hint(
            match kong_equivalent(other) {
                Some(ours) => format!("did you mean `{ours}`? (Kong's {other} is modelgate's {ours}; known plugins: {})", NAMES.join(", ")),
                None => format!("known plugins: {}", NAMES.join(", ")),
            },
        )),
    }
}

/// The modelgate plugin that does what a Kong plugin of that name does, for configs written by Kong users.
fn kong_equivalent(name: &str) -> Option<&'static str> {
    Some(match name.replace('_', "-").as_str() {
        "key-auth" | "jwt" | "openid-connect" | "basic-auth" | "oauth2" | "oauth2-introspection" | "aws-lambda-auth" => authenticate::NAME,
        "acl" | "opa" => policy::NAME,
        "rate-limiting" | "rate-limiting-advanced" | "ratelimit" | "rate-limit" => rate_limit::NAME,
        "request-size-limiting" | "request-size" => request_size::NAME,
        "request-transformer" | "response-transformer" | "request-transformer-advanced" => headers::NAME,
        "request-validator" => json_schema::NAME,
        "ai-prompt-guard" | "bot-detection" => guard::NAME,
        "concurrency-limit" | "max-connections" => concurrency::NAME,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_plugin_names_point_to_ours() {
        for (kong, ours) in
            [("key-auth", "auth"), ("acl", "policy"), ("rate-limiting", "rate_limit"), ("request-size-limiting", "request_size")]
        {
            assert_eq!(kong_equivalent(kong), Some(ours), "{kong}");
            assert!(NAMES.contains(&ours));
        }
        assert_eq!(kong_equivalent("rate_limiting"), Some("rate_limit"), "underscores too");
        assert_eq!(kong_equivalent("zipkin"), None);
    }
}
