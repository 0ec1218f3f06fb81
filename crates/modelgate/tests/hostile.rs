//! Hostile input, as an attacker without a credential would send it (issue 16's confirmed defects): what they send
//! must not grow metrics, live stats or memory, and must not break the audit log or stop the gateway restarting.

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, ModelServer, bin, create_key, get, repo_root, send};

/// Random-looking path text, different each call (xorshift; no crate needed for junk).
fn junk(state: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (b'a' + (*state % 26) as u8) as char
        })
        .collect()
}

fn config(ms: &str, keys: &std::path::Path, audit: &std::path::Path) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
audit: {{ path: "{audit}", fsync: always }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
routes:
  - name: models
    match: {{ path_prefix: "/v2/models/" }}
    upstream: models
    plugins: [ {{ auth: {{ methods: [api_key] }} }} ]
"#,
        keys = keys.display(),
        audit = audit.display(),
    )
}

/// 3,000 unauthenticated requests, each naming a different made-up 1 KB version (and 3,000 made-up models): every
/// one refused, and neither
/// `/metrics` nor the per-version stats of `/admin/models` grow (labels come only from what an upstream answered).
#[tokio::test]
async fn unauthenticated_paths_add_no_labels_and_no_stats() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &[]).await;
    let gw = Gateway::start(&config(&ms.addr, &keys, &dir.path().join("audit.log"))).await;
    // Known traffic first: digits version 1 answered by the model server.
    let r = send(Method::GET, &gw.url("/v2/models/digits/versions/1"), &[("x-api-key", &key)], Bytes::new()).await;
    assert_eq!(r.status, 200);
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let refuse = async |n: usize, seed: &mut u64| {
        for _ in 0..n {
            let path = format!("/v2/models/digits/versions/{}", junk(seed, 1024));
            assert_eq!(send(Method::GET, &gw.url(&path), &[], Bytes::new()).await.status, 401);
            // And made-up models, also refused.
            let path = format!("/v2/models/{}/infer", junk(seed, 200));
            assert_eq!(send(Method::POST, &gw.url(&path), &[], Bytes::new()).await.status, 401);
        }
    };
    // The first refusals add their (fixed) series; after that nothing grows but the counts.
    refuse(100, &mut seed).await;
    let before = get(&gw.admin_url("/metrics")).await.body.len();
    let models_before = get(&gw.admin_url("/admin/models")).await.body.len();
    refuse(2900, &mut seed).await;
    let metrics = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    assert!(metrics.len() < before + 64, "/metrics grew from {before} to {} bytes:\n{metrics}", metrics.len());
    assert!(!metrics.contains("aaa") && metrics.lines().all(|l| l.len() < 400), "no label from a path:\n{metrics}");
    assert!(metrics.contains(r#"model="digits",model_version="other""#), "refused versions count under `other`");
    let models = get(&gw.admin_url("/admin/models")).await;
    assert!(models.body.len() < models_before + 64, "/admin/models grew from {models_before} to {}", models.body.len());
}

/// One unauthenticated request with a 60 KB path once wrote a 60 KB audit line, and the next start refused the
/// log. Now the line is short (the path cut, marked and hashed), the gateway restarts on it and the chain verifies.
#[tokio::test]
async fn a_huge_path_cannot_stop_the_gateway_restarting() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    create_key(&keys, "team-a", &[]).await;
    let audit = dir.path().join("audit.log");
    let yaml = config(&ms.addr, &keys, &audit);
    let gw = Gateway::start(&yaml).await;
    let mut seed = 7;
    let path = format!("/v2/models/digits/versions/{}", junk(&mut seed, 60_000));
    // `fsync: always`: the refusal's line is on disk when the answer comes.
    assert_eq!(send(Method::GET, &gw.url(&path), &[], Bytes::new()).await.status, 401);
    drop(gw); // killed, as a crash would
    let text = std::fs::read_to_string(&audit).unwrap();
    let longest = text.lines().map(str::len).max().unwrap();
    assert!(longest < 4096, "an audit line of {longest} bytes");
    assert!(text.contains("bytes, sha256:"), "the cut value is marked and hashed");

    let gw = Gateway::start(&yaml).await;
    assert_eq!(send(Method::GET, &gw.url("/v2/models/digits"), &[], Bytes::new()).await.status, 401);
    drop(gw);
    let out = std::process::Command::new(bin()).args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
