//! What the gateway reads of an OIP v2 gRPC call (`inference.GRPCInferenceService`): the RPC, the model and version
//! its first message names, and for `ModelInfer`/`ModelStreamInfer` the same [`oip::Summary`] a REST inference body
//! gives (each input's name, datatype, shape and element or byte count), so policy, limits, tensor validation and
//! lineage mean the same for both protocols.
//!
//! Messages are decoded with prost into the types below, declared with the field numbers of the published
//! `proto/open_inference_grpc.proto` (the model server generates its own from that file; a test in the `modelgate`
//! crate checks both agree). Only the fields the gateway reads are declared — prost skips the others without
//! building them — and `bytes` fields are [`Bytes`], so a buffered message is decoded without copying tensor data.
//! Declaring them by hand keeps a build script (and a .proto compiler) off the gateway's build path. The RPCs only
//! Triton has (`ModelConfig`, `ModelStatistics`, repository load/unload) carry a model name too; their request
//! messages are declared with the field numbers of Triton's `grpc_service.proto`.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use prost::Message;

use crate::oip::{self, BadTensor, Count, Input, InputParameters, Summary};

/// The OIP v2 messages the gateway reads, with the field numbers of `proto/open_inference_grpc.proto`.
#[allow(missing_docs)]
pub mod pb {
    use bytes::Bytes;

    /// `ModelMetadataRequest` (also `ModelReadyRequest`): `name = 1`, `version = 2`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelMetadataRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    /// `ModelReadyResponse`: `ready = 1`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelReadyResponse {
        #[prost(bool, tag = "1")]
        pub ready: bool,
    }

    /// `ModelMetadataResponse`: only `platform = 3` and `inputs = 4`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelMetadataResponse {
        #[prost(string, tag = "3")]
        pub platform: String,
        #[prost(message, repeated, tag = "4")]
        pub inputs: Vec<TensorMetadata>,
    }

    /// `ModelMetadataResponse.TensorMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
    }

    /// `ModelInferRequest`: the model, its inputs and raw contents (`id`, `parameters` and `outputs` are skipped).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferRequest {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(message, repeated, tag = "5")]
        pub inputs: Vec<InferInputTensor>,
        #[prost(bytes = "bytes", repeated, tag = "7")]
        pub raw_input_contents: Vec<Bytes>,
    }

    /// `ModelInferRequest.InferInputTensor` (its `parameters = 4` skipped).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferInputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }

    /// `InferTensorContents`: one list per element type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferTensorContents {
        #[prost(bool, repeated, tag = "1")]
        pub bool_contents: Vec<bool>,
        #[prost(int32, repeated, tag = "2")]
        pub int_contents: Vec<i32>,
        #[prost(int64, repeated, tag = "3")]
        pub int64_contents: Vec<i64>,
        #[prost(uint32, repeated, tag = "4")]
        pub uint_contents: Vec<u32>,
        #[prost(uint64, repeated, tag = "5")]
        pub uint64_contents: Vec<u64>,
        #[prost(float, repeated, tag = "6")]
        pub fp32_contents: Vec<f32>,
        #[prost(double, repeated, tag = "7")]
        pub fp64_contents: Vec<f64>,
        #[prost(bytes = "bytes", repeated, tag = "8")]
        pub bytes_contents: Vec<Bytes>,
    }
}

/// The path prefix of the OIP v2 gRPC service.
pub const SERVICE_PREFIX: &str = "/inference.GRPCInferenceService/";

/// The 5-byte prefix of every gRPC message: a compressed flag and a big-endian length.
pub const PREFIX_LEN: usize = 5;

/// Triton's request messages that name a model (field numbers from its `grpc_service.proto`).
mod triton {
    /// `ModelConfigRequest`, `ModelStatisticsRequest`: `name = 1`, `version = 2`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NameVersion {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    /// `RepositoryModelLoadRequest`, `RepositoryModelUnloadRequest`: `repository_name = 1`, `model_name = 2`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Repository {
        #[prost(string, tag = "2")]
        pub model_name: String,
    }
}

/// The RPCs of `inference.GRPCInferenceService` the gateway tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `ModelInfer`: one `ModelInferRequest`.
    Infer,
    /// `ModelStreamInfer` (Triton): a stream of `ModelInferRequest`s, each checked.
    StreamInfer,
    /// `ModelReady`, `ModelMetadata`, `ModelConfig`, `ModelStatistics`: `{name, version}`.
    ModelQuery,
    /// `RepositoryModelLoad`, `RepositoryModelUnload`: `{repository_name, model_name}`.
    Repository,
    /// Anything else (server health and metadata, repository index, …): no model.
    Other,
}

impl Rpc {
    /// The RPC a request path calls, when it is an OIP gRPC path.
    pub fn of_path(path: &str) -> Option<Rpc> {
        let method = path.strip_prefix(SERVICE_PREFIX)?;
        Some(match method {
            "ModelInfer" => Rpc::Infer,
            "ModelStreamInfer" => Rpc::StreamInfer,
            "ModelReady" | "ModelMetadata" | "ModelConfig" | "ModelStatistics" => Rpc::ModelQuery,
            "RepositoryModelLoad" | "RepositoryModelUnload" => Rpc::Repository,
            _ => Rpc::Other,
        })
    }

    /// Whether requests of this RPC are inference requests (an `infer` action for policy and limits).
    pub fn is_infer(self) -> bool {
        matches!(self, Rpc::Infer | Rpc::StreamInfer)
    }
}

/// Whether the request is a gRPC call (`content-type: application/grpc[+proto|;…]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc") && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// What the first message of a call says.
#[derive(Debug)]
pub struct Call {
    pub rpc: Rpc,
    pub model: Option<Box<str>>,
    pub version: Option<Box<str>>,
    /// For inference RPCs: the tensors, as [`oip::parse`] reads a REST body (or why they cannot be read).
    pub infer: Option<oip::Parsed>,
    /// The `BYTES` elements of the inputs (typed `bytes_contents`, or length-prefixed in raw contents), for the
    /// content guard.
    pub texts: Vec<Bytes>,
}

impl Call {
    /// The model and version, as [`crate::model::model_target`] gives them for REST paths.
    pub fn target(&self) -> (Option<&str>, Option<&str>) {
        (self.model.as_deref(), self.version.as_deref())
    }
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the gRPC message is {len} bytes, over the limit of {max}")]
    TooLarge { len: u64, max: u64 },
    #[error("compressed gRPC messages are not accepted on this route; send them uncompressed")]
    Compressed,
    #[error("the gRPC request body ended inside a message")]
    Truncated,
    #[error("the gRPC message is not a valid {0}")]
    Malformed(&'static str),
}

/// Reads a message prefix: `(compressed, length)`.
pub fn prefix(buf: &[u8]) -> Option<(bool, u64)> {
    let p: &[u8; PREFIX_LEN] = buf.get(..PREFIX_LEN)?.try_into().ok()?;
    Some((p[0] != 0, u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as u64))
}

/// A framed (uncompressed) request message with its model version set to `version`: field 2 — `model_version` of
/// `ModelInferRequest`, `version` of `ModelReadyRequest`, `ModelMetadataRequest` and Triton's queries — is appended,
/// and protobuf takes the last value of a repeated scalar field, so the rest of the message is kept byte for byte.
/// `None` when `framed` is not one whole uncompressed message.
pub fn with_version(framed: &[u8], version: &str) -> Option<Bytes> {
    let (compressed, len) = prefix(framed)?;
    if compressed || framed.len() != PREFIX_LEN + len as usize {
        return None;
    }
    let mut field = Vec::with_capacity(version.len() + 11);
    prost::encoding::string::encode(2, &version.to_string(), &mut field);
    let total = u32::try_from(len as usize + field.len()).ok()?;
    let mut out = Vec::with_capacity(PREFIX_LEN + total as usize);
    out.push(0);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&framed[PREFIX_LEN..]);
    out.extend_from_slice(&field);
    Some(out.into())
}

/// Checks a message prefix against the limit and the compression rule.
pub fn check_prefix(compressed: bool, len: u64, max: u64) -> Result<(), FrameError> {
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if compressed {
        return Err(FrameError::Compressed);
    }
    Ok(())
}

/// Decodes the first message of a call (`msg`: the message without its prefix).
pub fn decode(rpc: Rpc, msg: Bytes) -> Result<Call, FrameError> {
    let blank = |s: String| (!s.is_empty()).then(|| s.into_boxed_str());
    match rpc {
        Rpc::Infer | Rpc::StreamInfer => {
            let req = pb::ModelInferRequest::decode(msg).map_err(|_| FrameError::Malformed("ModelInferRequest"))?;
            let (infer, texts) = summary(&req);
            Ok(Call { rpc, model: blank(req.model_name), version: blank(req.model_version), infer: Some(infer), texts })
        }
        Rpc::ModelQuery => {
            let q = triton::NameVersion::decode(msg).map_err(|_| FrameError::Malformed("model request"))?;
            Ok(Call { rpc, model: blank(q.name), version: blank(q.version), infer: None, texts: Vec::new() })
        }
        Rpc::Repository => {
            let q = triton::Repository::decode(msg).map_err(|_| FrameError::Malformed("repository request"))?;
            Ok(Call { rpc, model: blank(q.model_name), version: None, infer: None, texts: Vec::new() })
        }
        Rpc::Other => Ok(Call { rpc, model: None, version: None, infer: None, texts: Vec::new() }),
    }
}

/// The model and version of a later message of a stream (`ModelStreamInfer`).
pub fn stream_target(msg: Bytes) -> Result<(String, String), FrameError> {
    // Fields 1 and 2 of ModelInferRequest are those of NameVersion: decoding as it skips the tensors' fields
    // without building them.
    let q = triton::NameVersion::decode(msg).map_err(|_| FrameError::Malformed("ModelInferRequest"))?;
    Ok((q.name, q.version))
}

/// A later message of a `ModelStreamInfer` stream that names another model or version than the first (which
/// policy, limits and validation decided on), or cannot be read: the stream is ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamRefused {
    #[error("message {index} of the stream is for model {model:?} version {version:?}; the stream was admitted for the first message's")]
    OtherModel { index: u64, model: String, version: String },
    #[error("message {index} of the stream: {source}")]
    Frame { index: u64, source: FrameError },
}

/// Checks every message after the first of a `ModelStreamInfer` stream as it is forwarded: each must fit the
/// message limit and name the model and version the first did. Holds at most one message at a time.
pub struct StreamCheck {
    model: String,
    version: String,
    max: u64,
    /// Bytes of the first message (already checked) still to pass.
    skip: usize,
    /// A partial prefix or message.
    pending: bytes::BytesMut,
    index: u64,
}

impl StreamCheck {
    /// `first_len`: the first message's length with its prefix, which the inspected bytes start with.
    pub fn new(call: &Call, first_len: usize, max: u64) -> StreamCheck {
        StreamCheck {
            model: call.model.as_deref().unwrap_or_default().to_string(),
            version: call.version.as_deref().unwrap_or_default().to_string(),
            max,
            skip: first_len,
            pending: bytes::BytesMut::new(),
            index: 1,
        }
    }
}

impl modelgate_upstream::body::Inspect for StreamCheck {
    fn data(&mut self, chunk: &[u8]) -> Result<(), modelgate_upstream::body::BoxError> {
        let skipped = self.skip.min(chunk.len());
        self.skip -= skipped;
        self.pending.extend_from_slice(&chunk[skipped..]);
        while let Some((compressed, len)) = prefix(&self.pending) {
            let index = self.index;
            check_prefix(compressed, len, self.max).map_err(|source| StreamRefused::Frame { index, source })?;
            let total = PREFIX_LEN + len as usize;
            if self.pending.len() < total {
                break;
            }
            let msg = self.pending.split_to(total).freeze().slice(PREFIX_LEN..);
            let (model, version) = stream_target(msg).map_err(|source| StreamRefused::Frame { index, source })?;
            if model != self.model || version != self.version {
                return Err(Box::new(StreamRefused::OtherModel { index, model, version }));
            }
            self.index += 1;
        }
        Ok(())
    }
}

/// The inference summary of a `ModelInferRequest`, and its `BYTES` texts.
fn summary(req: &pb::ModelInferRequest) -> (oip::Parsed, Vec<Bytes>) {
    let raw = &req.raw_input_contents;
    let mut texts = Vec::new();
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        let e = format!("raw_input_contents has {} entries for {} inputs; send one per input, or none", raw.len(), req.inputs.len());
        return (Err(BadTensor(e)), texts);
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, t) in req.inputs.iter().enumerate() {
        let (data, binary) = match (raw.get(i), &t.contents) {
            (Some(_), Some(c)) if contents_len(c) > 0 => {
                let e = format!("input {:?} has both contents and raw_input_contents", t.name);
                return (Err(BadTensor(e)), texts);
            }
            (Some(bytes), _) => {
                if t.datatype == "BYTES" && !split_bytes(bytes, &mut texts) {
                    return (Err(BadTensor(format!("input {:?}: the raw BYTES elements are not length-prefixed", t.name))), texts);
                }
                (None, Some(bytes.len() as u64))
            }
            (None, Some(c)) => {
                texts.extend(c.bytes_contents.iter().cloned());
                (Some(Count(contents_len(c))), None)
            }
            (None, None) => (Some(Count(0)), None),
        };
        inputs.push(Input {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
            data,
            parameters: binary.map(|size| InputParameters { binary_data_size: Some(size) }),
        });
    }
    let binary_len = raw.iter().map(|b| b.len() as u64).sum();
    (Ok(Summary { inputs, binary_len }), texts)
}

/// Elements in typed contents (whichever of its lists is used).
fn contents_len(c: &pb::InferTensorContents) -> u64 {
    [
        c.bool_contents.len(),
        c.int_contents.len(),
        c.int64_contents.len(),
        c.uint_contents.len(),
        c.uint64_contents.len(),
        c.fp32_contents.len(),
        c.fp64_contents.len(),
        c.bytes_contents.len(),
    ]
    .into_iter()
    .map(|n| n as u64)
    .sum()
}

/// Splits raw `BYTES` contents (each element: a 4-byte little-endian length, then the bytes); false if malformed.
fn split_bytes(raw: &Bytes, out: &mut Vec<Bytes>) -> bool {
    let mut rest = raw.clone();
    while rest.has_remaining() {
        if rest.remaining() < 4 {
            return false;
        }
        let n = rest.get_u32_le() as usize;
        if n > rest.remaining() {
            return false;
        }
        out.push(rest.split_to(n));
    }
    true
}

/// The gRPC status code for an HTTP status the gateway answers with (gRPC's HTTP-to-status mapping, refined by the
/// gateway's own cases: 413 is `RESOURCE_EXHAUSTED` as gRPC servers answer for oversized messages).
pub fn status_for(http: http::StatusCode) -> u16 {
    match http.as_u16() {
        400 | 411 | 415 | 431 => 3, // INVALID_ARGUMENT
        401 => 16,                  // UNAUTHENTICATED
        403 => 7,                   // PERMISSION_DENIED
        404 => 12,                  // UNIMPLEMENTED: no route serves this method
        405 => 12,
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        502 | 503 => 14, // UNAVAILABLE
        504 => 4,        // DEADLINE_EXCEEDED
        _ => 2,          // UNKNOWN
    }
}

/// Percent-encodes a `grpc-message` value (gRPC over HTTP/2: bytes outside 0x20–0x7E, and `%`).
pub fn percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of the `ModelReady` RPC.
pub const MODEL_READY: &str = "/inference.GRPCInferenceService/ModelReady";

/// A `ModelReady` request for `model` and `version`, framed (`ModelReadyRequest` has `ModelMetadataRequest`'s fields).
pub fn ready_request(model: &str, version: &str) -> Bytes {
    frame(&pb::ModelMetadataRequest { name: model.to_string(), version: version.to_string() })
}

/// The `ready` of a framed `ModelReadyResponse`.
pub fn ready_answer(body: &[u8]) -> Option<bool> {
    let (compressed, len) = prefix(body)?;
    let msg = body.get(PREFIX_LEN..PREFIX_LEN + len as usize).filter(|_| !compressed)?;
    Some(pb::ModelReadyResponse::decode(msg).ok()?.ready)
}

/// The path of the `ModelMetadata` RPC.
pub const MODEL_METADATA: &str = "/inference.GRPCInferenceService/ModelMetadata";

/// A `ModelMetadata` request for `model` (and `version`), framed.
pub fn metadata_request(model: &str, version: Option<&str>) -> Bytes {
    frame(&pb::ModelMetadataRequest { name: model.to_string(), version: version.unwrap_or_default().to_string() })
}

/// The inputs `(name, datatype, shape)` of a framed `ModelMetadataResponse`.
pub fn metadata_inputs(body: &[u8]) -> Option<Vec<(String, String, Vec<i64>)>> {
    let (compressed, len) = prefix(body)?;
    let msg = body.get(PREFIX_LEN..PREFIX_LEN + len as usize).filter(|_| !compressed)?;
    let meta = pb::ModelMetadataResponse::decode(msg).ok()?;
    Some(meta.inputs.into_iter().map(|t| (t.name, t.datatype, t.shape)).collect())
}

/// The `platform` of a framed `ModelMetadataResponse`.
pub fn metadata_platform(body: &[u8]) -> Option<String> {
    let (compressed, len) = prefix(body)?;
    let msg = body.get(PREFIX_LEN..PREFIX_LEN + len as usize).filter(|_| !compressed)?;
    Some(pb::ModelMetadataResponse::decode(msg).ok()?.platform)
}

/// A message framed for gRPC: the 5-byte prefix (uncompressed, length) and the message, encoded in one buffer.
pub fn frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(PREFIX_LEN + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("the buffer was sized for the message");
    Bytes::from(out)
}

/// The trailer (or, in a trailers-only answer, the header) carrying a gRPC call's status.
pub static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

#[cfg(test)]
mod tests {
    use super::pb::InferInputTensor;
    use super::*;

    #[test]
    fn a_version_set_on_a_framed_message_overrides_the_one_it_carried() {
        let input = InferInputTensor { name: "input".into(), datatype: "FP32".into(), shape: vec![1, 2], contents: None };
        let msg =
            pb::ModelInferRequest { model_name: "digits".into(), model_version: "1".into(), inputs: vec![input], ..Default::default() };
        let mut framed = vec![0];
        framed.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg.encode_to_vec());
        let out = with_version(&framed, "2").unwrap();
        let (_, len) = prefix(&out).unwrap();
        assert_eq!(len as usize, out.len() - PREFIX_LEN);
        let back = pb::ModelInferRequest::decode(&out[PREFIX_LEN..]).unwrap();
        assert_eq!((back.model_name.as_str(), back.model_version.as_str()), ("digits", "2"));
        assert_eq!(back.inputs, msg.inputs, "the rest is kept");
        assert!(with_version(&framed[..framed.len() - 1], "2").is_none(), "not a whole message");
    }

    fn infer(raw: Vec<Bytes>, inputs: Vec<InferInputTensor>) -> pb::ModelInferRequest {
        pb::ModelInferRequest { model_name: "digits".into(), model_version: "2".into(), inputs, raw_input_contents: raw }
    }

    fn input(name: &str, dt: &str, shape: &[i64], contents: Option<pb::InferTensorContents>) -> InferInputTensor {
        InferInputTensor { name: name.into(), datatype: dt.into(), shape: shape.to_vec(), contents }
    }

    #[test]
    fn rpcs_and_content_types() {
        assert_eq!(Rpc::of_path("/inference.GRPCInferenceService/ModelInfer"), Some(Rpc::Infer));
        assert_eq!(Rpc::of_path("/inference.GRPCInferenceService/ModelMetadata"), Some(Rpc::ModelQuery));
        assert_eq!(Rpc::of_path("/inference.GRPCInferenceService/ServerLive"), Some(Rpc::Other));
        assert_eq!(Rpc::of_path("/v2/models/digits/infer"), None);
        let h = |v: &'static str| HeaderMap::from_iter([(http::header::CONTENT_TYPE, http::HeaderValue::from_static(v))]);
        assert!(is_grpc(&h("application/grpc")) && is_grpc(&h("application/grpc+proto")) && is_grpc(&h("Application/GRPC")));
        assert!(!is_grpc(&h("application/grpc-web")) && !is_grpc(&h("application/json")) && !is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn raw_inputs_summarise_as_binary_tensors() {
        let req = infer(vec![Bytes::from(vec![0u8; 2 * 64 * 4])], vec![input("input", "FP32", &[2, 1, 8, 8], None)]);
        let call = decode(Rpc::Infer, frame(&req).slice(PREFIX_LEN..)).unwrap();
        assert_eq!(call.target(), (Some("digits"), Some("2")));
        let s = call.infer.unwrap().unwrap();
        assert_eq!((s.batch_items(), s.elements(), s.binary_len), (2, 128, 512));
        assert_eq!(s.inputs[0].parameters.as_ref().unwrap().binary_data_size, Some(512));
    }

    #[test]
    fn typed_contents_count_elements_and_bytes_are_texts() {
        let fp = pb::InferTensorContents { fp32_contents: vec![1.0; 6], ..Default::default() };
        let text = pb::InferTensorContents { bytes_contents: vec![Bytes::from_static(b"hello")], ..Default::default() };
        let req = infer(vec![], vec![input("a", "FP32", &[2, 3], Some(fp)), input("t", "BYTES", &[1], Some(text))]);
        let call = decode(Rpc::StreamInfer, frame(&req).slice(PREFIX_LEN..)).unwrap();
        let s = call.infer.unwrap().unwrap();
        assert_eq!(s.inputs[0].data, Some(Count(6)));
        assert_eq!(call.texts, vec![Bytes::from_static(b"hello")]);
    }

    #[test]
    fn raw_bytes_elements_are_split_and_malformed_ones_refused() {
        let mut raw = Vec::new();
        for t in ["ab", "cde"] {
            raw.extend_from_slice(&(t.len() as u32).to_le_bytes());
            raw.extend_from_slice(t.as_bytes());
        }
        let req = infer(vec![Bytes::from(raw)], vec![input("t", "BYTES", &[2], None)]);
        let call = decode(Rpc::Infer, frame(&req).slice(PREFIX_LEN..)).unwrap();
        assert_eq!(call.texts, vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]);
        let bad = infer(vec![Bytes::from_static(&[9, 0, 0, 0, b'x'])], vec![input("t", "BYTES", &[1], None)]);
        assert!(decode(Rpc::Infer, frame(&bad).slice(PREFIX_LEN..)).unwrap().infer.unwrap().is_err());
        let mismatch = infer(vec![Bytes::new(), Bytes::new()], vec![input("t", "FP32", &[1], None)]);
        assert!(decode(Rpc::Infer, frame(&mismatch).slice(PREFIX_LEN..)).unwrap().infer.unwrap().unwrap_err().0.contains("2 entries"));
    }

    #[test]
    fn model_queries_and_garbage() {
        let q = pb::ModelMetadataRequest { name: "digits".into(), version: String::new() };
        let call = decode(Rpc::ModelQuery, frame(&q).slice(PREFIX_LEN..)).unwrap();
        assert_eq!(call.target(), (Some("digits"), None));
        assert_eq!(decode(Rpc::Infer, Bytes::from_static(&[0xff, 0xff, 0xff])).unwrap_err(), FrameError::Malformed("ModelInferRequest"));
        assert_eq!(stream_target(frame(&infer(vec![], vec![])).slice(PREFIX_LEN..)).unwrap(), ("digits".into(), "2".into()));
    }

    #[test]
    fn every_later_message_of_a_stream_must_name_the_first_ones_model() {
        use modelgate_upstream::body::Inspect;
        let first = infer(vec![], vec![]);
        let call = decode(Rpc::StreamInfer, frame(&first).slice(PREFIX_LEN..)).unwrap();
        let f1 = frame(&first);
        let mut check = StreamCheck::new(&call, f1.len(), 1 << 10);
        let mut stream = f1.to_vec();
        stream.extend_from_slice(&frame(&first));
        // Chunked at every byte: prefixes and messages split anywhere.
        for b in stream.chunks(1) {
            check.data(b).unwrap();
        }
        let other = pb::ModelInferRequest { model_name: "other".into(), ..Default::default() };
        let err = check.data(&frame(&other)).unwrap_err();
        assert!(err.to_string().contains("message 2 of the stream is for model \"other\""), "{err}");
        let mut check = StreamCheck::new(&call, 0, 4);
        assert!(check.data(&frame(&first)).unwrap_err().to_string().contains("over the limit of 4"));
    }

    #[test]
    fn metadata_round_trip() {
        let req = metadata_request("digits", Some("1"));
        let back = pb::ModelMetadataRequest::decode(&req[PREFIX_LEN..]).unwrap();
        assert_eq!((back.name.as_str(), back.version.as_str()), ("digits", "1"));
        let resp = pb::ModelMetadataResponse {
            platform: "onnxruntime_onnx".into(),
            inputs: vec![pb::TensorMetadata { name: "input".into(), datatype: "FP32".into(), shape: vec![-1, 4] }],
        };
        assert_eq!(metadata_inputs(&frame(&resp)), Some(vec![("input".to_string(), "FP32".to_string(), vec![-1, 4])]));
        assert_eq!(metadata_platform(&frame(&resp)).as_deref(), Some("onnxruntime_onnx"));
        assert_eq!(metadata_inputs(&[0, 0, 0, 9]), None);
    }

    #[test]
    fn prefixes_limits_and_messages() {
        assert_eq!(prefix(&[0, 0, 0, 1, 0]), Some((false, 256)));
        assert_eq!(prefix(&[1, 0, 0]), None);
        assert_eq!(check_prefix(false, 10, 5), Err(FrameError::TooLarge { len: 10, max: 5 }));
        assert_eq!(check_prefix(true, 1, 5), Err(FrameError::Compressed));
        assert_eq!(percent_encode("forbidden: ünïcode 100%"), "forbidden: %C3%BCn%C3%AFcode 100%25");
        assert_eq!(status_for(http::StatusCode::FORBIDDEN), 7);
        assert_eq!(status_for(http::StatusCode::TOO_MANY_REQUESTS), 8);
        assert_eq!(status_for(http::StatusCode::GATEWAY_TIMEOUT), 4);
    }
}
