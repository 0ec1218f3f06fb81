//! AWS IAM callers: the token is a presigned STS `GetCallerIdentity` request, as aws-iam-authenticator and Vault
//! use it — `k8s-aws-v1.` followed by the base64url of the presigned URL. The gateway never sees an AWS secret:
//! it checks the URL is exactly a `GetCallerIdentity` call to the configured STS endpoint (so a token cannot make
//! the gateway call anything else, or send it elsewhere), performs the call, and maps the ARN STS answers with to a
//! consumer.
//!
//! STS is called at most once per token, and never more than [`STS_IN_FLIGHT`] calls at a time: answers — accepted
//! principals and refusals alike (a bad signature stays bad) — are cached by the token's hash until the presigned
//! request expires (a bounded `moka` cache); concurrent requests with the same new token share one call; past the
//! cap a new token gets 503 at once instead of a queue of STS calls, so random tokens cannot make the gateway
//! amplify traffic to STS. STS throttling (HTTP 400 with `Throttling`, as STS sends it) is unavailability (503),
//! never a refusal of the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use modelgate_config::model::AwsIamConfig;
use sha2::{Digest, Sha256};

use crate::glob::Pattern as Glob;
use modelgate_pipeline::principal::{Method, Principal};
use modelgate_upstream::fetch;

/// The token prefix aws-iam-authenticator defined; clients that mint such tokens work unchanged.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
const MAX_TOKEN_BYTES: usize = 4096;
/// Tokens whose STS answer is remembered (accepted or refused).
const CACHE_ENTRIES: u64 = 10_000;
/// STS calls in flight at once, all tokens together.
pub const STS_IN_FLIGHT: usize = 32;
/// STS error codes that mean "not now", whatever the HTTP status.
const STS_BUSY: &[&str] = &["Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable", "InternalFailure"];
/// Clock skew allowed on `X-Amz-Date`.
const LEEWAY_S: u64 = 60;
/// The query parameters a presigned `GetCallerIdentity` carries; any other is refused.
const ALLOWED_PARAMS: &[&str] = &[
    "Action",
    "Version",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Why an AWS IAM token was refused; `code()` is the audit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFailure {
    TooLarge,
    Malformed,
    /// The URL is not for the configured STS endpoint.
    WrongEndpoint,
    /// Not exactly `Action=GetCallerIdentity&Version=2011-06-15` with SigV4 query parameters.
    NotGetCallerIdentity,
    /// `x-k8s-aws-id` is required (`cluster_id`) and was not signed.
    ClusterNotSigned,
    Expired,
    /// `X-Amz-Expires` beyond `max_presign_age`, or `X-Amz-Date` too far in the past or the future.
    PresignTooLong,
    /// STS refused the request (bad signature, expired, unknown key).
    Rejected,
    /// STS answered, but the ARN matches no `principals` entry.
    UnknownPrincipal,
    /// STS could not be reached or answered with an error of its own.
    Unavailable,
}

/// The AWS IAM method of one config.
pub struct AwsIam {
    pub config: Arc<AwsIamConfig>,
    principals: Vec<(Glob, usize)>,
    /// sha256(token) → STS's answer (a principal or a refusal) and until when it holds (unix seconds).
    cache: moka::sync::Cache<[u8; 32], (Answer, u64)>,
    /// Tokens being asked about now: later requests with the same token wait for the first one's answer.
    in_flight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<Answer>>>>,
    /// Caps STS calls in flight.
    calls: tokio::sync::Semaphore,
}

/// What STS said about a token.
type Answer = Result<Arc<Principal>, AwsFailure>;

/// A token that passed the local checks and must be sent to STS.
pub struct Pending {
    /// The URL to GET: the configured endpoint with the token's query.
    url: String,
    hash: [u8; 32],
    until: u64,
    access_key: String,
}

#[derive(Default)]
struct Identity {
    arn: String,
    user_id: String,
    account: String,
    error_code: String,
}

// === impl AwsFailure ===

impl AwsFailure {
    /// Every failure, for docs checks.
    pub const ALL: [AwsFailure; 10] = [
        AwsFailure::TooLarge,
        AwsFailure::Malformed,
        AwsFailure::WrongEndpoint,
        AwsFailure::NotGetCallerIdentity,
        AwsFailure::ClusterNotSigned,
        AwsFailure::Expired,
        AwsFailure::PresignTooLong,
        AwsFailure::Rejected,
        AwsFailure::UnknownPrincipal,
        AwsFailure::Unavailable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AwsFailure::TooLarge => "aws_token_too_large",
            AwsFailure::Malformed => "aws_token_malformed",
            AwsFailure::WrongEndpoint => "aws_wrong_sts_endpoint",
            AwsFailure::NotGetCallerIdentity => "aws_not_get_caller_identity",
            AwsFailure::ClusterNotSigned => "aws_cluster_id_not_signed",
            AwsFailure::Expired => "aws_token_expired",
            AwsFailure::PresignTooLong => "aws_presign_too_long",
            AwsFailure::Rejected => "aws_sts_rejected",
            AwsFailure::UnknownPrincipal => "aws_unknown_principal",
            AwsFailure::Unavailable => "aws_sts_unavailable",
        }
    }
}

// === impl AwsIam ===

impl AwsIam {
    pub fn new(config: Arc<AwsIamConfig>) -> AwsIam {
        let principals = config.principals.iter().enumerate().map(|(i, p)| (Glob::new(&p.arn), i)).collect();
        let cache = moka::sync::Cache::builder()
            .max_capacity(CACHE_ENTRIES)
            .time_to_live(config.max_presign_age + Duration::from_secs(LEEWAY_S))
            .build();
        AwsIam { config, principals, cache, in_flight: Mutex::default(), calls: tokio::sync::Semaphore::new(STS_IN_FLIGHT) }
    }

    /// The local checks, and the cache: `Ok(Ok(principal))` from the cache, `Ok(Err(pending))` to ask STS.
    pub fn check(&self, token: &str, now: SystemTime) -> Result<Result<Arc<Principal>, Pending>, AwsFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AwsFailure::TooLarge);
        }
        let now_s = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((answer, until)) = self.cache.get(&hash)
            && now_s < until
        {
            return answer.map(Ok);
        }
        self.presigned(token, now_s, hash).map(Err)
    }

    fn presigned(&self, token: &str, now: u64, hash: [u8; 32]) -> Result<Pending, AwsFailure> {
        let encoded = token.strip_prefix(TOKEN_PREFIX).ok_or(AwsFailure::Malformed)?;
        let url =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).map_err(|_| AwsFailure::Malformed)?;
        let url = String::from_utf8(url).map_err(|_| AwsFailure::Malformed)?;
        let (base, query) = url.split_once('?').ok_or(AwsFailure::NotGetCallerIdentity)?;
        let base = base.strip_suffix('/').unwrap_or(base);
        if !base.eq_ignore_ascii_case(&self.config.sts_endpoint) {
            return Err(AwsFailure::WrongEndpoint);
        }
        // Only URL-safe characters and percent escapes: what is sent to STS is exactly what was checked.
        if !query.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b)) {
            return Err(AwsFailure::Malformed);
        }
        let mut params: HashMap<&str, String> = HashMap::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v).decode_utf8().map_err(|_| AwsFailure::Malformed)?.into_owned();
            if !ALLOWED_PARAMS.contains(&k) || params.insert(k, v).is_some() {
                return Err(AwsFailure::NotGetCallerIdentity);
            }
        }
        let get = |k: &str| params.get(k).map(String::as_str);
        if get("Action") != Some("GetCallerIdentity")
            || get("Version") != Some("2011-06-15")
            || get("X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256")
            || get("X-Amz-Signature").is_none_or(str::is_empty)
        {
            return Err(AwsFailure::NotGetCallerIdentity);
        }
        let access_key =
            get("X-Amz-Credential").and_then(|c| c.split('/').next()).filter(|k| !k.is_empty()).ok_or(AwsFailure::NotGetCallerIdentity)?;
        let signed: Vec<&str> = get("X-Amz-SignedHeaders").unwrap_or("").split(';').collect();
        if !signed.contains(&"host") {
            return Err(AwsFailure::NotGetCallerIdentity);
        }
        if self.config.cluster_id.is_some() && !signed.contains(&"x-k8s-aws-id") {
            return Err(AwsFailure::ClusterNotSigned);
        }
        let date = get("X-Amz-Date").and_then(amz_date).ok_or(AwsFailure::Malformed)?;
        let expires: u64 = get("X-Amz-Expires").and_then(|e| e.parse().ok()).ok_or(AwsFailure::Malformed)?;
        let max = self.config.max_presign_age.as_secs();
        if expires > max || date > now + LEEWAY_S || now > date + max + LEEWAY_S {
            return Err(AwsFailure::PresignTooLong);
        }
        let until = date + expires;
        if now >= until {
            return Err(AwsFailure::Expired);
        }
        Ok(Pending { url: format!("{}/?{query}", self.config.sts_endpoint), hash, until, access_key: access_key.to_string() })
    }

    /// Asks STS who signed the request (once per token: concurrent requests share the call) and maps the ARN;
    /// the answer is cached until the presign expires, unless STS was unavailable.
    pub async fn resolve(&self, p: Pending) -> Result<Arc<Principal>, AwsFailure> {
        let cell = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if in_flight.len() >= STS_IN_FLIGHT * 4 && !in_flight.contains_key(&p.hash) {
                return Err(AwsFailure::Unavailable);
            }
            in_flight.entry(p.hash).or_default().clone()
        };
        let (hash, until) = (p.hash, p.until);
        let answer = cell.get_or_init(|| self.ask(p)).await.clone();
        // Cached before the call is forgotten, so a request arriving in between finds the answer.
        if !matches!(answer, Err(AwsFailure::Unavailable)) {
            self.cache.insert(hash, (answer.clone(), until));
        }
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash);
        answer
    }

    /// One STS call, within the cap.
    async fn ask(&self, p: Pending) -> Answer {
        let Ok(_permit) = self.calls.try_acquire() else {
            tracing::warn!(endpoint = %self.config.sts_endpoint, cap = STS_IN_FLIGHT, "STS calls at their cap; a new token gets 503");
            return Err(AwsFailure::Unavailable);
        };
        let mut headers = vec![("accept", "application/xml")];
        if let Some(c) = &self.config.cluster_id {
            headers.push(("x-k8s-aws-id", c.as_str()));
        }
        let (status, body) = fetch::get(&p.url, &headers).await.map_err(|e| {
            // The URL carries the caller's signature: log the endpoint only.
            tracing::warn!(endpoint = %self.config.sts_endpoint, error = %e.without_query(), "STS unreachable");
            AwsFailure::Unavailable
        })?;
        let id = parse(&body);
        let busy = STS_BUSY.contains(&id.error_code.as_str());
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS || busy {
            tracing::warn!(endpoint = %self.config.sts_endpoint, %status, code = %id.error_code, "STS failed");
            return Err(AwsFailure::Unavailable);
        }
        if !status.is_success() {
            tracing::debug!(%status, code = %id.error_code, "STS refused a presigned request");
            return Err(AwsFailure::Rejected);
        }
        if id.arn.is_empty() {
            tracing::warn!(endpoint = %self.config.sts_endpoint, "STS answer without an Arn");
            return Err(AwsFailure::Unavailable);
        }
        let &(_, i) = self.principals.iter().find(|(g, _)| g.matches(&id.arn)).ok_or(AwsFailure::UnknownPrincipal)?;
        let m = &self.config.principals[i];
        let mut principal =
            Principal::new(Method::AwsIam, p.access_key, id.arn.clone(), m.consumer.clone(), m.scopes.clone(), m.groups.clone());
        for (k, v) in [("arn", id.arn), ("account", id.account), ("user_id", id.user_id)] {
            principal.claims.insert(k.into(), v.into());
        }
        Ok(Arc::new(principal))
    }
}

/// `20251125T170000Z` → unix seconds.
fn amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15]);
    humantime::parse_rfc3339(&rfc3339).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Reads `Arn`, `UserId`, `Account` of a `GetCallerIdentityResponse`, or the `Code` of an `ErrorResponse`.
fn parse(body: &[u8]) -> Identity {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut id = Identity::default();
    let mut current: Option<Vec<u8>> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => current = Some(e.local_name().as_ref().to_vec()),
            Ok(Event::End(_)) => current = None,
            Ok(Event::Text(t)) => {
                let Some(name) = current.as_deref() else { continue };
                let Ok(text) = t.decode() else { continue };
                let slot = match name {
                    b"Arn" => &mut id.arn,
                    b"UserId" => &mut id.user_id,
                    b"Account" => &mut id.account,
                    b"Code" => &mut id.error_code,
                    _ => continue,
                };
                slot.push_str(text.trim());
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_config::model::{AwsPrincipalConfig, Origin};
    use std::time::Duration;

    fn iam(cluster: Option<&str>) -> AwsIam {
        AwsIam::new(Arc::new(AwsIamConfig {
            origin: Origin { file: "c.yaml".into(), path: "identity.aws_iam".into() },
            sts_endpoint: "https://sts.amazonaws.com".into(),
            header: http::HeaderName::from_static("x-aws-iam-token"),
            cluster_id: cluster.map(String::from),
            max_presign_age: Duration::from_secs(900),
            principals: vec![AwsPrincipalConfig {
                arn: "arn:aws:sts::1:assumed-role/ml/*".into(),
                consumer: "ml".into(),
                groups: vec![],
                scopes: vec![],
            }],
        }))
    }

    fn token(url: &str) -> String {
        format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url))
    }

    const NOW: u64 = 1_764_090_000; // 2025-11-25T17:00:00Z
    const Q: &str = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20251125%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20251125T170000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=abcd";

    fn check(iam: &AwsIam, url: &str, now: u64) -> Result<Pending, AwsFailure> {
        iam.check(&token(url), UNIX_EPOCH + Duration::from_secs(now)).map(|r| match r {
            Ok(_) => panic!("not cached"),
            Err(p) => p,
        })
    }

    #[test]
    fn accepts_a_presigned_get_caller_identity_and_refuses_everything_else() {
        let iam = iam(Some("modelgate"));
        let ok = check(&iam, &format!("https://sts.amazonaws.com/?{Q}"), NOW + 10).expect("valid");
        assert_eq!(ok.access_key, "AKIAEXAMPLE");
        assert_eq!(ok.until, NOW + 60);
        assert!(ok.url.starts_with("https://sts.amazonaws.com/?Action=GetCallerIdentity"));
        let cases: &[(String, AwsFailure)] = &[
            (format!("https://evil.example/?{Q}"), AwsFailure::WrongEndpoint),
            (format!("https://sts.amazonaws.com.evil.example/?{Q}"), AwsFailure::WrongEndpoint),
            (format!("https://sts.amazonaws.com@evil.example/?{Q}"), AwsFailure::WrongEndpoint),
            (format!("http://sts.amazonaws.com/?{Q}"), AwsFailure::WrongEndpoint),
            (format!("https://sts.amazonaws.com/x?{Q}"), AwsFailure::WrongEndpoint),
            (format!("https://sts.amazonaws.com/?{}", Q.replace("GetCallerIdentity", "AssumeRole")), AwsFailure::NotGetCallerIdentity),
            (format!("https://sts.amazonaws.com/?{Q}&Action=AssumeRole"), AwsFailure::NotGetCallerIdentity),
            (format!("https://sts.amazonaws.com/?{Q}&RoleArn=x"), AwsFailure::NotGetCallerIdentity),
            (format!("https://sts.amazonaws.com/?{}", Q.replace("host%3Bx-k8s-aws-id", "host")), AwsFailure::ClusterNotSigned),
            (format!("https://sts.amazonaws.com/?{}", Q.replace("X-Amz-Expires=60", "X-Amz-Expires=86400")), AwsFailure::PresignTooLong),
            (
                format!("https://sts.amazonaws.com/?{}", Q.replace("X-Amz-Date=20251125T170000Z", "X-Amz-Date=2025-11-25")),
                AwsFailure::Malformed,
            ),
            ("https://sts.amazonaws.com/".into(), AwsFailure::NotGetCallerIdentity),
        ];
        for (url, want) in cases {
            assert_eq!(check(&iam, url, NOW + 10).err(), Some(*want), "{url}");
        }
        assert_eq!(check(&iam, &format!("https://sts.amazonaws.com/?{Q}"), NOW + 61).err(), Some(AwsFailure::Expired));
        assert_eq!(check(&iam, &format!("https://sts.amazonaws.com/?{Q}"), NOW - 3600).err(), Some(AwsFailure::PresignTooLong));
        assert_eq!(iam.check("k8s-aws-v1.!!!", SystemTime::now()).err(), Some(AwsFailure::Malformed));
        assert_eq!(iam.check(&"k".repeat(5000), SystemTime::now()).err(), Some(AwsFailure::TooLarge));
    }

    #[test]
    fn reads_sts_answers() {
        let ok = br#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>arn:aws:sts::1:assumed-role/ml/s1</Arn><UserId>AROA:s1</UserId><Account>1</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>"#;
        let id = parse(ok);
        assert_eq!((id.arn.as_str(), id.user_id.as_str(), id.account.as_str()), ("arn:aws:sts::1:assumed-role/ml/s1", "AROA:s1", "1"));
        let err =
            br#"<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>m</Message></Error></ErrorResponse>"#;
        assert_eq!(parse(err).error_code, "SignatureDoesNotMatch");
        assert!(parse(b"<<not xml").arn.is_empty());
        assert!(Glob::new("arn:aws:sts::1:assumed-role/ml/*").matches("arn:aws:sts::1:assumed-role/ml/s1"));
        assert!(!Glob::new("arn:aws:sts::1:assumed-role/ml/*").matches("arn:aws:sts::1:assumed-role/ml-admin/s1"));
        assert_eq!(amz_date("20251125T170000Z"), Some(NOW));
    }
}
