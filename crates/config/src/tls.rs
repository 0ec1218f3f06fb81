//! TLS settings → validated types: the listener's certificates and keys, and the CA an upstream's `https://`
//! targets are verified with, read from their PEM files at load so that `modelgate validate` and a reload report a
//! bad file by name, before anything is served with it.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ConfigError;
use crate::model::{CertificateConfig, ClientAuthConfig, ClientIdentity, Origin, TlsConfig, UpstreamTls};
use crate::raw::{RawTls, RawUpstreamTls};

/// The listener's `tls` section.
pub(crate) fn listener(file: &Path, base: &Path, raw: &RawTls, errors: &mut Vec<ConfigError>) -> Option<TlsConfig> {
    let before = errors.len();
    if raw.certificates.is_empty() {
        errors.push(ConfigError::new(file, "tls.certificates", "no certificate").hint("add { cert: server.pem, key: server.key }"));
    }
    let tls13_only = match raw.min_version.as_str() {
        "1.2" => false,
        "1.3" => true,
        other => {
            errors.push(
                ConfigError::new(file, "tls.min_version", format!("unsupported TLS version {other:?}")).hint("write \"1.2\" or \"1.3\""),
            );
            false
        }
    };
    let mut certificates = Vec::new();
    for (i, c) in raw.certificates.iter().enumerate() {
        let path = format!("tls.certificates[{i}]");
        let (cert_file, key_file) = (base.join(&c.cert), base.join(&c.key));
        let chain = certificates_in(&cert_file).map_err(|e| {
            errors.push(
                ConfigError::new(file, format!("{path}.cert"), format!("{}: {e}", cert_file.display()))
                    .hint("a PEM file with the chain, leaf first"),
            )
        });
        let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
            errors.push(
                ConfigError::new(file, format!("{path}.key"), format!("{}: {}", key_file.display(), pem_problem(&e)))
                    .hint("a PEM file with one PKCS#8, PKCS#1 or SEC1 private key"),
            )
        });
        let mut hosts = Vec::new();
        for (j, h) in c.hosts.iter().enumerate() {
            let name = h.trim().to_ascii_lowercase();
            let plain = name.strip_prefix("*.").unwrap_or(&name);
            if plain.is_empty() || plain.contains('*') || rustls_pki_types::ServerName::try_from(plain).is_err() {
                errors.push(
                    ConfigError::new(file, format!("{path}.hosts[{j}]"), format!("{h:?} is not a host name"))
                        .hint("write a DNS name like models.example.com or *.example.com"),
                );
            }
            hosts.push(name);
        }
        if let (Ok(chain), Ok(key)) = (chain, key) {
            certificates.push(Arc::new(CertificateConfig {
                origin: Origin { file: file.to_path_buf(), path },
                cert_file,
                key_file,
                hosts,
                chain,
                key,
            }));
        }
    }
    let redirect_http = raw.redirect_http.as_ref().and_then(|a| {
        a.parse::<std::net::SocketAddr>()
            .map_err(|_| {
                errors.push(
                    ConfigError::new(file, "tls.redirect_http", format!("invalid listen address {a:?}"))
                        .hint("write IP:PORT, e.g. 0.0.0.0:80"),
                )
            })
            .ok()
    });
    let client_auth = raw.client_auth.as_ref().and_then(|c| {
        let ca_file = base.join(&c.ca);
        certificates_in(&ca_file)
            .map_err(|e| {
                errors.push(
                    ConfigError::new(file, "tls.client_auth.ca", format!("{}: {e}", ca_file.display()))
                        .hint("a PEM file of the CA certificates that issue your clients' certificates"),
                )
            })
            .ok()
            .map(|roots| ClientAuthConfig { ca_file, roots, required: c.required, crl_files: Vec::new(), crls: Vec::new() })
            .map(|mut auth| {
                for (i, crl) in c.crl.iter().enumerate() {
                    let crl_file = base.join(crl);
                    match revocation_lists_in(&crl_file) {
                        Ok(lists) => auth.crls.extend(lists),
                        Err(e) => errors.push(
                            ConfigError::new(file, format!("tls.client_auth.crl[{i}]"), format!("{}: {e}", crl_file.display()))
                                .hint("a PEM file with `-----BEGIN X509 CRL-----` blocks, as `openssl ca -gencrl` writes"),
                        ),
                    }
                    auth.crl_files.push(crl_file);
                }
                auth
            })
    });
    (errors.len() == before).then_some(TlsConfig { certificates, tls13_only, redirect_http, client_auth })
}

/// An upstream's `tls` section.
pub(crate) fn upstream(file: &Path, base: &Path, path: &str, raw: &RawUpstreamTls, errors: &mut Vec<ConfigError>) -> UpstreamTls {
    let roots = raw.ca.as_ref().and_then(|ca| {
        let ca_file = base.join(ca);
        certificates_in(&ca_file)
            .map_err(|e| {
                errors.push(
                    ConfigError::new(file, format!("{path}.tls.ca"), format!("{}: {e}", ca_file.display()))
                        .hint("a PEM file of CA certificates, or omit `ca` to trust the usual public roots"),
                )
            })
            .ok()
            .map(Arc::new)
    });
    if let Some(name) = &raw.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        errors.push(
            ConfigError::new(file, format!("{path}.tls.server_name"), format!("{name:?} is not a host name or IP address"))
                .hint("the name in the targets' certificates, e.g. models.internal"),
        );
    }
    let client_identity = match (&raw.client_cert, &raw.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let (cert_file, key_file) = (base.join(cert), base.join(key));
            let chain = certificates_in(&cert_file).map_err(|e| {
                errors.push(ConfigError::new(file, format!("{path}.tls.client_cert"), format!("{}: {e}", cert_file.display())))
            });
            let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
                errors.push(
                    ConfigError::new(file, format!("{path}.tls.client_key"), format!("{}: {}", key_file.display(), pem_problem(&e)))
                        .hint("a PEM file with one PKCS#8, PKCS#1 or SEC1 private key"),
                )
            });
            match (chain, key) {
                (Ok(chain), Ok(key)) => Some(Arc::new(ClientIdentity { chain, key })),
                _ => None,
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            errors.push(
                ConfigError::new(file, format!("{path}.tls"), "client_cert and client_key go together")
                    .hint("set both: the certificate the gateway presents and its private key"),
            );
            None
        }
    };
    UpstreamTls { roots, server_name: raw.server_name.clone(), client_identity }
}

/// Every certificate in a PEM file; at least one.
fn certificates_in(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| pem_problem(&e))?.collect::<Result<Vec<_>, _>>().map_err(|e| pem_problem(&e))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in it".into());
    }
    Ok(certs)
}

/// Every CRL in a PEM file; at least one.
fn revocation_lists_in(path: &Path) -> Result<Vec<rustls_pki_types::CertificateRevocationListDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let lists = rustls_pki_types::CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| pem_problem(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(&e))?;
    if lists.is_empty() {
        return Err("no X509 CRL block in it".into());
    }
    Ok(lists)
}

fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read it: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind in it".into(),
        other => format!("not valid PEM: {other}"),
    }
}
