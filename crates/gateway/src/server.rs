//! Listeners: the proxy and the admin API, each an accept loop serving HTTP/1.1 and h2c, with graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use modelgate_config::{Config, ConfigErrors, Source, Vars};
use tokio::net::TcpListener;

/// Connections the admin listener keeps open at once (operators and scrapers, not traffic).
const ADMIN_CONNECTIONS: usize = 256;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use modelgate_pipeline::Body;
use modelgate_pipeline::peer::Peer;

use crate::reload::Shared;
use crate::snapshot::Registries;
use crate::snapshot::Snapshot;

/// A running gateway: bound listeners and their tasks.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The status listener (`admin.status_listen`), if any.
    pub status_addr: Option<SocketAddr>,
    /// The plain-HTTP listener redirecting to HTTPS (`tls.redirect_http`), if any.
    pub redirect_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// Process-level hooks the binary provides.
#[derive(Default, Clone, Copy)]
pub struct Options {
    /// Runs on the reload thread after each reload, e.g. to return freed memory to the OS.
    pub after_reload: Option<fn()>,
    /// What the proxy listener does: forward (the gateway) or answer checks (`modelgate authz`).
    pub mode: crate::driver::Mode,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
}

// === impl Gateway ===

impl Gateway {
    /// Compiles `config`, binds both listeners and starts serving. Must run inside a tokio runtime.
    pub async fn start(source: Source, vars: Vars, config: Config) -> Result<Gateway, StartError> {
        Self::start_with(source, vars, config, Options::default()).await
    }

    /// [`Gateway::start`] with process-level hooks.
    pub async fn start_with(source: Source, vars: Vars, config: Config, options: Options) -> Result<Gateway, StartError> {
        let mut registry = Registries { checks_only: options.mode == crate::driver::Mode::Check, ..Registries::default() };
        let listen = config.listen;
        let admin_listen = config.admin_listen;
        let status_listen = config.status_listen;
        let (header_timeout, max_connections) = (config.header_read_timeout, config.max_connections);
        let tls13_only = config.tls.as_ref().map(|t| t.tls13_only);
        let redirect_http = config.tls.as_ref().and_then(|t| t.redirect_http);
        let watch = config.watch && matches!(source, Source::File(_));
        let debounce = config.reload_debounce;
        let snapshot = Snapshot::compile(config, &mut registry)?;
        let shared = Shared::new(source, vars, snapshot, registry, options.after_reload);
        let mode = options.mode;

        let bind = |what, addr| async move { TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source }) };
        let proxy_listener = bind("gateway", listen).await?;
        let admin_listener = bind("admin", admin_listen).await?;
        let addr = proxy_listener.local_addr().map_err(|source| StartError::Bind { what: "gateway", addr: listen, source })?;
        let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind { what: "admin", addr: admin_listen, source })?;
        let sso = shared.sso();
        let _ = sso.admin_addr.set(admin_addr);
        let _ = sso.proxy_addr.set(addr);

        let status = match status_listen {
            Some(addr) => {
                let l = bind("status", addr).await?;
                let local = l.local_addr().map_err(|source| StartError::Bind { what: "status", addr, source })?;
                Some((l, local))
            }
            None => None,
        };
        let redirect = match tls13_only.and(redirect_http) {
            Some(addr) => {
                let l = bind("HTTP redirect", addr).await?;
                let local = l.local_addr().map_err(|source| StartError::Bind { what: "HTTP redirect", addr, source })?;
                Some((l, local))
            }
            None => None,
        };
        let (stop, stopped) = watch::channel(false);
        let s = shared.clone();
        let proxy_settings = modelgate_listen::Settings {
            header_read_timeout: Some(header_timeout),
            http2_only: false,
            max_connections: Some(max_connections),
            tls: tls13_only.map(|only| modelgate_listen::tls::server_config(shared.registry_tls(), only)),
            // Checks are answered with a few hundred bytes: each in one write.
            small_writes: mode != crate::driver::Mode::Proxy,
        };
        let admin_settings = modelgate_listen::Settings {
            max_connections: Some(ADMIN_CONNECTIONS),
            tls: None,
            small_writes: false,
            ..proxy_settings.clone()
        };
        // The redirect listener: the proxy's settings in clear text.
        let redirect_settings = modelgate_listen::Settings { tls: None, ..proxy_settings.clone() };
        let proxy = tokio::spawn(serve(proxy_listener, stopped.clone(), proxy_settings, move |req, peer: &Peer| {
            let snap = s.snapshot.load_full();
            // Envoy's ext_authz over gRPC: the request is in the call's message.
            if mode == crate::driver::Mode::Check && crate::authz::envoy::is_check(&req) {
                futures_util::future::Either::Left(crate::authz::envoy::check(snap, req, peer.clone()))
            } else {
                futures_util::future::Either::Right(crate::driver::handle(snap, req, peer.clone(), mode))
            }
        }));
        let s = shared.clone();
        let admin = tokio::spawn(serve(admin_listener, stopped.clone(), admin_settings, move |req, peer: &Peer| {
            crate::admin::handle(s.clone(), req, peer.addr)
        }));
        if let Some(watching) = watch.then(|| shared.clone().watch_files(debounce)).flatten() {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = watching => {}
                    _ = stopped.changed() => {}
                }
            });
        }
        // Namespaces shared through Redis: follow the other gateways' changes.
        {
            let (s, mut stopped) = (shared.clone(), stopped.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = crate::namespaces::follow(s) => {}
                    _ = stopped.changed() => {}
                }
            });
        }
        let mut servers = vec![proxy, admin];
        let status_addr = status.as_ref().map(|(_, a)| *a);
        if let Some((listener, _)) = status {
            let s = shared.clone();
            let settings = modelgate_listen::Settings { max_connections: Some(ADMIN_CONNECTIONS), tls: None, ..redirect_settings.clone() };
            servers.push(tokio::spawn(serve(listener, stopped.clone(), settings, move |req, _peer: &Peer| {
                std::future::ready(crate::admin::status(&s, &req))
            })));
        }
        let redirect_addr = redirect.as_ref().map(|(_, a)| *a);
        if let Some((listener, _)) = redirect {
            let https_port = addr.port();
            servers.push(tokio::spawn(serve(listener, stopped.clone(), redirect_settings, move |req, _peer: &Peer| {
                std::future::ready(to_https(&req, https_port))
            })));
        }
        Ok(Gateway { addr, admin_addr, status_addr, redirect_addr, shared, stop, servers })
    }

    /// Serves until SIGTERM or SIGINT, reloading on SIGHUP, then drains.
    pub async fn run_until_signal(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => { let _ = self.shared.reload("sighup").await; }
            }
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests finish for up to `server.shutdown_grace`, then returns.
    pub async fn shutdown(self) {
        let grace = self.shared.snapshot.load().config.shutdown_grace;
        tracing::info!(?grace, "shutting down: no new connections, draining in-flight requests");
        let _ = self.stop.send(true);
        let all = async {
            for s in self.servers {
                let _ = s.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("shutdown grace elapsed with requests still in flight; closing them");
        }
    }
}

/// The 308 answer of the HTTP→HTTPS redirect listener: the same host, path and query on the TLS port.
fn to_https(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
    let Some(host) = host.map(|h| h.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(h, |(h, _)| h)) else {
        return modelgate_pipeline::error::json_error(
            http::StatusCode::BAD_REQUEST,
            "missing_host",
            "a Host header is needed to redirect to HTTPS",
            &http::HeaderValue::from_static("-"),
        );
    };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut resp = Response::new(Body::Full(None));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    match http::HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(http::header::LOCATION, v);
            resp
        }
        Err(_) => modelgate_pipeline::error::json_error(
            http::StatusCode::BAD_REQUEST,
            "invalid_host",
            "the Host header cannot be redirected",
            &http::HeaderValue::from_static("-"),
        ),
    }
}

/// Serves `handler` on `listener` until `stop` changes, then drains (the accept loop is [`modelgate_listen`]'s).
async fn serve<H, F>(listener: TcpListener, mut stop: watch::Receiver<bool>, settings: modelgate_listen::Settings, handler: H)
where
    H: Fn(Request<Incoming>, &Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let stopped = async move {
        let _ = stop.changed().await;
    };
    let tls = settings.tls.is_some();
    modelgate_listen::serve(listener, settings, stopped, move |accepted: &modelgate_listen::Accepted| {
        let h = handler.clone();
        let client_cert = accepted.client_certificates.as_ref().and_then(|chain| chain.first()).map(|leaf| {
            let (dns, uris) = modelgate_listen::tls::client_names(leaf);
            Arc::new(modelgate_pipeline::peer::ClientCert::new(dns, uris))
        });
        let peer = Peer { tls, client_cert, ..Peer::new(accepted.addr) };
        service_fn(move |req| {
            // Boxed once here: the request future is large (it holds every phase's state), and hyper moves the
            // service future several times; moving a pointer instead saved ~13k instructions per request.
            let fut = Box::pin(h(req, &peer));
            async move { Ok::<_, Infallible>(fut.await) }
        })
    })
    .await;
}
