//! TLS toward `https://` targets: rustls (ring provider) verifying the target's certificate against the upstream's
//! CA (`tls.ca`) or the Mozilla roots, for the name in `tls.server_name` or the target's host; presenting the
//! gateway's own certificate (`tls.client_cert`) to targets that ask for one.

use std::sync::Arc;

use http::uri::Authority;
use modelgate_config::model::UpstreamTls;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

/// What an upstream needs to open TLS connections.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    /// The configured name (`tls.server_name`), if any.
    pub server_name: Option<ServerName<'static>>,
}

impl TlsClient {
    /// A client for `tls`, offering the ALPN protocols `alpn` (e.g. `h2`, `http/1.1`).
    pub fn new(tls: &UpstreamTls, alpn: &[&[u8]]) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.roots {
            Some(ca) => {
                let (_added, ignored) = roots.add_parsable_certificates(ca.iter().cloned());
                if ignored > 0 {
                    tracing::warn!(ignored, "some CA certificates of an upstream's tls.ca could not be parsed");
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_root_certificates(roots);
        let mut config = match &tls.client_identity {
            None => builder.with_no_client_auth(),
            Some(id) => match builder.clone().with_client_auth_cert(id.chain.clone(), id.key.clone_key()) {
                Ok(config) => config,
                Err(e) => {
                    // The files were read at load; a key that does not fit its certificate shows here. Targets that
                    // require a client certificate then refuse the handshake (502 upstream_tls_failed).
                    tracing::error!(error = %e, "an upstream's tls.client_cert/client_key cannot be used; connecting without");
                    builder.with_no_client_auth()
                }
            },
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server_name = tls.server_name.as_deref().and_then(|n| ServerName::try_from(n.to_string()).ok());
        TlsClient { config: Arc::new(config), server_name }
    }

    /// The name to verify (and send as SNI) for a target at `authority`.
    pub fn name_for(&self, authority: &Authority) -> Result<ServerName<'static>, std::io::Error> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }

    /// An HTTPS-or-HTTP connector for hyper-util's client, offering `alpn`.
    pub fn connector(
        &self,
        connector: hyper_util::client::legacy::connect::HttpConnector,
        http2: bool,
    ) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
        // hyper-rustls sets ALPN itself from the enabled versions.
        let mut config = (*self.config).clone();
        config.alpn_protocols.clear();
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
        let builder = match &self.server_name {
            Some(n) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(n.clone())),
            None => builder,
        };
        if http2 { builder.enable_http2().wrap_connector(connector) } else { builder.enable_http1().wrap_connector(connector) }
    }
}
