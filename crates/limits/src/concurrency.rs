//! `concurrency` (admit phase): caps requests in flight per consumer, model, route, … (any key of
//! `rate_limit`), in this gateway. A request over a cap is refused at once — 429 `concurrency_limited` with
//! `Retry-After: 1` — never queued. A slot is held until the response body has been sent, or until the client
//! disconnects (the request is then dropped with its slots).

use std::fmt::Write as _;
use std::sync::Arc;

use http::request;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use modelgate_config::ConfigError;
use modelgate_config::model::PluginSpec;

use modelgate_config::model::RouteConfig;
use modelgate_pipeline::plugin::{Flow, Plugin, settings};
use modelgate_pipeline::{Ctx, GatewayError};
use modelgate_telemetry::metrics::{LimitLabels, Metrics};

use crate::in_flight::InFlight;
use crate::key::KeySpec;
use crate::store::Services;

pub const NAME: &str = "concurrency";

/// Settings of `concurrency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// The caps; a request must get a slot under each.
    pub limits: Vec<SlotLimitConfig>,
}

/// One cap of `concurrency.limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotLimitConfig {
    /// Name in error messages and metrics. Default `<max>-in-flight-per-<by>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Requests in flight allowed per key.
    pub max: u64,
    /// What the cap is per, as in `rate_limit`: `consumer`, `subject`, `route`, `model`, `version`, `client_ip`,
    /// `claim:NAME`, `header:NAME`. Default `[consumer]`.
    #[serde(default = "default_by")]
    pub by: Vec<String>,
}

fn default_by() -> Vec<String> {
    vec!["consumer".into()]
}

pub struct Concurrency {
    route: String,
    caps: Vec<Cap>,
    in_flight: Arc<InFlight>,
}

struct Cap {
    name: String,
    max: u64,
    by: KeySpec,
    rejected: Counter,
}

/// Builds the plugin for `route`, counting in the snapshot's limit `services`, refusals in `metrics`.
pub fn build(spec: &PluginSpec, services: &Services, route: &RouteConfig, metrics: &Metrics) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: ConcurrencyConfig = settings(spec)?;
    let err = |path: String, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{path}", spec.origin.path), msg);
    if c.limits.is_empty() {
        return Err(err("limits".into(), "no limit".into()).hint("e.g. limits: [{max: 8, by: [model]}]"));
    }
    let mut caps = Vec::new();
    for (i, l) in c.limits.iter().enumerate() {
        if l.max == 0 {
            return Err(err(format!("limits[{i}].max"), "must be at least 1".into()));
        }
        let by = KeySpec::parse(&l.by).map_err(|(j, msg, hint)| err(format!("limits[{i}].by[{j}]"), msg).hint(hint))?;
        let name = l.name.clone().unwrap_or_else(|| format!("{}-in-flight-per-{}", l.max, l.by.join("-")));
        let rejected = metrics.concurrency_rejected.get_or_create(&LimitLabels { route: route.name.clone(), limit: name.clone() }).clone();
        caps.push(Cap { name, max: l.max, by, rejected });
    }
    Ok(Box::new(Concurrency { route: route.name.clone(), caps, in_flight: services.in_flight.clone() }))
}

impl Plugin for Concurrency {
    fn name(&self) -> &'static str {
        NAME
    }

    fn admit<'a>(&'a self, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        let mut key = String::with_capacity(64);
        for (i, cap) in self.caps.iter().enumerate() {
            key.clear();
            let _ = write!(key, "{}|{i}", self.route);
            cap.by.render(&mut key, ctx, req, &self.route);
            match self.in_flight.try_acquire(&key, cap.max) {
                // Held in the context, then in the response body; slots taken so far go back if a later cap refuses.
                Ok(slot) => ctx.hold(slot),
                Err(_) => {
                    cap.rejected.inc();
                    ctx.release_held();
                    return Flow::Reject(GatewayError::TooManyInFlight { limit: cap.name.clone() });
                }
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use modelgate_pipeline::Phase;
    use modelgate_pipeline::testing::{ctx, parts, route, run};

    use super::*;

    #[tokio::test]
    async fn a_cap_refuses_at_once_past_max_and_a_slot_frees_when_its_response_is_done() {
        let r = route("[{concurrency: {limits: [{name: two, max: 2, by: [route]}, {max: 1, by: [header:x-user]}]}}]", "");
        let p = build(&r.plugins[0], &Services::default(), &r, &Metrics::default()).unwrap();
        let admit = |user: &'static str| {
            let p = &p;
            async move {
                let mut c = ctx(Method::POST, "/x");
                let mut req = parts(Method::POST, "/x", &[("x-user", user)]);
                run(&**p, Phase::Admit, &mut c, &mut req).await.map(|()| c.take_held()).map_err(|e| e.to_string())
            }
        };
        let a = admit("a").await.unwrap();
        assert_eq!(a.len(), 2, "one slot per cap");
        assert_eq!(admit("a").await.unwrap_err(), "too many requests in flight (\"1-in-flight-per-header:x-user\"); retry shortly");
        let b = admit("b").await.unwrap();
        assert_eq!(admit("c").await.unwrap_err(), "too many requests in flight (\"two\"); retry shortly");
        drop(a);
        assert!(admit("c").await.is_ok(), "a's response was sent: its slots are back");
        drop(b);
    }
}
