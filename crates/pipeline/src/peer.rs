//! The client end of a connection.

use std::net::SocketAddr;

use crate::principal::{Method, Principal};

/// The client end of a connection, with its address pre-rendered once per connection for `X-Forwarded-For`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub ip: http::HeaderValue,
    /// Connected over TLS.
    pub tls: bool,
    /// The client's verified TLS certificate (mTLS), when it presented one.
    pub client_cert: Option<std::sync::Arc<ClientCert>>,
}

/// The names of a client's verified certificate: its subject alternative names.
#[derive(Debug)]
pub struct ClientCert {
    /// SAN DNS names.
    pub dns: Vec<String>,
    /// SAN URIs (e.g. SPIFFE IDs `spiffe://example.org/ns/team-a/sa/scorer`).
    pub uris: Vec<String>,
    /// The principal it makes, built once per connection on first use.
    principal: std::sync::OnceLock<Option<std::sync::Arc<Principal>>>,
}

impl ClientCert {
    pub fn new(dns: Vec<String>, uris: Vec<String>) -> ClientCert {
        ClientCert { dns, uris, principal: std::sync::OnceLock::new() }
    }

    /// The caller this certificate authenticates; `None` for a certificate without a SAN URI or DNS name. Its
    /// name ([`ClientCert::name`]) is credential, subject and consumer; its SANs are the claims `san_uri` and
    /// `san_dns` (policy rules may match them with globs).
    pub fn principal(&self) -> Option<&std::sync::Arc<Principal>> {
        self.principal
            .get_or_init(|| {
                let name = self.name()?.to_string();
                let mut p = Principal::new(Method::Mtls, name.clone(), name.clone(), name, Vec::new(), Vec::new());
                p.claims.insert("san_uri".into(), self.uris.clone().into());
                p.claims.insert("san_dns".into(), self.dns.clone().into());
                Some(std::sync::Arc::new(p))
            })
            .as_ref()
    }

    /// The name the certificate identifies its holder by: the first SAN URI, else the first SAN DNS name.
    pub fn name(&self) -> Option<&str> {
        self.uris.first().or(self.dns.first()).map(String::as_str)
    }
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer { addr, ip: ip_value(addr.ip()), tls: false, client_cert: None }
    }
}

/// An IP address as a header value; IPv4 (the common case, and once per Envoy check) without the formatter.
fn ip_value(ip: std::net::IpAddr) -> http::HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return http::HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
    };
    let mut out = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(octet).as_bytes();
        out[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    http::HeaderValue::from_bytes(&out[..len]).expect("digits and dots are a valid header value")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_values_read_as_the_addresses_display() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.40", "255.255.255.255", "::1", "2001:db8::8:800:200c:417a"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(super::ip_value(ip), ip.to_string().as_str());
        }
    }
}
