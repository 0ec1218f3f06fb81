//! `tensor_validation` (validate phase): checks OIP v2 inference requests at the edge against the model's inputs —
//! names, datatypes, shapes (with dynamic `-1` dimensions) and that the data holds as many elements as the shape
//! (or, with the binary extension, as many bytes) — and answers 400 `invalid_tensor` naming the tensor and what
//! was expected, before the request costs upstream time.
//!
//! OIP gRPC `ModelInfer` calls are checked the same way, from the tensors of their message.
//!
//! The inputs come from an explicit schema in the config, or are learned from the upstream's model metadata
//! (`GET /v2/models/{m}[/versions/{v}]`, or the `ModelMetadata` RPC for gRPC calls to an HTTP/2 upstream), cached per model and version for `metadata_ttl` and learned anew after a
//! reload. Metadata that cannot be had (upstream down, unknown model) lets the request through unchecked: the
//! model server still validates; this plugin only saves it the work.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use http::request;
use serde::Deserialize;

use modelgate_config::model::PluginSpec;
use modelgate_config::{ByteSize, ConfigError, HumanDuration};

use modelgate_pipeline::grpc;
use modelgate_pipeline::oip::{self, BadTensor};
use modelgate_pipeline::plugin::{Flow, Plugin, settings};
use modelgate_pipeline::{Ctx, GatewayError};

pub const NAME: &str = "tensor_validation";

/// Settings of `tensor_validation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorValidationConfig {
    /// Largest inference body read for checking; larger bodies get 413. Default `8MiB`.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// How long learned model metadata is used before it is fetched again. Default `60s`.
    #[serde(default = "default_ttl")]
    pub metadata_ttl: HumanDuration,
    /// Explicit input schemas by model name; used instead of the upstream's metadata for those models.
    #[serde(default)]
    pub models: BTreeMap<String, ModelSchema>,
}

/// The inputs of one model in `tensor_validation.models`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSchema {
    /// Every input the model takes; requests must send exactly these.
    pub inputs: Vec<TensorSchema>,
}

/// One input tensor of a `ModelSchema`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSchema {
    /// Input name.
    pub name: String,
    /// OIP datatype: `BOOL`, `UINT8`…`UINT64`, `INT8`…`INT64`, `FP16`, `FP32`, `FP64`, `BYTES`.
    pub datatype: String,
    /// Dimensions; `-1` for a dynamic one (the batch dimension, usually).
    pub shape: Vec<i64>,
}

fn default_max_body() -> ByteSize {
    ByteSize(8 << 20)
}

fn default_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

const MAX_LEARNED: usize = 1024;

pub struct TensorValidation {
    max_body: u64,
    ttl: Duration,
    explicit: HashMap<String, Arc<Vec<TensorSchema>>>,
    learned: Mutex<Learned>,
}

/// (model, version) → inputs (`None`: the upstream had no metadata) and when learned.
type Learned = HashMap<(String, String), (Option<Arc<Vec<TensorSchema>>>, Instant)>;

#[derive(Deserialize)]
struct Metadata {
    inputs: Vec<TensorSchema>,
}

pub fn build(spec: &PluginSpec) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: TensorValidationConfig = settings(spec)?;
    let err = |path: String, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{path}", spec.origin.path), msg);
    for (m, schema) in &c.models {
        for (i, t) in schema.inputs.iter().enumerate() {
            if !oip::is_datatype(&t.datatype) {
                let names: Vec<&str> = oip::DATATYPES.iter().map(|(name, _)| *name).collect();
                return Err(
                    err(format!("models.{m}.inputs[{i}].datatype"), format!("unknown datatype {:?}", t.datatype)).hint(names.join(", "))
                );
            }
            if t.shape.iter().any(|d| *d < -1) {
                return Err(err(format!("models.{m}.inputs[{i}].shape"), "dimensions are -1 (dynamic) or ≥ 0".into()));
            }
        }
    }
    Ok(Box::new(TensorValidation {
        max_body: c.max_body.0,
        ttl: c.metadata_ttl.0,
        explicit: c.models.into_iter().map(|(m, s)| (m, Arc::new(s.inputs))).collect(),
        learned: Mutex::new(HashMap::new()),
    }))
}

/// The model and version of an inference call (`POST /v2/models/{m}[/versions/{v}]/infer`, or gRPC `ModelInfer`).
fn infer_target(ctx: &Ctx) -> Option<(&str, Option<&str>)> {
    if !ctx.is_inference() {
        return None;
    }
    match ctx.model_target() {
        // A managed model: the version the route step chose (pinned or split).
        (Some(m), _) if let Some(r) = ctx.routed() => Some((m, Some(&*r.version))),
        (Some(m), v) => Some((m, v)),
        _ => None,
    }
}

/// Checks a parsed request against the inputs a model takes.
pub fn check(req: &oip::Summary, inputs: &[TensorSchema]) -> Result<(), BadTensor> {
    let names = || inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut binary = 0u64;
    for input in &req.inputs {
        let Some(want) = inputs.iter().find(|t| t.name == input.name) else {
            return Err(BadTensor(format!("unknown input {:?}; the model takes: {}", input.name, names())));
        };
        if input.datatype != want.datatype {
            return Err(BadTensor(format!("input {:?} has datatype {}, the model expects {}", input.name, input.datatype, want.datatype)));
        }
        let fits = input.shape.len() == want.shape.len()
            && input.shape.iter().zip(&want.shape).all(|(got, w)| *got >= 0 && (*w == -1 || got == w));
        if !fits {
            return Err(BadTensor(format!(
                "input {:?} has shape {:?}, the model expects {:?} (-1: any size)",
                input.name, input.shape, want.shape
            )));
        }
        let Some(elements) = oip::elements(&input.shape) else {
            return Err(BadTensor(format!("input {:?}: shape {:?} is too large", input.name, input.shape)));
        };
        match (&input.data, input.parameters.as_ref().and_then(|p| p.binary_data_size)) {
            (Some(count), None) if count.0 != elements => {
                return Err(BadTensor(format!(
                    "input {:?}: shape {:?} holds {elements} elements but data has {}",
                    input.name, input.shape, count.0
                )));
            }
            (Some(_), None) => {}
            (None, Some(size)) => {
                if let Some(per) = oip::datatype_size(&input.datatype)
                    && elements.checked_mul(per) != Some(size)
                {
                    return Err(BadTensor(format!(
                        "input {:?}: shape {:?} of {} needs {} bytes but binary_data_size is {size}",
                        input.name,
                        input.shape,
                        input.datatype,
                        elements.saturating_mul(per)
                    )));
                }
                binary = binary.saturating_add(size);
            }
            (Some(_), Some(_)) => return Err(BadTensor(format!("input {:?} has both data and binary_data_size", input.name))),
            (None, None) => return Err(BadTensor(format!("input {:?} has neither data nor binary_data_size", input.name))),
        }
    }
    if let Some(missing) = inputs.iter().find(|t| !req.inputs.iter().any(|i| i.name == t.name)) {
        return Err(BadTensor(format!("input {:?} is missing; the model takes: {}", missing.name, names())));
    }
    if binary != req.binary_len {
        return Err(BadTensor(format!(
            "the binary inputs declare {binary} bytes but the body carries {} after the JSON header",
            req.binary_len
        )));
    }
    Ok(())
}

// === impl TensorValidation ===

impl TensorValidation {
    fn cached(&self, key: &(String, String)) -> Option<Option<Arc<Vec<TensorSchema>>>> {
        let learned = self.learned.lock().ok()?;
        learned.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(s, _)| s.clone())
    }

    /// The inputs from the upstream's model metadata (one healthy target), or `None`: REST
    /// `GET /v2/models/{m}[/versions/{v}]`, or for a gRPC call to an HTTP/2 upstream the `ModelMetadata` RPC.
    async fn learn(&self, ctx: &Ctx, model: &str, version: Option<&str>) -> Option<Arc<Vec<TensorSchema>>> {
        let up = ctx.upstream()?;
        let i = up.pick(0)?;
        let inputs = match (&up.transport, ctx.grpc_call()) {
            (modelgate_upstream::Transport::Http2(client), Some(_)) => grpc_metadata(up, client, i, model, version).await,
            _ => {
                let url = match (ctx.routed(), version) {
                    // A managed version: its own path on its upstream (the OIP metadata endpoint by default).
                    (Some(r), _) => format!("{}{}", up.targets[i].base, r.prefix),
                    (None, Some(v)) => format!("{}/v2/models/{model}/versions/{v}", up.targets[i].base),
                    (None, None) => format!("{}/v2/models/{model}", up.targets[i].base),
                };
                match modelgate_upstream::fetch::get_json::<Metadata>(&url).await {
                    Ok(m) => Some(Arc::new(m.inputs)),
                    Err(e) => {
                        tracing::debug!(error = %e, "no model metadata: requests pass unchecked");
                        None
                    }
                }
            }
        };
        if let Ok(mut learned) = self.learned.lock() {
            // Model names come from request paths: keep the cache bounded.
            if learned.len() >= MAX_LEARNED {
                learned.retain(|_, (_, at)| at.elapsed() < self.ttl);
                if learned.len() >= MAX_LEARNED {
                    learned.clear();
                }
            }
            learned.insert((model.to_string(), version.unwrap_or("").to_string()), (inputs.clone(), Instant::now()));
        }
        inputs
    }
}

/// `ModelMetadata` over gRPC from target `i` (5 s, 1 MiB at most); `None` when it cannot be had.
async fn grpc_metadata(
    up: &modelgate_upstream::Upstream,
    client: &modelgate_upstream::Http2Client,
    i: usize,
    model: &str,
    version: Option<&str>,
) -> Option<Arc<Vec<TensorSchema>>> {
    let asked = async {
        let Some(body) =
            crate::own_calls::grpc_unary(up, client, i, grpc::MODEL_METADATA, grpc::metadata_request(model, version), 1 << 20).await
        else {
            tracing::debug!(model, "no gRPC model metadata: requests pass unchecked");
            return None;
        };
        grpc::metadata_inputs(&body)
    };
    let inputs = tokio::time::timeout(Duration::from_secs(5), asked).await.ok()??;
    Some(Arc::new(inputs.into_iter().map(|(name, datatype, shape)| TensorSchema { name, datatype, shape }).collect()))
}

fn verdict(ctx: &Ctx, inputs: Option<&[TensorSchema]>) -> Result<(), GatewayError> {
    let Some(inputs) = inputs else { return Ok(()) };
    match ctx.infer() {
        Some(Ok(req)) => Ok(check(req, inputs)?),
        Some(Err(e)) => Err(e.clone().into()),
        None => Ok(()),
    }
}

impl Plugin for TensorValidation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants_body(&self) -> Option<u64> {
        Some(self.max_body)
    }

    fn validate<'a>(&'a self, ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        let Some((model, version)) = infer_target(ctx) else { return Flow::Continue };
        if let Some(inputs) = self.explicit.get(model) {
            return verdict(ctx, Some(inputs)).into();
        }
        let key = (model.to_string(), version.unwrap_or("").to_string());
        match self.cached(&key) {
            Some(inputs) => verdict(ctx, inputs.as_deref().map(Vec::as_slice)).into(),
            None => Flow::Wait(Box::pin(async move {
                let version = (!key.1.is_empty()).then_some(key.1.as_str());
                let inputs = self.learn(ctx, &key.0, version).await;
                verdict(ctx, inputs.as_deref().map(Vec::as_slice))
            })),
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

    const DIGITS: &str =
        "[{tensor_validation: {max_body: 64KiB, models: {digits: {inputs: [{name: input, datatype: FP32, shape: [-1, 4]}]}}}}]";

    async fn validate(p: &dyn Plugin, path: &str, body: &str) -> Result<(), String> {
        let mut c = ctx(Method::POST, path);
        c.set_body(Bytes::from(body.to_string()), None);
        let mut req = parts(Method::POST, path, &[]);
        run(p, Phase::Validate, &mut c, &mut req).await.map_err(|e| format!("{}: {e}", e.code()))
    }

    #[tokio::test]
    async fn explicit_schemas_map_to_400_invalid_tensor_naming_the_problem() {
        let p = build(&route(DIGITS, "").plugins[0]).unwrap();
        assert_eq!(p.wants_body(), Some(64 << 10));
        let ok = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[2,4],"data":[0,1,2,3,4,5,6,7]}]}"#;
        assert_eq!(validate(&*p, "/v2/models/digits/infer", ok).await, Ok(()));
        let shape = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":[0,1,2,3,4,5,6,7]}]}"#;
        assert!(
            validate(&*p, "/v2/models/digits/infer", shape)
                .await
                .unwrap_err()
                .starts_with("invalid_tensor: input \"input\" has shape [1, 8]")
        );
        let dtype = r#"{"inputs":[{"name":"input","datatype":"INT64","shape":[1,4],"data":[0,1,2,3]}]}"#;
        assert!(validate(&*p, "/v2/models/digits/infer", dtype).await.unwrap_err().contains("has datatype INT64, the model expects FP32"));
        let count = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[0,1]}]}"#;
        assert!(validate(&*p, "/v2/models/digits/infer", count).await.unwrap_err().contains("holds 4 elements but data has 2"));
        let name = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[0,1,2,3]}]}"#;
        assert!(validate(&*p, "/v2/models/digits/infer", name).await.unwrap_err().contains("unknown input \"x\""));
        assert!(
            validate(&*p, "/v2/models/digits/infer", "{")
                .await
                .unwrap_err()
                .starts_with("invalid_tensor: the inference request is not valid JSON")
        );
    }

    #[tokio::test]
    async fn a_model_without_a_schema_whose_upstream_has_no_metadata_passes_unchecked() {
        // The route's upstream (127.0.0.1:9) refuses connections: nothing to learn, the request goes on.
        let p = build(&route(DIGITS, "").plugins[0]).unwrap();
        assert_eq!(validate(&*p, "/v2/models/other/infer", r#"{"inputs":[]}"#).await, Ok(()));
        assert_eq!(validate(&*p, "/v2/health/ready", "").await, Ok(()), "not an inference path");
    }

    #[tokio::test]
    async fn an_unknown_datatype_or_dimension_is_a_config_error() {
        assert!(
            build(&route("[{tensor_validation: {models: {m: {inputs: [{name: a, datatype: FP8, shape: [1]}]}}}}]", "").plugins[0]).is_err()
        );
        assert!(
            build(&route("[{tensor_validation: {models: {m: {inputs: [{name: a, datatype: FP32, shape: [-2]}]}}}}]", "").plugins[0])
                .is_err()
        );
    }
}
