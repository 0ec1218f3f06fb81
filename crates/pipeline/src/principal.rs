//! Who is calling: the [`Principal`] the authenticate phase puts in the request context, read by every later phase
//! (policy, limits keyed by consumer, identity headers and assertions sent upstream, logs).

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ApiKey,
    Jwt,
    AwsIam,
    /// A verified TLS client certificate (mTLS).
    Mtls,
    /// A person signed in through the console's single sign-on (a session cookie).
    Session,
    Anonymous,
}

/// The authenticated caller of one request.
#[derive(Debug)]
pub struct Principal {
    pub method: Method,
    /// API key id, the issuer's config name for JWTs, the access key id for AWS IAM.
    pub credential: String,
    /// `sub` of a JWT; the consumer for API keys; the ARN for AWS IAM.
    pub subject: String,
    /// The consumer name: the API key's consumer, or the issuer's `consumer_claim`.
    pub consumer: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    /// All claims of a JWT, `arn`/`account`/`user_id` for AWS IAM (empty for API keys); policy rules may test
    /// any of them.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The identity headers for upstreams, rendered on first use (once per API key, since its principal is shared).
    pub headers: std::sync::OnceLock<Vec<(http::HeaderName, http::HeaderValue)>>,
    /// Signed assertions held for reuse, one per upstream audience (minted by the auth crate's `assertion`).
    pub assertions: std::sync::Mutex<Vec<HeldAssertion>>,
    /// This principal with the groups of its consumer declared in config added ([`Principal::with_groups`]),
    /// held for reuse with the generation of the declarations it was made from.
    pub declared: std::sync::Mutex<Option<(u64, std::sync::Arc<Principal>)>>,
}

/// A signed identity assertion a principal holds for one upstream audience, reused until `refresh_at`.
#[derive(Debug)]
pub struct HeldAssertion {
    pub audience: Box<str>,
    /// The signing key's generation it was minted with (a new key invalidates it).
    pub generation: u64,
    /// When to mint a new one (seconds since the Unix epoch).
    pub refresh_at: u64,
    /// The `x-modelgate-assertion` header value.
    pub value: http::HeaderValue,
}

// === impl Method ===

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ApiKey => "api_key",
            Method::Jwt => "jwt",
            Method::AwsIam => "aws_iam",
            Method::Mtls => "mtls",
            Method::Session => "oidc_session",
            Method::Anonymous => "anonymous",
        }
    }
}

// === impl Principal ===

impl modelgate_telemetry::audit::Subject for Principal {
    fn method(&self) -> &'static str {
        self.method.as_str()
    }
    fn credential(&self) -> &str {
        &self.credential
    }
    fn subject(&self) -> &str {
        &self.subject
    }
    fn consumer(&self) -> &str {
        &self.consumer
    }
}

impl Principal {
    pub fn new(
        method: Method,
        credential: String,
        subject: String,
        consumer: String,
        scopes: Vec<String>,
        groups: Vec<String>,
    ) -> Principal {
        Principal {
            method,
            credential,
            subject,
            consumer,
            scopes,
            groups,
            claims: serde_json::Map::new(),
            headers: std::sync::OnceLock::new(),
            assertions: Default::default(),
            declared: Default::default(),
        }
    }

    /// A copy with `extra` groups added (those it lacks), its claims kept.
    pub fn with_groups(&self, extra: &[String]) -> Principal {
        let mut groups = self.groups.clone();
        groups.extend(extra.iter().filter(|g| !self.groups.contains(g)).cloned());
        let mut p =
            Principal::new(self.method, self.credential.clone(), self.subject.clone(), self.consumer.clone(), self.scopes.clone(), groups);
        p.claims = self.claims.clone();
        p
    }

    pub fn anonymous() -> Principal {
        Principal::new(Method::Anonymous, String::new(), "anonymous".into(), "anonymous".into(), Vec::new(), Vec::new())
    }

    /// `x-modelgate-consumer`, `-subject`, `-auth-method` and (if any) `-scopes`; values that are not valid
    /// header values are left out.
    pub fn upstream_headers(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        self.headers.get_or_init(|| {
            static CONSUMER: http::HeaderName = http::HeaderName::from_static("x-modelgate-consumer");
            static SUBJECT: http::HeaderName = http::HeaderName::from_static("x-modelgate-subject");
            static SCOPES: http::HeaderName = http::HeaderName::from_static("x-modelgate-scopes");
            static METHOD: http::HeaderName = http::HeaderName::from_static("x-modelgate-auth-method");
            let scopes = self.scopes.join(" ");
            [
                (&CONSUMER, self.consumer.as_str()),
                (&SUBJECT, self.subject.as_str()),
                (&METHOD, self.method.as_str()),
                (&SCOPES, scopes.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(n, v)| http::HeaderValue::from_str(v).ok().map(|v| (n.clone(), v)))
            .collect()
        })
    }
}
