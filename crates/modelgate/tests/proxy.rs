//! Proxy core: headers, HTTP/2, trailers, streaming without buffering, size limits.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use modelgate_test_support::{Gateway, Upstream, send};

fn config(upstream: &str, protocol: &str, plugins: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  u: {{ targets: [\"http://{upstream}\"], protocol: {protocol} }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: u
    plugins: [{plugins}]
"
    )
}

/// A request body of `left` bytes produced in 64 KiB chunks; `exact` controls whether its length is declared.
struct Repeat {
    left: u64,
    exact: bool,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 65536] = [7u8; 65536];
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }
    fn size_hint(&self) -> SizeHint {
        if self.exact { SizeHint::with_exact(self.left) } else { SizeHint::default() }
    }
}

#[tokio::test]
async fn forwarding_headers_and_request_ids() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up.addr, "http1", "")).await;
    let r = send(
        Method::GET,
        &gw.url("/echo"),
        &[
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("x-request-id", "client-id-42"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-kept", "yes"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &r.json()["headers"];
    assert!(seen.get("x-hop").is_none(), "headers named in Connection are hop-by-hop: {seen}");
    assert!(seen.get("connection").is_none_or(|v| v != "x-hop"), "{seen}");
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["x-request-id"], "client-id-42");
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], gw.addr);
    assert_eq!(r.header("x-request-id"), Some("client-id-42"));

    // A malformed id is replaced, and the new one is both forwarded and returned.
    let r = send(Method::GET, &gw.url("/echo"), &[("x-request-id", "has spaces; and junk")], "").await;
    let id = r.header("x-request-id").expect("generated id").to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());
}

#[tokio::test]
async fn h2c_clients_and_grpc_style_trailers_pass_through() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up.addr, "http2", "")).await;
    let client: Client<_, http_body_util::Empty<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();

    let resp = client.request(Request::get(gw.url("/echo")).header("te", "trailers").body(Default::default()).unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["version"], "HTTP/2.0", "the upstream was reached over HTTP/2");
    assert_eq!(echo["headers"]["te"], "trailers", "te: trailers survives for gRPC");

    let resp = client.request(Request::get(gw.url("/trailers")).body(Default::default()).unwrap()).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers forwarded");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-upstream"], "u");
    assert_eq!(collected.to_bytes(), "payload");
}

#[tokio::test]
async fn streams_200_mb_both_ways_with_bounded_memory() {
    const SIZE: u64 = 200 << 20;
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up.addr, "http1", "")).await;
    let client: Client<_, Repeat> = Client::builder(TokioExecutor::new()).build_http();

    let req = Request::post(gw.url("/sink")).body(Repeat { left: SIZE, exact: true }).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["received"], SIZE, "the upstream received every byte");

    let req = Request::get(gw.url(&format!("/stream/{SIZE}"))).body(Repeat { left: 0, exact: true }).unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, SIZE);

    let peak_mib = gw.proc.peak_rss_kib() / 1024;
    assert!(peak_mib < 64, "gateway peak RSS {peak_mib} MiB after streaming 2×200 MiB: bodies must not be buffered");
}

#[tokio::test]
async fn request_size_limits_body_and_headers() {
    let up = Upstream::start("u").await;
    let gw =
        Gateway::start(&config(&up.addr, "http1", "{ request_size: { max_body: 1KiB, max_header_count: 20, max_header_bytes: 2KiB } }"))
            .await;

    // Declared too large: rejected before anything is forwarded.
    send(Method::POST, &gw.url("/sink"), &[], vec![0u8; 2000]).await.assert_error(413, "payload_too_large");
    assert_eq!(up.count().await, 0);
    // Within the limit: forwarded.
    let r = send(Method::POST, &gw.url("/sink"), &[], vec![0u8; 1024]).await;
    assert_eq!(r.json()["received"], 1024);

    // Chunked (no Content-Length): counted while streaming.
    let client: Client<_, Repeat> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(Request::post(gw.url("/sink")).body(Repeat { left: 300_000, exact: false }).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["error"]["code"], "payload_too_large");

    let many: Vec<(String, String)> = (0..25).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    send(Method::GET, &gw.url("/echo"), &many, "").await.assert_error(431, "headers_too_large");
    let big = "v".repeat(3000);
    send(Method::GET, &gw.url("/echo"), &[("x-big", &big)], "").await.assert_error(431, "headers_too_large");
}
