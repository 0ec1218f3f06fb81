//! The identity services the `auth` plugin uses to establish a request's `Principal` (defined in the pipeline
//! crate): the API key store ([`apikey`]) with Redis-pushed [`revocations`], JWT issuers with their cached signing
//! keys ([`jwt`]), AWS IAM through STS ([`aws`]), and the signer of identity assertions to upstreams ([`assertion`]).
//!
//! Services outlive a config snapshot where that matters: an issuer whose settings did not change keeps its
//! fetched keys across reloads ([`Registry`]), so a reload never makes the gateway refetch every JWKS at once.

pub mod apikey;
pub mod assertion;
pub mod aws;
pub mod jwt;
pub mod revocations;
pub mod sso;

use std::collections::HashMap;
use std::sync::Arc;

use modelgate_config::ConfigError;
use modelgate_config::model::{IdentityConfig, KeySource};

use modelgate_pipeline::principal::{Method, Principal};
use modelgate_telemetry::audit::Audit;

/// The identity services of one snapshot.
#[derive(Default)]
pub struct Services {
    pub issuers: HashMap<String, Arc<jwt::Issuer>>,
    pub keys: Option<Arc<apikey::KeyStore>>,
    /// Revocations received through Redis (`identity.api_keys.redis_revocations`).
    pub revocations: Option<Arc<revocations::Revocations>>,
    /// The API key header name (`identity.api_keys.header`).
    pub key_headers: Vec<http::HeaderName>,
    /// Query parameters that may carry an API key (`identity.api_keys.query`).
    pub key_query: Vec<String>,
    pub aws: Option<Arc<aws::AwsIam>>,
    /// The signer of identity assertions to upstreams (`identity.assertion`).
    pub assertion: Option<Arc<assertion::Signer>>,
    pub audit: Option<Arc<Audit>>,
    /// Groups of the consumers declared in config (`identity.consumers`), for principals of every method.
    pub declared: Arc<DeclaredGroups>,
    /// Single sign-on for people (`admin.console`): the console's login and `oidc_session` routes.
    pub sso: Option<sso::SsoAccess>,
}

/// The groups of consumers declared in config, added to the groups a JWT, AWS IAM identity or client certificate
/// carries when its consumer is declared (API keys have them merged when the key store loads).
#[derive(Default)]
pub struct DeclaredGroups {
    /// Distinct per build, so a principal's copy made from older declarations is made again.
    generation: u64,
    by_consumer: HashMap<String, Vec<String>>,
}

// === impl DeclaredGroups ===

impl DeclaredGroups {
    pub fn new(consumers: &std::collections::BTreeMap<String, modelgate_config::model::ConsumerConfig>) -> DeclaredGroups {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        DeclaredGroups {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            by_consumer: consumers.iter().filter(|(_, c)| !c.groups.is_empty()).map(|(n, c)| (n.clone(), c.groups.clone())).collect(),
        }
    }

    /// `p`, or its copy with the declared groups of its consumer added. The copy is made once per principal and
    /// declarations (cached JWT and AWS principals and a connection's certificate principal are reused), so a
    /// request allocates nothing here.
    pub fn apply(&self, p: Arc<Principal>) -> Arc<Principal> {
        if p.method == Method::ApiKey || p.method == Method::Anonymous {
            return p;
        }
        let Some(extra) = self.by_consumer.get(&p.consumer) else { return p };
        if extra.iter().all(|g| p.groups.contains(g)) {
            return p;
        }
        let mut held = p.declared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((generation, copy)) = held.as_ref()
            && *generation == self.generation
        {
            return copy.clone();
        }
        let copy = Arc::new(p.with_groups(extra));
        *held = Some((self.generation, copy.clone()));
        copy
    }
}

/// What outlives snapshots: issuers (with their key caches) and the audit writer.
#[derive(Default)]
pub struct Registry {
    issuers: HashMap<String, Arc<jwt::Issuer>>,
    aws: Option<Arc<aws::AwsIam>>,
    revocations: Option<Arc<revocations::Revocations>>,
    audit: Option<Arc<Audit>>,
    /// Sessions and the login's state; one for the process, whatever the reloads.
    pub sso: Arc<sso::Sso>,
    /// Checking a config only (`modelgate validate`): fetch nothing, open no audit log.
    pub dry_run: bool,
}

// === impl Registry ===

impl Registry {
    /// Builds the services for a config, reusing unchanged issuers. Must run inside a tokio runtime (issuers
    /// start fetching their keys at once).
    // Long on purpose: one arm per identity method (issuers, key store, revocations, AWS IAM, assertions, audit), each
    // reusing what outlives the snapshot; the arms share the error list and the registry's cached services.
    pub fn build(
        &mut self,
        config: &IdentityConfig,
        audit: Option<&modelgate_config::model::AuditConfig>,
        redis: Option<&modelgate_config::model::RedisConfig>,
    ) -> Result<Services, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut issuers = HashMap::new();
        for (name, c) in &config.issuers {
            let reuse = self.issuers.get(name).filter(|i| i.config.as_ref() == c.as_ref() && !matches!(c.keys, KeySource::File(_)));
            match reuse {
                Some(i) => {
                    issuers.insert(name.clone(), i.clone());
                }
                None => match jwt::Issuer::new(c.clone()) {
                    Ok(i) => {
                        let i = Arc::new(i);
                        if !self.dry_run {
                            i.prefetch();
                        }
                        issuers.insert(name.clone(), i);
                    }
                    Err(e) => errors.push(e),
                },
            }
        }
        let keys = match &config.api_keys {
            Some(k) => match apikey::KeyStore::load_with(&k.file, &config.consumers) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        let signer = match &config.assertion {
            Some(a) => match assertion::Signer::load(a) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        // The audit writer is started once; a changed `audit` section takes effect on restart.
        if self.audit.is_none()
            && !self.dry_run
            && let Some(a) = audit
        {
            match Audit::start(a) {
                Ok(w) => self.audit = Some(Arc::new(w)),
                Err(e) => errors.push(
                    ConfigError::new(&a.path, "", format!("cannot open the audit log: {e}"))
                        .hint("check the directory exists and is writable"),
                ),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.issuers.clone_from(&issuers);
        // The revocation follower outlives reloads while the Redis settings stay the same.
        let wanted = config.api_keys.as_ref().is_some_and(|k| k.redis_revocations).then_some(redis).flatten();
        self.revocations = match (wanted, self.revocations.take()) {
            _ if self.dry_run => None,
            (Some(c), Some(r)) if r.config == *c => Some(r),
            (Some(c), _) => match revocations::Revocations::start(c.clone()) {
                Ok(r) => Some(r),
                Err(e) => {
                    return Err(vec![ConfigError::new(&config.api_keys.as_ref().expect("wanted").origin.file, "redis.url", e.to_string())]);
                }
            },
            (None, _) => None,
        };
        // Unchanged AWS IAM settings keep their cache of STS answers.
        self.aws = match (&config.aws_iam, self.aws.take()) {
            (Some(c), Some(a)) if a.config == *c => Some(a),
            (Some(c), _) => Some(Arc::new(aws::AwsIam::new(c.clone()))),
            (None, _) => None,
        };
        Ok(Services {
            issuers,
            keys,
            revocations: self.revocations.clone(),
            key_headers: config.api_keys.as_ref().map(|k| k.headers.clone()).unwrap_or_default(),
            key_query: config.api_keys.as_ref().map(|k| k.query.clone()).unwrap_or_default(),
            aws: self.aws.clone(),
            assertion: signer,
            audit: self.audit.clone(),
            declared: Arc::new(DeclaredGroups::new(&config.consumers)),
            sso: None,
        })
    }

    pub fn audit(&self) -> Option<&Arc<Audit>> {
        self.audit.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_config::model::ConsumerConfig;

    fn declared(groups: &[&str]) -> DeclaredGroups {
        let c = ConsumerConfig { groups: groups.iter().map(|g| g.to_string()).collect(), scopes: vec![], key_hashes: vec![] };
        DeclaredGroups::new(&[("team-a".to_string(), c)].into_iter().collect())
    }

    fn principal(method: Method, consumer: &str, groups: &[&str]) -> Arc<Principal> {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        Arc::new(Principal::new(method, "c".into(), "s".into(), consumer.into(), vec![], groups))
    }

    /// Declared groups reach JWT, AWS IAM and certificate principals, copied once per principal and declarations;
    /// undeclared consumers, API keys (merged at load) and principals that already have the groups pass unchanged.
    #[test]
    fn declared_groups_are_added_once_per_principal_and_declarations() {
        let d = declared(&["vision", "batch"]);
        let jwt = principal(Method::Jwt, "team-a", &["batch"]);
        let first = d.apply(jwt.clone());
        assert_eq!(first.groups, ["batch", "vision"]);
        assert!(Arc::ptr_eq(&first, &d.apply(jwt.clone())), "made once, then reused");
        let newer = declared(&["gpu"]);
        assert_eq!(newer.apply(jwt.clone()).groups, ["batch", "gpu"], "new declarations make a new copy");
        for unchanged in [
            principal(Method::Mtls, "team-b", &[]),
            principal(Method::ApiKey, "team-a", &[]),
            principal(Method::AwsIam, "team-a", &["vision", "batch"]),
        ] {
            assert!(Arc::ptr_eq(&unchanged, &d.apply(unchanged.clone())));
        }
    }
}
