//! `policy`: least-privilege authorization (authorize phase). Allow rules over the principal from `auth` and the
//! model and version the request targets; **default deny** (403). Every decision is audited with its reason
//! (`rule:NAME` or `no_rule_matched`); the client learns only that it is not allowed.
//!
//! The model and version come from the normalized path, in the forms the model servers use:
//! `/v2/models/{model}[/versions/{version}]/…` (KServe OIP v2, Triton) and `/predictions/{model}[/{version}]`
//! (TorchServe). A rule that lists `versions` matches only requests that name one of them: a request that lets
//! the server pick a version is not known to stay within the list.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::request;
use serde::Deserialize;

use modelgate_config::ConfigError;
use modelgate_config::model::PluginSpec;

use modelgate_config::model::RouteConfig;
use modelgate_pipeline::Ctx;
use modelgate_pipeline::error::GatewayError;
use modelgate_pipeline::plugin::{Flow, Plugin, audit_event, audited, settings};
use modelgate_pipeline::principal::Principal;

use modelgate_telemetry::metrics::Metrics;

use crate::glob::Pattern;
use crate::identity::Services;

pub const NAME: &str = "policy";

/// Settings of `policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Allow rules; a request is allowed when any rule matches it, and refused (403) when none does.
    pub allow: Vec<RuleConfig>,
}

/// One allow rule. Name patterns may use `*` for any run of characters (`team-a-*`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in the audit log as `rule:NAME`. Default `allow[INDEX]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Models the rule covers. Empty: any model (and requests that name none).
    #[serde(default)]
    pub models: Vec<String>,
    /// Model versions the rule covers; the request must name one. Empty: any version.
    #[serde(default)]
    pub versions: Vec<String>,
    /// How the caller conditions below combine: `all` (default) or `any`. A rule with no condition matches every
    /// authenticated caller.
    #[serde(default)]
    pub when: When,
    /// The caller's consumer is one of these.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// The caller's subject (`sub`) is one of these.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The caller has at least one of these scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The caller is in at least one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Token claims: each named claim equals (or, with `*`, matches) the value; for array claims, one element
    /// does.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// How the caller authenticated: `api_key`, `jwt`, `anonymous`.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Combination of a rule's caller conditions.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    All,
    Any,
}

/// The rules of a `policy` plugin's settings in words, one sentence per rule, e.g. `team-a: members of group
/// vision may call digits versions 1, 2` (for people reading the console; the settings were checked at load).
pub fn describe(settings: &serde_norway::Value) -> Vec<String> {
    let Ok(c) = serde_norway::from_value::<PolicyConfig>(settings.clone()) else { return Vec::new() };
    let list = |v: &[String]| v.join(" or ");
    c.allow
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut who = Vec::new();
            if !r.consumers.is_empty() {
                who.push(format!("consumer {}", list(&r.consumers)));
            }
            if !r.groups.is_empty() {
                who.push(format!("members of group {}", list(&r.groups)));
            }
            if !r.scopes.is_empty() {
                who.push(format!("callers with scope {}", list(&r.scopes)));
            }
            if !r.subjects.is_empty() {
                who.push(format!("subject {}", list(&r.subjects)));
            }
            for (k, v) in &r.claims {
                who.push(format!("claim {k} = {v}"));
            }
            if !r.methods.is_empty() {
                who.push(format!("callers authenticated by {}", list(&r.methods)));
            }
            let who = if who.is_empty() {
                "any authenticated caller".to_string()
            } else {
                who.join(if r.when == When::Any { ", or " } else { ", and " })
            };
            let models = if r.models.is_empty() { "any model".to_string() } else { list(&r.models) };
            let versions = if r.versions.is_empty() { String::new() } else { format!(" versions {}", r.versions.join(", ")) };
            let name = r.name.clone().unwrap_or_else(|| format!("allow[{i}]"));
            format!("{name}: {who} may call {models}{versions}")
        })
        .collect()
}

pub struct Policy {
    route: Arc<str>,
    rules: Vec<Rule>,
    audit: Option<Arc<modelgate_telemetry::audit::Audit>>,
    /// Where refusals are counted (`modelgate_auth_denied_total`).
    metrics: Arc<Metrics>,
    /// Models the gateway routes between versions of (`models`): pinning one of their versions needs a rule that
    /// lists it (a rule without `versions` allows the split only).
    managed: Vec<Box<str>>,
}

struct Rule {
    reason: Arc<str>,
    models: Vec<Pattern>,
    versions: Vec<Pattern>,
    when: When,
    conditions: Vec<Condition>,
}

enum Condition {
    Consumer(Vec<Pattern>),
    Subject(Vec<Pattern>),
    Scope(Vec<Pattern>),
    Group(Vec<Pattern>),
    Claim(String, Pattern),
    Method(Vec<String>),
}

/// Builds `policy` for `route`, counting refusals in `metrics`; `has_auth`: the route has an `auth` plugin (a policy
/// needs a caller).
pub fn build(
    spec: &PluginSpec,
    services: &Services,
    route: &RouteConfig,
    has_auth: bool,
    metrics: &Arc<Metrics>,
    managed: &[&str],
) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: PolicyConfig = settings(spec)?;
    let here = |p: String| ConfigError::new(&spec.origin.file, format!("{}.{p}", spec.origin.path), "");
    if !has_auth {
        let mut e = here("allow".into());
        e.message = "a policy needs a caller: this route has no `auth` plugin".into();
        return Err(e.hint("add `- auth: {methods: [api_key]}` before the policy"));
    }
    if c.allow.is_empty() {
        let mut e = here("allow".into());
        e.message = "no rule: every request would be refused".into();
        return Err(e.hint("add a rule, e.g. {consumers: [team-a], models: [digits]}"));
    }
    let mut rules = Vec::new();
    for (i, r) in c.allow.iter().enumerate() {
        for (j, m) in r.methods.iter().enumerate() {
            if !matches!(m.as_str(), "api_key" | "jwt" | "aws_iam" | "mtls" | "anonymous") {
                let mut e = here(format!("allow[{i}].methods[{j}]"));
                e.message = format!("unknown method {m:?}");
                return Err(e.hint("one of api_key, jwt, aws_iam, mtls, anonymous"));
            }
        }
        let pats = |v: &[String]| v.iter().map(|s| Pattern::new(s)).collect::<Vec<_>>();
        let mut conditions = Vec::new();
        if !r.consumers.is_empty() {
            conditions.push(Condition::Consumer(pats(&r.consumers)));
        }
        if !r.subjects.is_empty() {
            conditions.push(Condition::Subject(pats(&r.subjects)));
        }
        if !r.scopes.is_empty() {
            conditions.push(Condition::Scope(pats(&r.scopes)));
        }
        if !r.groups.is_empty() {
            conditions.push(Condition::Group(pats(&r.groups)));
        }
        for (k, v) in &r.claims {
            conditions.push(Condition::Claim(k.clone(), Pattern::new(v)));
        }
        if !r.methods.is_empty() {
            conditions.push(Condition::Method(r.methods.clone()));
        }
        rules.push(Rule {
            reason: format!("rule:{}", r.name.clone().unwrap_or_else(|| format!("allow[{i}]"))).into(),
            models: pats(&r.models),
            versions: pats(&r.versions),
            when: r.when,
            conditions,
        });
    }
    Ok(Box::new(Policy {
        route: route.name.as_str().into(),
        rules,
        audit: services.audit.clone(),
        metrics: metrics.clone(),
        managed: managed.iter().map(|m| Box::from(*m)).collect(),
    }))
}

fn any_of(pats: &[Pattern], s: &str) -> bool {
    pats.iter().any(|p| p.matches(s))
}

// === impl Rule ===

impl Rule {
    /// `pin_needs_rule`: the request pins a version of a managed model, which only a rule listing it allows.
    fn target_ok(&self, model: Option<&str>, version: Option<&str>, pin_needs_rule: bool) -> bool {
        let model_ok = self.models.is_empty() || model.is_some_and(|m| any_of(&self.models, m));
        let version_ok = match version {
            _ if self.versions.is_empty() => !pin_needs_rule,
            Some(v) => any_of(&self.versions, v),
            None => false,
        };
        model_ok && version_ok
    }

    fn caller_ok(&self, p: &Principal) -> bool {
        let test = |c: &Condition| match c {
            Condition::Consumer(v) => any_of(v, &p.consumer),
            Condition::Subject(v) => any_of(v, &p.subject),
            Condition::Scope(v) => p.scopes.iter().any(|s| any_of(v, s)),
            Condition::Group(v) => p.groups.iter().any(|g| any_of(v, g)),
            Condition::Claim(name, pat) => match p.claims.get(name) {
                Some(serde_json::Value::String(s)) => pat.matches(s),
                Some(serde_json::Value::Array(a)) => a.iter().any(|e| e.as_str().is_some_and(|s| pat.matches(s))),
                Some(serde_json::Value::Bool(b)) => pat.matches(if *b { "true" } else { "false" }),
                Some(serde_json::Value::Number(n)) => pat.matches(&n.to_string()),
                _ => false,
            },
            Condition::Method(v) => v.iter().any(|m| m == p.method.as_str()),
        };
        match self.when {
            When::All => self.conditions.iter().all(test),
            When::Any => self.conditions.is_empty() || self.conditions.iter().any(test),
        }
    }
}

impl Plugin for Policy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authorize<'a>(&'a self, ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        let Some(p) = ctx.principal().cloned() else {
            self.metrics.count_denied(&self.route, "authz", "no_principal");
            let ev = audit_event(ctx, &self.route, "authz", "deny", "no_principal");
            return audited(self.audit.as_deref(), ev, Err(GatewayError::Forbidden));
        };
        let (model, version) = ctx.model_target();
        let pin = version.is_some() && model.is_some_and(|m| self.managed.iter().any(|x| **x == *m));
        let hit = self.rules.iter().find(|r| r.target_ok(model, version, pin) && r.caller_ok(&p));
        match (hit, &self.audit) {
            (Some(_), None) => Flow::Continue,
            (Some(r), Some(_)) => {
                let ev = audit_event(ctx, &self.route, "authz", "allow", r.reason.clone());
                audited(self.audit.as_deref(), ev, Ok(()))
            }
            (None, _) => {
                self.metrics.count_denied(&self.route, "authz", "no_rule_matched");
                let ev = audit_event(ctx, &self.route, "authz", "deny", "no_rule_matched");
                audited(self.audit.as_deref(), ev, Err(GatewayError::Forbidden))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use modelgate_pipeline::Phase;
    use modelgate_pipeline::principal::Method as AuthMethod;
    use modelgate_pipeline::testing::{ctx, parts, route, run};

    use super::*;

    const RULES: &str = "[{auth: {methods: [api_key]}}, {policy: {allow: [
        {name: team-a-digits, consumers: [team-a], models: [digits]},
        {name: resnet-v2, scopes: [\"infer:*\"], models: [resnet], versions: [\"2\"]},
        {name: claims, when: any, claims: {tier: gold}, groups: [admins]}]}}]";

    fn policy() -> Box<dyn Plugin> {
        let r = route(RULES, "");
        build(&r.plugins[1], &Services::default(), &r, true, &Default::default(), &[]).unwrap()
    }

    async fn authorize(p: &dyn Plugin, caller: Option<Principal>, path: &str) -> Result<(), &'static str> {
        let mut c = ctx(Method::POST, path);
        if let Some(who) = caller {
            c.set_principal(Arc::new(who));
        }
        let mut req = parts(Method::POST, path, &[]);
        run(p, Phase::Authorize, &mut c, &mut req).await.map_err(|e| e.code())
    }

    fn caller(consumer: &str, scopes: &[&str], groups: &[&str]) -> Principal {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Principal::new(AuthMethod::ApiKey, "k".into(), consumer.into(), consumer.into(), s(scopes), s(groups))
    }

    #[tokio::test]
    async fn rules_allow_by_consumer_model_scope_and_version_and_deny_the_rest() {
        let p = policy();
        assert_eq!(authorize(&*p, Some(caller("team-a", &[], &[])), "/v2/models/digits/infer").await, Ok(()));
        assert_eq!(authorize(&*p, Some(caller("team-b", &[], &[])), "/v2/models/digits/infer").await, Err("forbidden"), "default deny");
        assert_eq!(authorize(&*p, Some(caller("team-a", &[], &[])), "/v2/models/resnet/infer").await, Err("forbidden"));
        let scoped = || Some(caller("team-b", &["infer:resnet"], &[]));
        assert_eq!(authorize(&*p, scoped(), "/v2/models/resnet/versions/2/infer").await, Ok(()));
        assert_eq!(authorize(&*p, scoped(), "/v2/models/resnet/versions/3/infer").await, Err("forbidden"));
        assert_eq!(authorize(&*p, scoped(), "/v2/models/resnet/infer").await, Err("forbidden"), "a version rule needs a named version");
        assert_eq!(authorize(&*p, None, "/v2/models/digits/infer").await, Err("forbidden"), "no principal, no access");
    }

    #[tokio::test]
    async fn any_combines_conditions_with_or_including_claims() {
        let p = policy();
        assert_eq!(authorize(&*p, Some(caller("x", &[], &["admins"])), "/anything").await, Ok(()));
        let mut gold = caller("x", &[], &[]);
        gold.claims.insert("tier".into(), "gold".into());
        assert_eq!(authorize(&*p, Some(gold), "/anything").await, Ok(()));
        assert_eq!(authorize(&*p, Some(caller("x", &[], &["users"])), "/anything").await, Err("forbidden"));
    }

    #[tokio::test]
    async fn a_policy_without_auth_or_without_rules_is_a_config_error() {
        let r = route(RULES, "");
        assert!(
            build(&r.plugins[1], &Services::default(), &r, false, &Default::default(), &[])
                .err()
                .unwrap()
                .to_string()
                .contains("a policy needs a caller")
        );
        let r = route("[{policy: {allow: []}}]", "");
        assert!(
            build(&r.plugins[0], &Services::default(), &r, true, &Default::default(), &[]).err().unwrap().to_string().contains("no rule")
        );
    }
}
