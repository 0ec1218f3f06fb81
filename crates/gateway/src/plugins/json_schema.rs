//! `json_schema` (validate phase): checks JSON request bodies against a JSON Schema (drafts 4, 6, 7, 2019-09,
//! 2020-12, chosen by `$schema`), for upstreams that do not speak OIP v2 (TorchServe-style `/predictions`, custom
//! APIs). A body that is not JSON, or breaks the schema, gets 400 `invalid_request` listing up to five violations
//! with their JSON Pointer; the schema is compiled once when the config loads.

use std::path::Path;

use http::request;
use serde::Deserialize;

use modelgate_config::model::PluginSpec;
use modelgate_config::{ByteSize, ConfigError};

use modelgate_pipeline::plugin::{Flow, Plugin, settings};
use modelgate_pipeline::{Ctx, GatewayError};

pub const NAME: &str = "json_schema";

/// Settings of `json_schema`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaConfig {
    /// The schema, written inline (YAML or JSON syntax).
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// Or a schema file (JSON, relative to the config file).
    #[serde(default)]
    pub schema_file: Option<String>,
    /// Largest body read for checking (larger: 413). Default `1MiB`.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}

pub struct JsonSchema {
    validator: jsonschema::Validator,
    max_body: u64,
}

pub fn build(spec: &PluginSpec) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: JsonSchemaConfig = settings(spec)?;
    let err = |path: &str, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{path}", spec.origin.path), msg);
    let schema = match (c.schema, &c.schema_file) {
        (Some(s), None) => s,
        (None, Some(f)) => {
            let path = spec.origin.file.parent().unwrap_or(Path::new(".")).join(f);
            let text = std::fs::read_to_string(&path).map_err(|e| err("schema_file", format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| err("schema_file", format!("{} is not JSON: {e}", path.display())))?
        }
        _ => {
            return Err(
                err("schema", "set exactly one of schema and schema_file".into()).hint("e.g. schema: {type: object, required: [data]}")
            );
        }
    };
    let validator = jsonschema::validator_for(&schema).map_err(|e| err("schema", format!("not a valid JSON Schema: {e}")))?;
    Ok(Box::new(JsonSchema { validator, max_body: c.max_body.0 }))
}

impl Plugin for JsonSchema {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants_body(&self) -> Option<u64> {
        Some(self.max_body)
    }

    fn validate<'a>(&'a self, ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        // A gRPC call's body is protobuf, not JSON: the schema is for JSON APIs.
        let Some(body) = ctx.body().filter(|_| ctx.grpc_call().is_none()) else { return Flow::Continue };
        let instance: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Flow::Reject(GatewayError::InvalidRequest(format!("the body is not JSON: {e}"))),
        };
        let problems: Vec<String> = self
            .validator
            .iter_errors(&instance)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if problems.is_empty() {
            Flow::Continue
        } else {
            Flow::Reject(GatewayError::InvalidRequest(format!("the body does not match the route's schema: {}", problems.join("; "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Method;
    use modelgate_pipeline::Phase;
    use modelgate_pipeline::testing::{ctx, parts, route, run};

    use super::*;

    async fn check(p: &dyn Plugin, body: &'static str) -> Result<(), String> {
        let mut c = ctx(Method::POST, "/x");
        c.set_body(Bytes::from_static(body.as_bytes()), None);
        let mut req = parts(Method::POST, "/x", &[]);
        run(p, Phase::Validate, &mut c, &mut req).await.map_err(|e| format!("{}: {e}", e.code()))
    }

    #[tokio::test]
    async fn a_schema_maps_to_400_with_json_pointers_and_asks_for_the_body() {
        let p = build(
            &route(
                "[{json_schema: {max_body: 1KiB, schema: {type: object, required: [prompt], properties: {prompt: {type: string}}}}}]",
                "",
            )
            .plugins[0],
        )
        .unwrap();
        assert_eq!(p.wants_body(), Some(1024));
        assert_eq!(check(&*p, r#"{"prompt":"hi"}"#).await, Ok(()));
        let e = check(&*p, r#"{"prompt":3}"#).await.unwrap_err();
        assert!(e.starts_with("invalid_request: the body does not match the route's schema: /prompt:"), "{e}");
        assert!(check(&*p, "{").await.unwrap_err().starts_with("invalid_request: the body is not JSON"));
    }

    #[tokio::test]
    async fn a_schema_that_is_not_one_or_is_missing_is_a_config_error() {
        assert!(build(&route("[{json_schema: {schema: {type: 12}}}]", "").plugins[0]).is_err());
        assert!(build(&route("[{json_schema: {}}]", "").plugins[0]).is_err(), "schema or schema_file is required");
    }
}
