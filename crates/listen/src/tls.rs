//! TLS termination for a listener: rustls (ring provider), TLS 1.2+ (or 1.3 only), ALPN `h2` and `http/1.1`, and
//! certificates chosen by the client's SNI from a [`CertStore`] that is replaced whole on reload — new connections
//! get the new certificates, open ones keep theirs, nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One certificate chain (leaf first), its key, and the SNI names it is served for (lowercase; `*.example.com`
/// matches one label).
pub struct Certificate {
    pub hosts: Vec<String>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Why a certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the private key cannot be used: {0}")]
    Key(rustls::Error),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    #[error("the certificate cannot be used: {0}")]
    Certificate(rustls::Error),
}

/// The certificates a listener serves, swapped whole on reload.
#[derive(Default, Debug)]
pub struct CertStore {
    current: ArcSwapOption<Certs>,
}

/// Certificates ready to serve, checked against their keys.
#[derive(Debug)]
pub struct Certs {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Certs {
    /// Checks every key against its certificate. The first certificate is the default. `Err((index, why))`.
    pub fn prepare(certs: &[Certificate]) -> Result<Certs, (usize, TlsError)> {
        let provider = rustls::crypto::ring::default_provider();
        let mut default = None;
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for (i, c) in certs.iter().enumerate() {
            let key = provider.key_provider.load_private_key(c.key.clone_key()).map_err(|e| (i, TlsError::Key(e)))?;
            let certified = Arc::new(CertifiedKey::new(c.chain.clone(), key));
            match certified.keys_match() {
                Ok(()) => {}
                Err(rustls::Error::InconsistentKeys(_)) => return Err((i, TlsError::Mismatch)),
                Err(e) => return Err((i, TlsError::Certificate(e))),
            }
            for h in &c.hosts {
                match h.strip_prefix("*.") {
                    Some(domain) => wildcard.entry(domain.to_string()).or_insert_with(|| certified.clone()),
                    None => exact.entry(h.clone()).or_insert_with(|| certified.clone()),
                };
            }
            default.get_or_insert(certified);
        }
        let Some(default) = default else { return Err((0, TlsError::Certificate(rustls::Error::NoCertificatesPresented))) };
        Ok(Certs { default, exact, wildcard })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else { return self.default.clone() };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return c.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(c) = self.wildcard.get(parent)
        {
            return c.clone();
        }
        self.default.clone()
    }
}

impl CertStore {
    /// Serves `certs` to connections from now on.
    pub fn install(&self, certs: Certs) {
        self.current.store(Some(Arc::new(certs)));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.pick(hello.server_name()))
    }
}

/// A rustls server config over `store`: TLS 1.2 and 1.3 (or 1.3 only), ALPN `h2` then `http/1.1`, no client
/// certificates.
pub fn server_config(store: Arc<CertStore>, tls13_only: bool) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
