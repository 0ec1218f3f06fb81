//! `guard` (validate phase, and on responses): the agent-traffic guard against prompt injection and data
//! exfiltration. It reads every text of a request — each JSON string (so the `BYTES` tensors of an OIP v2 request
//! and any JSON API's fields), or the whole body if it is not JSON — and applies, in order:
//!
//! 1. `max_text_length`: a longer text is blocked;
//! 2. `deny_patterns`: a regex set compiled once; a match is blocked;
//! 3. `detectors`: PII and secrets — `email`, `phone`, `credit_card` (with the Luhn check), `iban` (with the
//!    mod-97 check), `aws_access_key`, `private_key` (PEM blocks), `jwt` — each with an action: `block` (400
//!    `content_blocked`), `redact` (the match becomes `[REDACTED:<detector>]` and the rewritten body goes upstream)
//!    or `log`.
//!
//! On OIP gRPC calls the texts are the `BYTES` elements of the message's inputs; a `redact` finding there blocks
//! (reason `redact_on_grpc`: the gateway does not rewrite protobuf messages).
//!
//! On responses, `response.max_size` and the same detectors keep a model from leaking secrets (block: 502
//! `response_blocked`; redact). Every detection is a metric (`modelgate_guard_detections_total`) and an audit
//! event naming the detector and action; the matched text is never logged, audited or echoed.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HeaderValue};
use http::request;
use regex::{Regex, RegexSet};
use serde::Deserialize;

use modelgate_config::model::PluginSpec;
use modelgate_config::{ByteSize, ConfigError};

use modelgate_pipeline::plugin::{Flow, Plugin, audit_event, audited, settings};
use modelgate_pipeline::{Ctx, GatewayError};
use modelgate_telemetry::audit::Audit;
use modelgate_telemetry::metrics::{GuardLabels, Metrics};

use modelgate_config::model::RouteConfig;

pub const NAME: &str = "guard";

/// Settings of `guard`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Checks on request texts.
    #[serde(default)]
    pub request: Option<RequestGuardConfig>,
    /// Checks on upstream responses.
    #[serde(default)]
    pub response: Option<ResponseGuardConfig>,
}

/// `guard.request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestGuardConfig {
    /// Longest text (one JSON string, or the whole non-JSON body) in characters; a longer one is blocked. Unset:
    /// no limit.
    #[serde(default)]
    pub max_text_length: Option<usize>,
    /// Regular expressions (Rust `regex` syntax; `(?i)` for case-insensitive) whose match blocks the request, e.g.
    /// `(?i)ignore (all )?(previous|prior) instructions`.
    #[serde(default)]
    pub deny_patterns: Vec<String>,
    /// Detector → action (`block`, `redact`, `log`), e.g. `{credit_card: block, email: redact}`.
    #[serde(default)]
    pub detectors: std::collections::BTreeMap<String, Action>,
    /// Largest request body read. Default `8MiB` (larger: 413).
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

/// `guard.response`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseGuardConfig {
    /// Largest upstream response body; a larger one is refused with 502 `response_too_large`. Default `8MiB`.
    #[serde(default = "default_max_body")]
    pub max_size: ByteSize,
    /// Detector → action on response texts (`block` answers 502 `response_blocked`).
    #[serde(default)]
    pub detectors: std::collections::BTreeMap<String, Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Block,
    Redact,
    Log,
}

fn default_max_body() -> ByteSize {
    ByteSize(8 << 20)
}

/// The detectors, by name.
pub const DETECTORS: &[&str] = &["email", "phone", "credit_card", "iban", "aws_access_key", "private_key", "jwt"];

pub struct Guard {
    route: Arc<str>,
    request: Option<Side>,
    deny: Option<RegexSet>,
    max_text: Option<usize>,
    max_body: u64,
    response: Option<(u64, Side)>,
    audit: Option<Arc<Audit>>,
    /// Where detections are counted (`modelgate_guard_detections_total`).
    metrics: Arc<Metrics>,
}

/// The detectors of one direction, with their actions.
struct Side {
    detectors: Vec<(Detector, Action)>,
}

struct Detector {
    name: &'static str,
    re: Regex,
    /// A check on the match beyond the pattern (Luhn, mod 97).
    valid: fn(&str) -> bool,
}

/// What scanning found: the first blocking reason, and the (detector, action) pairs to record.
#[derive(Default)]
struct Findings {
    blocked: Option<String>,
    seen: Vec<(&'static str, Action)>,
    changed: bool,
}

/// Builds `guard` for `route`; detections are counted in `metrics` and audited in `audit` when auditing is on.
pub fn build(
    spec: &PluginSpec,
    route: &RouteConfig,
    audit: Option<Arc<Audit>>,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: GuardConfig = settings(spec)?;
    let err = |path: String, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{path}", spec.origin.path), msg);
    let side = |dets: &std::collections::BTreeMap<String, Action>, at: &str| -> Result<Side, ConfigError> {
        let mut detectors = Vec::new();
        for (name, action) in dets {
            let d = detector(name)
                .ok_or_else(|| err(format!("{at}.detectors.{name}"), format!("unknown detector {name:?}")).hint(DETECTORS.join(", ")))?;
            detectors.push((d, *action));
        }
        Ok(Side { detectors })
    };
    let (request, deny, max_text, max_body) = match &c.request {
        Some(r) => {
            let deny = if r.deny_patterns.is_empty() {
                None
            } else {
                for (i, p) in r.deny_patterns.iter().enumerate() {
                    if let Err(e) = Regex::new(p) {
                        return Err(err(format!("request.deny_patterns[{i}]"), format!("not a valid regular expression: {e}")));
                    }
                }
                Some(RegexSet::new(&r.deny_patterns).map_err(|e| err("request.deny_patterns".into(), e.to_string()))?)
            };
            (Some(side(&r.detectors, "request")?), deny, r.max_text_length, r.max_body.0)
        }
        None => (None, None, None, 0),
    };
    let response = match &c.response {
        Some(r) => Some((r.max_size.0, side(&r.detectors, "response")?)),
        None => None,
    };
    if request.is_none() && response.is_none() {
        return Err(err(String::new(), "nothing to guard".into()).hint("set request: {...} and/or response: {...}"));
    }
    Ok(Box::new(Guard { route: route.name.as_str().into(), request, deny, max_text, max_body, response, audit, metrics: metrics.clone() }))
}

fn detector(name: &str) -> Option<Detector> {
    let (name, pattern, valid): (&'static str, &str, fn(&str) -> bool) = match name {
        "email" => ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", |_| true),
        // International (+ and 8–15 digits) or North-American (3-3-4) numbers with separators.
        "phone" => ("phone", r"(?:\+[1-9](?:[ .-]?\d){7,14}\b|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b)", |_| true),
        "credit_card" => ("credit_card", r"\b\d(?:[ -]?\d){12,18}\b", luhn),
        "iban" => ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban),
        "aws_access_key" => ("aws_access_key", r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b", |_| true),
        "private_key" => ("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----", |_| true),
        "jwt" => ("jwt", r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}", |_| true),
        _ => return None,
    };
    Some(Detector { name, re: Regex::new(pattern).expect("built-in pattern"), valid })
}

/// The Luhn checksum of the digits in `s`.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 =
        digits.iter().rev().enumerate().map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }).sum();
    sum.is_multiple_of(10)
}

/// The IBAN check: move the first four characters to the end, letters to numbers, the number mod 97 is 1.
fn iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

// === impl Findings ===

impl Findings {
    /// `detector:action,…` for the audit reason (never the matched text).
    fn summary(&self) -> String {
        let what: Vec<String> = self.seen.iter().map(|(d, a)| format!("{d}:{a:?}").to_lowercase()).collect();
        what.join(",")
    }
}

// === impl Side ===

impl Side {
    /// Scans one text, rewriting it if a detector redacts.
    fn scan(&self, text: &mut String, found: &mut Findings) {
        for (d, action) in &self.detectors {
            let hits: Vec<(usize, usize)> = d.re.find_iter(text).filter(|m| (d.valid)(m.as_str())).map(|m| (m.start(), m.end())).collect();
            if hits.is_empty() {
                continue;
            }
            found.seen.push((d.name, *action));
            match action {
                Action::Block => {
                    found.blocked.get_or_insert_with(|| format!("detector:{}", d.name));
                }
                Action::Redact => {
                    for (start, end) in hits.into_iter().rev() {
                        text.replace_range(start..end, &format!("[REDACTED:{}]", d.name));
                    }
                    found.changed = true;
                }
                Action::Log => {}
            }
        }
    }
}

/// Applies `f` to every string of a JSON value (keys left alone).
fn each_string(v: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| each_string(i, f)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|i| each_string(i, f)),
        _ => {}
    }
}

/// Scans a body (JSON strings, or the whole body as text); `Some(new body)` if it was rewritten.
fn scan_body(body: &Bytes, check: &mut dyn FnMut(&mut String, &mut Findings), found: &mut Findings) -> Option<Bytes> {
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
        each_string(&mut v, &mut |s| check(s, found));
        return found.changed.then(|| Bytes::from(serde_json::to_vec(&v).unwrap_or_default()));
    }
    let mut text = String::from_utf8_lossy(body).into_owned();
    check(&mut text, found);
    found.changed.then(|| Bytes::from(text))
}

// === impl Guard ===

impl Guard {
    fn record(&self, ctx: &Ctx, found: &Findings, direction: &'static str) {
        for (detector, action) in &found.seen {
            let action_name = match action {
                Action::Block => "block",
                Action::Redact => "redact",
                Action::Log => "log",
            };
            self.metrics
                .guard_detections
                .get_or_create(&GuardLabels {
                    route: self.route.to_string(),
                    detector: (*detector).to_string(),
                    action: action_name,
                    direction,
                })
                .inc();
            tracing::info!(route = %self.route, detector, action = action_name, direction, request_id = ?ctx.request_id(), "guard detection");
        }
    }
}

impl Plugin for Guard {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants_body(&self) -> Option<u64> {
        self.request.as_ref().map(|_| self.max_body)
    }

    fn wants_response_body(&self) -> Option<u64> {
        self.response.as_ref().map(|(max, _)| *max)
    }

    fn validate<'a>(&'a self, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        let (Some(side), Some(body)) = (&self.request, ctx.body().cloned()) else { return Flow::Continue };
        let mut found = Findings::default();
        let mut check = |text: &mut String, found: &mut Findings| {
            if found.blocked.is_some() {
                return;
            }
            if self.max_text.is_some_and(|max| text.chars().count() > max) {
                found.blocked = Some("max_text_length".into());
                return;
            }
            if let Some(set) = &self.deny
                && let Some(i) = set.matches(text).iter().next()
            {
                found.blocked = Some(format!("deny_pattern:{i}"));
                found.seen.push(("deny_pattern", Action::Block));
                return;
            }
            side.scan(text, found);
        };
        let rewritten = match ctx.grpc_call() {
            // An OIP gRPC call: its BYTES elements are the texts. A protobuf message is not rewritten here, so a
            // `redact` finding blocks it instead of letting the text through.
            Some(call) => {
                for t in &call.texts {
                    check(&mut String::from_utf8_lossy(t).into_owned(), &mut found);
                }
                if found.changed && found.blocked.is_none() {
                    found.blocked = Some("redact_on_grpc".into());
                }
                None
            }
            None => scan_body(&body, &mut check, &mut found),
        };
        self.record(ctx, &found, "request");
        if let Some(reason) = found.blocked.take() {
            let ev = audit_event(ctx, &self.route, "guard", "deny", reason.clone());
            return audited(self.audit.as_deref(), ev, Err(GatewayError::ContentBlocked { reason }));
        }
        if let Some(new) = rewritten {
            req.headers.insert(CONTENT_LENGTH, HeaderValue::from(new.len()));
            ctx.replace_body(new);
        }
        if found.seen.is_empty() {
            return Flow::Continue;
        }
        let ev = audit_event(ctx, &self.route, "guard", "allow", found.summary());
        audited(self.audit.as_deref(), ev, Ok(()))
    }

    fn inspect_response(&self, ctx: &Ctx, parts: &mut http::response::Parts, body: &mut Bytes) -> Result<(), GatewayError> {
        let Some((_, side)) = &self.response else { return Ok(()) };
        if parts.headers.contains_key(CONTENT_ENCODING) {
            // A compressed body cannot be read here; refusing it is the safe side.
            return Err(GatewayError::ResponseBlocked { reason: "compressed response".into() });
        }
        let mut found = Findings::default();
        let rewritten = scan_body(body, &mut |t, f| side.scan(t, f), &mut found);
        self.record(ctx, &found, "response");
        if let Some(audit) = &self.audit
            && !found.seen.is_empty()
        {
            let decision = if found.blocked.is_some() { "deny" } else { "allow" };
            // Best effort on the response path: never waits for the audit queue.
            let _ = audit.record(audit_event(ctx, &self.route, "guard_response", decision, found.summary()));
        }
        if let Some(reason) = found.blocked {
            return Err(GatewayError::ResponseBlocked { reason });
        }
        if let Some(new) = rewritten {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(new.len()));
            *body = new;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(!iban("DE89370400440532013001"));
    }

    #[test]
    fn redacts_and_blocks_without_keeping_the_match() {
        let side =
            Side { detectors: vec![(detector("email").unwrap(), Action::Redact), (detector("credit_card").unwrap(), Action::Block)] };
        let mut f = Findings::default();
        let mut t = "write to alice@example.com today".to_string();
        side.scan(&mut t, &mut f);
        assert_eq!(t, "write to [REDACTED:email] today");
        assert!(f.blocked.is_none() && f.changed);
        let mut t = "card 4111-1111-1111-1111".to_string();
        side.scan(&mut t, &mut f);
        assert_eq!(f.blocked.as_deref(), Some("detector:credit_card"));
        let mut f = Findings::default();
        let mut t = "order 1234567890123 shipped".to_string();
        side.scan(&mut t, &mut f);
        assert!(f.seen.is_empty(), "13 digits failing Luhn are not a card");
    }
}
