//! The running config: an immutable [`Snapshot`] compiled from a validated [`Config`], swapped atomically on
//! reload. A request holds the snapshot it started with until it finishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use modelgate_config::{Config, ConfigErrors};

use modelgate_auth::identity::{self, Services};
use modelgate_pipeline::Plugin;
use modelgate_upstream::{Registry, Upstream};

use crate::plugins::{self, BuildCtx};
use crate::router::Router;

/// Everything the hot path needs, compiled once.
pub struct Snapshot {
    /// The config it was compiled from, without its routes (compiled into `routes` and `router`).
    pub config: Arc<Config>,
    pub router: Router,
    pub routes: Vec<Route>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Managed models' versions (`models`): the route step's choice of version, upstream and path.
    pub versions: crate::versions::Versions,
    pub identity: Services,
    pub observe: crate::observe::Services,
    /// Requests in flight on the proxy listener (shared by every snapshot): the door `server.max_in_flight` keeps.
    pub in_flight: Arc<AtomicUsize>,
    /// The Redis gateways share state through (`redis`), if any.
    pub shared_store: Option<Arc<modelgate_limits::store::RedisStore>>,
}

/// What outlives snapshots: upstream pools and health, issuers' key caches, the audit writer.
#[derive(Default)]
pub struct Registries {
    pub upstreams: Registry,
    pub identity: identity::Registry,
    pub limits: modelgate_limits::store::Registry,
    pub observe: crate::observe::Registry,
    pub in_flight: Arc<AtomicUsize>,
    /// Managed model versions' last-known readiness and shadow counts.
    pub versions: crate::versions::VersionsRegistry,
    /// The certificates the proxy listener serves (when it speaks TLS), replaced by each successful reload.
    pub tls: Arc<modelgate_listen::tls::CertStore>,
    /// The process answers checks (`modelgate authz`) and forwards nothing: routes may have no upstream.
    pub checks_only: bool,
}

/// A compiled route.
pub struct Route {
    pub name: String,
    /// Buffer the request body up to this many bytes before the admit phase (some plugin reads it).
    pub buffer_body: Option<u64>,
    /// Buffer upstream response bodies up to this many bytes for plugins that inspect them.
    pub buffer_response: Option<u64>,
    /// `None` only under `modelgate authz` (refused at load when forwarding: [`Registries::checks_only`]).
    pub upstream: Option<Arc<Upstream>>,
    pub retry_non_idempotent: bool,
    /// Largest message of an OIP gRPC call (`routes[].grpc_max_message`).
    pub grpc_max_message: u64,
    /// The forwarded path's rewrite (`strip_prefix`, `upstream_path`).
    pub rewrite: Option<modelgate_config::Rewrite>,
    pub plugins: Vec<Box<dyn Plugin>>,
    /// Where each plugin in effect was configured (`file: path`): the route, its upstream, a set or the defaults.
    pub plugins_from: Vec<String>,
    /// The match in words, for the admin views and the console (`POST /v2/models/digits/…`).
    pub described_match: String,
    /// The `policy` plugin's rules in words, one per rule.
    pub described_policy: Vec<String>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles a config. Must run inside a tokio runtime (active health tasks are spawned for new upstreams).
    pub fn compile(mut config: Config, registries: &mut Registries) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let router = Router::build(&config.routes).map_err(|e| errors.extend(e)).ok();
        let mut services = registries
            .identity
            .build(&config.identity, config.audit.as_ref(), config.redis.as_ref())
            .map_err(|e| errors.extend(e))
            .unwrap_or_default();
        services.sso = config
            .console
            .as_ref()
            .map(|c| modelgate_auth::identity::sso::SsoAccess { sso: registries.identity.sso.clone(), config: Arc::new(c.clone()) });
        let limits = registries
            .limits
            .build(config.redis.as_ref())
            .map_err(|e| errors.push(modelgate_config::ConfigError::new(&config.meta.sources[0].0, "redis.url", e.to_string())))
            .unwrap_or_default();
        let observe = registries
            .observe
            .build(&config)
            .map_err(|e| errors.push(modelgate_config::ConfigError::new(&config.meta.sources[0].0, e.config_path(), e.to_string())))
            .unwrap_or_default();
        let registry = &mut registries.upstreams;
        let mut plugin_sets = Vec::with_capacity(config.routes.len());
        let managed_models: Vec<&str> = config.models.keys().map(String::as_str).collect();
        for r in &config.routes {
            let mut set = Vec::with_capacity(r.plugins.len());
            let b =
                BuildCtx { identity: &services, limits: &limits, route: r, metrics: &observe.families, managed_models: &managed_models };
            for spec in &r.plugins {
                match plugins::build(spec, &b) {
                    Ok(p) => set.push(p),
                    Err(e) => errors.push(e),
                }
            }
            plugin_sets.push(set);
        }
        if !registries.checks_only {
            for r in config.routes.iter().filter(|r| r.upstream.is_none()) {
                errors.push(
                    modelgate_config::ConfigError::new(
                        &r.origin.file,
                        format!("{}.upstream", r.origin.path),
                        format!("route {:?} has no upstream", r.name),
                    )
                    .hint("name one from `upstreams`; only `modelgate authz` (checks for another proxy) serves routes without one"),
                );
            }
        }
        let certs = config.tls.as_ref().and_then(|t| certificates(t).map_err(|e| errors.push(e)).ok());
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if let Some(certs) = certs {
            registries.tls.install(certs);
        }
        let upstreams: HashMap<String, Arc<Upstream>> =
            config.upstreams.iter().map(|(name, u)| (name.clone(), registry.get_or_create(u))).collect();
        registry.prune();
        let routes = config
            .routes
            .iter()
            .zip(plugin_sets)
            .map(|(r, plugins)| Route {
                buffer_body: plugins.iter().filter_map(|p| p.wants_body()).max(),
                buffer_response: plugins.iter().filter_map(|p| p.wants_response_body()).max(),
                name: r.name.clone(),
                upstream: r.upstream.as_ref().map(|u| upstreams[u].clone()),
                retry_non_idempotent: r.retry_non_idempotent,
                grpc_max_message: r.grpc_max_message,
                rewrite: r.rewrite.clone(),
                plugins_from: r.plugins.iter().map(|s| format!("{}: {}", s.origin.file.display(), s.origin.path)).collect(),
                described_match: crate::router::describe_match(r),
                described_policy: r
                    .plugins
                    .iter()
                    .filter(|p| p.name == modelgate_auth::policy::NAME)
                    .flat_map(|p| modelgate_auth::policy::describe(&p.settings))
                    .collect(),
                plugins,
            })
            .collect();
        // The route configs are compiled into `routes` and `router`; keeping them would double the memory of large
        // configs. The snapshot keeps the rest (addresses, upstream configs, meta).
        config.routes = Vec::new();
        let probe = !registries.identity.dry_run;
        let versions = crate::versions::Versions::build(
            &config.models,
            &upstreams,
            &mut registries.versions,
            crate::versions::BuildEnv {
                metrics: &observe.families,
                audit: registries.identity.audit().cloned(),
                rollout_file: probe.then(|| rollout_file(&config)).flatten(),
                shared: limits.redis.clone(),
                live: probe,
            },
        );
        Ok(Snapshot {
            config: Arc::new(config),
            router: router.expect("checked: no errors"),
            routes,
            versions,
            upstreams,
            identity: services,
            observe,
            in_flight: registries.in_flight.clone(),
            shared_store: limits.redis.clone(),
        })
    }
}

/// Where rollouts save their state: `.modelgate-rollouts.json` beside the main config file.
fn rollout_file(config: &Config) -> Option<std::path::PathBuf> {
    let main = &config.meta.sources.first()?.0;
    Some(main.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).join(".modelgate-rollouts.json"))
}

/// The listener's certificates, each key checked against its certificate, and the client CA (mTLS).
fn certificates(tls: &modelgate_config::model::TlsConfig) -> Result<modelgate_listen::tls::Certs, modelgate_config::ConfigError> {
    use modelgate_listen::tls::{Certificate, Certs, ClientAuth};
    let certs: Vec<Certificate> =
        tls.certificates.iter().map(|c| Certificate { hosts: c.hosts.clone(), chain: c.chain.clone(), key: c.key.clone_key() }).collect();
    let client = tls.client_auth.as_ref().map(|c| ClientAuth { roots: c.roots.clone(), required: c.required, crls: c.crls.clone() });
    Certs::prepare_with(&certs, client.as_ref()).map_err(|(i, e)| {
        let Some(i) = i else {
            let (file, ca) = (&tls.certificates[0].origin.file, tls.client_auth.as_ref().map(|c| c.ca_file.display().to_string()));
            return modelgate_config::ConfigError::new(file, "tls.client_auth.ca", format!("{}: {e}", ca.unwrap_or_default()))
                .hint("a PEM file of CA certificates (the issuers of your clients' certificates)");
        };
        let c = &tls.certificates[i];
        modelgate_config::ConfigError::new(
            &c.origin.file,
            &c.origin.path,
            format!("{} with {}: {e}", c.cert_file.display(), c.key_file.display()),
        )
        .hint("the key file must hold the private key of the certificate file's first (leaf) certificate")
    })
}
