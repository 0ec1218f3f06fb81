//! The config file schema as written by users: `serde` structs that reject unknown fields. Every field's doc
//! comment is its user reference (`docs/config.md` is checked against this file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration};

/// The main config file.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address for client traffic (HTTP/1.1 and h2c). Port 0 picks a free port. Default `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Process-level settings.
    #[serde(default)]
    pub server: RawServer,
    /// Directory of fragment files (`*.yaml`, `*.yml`) merged into this config, relative to this file; each
    /// fragment may hold `upstreams` and `routes`. Files are read in name order.
    #[serde(default)]
    pub include: Option<String>,
    /// Teams' namespaces: the include file `NAME.yaml` holds namespace NAME's upstreams and routes, checked at every
    /// load against the namespace's paths, upstream hosts, required authentication, ceilings and quotas
    /// (docs/self-service.md). With namespaces declared, every include file must belong to one.
    #[serde(default)]
    pub namespaces: BTreeMap<String, RawNamespace>,
    /// Upstream services by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Routes; see docs/routing.md for precedence.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Who callers are: JWT issuers and the API key store, used by the `auth` plugin. See docs/identity.md.
    #[serde(default)]
    pub identity: RawIdentity,
    /// The tamper-evident audit log of authentication and authorization decisions, admin actions and reloads.
    /// Off unless set. Changes take effect on restart.
    #[serde(default)]
    pub audit: Option<RawAudit>,
    /// The Redis server gateways share state through (API key revocations; rate limits). Off unless set.
    #[serde(default)]
    pub redis: Option<RawRedis>,
    /// Request metrics and the access log.
    #[serde(default)]
    pub observability: RawObservability,
    /// TLS on the proxy listener (HTTPS, and HTTP/2 by ALPN); plain HTTP/1.1 and h2c unless set. Whether the listener
    /// speaks TLS is decided at start; certificates and keys are read again on every reload and whenever one of
    /// their files changes, so a rotated certificate is served to new connections with no restart.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Plugins every route gets (Kong's global plugins), each a one-key map like a route's. A route's own plugin
    /// of the same name, or its upstream's, replaces the default one.
    #[serde(default)]
    #[schemars(with = "Vec<BTreeMap<String, serde_json::Value>>")]
    pub plugins: Vec<BTreeMap<String, serde_norway::Value>>,
    /// Named plugin lists that routes include with `plugin_sets: [NAME]` (in main or included files).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>>")]
    pub plugin_sets: BTreeMap<String, Vec<BTreeMap<String, serde_norway::Value>>>,
    /// Models whose versions the gateway routes between, by the name clients use in `/v2/models/{model}/…`: each
    /// version bound to an upstream, one `stable`, canaries by weight. See docs/versions.md.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
}

/// A model whose versions the gateway chooses between.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The model's versions by name: the names callers pin (`/v2/models/{model}/versions/{name}/…`) and that
    /// metrics, the access log and the audit log carry.
    pub versions: BTreeMap<String, RawModelVersion>,
    /// What a caller's place in the split is computed from: `consumer` (the authenticated consumer), `header:NAME`
    /// or `claim:NAME` (a JWT claim). A request without it (anonymous, header absent) is split per request.
    /// Default `consumer`.
    #[serde(default = "default_split_key")]
    pub split_key: String,
    /// A progressive rollout of one canary version, driven by the gateway's own per-version statistics: its weight
    /// goes through `steps` while it meets the SLOs relative to the stable version, and drops to 0 when it breaches
    /// them. See docs/versions.md, "Progressive rollout".
    #[serde(default)]
    pub rollout: Option<RawRollout>,
}

/// `models.<name>.rollout`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// The canary version rolled out (its `weight` is left out: the rollout sets it).
    pub version: String,
    /// The canary's weights, in percent, step by step (increasing; e.g. `[5, 25, 50, 100]`).
    pub steps: Vec<f64>,
    /// Time between two evaluations, e.g. `30s`. Default `1m`.
    #[serde(default = "default_rollout_interval")]
    pub interval: HumanDuration,
    /// Requests the canary and the stable version each answered (from the split; pinned ones are not counted)
    /// since the step began before a step is judged; fewer means hold, never promote. Default 100.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Consecutive breaching evaluations that roll the canary back (weight 0). Default 2.
    #[serde(default = "default_breaches")]
    pub breaches: u32,
    /// Steps (weights from `steps`) that wait for a manual `promote` before the canary gets them. A breach still
    /// rolls back while a step waits.
    #[serde(default)]
    pub gates: Vec<f64>,
    /// The SLOs, relative to the stable version over the same window.
    #[serde(default)]
    pub slo: RawRolloutSlo,
}

/// `models.<name>.rollout.slo`: a step passes when every set SLO holds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRolloutSlo {
    /// The canary's error rate (answers ≥ 500) may exceed the stable version's by at most this many percentage
    /// points. Default 1.
    #[serde(default = "default_error_rate_increase")]
    pub max_error_rate_increase: f64,
    /// The canary's p99 latency may be at most this many times the stable version's. Default 1.5.
    #[serde(default = "default_p99_ratio")]
    pub max_p99_ratio: f64,
    /// A shadow version of the model whose agreement (docs/versions.md, "Shadow versions") gates the rollout too;
    /// with `min_shadow_agreement`.
    #[serde(default)]
    pub shadow: Option<String>,
    /// Least agreement, in percent, of `shadow`'s comparisons over the step (with at least `min_samples` compared).
    #[serde(default)]
    pub min_shadow_agreement: Option<f64>,
}

impl Default for RawRolloutSlo {
    fn default() -> Self {
        RawRolloutSlo {
            max_error_rate_increase: default_error_rate_increase(),
            max_p99_ratio: default_p99_ratio(),
            shadow: None,
            min_shadow_agreement: None,
        }
    }
}

fn default_rollout_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

fn default_min_samples() -> u64 {
    100
}

fn default_breaches() -> u32 {
    2
}

fn default_error_rate_increase() -> f64 {
    1.0
}

fn default_p99_ratio() -> f64 {
    1.5
}

/// One version of a model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModelVersion {
    /// The upstream (from `upstreams`) that serves this version.
    pub upstream: String,
    /// The path prefix of this version on its upstream: it replaces the request's `/v2/models/{model}` (or
    /// `/v2/models/{model}/versions/{version}`), the rest of the path and the query stay. `{model}` and `{version}`
    /// are replaced by the names. Default `/v2/models/{model}/versions/{version}` (Triton, KServe, `modelgate serve`).
    #[serde(default)]
    pub path: Option<String>,
    /// `stable`: gets every caller no canary takes (exactly one per model); `canary`: gets `weight` percent of
    /// callers; `shadow`: gets a copy of a sampled share of the admitted requests (`shadow`), its answers compared
    /// with the client's and never returned; `retired`: gets no traffic, and pinning it answers 404.
    pub state: VersionState,
    /// Percent of callers a `canary` gets, 0 to 100 in steps of 0.01; the canaries of a model sum to at most 100.
    /// Only for `state: canary`.
    #[serde(default)]
    pub weight: Option<f64>,
    /// The readiness probe: a path on the version's upstream, asked every 2 s through the upstream's own client
    /// (GET; 200 means ready; on a `protocol: http2` upstream the gRPC `ModelReady` RPC is asked instead). A version gets
    /// no traffic from the split until it answers ready, and none while it does not (the others share its callers).
    /// Default `{path}/ready` (the OIP v2 version readiness endpoint); `none` sends traffic without asking.
    #[serde(default)]
    pub probe: Option<String>,
    /// Free-form labels (git sha, dataset, owner), shown by `/admin/models` and in the access log's `model_tags`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How a `shadow` version gets its copies and how its answers are compared. Required for `state: shadow`, and
    /// only for it.
    #[serde(default)]
    pub shadow: Option<RawShadow>,
}

/// `shadow` of a model version: mirroring of admitted OIP v2 REST inference requests, with the answers compared per
/// output tensor. Copies never delay or change the client's answer: they are sent beside it, bounded, and dropped
/// (counted) when over the bounds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    /// Percent of the model's admitted inference requests copied to this version, 0 to 100 in steps of 0.01.
    pub sample: f64,
    /// Copies in flight at most (sent and not yet compared); a sampled request past it is not copied (counted as
    /// dropped, reason `busy`). Default 16.
    #[serde(default = "default_shadow_in_flight")]
    pub max_in_flight: usize,
    /// Largest request or answer copied, e.g. `1MiB`; a request (or an answer) larger than this, or of unknown
    /// length, is not copied (dropped, reason `too_large`). Default `4MiB`.
    #[serde(default = "default_shadow_max_body")]
    pub max_body: ByteSize,
    /// Time the shadow gets to answer, e.g. `2s`; later counts as result `shadow_error`. Default: the upstream's
    /// `timeouts.response`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Tolerances of the comparison.
    #[serde(default)]
    pub compare: RawCompare,
}

/// `shadow.compare`: when two answers agree. Numeric outputs agree when shapes and datatypes are equal and every
/// element satisfies `|shadow − primary| ≤ atol + rtol × |primary|` (NumPy's `allclose`); otherwise the top-k classes
/// of each row (last axis) are compared. Other outputs agree when equal.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    /// Absolute tolerance. Default 1e-5.
    #[serde(default = "default_atol")]
    pub atol: f64,
    /// Relative tolerance. Default 1e-3.
    #[serde(default = "default_rtol")]
    pub rtol: f64,
    /// How many top classes of each row must agree (as a set) when values differ past the tolerances. Default 1
    /// (argmax).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

impl Default for RawCompare {
    fn default() -> Self {
        RawCompare { atol: default_atol(), rtol: default_rtol(), top_k: default_top_k() }
    }
}

fn default_shadow_in_flight() -> usize {
    16
}

fn default_shadow_max_body() -> ByteSize {
    ByteSize(4 << 20)
}

fn default_atol() -> f64 {
    1e-5
}

fn default_rtol() -> f64 {
    1e-3
}

fn default_top_k() -> usize {
    1
}

/// A model version's place in the rollout.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    Stable,
    Canary,
    Shadow,
    Retired,
}

fn default_split_key() -> String {
    "consumer".into()
}

/// TLS on the proxy listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Certificates with their keys. A client's SNI picks the certificate whose `hosts` match it; the first
    /// certificate is served when none does (or the client sent no SNI).
    pub certificates: Vec<RawCertificate>,
    /// Oldest TLS version accepted: `"1.2"` (default) or `"1.3"`. Only AEAD cipher suites with forward secrecy are
    /// offered either way (rustls has no weak ones).
    #[serde(default = "default_tls_min")]
    pub min_version: String,
    /// Also listen for plain HTTP on this address and answer every request with a 308 redirect to the same URL
    /// over HTTPS (on `listen`'s port). Off unless set; changes take effect on restart.
    #[serde(default)]
    pub redirect_http: Option<String>,
    /// Client certificate authentication (mTLS). Off unless set: no certificate is asked for.
    #[serde(default)]
    pub client_auth: Option<RawClientAuth>,
}

/// `tls.client_auth`: clients present certificates issued by `ca`; routes take them as credentials with
/// `auth: {methods: [mtls]}` (the certificate's SAN URI, else its SAN DNS name, is the consumer).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// PEM file of the CA certificates client certificates must chain to, relative to this file. Reloaded with
    /// the config (and when the file changes).
    pub ca: String,
    /// `true`: a client without a valid certificate fails the TLS handshake. Default `false`: the certificate is
    /// optional at the handshake, and routes whose `auth` methods include `mtls` refuse callers without one (401).
    #[serde(default)]
    pub required: bool,
    /// PEM files of certificate revocation lists (CRLs) from the clients' CA, relative to this file; watched, so a
    /// newly published CRL applies without a restart. A client certificate revoked in one of them fails the
    /// handshake. Only the client's own certificate is checked (not intermediates), and a certificate whose
    /// issuer has no CRL here is refused once any CRL is set (fail closed). Default: none.
    #[serde(default)]
    pub crl: Vec<String>,
}

fn default_tls_min() -> String {
    "1.2".into()
}

/// One certificate chain and its private key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM file with the certificate chain, leaf first, relative to this file.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1), relative to this file.
    pub key: String,
    /// Host names (SNI) this certificate is served for; `*.example.com` matches one label. Empty: served only as
    /// the default (first) certificate.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// TLS toward an upstream's `https://` targets. The target's certificate is always verified.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of the CA certificates that issue the targets' certificates (an internal CA), relative to this
    /// file. Default: the Mozilla root set built into modelgate (webpki-roots).
    #[serde(default)]
    pub ca: Option<String>,
    /// The name the targets' certificates must be valid for, also sent as SNI. Default: each target's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM file with the gateway's certificate chain (leaf first), presented to targets that require client
    /// certificates (mTLS to upstreams), relative to this file. Needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM file with the private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
}

/// Request metrics (on the admin `/metrics`) and the access log.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawObservability {
    /// Record request metrics (`modelgate_requests_total`, the latency histograms). Default `true`.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// How many distinct consumers get their own `consumer` label in request metrics; later ones are counted as
    /// `other`, so metric cardinality stays bounded. Default `100`.
    #[serde(default = "default_consumer_labels")]
    pub consumer_labels: usize,
    /// One JSON line per request. Off unless set.
    #[serde(default)]
    pub access_log: Option<RawAccessLog>,
    /// OpenTelemetry spans exported over OTLP. Off unless set (W3C `traceparent` is propagated either way).
    #[serde(default)]
    pub tracing: Option<RawTracing>,
}

impl Default for RawObservability {
    fn default() -> Self {
        RawObservability { metrics: true, consumer_labels: default_consumer_labels(), access_log: None, tracing: None }
    }
}

/// Span export: a sampled request yields a server span with children for authenticate, authorize, admit,
/// validate, route and the upstream call; the upstream receives the upstream span as its `traceparent` parent.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The collector: `http://otel-collector:4317` for gRPC, `http://otel-collector:4318` for HTTP (`/v1/traces`
    /// is added when the URL has no path). `https://` for TLS (webpki roots).
    pub endpoint: String,
    /// `grpc` (OTLP/gRPC) or `http` (OTLP/HTTP, protobuf). Default `grpc`.
    #[serde(default = "default_tracing_protocol")]
    pub protocol: String,
    /// Fraction of new traces sampled, 0.0 to 1.0 (trace-id ratio). A caller's `traceparent` decides for the
    /// traces it continues (parent-based), as in OpenTelemetry's `parentbased_traceidratio`. Default `0.01`.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// The `service.name` of the exported spans. Default `modelgate`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Headers (gRPC metadata) sent with every export, e.g. a vendor's API key; write secrets as
    /// `${file:PATH}` or `${ENV}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Limit for one export call. Default `10s`.
    #[serde(default = "default_export_timeout")]
    pub timeout: HumanDuration,
    /// Finished spans waiting for export; when the collector falls behind, further spans are dropped, never
    /// slowing a request. Default `2048`.
    #[serde(default = "default_span_queue")]
    pub queue: usize,
}

fn default_tracing_protocol() -> String {
    "grpc".into()
}

fn default_sample_ratio() -> f64 {
    0.01
}

fn default_service_name() -> String {
    "modelgate".into()
}

fn default_export_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

fn default_span_queue() -> usize {
    2048
}

fn default_consumer_labels() -> usize {
    100
}

/// The access log: written by its own thread; when it falls behind, lines are dropped and counted
/// (`modelgate_access_log_dropped_total`), never blocking a request.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `stdout`, or a file (relative to this config file), appended to. Changes take effect on restart.
    #[serde(default = "default_access_log_path")]
    pub path: String,
    /// Lines waiting to be written before new ones are dropped. Default `65536`.
    #[serde(default = "default_access_log_queue")]
    pub queue: usize,
    /// Only these fields (see docs/observability.md), e.g. `[time, request_id, route, status, duration_ms]`.
    /// Default: all.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

fn default_access_log_path() -> String {
    "stdout".into()
}

fn default_access_log_queue() -> usize {
    65536
}

/// A Redis server (or a proxy in front of one) shared by all gateways.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS, or `unix:///path/redis.sock`. Write it as
    /// `${REDIS_URL}` when it holds a password (shown redacted).
    pub url: String,
    /// Prefix of every key and channel modelgate uses, so several deployments can share one Redis. Default
    /// `modelgate:`.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
    /// Time allowed to connect. Default `1s`.
    #[serde(default = "default_redis_connect")]
    pub connect_timeout: HumanDuration,
    /// Time allowed for one command. Default `250ms`.
    #[serde(default = "default_redis_command")]
    pub command_timeout: HumanDuration,
}

/// A team's namespace (`namespaces.<name>`): what its include file may hold.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNamespace {
    /// Who may change the namespace through the namespace API (`PUT /admin/namespaces/{ns}/…`, `modelgate apply`):
    /// consumers and groups of any identity method (API keys, JWT claims, AWS IAM, mTLS). Admins may too.
    #[serde(default)]
    pub owners: RawOwners,
    /// Path prefixes the namespace owns (e.g. `/v2/models/team-a-`): each of its routes' `path` or `path_prefix`
    /// starts with one. Two namespaces' prefixes may not overlap.
    pub paths: Vec<String>,
    /// Hosts its upstreams' targets may be on: exact names or addresses, or `*.example.com`. Empty: any.
    #[serde(default)]
    pub upstream_hosts: Vec<String>,
    /// Authentication methods its routes may use (`api_key`, `jwt`, `aws_iam`, `mtls`). Every route needs an `auth`
    /// plugin with at least one method, and only these. Empty: any method.
    #[serde(default)]
    pub auth_methods: Vec<String>,
    /// The highest rate a route's limits may allow, e.g. `{limit: 100, per: 1s}`: every route then needs a
    /// `rate_limit` plugin, each of its limits at most this rate.
    #[serde(default)]
    pub max_rate: Option<RawRateCeiling>,
    /// The largest request body a route may accept, e.g. `1MiB`: every route then needs `request_size` with a
    /// `max_body` at most this.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// Most routes the namespace may hold. Default: no limit.
    #[serde(default)]
    pub max_routes: Option<usize>,
    /// Most upstreams the namespace may hold. Default: no limit.
    #[serde(default)]
    pub max_upstreams: Option<usize>,
    /// Most models the namespace may hold. Default: no limit.
    #[serde(default)]
    pub max_models: Option<usize>,
    /// Most model versions, all its models together, the namespace may hold. Default: no limit.
    #[serde(default)]
    pub max_versions: Option<usize>,
    /// The largest `shadow.sample` (percent of a model's requests copied) a version of the namespace may have.
    /// Default: no limit.
    #[serde(default)]
    pub max_shadow_sample: Option<f64>,
    /// Runtimes the namespace's model versions may run on, as their servers report them in the OIP model metadata's
    /// `platform` (e.g. `onnxruntime_onnx`, `pytorch_libtorch`, `tensorrt_plan`; `modelgate serve` reports
    /// `onnxruntime_onnx` or `tract_onnx`). A version whose server reports another platform, or none, is not ready
    /// and gets no traffic (its readiness probe also asks the metadata). Empty: any runtime.
    #[serde(default)]
    pub runtimes: Vec<String>,
}

/// `namespaces.<name>.owners`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOwners {
    /// Consumer names (an API key's consumer, a JWT's consumer claim, …).
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Groups (from keys, JWT group claims or `identity.consumers`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// JWT claims by name with the values that make their holder an owner, e.g. `{department: [ml-team-a]}`: a
    /// caller whose verified token has one of the values (or a list holding one) owns the namespace.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
}

/// `namespaces.<name>.max_rate`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateCeiling {
    /// Requests allowed per `per`.
    pub limit: u64,
    /// The window, e.g. `1s` or `1m`.
    pub per: HumanDuration,
}

/// A fragment file in the include directory: a team's own upstreams and routes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFragment {
    /// Upstream services by name; names must be unique across all files.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Routes, appended after the main file's routes.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Models with their versions (as the main file's `models`); names must be unique across all files. In a
    /// namespace's file, each model's `/v2/models/{name}/` is inside the namespace's paths and its versions use the
    /// file's own upstreams.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
}

/// The admin listener (health, reload, config views).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin API. Default `127.0.0.1:8081`; port 0 picks a free port.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Consumers who may call the admin API: by API key (from `identity.api_keys`, in the API key header or as
    /// `Authorization: Bearer`) or by a JWT of one of `identity.issuers` whose consumer claim names them. With
    /// `consumers` and `groups` both empty no credential is asked, which is allowed only on a loopback address.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Groups whose members may call the admin API: an API key's groups or a JWT's groups claim (e.g. an Okta
    /// group `modelgate-admins`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Address of the status listener (as Kong's `status_listen`): `GET /status/live`, `GET /status/ready` and
    /// `GET /metrics`, read-only and without a credential, for kubelet probes and Prometheus on a port the admin API
    /// is not on. Default: none (the admin API serves `/metrics` to its callers).
    #[serde(default)]
    pub status_listen: Option<String>,
    /// The web console at `/console/` on this listener, with single sign-on for people through an OIDC issuer
    /// (authorization code flow with PKCE). Unset: the console opens without a login only where the admin API asks
    /// no credential (loopback, no `consumers`/`groups`); otherwise it explains how to set this.
    #[serde(default)]
    pub console: Option<RawConsole>,
}

/// Single sign-on for the console (`admin.console`): people log in at the company IdP; a signed-in person gets the
/// admin API exactly as a token with the same consumer and groups would (`admin.consumers` / `admin.groups`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// The issuer people log in at: a name under `identity.issuers` (its discovery document gives the
    /// authorization, token and logout endpoints; its keys check the ID token; its `groups_claim` gives groups).
    pub issuer: String,
    /// The OAuth client registered at the IdP for the console; ID tokens must be minted for it (`aud`).
    pub client_id: String,
    /// The client's secret, written as `${ENV_NAME}` (shown redacted); unset for a public client (PKCE alone).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Where the IdP sends people back: this listener's `/console/callback` as browsers reach it, registered at the
    /// IdP. Must be https unless its host is loopback. Default `http://{admin.listen}/console/callback`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Where the IdP sends people back who signed in at a route with `auth: {methods: [oidc_session]}`: the proxy
    /// listener's `/.modelgate/callback` as browsers reach it, registered at the IdP. Must be https unless its host
    /// is loopback. Default `http://{listen}/.modelgate/callback`.
    #[serde(default)]
    pub routes_redirect_uri: Option<String>,
    /// Scopes asked for. Default `[openid, profile, email]`; `openid` is always asked.
    #[serde(default = "default_console_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim naming the person, matched against `admin.consumers` and shown in the audit log.
    /// Default `email`.
    #[serde(default = "default_console_consumer_claim")]
    pub consumer_claim: String,
    /// How long a login lasts before the person logs in again (sessions also end at logout). Default `8h`.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: HumanDuration,
    /// The secret that seals session cookies (at least 32 characters, as `${ENV_NAME}`); give every gateway the
    /// same one behind a load balancer. Unset: a random key per process (logins end at a restart).
    #[serde(default)]
    pub cookie_secret: Option<String>,
}

/// Process-level settings; changes to `workers` need a restart.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads for the proxy; 1 runs a single-threaded runtime. Default: one per CPU core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long shutdown (SIGTERM/SIGINT) waits for in-flight requests before closing. Default `30s`.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// Watch the config files and reload on change. Default `true`.
    #[serde(default = "yes")]
    pub watch: bool,
    /// Quiet time after the last file change before a watched reload starts. Default `250ms`.
    #[serde(default = "default_debounce")]
    pub reload_debounce: HumanDuration,
    /// Maximum time to receive a client's request headers. Default `30s`.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Client connections open at once on the proxy listener; past it new ones wait in the kernel's accept queue
    /// until one closes, so connections cannot grow memory without bound (nginx's `worker_connections`). The admin
    /// listener takes 256. Default `20000`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests the proxy works on at once, from arrival to the upstream's response head (reading, checking,
    /// waiting for the upstream); past it new requests are shed at once with 503 `overloaded` and `Retry-After`, so
    /// a flood (many HTTP/2 streams on few connections, a stalled upstream) cannot grow memory. Reloadable.
    /// Default `10000`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_max_connections() -> usize {
    20_000
}

fn default_max_in_flight() -> usize {
    10_000
}

/// An upstream service: a set of equivalent targets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Target base URLs, e.g. `http://10.0.0.5:8000` or `https://models.internal:8443` (TLS, verified; see `tls`).
    pub targets: Vec<String>,
    /// `round_robin` (default) or `least_outstanding` (fewest in-flight requests, ties round-robin).
    #[serde(default)]
    pub balance: Balance,
    /// `http1` (default) or `http2` (prior knowledge, needed for gRPC upstreams).
    #[serde(default)]
    pub protocol: Protocol,
    /// Timeouts for talking to targets.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Retries on another target.
    #[serde(default)]
    pub retries: RawRetries,
    /// Passive health: eject a target after consecutive failures of real traffic.
    #[serde(default)]
    pub passive_health: RawPassiveHealth,
    /// Active health checks; off unless set.
    #[serde(default)]
    pub health: Option<RawActiveHealth>,
    /// How `https://` targets are verified.
    #[serde(default)]
    pub tls: RawUpstreamTls,
    /// Plugins every route of this upstream gets (Kong's service plugins); they replace top-level `plugins` of the
    /// same name and are replaced by the route's own.
    #[serde(default)]
    #[schemars(with = "Vec<BTreeMap<String, serde_json::Value>>")]
    pub plugins: Vec<BTreeMap<String, serde_norway::Value>>,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastOutstanding,
}

/// Protocol to targets.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

/// Timeouts toward an upstream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect timeout. Default `2s`.
    #[serde(default = "default_connect")]
    pub connect: HumanDuration,
    /// Time from sending the request to receiving the response headers. Default `60s`.
    #[serde(default = "default_response")]
    pub response: HumanDuration,
    /// How long an idle pooled connection is kept. Default `90s`.
    #[serde(default = "default_idle")]
    pub idle: HumanDuration,
}

/// Retry policy: a retry always goes to a target not yet tried for this request.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Extra attempts after the first. Default `2`; `0` disables retries.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Response statuses that are retried (besides connect errors). Default `[502, 503]`.
    #[serde(default = "default_retry_on")]
    pub on_status: Vec<u16>,
    /// Largest request body kept in memory so it can be replayed; larger bodies stream and are not retried.
    /// Default `1MiB`.
    #[serde(default = "default_retry_buffer")]
    pub max_body: ByteSize,
}

/// Passive health settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveHealth {
    /// Consecutive failures (connect error, timeout, 5xx in `retries.on_status`) that eject a target. Default `5`;
    /// `0` disables passive health.
    #[serde(default = "default_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected target stays out before it is tried again. Default `10s`.
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
}

/// Active health checks: a GET to each target on an interval.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawActiveHealth {
    /// Path probed on each target, e.g. `/v2/health/ready`. A 2xx answer is healthy.
    pub path: String,
    /// Time between probes. Default `5s`.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Probe timeout. Default `1s`.
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive successful probes that mark an unhealthy target healthy. Default `2`.
    #[serde(default = "default_two")]
    pub healthy_threshold: u32,
    /// Consecutive failed probes that mark a healthy target unhealthy. Default `3`.
    #[serde(default = "default_three")]
    pub unhealthy_threshold: u32,
}

/// A route: what requests it matches, where they go, and the plugins they pass.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name; appears in metrics, logs and errors.
    pub name: String,
    /// What requests this route matches.
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    /// Name of the upstream that serves this route. Only routes that `modelgate authz` serves (checks for another
    /// proxy, which forwards the request itself) may leave it out; `modelgate gateway` refuses them.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Retry POST/PATCH requests too (only safe when the upstream's handler is idempotent, as inference is).
    /// Default `false`: only GET, HEAD, OPTIONS, PUT, DELETE are retried.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Largest gRPC message an OIP gRPC call (`/inference.GRPCInferenceService/…`) may send on this route. The
    /// gateway reads each call's first message to learn its model (policy, limits and validation by model), so
    /// this bounds what one call holds in memory; a larger message is refused with `RESOURCE_EXHAUSTED` from its
    /// length prefix, before it is read. Default `16MiB`.
    #[serde(default = "default_grpc_max_message")]
    pub grpc_max_message: ByteSize,
    /// Plugins, each a one-key map `{plugin_name: settings}`, run phase by phase in this order.
    #[serde(default)]
    #[schemars(with = "Vec<BTreeMap<String, serde_json::Value>>")]
    pub plugins: Vec<BTreeMap<String, serde_norway::Value>>,
    /// Named sets from the top-level `plugin_sets` to include, in order, before the route's own plugins.
    #[serde(default)]
    pub plugin_sets: Vec<String>,
    /// Take the top-level and upstream plugins as defaults. Default `true`; `false` runs only the route's own
    /// plugins and sets (an open health route beside authenticated ones).
    #[serde(default = "yes")]
    pub inherit_plugins: bool,
    /// Forward the path without the matched `path_prefix` (`/text/a` matched by `/text` goes up as `/a`; Kong's
    /// `strip_path`). Only with `path_prefix`. Default `false`: the path goes up as it came.
    #[serde(default)]
    pub strip_prefix: bool,
    /// A path put before the forwarded path (`/api` + `/a` = `/api/a`; Kong's service `path`), e.g. for an upstream
    /// mounted under a prefix. Default: none.
    #[serde(default)]
    pub upstream_path: Option<String>,
}

/// Request matching. `path` and `path_prefix` are exclusive; one is required.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Host names: exact (`api.example.com`) or wildcard (`*.example.com`, any depth). Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Exact path (`/v2/health/ready`) or template with parameters (`/v2/models/{model}/infer`, `{*rest}` for
    /// the remainder).
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix matched on segment boundaries: `/v2/models/a` matches `/v2/models/a` and `/v2/models/a/x`,
    /// not `/v2/models/ab`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// HTTP methods; empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Required request headers: name → exact value, or `"*"` for "present with any value".
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Identity providers and credential stores.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// JWT issuers (OIDC identity providers) by name; routes name them in `auth: {methods: [jwt:NAME]}`.
    #[serde(default)]
    pub issuers: BTreeMap<String, RawIssuer>,
    /// The API key store; needed by routes whose `auth` methods include `api_key`.
    #[serde(default)]
    pub api_keys: Option<RawApiKeys>,
    /// AWS IAM identities: callers send a presigned `sts:GetCallerIdentity` request (the aws-iam-authenticator
    /// token); routes use it with `auth: {methods: [aws_iam]}`.
    #[serde(default)]
    pub aws_iam: Option<RawAwsIam>,
    /// The gateway's own signing key for identity assertions to upstreams (`auth: {assertion: true}`); its
    /// public keys are published at `/.well-known/jwks.json` on the admin listener.
    #[serde(default)]
    pub assertion: Option<RawAssertion>,
    /// Consumers declared in config (Kong's consumers): their groups and scopes, and API key values they
    /// authenticate with, written as secret references (`${file:secrets/team-a.key}`, `${TEAM_A_KEY}`).
    #[serde(default)]
    pub consumers: BTreeMap<String, RawConsumer>,
}

/// A consumer declared in config.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// Groups of this consumer, for policy rules and rate-limit tiers; added to the groups its credentials carry
    /// (its keys, a JWT's groups claim, an AWS IAM mapping, a client certificate).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Scopes granted to this consumer's declared keys.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// API key values this consumer authenticates with (20 to 512 printable characters), kept only as hashes;
    /// write each as a secret reference, never inline. Needs `identity.api_keys` (for its header names).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Signed identity assertions: a short-lived ES256 JWT in `x-modelgate-assertion` that upstreams verify against
/// the gateway's JWKS, so a model service can check who called it without trusting the network.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    /// The P-256 private key (PKCS#8 PEM, relative to this config file) that signs assertions, made with
    /// `modelgate keys signing-key --out FILE`. Watched: replacing it rotates the key without a restart.
    pub signing_key: String,
    /// Keys still published in the JWKS after a rotation (private or public PEM files), so assertions signed
    /// just before it keep verifying; remove them once `lifetime` has passed.
    #[serde(default)]
    pub previous_keys: Vec<String>,
    /// The assertions' `iss`. Default `modelgate`.
    #[serde(default = "default_assertion_issuer")]
    pub issuer: String,
    /// Assertion lifetime (`exp - iat`), 5s to 1h. Default `60s`. An assertion is reused for half of it.
    #[serde(default = "default_assertion_lifetime")]
    pub lifetime: HumanDuration,
}

/// AWS IAM authentication: the gateway checks that the caller's token is a presigned STS `GetCallerIdentity`
/// request for the configured endpoint, performs it, and maps the ARN STS answers with to a consumer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAwsIam {
    /// The STS endpoint the presigned request must be for, and which the gateway calls. Default
    /// `https://sts.amazonaws.com`; regional endpoints such as `https://sts.eu-west-1.amazonaws.com` work too.
    /// Plain `http` is accepted only for a loopback address (a local test STS).
    #[serde(default = "default_sts_endpoint")]
    pub sts_endpoint: String,
    /// Request header carrying the token (`k8s-aws-v1.` + base64url of the presigned URL). Default
    /// `x-aws-iam-token`. `Authorization: Bearer k8s-aws-v1.…` is accepted too.
    #[serde(default = "default_aws_header")]
    pub header: String,
    /// When set, the presigned request must have signed the `x-k8s-aws-id` header, and the gateway sends this
    /// value in it: a token minted for another cluster or service does not work here (as in aws-iam-authenticator).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Longest accepted presign lifetime (`X-Amz-Expires`), and how far back `X-Amz-Date` may lie. Default `15m`.
    #[serde(default = "default_presign_age")]
    pub max_presign_age: HumanDuration,
    /// Which ARNs may call, and as whom; the first matching entry wins. An ARN that matches none is refused.
    pub principals: Vec<RawAwsPrincipal>,
}

/// One ARN mapping of `identity.aws_iam.principals`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAwsPrincipal {
    /// The ARN as STS returns it, `*` matching any run of characters: e.g. `arn:aws:iam::111122223333:user/alice`,
    /// or for a role `arn:aws:sts::111122223333:assumed-role/ml-team-a/*` (any session of the role).
    pub arn: String,
    /// The consumer name the caller gets.
    pub consumer: String,
    /// Groups the caller gets, for policy rules.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Scopes the caller gets, for policy rules.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A JWT issuer. Keys come from OIDC discovery (default), a `jwks_uri`, or a static `jwks_file`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// The issuer identifier, compared exactly with the token's `iss`, e.g. `https://idp.example.com/oauth2/default`.
    /// Discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// JWKS URL; skips discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A JWKS file (relative to this config file), watched and reloaded live; skips discovery and fetching.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Accepted audiences: the token's `aud` must contain one. Required: a token minted for another service must
    /// not work here.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms. Default `[RS256]`. `none` is never accepted; HS256/384/512 only with
    /// `hs_secret`, and then only HS algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Shared secret for HS* tokens, written as `${ENV_NAME}` so it stays out of the file (shown redacted).
    /// Unset: HS* is refused.
    #[serde(default)]
    pub hs_secret: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default `30s`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Longest accepted token lifetime (`exp - iat`); longer-lived tokens are rejected, and tokens without
    /// `iat` too. Unset: no limit.
    #[serde(default)]
    pub max_token_lifetime: Option<HumanDuration>,
    /// How long fetched keys are used before they are fetched again. Default `10m`. The last good keys are kept
    /// while the identity provider cannot be reached.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_cache: HumanDuration,
    /// Least time between two fetches caused by tokens with an unknown `kid`. Default `10s`.
    #[serde(default = "default_refetch")]
    pub jwks_min_refetch: HumanDuration,
    /// Claim holding the space-separated scopes (`scp` arrays are read too). Default `scope`.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Claim holding the groups (an array of strings). Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim naming the consumer, e.g. `client_id` for client-credentials tokens. Default `sub`.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
}

fn default_redis_prefix() -> String {
    "modelgate:".into()
}

fn default_redis_connect() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_redis_command() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(250))
}

fn default_assertion_issuer() -> String {
    "modelgate".into()
}

fn default_assertion_lifetime() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

fn default_sts_endpoint() -> String {
    "https://sts.amazonaws.com".into()
}

fn default_aws_header() -> String {
    "x-aws-iam-token".into()
}

fn default_presign_age() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(15 * 60))
}

/// Where API keys are kept and how callers send them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// The key file written by `modelgate keys create` (relative to this config file). It holds only hashes; it is
    /// watched, so new, revoked and expired keys take effect without a restart.
    pub file: String,
    /// Request header(s) carrying the key, tried in order: one name or a list (`[x-api-key, apikey]`, Kong's
    /// default being `apikey`). Default `x-api-key`. `Authorization: Bearer mg_…` is accepted too.
    #[serde(default = "default_key_header")]
    pub header: OneOrMany,
    /// Query parameter(s) that may carry the key when no key header is sent (Kong's `key_names` in the query),
    /// e.g. `[apikey]`. Off by default: a URL ends up in browser history, `Referer` headers and other proxies'
    /// logs. The gateway removes the parameter before forwarding (unless the route's `auth` has
    /// `forward_credentials`) and never logs the query.
    #[serde(default)]
    pub query: Vec<String>,
    /// Also honour revocations published through the top-level `redis` (`modelgate keys revoke --redis URL`):
    /// every gateway refuses a revoked key within milliseconds, without waiting for the key file to be copied
    /// and reloaded. While Redis is unreachable the revocations already received stay in force. Default `false`.
    #[serde(default)]
    pub redis_revocations: bool,
}

/// The audit log: one JSON line per decision, each carrying the hash of the line before.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The log file (relative to this config file); created if missing, appended to, chain continued.
    pub path: String,
    /// `always`: a request is answered only after its audit line is on disk (fsync); `interval`: fsync every
    /// `fsync_interval`; `never`: leave it to the OS. Default `interval`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Time between fsyncs with `fsync: interval`. Default `1s`.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: HumanDuration,
    /// Size at which the file is rotated to `PATH.<first sequence number>`; the chain continues in the new file.
    /// Default `100MiB`.
    #[serde(default = "default_audit_size")]
    pub max_file_size: ByteSize,
    /// Lines between checkpoint lines (which record the count and chain hash so far). Default `1000`.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_every: u64,
    /// Lines waiting to be written before `when_full` applies. Default `8192`.
    #[serde(default = "default_audit_queue")]
    pub queue: usize,
    /// When the queue is full: `block` (the request waits) or `reject` (503 `audit_unavailable`). Never dropped.
    /// Default `block`.
    #[serde(default)]
    pub when_full: WhenFull,
}

/// When audit lines reach the disk.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    Always,
    #[default]
    Interval,
    Never,
}

/// What a request does when the audit queue is full.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Block,
    Reject,
}

// === defaults ===

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> HumanDuration {
    secs(30)
}
fn default_jwks_ttl() -> HumanDuration {
    secs(600)
}
fn default_refetch() -> HumanDuration {
    secs(10)
}
fn default_scope_claim() -> String {
    "scope".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_key_header() -> OneOrMany {
    OneOrMany::One("x-api-key".into())
}

/// A value written as one string or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}
fn default_fsync_interval() -> HumanDuration {
    secs(1)
}
fn default_grpc_max_message() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_audit_size() -> ByteSize {
    ByteSize(100 << 20)
}
fn default_checkpoint() -> u64 {
    1000
}
fn default_audit_queue() -> usize {
    8192
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_console_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_console_consumer_claim() -> String {
    "email".into()
}
fn default_session_lifetime() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(8 * 3600))
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}
fn yes() -> bool {
    true
}
fn secs(n: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(n))
}
fn millis(n: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(n))
}
fn default_grace() -> HumanDuration {
    secs(30)
}
fn default_debounce() -> HumanDuration {
    millis(250)
}
fn default_header_timeout() -> HumanDuration {
    secs(30)
}
fn default_connect() -> HumanDuration {
    secs(2)
}
fn default_response() -> HumanDuration {
    secs(60)
}
fn default_idle() -> HumanDuration {
    secs(90)
}
fn default_attempts() -> u32 {
    2
}
fn default_retry_on() -> Vec<u16> {
    vec![502, 503]
}
fn default_retry_buffer() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> HumanDuration {
    secs(10)
}
fn default_interval() -> HumanDuration {
    secs(5)
}
fn default_probe_timeout() -> HumanDuration {
    secs(1)
}
fn default_two() -> u32 {
    2
}
fn default_three() -> u32 {
    3
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self { listen: default_admin_listen(), consumers: Vec::new(), groups: Vec::new(), status_listen: None, console: None }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            workers: None,
            shutdown_grace: default_grace(),
            watch: true,
            reload_debounce: default_debounce(),
            header_read_timeout: default_header_timeout(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self { connect: default_connect(), response: default_response(), idle: default_idle() }
    }
}

impl Default for RawRetries {
    fn default() -> Self {
        Self { attempts: default_attempts(), on_status: default_retry_on(), max_body: default_retry_buffer() }
    }
}

impl Default for RawPassiveHealth {
    fn default() -> Self {
        Self { consecutive_failures: default_failures(), cooldown: default_cooldown() }
    }
}
