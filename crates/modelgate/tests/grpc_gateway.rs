//! OIP gRPC through the gateway, end to end: the generated tonic client (the same .proto tritonclient uses) calls
//! the real model server through a real gateway process, and gets the REST routes' per-model policy, limits,
//! tensor validation, metrics and audit — with refusals as gRPC statuses.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use modelgate_serve::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_serve::grpc::pb::*;
use modelgate_test_support::{Gateway, ModelServer, Upstream, create_key, get, metric, repo_root};
use tonic::Code;
use tonic::transport::Channel;

/// The messages the gateway declares by hand (`modelgate_pipeline::grpc::pb`, only the fields it reads) agree with
/// those the model server generates from `proto/open_inference_grpc.proto`: every field the gateway reads survives
/// a message with every field set, and what the gateway sends decodes on the server side.
#[test]
fn the_gateways_declared_messages_agree_with_the_published_proto() {
    use modelgate_pipeline::grpc::pb as gw;
    use prost::Message;
    let contents = InferTensorContents {
        bool_contents: vec![true],
        int_contents: vec![-2],
        int64_contents: vec![3],
        uint_contents: vec![4],
        uint64_contents: vec![5],
        fp32_contents: vec![6.5],
        fp64_contents: vec![7.25],
        bytes_contents: vec![b"eight".to_vec()],
    };
    let param = InferParameter { parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(1)) };
    let req = ModelInferRequest {
        model_name: "digits".into(),
        model_version: "2".into(),
        id: "r1".into(),
        parameters: [("p".to_string(), param.clone())].into(),
        inputs: vec![model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 784],
            parameters: [("q".to_string(), param.clone())].into(),
            contents: Some(contents),
        }],
        outputs: vec![model_infer_request::InferRequestedOutputTensor {
            name: "logits".into(),
            parameters: [("r".to_string(), param)].into(),
        }],
        raw_input_contents: vec![b"raw".to_vec()],
    };
    let got = gw::ModelInferRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!((got.model_name.as_str(), got.model_version.as_str()), ("digits", "2"));
    assert_eq!(got.raw_input_contents, [Bytes::from_static(b"raw")]);
    let [t] = got.inputs.as_slice() else { panic!("one input: {got:?}") };
    assert_eq!((t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()), ("input", "FP32", [1, 784].as_slice()));
    let c = t.contents.as_ref().unwrap();
    assert_eq!(
        (c.bool_contents.as_slice(), c.int_contents.as_slice(), c.int64_contents.as_slice()),
        ([true].as_slice(), [-2].as_slice(), [3].as_slice())
    );
    assert_eq!((c.uint_contents.as_slice(), c.uint64_contents.as_slice()), ([4].as_slice(), [5].as_slice()));
    assert_eq!((c.fp32_contents.as_slice(), c.fp64_contents.as_slice()), ([6.5].as_slice(), [7.25].as_slice()));
    assert_eq!(c.bytes_contents, [Bytes::from_static(b"eight")]);

    let sent = gw::ModelMetadataRequest { name: "digits".into(), version: "1".into() };
    let q = ModelMetadataRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
    assert_eq!((q.name.as_str(), q.version.as_str()), ("digits", "1"));
    let tensor = |name: &str| model_metadata_response::TensorMetadata { name: name.into(), datatype: "FP32".into(), shape: vec![-1, 784] };
    let meta = ModelMetadataResponse {
        name: "digits".into(),
        versions: vec!["1".into()],
        platform: "onnx".into(),
        inputs: vec![tensor("input")],
        outputs: vec![tensor("logits")],
    };
    let got = gw::ModelMetadataResponse::decode(meta.encode_to_vec().as_slice()).unwrap();
    let [t] = got.inputs.as_slice() else { panic!("the inputs only: {got:?}") };
    assert_eq!((t.name.as_str(), t.datatype.as_str(), t.shape.as_slice()), ("input", "FP32", [-1, 784].as_slice()));
}

/// A gateway in front of `grpc` (an HTTP/2 upstream) whose one route carries the OIP gRPC service.
async fn gateway(grpc: &str, keys: &std::path::Path, plugins: &str) -> Gateway {
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
audit: {{ path: audit.log, fsync: always }}
upstreams:
  models: {{ targets: ["http://{grpc}"], protocol: http2 }}
routes:
  - name: grpc
    match: {{ path_prefix: /inference.GRPCInferenceService }}
    upstream: models
    grpc_max_message: 64KiB
    plugins:
{plugins}
"#,
        keys = keys.display()
    );
    Gateway::start(&yaml).await
}

async fn connect(addr: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.unwrap()
}

/// A request with the API key in its metadata, as tritonclient's `headers=` sends it.
fn keyed<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut().insert("x-api-key", k.parse().unwrap());
    }
    r
}

fn digits_request(model: &str, version: &str, shape: Vec<i64>, raw: Vec<u8>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![model_infer_request::InferInputTensor { name: "input".into(), datatype: "FP32".into(), shape, ..Default::default() }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

/// The first golden case's 8×8 image, raw little-endian.
fn image() -> Vec<u8> {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("examples/digits/golden.json")).unwrap()).unwrap();
    g["cases"][0]["input"].as_array().unwrap().iter().flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes()).collect()
}

/// Inference requests the model server itself has answered (its `modelgate_inference_requests` series).
async fn served(server: &ModelServer) -> f64 {
    let text = String::from_utf8(get(&server.url("/metrics")).await.body.to_vec()).unwrap();
    text.lines()
        .filter(|l| l.starts_with("modelgate_inference_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn grpc_calls_get_per_model_policy_validation_and_lineage() {
    let server = ModelServer::start(&repo_root().join("examples/models")).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let (a, b) = (create_key(&keys, "team-a", &[]).await, create_key(&keys, "team-b", &[]).await);
    let plugins = "      - auth: { methods: [api_key] }\n      - policy: { allow: [ { name: a-digits, consumers: [team-a], models: [digits] } ] }\n      - tensor_validation: {}";
    let gw = gateway(&server.grpc, &keys, plugins).await;
    let mut direct = connect(&server.grpc).await;
    let mut through = connect(&gw.addr).await;

    // Allowed: the same tensors as the model server answers directly, and the version that answered.
    let want = direct.model_infer(digits_request("digits", "", vec![1, 1, 8, 8], image())).await.unwrap().into_inner();
    let got = through.model_infer(keyed(digits_request("digits", "1", vec![1, 1, 8, 8], image()), Some(&a))).await.unwrap();
    assert_eq!(got.metadata().get("x-model-version").map(|v| v.to_str().unwrap()), Some("1"));
    let got = got.into_inner();
    assert_eq!((got.model_name.as_str(), got.model_version.as_str()), ("digits", "1"));
    assert_eq!(got.raw_output_contents, want.raw_output_contents);
    // Unversioned calls: the version that answered comes from the model server's `x-model-version` metadata.
    let got = through.model_infer(keyed(digits_request("digits", "", vec![1, 1, 8, 8], image()), Some(&a))).await.unwrap();
    assert_eq!(got.metadata().get("x-model-version").map(|v| v.to_str().unwrap()), Some("1"));
    let meta = through.model_metadata(keyed(ModelMetadataRequest { name: "digits".into(), version: String::new() }, Some(&a))).await;
    assert_eq!(meta.unwrap().into_inner().inputs[0].shape, vec![-1, 1, 8, 8]);

    // Refusals are gRPC statuses whose message starts with the JSON error code.
    let refused = |r: Result<tonic::Response<ModelInferResponse>, tonic::Status>, code: Code, prefix: &str| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), code, "{s:?}");
        assert!(s.message().starts_with(prefix), "{s:?}");
    };
    let before = served(&server).await;
    refused(
        through.model_infer(keyed(digits_request("digits", "", vec![1, 1, 8, 8], image()), None)).await,
        Code::Unauthenticated,
        "unauthenticated: ",
    );
    refused(
        through.model_infer(keyed(digits_request("digits", "", vec![1, 1, 8, 8], image()), Some("mg_wrong"))).await,
        Code::Unauthenticated,
        "unauthenticated: ",
    );
    refused(
        through.model_infer(keyed(digits_request("digits", "", vec![1, 1, 8, 8], image()), Some(&b))).await,
        Code::PermissionDenied,
        "forbidden: ",
    );
    refused(
        through.model_infer(keyed(digits_request("text", "", vec![1, 1, 8, 8], image()), Some(&a))).await,
        Code::PermissionDenied,
        "forbidden: ",
    );
    // A wrong shape is refused at the edge, from the model's metadata learned over gRPC.
    refused(
        through.model_infer(keyed(digits_request("digits", "", vec![1, 1, 4, 4], image()[..64].to_vec()), Some(&a))).await,
        Code::InvalidArgument,
        "invalid_tensor: input \"input\" has shape [1, 1, 4, 4]",
    );
    // Raw bytes that do not match the shape.
    refused(
        through.model_infer(keyed(digits_request("digits", "", vec![2, 1, 8, 8], image()), Some(&a))).await,
        Code::InvalidArgument,
        "invalid_tensor: ",
    );
    // Over `grpc_max_message` (64 KiB).
    refused(
        through.model_infer(keyed(digits_request("digits", "", vec![300, 1, 8, 8], vec![0; 300 * 256]), Some(&a))).await,
        Code::ResourceExhausted,
        "payload_too_large: ",
    );
    assert_eq!(served(&server).await, before, "no refused call reached the model server");

    // Metrics and the audit log name the model (and the version the call named) of gRPC calls.
    let series = r#"modelgate_requests_total{route="grpc",model="digits",model_version="1",consumer="team-a",code="2xx"}"#;
    assert!(metric(&gw, series).await >= 1.0, "{series}");
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let allowed = lines.iter().find(|l| l["decision"] == "allow" && l["model"] == "digits" && l["version"] == "1");
    assert!(allowed.is_some(), "{audit}");
    assert!(lines.iter().any(|l| l["decision"] == "deny" && l["model"] == "text" && l["consumer"] == "team-a"), "{audit}");
}

#[tokio::test]
async fn grpc_rate_limits_by_model_answer_resource_exhausted_with_ratelimit_metadata() {
    let server = ModelServer::start(&repo_root().join("examples/models")).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let a = create_key(&keys, "team-a", &[]).await;
    let plugins = "      - auth: { methods: [api_key] }\n      - rate_limit: { limits: [ { limit: 2, per: 1d, by: [consumer, model] } ] }";
    let gw = gateway(&server.grpc, &keys, plugins).await;
    let mut c = connect(&gw.addr).await;
    for _ in 0..2 {
        c.model_infer(keyed(digits_request("digits", "", vec![1, 1, 8, 8], image()), Some(&a))).await.unwrap();
    }
    let s = c.model_infer(keyed(digits_request("digits", "", vec![1, 1, 8, 8], image()), Some(&a))).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().starts_with("rate_limited: "), "{s:?}");
    assert!(s.metadata().get("ratelimit").unwrap().to_str().unwrap().contains(";r=0;"), "{s:?}");
    assert!(s.metadata().get("retry-after").is_some());
    // Another model has its own bucket: this call passes the limiter and the model server answers NOT_FOUND.
    let other = c.model_infer(keyed(digits_request("nope", "", vec![1, 1, 8, 8], image()), Some(&a))).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
}

/// An h2c client for raw gRPC streams.
fn h2c() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::StreamBody<StreamFrames>>
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http()
}

type StreamFrames = futures_util::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>>;

fn stream_of(messages: &[&ModelInferRequest]) -> http_body_util::StreamBody<StreamFrames> {
    let frames: Vec<_> = messages.iter().map(|m| Ok(hyper::body::Frame::data(modelgate_pipeline::grpc::frame(*m)))).collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

/// `(grpc-status, response body)` of a `ModelStreamInfer` call through `gw`.
async fn stream_call(gw: &Gateway, key: &str, messages: &[&ModelInferRequest]) -> (String, Bytes) {
    let req = http::Request::post(gw.url("/inference.GRPCInferenceService/ModelStreamInfer"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", key)
        .body(stream_of(messages))
        .unwrap();
    let resp = h2c().request(req).await.unwrap();
    let head_status = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
    match resp.into_body().collect().await {
        Ok(body) => {
            let status = body.trailers().and_then(|t| t.get("grpc-status")).map(|v| v.to_str().unwrap().to_string());
            (status.or(head_status).unwrap_or_default(), body.to_bytes())
        }
        Err(_) => ("reset".into(), Bytes::new()),
    }
}

#[tokio::test]
async fn every_message_of_a_grpc_stream_is_checked() {
    let up = Upstream::start("streams").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let a = create_key(&keys, "team-a", &[]).await;
    let plugins = "      - auth: { methods: [api_key] }\n      - policy: { allow: [ { consumers: [team-a], models: [digits] } ] }";
    let gw = gateway(&up.addr, &keys, plugins).await;
    let digits = digits_request("digits", "", vec![1, 1, 8, 8], image());
    let text = digits_request("text", "", vec![1, 1, 8, 8], image());

    // Two messages for the allowed model go through, in order, whole.
    let (status, echoed) = stream_call(&gw, &a, &[&digits, &digits]).await;
    assert_eq!(status, "0");
    assert_eq!(echoed.len(), 2 * modelgate_pipeline::grpc::frame(&digits).len());
    // A first message for a model the rule does not allow: PERMISSION_DENIED before the upstream sees it.
    let before = up.count().await;
    assert_eq!(stream_call(&gw, &a, &[&text, &digits]).await.0, "7");
    assert_eq!(up.count().await, before, "the refused stream never reached the upstream");
    // A later message for another model ends the stream: never answered OK.
    let (status, _) = stream_call(&gw, &a, &[&digits, &text]).await;
    assert_ne!(status, "0", "the stream was not allowed to finish");
}

#[tokio::test]
async fn an_oversized_message_is_refused_from_its_length_prefix() {
    let up = Upstream::start("big").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let a = create_key(&keys, "team-a", &[]).await;
    let gw = gateway(&up.addr, &keys, "      - auth: { methods: [api_key] }").await;
    // The prefix announces 1 GiB; the client then sends nothing more and keeps its stream open.
    use futures_util::StreamExt;
    let prefix = hyper::body::Frame::data(Bytes::from_static(&[0, 0x40, 0, 0, 0]));
    let open_forever = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(prefix)]).chain(futures_util::stream::pending());
    let body = http_body_util::StreamBody::new(open_forever);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let req = http::Request::post(gw.url("/inference.GRPCInferenceService/ModelInfer"))
        .header("content-type", "application/grpc")
        .header("x-api-key", a.as_str())
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.expect("answered without the body").unwrap();
    assert_eq!(resp.headers()["grpc-status"], "8");
    assert!(resp.headers()["grpc-message"].to_str().unwrap().starts_with("payload_too_large: "));
}

/// The venv python with the pinned tritonclient (`scripts/fetch-pyclients`, run by `./scripts/test`).
fn pyclients() -> std::path::PathBuf {
    let python = repo_root().join("target/pyclients/bin/python");
    assert!(python.exists(), "run scripts/fetch-pyclients (./scripts/test does) for the tritonclient tests");
    python
}

#[tokio::test]
async fn tritonclient_grpc_calls_the_bundled_model_through_up() {
    use modelgate_test_support::Proc;
    let up = Proc::spawn(&["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], &[]).await;
    let gw = up.ready["gateway"].as_str().unwrap().to_string();
    let key = up.ready["dev_key"].as_str().unwrap().to_string();
    let script = repo_root().join("examples/digits/grpc_client.py");
    let run = |key: String| {
        let (gw, script) = (gw.clone(), script.clone());
        async move {
            let out = tokio::process::Command::new(pyclients()).arg(&script).arg(&gw).arg(&key).output().await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let line: serde_json::Value =
                serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
            (out.status.code(), line)
        }
    };
    // The README's gRPC call: the unmodified tritonclient.grpc gets the same classes as PyTorch.
    let (code, line) = run(key).await;
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["predicted"], line["expected"], "{line}");
    assert_eq!((line["model"].as_str(), line["model_version"].as_str()), (Some("digits"), Some("1")));
    // A wrong key: tritonclient reports the gRPC status and the gateway's code.
    let (code, line) = run("mg_not_a_key".into()).await;
    assert_eq!(code, Some(1));
    assert_eq!(line["status"], "StatusCode.UNAUTHENTICATED", "{line}");
    assert!(line["message"].as_str().unwrap().contains("unauthenticated: "), "{line}");
}

/// A managed model's gRPC call placed by the split goes to the chosen version's upstream with that version named in
/// its message (the upstream would otherwise answer with its default, latest version); a call that names a version
/// keeps it.
#[tokio::test]
async fn grpc_calls_placed_by_the_split_name_the_chosen_version() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("digits");
    for v in ["1", "2"] {
        std::fs::create_dir_all(model.join(v)).unwrap();
        std::fs::copy(repo_root().join("examples/models/digits/1/model.onnx"), model.join(v).join("model.onnx")).unwrap();
    }
    std::fs::write(model.join("config.yaml"), "version_policy: all\n").unwrap();
    let ms = ModelServer::start(dir.path()).await;
    let gw = Gateway::start(&format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  grpc: {{ targets: ["http://{grpc}"], protocol: http2 }}
routes:
  - {{ name: grpc, match: {{ path_prefix: /inference.GRPCInferenceService }}, upstream: grpc }}
models:
  digits:
    versions:
      "2": {{ upstream: grpc, state: stable }}
      "1": {{ upstream: grpc, state: canary, weight: 100 }}
"#,
        grpc = ms.grpc
    ))
    .await;
    let mut client = connect(&gw.addr).await;
    let answered = modelgate_test_support::eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let r = client.model_infer(digits_request("digits", "", vec![1, 1, 8, 8], image())).await;
            r.is_ok_and(|r| r.get_ref().model_version == "1")
        }
    })
    .await;
    assert!(answered, "the canary (version 1, weight 100) did not answer an unversioned call");
    let pinned = client.model_infer(digits_request("digits", "2", vec![1, 1, 8, 8], image())).await.unwrap();
    assert_eq!(pinned.get_ref().model_version, "2");
}
