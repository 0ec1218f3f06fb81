//! Accepting connections, for every server in modelgate: the gateway's proxy and admin listeners, the model
//! server's REST and gRPC listeners, and the demo upstream. One loop, so each of them gets the same behaviour:
//!
//! - TCP_NODELAY on every connection; HTTP/1.1 and HTTP/2 (h2c) on one port, or HTTP/2 only (gRPC); optionally
//!   TLS ([`tls`]) with HTTP/2 by ALPN, the handshake bounded by the header read timeout (10 s without one);
//! - an accept error (out of file descriptors, say) is logged and retried after a short back-off, never spun on;
//! - at most `max_connections` open at once: at the cap the loop stops accepting until one closes;
//! - on stop, the listener closes at once and open connections finish their in-flight requests (graceful drain);
//!   the caller bounds how long it waits.
//!
//! Nothing here knows about requests beyond hyper's `Service`: below every other crate but `config`.

#![deny(unsafe_code)]

pub mod tls;

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// How long to wait before accepting again after an accept error.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Connection settings of a listener.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// HTTP/1.1 requests whose headers take longer than this are closed (slowloris); `None`: hyper's default.
    pub header_read_timeout: Option<Duration>,
    /// Serve HTTP/2 only (gRPC); otherwise HTTP/1.1 and h2c by preface.
    pub http2_only: bool,
    /// Connections open at once; past it the loop stops accepting until one closes (new ones wait in the kernel's
    /// accept queue). `None`: no cap.
    pub max_connections: Option<usize>,
    /// Terminate TLS with this config (certificates, versions, ALPN); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// For listeners whose answers are small (`modelgate authz`): the connection says it has no vectored writes,
    /// so HTTP/2 copies a DATA payload under 1 KiB into its frame buffer instead of chaining it, and a gRPC answer
    /// (HEADERS, DATA, trailers) leaves in one write instead of two — one wake-up less for the proxy waiting on
    /// it. Large bodies are then copied too: off for the gateway's proxy listener.
    pub small_writes: bool,
}

/// How long a TLS handshake may take when the listener has no header read timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection as the service for it is made: the peer's address and, over TLS with client authentication, the
/// client's verified certificate chain (leaf first).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub addr: SocketAddr,
    pub client_certificates: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

/// Accepts connections on `listener` until `stop` resolves, serving each with the service `make` returns for it
/// (over TLS, once the handshake is done); then waits for open connections to finish their in-flight requests.
pub async fn serve<M, S, B>(listener: TcpListener, settings: Settings, stop: impl Future<Output = ()>, make: M)
where
    M: Fn(&Accepted) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let make = std::sync::Arc::new(make);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's default header cap (100) is kept: raising it makes hyper allocate and initialize the larger header
    // array for every request (measured: ~4 % of CPU at 1000).
    let mut http1 = builder.http1();
    http1.timer(TokioTimer::new());
    if let Some(t) = settings.header_read_timeout {
        http1.header_read_timeout(t);
    }
    builder.http2().timer(TokioTimer::new());
    let builder = if settings.http2_only { builder.http2_only() } else { builder };
    let tls = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let handshake_timeout = settings.header_read_timeout.unwrap_or(HANDSHAKE_TIMEOUT);
    let mut stop = std::pin::pin!(stop);
    let slots = settings.max_connections.map(|n| std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1))));
    loop {
        // A free connection slot first (at the cap, stop accepting: the kernel queues new connections).
        let slot = match &slots {
            Some(s) => tokio::select! {
                permit = s.clone().acquire_owned() => Some(permit.expect("the semaphore is never closed")),
                () = &mut stop => break,
            },
            None => None,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying shortly");
                        #[allow(clippy::disallowed_methods, reason = "a back-off, not a wait for a condition")]
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let vectored = !settings.small_writes;
                let Some(acceptor) = &tls else {
                    let service = make(&Accepted { addr: peer, client_certificates: None });
                    let io = TokioIo::new(Io { inner: stream, vectored });
                    let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        drop(slot);
                    });
                    continue;
                };
                // The handshake runs in the connection's task: a slow or silent client never holds the accept loop.
                let (accepting, builder, watcher) = (acceptor.accept(stream), builder.clone(), graceful.watcher());
                let make = make.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(handshake_timeout, accepting).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let client_certificates = stream.get_ref().1.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                    let service = make(&Accepted { addr: peer, client_certificates });
                    let io = TokioIo::new(Io { inner: stream, vectored });
                    if let Err(e) = watcher.watch(builder.serve_connection(io, service).into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection whose vectored writes can be hidden from hyper ([`Settings::small_writes`]); otherwise the stream
/// itself.
struct Io<T> {
    inner: T,
    vectored: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.vectored && self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"hi"))))
    }

    #[tokio::test]
    async fn serves_until_stopped_then_drains_and_closes_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let served =
            tokio::spawn(serve(listener, Settings::default(), async { drop(stop_rx.await) }, |_| hyper::service::service_fn(hello)));

        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"), "{answer}");

        stop_tx.send(()).unwrap();
        served.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed after stop");
    }

    #[tokio::test]
    async fn http2_only_refuses_http1() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Settings { http2_only: true, ..Settings::default() };
        tokio::spawn(serve(listener, settings, std::future::pending(), |_| hyper::service::service_fn(hello)));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        // An HTTP/2 client is served.
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(Request::get("http://x/").body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hi");
    }
}
