//! OIP v2 over gRPC with the generated client from the same .proto: every RPC, raw and typed tensors, errors.

use modelgate_serve::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_serve::grpc::pb::*;
use modelgate_test_support::{ModelServer, repo_root};
use tonic::transport::Channel;

async fn client() -> (ModelServer, GrpcInferenceServiceClient<Channel>) {
    let s = ModelServer::start(&repo_root().join("examples/models")).await;
    let c = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc)).await.unwrap();
    (s, c)
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join("examples/digits/golden.json")).unwrap()).unwrap()
}

fn pixels(case: &serde_json::Value) -> Vec<f32> {
    case["input"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn health_and_metadata_rpcs() {
    let (_s, mut c) = client().await;
    assert!(c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = |name: &str, version: &str| ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(c.model_ready(ready("digits", "")).await.unwrap().into_inner().ready);
    assert!(c.model_ready(ready("digits", "1")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("digits", "9")).await.unwrap().into_inner().ready);
    let meta = c.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "modelgate");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));
    let m = c.model_metadata(ModelMetadataRequest { name: "digits".into(), version: String::new() }).await.unwrap().into_inner();
    assert_eq!((m.name.as_str(), m.versions.clone()), ("digits", vec!["1".to_string()]));
    // Named as Triton names its backends, after the runtime the server picked (onnxruntime when present).
    assert!(["onnxruntime_onnx", "tract_onnx"].contains(&m.platform.as_str()), "{}", m.platform);
    assert_eq!((m.inputs[0].name.as_str(), m.inputs[0].datatype.as_str(), m.inputs[0].shape.clone()), ("input", "FP32", vec![-1, 1, 8, 8]));
    assert_eq!((m.outputs[0].name.as_str(), m.outputs[0].shape.clone()), ("logits", vec![-1, 10]));
    let err = c.model_metadata(ModelMetadataRequest { name: "nope".into(), version: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn model_infer_raw_and_typed_contents_match_pytorch() {
    let (_s, mut c) = client().await;
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    let batch: Vec<f32> = cases.iter().take(3).flat_map(pixels).collect();
    let input = |contents| model_infer_request::InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![3, 1, 8, 8],
        contents,
        ..Default::default()
    };
    let check = |logits: &[f32]| {
        for (k, case) in cases.iter().take(3).enumerate() {
            for (j, w) in case["logits"].as_array().unwrap().iter().enumerate() {
                assert!((logits[k * 10 + j] as f64 - w.as_f64().unwrap()).abs() < 1e-4);
            }
        }
    };

    // Raw tensors, as standard clients send them.
    let raw: Vec<u8> = batch.iter().flat_map(|p| p.to_le_bytes()).collect();
    let req = ModelInferRequest {
        model_name: "digits".into(),
        id: "raw-1".into(),
        inputs: vec![input(None)],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    let resp = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!((resp.model_name.as_str(), resp.model_version.as_str(), resp.id.as_str()), ("digits", "1", "raw-1"));
    assert_eq!(resp.outputs[0].shape, vec![3, 10]);
    let logits: Vec<f32> = resp.raw_output_contents[0].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    check(&logits);

    // Typed contents.
    let contents = InferTensorContents { fp32_contents: batch.clone(), ..Default::default() };
    let req = ModelInferRequest {
        model_name: "digits".into(),
        model_version: "1".into(),
        inputs: vec![input(Some(contents))],
        ..Default::default()
    };
    let resp = c.model_infer(req).await.unwrap().into_inner();
    let logits: Vec<f32> = resp.raw_output_contents[0].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    check(&logits);
}

#[tokio::test]
async fn model_infer_errors_are_statuses() {
    let (_s, mut c) = client().await;
    let bad_shape =
        model_infer_request::InferInputTensor { name: "input".into(), datatype: "FP32".into(), shape: vec![1, 8, 8], ..Default::default() };
    let req = ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![bad_shape],
        raw_input_contents: vec![vec![0; 256]],
        ..Default::default()
    };
    let err = c.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("does not match the model's [-1, 1, 8, 8]"), "{}", err.message());
    let short = model_infer_request::InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![1, 1, 8, 8],
        ..Default::default()
    };
    let req = ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![short],
        raw_input_contents: vec![vec![0; 100]],
        ..Default::default()
    };
    let err = c.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("binary_data_size is 100 bytes but 64 FP32 elements take 256"), "{}", err.message());
    let err = c.model_infer(ModelInferRequest { model_name: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
