//! The response body sent to clients. It streams frame by frame; nothing here buffers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

/// A response body sent to clients: gateway-made bytes or an upstream's streamed body.
#[derive(Debug)]
pub enum Body {
    Full(Option<Bytes>),
    Upstream(Incoming),
    Pooled(modelgate_upstream::pool::PooledBody),
    /// A body that keeps concurrency slots taken until it is sent or dropped.
    Held(Box<Body>, Vec<crate::slot::Slot>),
    /// A sampled request's body: its server span ends when the body is sent or dropped.
    Traced(Box<Body>, modelgate_telemetry::request::ServerSpan),
}

// === impl Body ===

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Body::Full(Some(b.into()))
    }
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream(inner) => Pin::new(inner).poll_frame(cx),
            Body::Pooled(inner) => Pin::new(inner).poll_frame(cx),
            Body::Held(inner, _) | Body::Traced(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Upstream(inner) => inner.is_end_stream(),
            Body::Pooled(inner) => inner.is_end_stream(),
            Body::Held(inner, _) | Body::Traced(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(inner) => inner.size_hint(),
            Body::Pooled(inner) => inner.size_hint(),
            Body::Held(inner, _) | Body::Traced(inner, _) => inner.size_hint(),
        }
    }
}
