//! `rate_limit` (admit phase): several limits per route, each `limit` units per `per`, counted per consumer,
//! subject, route, model, model version, client IP, claim or header (any combination), in this gateway's memory
//! or in Redis shared by every gateway. Algorithm and exactness: see [`crate::limits`].
//!
//! Responses carry `RateLimit-Policy` and `RateLimit` (IETF httpapi draft: `"name";q=10;w=1` and
//! `"name";r=3;t=1`, the limit closest to exhaustion); a refusal is 429 `rate_limited` with `Retry-After` (seconds
//! until the refusing window ends). A request costs 1, or with `cost: bytes` its `Content-Length` (required then,
//! so a chunked body cannot dodge the limit), or with `batch_items` / `elements` what its OIP v2 tensors hold, so a
//! caller cannot dodge a per-request limit with huge batches.

use std::fmt::Write as _;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::request;
use serde::Deserialize;
use smallvec::SmallVec;

use modelgate_config::model::PluginSpec;
use modelgate_config::{ConfigError, HumanDuration};

use modelgate_config::model::RouteConfig;
use modelgate_pipeline::plugin::{Flow, Plugin, settings};
use modelgate_pipeline::{Ctx, GatewayError};
use modelgate_telemetry::metrics::{LimitLabels, Metrics, RouteLabels};

use crate::key::KeySpec;
use crate::store::{Decision, LocalStore, RedisStore, Services, Window, now_ms};
use prometheus_client::metrics::counter::Counter;

pub const NAME: &str = "rate_limit";

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Settings of `rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits; a request is admitted only within all of them, and then counted in all of them.
    pub limits: Vec<LimitConfig>,
    /// `local` (this gateway's memory; default) or `redis` (the top-level `redis`, shared by every gateway: exact
    /// across all of them).
    #[serde(default)]
    pub store: StoreKind,
    /// Send `RateLimit-Policy` and `RateLimit` headers. Default `true`.
    #[serde(default = "yes")]
    pub headers: bool,
    /// Largest body read to count `batch_items` or `elements`; larger bodies get 413. Default `8MiB`.
    #[serde(default = "default_max_body")]
    pub max_body: modelgate_config::ByteSize,
}

fn default_max_body() -> modelgate_config::ByteSize {
    modelgate_config::ByteSize(8 << 20)
}

/// One limit of `rate_limit.limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Name in headers and error messages. Default `<limit>-per-<per>`, e.g. `10-per-1s`.
    #[serde(default)]
    pub name: Option<String>,
    /// Units admitted per window.
    pub limit: u64,
    /// The window length, e.g. `1s`, `1m`, `1h`, `1d`; windows are aligned to the Unix epoch.
    pub per: HumanDuration,
    /// What the limit is counted per, combined: `consumer`, `subject`, `route`, `model`, `version`, `client_ip`,
    /// `claim:NAME`, `header:NAME`. Default `[consumer]`. An absent value (no model in the path, say) counts as `-`.
    #[serde(default = "default_by")]
    pub by: Vec<String>,
    /// What a request costs: `requests` (1; default), `bytes` (its `Content-Length`, required), `batch_items`
    /// (the first dimension of an OIP v2 inference request's first input) or `elements` (the elements of all its
    /// inputs). The last two read the request body (up to `max_body`); a body that is not a readable inference
    /// request is refused (400 `invalid_tensor`: it cannot be charged), an empty one costs 1.
    #[serde(default)]
    pub cost: Cost,
    /// When the store cannot answer (Redis down or slow): `allow` (default) or `deny` (503
    /// `rate_limit_unavailable`). A request is denied if any of its limits says `deny`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Other limits for some callers (Kong's consumer-scoped plugins): the first tier whose `consumers` or `groups`
    /// the authenticated caller is in sets `limit` for them; everyone else gets the limit above.
    #[serde(default)]
    pub tiers: Vec<TierConfig>,
}

/// One tier of `rate_limit.limits[].tiers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Consumers in this tier (exact names).
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Groups in this tier: a caller with one of them is in it.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Units admitted per window for this tier.
    pub limit: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    #[default]
    Requests,
    Bytes,
    BatchItems,
    Elements,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Allow,
    Deny,
}

fn yes() -> bool {
    true
}

fn default_by() -> Vec<String> {
    vec!["consumer".into()]
}

pub struct RateLimit {
    route: String,
    limits: Vec<Limit>,
    windows: Vec<Window>,
    store: Store,
    /// The `RateLimit-Policy` value, rendered once.
    policy: Option<HeaderValue>,
    needs_length: bool,
    /// `Some(max)` when a limit counts batch items or elements (the body is read).
    needs_body: Option<u64>,
    /// `modelgate_ratelimit_store_errors_total{route}`.
    store_errors: Counter,
}

struct Limit {
    name: String,
    /// `route|index`: what every counter key of this limit starts with.
    key_prefix: String,
    by: KeySpec,
    cost: Cost,
    deny_on_error: bool,
    tiers: Vec<TierConfig>,
    /// `modelgate_ratelimit_rejected_total{route, limit}`.
    rejected: Counter,
}

enum Store {
    Local(Arc<LocalStore>),
    Redis(Arc<RedisStore>),
}

/// Builds the plugin for `route`, counting in the snapshot's limit `services`, refusals in `metrics`.
pub fn build(spec: &PluginSpec, services: &Services, route: &RouteConfig, metrics: &Metrics) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: RateLimitConfig = settings(spec)?;
    let err = |path: String, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{path}", spec.origin.path), msg);
    if c.limits.is_empty() {
        return Err(err("limits".into(), "no limit".into()).hint("e.g. limits: [{limit: 10, per: 1s}]"));
    }
    let store = match c.store {
        StoreKind::Local => Store::Local(services.local.clone()),
        StoreKind::Redis => match &services.redis {
            Some(r) => Store::Redis(r.clone()),
            None => {
                return Err(err("store".into(), "the redis store needs the top-level `redis` section".into())
                    .hint("add redis: {url: ${REDIS_URL}}, or use store: local"));
            }
        },
    };
    let mut limits = Vec::new();
    let mut windows = Vec::new();
    for (i, l) in c.limits.iter().enumerate() {
        let at = |f: &str| format!("limits[{i}].{f}");
        let window_ms = l.per.0.as_millis() as u64;
        if window_ms == 0 || !window_ms.is_multiple_of(1000) {
            return Err(err(at("per"), "must be a whole number of seconds, at least 1s".into()).hint("e.g. 1s, 1m, 1h, 1d"));
        }
        if l.limit == 0 {
            return Err(err(at("limit"), "must be at least 1".into()).hint("to refuse every request use a policy instead"));
        }
        let by = KeySpec::parse(&l.by).map_err(|(j, msg, hint)| err(at(&format!("by[{j}]")), msg).hint(hint))?;
        let name = l.name.clone().unwrap_or_else(|| format!("{}-per-{}", l.limit, humantime::format_duration(l.per.0)));
        if name.is_empty() || name.contains(['"', '\\']) || !name.is_ascii() {
            return Err(err(at("name"), format!("{name:?} cannot be sent in a header")).hint("use letters, digits and -"));
        }
        let rejected = metrics.ratelimit_rejected.get_or_create(&LimitLabels { route: route.name.clone(), limit: name.clone() }).clone();
        for (j, t) in l.tiers.iter().enumerate() {
            if t.limit == 0 {
                return Err(err(at(&format!("tiers[{j}].limit")), "must be at least 1".into()));
            }
            if t.consumers.is_empty() && t.groups.is_empty() {
                return Err(err(at(&format!("tiers[{j}]")), "a tier names no consumer and no group".into())
                    .hint("e.g. {groups: [gold], limit: 1000}"));
            }
        }
        let tiers =
            l.tiers.iter().map(|t| TierConfig { consumers: t.consumers.clone(), groups: t.groups.clone(), limit: t.limit }).collect();
        limits.push(Limit {
            name,
            key_prefix: format!("{}|{i}", route.name),
            by,
            cost: l.cost,
            deny_on_error: l.on_store_error == OnStoreError::Deny,
            tiers,
            rejected,
        });
        windows.push(Window { limit: l.limit, window_ms });
    }
    let policy = c.headers.then(|| policy_header(&limits, &windows));
    Ok(Box::new(RateLimit {
        store_errors: metrics.ratelimit_store_errors.get_or_create(&RouteLabels { route: route.name.clone() }).clone(),
        route: route.name.clone(),
        needs_length: limits.iter().any(|l| l.cost == Cost::Bytes),
        needs_body: limits.iter().any(|l| matches!(l.cost, Cost::BatchItems | Cost::Elements)).then_some(c.max_body.0),
        limits,
        windows,
        store,
        policy,
    }))
}

/// The `RateLimit-Policy` value for `limits` at `windows`.
fn policy_header(limits: &[Limit], windows: &[Window]) -> HeaderValue {
    let mut s = String::new();
    for (l, w) in limits.iter().zip(windows) {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "\"{}\";q={};w={}", l.name, w.limit, w.window_ms / 1000);
        match l.cost {
            Cost::Bytes => s.push_str(";qu=\"content-bytes\""),
            Cost::BatchItems => s.push_str(";qu=\"batch-items\""),
            Cost::Elements => s.push_str(";qu=\"elements\""),
            Cost::Requests => {}
        }
    }
    HeaderValue::from_str(&s).expect("checked names")
}

// === impl RateLimit ===

impl RateLimit {
    /// The windows for this caller when a tier of some limit takes it in; `None`: the configured ones (no
    /// allocation on routes without tiers).
    fn tiered(&self, ctx: &Ctx) -> Option<Vec<Window>> {
        if self.limits.iter().all(|l| l.tiers.is_empty()) {
            return None;
        }
        let p = ctx.principal()?;
        let tier_of = |l: &Limit| {
            l.tiers
                .iter()
                .find(|t| t.consumers.iter().any(|c| *c == p.consumer) || t.groups.iter().any(|g| p.groups.contains(g)))
                .map(|t| t.limit)
        };
        if self.limits.iter().all(|l| tier_of(l).is_none()) {
            return None;
        }
        Some(self.limits.iter().zip(&self.windows).map(|(l, w)| Window { limit: tier_of(l).unwrap_or(w.limit), ..*w }).collect())
    }

    /// The counter key of each limit for this request, one after another in `buf`; returns where each ends.
    fn render_keys(&self, buf: &mut String, ctx: &Ctx, req: &request::Parts) -> SmallVec<[usize; 4]> {
        self.limits
            .iter()
            .map(|l| {
                buf.push_str(&l.key_prefix);
                l.by.render(buf, ctx, req, &self.route);
                buf.len()
            })
            .collect()
    }

    /// The counter keys as owned strings (for a store that outlives the phase's borrow: Redis).
    fn keys(&self, ctx: &Ctx, req: &request::Parts) -> Vec<String> {
        let mut buf = String::with_capacity(64 * self.limits.len());
        let ends = self.render_keys(&mut buf, ctx, req);
        split_keys(&buf, &ends).map(String::from).collect()
    }

    fn costs(&self, ctx: &Ctx, req: &request::Parts) -> Result<SmallVec<[u64; 4]>, GatewayError> {
        let length = if self.needs_length {
            // The declared length, else the length of a body already read (a unary gRPC message, which clients
            // send without Content-Length).
            let declared = req.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            match declared.or_else(|| ctx.body().map(|b| b.len() as u64)) {
                Some(n) => n,
                None => return Err(GatewayError::LengthRequired),
            }
        } else {
            0
        };
        // A body counted by its tensors must be one the gateway can read: a body the typed parse refuses (a
        // duplicate key, a shape it cannot count) could still be run by the upstream, so it is refused here rather
        // than charged 1. No body at all (a metadata GET) costs 1.
        let infer = match ctx.infer() {
            Some(Err(e)) if self.needs_body.is_some() && ctx.body().is_some_and(|b| !b.is_empty()) => {
                return Err(GatewayError::InvalidTensor(format!("{e}; a body this route counts by its tensors must be readable")));
            }
            Some(p) => p.as_ref().ok(),
            None => None,
        };
        Ok(self
            .limits
            .iter()
            .map(|l| match l.cost {
                Cost::Requests => 1,
                Cost::Bytes => length,
                Cost::BatchItems => infer.map_or(1, |s| s.batch_items()),
                Cost::Elements => infer.map_or(1, |s| s.elements()),
            })
            .collect())
    }

    /// Records the headers and turns the decision into the phase's outcome.
    fn decide(&self, ctx: &mut Ctx, d: &Decision, costs: &[u64], tiered: Option<&[Window]>) -> Result<(), GatewayError> {
        let windows = tiered.unwrap_or(&self.windows);
        if let Some(policy) = &self.policy {
            let policy = match tiered {
                Some(w) => policy_header(&self.limits, w),
                None => policy.clone(),
            };
            // The limit closest to exhaustion.
            let tightest = d.used.iter().zip(windows).enumerate().min_by_key(|(_, ((used, _), w))| w.limit.saturating_sub(*used));
            if let Some((i, ((used, reset), w))) = tightest {
                // `"NAME";r=REMAINING;t=SECONDS`, built without the formatting machinery (one allocation).
                let (remaining, reset) = (w.limit.saturating_sub(*used), reset.div_ceil(1000));
                let (mut r, mut t) = (itoa::Buffer::new(), itoa::Buffer::new());
                let (r, t) = (r.format(remaining).as_bytes(), t.format(reset).as_bytes());
                let name = self.limits[i].name.as_bytes();
                let mut v = Vec::with_capacity(name.len() + r.len() + t.len() + 8);
                for part in [&b"\""[..], name, b"\";r=", r, b";t=", t] {
                    v.extend_from_slice(part);
                }
                ctx.add_response_header(RATELIMIT_POLICY.clone(), policy);
                ctx.add_response_header(RATELIMIT.clone(), HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).expect("checked names"));
            }
        }
        if d.admitted {
            return Ok(());
        }
        // The refusing limits: those the request would have overflowed; wait for the latest of their windows.
        let refusing = d.used.iter().zip(windows).zip(costs).enumerate().filter(|(_, (((used, _), w), cost))| used + *cost > w.limit);
        let (i, retry_ms) = refusing.map(|(i, (((_, reset), _), _))| (i, *reset)).max_by_key(|(_, r)| *r).unwrap_or((0, 1000));
        self.limits[i].rejected.inc();
        Err(GatewayError::RateLimited { limit: self.limits[i].name.clone(), retry_after: retry_ms.div_ceil(1000).max(1) })
    }
}

thread_local! {
    /// The counter keys of the request being admitted on this thread.
    static KEYS: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
}

/// The room the scratch buffer keeps between requests.
const KEYS_KEPT: usize = 4096;

/// The keys [`RateLimit::render_keys`] put one after another in `buf`.
fn split_keys<'a>(buf: &'a str, ends: &'a [usize]) -> impl Iterator<Item = &'a str> + 'a {
    ends.iter().scan(0, move |from, &end| Some(&buf[std::mem::replace(from, end)..end]))
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn admit<'a>(&'a self, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        let costs = match self.costs(ctx, req) {
            Ok(c) => c,
            Err(e) => return Flow::Reject(e),
        };
        let tiered = self.tiered(ctx);
        match &self.store {
            // Keys rendered into this thread's scratch buffer: a local check allocates nothing for them.
            Store::Local(store) => KEYS.with_borrow_mut(|buf| {
                buf.clear();
                let ends = self.render_keys(buf, ctx, req);
                let keys: SmallVec<[&str; 4]> = split_keys(buf, &ends).collect();
                let d = store.check(&keys, tiered.as_deref().unwrap_or(&self.windows), &costs, now_ms());
                drop(keys);
                // A key built from a huge header value does not keep its room on the thread.
                if buf.capacity() > KEYS_KEPT {
                    buf.clear();
                    buf.shrink_to(KEYS_KEPT);
                }
                self.decide(ctx, &d, &costs, tiered.as_deref()).into()
            }),
            Store::Redis(store) => Flow::Wait(Box::pin(async move {
                let keys = self.keys(ctx, req);
                match store.check(&keys, tiered.as_deref().unwrap_or(&self.windows), &costs).await {
                    Ok(d) => self.decide(ctx, &d, &costs, tiered.as_deref()),
                    Err(()) => {
                        self.store_errors.inc();
                        if self.limits.iter().any(|l| l.deny_on_error) { Err(GatewayError::RateLimitUnavailable) } else { Ok(()) }
                    }
                }
            })),
        }
    }

    fn wants_body(&self) -> Option<u64> {
        self.needs_body
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use modelgate_pipeline::Phase;
    use modelgate_pipeline::testing::{ctx, parts, route, run};

    use super::*;

    fn plugin(settings: &str) -> Box<dyn Plugin> {
        let r = route(&format!("[{{rate_limit: {settings}}}]"), "");
        build(&r.plugins[0], &Services::default(), &r, &Metrics::default()).unwrap()
    }

    /// Admits one request with `headers`; the outcome and the response headers the plugin asked for.
    async fn admit(p: &dyn Plugin, headers: &[(&str, &str)]) -> (Result<(), String>, Vec<String>) {
        let mut c = ctx(Method::POST, "/v2/models/digits/infer");
        let mut req = parts(Method::POST, "/v2/models/digits/infer", headers);
        let outcome = run(p, Phase::Admit, &mut c, &mut req).await.map_err(|e| format!("{}: {e}", e.code()));
        (outcome, c.response_headers().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect())
    }

    /// The thread's scratch buffer for keys gives back the room a huge key (a header's value) took.
    #[tokio::test]
    async fn a_huge_key_does_not_keep_its_room() {
        let p = plugin("{limits: [{limit: 5, per: 1d, by: [header:x-tenant]}]}");
        let big = "t".repeat(20_000);
        assert_eq!(admit(&*p, &[("x-tenant", &big)]).await.0, Ok(()));
        assert!(KEYS.with_borrow(|b| b.capacity()) <= KEYS_KEPT);
        assert_eq!(admit(&*p, &[("x-tenant", "small")]).await.0, Ok(()));
    }

    #[tokio::test]
    async fn a_limit_admits_exactly_its_units_per_window_per_key_with_headers() {
        // A day-long window: the test cannot straddle a window edge.
        let p = plugin("{limits: [{name: daily, limit: 2, per: 1d, by: [header:x-tenant]}]}");
        let (ok, headers) = admit(&*p, &[("x-tenant", "a")]).await;
        assert_eq!(ok, Ok(()));
        assert_eq!(headers[0], "ratelimit-policy: \"daily\";q=2;w=86400");
        assert!(headers[1].starts_with("ratelimit: \"daily\";r=1;t="), "{headers:?}");
        assert_eq!(admit(&*p, &[("x-tenant", "a")]).await.0, Ok(()));
        let (refused, headers) = admit(&*p, &[("x-tenant", "a")]).await;
        assert!(refused.unwrap_err().starts_with("rate_limited: rate limit \"daily\" exceeded"));
        assert!(headers[1].starts_with("ratelimit: \"daily\";r=0;"), "headers on the refusal too: {headers:?}");
        assert_eq!(admit(&*p, &[("x-tenant", "b")]).await.0, Ok(()), "another key has its own count");
    }

    /// A tier gives its consumers or groups another limit (and says so in `RateLimit-Policy`); others keep the base.
    #[tokio::test]
    async fn tiers_give_some_callers_another_limit() {
        use modelgate_pipeline::principal::{Method as AuthMethod, Principal};
        let p = plugin(
            "{limits: [{name: daily, limit: 1, per: 1d, by: [consumer], tiers: [{groups: [gold], limit: 3}, {consumers: [vip], limit: 5}]}]}",
        );
        let as_caller = async |consumer: &str, groups: &[&str]| {
            let mut c = ctx(Method::POST, "/v2/models/digits/infer");
            let groups = groups.iter().map(|g| g.to_string()).collect();
            c.set_principal(std::sync::Arc::new(Principal::new(
                AuthMethod::ApiKey,
                "k".into(),
                consumer.into(),
                consumer.into(),
                vec![],
                groups,
            )));
            let mut req = parts(Method::POST, "/v2/models/digits/infer", &[]);
            let outcome = run(&*p, Phase::Admit, &mut c, &mut req).await.is_ok();
            (outcome, c.response_headers().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect::<Vec<_>>())
        };
        let (ok, headers) = as_caller("g1", &["gold"]).await;
        assert!(ok);
        assert_eq!(headers[0], "ratelimit-policy: \"daily\";q=3;w=86400", "{headers:?}");
        assert!(as_caller("g1", &["gold"]).await.0 && as_caller("g1", &["gold"]).await.0);
        assert!(!as_caller("g1", &["gold"]).await.0, "the gold tier admits 3");
        assert!(as_caller("plain", &[]).await.0);
        assert!(!as_caller("plain", &[]).await.0, "everyone else keeps 1");
        let (_, headers) = as_caller("plain", &[]).await;
        assert_eq!(headers[0], "ratelimit-policy: \"daily\";q=1;w=86400");
        for _ in 0..5 {
            assert!(as_caller("vip", &[]).await.0);
        }
        assert!(!as_caller("vip", &[]).await.0, "the consumer tier admits 5");
    }

    #[tokio::test]
    async fn byte_costs_need_a_length_and_headers_can_be_off() {
        let p = plugin("{headers: false, limits: [{limit: 100, per: 1d, by: [route], cost: bytes}]}");
        assert_eq!(admit(&*p, &[]).await.0.map_err(|e| e[..15].to_string()), Err("length_required".into()));
        let (ok, headers) = admit(&*p, &[("content-length", "60")]).await;
        assert_eq!((ok, headers.len()), (Ok(()), 0));
        assert!(admit(&*p, &[("content-length", "60")]).await.0.is_err(), "60 + 60 > 100");
        assert_eq!(admit(&*p, &[("content-length", "40")]).await.0, Ok(()), "60 + 40 = 100");
    }

    #[tokio::test]
    async fn bad_settings_are_config_errors() {
        let r = route("[{rate_limit: {limits: [{limit: 1, per: 1500ms}]}}]", "");
        assert!(build(&r.plugins[0], &Services::default(), &r, &Metrics::default()).is_err(), "whole seconds only");
        let r = route("[{rate_limit: {limits: [{limit: 1, per: 1s, by: [nothing]}]}}]", "");
        assert!(build(&r.plugins[0], &Services::default(), &r, &Metrics::default()).is_err());
        let r = route("[{rate_limit: {store: redis, limits: [{limit: 1, per: 1s}]}}]", "");
        assert!(build(&r.plugins[0], &Services::default(), &r, &Metrics::default()).is_err(), "redis needs the top-level redis");
    }
}
