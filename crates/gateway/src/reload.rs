//! Hot reload: file watch (debounced), SIGHUP and `POST /admin/reload` all land in [`Shared::reload`], which
//! loads and compiles the new snapshot on a blocking thread and swaps it atomically. A bad config is rejected and
//! the old snapshot keeps serving; the outcome is kept for `GET /admin/config/status`.

#![allow(clippy::disallowed_methods, reason = "measures how long a reload took (reported, never a timer)")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use modelgate_config::{ConfigErrors, Source, Vars, load};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::snapshot::Registries;
use crate::snapshot::Snapshot;

/// State shared by listeners and reloaders.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    source: Source,
    vars: Vars,
    registry: Mutex<Registries>,
    status: Mutex<Status>,
    /// The configs applied since start, newest last, at most [`HISTORY`]: `GET /admin/config/history`, rollback.
    history: Mutex<std::collections::VecDeque<Applied>>,
    serial: tokio::sync::Mutex<()>,
    after_reload: Option<fn()>,
    /// The address the admin API was bound to at start (`admin.listen` changes take effect on restart): a reload
    /// is checked against it, not against the address its file names.
    admin_ip: std::net::IpAddr,
}

/// What `GET /admin/config/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Hash of the active config.
    pub version: String,
    /// When the active config was loaded (RFC 3339).
    pub loaded_at: String,
    pub files: Vec<PathBuf>,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// The last rejected reload, kept until a later reload succeeds.
    pub last_error: Option<LastError>,
    /// Settings changed in files that only take effect on restart.
    pub warnings: Vec<String>,
}

/// Applied configs kept for `GET /admin/config/history` and `POST /admin/config/rollback`.
pub const HISTORY: usize = 20;

/// One applied config: its version, when and why, and the files' texts as written (shared with its snapshot).
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: String,
    pub at: String,
    pub trigger: &'static str,
    pub sources: Vec<(PathBuf, Arc<str>)>,
}

/// Why a rollback could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("version {0:?} is not among the {HISTORY} configs kept; GET /admin/config/history lists them")]
    Unknown(String),
    #[error("the config was not loaded from a file, so there is nothing to restore")]
    NotFromFile,
    #[error("cannot restore {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the restored files were rejected: {0}")]
    Rejected(ConfigErrors),
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: String,
    pub trigger: &'static str,
    pub errors: ConfigErrors,
}

// === impl Shared ===

impl Shared {
    pub fn new(source: Source, vars: Vars, first: Snapshot, registry: Registries, after_reload: Option<fn()>) -> Arc<Shared> {
        let status = Status {
            version: first.config.meta.hash.clone(),
            loaded_at: now(),
            files: first.config.meta.files(),
            reloads_succeeded: 0,
            reloads_failed: 0,
            last_error: None,
            warnings: Vec::new(),
        };
        let admin_ip = first.config.admin_listen.ip();
        let applied =
            Applied { version: first.config.meta.hash.clone(), at: now(), trigger: "start", sources: first.config.meta.sources.clone() };
        Arc::new(Shared {
            history: Mutex::new(std::collections::VecDeque::from([applied])),
            admin_ip,
            snapshot: ArcSwap::from_pointee(first),
            source,
            vars,
            registry: Mutex::new(registry),
            status: Mutex::new(status),
            serial: tokio::sync::Mutex::new(()),
            after_reload,
        })
    }

    /// The audit writer, if auditing is on.
    pub fn audit(&self) -> Option<Arc<modelgate_telemetry::audit::Audit>> {
        self.registry.lock().expect("registry lock").identity.audit().cloned()
    }

    /// Single sign-on's sessions and login state (one for the process).
    pub fn sso(&self) -> Arc<modelgate_auth::identity::sso::Sso> {
        self.registry.lock().expect("registry lock").identity.sso.clone()
    }

    /// The certificate store the proxy listener serves from (reloads replace its contents).
    pub fn registry_tls(&self) -> Arc<modelgate_listen::tls::CertStore> {
        self.registry.lock().expect("registry lock").tls.clone()
    }

    /// A reload may not open the admin API beyond loopback: `admin.listen` moved to loopback in the file does not
    /// move the socket, so a config without `admin.consumers`/`groups` is refused while it is bound elsewhere.
    fn admin_stays_closed(&self, config: &modelgate_config::Config) -> Result<(), ConfigErrors> {
        if !config.admin_consumers.is_empty() || !config.admin_groups.is_empty() || self.admin_ip.is_loopback() {
            return Ok(());
        }
        let e = modelgate_config::ConfigError::new(
            self.source.name(),
            "admin.listen",
            format!(
                "the admin API stays bound to {} until restart (admin.listen changes take effect then); without admin.consumers or admin.groups it would be open beyond this machine",
                self.admin_ip
            ),
        )
        .hint("keep admin.consumers / admin.groups until the gateway restarts on the loopback address");
        Err(ConfigErrors(vec![e]))
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Loads and compiles the config as it would be with `overlay` in place of those include files (`None`: as if
    /// absent), changing nothing: the namespace API's check before it writes a file.
    pub async fn check_with(self: &Arc<Self>, overlay: HashMap<PathBuf, Option<Arc<str>>>) -> Result<(), ConfigErrors> {
        let this = self.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _rt = handle.enter();
            let mut vars = this.vars.clone();
            vars.include_overlay = overlay;
            let config = load(&this.source, &vars)?;
            this.admin_stays_closed(&config)?;
            let checks_only = this.registry.lock().expect("registry lock").checks_only;
            let mut registries = Registries { checks_only, ..Registries::default() };
            registries.identity.dry_run = true;
            Snapshot::compile(config, &mut registries).map(drop)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![modelgate_config::ConfigError::new(self.source.name(), "", format!("check failed: {e}"))]))
        })
    }

    /// Loads and compiles the config again and swaps it in. Reloads are serialized.
    pub async fn reload(self: &Arc<Self>, trigger: &'static str) -> Result<String, ConfigErrors> {
        let _one_at_a_time = self.serial.lock().await;
        let this = self.clone();
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            let _rt = handle.enter();
            let t0 = std::time::Instant::now();
            let snap = load(&this.source, &this.vars).and_then(|config| {
                let t1 = std::time::Instant::now();
                let mut registry = this.registry.lock().expect("registry lock");
                let snap = this.admin_stays_closed(&config).and_then(|()| Snapshot::compile(config, &mut registry));
                tracing::debug!(load_ms = (t1 - t0).as_secs_f64() * 1e3, compile_ms = t1.elapsed().as_secs_f64() * 1e3, "reload timings");
                snap
            });
            // On this thread, where the transient parse memory was freed (e.g. to return it to the OS).
            if let Some(hook) = this.after_reload {
                hook();
            }
            snap
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![modelgate_config::ConfigError::new(self.source.name(), "", format!("reload failed: {e}"))]))
        });

        let outcome = self.record_outcome(result, trigger);
        if let Some(audit) = self.audit() {
            let (decision, reason) = match &outcome {
                Ok(v) => ("ok", format!("{trigger}: version {v}")),
                Err(e) => ("failed", format!("{trigger}: {} error(s); the previous config keeps serving", e.0.len())),
            };
            audit
                .record_now(modelgate_telemetry::audit::Event { kind: "reload", decision, reason: reason.into(), ..Default::default() })
                .await;
        }
        outcome
    }

    fn record_outcome(&self, result: Result<Snapshot, ConfigErrors>, trigger: &'static str) -> Result<String, ConfigErrors> {
        let mut status = self.status.lock().expect("status lock");
        match result {
            Ok(snap) => {
                let old = self.snapshot.load();
                let mut warnings = Vec::new();
                for (what, was, now) in [
                    ("listen", old.config.listen.to_string(), snap.config.listen.to_string()),
                    ("admin.listen", old.config.admin_listen.to_string(), snap.config.admin_listen.to_string()),
                    ("server.workers", format!("{:?}", old.config.workers), format!("{:?}", snap.config.workers)),
                    ("server.max_connections", old.config.max_connections.to_string(), snap.config.max_connections.to_string()),
                    ("audit", format!("{:?}", old.config.audit), format!("{:?}", snap.config.audit)),
                    (
                        "tls (on/off, min_version)",
                        format!("{:?}", old.config.tls.as_ref().map(|t| t.tls13_only)),
                        format!("{:?}", snap.config.tls.as_ref().map(|t| t.tls13_only)),
                    ),
                ] {
                    if was != now {
                        warnings.push(format!("{what} changed from {was} to {now}; it takes effect on restart"));
                    }
                }
                let version = snap.config.meta.hash.clone();
                status.version = version.clone();
                status.loaded_at = now();
                status.files = snap.config.meta.files();
                status.reloads_succeeded += 1;
                status.last_error = None;
                status.warnings = warnings;
                let mut history = self.history.lock().expect("history lock");
                if history.back().is_none_or(|a| a.version != version) {
                    if history.len() == HISTORY {
                        history.pop_front();
                    }
                    history.push_back(Applied { version: version.clone(), at: now(), trigger, sources: snap.config.meta.sources.clone() });
                }
                drop(history);
                self.snapshot.store(Arc::new(snap));
                tracing::info!(trigger, version = %version, "config reloaded");
                Ok(version)
            }
            Err(errors) => {
                status.reloads_failed += 1;
                status.last_error = Some(LastError { at: now(), trigger, errors: errors.clone() });
                tracing::error!(trigger, errors = %errors, "config reload rejected; the previous config keeps serving");
                Err(errors)
            }
        }
    }

    /// The applied configs, newest first.
    pub fn history(&self) -> Vec<Applied> {
        self.history.lock().expect("history lock").iter().rev().cloned().collect()
    }

    /// Restores the files of an applied config and reloads them. Each file is written by rename (a watcher never
    /// sees half of it); a `*.yaml` fragment that config did not have is moved aside to `NAME.rolled-back`, so the
    /// restored set is exactly the old one. The reload is audited like any (`trigger: admin_rollback`).
    pub async fn rollback(self: &Arc<Self>, version: &str) -> Result<String, RollbackError> {
        let Source::File(_) = &self.source else { return Err(RollbackError::NotFromFile) };
        let target = self
            .history
            .lock()
            .expect("history lock")
            .iter()
            .find(|a| a.version == version)
            .cloned()
            .ok_or_else(|| RollbackError::Unknown(version.into()))?;
        let current = self.snapshot.load().config.meta.sources.clone();
        let write = |path: &Path, text: &str| -> std::io::Result<()> {
            let tmp = path.with_extension("rollback-tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)
        };
        for (path, text) in &target.sources {
            write(path, text).map_err(|source| RollbackError::Write { path: path.clone(), source })?;
        }
        for (path, _) in current.iter().skip(1).filter(|(p, _)| !target.sources.iter().any(|(t, _)| t == p)) {
            let aside = PathBuf::from(format!("{}.rolled-back", path.display()));
            std::fs::rename(path, &aside).map_err(|source| RollbackError::Write { path: path.clone(), source })?;
        }
        self.reload("admin_rollback").await.map_err(RollbackError::Rejected)
    }

    /// Starts watching the config files (before the gateway reports ready, so no change is missed) and returns
    /// the task that reloads after `debounce` of quiet.
    pub fn watch_files(self: Arc<Self>, debounce: Duration) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let Source::File(main) = &self.source else { return None };
        let meta = &self.snapshot.load().config.meta;
        let paths = meta.watch_paths.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        // Watch directories, not files: editors replace files by renaming, which a file watch would miss.
        let dir_of =
            |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let canon = |p: PathBuf| p.canonicalize().unwrap_or(p);
        // Files watched by name in their directory: the main config and data files (API keys, JWKS).
        let files: Vec<(PathBuf, std::ffi::OsString)> = std::iter::once(main.clone())
            .chain(meta.data_files.iter().cloned())
            .filter_map(|f| Some((canon(dir_of(&f)), f.file_name()?.to_os_string())))
            .collect();
        let include_dirs: Vec<PathBuf> = paths.iter().skip(1).cloned().map(canon).collect();
        let (fs, ids) = (files.clone(), include_dirs.clone());
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            // A Kubernetes ConfigMap or Secret volume updates in place by swapping the `..data` symlink (the files
            // are links through it and never change themselves): that swap counts as a change of its files.
            let relevant = ev.paths.iter().any(|p| {
                let parent = p.parent().map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
                let swapped = p.file_name().is_some_and(|n| n == "..data");
                fs.iter()
                    .any(|(dir, name)| parent.as_deref() == Some(dir.as_path()) && (swapped || p.file_name() == Some(name.as_os_str())))
                    || ids.iter().any(|d| parent.as_deref() == Some(d.as_path()) || p == d)
            });
            if relevant {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP or POST /admin/reload");
                return None;
            }
        };
        use notify::Watcher;
        let mut dirs: Vec<&PathBuf> = files.iter().map(|(d, _)| d).chain(include_dirs.iter()).collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(path = %dir.display(), error = %e, "cannot watch path");
            }
        }
        Some(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                // Debounce: wait until no event arrives for `debounce`.
                while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
                let _ = self.reload("file_watch").await;
            }
        })
    }
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
