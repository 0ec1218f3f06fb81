//! Validated config types: what the gateway compiles into its runtime snapshot. Built only by [`crate::load`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use crate::raw::{Balance, FsyncPolicy, Protocol, WhenFull};

/// A whole, validated gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Teams' namespaces by name: who owns each and their guardrails (checked at load).
    pub namespaces: BTreeMap<String, crate::raw::RawNamespace>,
    /// The include directory (absolute or relative to the working directory), when `include` is set.
    pub include_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `admin.status_listen`: probes and metrics without a credential.
    pub status_listen: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub shutdown_grace: Duration,
    pub watch: bool,
    pub reload_debounce: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    pub routes: Vec<RouteConfig>,
    /// Consumers allowed to call the admin API; empty: no credential (loopback only).
    pub admin_consumers: Vec<String>,
    pub admin_groups: Vec<String>,
    /// Single sign-on for the web console (`admin.console`).
    pub console: Option<ConsoleConfig>,
    pub identity: IdentityConfig,
    pub audit: Option<AuditConfig>,
    pub redis: Option<RedisConfig>,
    /// Record request metrics.
    pub request_metrics: bool,
    /// Distinct consumers with their own metric label.
    pub consumer_labels: usize,
    pub access_log: Option<AccessLogConfig>,
    pub tracing: Option<TracingConfig>,
    /// TLS on the proxy listener.
    pub tls: Option<TlsConfig>,
    /// Models whose versions the gateway routes between (`models`).
    pub models: BTreeMap<String, Arc<ManagedModel>>,
    pub meta: Meta,
}

/// A model with versions (`models.NAME`), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedModel {
    pub name: String,
    /// In config (name) order; exactly one is stable.
    pub versions: Vec<ManagedVersion>,
    pub split_key: SplitKey,
    pub rollout: Option<RolloutConfig>,
}

/// One version of a managed model, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedVersion {
    pub name: String,
    pub upstream: String,
    /// The path prefix on the upstream, names substituted.
    pub prefix: String,
    pub state: crate::raw::VersionState,
    /// Buckets of the 10,000 a canary gets (weight × 100); 0 for the others.
    pub buckets: u32,
    /// The readiness probe path; `None`: no gate.
    pub probe: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// For `state: shadow`: how copies are sampled, bounded and compared.
    pub shadow: Option<ShadowConfig>,
    /// The runtimes (OIP metadata `platform`) its server may report: its namespace's `runtimes`; empty: any.
    pub runtimes: Vec<String>,
}

/// A model's progressive rollout, checked (`models.*.rollout`).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    pub version: String,
    /// Weights in buckets (of 10,000), increasing.
    pub steps: Vec<u32>,
    pub interval: std::time::Duration,
    pub min_samples: u64,
    pub breaches: u32,
    /// Step indexes that wait for a manual promote.
    pub gates: Vec<usize>,
    /// Percentage points.
    pub max_error_rate_increase: f64,
    pub max_p99_ratio: f64,
    /// A shadow version and its least agreement, in percent.
    pub shadow: Option<(String, f64)>,
}

/// A shadow version's copies, checked (`models.*.versions.*.shadow`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// Buckets of the 10,000 copied (sample × 100).
    pub sample: u32,
    pub max_in_flight: usize,
    pub max_body: u64,
    /// `None`: the upstream's response timeout.
    pub timeout: Option<std::time::Duration>,
    pub atol: f64,
    pub rtol: f64,
    pub top_k: usize,
}

/// What a caller's bucket is computed from.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitKey {
    Consumer,
    Header(HeaderName),
    Claim(String),
}

/// TLS on the proxy listener, with its certificates and keys as read at load.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificates: Vec<Arc<CertificateConfig>>,
    /// `min_version: "1.3"`.
    pub tls13_only: bool,
    /// `redirect_http`: a plain listener answering 308 to HTTPS.
    pub redirect_http: Option<std::net::SocketAddr>,
    /// `client_auth`: client certificates (mTLS).
    pub client_auth: Option<ClientAuthConfig>,
}

/// `tls.client_auth`, with its CA read.
#[derive(Debug, Clone)]
pub struct ClientAuthConfig {
    pub ca_file: PathBuf,
    pub roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub required: bool,
    /// The CRL files (watched) and the lists read from them.
    pub crl_files: Vec<PathBuf>,
    pub crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
}

/// One certificate chain and key, read from their PEM files.
pub struct CertificateConfig {
    /// Where it is configured (`tls.certificates[i]`), for errors found when it is put to use.
    pub origin: Origin,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// SNI names it is served for, lowercase (`*.example.com` allowed).
    pub hosts: Vec<String>,
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
}

impl std::fmt::Debug for CertificateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// How an upstream's `https://` targets are verified.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamTls {
    /// The CA certificates to trust (`tls.ca`); `None`: the built-in Mozilla roots.
    pub roots: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    /// The name certificates must be valid for (and the SNI); `None`: each target's host.
    pub server_name: Option<String>,
    /// The gateway's own certificate chain and key, presented to targets that ask (`tls.client_cert`/`client_key`).
    pub client_identity: Option<Arc<ClientIdentity>>,
}

/// A certificate chain (leaf first) and its private key, read from PEM files.
pub struct ClientIdentity {
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.key.secret_der() == other.key.secret_der()
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

/// The access log, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// `None`: stdout.
    pub path: Option<PathBuf>,
    pub queue: usize,
    /// `None`: every field.
    pub fields: Option<Vec<String>>,
}

/// Span export, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    pub endpoint: String,
    /// OTLP/gRPC (else OTLP/HTTP).
    pub grpc: bool,
    pub sample_ratio: f64,
    pub service_name: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub queue: usize,
}

/// The access-log fields, in line order.
pub const ACCESS_LOG_FIELDS: &[&str] = &[
    "time",
    "request_id",
    "trace_id",
    "client",
    "method",
    "path",
    "route",
    "upstream",
    "model",
    "model_version",
    "consumer",
    "auth_method",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream_ms",
    "error",
    "model_tags",
    "model_version_pinned",
];

/// The console's single sign-on (`admin.console`), checked.
#[derive(Clone, PartialEq)]
pub struct ConsoleConfig {
    /// How ID tokens are checked: the login issuer's config with the console's client as the only audience, the
    /// console's consumer claim, and no lifetime cap.
    pub id_token: Arc<IssuerConfig>,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Unset: the admin listener's `/console/callback` on the address it is bound to.
    pub redirect_uri: Option<String>,
    /// Unset: the proxy listener's `/.modelgate/callback` on the address it is bound to.
    pub routes_redirect_uri: Option<String>,
    /// Always starts with `openid`.
    pub scopes: Vec<String>,
    pub session_lifetime: Duration,
    pub cookie_secret: Option<String>,
    /// Cookies carry `Secure`: the redirect URI is not on loopback.
    pub secure_cookies: bool,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("issuer", &self.id_token.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("redirect_uri", &self.redirect_uri)
            .field("routes_redirect_uri", &self.routes_redirect_uri)
            .field("scopes", &self.scopes)
            .field("session_lifetime", &self.session_lifetime)
            .field("cookie_secret", &self.cookie_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Identity providers and credential stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityConfig {
    pub issuers: BTreeMap<String, Arc<IssuerConfig>>,
    pub api_keys: Option<ApiKeysConfig>,
    pub aws_iam: Option<Arc<AwsIamConfig>>,
    pub assertion: Option<AssertionConfig>,
    /// Consumers declared in config, by name.
    pub consumers: BTreeMap<String, ConsumerConfig>,
}

/// A consumer declared in config: its groups and scopes and the SHA-256 of each of its key values (the values
/// themselves are not kept).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerConfig {
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub key_hashes: Vec<[u8; 32]>,
}

/// Identity assertions to upstreams, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionConfig {
    pub origin: Origin,
    pub signing_key: PathBuf,
    pub previous_keys: Vec<PathBuf>,
    pub issuer: String,
    pub lifetime: Duration,
}

/// AWS IAM authentication, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsIamConfig {
    pub origin: Origin,
    /// `scheme://authority` of the STS endpoint, without a trailing slash.
    pub sts_endpoint: String,
    pub header: HeaderName,
    pub cluster_id: Option<String>,
    pub max_presign_age: Duration,
    pub principals: Vec<AwsPrincipalConfig>,
}

/// One ARN mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsPrincipalConfig {
    pub arn: String,
    pub consumer: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

/// A JWT issuer, checked.
#[derive(Clone, PartialEq)]
pub struct IssuerConfig {
    pub name: String,
    pub origin: Origin,
    pub issuer: String,
    pub keys: KeySource,
    pub audiences: Vec<String>,
    /// Algorithm names, each one of RS256/384/512, PS256/384/512, ES256/384, EdDSA, or (only with `hs_secret`)
    /// HS256/384/512; never mixed HS and public-key.
    pub algorithms: Vec<String>,
    pub hs_secret: Option<String>,
    pub leeway: Duration,
    pub max_token_lifetime: Option<Duration>,
    pub jwks_cache: Duration,
    pub jwks_min_refetch: Duration,
    pub scope_claim: String,
    pub groups_claim: String,
    pub consumer_claim: String,
}

impl std::fmt::Debug for IssuerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("hs_secret", &self.hs_secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration` → `jwks_uri`.
    Discovery(String),
    Uri(String),
    File(PathBuf),
    /// HS* only: the shared secret, no JWKS.
    None,
}

/// The API key store.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeysConfig {
    pub file: PathBuf,
    /// Headers carrying the key, tried in order (at least one).
    pub headers: Vec<HeaderName>,
    /// Query parameters that may carry the key (empty: none).
    pub query: Vec<String>,
    pub origin: Origin,
    pub redis_revocations: bool,
}

/// The shared Redis, checked.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig").field("url", &"<redacted>").field("key_prefix", &self.key_prefix).finish_non_exhaustive()
    }
}

/// The audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub max_file_size: u64,
    pub checkpoint_every: u64,
    pub queue: usize,
    pub when_full: WhenFull,
}

/// Where a config came from, and how it is shown.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Short SHA-256 of the interpolated config: the version reported by `/admin/config/status`.
    pub hash: String,
    /// Paths to watch for changes: the main file and the include directory.
    pub watch_paths: Vec<PathBuf>,
    /// Each file read (main first) with its text as written, before `${ENV}` interpolation.
    pub sources: Vec<(PathBuf, Arc<str>)>,
    /// Data files the config points to (API key files, JWKS files): a change to one reloads the config too.
    pub data_files: Vec<PathBuf>,
}

impl Meta {
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// Where in the files a config item was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// YAML path, e.g. `routes[3]`.
    pub path: String,
}

/// An upstream service.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub retry_attempts: u32,
    pub retry_on_status: Vec<u16>,
    pub retry_max_body: u64,
    pub passive: Option<PassiveHealth>,
    pub active: Option<ActiveHealth>,
    pub tls: UpstreamTls,
}

/// One target of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub authority: http::uri::Authority,
    /// An `https://` target.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealth {
    pub consecutive_failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActiveHealth {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub origin: Origin,
    pub hosts: Vec<HostMatch>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderMatch>,
    /// `None`: a route only `modelgate authz` serves.
    pub upstream: Option<String>,
    pub retry_non_idempotent: bool,
    /// Largest gRPC message of an OIP gRPC call, in bytes.
    pub grpc_max_message: u64,
    pub plugins: Vec<PluginSpec>,
    /// The forwarded path's rewrite (`strip_prefix`, `upstream_path`), if any.
    pub rewrite: Option<Rewrite>,
}

/// How a route rewrites the forwarded path: the first `strip` bytes of the path removed (the matched prefix), then
/// `prefix` put before what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub strip: usize,
    pub prefix: String,
}

/// Host matcher, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl std::fmt::Display for HostMatch {
    /// As written in config: `api.example.com`, `*.example.com`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Path matcher; paths are normalized (no `//`, `.` or `..` segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Template(String),
    /// Without a trailing slash, except the root `/`.
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    /// `None`: present with any value.
    pub value: Option<HeaderValue>,
}

/// A plugin instance as configured: its name and its settings, parsed by the plugin itself.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub settings: serde_norway::Value,
    /// Location of the settings, e.g. `routes[1].plugins[0].request_size`.
    pub origin: Origin,
}
