//! W3C Trace Context: the gateway continues the caller's trace (`traceparent`) or starts one, and sends upstream a
//! `traceparent` naming its own hop as the parent, so logs of the gateway and the model server share one trace
//! id. `tracestate` passes through untouched. (Span export over OTLP is not built yet.)

use http::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// This request's place in a trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    flags: [u8; 2],
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The low `N` hex digits of `v`, most significant first.
pub(crate) fn hex_into<const N: usize>(mut v: u128) -> [u8; N] {
    let mut out = [0u8; N];
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
    out
}

fn valid_hex(s: &[u8]) -> bool {
    s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) && s.iter().any(|c| *c != b'0')
}

impl TraceContext {
    /// Continues a valid `traceparent` (version 00) with a new span id for this hop, or starts a new trace.
    /// `random` supplies 128 random bits (called once or twice).
    pub fn from_request(h: &HeaderMap, mut random: impl FnMut() -> u128) -> TraceContext {
        let span_id = hex_into::<16>(random() & u64::MAX as u128);
        if let Some(v) = h.get(&TRACEPARENT).map(HeaderValue::as_bytes)
            && v.len() == 55
            && &v[..3] == b"00-"
            && v[35] == b'-'
            && v[52] == b'-'
            && valid_hex(&v[3..35])
            && valid_hex(&v[36..52])
            && v[53..55].iter().all(|c| c.is_ascii_hexdigit())
        {
            let mut trace_id = [0u8; 32];
            trace_id.copy_from_slice(&v[3..35]);
            return TraceContext { trace_id, span_id, flags: [v[53], v[54]] };
        }
        TraceContext { trace_id: hex_into::<32>(random()), span_id, flags: *b"00" }
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// `traceparent` for the upstream request: this hop is the parent.
    pub fn header(&self) -> HeaderValue {
        let mut v = [0u8; 55];
        v[..3].copy_from_slice(b"00-");
        v[3..35].copy_from_slice(&self.trace_id);
        v[35] = b'-';
        v[36..52].copy_from_slice(&self.span_id);
        v[52] = b'-';
        v[53..55].copy_from_slice(&self.flags);
        HeaderValue::from_bytes(&v).expect("ascii")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_valid_parents_and_starts_otherwise() {
        let mut n = 0u128;
        let mut rnd = || {
            n += 1;
            n * 0x1234_5678_9abc_def0_1122_3344_5566_7788
        };
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let t = TraceContext::from_request(&h, &mut rnd);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = t.header();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"), "this hop is the new parent");
        for bad in ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "garbage"] {
            h.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            let t = TraceContext::from_request(&h, &mut rnd);
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(t.header().len(), 55);
        }
    }
}
