//! Path normalization before routing (path safety). The normalized path is what routes match and exactly what is
//! forwarded upstream, so no route can be bypassed by spelling a path differently.
//!
//! Rules (RFC 3986 §6.2.2 plus Envoy's conservative choices):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; other escapes are kept, hex
//!   uppercased;
//! - an encoded slash or backslash (`%2F`, `%5C`) or NUL (`%00`) is rejected: it would let one segment pose as two;
//! - a raw backslash or `;` is rejected: upstreams disagree on them (some read `\` as `/`, Tomcat and Spring cut
//!   `;params` from a segment, so `..;` climbs there), and a path must mean to the upstream what it meant to
//!   routing and policy (write them percent-encoded, `%5C` is refused and `%3B` passes as data);
//! - empty segments (`//`) collapse; `.` segments are dropped; `..` removes the previous segment, and one that
//!   would climb above the root is rejected;
//! - a trailing slash is kept.

use std::borrow::Cow;

/// Normalizes a request path, borrowing when it is already normal (the common case).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if !path.starts_with('/') {
        return Err("the path must start with /");
    }
    if path.contains(['\\', ';']) {
        return Err("the path has a raw backslash or `;`; percent-encode `;` as %3B");
    }
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<String> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for raw in path[1..].split('/') {
        if raw.is_empty() {
            continue;
        }
        let seg = decode_segment(raw)?;
        match seg.as_str() {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err("the path climbs above the root with ..");
                }
            }
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || trailing {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'%') {
        return true;
    }
    b.windows(2).any(|w| w == b"//" || w == b"/.")
}

fn decode_segment(seg: &str) -> Result<String, &'static str> {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) else {
                return Err("the path has an invalid percent-escape");
            };
            let byte = (h * 16 + l) as u8;
            match byte {
                b'/' | b'\\' => return Err("the path has an encoded slash or backslash"),
                0 => return Err("the path has an encoded NUL"),
                c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => out.push(c as char),
                c => {
                    out.push('%');
                    out.push_str(&format!("{c:02X}"));
                }
            }
            i += 3;
        } else {
            // Copy the run up to the next escape as text: characters, not bytes (a byte-wise copy would turn a
            // multi-byte character into several; found by fuzzing, fuzz/fuzz_targets/path_normalize.rs).
            let end = b[i..].iter().position(|&c| c == b'%').map_or(b.len(), |n| i + n);
            out.push_str(&seg[i..end]);
            i = end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn table() {
        let ok = [
            ("/", "/"),
            ("/v2/models/a/infer", "/v2/models/a/infer"),
            ("//v2//models///a", "/v2/models/a"),
            ("/v2/models/a/../b", "/v2/models/b"),
            ("/v2/models/a/./b/", "/v2/models/a/b/"),
            ("/v2/%2e%2e/admin", "/admin"),
            ("/v2/models/%2E%2E/x", "/v2/x"),
            ("/%76%32/models", "/v2/models"),
            ("/a/%7euser", "/a/~user"),
            ("/a/%c3%a9", "/a/%C3%A9"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/%3b..", "/a/%3B.."),
            // Found by fuzzing: characters beyond ASCII (only reachable from callers other than an HTTP parser,
            // which refuses them raw) are kept, not turned into one character per byte.
            ("/\u{31f}.K//x%41", "/\u{31f}.K/xA"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        let bad = [
            "/..",
            "/a/../..",
            "/%2e%2e",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a%00",
            "/a%zz",
            "/a%4",
            "v2/x",
            "/a/..;/b",
            "/a;x/b",
            "/a\\..\\b",
            "/v2/models/public/..;/secret",
        ];
        for input in bad {
            assert!(normalize(input).is_err(), "{input} should be rejected");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(normalize("/v2/models/a/infer").unwrap(), std::borrow::Cow::Borrowed(_)));
    }
}
