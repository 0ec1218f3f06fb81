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

/// An upstream in the test: it reads each request's head, says so on `got`, and answers `200 ok` only once
/// `release` is set (then at once).
async fn holding_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (got_tx, got) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (got_tx, mut released) = (got_tx.clone(), released.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    let _ = got_tx.send(());
                    if released.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, got, release)
}

/// Past `server.max_in_flight` (here 2, both waiting on the upstream), a request is shed at once with 503
/// `overloaded` and `Retry-After`, before anything reaches the upstream; once the two are answered, requests pass
/// again (their places were given back).
#[tokio::test]
async fn past_max_in_flight_requests_are_shed_until_places_free() {
    let (up, mut got, release) = holding_upstream().await;
    let gw = Gateway::start(&one_route(&up, "{ max_in_flight: 2 }", "")).await;
    let held: Vec<_> = ["/a", "/b"].iter().map(|p| tokio::spawn(send(Method::GET, gw.url(p).leak(), &[], Bytes::new()))).collect();
    for _ in 0..2 {
        got.recv().await.unwrap();
    }
    let shed = send(Method::GET, &gw.url("/c"), &[], Bytes::new()).await;
    shed.assert_error(503, "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    release.send(true).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(send(Method::GET, &gw.url("/d"), &[], Bytes::new()).await.status, 200, "places given back");
    assert!(got.try_recv().is_ok() && got.try_recv().is_err(), "the shed request never reached the upstream");
    let metrics = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    // Shed before matching: counted without a route.
    assert!(metrics.contains(r#"modelgate_requests_total{route="-",model="-",model_version="-",consumer="-",code="5xx"} 1"#), "{metrics}");
}

/// Raw HTTP/2 frames (RFC 9113 §4.1): the 9-byte header, then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET {path}` as an HPACK header block: static-table `:method GET`, `:scheme http`, and literals (not indexed)
/// for `:path` and `:authority`.
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'a']);
    block
}

/// An h2c connection past the preface and the settings exchange.
async fn h2_connect(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    loop {
        let (kind, flags, _, _) = h2_read(&mut s).await.expect("the server's settings");
        if kind == 0x4 && flags & 1 == 0 {
            s.write_all(&h2_frame(0x4, 1, 0, &[])).await.unwrap(); // ACK
            return s;
        }
    }
}

/// The next frame (type, flags, stream, payload), or `None` once the connection is closed.
async fn h2_read(s: &mut tokio::net::TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff, payload))
}

/// HTTP/2 rapid reset (CVE-2023-44487): 1,000 streams each opened and cancelled at once, in one burst. The
/// gateway answers with GOAWAY `ENHANCE_YOUR_CALM` and closes that connection; few of the streams reached the
/// upstream, and other clients are still served.
#[tokio::test]
async fn http2_rapid_reset_is_cut_off_with_goaway() {
    use tokio::io::AsyncWriteExt;
    let up = modelgate_test_support::Upstream::start("u").await;
    let gw = Gateway::start(&one_route(&up.addr, "{}", "")).await;
    let mut s = h2_connect(&gw.addr).await;
    let block = h2_get("/x");
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let stream = 2 * i + 1;
        burst.extend(h2_frame(0x1, 0x5, stream, &block)); // HEADERS, END_STREAM | END_HEADERS
        burst.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let _ = s.write_all(&burst).await; // the server may close before it has read it all
    let mut goaway = None;
    while let Some((kind, _, _, payload)) = h2_read(&mut s).await {
        if kind == 0x7 {
            goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
    }
    assert_eq!(goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM, then the connection closed");
    let reached = up.count().await;
    assert!(reached < 100, "{reached} of the 1,000 cancelled streams reached the upstream");
    assert_eq!(send(Method::GET, &gw.url("/x"), &[], Bytes::new()).await.status, 200, "others are still served");
}

/// HTTP/2 stream flood: 300 streams opened at once on one connection, each waiting on the upstream. At most the
/// advertised 200 run; the others are refused (`REFUSED_STREAM`, safe for the client to retry), so one connection
/// cannot hold more than its share.
#[tokio::test]
async fn http2_streams_past_the_concurrency_limit_are_refused() {
    use tokio::io::AsyncWriteExt;
    let (up, mut got, release) = holding_upstream().await;
    let gw = Gateway::start(&one_route(&up, "{}", "")).await;
    let mut s = h2_connect(&gw.addr).await;
    let block = h2_get("/x");
    let burst: Vec<u8> = (0..300u32).flat_map(|i| h2_frame(0x1, 0x5, 2 * i + 1, &block)).collect();
    s.write_all(&burst).await.unwrap();
    let mut refused = 0;
    while refused < 100 {
        let (kind, _, _, payload) = h2_read(&mut s).await.expect("the connection stays open");
        if kind == 0x3 && payload == 7u32.to_be_bytes() {
            refused += 1;
        }
    }
    let mut reached = 0;
    while reached < 200 {
        got.recv().await.unwrap();
        reached += 1;
    }
    assert!(got.try_recv().is_err(), "no more than 200 reached the upstream");
    release.send(true).unwrap();
    // The 200 admitted streams are answered.
    let mut answered = 0;
    while answered < 200 {
        let (kind, flags, _, _) = h2_read(&mut s).await.expect("answers");
        if kind == 0x1 || (kind == 0x0 && flags & 1 == 1) {
            answered += usize::from(kind == 0x1);
        }
    }
}
