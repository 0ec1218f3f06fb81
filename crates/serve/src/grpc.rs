//! OIP v2 over gRPC (`inference.GRPCInferenceService`): ServerLive/Ready, ModelReady, Server/ModelMetadata and
//! ModelInfer with typed `contents` or `raw_input_contents` / `raw_output_contents`. Requests go through the same
//! validation and instance queues as REST: raw inputs become binary-extension inputs, typed contents become the
//! same scalars JSON data becomes.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::protocol::{FlatData, InferRequest, InputTensor, ParameterValue, Parameters, RequestedOutput, Scalar};
use crate::repository::{Repository, RunError};
use crate::validate;

/// Code generated from `proto/open_inference_grpc.proto`.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::*;

/// The gRPC service over a repository.
pub struct Service {
    repo: Arc<Repository>,
}

/// Binds `addr` and serves gRPC (HTTP/2, over TLS if `settings` say so) in the background; returns the bound
/// address. The generated tonic service is a tower service, served here by hyper directly (tonic's own server
/// would pull in axum).
pub async fn start(addr: SocketAddr, repo: Arc<Repository>, settings: modelgate_listen::Settings) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let service = GrpcInferenceServiceServer::new(Service { repo }).max_decoding_message_size(crate::http::MAX_REQUEST_BYTES);
    let settings = modelgate_listen::Settings { http2_only: true, ..settings };
    let serving = modelgate_listen::serve(listener, settings, std::future::pending(), move |_| {
        hyper_util::service::TowerToHyperService::new(service.clone())
    });
    tokio::spawn(serving);
    Ok(local)
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn param(p: &InferParameter) -> Option<ParameterValue> {
    use infer_parameter::ParameterChoice as C;
    Some(match p.parameter_choice.as_ref()? {
        C::BoolParam(b) => ParameterValue::Bool(*b),
        C::Int64Param(i) => ParameterValue::Int(*i),
        C::StringParam(s) => ParameterValue::String(s.clone()),
        C::DoubleParam(d) => ParameterValue::Float(*d),
        C::Uint64Param(u) => ParameterValue::Int(i64::try_from(*u).ok()?),
    })
}

fn params(map: &std::collections::HashMap<String, InferParameter>) -> Option<Parameters> {
    (!map.is_empty()).then(|| map.iter().filter_map(|(k, v)| param(v).map(|v| (k.clone(), v))).collect())
}

/// Typed `contents` as the scalars the JSON path produces.
fn scalars(c: InferTensorContents) -> Vec<Scalar> {
    let mut out = Vec::new();
    out.extend(c.bool_contents.into_iter().map(Scalar::Bool));
    out.extend(c.int_contents.into_iter().map(|v| Scalar::Int(v.into())));
    out.extend(c.int64_contents.into_iter().map(Scalar::Int));
    out.extend(c.uint_contents.into_iter().map(|v| Scalar::UInt(v.into())));
    out.extend(c.uint64_contents.into_iter().map(Scalar::UInt));
    out.extend(c.fp32_contents.into_iter().map(|v| Scalar::Float(v.into())));
    out.extend(c.fp64_contents.into_iter().map(Scalar::Float));
    out.extend(c.bytes_contents.into_iter().map(|b| Scalar::Str(String::from_utf8_lossy(&b).into_owned())));
    out
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: self.repo.ready() }))
    }

    async fn model_ready(&self, req: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(ModelReadyResponse { ready: self.repo.find(&r.name, version(&r.version)).is_some() }))
    }

    async fn server_metadata(&self, _: Request<ServerMetadataRequest>) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "modelgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::http::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(&self, req: Request<ModelMetadataRequest>) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let v = self
            .repo
            .find(&r.name, version(&r.version))
            .ok_or_else(|| Status::not_found(format!("unknown model {:?} version {:?}", r.name, r.version)))?;
        let specs = |s: &[modelgate_runtime::TensorSpec]| {
            s.iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.as_str().into(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        let versions = self.repo.model(&v.model).map(|m| m.versions.keys().map(|k| k.to_string()).collect()).unwrap_or_default();
        Ok(Response::new(ModelMetadataResponse {
            name: v.model.clone(),
            versions,
            platform: v.plan.backend.platform().into(),
            inputs: specs(&v.metadata.inputs),
            outputs: specs(&v.metadata.outputs),
        }))
    }

    async fn model_infer(&self, req: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let tracer = self.repo.tracer.get();
        let trace = tracer.and_then(|t| crate::spans::Trace::begin(t, &req.metadata().clone().into_headers()));
        let r = req.into_inner();
        let v = self
            .repo
            .find(&r.model_name, version(&r.model_version))
            .ok_or_else(|| Status::not_found(format!("unknown model {:?} version {:?}", r.model_name, r.model_version)))?;
        let Some((trace, tracer)) = trace.zip(tracer) else { return infer_checked(&v, r, &mut None).await };
        let mut timing = None;
        let out = infer_checked(&v, r, &mut timing).await;
        // gRPC status codes mapped to the HTTP statuses the REST spans carry.
        let status = match &out {
            Ok(_) => 200,
            Err(s) if s.code() == tonic::Code::InvalidArgument => 400,
            Err(s) if s.code() == tonic::Code::Unavailable => 503,
            Err(_) => 500,
        };
        trace.finish(tracer, &v, status, timing);
        out
    }
}

/// ModelInfer for a version found.
async fn infer_checked(
    v: &crate::repository::Version,
    r: ModelInferRequest,
    timing: &mut Option<crate::repository::Timing>,
) -> Result<Response<ModelInferResponse>, Status> {
    let raw = !r.raw_input_contents.is_empty();
    if raw && r.raw_input_contents.len() != r.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries for {} inputs",
            r.raw_input_contents.len(),
            r.inputs.len()
        )));
    }
    let mut binary = Vec::new();
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, t) in r.inputs.into_iter().enumerate() {
        let mut parameters = params(&t.parameters).unwrap_or_default();
        let data = if raw {
            let bytes = &r.raw_input_contents[i];
            parameters.insert("binary_data_size".into(), ParameterValue::Int(bytes.len() as i64));
            binary.extend_from_slice(bytes);
            None
        } else {
            Some(FlatData(t.contents.map(scalars).unwrap_or_default()))
        };
        inputs.push(InputTensor { name: t.name, shape: t.shape, datatype: t.datatype, parameters: Some(parameters), data });
    }
    let outputs = (!r.outputs.is_empty())
        .then(|| r.outputs.iter().map(|o| RequestedOutput { name: o.name.clone(), parameters: params(&o.parameters) }).collect());
    let mut request = InferRequest { id: Some(r.id.clone()), parameters: params(&r.parameters), inputs, outputs };
    let (tensors, wanted) = validate::inputs(&mut request, &v.metadata, &binary).map_err(|e| Status::invalid_argument(e.0))?;
    let (results, t) = v.infer_timed(tensors).await.map_err(|e| match e {
        RunError::QueueFull => Status::unavailable(e.to_string()),
        RunError::Unsupported(m) => Status::invalid_argument(m),
        e => Status::internal(e.to_string()),
    })?;
    *timing = Some(t);
    let mut results: Vec<Option<modelgate_runtime::Tensor>> = results.into_iter().map(Some).collect();
    let mut resp = ModelInferResponse { model_name: v.model.clone(), model_version: v.version.clone(), id: r.id, ..Default::default() };
    for i in wanted {
        let Some(t) = results.get_mut(i).and_then(Option::take) else { continue };
        let spec = &v.metadata.outputs[i];
        resp.raw_output_contents.push(crate::binary::encode(&t.data));
        resp.outputs.push(model_infer_response::InferOutputTensor {
            name: spec.name.clone(),
            datatype: spec.datatype.as_str().into(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
    }
    // The version that answered, as response metadata too (REST sends the `x-model-version` header): a gateway
    // records lineage without decoding the response message.
    let answered = tonic::metadata::MetadataValue::try_from(v.version.as_str()).ok();
    let mut resp = Response::new(resp);
    if let Some(version) = answered {
        resp.metadata_mut().insert("x-model-version", version);
    }
    Ok(resp)
}
