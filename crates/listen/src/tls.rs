//! TLS termination for a listener: rustls (ring provider), TLS 1.2+ (or 1.3 only), ALPN `h2` and `http/1.1`, and
//! certificates chosen by the client's SNI from a [`CertStore`] that is replaced whole on reload — new connections
//! get the new certificates, open ones keep theirs, nothing is dropped. The same store holds the optional client
//! certificate verification (mTLS): the CA client certificates must chain to, and whether one is required.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

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
    #[error("the client CA cannot be used: {0}")]
    ClientCa(String),
}

/// Client certificate authentication: the CA certificates client chains must lead to, and whether a client
/// without a certificate is refused at the handshake (`required`) or let in for routes to decide.
pub struct ClientAuth {
    pub roots: Vec<CertificateDer<'static>>,
    pub required: bool,
    /// Revocation lists checked for the client's own certificate (fail closed: no list for its issuer refuses it).
    pub crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
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
    /// Client certificate verification, when asked for.
    client: Option<Arc<dyn ClientCertVerifier>>,
}

impl Certs {
    /// Checks every key against its certificate. The first certificate is the default. `Err((index, why))`.
    pub fn prepare(certs: &[Certificate]) -> Result<Certs, (usize, TlsError)> {
        Self::prepare_with(certs, None).map_err(|(i, e)| (i.unwrap_or(0), e))
    }

    /// [`Certs::prepare`] with client certificate authentication. `Err((Some(index), why))` for a certificate,
    /// `Err((None, why))` for the client CA.
    pub fn prepare_with(certs: &[Certificate], client_auth: Option<&ClientAuth>) -> Result<Certs, (Option<usize>, TlsError)> {
        let client = match client_auth {
            Some(c) => Some(client_verifier(c).map_err(|e| (None, e))?),
            None => None,
        };
        let mut prepared = Self::prepare_certs(certs).map_err(|(i, e)| (Some(i), e))?;
        prepared.client = client;
        Ok(prepared)
    }

    fn prepare_certs(certs: &[Certificate]) -> Result<Certs, (usize, TlsError)> {
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
        Ok(Certs { default, exact, wildcard, client: None })
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

/// A webpki verifier for client chains leading to `c.roots`, checking the client's certificate against `c.crls`.
fn client_verifier(c: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in &c.roots {
        roots.add(cert.clone()).map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()));
    let builder = if c.required { builder } else { builder.allow_unauthenticated() };
    let builder = if c.crls.is_empty() { builder } else { builder.with_crls(c.crls.iter().cloned()).only_check_end_entity_revocation() };
    builder.build().map_err(|e| TlsError::ClientCa(e.to_string()))
}

impl CertStore {
    /// The client verifier of the certificates served now.
    fn client(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.current.load().as_ref().and_then(|c| c.client.clone())
    }
}

/// Client authentication as the current [`Certs`] ask: none (no certificate requested), optional or required.
/// Decided per handshake, so a reload that adds, changes or removes `client_auth` applies to new connections.
impl ClientCertVerifier for CertStore {
    fn offer_client_auth(&self) -> bool {
        self.client().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client().is_some_and(|c| c.client_auth_mandatory())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints (allowed by TLS): the client sends the certificate it has, which is verified below.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.client() {
            Some(c) => c.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("client certificates are not accepted".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The names a verified client certificate presents: its subject alternative names, DNS and URI (SPIFFE IDs are
/// URIs). Empty when the certificate cannot be parsed (it was verified by then, so this does not happen).
pub fn client_names(leaf: &CertificateDer<'_>) -> (Vec<String>, Vec<String>) {
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => (cert.valid_dns_names().map(String::from).collect(), cert.valid_uri_names().map(String::from).collect()),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

/// A rustls server config over `store`: TLS 1.2 and 1.3 (or 1.3 only), ALPN `h2` then `http/1.1`, client
/// certificates as the store's current certificates ask.
pub fn server_config(store: Arc<CertStore>, tls13_only: bool) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_client_cert_verifier(store.clone())
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
