//! What a limit is counted per (`by:` of `rate_limit` and `concurrency`): parts of the request joined into a key.

use modelgate_pipeline::Ctx;

/// A parsed `by:` list.
pub struct KeySpec(Vec<KeyPart>);

enum KeyPart {
    Consumer,
    Subject,
    Route,
    Model,
    Version,
    ClientIp,
    Claim(String),
    Header(http::HeaderName),
}

const KEY_HINT: &str = "one of consumer, subject, route, model, version, client_ip, claim:NAME, header:NAME";

impl KeySpec {
    /// Parses `by:`; an error names the entry's index, the problem and a hint.
    pub fn parse(by: &[String]) -> Result<KeySpec, (usize, String, &'static str)> {
        let mut parts = Vec::with_capacity(by.len());
        for (j, part) in by.iter().enumerate() {
            parts.push(match part.split_once(':') {
                None => match part.as_str() {
                    "consumer" => KeyPart::Consumer,
                    "subject" => KeyPart::Subject,
                    "route" => KeyPart::Route,
                    "model" => KeyPart::Model,
                    "version" => KeyPart::Version,
                    "client_ip" => KeyPart::ClientIp,
                    other => return Err((j, format!("unknown key {other:?}"), KEY_HINT)),
                },
                Some(("claim", name)) if !name.is_empty() => KeyPart::Claim(name.to_string()),
                Some(("header", name)) => match http::HeaderName::from_bytes(name.as_bytes()) {
                    Ok(h) => KeyPart::Header(h),
                    Err(_) => return Err((j, format!("{name:?} is not a header name"), "e.g. header:x-tenant")),
                },
                _ => return Err((j, format!("unknown key {part:?}"), KEY_HINT)),
            });
        }
        Ok(KeySpec(parts))
    }

    /// Appends `|part` for each part; an absent value is `-`.
    pub fn render(&self, k: &mut String, ctx: &Ctx, req: &http::request::Parts, route: &str) {
        use std::fmt::Write as _;
        let p = ctx.principal().map(|p| &**p);
        for part in &self.0 {
            k.push('|');
            match part {
                KeyPart::Consumer => k.push_str(p.map_or("-", |p| p.consumer.as_str())),
                KeyPart::Subject => k.push_str(p.map_or("-", |p| p.subject.as_str())),
                KeyPart::Route => k.push_str(route),
                KeyPart::Model => k.push_str(ctx.model_target().0.unwrap_or("-")),
                KeyPart::Version => k.push_str(ctx.model_target().1.unwrap_or("-")),
                KeyPart::ClientIp => k.push_str(ctx.client_ip().to_str().unwrap_or("-")),
                KeyPart::Claim(c) => match p.and_then(|p| p.claims.get(c)) {
                    Some(serde_json::Value::String(s)) => k.push_str(s),
                    Some(v) => {
                        let _ = write!(k, "{v}");
                    }
                    None => k.push('-'),
                },
                KeyPart::Header(h) => k.push_str(req.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("-")),
            }
        }
    }
}
