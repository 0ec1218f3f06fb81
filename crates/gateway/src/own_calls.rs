//! The gateway's own calls to its upstreams (not a client's request): model metadata for tensor validation and
//! model readiness for managed versions, over gRPC.

use http_body_util::BodyExt;

/// One unary gRPC call of the gateway's own to target `i` of an HTTP/2 upstream: the framed `msg` to `path`. The
/// framed answer (read up to `max` bytes) when the call ends with `grpc-status: 0` — in the trailers, or the headers
/// of a trailers-only answer; `None` otherwise. The caller bounds the time.
pub async fn grpc_unary(
    up: &modelgate_upstream::Upstream,
    client: &modelgate_upstream::Http2Client,
    i: usize,
    path: &str,
    msg: bytes::Bytes,
    max: usize,
) -> Option<bytes::Bytes> {
    let req = http::Request::post(up.uri(i, path).ok()?)
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(modelgate_upstream::body::UpstreamBody::Full(Some(msg)))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, max).collect().await.ok()?;
    let status = body.trailers().and_then(|t| t.get("grpc-status")).or_else(|| parts.headers.get("grpc-status"));
    if status.is_none_or(|s| s != "0") {
        tracing::debug!(?status, path, "gRPC call to the upstream did not succeed");
        return None;
    }
    Some(body.to_bytes())
}
