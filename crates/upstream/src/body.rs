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
    Stream {
        inner: Incoming,
        limit: Option<Limit>,
    },
    /// The client's stream after the bytes already read from it (`head`, sent first), every chunk (`head`
    /// included) shown to `inspect` before it is sent; an inspection error ends the stream (the upstream sees it
    /// reset). For gRPC streams whose every message is checked.
    /// Boxed: rare, and the common variants' size is what every request moves around.
    Inspected(Box<Inspected>),
}

/// The parts of [`UpstreamBody::Inspected`].
#[derive(Debug)]
pub struct Inspected {
    pub head: Option<Bytes>,
    pub inner: Incoming,
    pub inspect: Box<dyn Inspect>,
    pub limit: Option<Limit>,
}

/// Looks at each chunk of a streamed request body before it goes upstream.
pub trait Inspect: Send + Sync + 'static {
    /// Sees the next chunk; an error stops the body.
    fn data(&mut self, chunk: &[u8]) -> Result<(), BoxError>;
}

impl std::fmt::Debug for dyn Inspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inspect")
    }
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

/// The client's own body failed while it streamed upstream (a malformed chunk, a reset connection): the client's
/// fault, answered 400, and never counted against the upstream's health.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyFailed(#[source] pub hyper::Error);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// === impl UpstreamBody ===

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Stream { inner, limit } => poll_client(inner, limit, None, cx),
            UpstreamBody::Inspected(i) => {
                let Inspected { head, inner, inspect, limit } = &mut **i;
                match head.take() {
                    Some(head) => {
                        if let Err(e) = count(limit, head.len()).and_then(|()| inspect.data(&head)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                        Poll::Ready(Some(Ok(Frame::data(head))))
                    }
                    None => poll_client(inner, limit, Some(inspect.as_mut()), cx),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(b) => b.is_none(),
            UpstreamBody::Stream { inner, .. } => inner.is_end_stream(),
            UpstreamBody::Inspected(i) => i.head.is_none() && i.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Stream { inner, .. } => inner.size_hint(),
            UpstreamBody::Inspected(i) => {
                let head = i.head.as_ref().map_or(0, |h| h.len() as u64);
                let inner = i.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + head);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
        }
    }
}

/// Counts `n` more bytes against a limit.
fn count(limit: &mut Option<Limit>, n: usize) -> Result<(), BoxError> {
    if let Some(l) = limit.as_mut() {
        l.seen += n as u64;
        if l.seen > l.max {
            return Err(Box::new(BodyTooLarge(l.max)));
        }
    }
    Ok(())
}

/// The client's next frame, counted and inspected.
fn poll_client(
    inner: &mut Incoming,
    limit: &mut Option<Limit>,
    inspect: Option<&mut dyn Inspect>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match Pin::new(inner).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            if let Some(data) = frame.data_ref() {
                let checked = count(limit, data.len()).and_then(|()| match inspect {
                    Some(i) => i.data(data),
                    None => Ok(()),
                });
                if let Err(e) = checked {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyFailed(e))))),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// Finds an error of type `T` anywhere in an error's source chain.
pub fn find_in_chain<'e, T: std::error::Error + 'static>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// Finds a [`BodyTooLarge`] anywhere in an error's source chain.
pub fn find_too_large(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    find_in_chain::<BodyTooLarge>(err).map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn too_large_is_found_anywhere_in_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapper(#[source] BodyTooLarge);
        assert_eq!(find_too_large(&Wrapper(BodyTooLarge(10))), Some(10));
        assert_eq!(find_too_large(&std::io::Error::other("no")), None);
    }

    #[tokio::test]
    async fn a_replayable_body_is_sent_whole_and_then_ends() {
        let body = UpstreamBody::Full(Some(Bytes::from_static(b"abc")));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        let empty = UpstreamBody::Full(None);
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn a_streamed_body_past_its_limit_fails_with_body_too_large() {
        // A real client body (hyper's Incoming) over a loopback connection, limited to 4 bytes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = std::sync::Mutex::new(Some(tx));
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let tx = tx.lock().unwrap().take();
                async move {
                    let body = UpstreamBody::Stream { inner: req.into_body(), limit: Some(Limit { max: 4, seen: 0 }) };
                    let outcome = body.collect().await.map(|c| c.to_bytes());
                    if let Some(tx) = tx {
                        let _ = tx.send(outcome.map_err(|e| find_too_large(e.as_ref())));
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("/").header("host", "x").body(http_body_util::Full::new(Bytes::from_static(b"0123456789"))).unwrap();
        let _ = send.send_request(req).await;
        assert_eq!(rx.await.unwrap(), Err(Some(4)), "refused at the limit, as BodyTooLarge");
    }
}
