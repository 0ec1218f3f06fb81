//! `x-request-id`: the client's if well-formed, else a new one. Returned on every response, forwarded upstream,
//! written to the access and audit logs.

use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `x-request-id` if well-formed (1–128 of `A-Z a-z 0-9 - _ . :`), else a new one.
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':')) {
            return v.clone();
        }
    }
    new_request_id()
}

/// 32 hex digits from the per-thread id generator the trace ids use: unique without shared state.
pub fn new_request_id() -> HeaderValue {
    let buf = modelgate_telemetry::hex::<32>(modelgate_telemetry::random128());
    HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("bad id with spaces"));
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert!(generated.as_bytes().iter().all(u8::is_ascii_hexdigit));
        h.insert(&X_REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 32, "too long: replaced");
        assert_ne!(new_request_id(), new_request_id());
    }
}
