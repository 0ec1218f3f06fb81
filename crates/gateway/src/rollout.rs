//! Progressive rollout with automatic rollback (`models.<m>.rollout`, docs/versions.md "Progressive rollout"),
//! decided inside the gateway from its own per-version statistics — no Prometheus.
//!
//! A [`Rollout`] (one per model and canary version) holds the state: status, step, consecutive breaches, the last
//! evaluation and the transitions. It outlives snapshots (kept in [`crate::versions::VersionsRegistry`]) and is
//! saved to a file beside the main config at each transition, so it survives reloads and restarts. Each snapshot
//! holds a [`Binding`] (the rollout with that config's settings and the versions' statistics); its task evaluates
//! every `interval` while the snapshot lives.
//!
//! Several gateways sharing a Redis (`redis`) share their rollouts: one at a time holds a lease and decides (on the
//! traffic it sees itself), publishing the state after each evaluation; every gateway reads it each second and
//! follows (its weight set from the shared state). An operator's action on any gateway is published at once.
//! Each state carries a sequence number; the higher one wins.
//!
//! An evaluation compares the canary with the stable version over the requests the split gave each since the last
//! decisive evaluation (pinned requests are not counted): too few samples (either side below `min_samples`) holds —
//! never promotes. A breach (error rate above stable's plus `max_error_rate_increase` points, p99 above stable's ×
//! `max_p99_ratio`, shadow agreement below `min_shadow_agreement`) counts; `breaches` in a row set the canary's
//! weight to 0 at once — in every status but `rolled_back` and `completed`, a pending gate or a pause included. A
//! passing evaluation resets the count and, while `progressing`, moves to the next step (or waits at a gate).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use modelgate_config::model::RolloutConfig;
use modelgate_pipeline::slo::{Counts, VersionStats};
use serde::{Deserialize, Serialize};

/// Transitions kept per rollout (the oldest are dropped; every one is in the audit log).
const TRANSITIONS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Evaluating; a passing evaluation moves to the next step.
    Progressing,
    /// Passed its step; the next one is a gate that waits for `promote`.
    WaitingForPromotion,
    /// Paused by an operator: evaluated (and rolled back on breaches), not advanced.
    Paused,
    /// Weight 0 after breaches or an operator's rollback; `restart` begins again at the first step.
    RolledBack,
    /// Past the last step: the canary keeps the last step's weight (make it the stable version in config).
    Completed,
}

/// A rollout's persisted state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Bumped by every transition: of two states, the higher one is newer.
    #[serde(default)]
    seq: u64,
    status: Status,
    step: usize,
    breaches: u32,
    /// The last evaluation: its decision and numbers.
    last: Option<serde_json::Value>,
    transitions: VecDeque<serde_json::Value>,
}

/// One model's rollout of one canary version.
pub struct Rollout {
    model: String,
    version: String,
    /// The canary's weight in buckets: the version's width in every snapshot routing to it.
    weight: Arc<AtomicU32>,
    state: Mutex<State>,
    /// The statistics read at the last decisive evaluation (not persisted: a restart starts a new window).
    base: Mutex<Option<Base>>,
    /// The stable version's error rate and p99 in the last window with enough of its requests.
    stable_ref: Mutex<Option<(f64, Option<std::time::Duration>)>>,
    /// Where the state of every rollout of this gateway is saved.
    file: Option<PathBuf>,
    /// The last save failed (shown by the admin view).
    unsaved: std::sync::atomic::AtomicBool,
    /// When the next evaluation is due.
    next_eval: Mutex<Option<tokio::time::Instant>>,
    /// This gateway holds the shared rollout's lease (decides for every gateway).
    leader: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct Base {
    canary: Counts,
    stable: Counts,
    shadow: (u64, u64),
    at: tokio::time::Instant,
}

/// A rollout as one snapshot configures it.
pub struct Binding {
    pub rollout: Arc<Rollout>,
    cfg: RolloutConfig,
    canary: Arc<VersionStats>,
    stable: Arc<VersionStats>,
    stable_name: String,
    shadow: Option<Arc<crate::shadow::Stats>>,
    tags: serde_json::Value,
    audit: Option<Arc<modelgate_telemetry::audit::Audit>>,
    /// The Redis the rollout is shared through.
    shared: Option<Arc<modelgate_limits::store::RedisStore>>,
}

/// This gateway process among those sharing rollouts (random, per process).
fn instance() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let h = std::collections::hash_map::RandomState::new().build_hasher().finish();
        format!("{h:016x}-{}", std::process::id())
    })
}

/// An operator's action (`POST /admin/models/{m}/rollout/{action}`, `modelgate rollout …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    Pause,
    Resume,
    Rollback,
    Restart,
}

/// Why an action does not apply.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} a rollout that is {status}")]
pub struct NotApplicable {
    action: &'static str,
    status: &'static str,
}

// === impl Rollout ===

impl Rollout {
    /// A rollout as saved in `file` (or new, at its first step).
    pub fn load(model: &str, version: &str, first_step: u32, file: Option<PathBuf>) -> Rollout {
        let saved = file.as_deref().and_then(|f| read_saved(f).remove(&key(model, version)));
        let state =
            saved.unwrap_or(State { seq: 0, status: Status::Progressing, step: 0, breaches: 0, last: None, transitions: VecDeque::new() });
        let r = Rollout {
            model: model.into(),
            version: version.into(),
            weight: Arc::new(AtomicU32::new(first_step)),
            state: Mutex::new(state),
            base: Mutex::new(None),
            stable_ref: Mutex::new(None),
            file,
            unsaved: Default::default(),
            next_eval: Mutex::new(None),
            leader: Default::default(),
        };
        if saved_status(&r) != Status::Progressing || r.lock().step != 0 {
            tracing::info!(model, version, status = ?saved_status(&r), step = r.lock().step, "rollout state restored");
        }
        r
    }

    /// The canary's weight, shared with the snapshots' versions.
    pub fn weight(&self) -> Arc<AtomicU32> {
        self.weight.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Saves every rollout's state: this one's replaced in the file, others kept.
    fn save(&self, state: &State) {
        let Some(file) = &self.file else { return };
        let mut all = read_saved(file);
        all.insert(key(&self.model, &self.version), state.clone());
        let ok = serde_json::to_vec_pretty(&all).ok().is_some_and(|bytes| {
            let tmp = file.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, file))
                .map_err(|e| tracing::warn!(file = %file.display(), error = %e, "rollout state not saved"))
                .is_ok()
        });
        self.unsaved.store(!ok, Ordering::Relaxed);
    }
}

fn saved_status(r: &Rollout) -> Status {
    r.lock().status
}

fn key(model: &str, version: &str) -> String {
    format!("{model}/{version}")
}

fn read_saved(file: &std::path::Path) -> std::collections::BTreeMap<String, State> {
    std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// === impl Binding ===

impl Binding {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rollout: Arc<Rollout>,
        cfg: RolloutConfig,
        canary: Arc<VersionStats>,
        stable: Arc<VersionStats>,
        stable_name: &str,
        shadow: Option<Arc<crate::shadow::Stats>>,
        tags: serde_json::Value,
        audit: Option<Arc<modelgate_telemetry::audit::Audit>>,
        shared: Option<Arc<modelgate_limits::store::RedisStore>>,
    ) -> Binding {
        let b = Binding { rollout, cfg, canary, stable, stable_name: stable_name.into(), shadow, tags, audit, shared };
        // A changed config (steps) applies at once to the state kept.
        let mut s = b.rollout.lock();
        s.step = s.step.min(b.cfg.steps.len() - 1);
        b.rollout.weight.store(b.weight_of(&s), Ordering::Relaxed);
        drop(s);
        b
    }

    fn weight_of(&self, s: &State) -> u32 {
        match s.status {
            Status::RolledBack => 0,
            _ => self.cfg.steps[s.step.min(self.cfg.steps.len() - 1)],
        }
    }

    fn reading(&self) -> Base {
        Base {
            canary: self.canary.read(),
            stable: self.stable.read(),
            shadow: self.shadow.as_ref().map_or((0, 0), |s| s.agreement()),
            at: tokio::time::Instant::now(),
        }
    }

    /// One evaluation (every `interval`).
    pub fn evaluate(&self) {
        let now = self.reading();
        // Lock order: state, then base (as in `act`).
        let mut s = self.rollout.lock();
        let mut base_slot = self.rollout.base.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(base) = base_slot.clone() else {
            *base_slot = Some(now);
            return;
        };
        if matches!(s.status, Status::RolledBack | Status::Completed) {
            *base_slot = Some(now);
            return;
        }
        let canary = now.canary.since(&base.canary);
        let stable = now.stable.since(&base.stable);
        let shadow = (now.shadow.0.saturating_sub(base.shadow.0), now.shadow.1.saturating_sub(base.shadow.1));
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let mut numbers = serde_json::json!({
            "window_s": now.at.duration_since(base.at).as_secs_f64(),
            "canary": { "version": self.rollout.version, "requests": canary.requests, "errors": canary.errors,
                        "error_rate_pct": canary.error_rate() * 100.0, "p99_ms": ms(canary.p99()) },
            "stable": { "version": self.stable_name, "requests": stable.requests, "errors": stable.errors,
                        "error_rate_pct": stable.error_rate() * 100.0, "p99_ms": ms(stable.p99()) },
        });
        if self.cfg.shadow.is_some() {
            numbers["shadow"] = serde_json::json!({ "agreeing": shadow.0, "compared": shadow.1 });
        }
        let min = self.cfg.min_samples;
        let mut too_few = Vec::new();
        if canary.requests < min {
            too_few.push(format!("canary {} of {min} requests", canary.requests));
        }
        // The stable version's figures: this window's, or (when the split left it too few, as at a 100 % step) those
        // of the last window that had enough.
        let mut reference = self.rollout.stable_ref.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if stable.requests >= min {
            *reference = Some((stable.error_rate(), stable.p99()));
        } else if reference.is_some() {
            numbers["stable"]["from_an_earlier_window"] = true.into();
        } else {
            too_few.push(format!("stable {} of {min} requests", stable.requests));
        }
        let (stable_error_rate, stable_p99) = reference.unwrap_or_default();
        drop(reference);
        if self.cfg.shadow.is_some() && shadow.1 < min {
            too_few.push(format!("shadow {} of {min} comparisons", shadow.1));
        }
        if !too_few.is_empty() {
            // Hold: the window goes on until there is enough to judge.
            s.last = Some(
                serde_json::json!({ "at": now_unix(), "decision": "hold", "reason": format!("too few samples: {}", too_few.join(", ")), "numbers": numbers }),
            );
            return;
        }
        *base_slot = Some(now);
        drop(base_slot);
        let mut breached = Vec::new();
        let (ce, se) = (canary.error_rate() * 100.0, stable_error_rate * 100.0);
        if ce > se + self.cfg.max_error_rate_increase {
            breached.push(format!("error rate {ce:.2}% > stable {se:.2}% + {} points", self.cfg.max_error_rate_increase));
        }
        if let (Some(c), Some(st)) = (canary.p99(), stable_p99)
            && c.as_secs_f64() > st.as_secs_f64() * self.cfg.max_p99_ratio
        {
            breached.push(format!(
                "p99 {:.1} ms > stable {:.1} ms × {}",
                c.as_secs_f64() * 1e3,
                st.as_secs_f64() * 1e3,
                self.cfg.max_p99_ratio
            ));
        }
        if let Some((name, pct)) = &self.cfg.shadow {
            let agreement = shadow.0 as f64 * 100.0 / shadow.1.max(1) as f64;
            if agreement < *pct {
                breached.push(format!("shadow {name} agreement {agreement:.2}% < {pct}%"));
            }
        }
        if breached.is_empty() {
            s.breaches = 0;
            let reason = "the SLOs hold".to_string();
            s.last = Some(serde_json::json!({ "at": now_unix(), "decision": "pass", "reason": reason, "numbers": numbers }));
            if s.status == Status::Progressing {
                self.advance(&mut s, &reason, &numbers, "rollout");
            }
        } else {
            s.breaches += 1;
            let reason = breached.join("; ");
            let decision = if s.breaches >= self.cfg.breaches { "rollback" } else { "breach" };
            s.last = Some(
                serde_json::json!({ "at": now_unix(), "decision": decision, "reason": reason, "breaches": s.breaches, "numbers": numbers }),
            );
            if s.breaches >= self.cfg.breaches {
                let why = format!("{} breaches in a row: {reason}", s.breaches);
                self.transition(&mut s, Status::RolledBack, &why, &numbers, "rollout");
            }
        }
    }

    /// After a passing evaluation: the next step, or a wait at its gate, or completion past the last step.
    fn advance(&self, s: &mut State, reason: &str, numbers: &serde_json::Value, by: &str) {
        let next = s.step + 1;
        if next < self.cfg.steps.len() && self.cfg.gates.contains(&next) {
            self.transition(s, Status::WaitingForPromotion, reason, numbers, by);
        } else {
            self.next_step(s, reason, numbers, by);
        }
    }

    /// The next step (its window starting now), or completion past the last one.
    fn next_step(&self, s: &mut State, reason: &str, numbers: &serde_json::Value, by: &str) {
        if s.step + 1 >= self.cfg.steps.len() {
            return self.transition(s, Status::Completed, reason, numbers, by);
        }
        s.step += 1;
        s.breaches = 0;
        self.transition(s, Status::Progressing, reason, numbers, by);
        *self.rollout.base.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self.reading());
    }

    /// Applies a new status (the weight first: traffic moves at once), records, saves and audits it.
    fn transition(&self, s: &mut State, to: Status, reason: &str, numbers: &serde_json::Value, by: &str) {
        let from = s.status;
        s.status = to;
        s.seq += 1;
        let weight = self.weight_of(s);
        self.rollout.weight.store(weight, Ordering::Relaxed);
        let t = serde_json::json!({
            "at": now_unix(),
            "from": from,
            "to": to,
            "step": s.step,
            "weight": f64::from(weight) / 100.0,
            "by": by,
            "gateway": instance(),
            "reason": reason,
            "numbers": numbers,
        });
        tracing::warn!(model = %self.rollout.model, version = %self.rollout.version, from = ?from, to = ?to, weight = f64::from(weight) / 100.0, reason, "rollout transition");
        if s.transitions.len() == TRANSITIONS {
            s.transitions.pop_front();
        }
        s.transitions.push_back(t.clone());
        self.rollout.save(s);
        if let Some(audit) = &self.audit {
            let line =
                serde_json::json!({ "model": self.rollout.model, "version": self.rollout.version, "tags": self.tags, "transition": t });
            audit.record(modelgate_telemetry::audit::Event {
                kind: "rollout",
                decision: "ok",
                reason: modelgate_telemetry::audit::Text::Owned(line.to_string()),
                ..Default::default()
            });
        }
    }

    /// An operator's action, applied at once (audited like the automatic transitions).
    pub fn act(&self, action: Action, who: &str) -> Result<serde_json::Value, NotApplicable> {
        let mut s = self.rollout.lock();
        let by = format!("admin:{who}");
        let numbers = s.last.as_ref().and_then(|l| l.get("numbers")).cloned().unwrap_or_default();
        let refuse = |action, s: &State| Err(NotApplicable { action, status: status_name(s.status) });
        match action {
            // A promote passes the gate or the step at hand, whatever the numbers say.
            Action::Promote => match s.status {
                Status::Progressing | Status::WaitingForPromotion | Status::Paused => {
                    self.next_step(&mut s, "promoted by an operator", &numbers, &by)
                }
                _ => return refuse("promote", &s),
            },
            Action::Pause => match s.status {
                Status::Progressing | Status::WaitingForPromotion => {
                    self.transition(&mut s, Status::Paused, "paused by an operator", &numbers, &by)
                }
                _ => return refuse("pause", &s),
            },
            Action::Resume => match s.status {
                Status::Paused => self.transition(&mut s, Status::Progressing, "resumed by an operator", &numbers, &by),
                _ => return refuse("resume", &s),
            },
            Action::Rollback => match s.status {
                Status::RolledBack => return refuse("roll back", &s),
                _ => self.transition(&mut s, Status::RolledBack, "rolled back by an operator", &numbers, &by),
            },
            Action::Restart => match s.status {
                Status::RolledBack | Status::Completed | Status::Paused => {
                    (s.step, s.breaches) = (0, 0);
                    self.transition(&mut s, Status::Progressing, "restarted by an operator", &numbers, &by);
                    *self.rollout.base.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self.reading());
                }
                _ => return refuse("restart", &s),
            },
        }
        drop(s);
        Ok(self.view())
    }

    /// `GET /admin/models/{m}/rollout`.
    pub fn view(&self) -> serde_json::Value {
        let s = self.rollout.lock();
        let steps: Vec<f64> = self.cfg.steps.iter().map(|w| f64::from(*w) / 100.0).collect();
        let gates: Vec<f64> = self.cfg.gates.iter().map(|&i| f64::from(self.cfg.steps[i]) / 100.0).collect();
        serde_json::json!({
            "model": self.rollout.model,
            "version": self.rollout.version,
            "status": s.status,
            "step": s.step,
            "weight": f64::from(self.rollout.weight.load(Ordering::Relaxed)) / 100.0,
            "steps": steps,
            "gates": gates,
            "interval_s": self.cfg.interval.as_secs_f64(),
            "min_samples": self.cfg.min_samples,
            "breaches": s.breaches,
            "breaches_to_roll_back": self.cfg.breaches,
            "slo": {
                "max_error_rate_increase": self.cfg.max_error_rate_increase,
                "max_p99_ratio": self.cfg.max_p99_ratio,
                "shadow": self.cfg.shadow.as_ref().map(|(v, p)| serde_json::json!({ "version": v, "min_agreement": p })),
            },
            "last_evaluation": s.last,
            "transitions": s.transitions,
            "state_file": self.rollout.file.as_ref().map(|f| f.display().to_string()),
            "saved": !self.rollout.unsaved.load(Ordering::Relaxed),
            "seq": s.seq,
            "gateway": instance(),
            "shared": self.shared.is_some(),
            // Shared: whether this gateway decides now (holds the lease); alone it always does.
            "decides": self.shared.is_none() || self.rollout.leader.load(Ordering::Relaxed),
        })
    }

    /// `modelgate_rollout_*` at scrape: the status (one series per status, 1 for the current one) and the step.
    pub fn export(&self, m: &modelgate_telemetry::metrics::Metrics) {
        use modelgate_telemetry::metrics::{ModelVersionLabels, RolloutLabels};
        let s = self.rollout.lock();
        for st in [Status::Progressing, Status::WaitingForPromotion, Status::Paused, Status::RolledBack, Status::Completed] {
            let labels =
                RolloutLabels { model: self.rollout.model.clone(), version: self.rollout.version.clone(), status: status_name(st) };
            m.rollout_status.get_or_create(&labels).set(i64::from(s.status == st));
        }
        let labels = ModelVersionLabels { model: self.rollout.model.clone(), version: self.rollout.version.clone() };
        m.rollout_step.get_or_create(&labels).set(s.step as i64);
        m.rollout_breaches.get_or_create(&labels).set(i64::from(s.breaches));
    }

    /// Evaluates every `interval` while the snapshot holding `binding` lives (a reload keeps the clock: the due
    /// time is the rollout's). Shared through Redis, it also reads the shared state and renews or takes the lease
    /// every second, and only the lease holder evaluates.
    pub async fn drive(binding: Weak<Binding>) {
        loop {
            let Some(b) = binding.upgrade() else { return };
            let interval = b.cfg.interval;
            let tick = if b.shared.is_some() { interval.min(std::time::Duration::from_secs(1)) } else { interval };
            let now = tokio::time::Instant::now();
            let due = *b.rollout.next_eval.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let wake = due.unwrap_or(now).min(now + tick).max(now + std::time::Duration::from_millis(20));
            drop(b);
            #[allow(clippy::disallowed_methods)] // the evaluation period, not a wait for a condition
            tokio::time::sleep_until(wake).await;
            let Some(b) = binding.upgrade() else { return };
            if let Some(store) = b.shared.clone() {
                b.sync(&store).await;
                let ttl = (interval * 3).max(std::time::Duration::from_secs(3));
                let key = format!("rollout:{}/{}:leader", b.rollout.model, b.rollout.version);
                let leader = store.lease(&key, instance(), ttl).await == Ok(true);
                if b.rollout.leader.swap(leader, Ordering::Relaxed) != leader {
                    tracing::info!(model = %b.rollout.model, version = %b.rollout.version, leader, "rollout decision-maker changed");
                }
                if !leader {
                    // A follower's window starts afresh each tick: were it to take over, it judges the latest traffic.
                    *b.rollout.base.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(b.reading());
                    continue;
                }
            }
            let now = tokio::time::Instant::now();
            if due.is_some_and(|d| d > now) {
                continue;
            }
            *b.rollout.next_eval.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now + interval);
            b.evaluate();
            b.publish().await;
        }
    }

    /// Shared: writes this gateway's state for the others (after an evaluation or an operator's action).
    pub async fn publish(&self) {
        let Some(store) = &self.shared else { return };
        let state = serde_json::to_string(&*self.rollout.lock()).unwrap_or_default();
        let _ = store.set_value(&format!("rollout:{}/{}:state", self.rollout.model, self.rollout.version), &state).await;
    }

    /// Shared: adopts the shared state when it is newer than this gateway's (the decision-maker's evaluation, or an
    /// operator's action on another gateway).
    async fn sync(&self, store: &modelgate_limits::store::RedisStore) {
        let key = format!("rollout:{}/{}:state", self.rollout.model, self.rollout.version);
        let Ok(Some(text)) = store.get_value(&key).await else { return };
        let Ok(remote) = serde_json::from_str::<State>(&text) else { return };
        let mut s = self.rollout.lock();
        if remote.seq < s.seq || (remote.seq == s.seq && remote.last == s.last) {
            return;
        }
        let changed = remote.seq > s.seq;
        *s = remote;
        s.step = s.step.min(self.cfg.steps.len() - 1);
        self.rollout.weight.store(self.weight_of(&s), Ordering::Relaxed);
        if changed {
            tracing::info!(model = %self.rollout.model, version = %self.rollout.version, status = ?s.status, step = s.step, "rollout state followed from the shared store");
            self.rollout.save(&s);
            // A new step (or status) starts a new window here too.
            *self.rollout.base.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self.reading());
        }
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Progressing => "progressing",
        Status::WaitingForPromotion => "waiting_for_promotion",
        Status::Paused => "paused",
        Status::RolledBack => "rolled_back",
        Status::Completed => "completed",
    }
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "promote" => Action::Promote,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "rollback" => Action::Rollback,
            "restart" => Action::Restart,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> RolloutConfig {
        RolloutConfig {
            version: "2".into(),
            steps: vec![1_000, 5_000, 10_000],
            interval: Duration::from_secs(1),
            min_samples: 10,
            breaches: 2,
            gates: vec![2],
            max_error_rate_increase: 1.0,
            max_p99_ratio: 1.5,
            shadow: None,
        }
    }

    fn binding(file: Option<PathBuf>) -> (Binding, Arc<VersionStats>, Arc<VersionStats>) {
        let (canary, stable) = (Arc::new(VersionStats::default()), Arc::new(VersionStats::default()));
        let r = Arc::new(Rollout::load("digits", "2", 1_000, file));
        let b = Binding::new(r, cfg(), canary.clone(), stable.clone(), "1", None, serde_json::json!({}), None, None);
        (b, canary, stable)
    }

    fn traffic(s: &VersionStats, n: u64, status: u16, ms: u64) {
        for _ in 0..n {
            s.count(status, Duration::from_millis(ms));
        }
    }

    fn status(b: &Binding) -> (Status, usize, u32) {
        let s = b.rollout.lock();
        (s.status, s.step, b.rollout.weight.load(Ordering::Relaxed))
    }

    #[test]
    fn holds_without_data_advances_waits_at_the_gate_and_rolls_back_after_breaches() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rollouts.json");
        let (b, canary, stable) = binding(Some(file.clone()));
        b.evaluate(); // the first evaluation starts the window
        b.evaluate();
        assert_eq!(status(&b), (Status::Progressing, 0, 1_000), "no data: hold");
        assert_eq!(b.rollout.lock().last.as_ref().unwrap()["decision"], "hold");
        traffic(&canary, 9, 200, 5);
        traffic(&stable, 100, 200, 5);
        b.evaluate();
        assert_eq!(status(&b), (Status::Progressing, 0, 1_000), "9 of 10 canary samples: hold");
        traffic(&canary, 1, 200, 5);
        b.evaluate();
        assert_eq!(status(&b), (Status::Progressing, 1, 5_000), "the window accumulated to 10: pass, next step");
        traffic(&canary, 20, 200, 5);
        traffic(&stable, 20, 200, 5);
        b.evaluate();
        assert_eq!(status(&b), (Status::WaitingForPromotion, 1, 5_000), "the next step is a gate");
        // Breaches count while the gate waits; the second in a row rolls back.
        traffic(&canary, 20, 500, 5);
        traffic(&stable, 20, 200, 5);
        b.evaluate();
        assert_eq!((status(&b), b.rollout.lock().breaches), ((Status::WaitingForPromotion, 1, 5_000), 1));
        traffic(&canary, 20, 200, 50);
        traffic(&stable, 20, 200, 5);
        b.evaluate();
        assert_eq!(status(&b), (Status::RolledBack, 1, 0), "a latency breach, the second in a row");
        let last = b.rollout.lock().transitions.back().cloned().unwrap();
        assert!(last["reason"].as_str().unwrap().contains("p99"), "{last}");
        assert!(b.act(Action::Resume, "t").is_err(), "a rolled back rollout is restarted, not resumed");

        // Saved: a new gateway process starts rolled back (weight 0), not at the first step.
        drop(b);
        let (b, _, _) = binding(Some(file));
        assert_eq!(status(&b), (Status::RolledBack, 1, 0));
        b.act(Action::Restart, "t").unwrap();
        assert_eq!(status(&b), (Status::Progressing, 0, 1_000));
        b.act(Action::Promote, "t").unwrap();
        b.act(Action::Promote, "t").unwrap();
        assert_eq!(status(&b), (Status::Progressing, 2, 10_000));
        b.act(Action::Promote, "t").unwrap();
        assert_eq!(status(&b), (Status::Completed, 2, 10_000));
    }

    #[test]
    fn at_a_full_step_the_stable_figures_come_from_an_earlier_window() {
        let (b, canary, stable) = binding(None);
        b.evaluate();
        traffic(&canary, 20, 200, 5);
        traffic(&stable, 20, 200, 5);
        b.evaluate();
        b.act(Action::Promote, "t").unwrap(); // to 100 %: the stable version gets nobody from the split
        traffic(&canary, 20, 503, 5);
        b.evaluate();
        let last = b.rollout.lock().last.clone().unwrap();
        assert_eq!(last["decision"], "breach", "{last}");
        assert_eq!(last["numbers"]["stable"]["from_an_earlier_window"], true);
    }
}
