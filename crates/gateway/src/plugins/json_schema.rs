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
        _ => return Err(err("schema", "set exactly one of schema and schema_file".into()).hint("e.g. schema: {type: object, required: [data]}")),
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
        let Some(body) = ctx.body() else { return Flow::Continue };
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
