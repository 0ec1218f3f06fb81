//! The audit log: an append-only file of JSON lines, one per authentication/authorization decision, admin action
//! and config reload. Each line carries `prev`, the SHA-256 of the line before it (a hash chain), so editing,
//! inserting or deleting a line breaks the chain at that point; [`verify`] finds the first break. Every
//! `checkpoint_every` lines a checkpoint line records the count so far.
//!
//! Writing is off the hot path: a request hands a compact [`Event`] (shared handles and inline text, no JSON, no
//! hashing) to a bounded queue — one uncontended lock and a push. One writer thread serialises, hashes and writes
//! what has gathered in one `write`, and fsyncs as the policy says. The writer is woken by a request only when it
//! sleeps with nothing queued, or once when the queue is half full; otherwise it lets lines gather for
//! [`GATHER`] after the first, so under load one wake-up serves a batch (bench/chain.sh counts them). With
//! `fsync: always` there is no gathering: the request waits for its line to be on disk before it is answered
//! ([`Audit::record`] returns a future), and lines queued during an fsync share the next one (group commit).
//! A full queue blocks the request or rejects it (`when_full`): lines are never dropped.
//!
//! A failed write (disk full, a partial write, an I/O error) does not advance the chain: the partial bytes are cut
//! off, `seq` and `prev` go back to the last line on disk, and the batch is kept and retried every
//! [`RETRY_EVERY`]; meanwhile new records are treated as a full queue (`when_full`: the request waits or gets 503),
//! each failure is counted ([`Audit::write_errors`]) and logged. No field a caller controls can make a line long:
//! text fields longer than [`FIELD_MAX`] bytes are cut, marked, and carry the SHA-256 of the whole value.
//!
//! Rotation: when the file reaches `max_file_size` it is renamed to `PATH.<seq of its first line, 12 digits>`
//! and a new file continues the chain, so `modelgate audit verify PATH.* PATH` checks the whole history.
//! On start the chain continues from the last line on disk; a torn last line (a crash in mid-write, never
//! acknowledged) is cut off and the cut is itself recorded.

#![allow(clippy::disallowed_methods, reason = "the audit writer is its own thread, off the tokio runtime (fsync interval)")]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use modelgate_config::model::{AuditConfig, FsyncPolicy, WhenFull};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot};

use crate::jsonline::{JsonLine, Stamps};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long the writer lets lines gather after the first one arrives (`fsync: interval` and `never`), so that
/// under load one wake-up, one serialisation pass and one `write` serve many requests. `fsync: always` does not
/// wait: its callers are waiting for the disk.
const GATHER: Duration = Duration::from_millis(2);

/// How often a batch the disk refused is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Longest text field written as is (a path, a request id, a subject); longer values are cut to
/// [`FIELD_KEEP`] bytes and marked `…[cut N bytes, sha256:HEX]`, so a line stays a few KiB whatever a caller sends.
pub const FIELD_MAX: usize = 1024;
const FIELD_KEEP: usize = 256;

/// One audited event. Never holds a secret or a token: only names, identifiers and decisions. Built on the
/// request path, so it holds shared handles (the route's name, the caller's principal) and inline text, and is
/// turned into JSON by the writer thread.
#[derive(Default)]
pub struct Event {
    /// `authn`, `authz`, `admin`, `reload`, `audit`.
    pub kind: &'static str,
    pub request_id: Option<http::HeaderValue>,
    /// The client's address as text (the connection keeps it formatted).
    pub client: Option<http::HeaderValue>,
    pub route: Option<Text>,
    /// The model (and version) the request's path addressed.
    pub target: Option<Target>,
    /// Who: how they authenticated, the credential (issuer name or API key id), subject and consumer.
    pub who: Option<Arc<dyn Subject>>,
    /// The credential presented, where there is no principal (a refused API key's id).
    pub credential: Option<String>,
    /// `allow` or `deny` (decisions), `ok` or `failed` (actions).
    pub decision: &'static str,
    /// Why, as a stable code (`rule:NAME`, `no_rule_matched`, `token_expired`, …) or an action's summary.
    pub reason: Text,
}

/// The caller an [`Event`] is about (the pipeline's principal implements it, so an event holds a reference).
pub trait Subject: Send + Sync {
    /// `api_key`, `jwt`, `aws_iam`, `anonymous`, `admin_key`.
    fn method(&self) -> &'static str;
    /// Issuer name (JWT), API key id or access key id; empty if none.
    fn credential(&self) -> &str;
    fn subject(&self) -> &str;
    fn consumer(&self) -> &str;
}

/// Text an event carries: a constant, a name shared with the config, or (off the hot path) built for it.
#[derive(Debug, Clone)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

/// The model and version a request addressed, kept inline (no allocation for names up to 56 bytes together).
#[derive(Debug, Clone)]
pub struct Target {
    text: smallvec::SmallVec<[u8; 56]>,
    model: usize,
    version: bool,
}

/// A queued line: the event, when it happened, and (`fsync: always`) who waits for it to be on disk.
struct Slot {
    event: Event,
    time: SystemTime,
    ack: Option<oneshot::Sender<()>>,
}

/// A handle to the audit writer. Share it in an `Arc`; dropping the last one lets the writer finish what is
/// queued and stop.
pub struct Audit {
    shared: Arc<Shared>,
    fsync: FsyncPolicy,
    when_full: WhenFull,
    thread: Option<std::thread::JoinHandle<()>>,
    pub config: AuditConfig,
}

/// The queue between requests and the writer: one lock taken for a push (no allocation, no wake-up unless the
/// writer sleeps with nothing to do, or the queue is half full), and one per batch by the writer.
struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Woken after the writer takes a batch: callers blocked on a full queue (`when_full: block`) retry.
    space: Notify,
    /// The writer thread, set once it runs.
    writer: OnceLock<std::thread::Thread>,
    /// Writes the disk refused (each retry of a batch counts).
    write_errors: std::sync::atomic::AtomicU64,
}

struct State {
    slots: Vec<Slot>,
    closed: bool,
    /// The writer sleeps until woken (nothing queued when it last looked): the next push wakes it.
    asleep: bool,
    /// The writer was already hurried in this gathering window (the queue reached half full).
    hurried: bool,
    /// The last write failed and its batch waits for a retry: new records are refused as if the queue were full.
    failing: bool,
}

/// The audit log cannot take the record (its writer stopped): the request must not go on unaudited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit log cannot take more records")]
pub struct Unavailable;

/// What [`Audit::record`] asks of the caller.
pub enum Recorded {
    /// Queued; nothing to wait for.
    Done,
    /// Wait for this before answering (durability or back-pressure).
    Wait(std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Unavailable>> + Send>>),
    /// The queue is full and the policy is `reject`.
    Rejected,
}

/// What became of a push. A refused slot stays with the caller (it is large: not moved into the answer).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Queued,
    Full,
    Closed,
}

// === impl Text ===

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl Default for Text {
    fn default() -> Text {
        Text::Static("")
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::Static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Owned(s)
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Text {
        Text::Shared(s)
    }
}

// === impl Target ===

impl Target {
    pub fn new(model: &str, version: Option<&str>) -> Target {
        let mut text = smallvec::SmallVec::new();
        text.extend_from_slice(model.as_bytes());
        text.extend_from_slice(version.unwrap_or("").as_bytes());
        Target { text, model: model.len(), version: version.is_some() }
    }

    pub fn model(&self) -> &str {
        std::str::from_utf8(&self.text[..self.model]).unwrap_or("")
    }

    pub fn version(&self) -> Option<&str> {
        self.version.then(|| std::str::from_utf8(&self.text[self.model..]).unwrap_or(""))
    }
}

// === impl Audit ===

impl Audit {
    /// Opens (or continues) the log and starts the writer thread.
    pub fn start(config: &AuditConfig) -> std::io::Result<Audit> {
        let writer = Writer::open(config)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { slots: Vec::new(), closed: false, asleep: false, hurried: false, failing: false }),
            capacity: config.queue.max(1),
            space: Notify::new(),
            writer: OnceLock::new(),
            write_errors: Default::default(),
        });
        let queue = shared.clone();
        let thread = std::thread::Builder::new().name("modelgate-audit".into()).spawn(move || writer.run(&queue))?;
        let _ = shared.writer.set(thread.thread().clone());
        Ok(Audit { shared, fsync: config.fsync, when_full: config.when_full, thread: Some(thread), config: config.clone() })
    }

    /// Writes what is queued, fsyncs and stops the writer (at shutdown).
    pub fn close(mut self) {
        self.shared.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Hands an event to the writer; with `fsync: always` the caller waits on the returned future for the line to
    /// be on disk.
    pub fn record(&self, event: Event) -> Recorded {
        let (ack, done) = if self.fsync == FsyncPolicy::Always {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut slot = Some(Slot { event, time: SystemTime::now(), ack });
        match (self.shared.push(&mut slot), done) {
            (Pushed::Queued, None) => Recorded::Done,
            (Pushed::Queued, Some(rx)) => Recorded::Wait(Box::pin(async move { rx.await.map_err(|_| Unavailable) })),
            (Pushed::Closed, _) => Recorded::Wait(Box::pin(async { Err(Unavailable) })),
            (Pushed::Full, _) if self.when_full == WhenFull::Reject => Recorded::Rejected,
            (Pushed::Full, done) => {
                let shared = self.shared.clone();
                Recorded::Wait(Box::pin(async move {
                    shared.push_waiting(slot).await?;
                    match done {
                        Some(rx) => rx.await.map_err(|_| Unavailable),
                        None => Ok(()),
                    }
                }))
            }
        }
    }

    /// Records an event from outside a request (admin actions, reloads): waits for room, never rejects.
    pub async fn record_now(&self, event: Event) {
        let (tx, rx) = oneshot::channel();
        let always = self.fsync == FsyncPolicy::Always;
        let slot = Some(Slot { event, time: SystemTime::now(), ack: always.then_some(tx) });
        if self.shared.push_waiting(slot).await.is_ok() && always {
            let _ = rx.await;
        }
    }

    /// Lines queued and not yet written.
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().slots.len()
    }

    /// Writes the disk refused since start (a batch retried while the disk is full counts each time).
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the last write failed and records are being refused until a retry succeeds.
    pub fn failing(&self) -> bool {
        self.shared.lock().failing
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        // The writer finishes what is queued on its own; `close` also waits for it.
        self.shared.close();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue consistent (pushes and swaps are single steps).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the slot (taking it out of `slot`). Wakes the writer only if it sleeps with nothing to do, or once
    /// when the queue is half full.
    fn push(&self, slot: &mut Option<Slot>) -> Pushed {
        let wake = {
            let mut s = self.lock();
            if s.closed {
                return Pushed::Closed;
            }
            if s.failing {
                return Pushed::Full;
            }
            if s.slots.len() >= self.capacity {
                drop(s);
                self.wake();
                return Pushed::Full;
            }
            let Some(slot) = slot.take() else { return Pushed::Queued };
            s.slots.push(slot);
            let hurry = !s.hurried && s.slots.len() * 2 >= self.capacity;
            let wake = s.asleep || hurry;
            s.asleep = false;
            s.hurried |= hurry;
            wake
        };
        if wake {
            self.wake();
        }
        Pushed::Queued
    }

    /// Queues a slot, waiting for room while the queue is full.
    async fn push_waiting(&self, mut slot: Option<Slot>) -> Result<(), Unavailable> {
        loop {
            let room = self.space.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.push(&mut slot) {
                Pushed::Queued => return Ok(()),
                Pushed::Closed => return Err(Unavailable),
                Pushed::Full => {}
            }
            room.await;
        }
    }

    fn wake(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }
}

/// The one writer: owns the file and the chain state.
struct Writer {
    config: AuditConfig,
    file: File,
    size: u64,
    seq: u64,
    prev: [u8; 64],
    since_checkpoint: u64,
    last_sync: Instant,
    dirty: bool,
    pending_note: Option<String>,
    /// The serialised lines of the batch being written.
    buf: Vec<u8>,
    /// The lines' RFC 3339 times.
    stamps: Stamps,
    /// A batch the disk refused, written first next time.
    retry: Vec<Slot>,
}

/// The chain's state after the last line on disk, to go back to when a write fails.
#[derive(Clone, Copy)]
struct Mark {
    seq: u64,
    prev: [u8; 64],
    since_checkpoint: u64,
}

impl Writer {
    fn open(config: &AuditConfig) -> std::io::Result<Writer> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&config.path)?;
        let mut size = file.metadata()?.len();
        let mut note = None;
        // A torn last line was never acknowledged: cut it off, and say so in the log.
        let (seq, prev) = match last_line(&mut file, size)? {
            Tail::Empty => match latest_rotated(&config.path)? {
                Some(p) => {
                    let mut f = File::open(&p)?;
                    let n = f.metadata()?.len();
                    match last_line(&mut f, n)? {
                        Tail::Line(l) => chain_point(&l).ok_or_else(|| bad_tail(&p))?,
                        _ => (0, GENESIS.to_string()),
                    }
                }
                None => (0, GENESIS.to_string()),
            },
            Tail::Line(l) => chain_point(&l).ok_or_else(|| bad_tail(&config.path))?,
            Tail::Torn { keep, line } => {
                file.set_len(keep)?;
                note = Some(format!("cut {} bytes of a torn last line", size - keep));
                size = keep;
                match line {
                    Some(l) => chain_point(&l).ok_or_else(|| bad_tail(&config.path))?,
                    None => (0, GENESIS.to_string()),
                }
            }
        };
        let mut prev_hex = [b'0'; 64];
        prev_hex.copy_from_slice(&prev.as_bytes()[..64]);
        Ok(Writer {
            config: config.clone(),
            file,
            size,
            seq,
            prev: prev_hex,
            since_checkpoint: 0,
            last_sync: Instant::now(),
            dirty: false,
            pending_note: note,
            buf: Vec::with_capacity(64 << 10),
            stamps: Stamps::default(),
            retry: Vec::new(),
        })
    }

    /// Sleeps until lines are queued (or an fsync is due), lets more gather for a moment unless callers wait on
    /// the disk, then writes the batch in one go. Stops once closed and drained.
    fn run(mut self, shared: &Shared) {
        if let Some(note) = self.pending_note.take() {
            let event = Event { kind: "audit", decision: "ok", reason: note.into(), ..Default::default() };
            self.retry.push(Slot { event, time: SystemTime::now(), ack: None });
        }
        let gather = if self.config.fsync == FsyncPolicy::Always { Duration::ZERO } else { GATHER };
        loop {
            // A refused batch is retried after a pause; otherwise wait for work.
            if !self.retry.is_empty() {
                if shared.lock().failing {
                    std::thread::park_timeout(RETRY_EVERY);
                }
            } else {
                self.wait_for_work(shared);
            }
            if !gather.is_zero() && self.retry.is_empty() {
                std::thread::park_timeout(gather);
            }
            let mut batch = std::mem::take(&mut self.retry);
            let closed = {
                let mut s = shared.lock();
                batch.append(&mut s.slots);
                s.hurried = false;
                s.closed
            };
            if batch.is_empty() && closed {
                self.sync();
                return;
            }
            let failed = match self.write_all(batch) {
                Ok(()) => false,
                Err(unwritten) => {
                    shared.write_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.retry = unwritten;
                    true
                }
            };
            let was_failing = std::mem::replace(&mut shared.lock().failing, failed);
            if was_failing && !failed {
                tracing::warn!(path = %self.config.path.display(), "the audit log is written again; records are accepted");
            }
            shared.space.notify_waiters();
            if failed && closed {
                tracing::error!(
                    path = %self.config.path.display(),
                    lines = self.retry.len(),
                    "stopping with audit records the disk refused; their requests were not acknowledged as audited"
                );
                return;
            }
            if self.sync_due() == Some(Duration::ZERO) {
                self.sync();
            }
        }
    }

    /// Sleeps until lines are queued or the queue is closed, fsyncing when an interval falls due meanwhile.
    fn wait_for_work(&mut self, shared: &Shared) {
        loop {
            let mut s = shared.lock();
            if !s.slots.is_empty() || s.closed {
                break;
            }
            s.asleep = true;
            drop(s);
            match self.sync_due() {
                Some(wait) => std::thread::park_timeout(wait),
                None => std::thread::park(),
            }
            if self.sync_due() == Some(Duration::ZERO) {
                self.sync();
            }
        }
    }

    /// With `fsync: interval` and unsynced lines: how long until the next fsync.
    fn sync_due(&self) -> Option<Duration> {
        (self.config.fsync == FsyncPolicy::Interval && self.dirty)
            .then(|| self.config.fsync_interval.saturating_sub(self.last_sync.elapsed()))
    }

    /// Serialises, writes and (`fsync: always`) syncs a batch, then acknowledges it. If the disk refuses a write,
    /// the chain goes back to the last line on disk and the slots not on disk are returned, to be written again.
    fn write_all(&mut self, slots: Vec<Slot>) -> Result<(), Vec<Slot>> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut mark = self.mark();
        // Slots before `written` are on disk (a rotation flushed them).
        let mut written = 0;
        for (i, slot) in slots.iter().enumerate() {
            self.append(&mut buf, &slot.event, slot.time);
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.config.checkpoint_every {
                self.since_checkpoint = 0;
                let cp = Event { kind: "checkpoint", decision: "ok", reason: format!("{} lines", self.seq).into(), ..Default::default() };
                self.append(&mut buf, &cp, slot.time);
            }
            if self.size + buf.len() as u64 >= self.config.max_file_size {
                if !self.flush(&mut buf) {
                    return Err(self.refused(buf, mark, slots, written));
                }
                written = i + 1;
                mark = self.mark();
                self.rotate();
            }
        }
        if !self.flush(&mut buf) {
            return Err(self.refused(buf, mark, slots, written));
        }
        self.buf = buf;
        if self.config.fsync == FsyncPolicy::Always {
            self.sync();
        }
        for a in slots.into_iter().filter_map(|s| s.ack) {
            let _ = a.send(());
        }
        Ok(())
    }

    fn mark(&self) -> Mark {
        Mark { seq: self.seq, prev: self.prev, since_checkpoint: self.since_checkpoint }
    }

    /// After a refused write: the chain back to `mark`, the slots already on disk acknowledged, the rest returned.
    fn refused(&mut self, buf: Vec<u8>, mark: Mark, slots: Vec<Slot>, written: usize) -> Vec<Slot> {
        self.buf = buf;
        Mark { seq: self.seq, prev: self.prev, since_checkpoint: self.since_checkpoint } = mark;
        let mut rest = slots;
        let done: Vec<Slot> = rest.drain(..written).collect();
        for a in done.into_iter().filter_map(|s| s.ack) {
            let _ = a.send(());
        }
        rest
    }

    /// Writes `buf` out; false if the disk refused it, with any partial write cut off so the file ends with the
    /// last whole line.
    fn flush(&mut self, buf: &mut Vec<u8>) -> bool {
        if buf.is_empty() {
            return true;
        }
        let written = self.file.write_all(buf);
        let len = buf.len() as u64;
        buf.clear();
        if let Err(e) = written {
            tracing::error!(path = %self.config.path.display(), error = %e, "cannot write the audit log; records are refused until it can");
            if let Err(e) = self.file.set_len(self.size) {
                tracing::error!(path = %self.config.path.display(), error = %e, "cannot cut a partial audit write");
            }
            return false;
        }
        self.size += len;
        self.dirty = true;
        true
    }

    fn append(&mut self, buf: &mut Vec<u8>, event: &Event, time: SystemTime) {
        self.seq += 1;
        let mut text = [0; 32];
        let stamp = self.stamps.format(time, 6, &mut text);
        let who = event.who.as_deref();
        let start = buf.len();
        // `seq`, `time`, the event's fields, `prev`: absent fields are left out.
        let mut line = JsonLine::start(buf);
        line.u64("seq", self.seq).str("time", stamp).str("type", event.kind);
        let mut opt = |key, v: Option<&str>| {
            if let Some(v) = v {
                line.str(key, &capped(v));
            }
        };
        opt("request_id", event.request_id.as_ref().and_then(|v| v.to_str().ok()));
        opt("client", event.client.as_ref().and_then(|v| v.to_str().ok()));
        opt("route", event.route.as_ref().map(Text::as_str));
        opt("model", event.target.as_ref().map(Target::model));
        opt("version", event.target.as_ref().and_then(Target::version));
        opt("method", who.map(Subject::method));
        opt("credential", event.credential.as_deref().or(who.map(Subject::credential)).filter(|c| !c.is_empty()));
        opt("subject", who.map(Subject::subject));
        opt("consumer", who.map(Subject::consumer));
        line.str("decision", event.decision).str("reason", &capped(event.reason.as_str()));
        line.str("prev", std::str::from_utf8(&self.prev).unwrap_or(GENESIS));
        line.end();
        hex::encode_to_slice(Sha256::digest(&buf[start..]), &mut self.prev).expect("64 hex digits");
        buf.push(b'\n');
    }

    fn sync(&mut self) {
        if self.dirty {
            if let Err(e) = self.file.sync_data() {
                tracing::error!(error = %e, "cannot fsync the audit log");
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    fn rotate(&mut self) {
        self.sync();
        let first = self.first_seq_in_file();
        let rotated = rotated_name(&self.config.path, first);
        let reopened = std::fs::rename(&self.config.path, &rotated)
            .and_then(|_| OpenOptions::new().create(true).read(true).append(true).open(&self.config.path));
        match reopened {
            Ok(f) => {
                self.file = f;
                self.size = 0;
            }
            Err(e) => tracing::error!(error = %e, "cannot rotate the audit log; going on in the same file"),
        }
    }

    fn first_seq_in_file(&mut self) -> u64 {
        let mut first = String::new();
        let read = File::open(&self.config.path).and_then(|f| BufReader::new(f).read_line(&mut first));
        read.ok().and_then(|_| chain_point(first.trim_end()).map(|(s, _)| s)).unwrap_or(self.seq)
    }
}

enum Tail {
    Empty,
    Line(String),
    /// The file does not end in a newline: keep `keep` bytes; `line` is the last whole line, if any.
    Torn {
        keep: u64,
        line: Option<String>,
    },
}

/// Longest last line [`last_line`] reads back (lines written now are a few KiB; older files may hold longer ones).
const TAIL_MAX: u64 = 16 << 20;

/// Reads the last line of a file, reading backwards in 64 KiB steps until the line before it (or the file's start).
fn last_line(f: &mut File, size: u64) -> std::io::Result<Tail> {
    last_line_by(f, size, 64 << 10)
}

/// How [`last_line`] reads `bytes` as a file, with a read step of `step` bytes: the length of the part to keep
/// (the file is cut there when its end is torn) and the last whole line. For the fuzz target
/// (`fuzz/fuzz_targets/audit_tail.rs`), which checks it against a plain forward reading.
#[doc(hidden)]
pub fn tail_of(bytes: &[u8], step: u64) -> std::io::Result<(u64, Option<String>)> {
    Ok(match last_line_by(&mut std::io::Cursor::new(bytes), bytes.len() as u64, step.max(1))? {
        Tail::Empty => (0, None),
        Tail::Line(line) => (bytes.len() as u64, Some(line)),
        Tail::Torn { keep, line } => (keep, line),
    })
}

fn last_line_by(f: &mut (impl Read + Seek), size: u64, step: u64) -> std::io::Result<Tail> {
    if size == 0 {
        return Ok(Tail::Empty);
    }
    // `tail` holds the bytes from `start` to the end.
    let mut start = size;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let from = start.saturating_sub(step);
        let mut chunk = vec![0; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        (tail, start) = (chunk, from);
        let whole = tail.iter().rposition(|&b| b == b'\n');
        if start == 0 || whole.is_some_and(|end| tail[..end].contains(&b'\n')) {
            break;
        }
        if size - start > TAIL_MAX {
            return Err(std::io::Error::other(format!("the last line of the audit log is longer than {TAIL_MAX} bytes")));
        }
    }
    let whole_end = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => i,
        None => return Ok(Tail::Torn { keep: start, line: None }),
    };
    let line_start = tail[..whole_end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = String::from_utf8_lossy(&tail[line_start..whole_end]).into_owned();
    if whole_end + 1 == tail.len() { Ok(Tail::Line(line)) } else { Ok(Tail::Torn { keep: start + whole_end as u64 + 1, line: Some(line) }) }
}

/// `v` itself when at most [`FIELD_MAX`] bytes; else its first [`FIELD_KEEP`] bytes (on a character boundary) and a
/// marker with the length cut and the SHA-256 of the whole value, so the line stays short and the value provable.
fn capped(v: &str) -> std::borrow::Cow<'_, str> {
    if v.len() <= FIELD_MAX {
        return std::borrow::Cow::Borrowed(v);
    }
    let end = (0..=FIELD_KEEP).rev().find(|&i| v.is_char_boundary(i)).unwrap_or(0);
    let hash = hex::encode(Sha256::digest(v.as_bytes()));
    std::borrow::Cow::Owned(format!("{}…[cut {} bytes, sha256:{hash}]", &v[..end], v.len() - end))
}

/// `(seq, hash of this line)` of a written line.
fn chain_point(line: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((v.get("seq")?.as_u64()?, hex::encode(Sha256::digest(line.as_bytes()))))
}

fn bad_tail(p: &Path) -> std::io::Error {
    std::io::Error::other(format!("the last line of {} is not an audit record; run `modelgate audit verify` on it", p.display()))
}

fn rotated_name(path: &Path, first_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{first_seq:012}"));
    PathBuf::from(name)
}

/// The newest rotated file beside `path`, if any.
fn latest_rotated(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Ok(None) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    let mut best: Option<PathBuf> = None;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let is_rotated = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()));
        if is_rotated && best.as_ref().is_none_or(|b| p > *b) {
            best = Some(p);
        }
    }
    Ok(best)
}

/// What [`verify`] found in an intact chain.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub files: usize,
    pub lines: u64,
    pub checkpoints: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hash of the last line: keep it elsewhere to detect a later truncation of the log's end.
    pub head: String,
}

/// The first break in a chain.
#[derive(Debug, thiserror::Error)]
#[error("{}: line {line}: {reason}", file.display())]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    pub reason: String,
}

/// Checks the chain across `files`, given oldest first.
pub fn verify(files: &[PathBuf]) -> Result<Verified, Broken> {
    let mut prev: Option<(u64, String)> = None;
    let mut out = Verified { files: files.len(), lines: 0, checkpoints: 0, first_seq: 0, last_seq: 0, head: String::new() };
    for file in files {
        let f = File::open(file).map_err(|e| Broken { file: file.clone(), line: 0, reason: format!("cannot open: {e}") })?;
        let mut reader = BufReader::new(f);
        let mut n = 0u64;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let got = reader.read_until(b'\n', &mut raw).map_err(|e| Broken {
                file: file.clone(),
                line: n + 1,
                reason: format!("cannot read: {e}"),
            })?;
            if got == 0 {
                break;
            }
            n += 1;
            let broken = |reason: String| Broken { file: file.clone(), line: n, reason };
            if raw.last() != Some(&b'\n') {
                return Err(broken("the line is torn (no newline at its end)".into()));
            }
            let line = std::str::from_utf8(&raw[..raw.len() - 1]).map_err(|_| broken("not UTF-8".into()))?;
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| broken(format!("not a JSON record: {e}")))?;
            let seq = v.get("seq").and_then(|s| s.as_u64()).ok_or_else(|| broken("no `seq`".into()))?;
            let claimed = v.get("prev").and_then(|s| s.as_str()).ok_or_else(|| broken("no `prev`".into()))?;
            match &prev {
                None => {
                    out.first_seq = seq;
                    if seq == 1 && claimed != GENESIS {
                        return Err(broken("the first record does not start the chain".into()));
                    }
                }
                Some((pseq, phash)) => {
                    if seq != pseq + 1 {
                        return Err(broken(format!("sequence jumps from {pseq} to {seq}: lines are missing or reordered")));
                    }
                    if claimed != phash {
                        return Err(broken(format!("`prev` does not match the hash of record {pseq}: it or this record was altered")));
                    }
                }
            }
            if v.get("type").and_then(|t| t.as_str()) == Some("checkpoint") {
                out.checkpoints += 1;
            }
            out.lines += 1;
            prev = Some((seq, hex::encode(Sha256::digest(line.as_bytes()))));
        }
    }
    if let Some((seq, hash)) = prev {
        out.last_seq = seq;
        out.head = hash;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, fsync: FsyncPolicy, max: u64) -> AuditConfig {
        AuditConfig {
            path: dir.join("audit.log"),
            fsync,
            fsync_interval: Duration::from_millis(10),
            max_file_size: max,
            checkpoint_every: 5,
            queue: 16,
            when_full: WhenFull::Block,
        }
    }

    fn event(i: usize) -> Event {
        Event {
            kind: "authz",
            request_id: Some(http::HeaderValue::from_str(&format!("r{i}")).unwrap()),
            decision: "allow",
            reason: "rule:test".into(),
            ..Default::default()
        }
    }

    async fn write(cfg: &AuditConfig, n: usize) {
        let audit = Audit::start(cfg).unwrap();
        for i in 0..n {
            match audit.record(event(i)) {
                Recorded::Done => {}
                Recorded::Wait(f) => f.await.unwrap(),
                Recorded::Rejected => panic!("rejected"),
            }
        }
        audit.close();
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap() != "audit.log").collect();
        v.sort();
        v.push(dir.join("audit.log"));
        v
    }

    /// A caller-controlled field of 65 KB (a request path, a request id) makes a short line: cut, marked, hashed.
    /// A log whose last line is longer than 64 KiB (written before fields were capped) still reopens.
    #[tokio::test]
    async fn long_fields_are_cut_and_long_last_lines_still_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FsyncPolicy::Always, 1 << 30);
        let long = "/v2/models/digits/versions/".to_string() + &"é".repeat(33_000);
        let audit = Audit::start(&cfg).unwrap();
        let e = Event { target: Some(Target::new("digits", Some(&long))), reason: Text::Owned(long.clone()), ..event(0) };
        let Recorded::Wait(f) = audit.record(e) else { panic!("fsync always waits") };
        f.await.unwrap();
        audit.close();
        let text = std::fs::read_to_string(&cfg.path).unwrap();
        let line = text.lines().last().unwrap();
        assert!(line.len() < 2 * FIELD_MAX, "a {} byte line", line.len());
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let hash = hex::encode(Sha256::digest(long.as_bytes()));
        for field in ["version", "reason"] {
            let got = v[field].as_str().unwrap();
            assert!(got.starts_with("/v2/models/digits/versions/é"), "{got}");
            assert!(got.ends_with(&format!("bytes, sha256:{hash}]")), "{got}");
        }

        // The defect as found: a line of 70 KB at the end of the log (appended as an older build wrote it).
        let mut old = serde_json::json!({"seq": 2, "type": "authz", "reason": "x".repeat(70_000), "decision": "deny"});
        old["prev"] = hex::encode(Sha256::digest(line.as_bytes())).into();
        let old = serde_json::to_string(&old).unwrap();
        std::fs::OpenOptions::new().append(true).open(&cfg.path).unwrap().write_all(format!("{old}\n").as_bytes()).unwrap();
        write(&cfg, 1).await;
        let v = verify(std::slice::from_ref(&cfg.path)).unwrap();
        assert_eq!((v.first_seq, v.last_seq), (1, 3), "the chain continues after the long line");
    }

    /// A full disk (a 64 KiB tmpfs): the write fails, the chain does not advance, records are refused
    /// (`when_full: reject`) or wait (`block`), nothing queued is dropped, and once space is freed every record is
    /// written and the log verifies. Needs root for the mount (the test command runs as root).
    #[tokio::test]
    async fn a_full_disk_loses_no_record_and_breaks_no_chain() {
        struct Mount(PathBuf);
        impl Drop for Mount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(dir.path()).status().unwrap();
        assert!(status.success(), "mounting a small tmpfs needs root (or CAP_SYS_ADMIN)");
        let _mount = Mount(dir.path().to_path_buf());
        // Fill the disk but for a few lines' room.
        let filler = dir.path().join("filler");
        std::fs::write(&filler, vec![0u8; 60 << 10]).unwrap();
        let mut cfg = config(dir.path(), FsyncPolicy::Interval, 1 << 30);
        cfg.when_full = WhenFull::Reject;
        cfg.checkpoint_every = 1_000;
        let audit = Arc::new(Audit::start(&cfg).unwrap());
        let mut accepted = 0usize;
        for i in 0..200 {
            match audit.record(event(i)) {
                Recorded::Done => accepted += 1,
                Recorded::Rejected => break,
                Recorded::Wait(_) => panic!("interval mode with room does not wait"),
            }
            if i % 8 == 7 {
                // Let the writer take what is queued.
                modelgate_test_support_wait(|| audit.queue_depth() == 0 || audit.failing()).await;
            }
        }
        modelgate_test_support_wait(|| audit.failing()).await;
        assert!(audit.write_errors() >= 1);
        assert!(matches!(audit.record(event(999)), Recorded::Rejected), "refused while the disk is full");
        let on_disk = std::fs::read_to_string(&cfg.path).unwrap_or_default().lines().count();
        assert!(on_disk < accepted, "some accepted records wait in memory ({on_disk} on disk, {accepted} accepted)");
        verify(std::slice::from_ref(&cfg.path)).expect("what is on disk verifies, the partial write cut off");

        // Space again: the held records are written, in order, and new ones accepted.
        std::fs::remove_file(&filler).unwrap();
        modelgate_test_support_wait(|| !audit.failing()).await;
        assert!(matches!(audit.record(event(1000)), Recorded::Done));
        Arc::try_unwrap(audit).ok().unwrap().close();
        let v = verify(std::slice::from_ref(&cfg.path)).unwrap();
        assert_eq!(v.lines as usize, accepted + 1, "every accepted record, none twice");
        let text = std::fs::read_to_string(&cfg.path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..accepted).map(|i| format!("r{i}")).chain(["r1000".to_string()]).collect();
        assert_eq!(ids, want);
    }

    /// Polls `cond` (the writer is a plain thread: no notification to await) for up to 10 s.
    async fn modelgate_test_support_wait(cond: impl Fn() -> bool) {
        for _ in 0..2000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::yield_now();
            tokio::time::timeout(Duration::from_millis(5), std::future::pending::<()>()).await.ok();
        }
        panic!("condition not reached in 10 s");
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_edits_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FsyncPolicy::Always, 1 << 20);
        write(&cfg, 12).await;
        let v = verify(std::slice::from_ref(&cfg.path)).unwrap();
        assert_eq!((v.lines, v.checkpoints, v.first_seq, v.last_seq), (14, 2, 1, 14));

        let text = std::fs::read_to_string(&cfg.path).unwrap();
        let edited = text.replacen("\"decision\":\"allow\"", "\"decision\":\"deny\"", 1);
        std::fs::write(&cfg.path, &edited).unwrap();
        let e = verify(std::slice::from_ref(&cfg.path)).unwrap_err();
        assert_eq!(e.line, 2, "{e}");

        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(6);
        std::fs::write(&cfg.path, lines.join("\n") + "\n").unwrap();
        let e = verify(std::slice::from_ref(&cfg.path)).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.reason.contains("jumps"), "{e}");
    }

    #[tokio::test]
    async fn restart_continues_the_chain_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FsyncPolicy::Always, 1 << 20);
        write(&cfg, 3).await;
        let mut f = OpenOptions::new().append(true).open(&cfg.path).unwrap();
        f.write_all(b"{\"seq\":4,\"half").unwrap();
        drop(f);
        write(&cfg, 2).await;
        let v = verify(std::slice::from_ref(&cfg.path)).unwrap();
        // 3 + the note about the cut + 2
        assert_eq!(v.last_seq, 6);
        assert!(std::fs::read_to_string(&cfg.path).unwrap().contains("torn last line"));
    }

    #[tokio::test]
    async fn rotation_keeps_one_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FsyncPolicy::Never, 4096);
        write(&cfg, 60).await;
        let all = files(dir.path());
        assert!(all.len() >= 3, "{all:?}");
        let v = verify(&all).unwrap();
        assert_eq!((v.lines, v.first_seq, v.last_seq), (72, 1, 72), "60 events and 12 checkpoints");
        assert!(verify(&all[1..]).unwrap().first_seq > 1);
        let mut missing_middle: Vec<PathBuf> = all.iter().filter(|p| std::fs::metadata(p).unwrap().len() > 0).cloned().collect();
        assert!(missing_middle.len() >= 3);
        missing_middle.remove(1);
        assert!(verify(&missing_middle).unwrap_err().reason.contains("jumps"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_blocks_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), FsyncPolicy::Interval, 1 << 20);
        cfg.queue = 2;
        let audit = Arc::new(Audit::start(&cfg).unwrap());
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let audit = audit.clone();
                tokio::spawn(async move {
                    let mut waited = 0;
                    for i in 0..500 {
                        match audit.record(event(t * 1000 + i)) {
                            Recorded::Done => {}
                            Recorded::Wait(f) => {
                                waited += 1;
                                f.await.unwrap();
                            }
                            Recorded::Rejected => panic!("block never rejects"),
                        }
                    }
                    waited
                })
            })
            .collect();
        let mut waited = 0;
        for t in tasks {
            waited += t.await.unwrap();
        }
        Arc::into_inner(audit).unwrap().close();
        assert!(waited > 0, "a two-slot queue under four writers must fill");
        let v = verify(std::slice::from_ref(&cfg.path)).unwrap();
        assert_eq!(v.lines - v.checkpoints, 2000, "every line is written, none dropped");
    }

    #[test]
    fn lines_carry_the_compact_event_fields() {
        struct Who;
        impl Subject for Who {
            fn method(&self) -> &'static str {
                "api_key"
            }
            fn credential(&self) -> &str {
                "k1"
            }
            fn subject(&self) -> &str {
                "svc"
            }
            fn consumer(&self) -> &str {
                "team-a"
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FsyncPolicy::Never, 1 << 20);
        let audit = Audit::start(&cfg).unwrap();
        let route: Arc<str> = "r".into();
        let ev = Event {
            kind: "authz",
            request_id: Some(http::HeaderValue::from_static("rid-1")),
            client: Some(http::HeaderValue::from_static("10.0.0.7")),
            route: Some(Text::Shared(route)),
            target: Some(Target::new("digits", Some("2"))),
            who: Some(Arc::new(Who)),
            credential: None,
            decision: "allow",
            reason: "rule:x".into(),
        };
        assert!(matches!(audit.record(ev), Recorded::Done));
        audit.close();
        let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&cfg.path).unwrap().lines().next().unwrap()).unwrap();
        let want = serde_json::json!({"seq": 1, "type": "authz", "request_id": "rid-1", "client": "10.0.0.7", "route": "r",
            "model": "digits", "version": "2", "method": "api_key", "credential": "k1", "subject": "svc", "consumer": "team-a",
            "decision": "allow", "reason": "rule:x", "prev": GENESIS});
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&line[k], v, "{k}");
        }
        let time = line["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok() && time.len() == "2026-11-30T22:36:19.000000Z".len(), "{time}");
    }

    #[tokio::test]
    async fn full_queue_rejects_when_told_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), FsyncPolicy::Never, 1 << 20);
        cfg.queue = 1;
        cfg.when_full = WhenFull::Reject;
        let audit = Audit::start(&cfg).unwrap();
        let mut rejected = 0;
        for i in 0..10_000 {
            if let Recorded::Rejected = audit.record(event(i)) {
                rejected += 1;
            }
        }
        audit.close();
        assert!(rejected > 0, "a one-slot queue under a burst must fill");
        let v = verify(std::slice::from_ref(&cfg.path)).unwrap();
        assert_eq!((v.lines - v.checkpoints) as usize, 10_000 - rejected, "every accepted line is written");
    }
}
