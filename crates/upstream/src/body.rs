//! The request body sent upstream: a replayable buffer or the client's stream, counted against a size limit.
//! It streams frame by frame; nothing here buffers unless asked to (retry replay).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body sent upstream: empty, a replayable buffer, or the client's stream (optionally size-limited).
#[derive(Debug)]
pub enum UpstreamBody {
    Full(Option<Bytes>),
    Stream { inner: Incoming, limit: Option<Limit> },
}

/// Counts streamed bytes against a limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u64,
    pub seen: u64,
}

/// The error a limited body returns once it passes its limit; found again in the upstream error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeded {0} bytes")]
pub struct BodyTooLarge(pub u64);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// === impl UpstreamBody ===

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Stream { inner, limit } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(l), Some(data)) = (limit.as_mut(), frame.data_ref()) {
                        l.seen += data.len() as u64;
                        if l.seen > l.max {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(l.max)))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(b) => b.is_none(),
            UpstreamBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// Finds a [`BodyTooLarge`] anywhere in an error's source chain.
pub fn find_too_large(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<BodyTooLarge>() {
            return Some(t.0);
        }
        cur = e.source();
    }
    None
}
