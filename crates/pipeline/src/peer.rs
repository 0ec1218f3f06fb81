//! The client end of a connection.

use std::net::SocketAddr;

/// The client end of a connection, with its address pre-rendered once per connection for `X-Forwarded-For`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub ip: http::HeaderValue,
    /// Connected over TLS.
    pub tls: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = http::HeaderValue::from_str(&addr.ip().to_string()).expect("an IP address is a valid header value");
        Peer { addr, ip, tls: false }
    }
}
