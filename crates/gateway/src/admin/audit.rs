//! `GET /admin/audit`: searches the audit log (the current file and the rotated ones beside it, newest first) by
//! consumer, model, version, decision, type, reason and time, and reports whether the hash chain is intact.

use std::path::{Path, PathBuf};

use http::header::HeaderValue;
use http::{Response, StatusCode};

use modelgate_pipeline::Body;
use modelgate_pipeline::error::json_error;

use super::json;
use crate::reload::Shared;

/// Records returned by default and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The search: exact fields, a substring of the reason, an RFC 3339 time range.
#[derive(Default)]
struct Search {
    exact: Vec<(&'static str, String)>,
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: usize,
}

/// Answers `GET /admin/audit?consumer=&model=&version=&decision=&type=&reason=&since=&until=&limit=`.
pub(super) async fn endpoint(shared: &Shared, query: Option<&str>, rid: &HeaderValue) -> Response<Body> {
    let Some(path) = shared.snapshot.load().config.audit.as_ref().map(|a| a.path.clone()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "the audit log is not configured (audit.path)", rid);
    };
    let mut search = Search { limit: DEFAULT_LIMIT, ..Default::default() };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let v = v.into_owned();
        if v.is_empty() {
            continue;
        }
        match k.as_ref() {
            "consumer" => search.exact.push(("consumer", v)),
            "model" => search.exact.push(("model", v)),
            "version" => search.exact.push(("version", v)),
            "decision" => search.exact.push(("decision", v)),
            "type" => search.exact.push(("type", v)),
            "request_id" => search.exact.push(("request_id", v)),
            "reason" => search.reason = Some(v),
            "since" => search.since = Some(v),
            "until" => search.until = Some(v),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => search.limit = n,
                _ => return json_error(StatusCode::BAD_REQUEST, "invalid_request", "limit: a number from 1 to 1000", rid),
            },
            other => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!(
                        "unknown search field {:?}: consumer, model, version, decision, type, request_id, reason, since, until, limit",
                        other.chars().take(64).collect::<String>()
                    ),
                    rid,
                );
            }
        }
    }
    let found = tokio::task::spawn_blocking(move || run(&path, &search)).await;
    match found {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "audit_unreadable", &format!("cannot read the audit log: {e}"), rid),
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "audit_unreadable", "the audit search failed", rid),
    }
}

fn run(path: &Path, search: &Search) -> std::io::Result<serde_json::Value> {
    let files = files(path)?;
    let mut records = Vec::new();
    let mut truncated = false;
    'files: for file in files.iter().rev() {
        let text = std::fs::read_to_string(file)?;
        for line in text.lines().rev() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if matches(&v, search) {
                if records.len() == search.limit {
                    truncated = true;
                    break 'files;
                }
                records.push(v);
            }
        }
    }
    let chain = match verify(&files) {
        Ok(v) => {
            serde_json::json!({ "intact": true, "files": v.files, "lines": v.lines, "first_seq": v.first_seq, "last_seq": v.last_seq, "head": v.head })
        }
        Err(b) => serde_json::json!({ "intact": false, "error": b.to_string(), "file": b.file.display().to_string(), "line": b.line }),
    };
    Ok(serde_json::json!({ "records": records, "truncated": truncated, "chain": chain }))
}

/// The chain check; a last line caught while the writer appends it is read again once.
fn verify(files: &[PathBuf]) -> Result<modelgate_telemetry::audit::Verified, modelgate_telemetry::audit::Broken> {
    match modelgate_telemetry::audit::verify(files) {
        Err(b) if b.reason.contains("torn") && files.last() == Some(&b.file) => {
            std::thread::yield_now();
            modelgate_telemetry::audit::verify(files)
        }
        other => other,
    }
}

fn matches(v: &serde_json::Value, s: &Search) -> bool {
    let field = |k: &str| v.get(k).and_then(|x| x.as_str());
    s.exact.iter().all(|(k, want)| field(k) == Some(want.as_str()))
        && s.reason.as_ref().is_none_or(|r| field("reason").is_some_and(|have| have.contains(r.as_str())))
        && s.since.as_ref().is_none_or(|t| field("time").is_some_and(|have| have >= t.as_str()))
        && s.until.as_ref().is_none_or(|t| field("time").is_some_and(|have| have <= t.as_str()))
}

/// The rotated files beside `path` (oldest first), then `path` itself.
fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Ok(vec![path.into()]) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    rotated.sort();
    if path.exists() {
        rotated.push(path.into());
    }
    Ok(rotated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_match_fields_reason_and_time() {
        let v = serde_json::json!({ "seq": 3, "time": "2026-12-02T01:00:00.000000Z", "type": "request", "consumer": "team-a",
            "model": "digits", "version": "2", "decision": "deny", "reason": "key_revoked" });
        let s = |f: fn(&mut Search)| {
            let mut s = Search { limit: 10, ..Default::default() };
            f(&mut s);
            matches(&v, &s)
        };
        assert!(s(|_| {}));
        assert!(s(|s| s.exact.push(("consumer", "team-a".into()))));
        assert!(!s(|s| s.exact.push(("consumer", "team-b".into()))));
        assert!(s(|s| s.reason = Some("revoked".into())));
        assert!(!s(|s| s.reason = Some("rate".into())));
        assert!(s(|s| s.since = Some("2026-12-02T00:59:00Z".into())));
        assert!(!s(|s| s.since = Some("2026-12-02T01:01:00Z".into())));
        assert!(!s(|s| s.until = Some("2026-12-01".into())));
        assert!(!s(|s| s.exact.push(("model", "other".into()))));
    }
}
