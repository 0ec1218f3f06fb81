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

/// A gateway with one catch-all route to `up`, with `server` settings and extra upstream settings.
fn one_route(up: &str, server: &str, upstream_extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nserver: {server}\nupstreams: {{ u: {{ targets: [\"http://{up}\"]{upstream_extra} }} }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n"
    )
}

/// Raw bytes to the gateway; the whole answer (until the gateway closes, or 3 s).
async fn raw(addr: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Smuggling and malformed framing, sent as raw bytes: each refused by the gateway with a 4xx before anything reaches
/// the upstream, never answered twice on one connection, and a client's broken body never counts against the
/// upstream's health (it is the client's fault: 400, not 502).
#[tokio::test]
async fn smuggling_and_malformed_framing_are_refused_at_the_edge() {
    let up = modelgate_test_support::Upstream::start("u").await;
    let gw = Gateway::start(&one_route(&up.addr, "{}", ", passive_health: { consecutive_failures: 1, cooldown: 60s }")).await;
    let addr = gw.addr.clone();
    // CL and TE together (RFC 9112 §6.1): hyper drops Content-Length, reads the chunked body, forwards it chunked
    // without Content-Length, answers once and closes the connection, so the request smuggled behind is never read.
    let smuggle = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = raw(&addr, smuggle).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    assert!(answer.contains("connection: close") && !answer.contains("/smuggled"), "{answer:?}");
    assert!(!answer.contains("content-length\\\":"), "the upstream saw no Content-Length: {answer:?}");
    let cases: &[(&str, Vec<u8>, &str)] = &[
        (
            "two Content-Lengths",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            "HTTP/1.1 400",
        ),
        ("obs-fold", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "a transfer coding other than chunked",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc".to_vec(),
            "HTTP/1.1 400",
        ),
        ("space before the colon", b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nabcde".to_vec(), "HTTP/1.1 400"),
        ("a 70 KB URI", [b"GET /".as_slice(), &[b'a'; 70_000], b" HTTP/1.1\r\nHost: a\r\n\r\n"].concat(), "HTTP/1.1 414"),
        ("a 500 KB header", [b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: ".as_slice(), &[b'b'; 500_000], b"\r\n\r\n"].concat(), "HTTP/1.1 431"),
        (
            "a malformed chunk size",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (what, bytes, want) in cases {
        let answer = raw(&addr, bytes).await;
        assert!(answer.starts_with(want), "{what}: {answer:?}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{what}: one answer, the connection closed: {answer:?}");
        assert!(!answer.contains("smuggled"), "{what}");
    }
    // The upstream is still healthy (passive checks count 1 failure): a client's broken body is not its failure.
    assert_eq!(send(Method::GET, &gw.url("/x"), &[], Bytes::new()).await.status, 200);
}

/// Slowloris: headers trickled a line a second never complete; the connection is closed at `header_read_timeout`.
#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = modelgate_test_support::Upstream::start("u").await;
    let gw = Gateway::start(&one_route(&up.addr, "{ header_read_timeout: 1s }", "")).await;
    let mut s = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            tokio::select! {
                _ = tick.tick() => { if s.write_all(b"X-A: b\r\n").await.is_err() { return; } }
                n = s.read(&mut buf) => { if n.map_or(true, |n| n == 0 || buf[..n].starts_with(b"HTTP/1.1 408")) { return; } }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the trickling connection was still open after 10 s");
}

/// At `server.max_connections` the gateway stops accepting: a connection past the cap is not served until one
/// closes, then it is.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = modelgate_test_support::Upstream::start("u").await;
    let gw = Gateway::start(&one_route(&up.addr, "{ max_connections: 2 }", "")).await;
    let request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s); // kept open (keep-alive)
    }
    let mut third = tokio::net::TcpStream::connect(&gw.addr).await.unwrap(); // queued by the kernel
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), third.read_exact(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served at a cap of 2");
    drop(held.pop());
    tokio::time::timeout(std::time::Duration::from_secs(5), third.read_exact(&mut buf)).await.expect("served once a slot freed").unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}
