//! Shadow versions (`state: shadow`, docs/versions.md): a sampled share of a model's admitted inference requests is
//! copied to the shadow version, beside the request to the version that answers the client, and the two answers
//! are compared output tensor by output tensor ([`compare`]).
//!
//! Only admitted requests are copied: the route step, after authentication, authorization, limits and validation,
//! draws the sample. The client never waits for the copy and never sees it: the copy is sent by its own task, the
//! client's answer streams to it as usual while its chunks (reference-counted, not copied) are kept for the
//! comparison up to `max_body`. Bounds: `max_in_flight` copies at once and `max_body` bytes each way; a sampled
//! request past a bound is not copied and counted in `modelgate_shadow_dropped_total{reason}`.
//!
//! Scope: OIP v2 REST inference (`POST /v2/models/{m}/infer`) with a request body of known length, from callers the
//! split placed (pinned requests are not copied). gRPC calls are not copied.

pub mod compare;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use modelgate_config::model::ShadowConfig;
use modelgate_pipeline::Body;
use modelgate_pipeline::oip::header_length;
use modelgate_telemetry::metrics::{Metrics, ModelVersionLabels, ShadowDropLabels, ShadowLabels};
use modelgate_upstream::Upstream;
use modelgate_upstream::body::UpstreamBody;
use tokio::sync::oneshot;

use self::compare::{Tolerances, Verdict};

/// The results of a comparison, in the order [`Stats::results`] counts them.
pub const RESULTS: [&str; 6] = ["match", "top_k_agree", "mismatch", "shadow_error", "primary_error", "not_comparable"];
/// Why a sampled request was not copied, in the order [`Stats::dropped`] counts them.
pub const DROPPED: [&str; 3] = ["busy", "too_large", "not_ready"];
/// Comparisons other than `match` kept for `GET /admin/models/{m}/shadow`, newest last.
const RECENT: usize = 20;

/// A shadow version's counts: kept across reloads (by model and version), read by the admin API and the rollout.
#[derive(Default)]
pub struct Stats {
    in_flight: AtomicUsize,
    results: [AtomicU64; RESULTS.len()],
    dropped: [AtomicU64; DROPPED.len()],
    recent: Mutex<VecDeque<serde_json::Value>>,
}

impl Stats {
    /// Copies compared: `(agreeing, compared)` where agreeing is `match` + `top_k_agree` and compared adds
    /// `mismatch` and `shadow_error`.
    pub fn agreement(&self) -> (u64, u64) {
        let n = |i: usize| self.results[i].load(Ordering::Relaxed);
        (n(0) + n(1), n(0) + n(1) + n(2) + n(3))
    }
}

/// One shadow version of a snapshot.
pub struct Shadow {
    model: Box<str>,
    version: Box<str>,
    cfg: ShadowConfig,
    upstream: Arc<Upstream>,
    prefix: Box<str>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

/// A sampled request's place among a shadow's copies in flight; given back when the copy is done or dropped.
pub struct Ticket(Arc<Shadow>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The copies one request will make (one per sampled shadow version of its model).
pub struct Copies {
    tickets: Vec<Ticket>,
    /// The forwarded target after the version's prefix (`/infer?…`).
    suffix: Box<str>,
}

/// What the comparison gets of the client's answer.
struct Primary {
    /// `Inference-Header-Content-Length`.
    json_len: Option<usize>,
    /// `None`: not a 200 answer (nothing to compare).
    body: Option<oneshot::Receiver<Option<Vec<Bytes>>>>,
}

/// Hands the client's answer to the copies' task ([`Pending::tee`]); dropped unused (the request failed), the
/// task counts `primary_error`.
pub struct Pending {
    to: oneshot::Sender<Primary>,
    max_body: usize,
}

// === impl Shadow ===

impl Shadow {
    pub fn new(
        model: &str,
        version: &str,
        cfg: ShadowConfig,
        upstream: Arc<Upstream>,
        prefix: &str,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
    ) -> Shadow {
        Shadow { model: model.into(), version: version.into(), cfg, upstream, prefix: prefix.into(), stats, metrics }
    }

    /// The share sampled, in buckets of 10,000.
    pub fn sample(&self) -> u32 {
        self.cfg.sample
    }

    /// Takes a place for a copy, or counts why there is none.
    pub fn ticket(self: &Arc<Self>, body_len: Option<u64>, ready: bool) -> Option<Ticket> {
        let reason = if !ready {
            2
        } else if body_len.is_none_or(|n| n > self.cfg.max_body) {
            1
        } else if self.stats.in_flight.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_in_flight {
            self.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
            0
        } else {
            return Some(Ticket(self.clone()));
        };
        self.stats.dropped[reason].fetch_add(1, Ordering::Relaxed);
        self.metrics
            .shadow_dropped
            .get_or_create(&ShadowDropLabels { model: self.model.to_string(), version: self.version.to_string(), reason: DROPPED[reason] })
            .inc();
        None
    }

    fn record(&self, request_id: &str, result: usize, report: Option<&compare::Report>, detail: Option<String>) {
        self.stats.results[result].fetch_add(1, Ordering::Relaxed);
        let labels = || ModelVersionLabels { model: self.model.to_string(), version: self.version.to_string() };
        self.metrics
            .shadow_compare
            .get_or_create(&ShadowLabels { model: self.model.to_string(), version: self.version.to_string(), result: RESULTS[result] })
            .inc();
        if let Some(r) = report {
            if let Some(a) = r.max_abs {
                self.metrics.shadow_max_abs_diff.get_or_create(&labels()).observe(a);
            }
            if let Some(rel) = r.max_rel.filter(|r| r.is_finite()) {
                self.metrics.shadow_max_rel_diff.get_or_create(&labels()).observe(rel);
            }
        }
        if result == 0 {
            return;
        }
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let entry = serde_json::json!({
            "request_id": request_id,
            "result": RESULTS[result],
            "at": at,
            "detail": detail,
            "max_abs": report.and_then(|r| r.max_abs),
            "max_rel": report.and_then(|r| r.max_rel).filter(|r| r.is_finite()),
            "tensors": report.map(|r| &r.tensors),
        });
        let mut recent = self.stats.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// `GET /admin/models/{m}/shadow`: this version's settings, counts and recent differences.
    pub fn view(&self) -> serde_json::Value {
        let s = &self.stats;
        let results: serde_json::Map<_, _> =
            RESULTS.iter().zip(&s.results).map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed).into())).collect();
        let dropped: serde_json::Map<_, _> =
            DROPPED.iter().zip(&s.dropped).map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed).into())).collect();
        let (agree, compared) = s.agreement();
        let recent: Vec<_> = s.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
        serde_json::json!({
            "version": &*self.version,
            "upstream": self.upstream.name(),
            "sample": f64::from(self.cfg.sample) / 100.0,
            "max_in_flight": self.cfg.max_in_flight,
            "max_body": self.cfg.max_body,
            "compare": { "atol": self.cfg.atol, "rtol": self.cfg.rtol, "top_k": self.cfg.top_k },
            "in_flight": s.in_flight.load(Ordering::Relaxed),
            "results": results,
            "dropped": dropped,
            "agreement": if compared == 0 { serde_json::Value::Null } else { (agree as f64 / compared as f64).into() },
            "recent": recent,
        })
    }

    /// Sends one copy and reads its answer (bounded in size and time): the answer's bytes and JSON length, or why
    /// there is none.
    async fn ask(&self, method: Method, headers: HeaderMap, body: Bytes, suffix: &str) -> Result<(Bytes, Option<usize>), String> {
        use modelgate_upstream::Transport;
        let up = &self.upstream;
        let target = format!("{}{suffix}", self.prefix);
        let i = up.pick(0).ok_or("no healthy target")?;
        let mut req = Request::new(UpstreamBody::Full(Some(body)));
        *req.method_mut() = method;
        *req.headers_mut() = headers;
        let timeout = self.cfg.timeout.unwrap_or(up.config.response_timeout);
        let exchange = async {
            let resp = match &up.transport {
                Transport::Http1(pool) => {
                    *req.uri_mut() = target.parse().map_err(|_| "the path cannot be forwarded".to_string())?;
                    *req.version_mut() = http::Version::HTTP_11;
                    // HTTP/1.1 needs a Host (servers answer 400 and close the connection without one).
                    if let Ok(host) = http::HeaderValue::from_str(up.targets[i].authority.as_str()) {
                        req.headers_mut().insert(http::header::HOST, host);
                    }
                    pool.send(i, &up.targets[i].authority, req).await.map_err(|e| format!("{e}"))?.map(Body::Pooled)
                }
                Transport::Http2(client) => {
                    *req.uri_mut() = up.uri(i, &target).map_err(|e| e.to_string())?;
                    *req.version_mut() = http::Version::HTTP_2;
                    client.request(req).await.map_err(|e| format!("{e}"))?.map(Body::Upstream)
                }
            };
            let (parts, body) = resp.into_parts();
            let max = usize::try_from(self.cfg.max_body).unwrap_or(usize::MAX);
            let bytes = http_body_util::Limited::new(body, max).collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
            if parts.status != http::StatusCode::OK {
                return Err(format!("status {}", parts.status.as_u16()));
            }
            Ok((bytes, header_length(&parts.headers)))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
    }
}

// === impl Copies ===

impl Copies {
    pub fn new(tickets: Vec<Ticket>, suffix: &str) -> Option<Copies> {
        (!tickets.is_empty()).then(|| Copies { tickets, suffix: suffix.into() })
    }

    /// Starts the copies' task with the request as sent upstream (`headers` after the proxy step prepared them);
    /// returns what hands it the client's answer.
    pub fn launch(self, method: &Method, headers: &HeaderMap, body: Bytes, request_id: &str) -> Pending {
        let (to, from) = oneshot::channel();
        let max_body = self.tickets.iter().map(|t| t.0.cfg.max_body).max().unwrap_or(0);
        let mut headers = headers.clone();
        headers.remove(http::header::HOST);
        let (method, request_id) = (method.clone(), request_id.to_string());
        tokio::spawn(async move {
            let asks = self.tickets.iter().map(|t| t.0.ask(method.clone(), headers.clone(), body.clone(), &self.suffix));
            let answers = futures_util::future::join_all(asks).await;
            // The client's answer: the copy waits at most as long as the shadow may take.
            let wait = self.tickets.iter().map(|t| t.0.cfg.timeout.unwrap_or(t.0.upstream.config.response_timeout)).max();
            let primary = match tokio::time::timeout(wait.unwrap_or(Duration::from_secs(30)), read_primary(from)).await {
                Ok(p) => p,
                Err(_) => Err("the client's answer did not end in time".to_string()),
            };
            for (t, answer) in self.tickets.iter().zip(answers) {
                t.0.judge(&request_id, &primary, answer);
            }
        });
        Pending { to, max_body: usize::try_from(max_body).unwrap_or(usize::MAX) }
    }
}

/// The client's answer, parsed, or why it cannot be compared.
async fn read_primary(from: oneshot::Receiver<Primary>) -> Result<compare::Answer, String> {
    let p = from.await.map_err(|_| "the request failed".to_string())?;
    let body = p.body.ok_or("not a 200 answer")?;
    let chunks = body.await.ok().flatten().ok_or("the answer was cut short or past max_body")?;
    compare::parse(&compare::join(chunks), p.json_len).map_err(|e| format!("not comparable: {e}"))
}

impl Shadow {
    fn judge(&self, request_id: &str, primary: &Result<compare::Answer, String>, shadow: Result<(Bytes, Option<usize>), String>) {
        let primary = match primary {
            Ok(p) => p,
            Err(why) => {
                let result = if why.starts_with("not comparable") { 5 } else { 4 };
                return self.record(request_id, result, None, Some(why.clone()));
            }
        };
        let shadow = match shadow.and_then(|(b, n)| compare::parse(&b, n).map_err(|e| format!("its answer: {e}"))) {
            Ok(s) => s,
            Err(why) => return self.record(request_id, 3, None, Some(why)),
        };
        if primary.is_empty() {
            return self.record(request_id, 5, None, Some("the client's answer has no outputs".into()));
        }
        let tol = Tolerances { atol: self.cfg.atol, rtol: self.cfg.rtol, top_k: self.cfg.top_k };
        let report = compare::compare(primary, &shadow, tol);
        let result = match report.verdict {
            Verdict::Match => 0,
            Verdict::TopKAgree => 1,
            Verdict::Mismatch => 2,
        };
        self.record(request_id, result, Some(&report), None);
    }
}

// === impl Pending ===

impl Pending {
    /// Hands the client's answer to the comparison: a 200 answer's body is wrapped so its chunks are kept as they
    /// stream to the client; any other answer is reported as not comparable at once.
    pub fn tee(self, resp: http::Response<Body>) -> http::Response<Body> {
        if resp.status() != http::StatusCode::OK {
            let _ = self.to.send(Primary { json_len: None, body: None });
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let (tx, rx) = oneshot::channel();
        let _ = self.to.send(Primary { json_len: header_length(&parts.headers), body: Some(rx) });
        http::Response::from_parts(parts, Body::Copied(Box::new(body), modelgate_pipeline::body::Copied::new(self.max_body, tx)))
    }
}
