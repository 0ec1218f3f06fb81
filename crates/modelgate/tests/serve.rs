//! The model server over OIP v2 REST, with the digits model exported from PyTorch: protocol endpoints, golden
//! outputs, and bad inputs that must be refused with 400 while the server keeps serving.

use http::Method;
use modelgate_test_support::{ModelServer, get, repo_root, send};
use serde_json::{Value, json};

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join("examples/digits/golden.json")).unwrap()).unwrap()
}

async fn server() -> ModelServer {
    ModelServer::start(&repo_root().join("examples/models")).await
}

/// A repository with one model: `onnx` (relative to the repository root) as `name` version 1, with `config`.
fn one_model(onnx: &str, name: &str, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join(name).join("1");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(repo_root().join(onnx), d.join("model.onnx")).unwrap();
    std::fs::write(dir.path().join(name).join("config.yaml"), config).unwrap();
    dir
}

const DIGITS: &str = "examples/models/digits/1/model.onnx";

async fn infer(s: &ModelServer, path: &str, body: Value) -> modelgate_test_support::Resp {
    send(Method::POST, &s.url(path), &[("content-type", "application/json")], body.to_string()).await
}

#[tokio::test]
async fn health_and_metadata_endpoints() {
    let s = server().await;
    assert_eq!(get(&s.url("/v2/health/live")).await.json(), json!({ "live": true }));
    assert_eq!(get(&s.url("/v2/health/ready")).await.json(), json!({ "ready": true }));
    assert_eq!(get(&s.url("/v2")).await.json()["name"], "modelgate");
    let platform = get(&s.url("/v2/models/digits")).await.json()["platform"].clone();
    assert!(platform == "onnxruntime_onnx" || platform == "tract_onnx", "{platform}");
    let expected = json!({
        "name": "digits", "versions": ["1"], "platform": platform,
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8] }],
        "outputs": [{ "name": "logits", "datatype": "FP32", "shape": [-1, 10] }],
    });
    for path in ["/v2/models/digits", "/v2/models/digits/versions/1"] {
        let r = get(&s.url(path)).await;
        assert_eq!(r.json(), expected, "{path}");
        assert_eq!(r.header("x-model-version"), Some("1"));
    }
    for path in ["/v2/models/digits/ready", "/v2/models/digits/versions/1/ready"] {
        assert_eq!(get(&s.url(path)).await.json(), json!({ "name": "digits", "ready": true }), "{path}");
    }
    for path in ["/v2/models/nope", "/v2/models/digits/versions/7", "/v2/models/digits/versions/7/ready", "/v2/models/nope/infer"] {
        let r = get(&s.url(path)).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("nope") || path.contains("/7"), "{path}");
    }
}

#[tokio::test]
async fn batch_of_golden_digits_matches_pytorch() {
    let s = server().await;
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    let data: Vec<Value> = cases.iter().flat_map(|c| c["input"].as_array().unwrap().clone()).collect();
    let r = infer(
        &s,
        "/v2/models/digits/versions/1/infer",
        json!({
            "id": "golden",
            "inputs": [{ "name": "input", "shape": [cases.len(), 1, 8, 8], "datatype": "FP32", "data": data }],
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["model_name"], "digits");
    assert_eq!(j["model_version"], "1");
    assert_eq!(j["id"], "golden");
    let out = &j["outputs"][0];
    assert_eq!(out["name"], "logits");
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(out["shape"], json!([cases.len(), 10]));
    let got: Vec<f64> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want: Vec<f64> = cases.iter().flat_map(|c| c["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap())).collect();
    let max_err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(max_err < 1e-4, "max abs error vs PyTorch: {max_err}");
}

#[tokio::test]
async fn nested_data_and_requested_outputs() {
    let s = server().await;
    let g = golden();
    let flat = g["cases"][0]["input"].clone();
    let rows: Vec<Value> = flat.as_array().unwrap().chunks(8).map(|r| Value::Array(r.to_vec())).collect();
    let a = infer(
        &s,
        "/v2/models/digits/infer",
        json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": flat }] }),
    )
    .await;
    let b = infer(
        &s,
        "/v2/models/digits/infer",
        json!({
            "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [[rows]] }],
            "outputs": [{ "name": "logits" }],
        }),
    )
    .await;
    assert_eq!(a.json()["outputs"], b.json()["outputs"]);
    let r = infer(
        &s,
        "/v2/models/digits/infer",
        json!({
            "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": g["cases"][0]["input"] }],
            "outputs": [{ "name": "probabilities" }],
        }),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("unknown output \"probabilities\""));
}

#[tokio::test]
async fn bad_inputs_are_400_and_the_server_keeps_serving() {
    let s = server().await;
    let ok = golden()["cases"][0]["input"].clone();
    let one = |shape: Value, datatype: &str, data: Value| json!({ "inputs": [{ "name": "input", "shape": shape, "datatype": datatype, "data": data }] });
    let table: Vec<(Value, &str)> = vec![
        (one(json!([1, 1, 8, 8]), "INT64", ok.clone()), "datatype INT64, the model expects FP32"),
        (one(json!([1, 1, 8, 8]), "FP33", ok.clone()), "unknown datatype \"FP33\""),
        (one(json!([1, 1, 8, 7]), "FP32", ok.clone()), "does not match the model's [-1, 1, 8, 8]"),
        (one(json!([1, 8, 8]), "FP32", ok.clone()), "does not match"),
        (one(json!([2, 1, 8, 8]), "FP32", ok.clone()), "holds 128 elements but data has 64"),
        (one(json!([-3, 1, 8, 8]), "FP32", ok.clone()), "does not match"),
        (one(json!([4611686018427387904_i64, 1, 8, 8]), "FP32", ok.clone()), "more than"),
        (one(json!([1, 1, 8, 8]), "FP32", json!(vec!["a"; 64])), "element 0 (Str(\"a\")) is not a valid FP32"),
        (json!({ "inputs": [{ "name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ok }] }), "unknown input \"image\""),
        (json!({ "inputs": [] }), "missing input \"input\""),
        (json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32" }] }), "has no data"),
        (json!({ "input": [] }), "invalid inference request"),
    ];
    for (body, expected) in table {
        let r = infer(&s, "/v2/models/digits/infer", body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(expected), "{expected:?} not in {msg:?}");
    }
    let r = send(Method::POST, &s.url("/v2/models/digits/infer"), &[], "{ not json").await;
    assert_eq!(r.status, 400);
    // Still serving.
    let r = infer(&s, "/v2/models/digits/infer", one(json!([1, 1, 8, 8]), "FP32", golden()["cases"][0]["input"].clone())).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_model_that_fails_to_load_is_reported_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("digits/1");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::copy(repo_root().join("examples/models/digits/1/model.onnx"), good.join("model.onnx")).unwrap();
    let bad = dir.path().join("broken/1");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("model.onnx"), b"not an onnx model").unwrap();
    let s = ModelServer::start(dir.path()).await;
    let r = get(&s.url("/v2/health/ready")).await;
    assert_eq!(r.status, 503, "not every model loaded");
    let r = get(&s.url("/v2/models/broken/versions/1")).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("failed to load"), "{:?}", r.json());
    assert_eq!(get(&s.url("/v2/models/digits/ready")).await.status, 200);
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_each_caller_gets_its_own_rows() {
    let s = std::sync::Arc::new(server().await);
    let g = golden();
    let cases: Vec<Value> = g["cases"].as_array().unwrap().clone();
    let mut tasks = Vec::new();
    for round in 0..8 {
        for (k, c) in cases.iter().enumerate() {
            let (s, c) = (s.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("r{round}-c{k}");
                let r = infer(
                    &s,
                    "/v2/models/digits/infer",
                    json!({
                        "id": id,
                        "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": c["input"] }],
                    }),
                )
                .await;
                assert_eq!(r.status, 200);
                let j = r.json();
                assert_eq!(j["id"], id.as_str());
                let got: Vec<f64> = j["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let want: Vec<f64> = c["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(err < 1e-4, "{id}: got another caller's rows? max err {err}");
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = get(&s.url("/v2/models/digits/stats")).await.json();
    let m = &stats["model_stats"][0];
    let requests = (8 * cases.len()) as u64;
    // The warm-up run is not counted; every request is one inference row.
    assert_eq!(m["inference_count"].as_u64().unwrap(), requests, "{stats}");
    assert_eq!(m["inference_stats"]["success"]["count"].as_u64().unwrap(), requests);
    let executions = m["execution_count"].as_u64().unwrap();
    eprintln!("{requests} requests in {executions} executions");
    assert!(executions < requests, "{requests} concurrent requests ran in {executions} executions: no batching happened");
    assert_eq!(m["batching"]["max_batch_size"], 32);
    // Statistics extension durations (Triton's shape): per request, and per batch size.
    let ns = |k: &str| m["inference_stats"][k]["ns"].as_u64().unwrap();
    assert!(ns("success") > 0 && ns("compute_infer") > 0 && ns("queue") < ns("success"), "{stats}");
    assert!(m["last_inference"].as_u64().unwrap() > 1_700_000_000_000);
    let batches = m["batch_stats"].as_array().unwrap();
    let count = |b: &Value| b["compute_infer"]["count"].as_u64().unwrap();
    assert_eq!(batches.iter().map(count).sum::<u64>(), executions, "one batch_stats entry per execution: {stats}");
    assert_eq!(batches.iter().map(|b| b["batch_size"].as_u64().unwrap() * count(b)).sum::<u64>(), requests, "rows add up: {stats}");
}

#[tokio::test]
async fn binary_tensor_extension_in_and_out() {
    let s = server().await;
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    let pixels: Vec<f32> =
        cases.iter().take(4).flat_map(|c| c["input"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
    let raw: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{ "name": "input", "shape": [4, 1, 8, 8], "datatype": "FP32", "parameters": { "binary_data_size": raw.len() } }],
        "parameters": { "binary_data_output": true },
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&raw);
    let len = header.len().to_string();
    let r = send(Method::POST, &s.url("/v2/models/digits/infer"), &[("inference-header-content-length", &len)], body.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let json_len: usize = r.header("inference-header-content-length").expect("binary response header").parse().unwrap();
    let head: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    let out = &head["outputs"][0];
    assert_eq!(out["parameters"]["binary_data_size"], 4 * 10 * 4);
    assert!(out.get("data").is_none());
    let logits: Vec<f32> = r.body[json_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(logits.len(), 40);
    for (k, c) in cases.iter().take(4).enumerate() {
        for (j, w) in c["logits"].as_array().unwrap().iter().enumerate() {
            assert!((logits[k * 10 + j] as f64 - w.as_f64().unwrap()).abs() < 1e-4);
        }
    }

    // Truncated binary data, a size that does not match the shape, and a JSON length past the body: all 400.
    let truncated = &body[..body.len() - 3];
    let r = send(Method::POST, &s.url("/v2/models/digits/infer"), &[("inference-header-content-length", &len)], truncated.to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("goes past the end"), "{:?}", r.json());
    let wrong =
        json!({ "inputs": [{ "name": "input", "shape": [4, 1, 8, 8], "datatype": "FP32", "parameters": { "binary_data_size": 8 } }] })
            .to_string();
    let mut b = wrong.clone().into_bytes();
    b.extend([0u8; 8]);
    let r =
        send(Method::POST, &s.url("/v2/models/digits/infer"), &[("inference-header-content-length", &wrong.len().to_string())], b).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("binary_data_size is 8 bytes but 256 FP32 elements take 1024"));
    let r = send(Method::POST, &s.url("/v2/models/digits/infer"), &[("inference-header-content-length", "999999")], body).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn metrics_count_known_traffic_per_model_version() {
    let s = server().await;
    let input = golden()["cases"][0]["input"].clone();
    for _ in 0..5 {
        let r = infer(
            &s,
            "/v2/models/digits/infer",
            json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": input }] }),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // A two-row request counts two inferences in one execution.
    let two: Vec<Value> = input.as_array().unwrap().iter().chain(input.as_array().unwrap()).cloned().collect();
    let r = infer(
        &s,
        "/v2/models/digits/infer",
        json!({ "inputs": [{ "name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": two }] }),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(get(&s.url("/metrics")).await.body.to_vec()).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let labels = r#"{model="digits",model_version="1"}"#;
    assert_eq!(value(r#"modelgate_inference_requests_total{model="digits",model_version="1",status="success"}"#), 6.0);
    assert_eq!(value(&format!("modelgate_inference_count_total{labels}")), 7.0);
    assert_eq!(value(&format!("modelgate_inference_exec_count_total{labels}")), 6.0);
    assert_eq!(value(&format!("modelgate_inference_batch_size_count{labels}")), 6.0);
    assert_eq!(value(&format!("modelgate_inference_batch_size_sum{labels}")), 7.0);
    assert_eq!(value(&format!("modelgate_inference_queue_duration_seconds_count{labels}")), 6.0);
    assert_eq!(value(&format!("modelgate_inference_compute_duration_seconds_count{labels}")), 6.0);
    assert_eq!(value(&format!("modelgate_inference_queue_depth{labels}")), 0.0);
}

#[tokio::test]
async fn model_config_selects_versions_and_batching_and_reports_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = repo_root().join("examples/models/digits/1/model.onnx");
    for (model, versions, config) in [
        ("all-versions", &[1, 2][..], Some("version_policy: all\nmax_batch_size: 0\n")),
        ("latest-only", &[1, 2][..], None),
        ("typo", &[1][..], Some("max_batch_sise: 8\n")),
    ] {
        for v in versions {
            let d = dir.path().join(model).join(v.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(&onnx, d.join("model.onnx")).unwrap();
        }
        if let Some(c) = config {
            std::fs::write(dir.path().join(model).join("config.yaml"), c).unwrap();
        }
    }
    let s = ModelServer::start(dir.path()).await;
    assert_eq!(get(&s.url("/v2/models/all-versions")).await.json()["versions"], json!(["1", "2"]));
    assert_eq!(get(&s.url("/v2/models/latest-only")).await.json()["versions"], json!(["2"]));
    assert_eq!(get(&s.url("/v2/models/latest-only/versions/1")).await.status, 404);
    let input = golden()["cases"][0]["input"].clone();
    let r = infer(
        &s,
        "/v2/models/all-versions/versions/1/infer",
        json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": input }] }),
    )
    .await;
    assert_eq!(r.json()["model_version"], "1");
    let stats = get(&s.url("/v2/models/all-versions/versions/1/stats")).await.json();
    assert!(stats["model_stats"][0]["batching"].is_null(), "max_batch_size: 0 turns batching off: {stats}");
    let r = get(&s.url("/v2/models/typo")).await;
    assert_eq!(r.status, 404);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("config.yaml: max_batch_sise: unknown field") && msg.contains("did you mean `max_batch_size`?"), "{msg}");
    assert_eq!(get(&s.url("/v2/health/ready")).await.status, 503, "a model is not served, so the server is not ready");
}

#[tokio::test]
async fn torchserve_style_predictions_take_a_nested_array() {
    let s = server().await;
    let case = &golden()["cases"][0];
    let rows: Vec<Value> = case["input"].as_array().unwrap().chunks(8).map(|r| Value::Array(r.to_vec())).collect();
    // An image without the batch dimension: [1, 8, 8] → the gateway adds the dynamic batch of 1.
    let r = send(Method::POST, &s.url("/predictions/digits"), &[], json!([rows]).to_string()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let logits: Vec<f64> = r.json().as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want: Vec<f64> = case["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(logits.len(), 10);
    assert!(logits.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
    let r = send(Method::POST, &s.url("/predictions/digits/1"), &[], json!([[rows]]).to_string()).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1, "with the batch dimension given, the batch is kept");
    let r = send(Method::POST, &s.url("/predictions/digits"), &[], "[[1, 2], [3]]").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("not rectangular"));
    assert_eq!(send(Method::POST, &s.url("/predictions/nope"), &[], "[1]").await.status, 404);
}

#[tokio::test]
async fn repository_extension_unloads_and_loads_while_serving() {
    let s = std::sync::Arc::new(server().await);
    let input = golden()["cases"][0]["input"].clone();
    let body = json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": input }] });
    // Traffic runs throughout: every answer is a 200 or, while unloaded, a 404 — never a 5xx or a hang.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (s, stop, body) = (s.clone(), stop.clone(), body.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = infer(&s, "/v2/models/digits/infer", body.clone()).await;
                *seen.entry(r.status.as_u16()).or_insert(0) += 1;
            }
            seen
        })
    };
    let index = |s: std::sync::Arc<ModelServer>| async move { send(Method::POST, &s.url("/v2/repository/index"), &[], "").await.json() };
    assert_eq!(index(s.clone()).await, json!([{ "name": "digits", "version": "1", "state": "READY", "reason": "" }]));
    let r = send(Method::POST, &s.url("/v2/repository/models/digits/unload"), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&s.url("/v2/models/digits/ready")).await.status, 404);
    assert_eq!(infer(&s, "/v2/models/digits/infer", body.clone()).await.status, 404);
    assert_eq!(index(s.clone()).await, json!([{ "name": "digits", "state": "UNAVAILABLE", "reason": "unloaded" }]));
    let r = send(Method::POST, &s.url("/v2/repository/models/digits/load"), &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(infer(&s, "/v2/models/digits/infer", body.clone()).await.status, 200);
    assert_eq!(send(Method::POST, &s.url("/v2/repository/models/nope/load"), &[], "").await.status, 404);
    assert_eq!(send(Method::POST, &s.url("/v2/repository/models/nope/unload"), &[], "").await.status, 404);
    assert_eq!(send(Method::POST, &s.url("/v2/repository/models/..%2F..%2Fetc/load"), &[], "").await.status, 404);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.await.unwrap();
    assert!(seen.keys().all(|s| *s == 200 || *s == 404), "{seen:?}");
    assert!(seen.get(&200).copied().unwrap_or(0) > 0, "{seen:?}");
}

#[tokio::test]
async fn request_timeout_counts_queue_time() {
    let s = server().await;
    let rows = 4096;
    let data: Vec<f32> = (0..rows * 64).map(|i| (i % 16) as f32 / 16.0).collect();
    // Far more work than the timeout allows (tokio timers round 1 µs up to 1 ms): 504, and the server goes on.
    let r = infer(
        &s,
        "/v2/models/digits/infer",
        json!({
            "parameters": { "timeout": 1 },
            "inputs": [{ "name": "input", "shape": [rows, 1, 8, 8], "datatype": "FP32", "data": data }],
        }),
    )
    .await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].as_str().unwrap().contains("timeout of 1 µs expired"));
    let input = golden()["cases"][0]["input"].clone();
    let r = infer(
        &s,
        "/v2/models/digits/infer",
        json!({
            "parameters": { "timeout": 30_000_000 },
            "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": input }],
        }),
    )
    .await;
    assert_eq!(r.status, 200);
}

/// The same model on onnxruntime (`backend: onnxruntime`), through the same REST path, gives PyTorch's outputs.
#[tokio::test]
async fn onnxruntime_backend_serves_the_same_outputs() {
    let dir = one_model(DIGITS, "digits-ort", "backend: onnxruntime\nthreads: 1\n");
    let s = ModelServer::start(dir.path()).await;
    assert_eq!(get(&s.url("/v2/health/ready")).await.status, 200, "ORT_DYLIB_PATH must point at libonnxruntime (scripts/test sets it)");
    let g = golden();
    let case = &g["cases"][1];
    let r = infer(
        &s,
        "/v2/models/digits-ort/infer",
        json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": case["input"] }] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got: Vec<f64> = r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want: Vec<f64> = case["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4), "{got:?} vs {want:?}");
}

/// `instances: 3` loads three copies of the model on three threads; concurrent callers still get their own rows,
/// and the statistics, recorded by every instance, add up.
#[tokio::test]
async fn instances_run_batches_on_several_copies_of_the_model() {
    let dir = one_model(DIGITS, "digits3", "instances: 3\nmax_batch_size: 4\n");
    let s = std::sync::Arc::new(ModelServer::start(dir.path()).await);
    let threads: Vec<String> = modelgate_test_support::thread_names(s.proc.pid()).into_iter().filter(|c| c.starts_with("inst")).collect();
    assert_eq!(threads.len(), 3, "one thread per instance: {threads:?}");
    let cases: Vec<Value> = golden()["cases"].as_array().unwrap().clone();
    let mut tasks = Vec::new();
    for round in 0..6 {
        for c in cases.iter().cloned() {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let r = infer(
                    &s,
                    "/v2/models/digits3/infer",
                    json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": c["input"] }] }),
                )
                .await;
                assert_eq!(r.status, 200, "round {round}");
                let got: Vec<f64> = r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let want: Vec<f64> = c["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4), "another caller's rows");
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = get(&s.url("/v2/models/digits3/stats")).await.json();
    let m = &stats["model_stats"][0];
    assert_eq!((m["instances"].as_u64(), m["inference_count"].as_u64()), (Some(3), Some(6 * cases.len() as u64)), "{stats}");
    let rows: u64 = m["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 6 * cases.len() as u64);
    assert!(m["batch_stats"].as_array().unwrap().iter().all(|b| b["batch_size"].as_u64().unwrap() <= 4), "max_batch_size holds: {stats}");
}

/// `inputs`/`outputs` in config.yaml serve tensors under other names and pin dynamic dimensions; a declaration
/// that does not fit the model keeps that version out, with the reason.
#[tokio::test]
async fn config_declares_tensor_names_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = repo_root().join("examples/models/digits/1/model.onnx");
    for (model, config) in [
        (
            "renamed",
            "inputs: [{name: input, alias: image, shape: [-1, 1, 8, 8], datatype: FP32}]\noutputs: [{name: logits, alias: scores}]\n",
        ),
        ("pinned", "inputs: [{name: input, shape: [2, 1, 8, 8]}]\n"),
        ("misfit", "inputs: [{name: input, shape: [-1, 1, 8, 9]}]\n"),
        ("unknown", "outputs: [{name: probabilities}]\n"),
    ] {
        let d = dir.path().join(model).join("1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&onnx, d.join("model.onnx")).unwrap();
        std::fs::write(dir.path().join(model).join("config.yaml"), config).unwrap();
    }
    let s = ModelServer::start(dir.path()).await;
    let meta = get(&s.url("/v2/models/renamed")).await.json();
    assert_eq!((meta["inputs"][0]["name"].as_str(), meta["outputs"][0]["name"].as_str()), (Some("image"), Some("scores")));
    let case = &golden()["cases"][0];
    let r = infer(
        &s,
        "/v2/models/renamed/infer",
        json!({ "inputs": [{ "name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": case["input"] }] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out = &r.json()["outputs"][0];
    assert_eq!(out["name"], "scores");
    let got: Vec<f64> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want: Vec<f64> = case["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
    let r = infer(
        &s,
        "/v2/models/renamed/infer",
        json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": case["input"] }] }),
    )
    .await;
    assert_eq!(r.status, 400, "the model's own name is not served any more");

    // A pinned batch dimension: only batches of 2 pass validation (and batching is off for the model).
    assert_eq!(get(&s.url("/v2/models/pinned")).await.json()["inputs"][0]["shape"], json!([2, 1, 8, 8]));
    let one = infer(
        &s,
        "/v2/models/pinned/infer",
        json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": case["input"] }] }),
    )
    .await;
    assert_eq!(one.status, 400);
    let two: Vec<Value> = case["input"].as_array().unwrap().iter().chain(case["input"].as_array().unwrap()).cloned().collect();
    assert_eq!(
        infer(
            &s,
            "/v2/models/pinned/infer",
            json!({ "inputs": [{ "name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": two }] })
        )
        .await
        .status,
        200
    );

    for (model, reason) in
        [("misfit", "dimension 3 of \"input\" is 8 in the model"), ("unknown", "the model has no output named \"probabilities\"")]
    {
        let r = get(&s.url(&format!("/v2/models/{model}/versions/1"))).await;
        assert_eq!(r.status, 404);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(reason) && msg.contains("config.yaml"), "{model}: {msg}");
    }
    assert_eq!(get(&s.url("/v2/health/ready")).await.status, 503, "not every model loaded");
}

/// Every OIP v2 datatype through REST as JSON and back (tests/data/models/dtypes.onnx passes each through), and
/// BYTES that are not UTF-8, refused with 400.
#[tokio::test]
async fn every_datatype_through_rest_and_bytes_that_are_not_utf8() {
    let repo = one_model("tests/data/models/dtypes.onnx", "dtypes", "backend: tract\nmax_batch_size: 0\n");
    let s = ModelServer::start(repo.path()).await;
    let values = json!({
        "fp16": [1.0, -2.0, 0.5, 65504.0], "fp32": [1.5, -2.25, 0.0, 3.0e38], "fp64": [1.5, -2.25, 1e-300, 1e300],
        "int8": [-128, -1, 0, 127], "int16": [-32768, -1, 0, 32767], "int32": [-2147483648_i64, -1, 0, 2147483647],
        "int64": [i64::MIN, -1, 0, i64::MAX], "uint8": [0, 1, 128, 255], "uint16": [0, 1, 32768, 65535],
        "uint32": [0, 1, 2147483648_u64, 4294967295_u64], "uint64": [0, 1, 1_u64 << 63, u64::MAX],
        "bool": [true, false, false, true], "bytes": ["hello", "", "grüße", "x"],
    });
    let inputs: Vec<Value> = values
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({ "name": format!("x_{k}"), "datatype": datatype(k), "shape": [2, 2], "data": v }))
        .collect();
    let r = infer(&s, "/v2/models/dtypes/infer", json!({ "inputs": inputs })).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    for (k, v) in values.as_object().unwrap() {
        let out = j["outputs"].as_array().unwrap().iter().find(|o| o["name"] == format!("y_{k}")).unwrap();
        assert_eq!((out["datatype"].as_str().unwrap(), &out["data"]), (datatype(k), v), "{k}");
    }

    // BYTES that are not UTF-8 (binary extension): refused before the queue, as the runtimes hold strings.
    refuses_non_utf8_bytes(&s, "dtypes", &values).await;
}

fn datatype(k: &str) -> &'static str {
    match k {
        "fp16" => "FP16",
        "fp32" => "FP32",
        "fp64" => "FP64",
        "int8" => "INT8",
        "int16" => "INT16",
        "int32" => "INT32",
        "int64" => "INT64",
        "uint8" => "UINT8",
        "uint16" => "UINT16",
        "uint32" => "UINT32",
        "uint64" => "UINT64",
        "bool" => "BOOL",
        _ => "BYTES",
    }
}

/// A binary-extension request for `model` whose BYTES input is not UTF-8 is refused with 400 before the queue.
async fn refuses_non_utf8_bytes(s: &ModelServer, model: &str, values: &Value) {
    let (raw, head) = not_utf8_request(values);
    let mut body = head.clone().into_bytes();
    body.extend(&raw);
    let r = send(
        Method::POST,
        &s.url(&format!("/v2/models/{model}/infer")),
        &[("inference-header-content-length", &head.len().to_string())],
        body,
    )
    .await;
    assert_eq!(r.status, 400, "{model}");
    assert!(r.json()["error"].as_str().unwrap().contains("BYTES element 0 is not UTF-8"), "{:?}", r.json());
}

/// A request whose `x_bytes` holds 0xff 0xfe (not UTF-8) as binary data; every other input as JSON.
fn not_utf8_request(values: &Value) -> (Vec<u8>, String) {
    let mut raw = Vec::new();
    for e in [&[0xff_u8, 0xfe][..], b"ok", b"", b"z"] {
        raw.extend((e.len() as u32).to_le_bytes());
        raw.extend(e);
    }
    let inputs: Vec<Value> = values
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| match k.as_str() {
            "bytes" => json!({ "name": "x_bytes", "datatype": "BYTES", "shape": [2, 2], "parameters": { "binary_data_size": raw.len() } }),
            _ => json!({ "name": format!("x_{k}"), "datatype": datatype(k), "shape": [2, 2], "data": v }),
        })
        .collect();
    (raw.clone(), json!({ "inputs": inputs }).to_string())
}

/// The same on onnxruntime.
#[tokio::test]
async fn every_datatype_on_onnxruntime_and_bytes_that_are_not_utf8() {
    let repo = one_model("tests/data/models/dtypes.onnx", "dtypes-ort", "backend: onnxruntime\nthreads: 1\nmax_batch_size: 0\n");
    let s = ModelServer::start(repo.path()).await;
    let values = json!({
        "fp16": [1.0, -2.0, 0.5, 2.0], "fp32": [1, 2, 3, 4], "fp64": [1, 2, 3, 4], "int8": [1, 2, 3, 4], "int16": [1, 2, 3, 4],
        "int32": [1, 2, 3, 4], "int64": [1, 2, 3, 4], "uint8": [1, 2, 3, 4], "uint16": [1, 2, 3, 4], "uint32": [1, 2, 3, 4],
        "uint64": [1, 2, 3, 4], "bool": [true, false, true, false], "bytes": ["a", "b", "c", "d"],
    });
    refuses_non_utf8_bytes(&s, "dtypes-ort", &values).await;
    // The same request with UTF-8 strings passes, every datatype included.
    let inputs: Vec<Value> = values
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({ "name": format!("x_{k}"), "datatype": datatype(k), "shape": [2, 2], "data": v }))
        .collect();
    let r = infer(&s, "/v2/models/dtypes-ort/infer", json!({ "inputs": inputs })).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// `serve --model-name NAME` (KServe's layout): the directory itself is the one model — with numbered version
/// directories, or a flat `model.onnx` as version 1 — served under NAME, and nothing else is.
#[tokio::test]
async fn a_directory_served_as_one_named_model() {
    let g = golden();
    let case = &g["cases"][0];
    let request = json!({ "inputs": [{ "name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": case["input"] }] });
    let flat = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join(DIGITS), flat.path().join("model.onnx")).unwrap();
    for dir in [repo_root().join("examples/models/digits"), flat.path().to_path_buf()] {
        let s = ModelServer::start_with(&dir, &["--model-name", "mnist-small"], &[]).await;
        let meta = get(&s.url("/v2/models/mnist-small")).await.json();
        assert_eq!((meta["name"].as_str(), meta["versions"].clone()), (Some("mnist-small"), json!(["1"])), "{}", dir.display());
        let r = infer(&s, "/v2/models/mnist-small/infer", request.clone()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let logits = r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>();
        let argmax = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(argmax as u64, case["label"].as_u64().unwrap());
        assert_eq!(get(&s.url("/v2/models/digits")).await.status, 404);
        assert_eq!(get(&s.url("/v2/health/ready")).await.status, 200);
    }
}
