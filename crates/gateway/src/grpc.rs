//! OIP gRPC calls at the edge: the first message of a call to `inference.GRPCInferenceService` is read after
//! authenticate and before authorize, so the model it names is known to policy, limits, validation, metrics and the
//! audit log as a REST path's is ([`modelgate_pipeline::grpc`] decodes it).
//!
//! - A message over the route's `grpc_max_message` is refused from its length prefix, before it is read.
//! - Unary RPCs: the one message is the whole body; it is kept for the upstream (and retries).
//! - `ModelStreamInfer`: the bytes read so far go first, then the client's stream, every later message checked
//!   ([`StreamCheck`]) as it passes: one message held at a time.

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use modelgate_pipeline::grpc::{self, FrameError, PREFIX_LEN, Rpc, StreamCheck};
use modelgate_pipeline::{Ctx, GatewayError};

use crate::proxy::ClientBody;

/// Reads the call's first message into `ctx` ([`Ctx::grpc_call`]) and returns the body to forward.
pub async fn read_call(rpc: Rpc, ctx: &mut Ctx, mut body: Incoming, max: u64) -> Result<ClientBody, GatewayError> {
    let unary = rpc != Rpc::StreamInfer;
    let mut buf = BytesMut::new();
    let mut first = None;
    loop {
        if first.is_none()
            && let Some((compressed, len)) = grpc::prefix(&buf)
        {
            grpc::check_prefix(compressed, len, max).map_err(|e| refusal(e, max))?;
            first = Some(PREFIX_LEN + len as usize);
        }
        if let Some(n) = first {
            if buf.len() > n && unary {
                return Err(GatewayError::InvalidRequest(format!("a unary gRPC call ({rpc:?}) carries one message; this one sent more")));
            }
            if buf.len() >= n && (!unary || http_body::Body::is_end_stream(&body)) {
                break;
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    // Never more than the first message (and one frame past it) is held.
                    let cap = first.unwrap_or(PREFIX_LEN + max as usize);
                    if buf.len() > cap {
                        return Err(GatewayError::PayloadTooLarge { limit: max });
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(GatewayError::ClientBody),
            None if first.is_some_and(|n| buf.len() >= n) => break,
            // A body with no message at all (a health RPC's empty request is still a 5-byte message).
            None => return Err(refusal(FrameError::Truncated, max)),
        }
    }
    let n = first.expect("the loop ends with a whole first message");
    let head = buf.freeze();
    let call = grpc::decode(rpc, head.slice(PREFIX_LEN..n)).map_err(|e| refusal(e, max))?;
    let forward = if unary {
        ctx.set_body(head, None);
        ClientBody::Buffered
    } else {
        let inspect = Box::new(StreamCheck::new(&call, n, max));
        ClientBody::Inspected { head, inner: body, inspect }
    };
    ctx.set_grpc_call(call);
    Ok(forward)
}

/// An Envoy check of a gRPC call ([`crate::authz::envoy`]): the call's first message from the bytes the check
/// handed over (`with_request_body`), read into `ctx` as [`read_call`] reads a client's. Without them the model is
/// unknown to policy, so the check is refused with what to change.
pub fn given_call(rpc: Rpc, ctx: &mut Ctx, max: u64) -> Result<(), GatewayError> {
    let Some(bytes) = ctx.body().cloned() else {
        return Err(GatewayError::InvalidRequest(
            "a gRPC call is checked with its first message: set with_request_body on Envoy's ext_authz filter".into(),
        ));
    };
    let (compressed, len) = grpc::prefix(&bytes).ok_or_else(|| refusal(FrameError::Truncated, max))?;
    grpc::check_prefix(compressed, len, max).map_err(|e| refusal(e, max))?;
    let end = PREFIX_LEN + len as usize;
    if bytes.len() < end {
        // Envoy's `allow_partial_message` cut the message short.
        return Err(refusal(FrameError::Truncated, max));
    }
    let call = grpc::decode(rpc, bytes.slice(PREFIX_LEN..end)).map_err(|e| refusal(e, max))?;
    ctx.set_grpc_call(call);
    Ok(())
}

fn refusal(e: FrameError, max: u64) -> GatewayError {
    match e {
        FrameError::TooLarge { .. } => GatewayError::PayloadTooLarge { limit: max },
        FrameError::Compressed => GatewayError::UnsupportedEncoding { encoding: "grpc-encoding (compressed messages)".into() },
        e => GatewayError::InvalidRequest(e.to_string()),
    }
}
