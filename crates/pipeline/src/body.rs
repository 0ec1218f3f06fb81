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
    /// A body whose bytes are also handed to a shadow comparison when it ends ([`Copied`]).
    Copied(Box<Body>, Copied),
    /// A gRPC answer made here: one message's bytes, then trailers (`grpc-status`).
    Message(Option<Bytes>, Option<http::HeaderMap>),
}

/// The copy of a response body kept for a shadow comparison: its chunks (reference-counted, not copied) up to a
/// size, handed over when the body ends. Past the size, or when the body is dropped before its end, the receiver
/// gets nothing.
#[derive(Debug)]
pub struct Copied {
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    to: Option<tokio::sync::oneshot::Sender<Option<Vec<Bytes>>>>,
}

impl Copied {
    pub fn new(max: usize, to: tokio::sync::oneshot::Sender<Option<Vec<Bytes>>>) -> Copied {
        Copied { chunks: Vec::new(), len: 0, max, to: Some(to) }
    }

    fn seen(&mut self, frame: Option<&Result<Frame<Bytes>, hyper::Error>>) {
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    self.len += d.len();
                    if self.len <= self.max {
                        self.chunks.push(d.clone());
                    } else {
                        self.chunks = Vec::new();
                    }
                }
            }
            Some(Err(_)) => self.to = None,
            None => {
                if let Some(to) = self.to.take() {
                    let _ = to.send((self.len <= self.max).then(|| std::mem::take(&mut self.chunks)));
                }
            }
        }
    }
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
            Body::Message(data, trailers) => {
                Poll::Ready(data.take().map(Frame::data).or_else(|| trailers.take().map(Frame::trailers)).map(Ok))
            }
            Body::Upstream(inner) => Pin::new(inner).poll_frame(cx),
            Body::Pooled(inner) => Pin::new(inner).poll_frame(cx),
            Body::Held(inner, _) | Body::Traced(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Copied(inner, copy) => {
                let polled = Pin::new(inner.as_mut()).poll_frame(cx);
                if let Poll::Ready(frame) = &polled {
                    copy.seen(frame.as_ref());
                    // The server may stop polling once the body says it ended.
                    if frame.is_some() && inner.is_end_stream() {
                        copy.seen(None);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Message(data, trailers) => data.is_none() && trailers.is_none(),
            Body::Upstream(inner) => inner.is_end_stream(),
            Body::Pooled(inner) => inner.is_end_stream(),
            Body::Held(inner, _) | Body::Traced(inner, _) | Body::Copied(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Message(data, _) => SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(inner) => inner.size_hint(),
            Body::Pooled(inner) => inner.size_hint(),
            Body::Held(inner, _) | Body::Traced(inner, _) | Body::Copied(inner, _) => inner.size_hint(),
        }
    }
}
