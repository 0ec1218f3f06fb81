//! The audit log: an append-only file of JSON lines, one per authentication/authorization decision, admin action
//! and config reload. Each line carries `prev`, the SHA-256 of the line before it (a hash chain), so editing,
//! inserting or deleting a line breaks the chain at that point; [`verify`] finds the first break. Every
//! `checkpoint_every` lines a checkpoint line records the count so far.
//!
//! Writing is off the hot path: requests hand an [`Event`] to a bounded queue read by one writer thread, which
//! writes what has queued up in one go and fsyncs as the policy says. With `fsync: always`, the request waits for
//! its line to be on disk before it is answered ([`Audit::record`] returns a future); otherwise it does not wait.
//! A full queue blocks the request or rejects it (`when_full`): lines are never dropped.
//!
//! Rotation: when the file reaches `max_file_size` it is renamed to `PATH.<seq of its first line, 12 digits>`
//! and a new file continues the chain, so `modelgate audit verify PATH.* PATH` checks the whole history.
//! On start the chain continues from the last line on disk; a torn last line (a crash in mid-write, never
//! acknowledged) is cut off and the cut is itself recorded.

#![allow(clippy::disallowed_methods, reason = "the audit writer is its own thread, off the tokio runtime (fsync interval)")]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use modelgate_config::model::{AuditConfig, FsyncPolicy, WhenFull};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited event. Never holds a secret or a token: only names, identifiers and decisions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// `authn`, `authz`, `admin`, `reload`, `audit`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How the caller authenticated: `api_key`, `jwt`, `anonymous`, `admin_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// Issuer name (JWT) or API key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// `allow` or `deny` (decisions), `ok` or `failed` (actions).
    pub decision: &'static str,
    /// Why, as a stable code (`rule:NAME`, `no_rule_matched`, `token_expired`, …) or an action's summary.
    pub reason: String,
}

/// Where lines go, with the writer's identity.
struct Line {
    event: Event,
    time: SystemTime,
    ack: Option<oneshot::Sender<()>>,
}

/// A handle to the audit writer. Cheap to share; the writer thread stops when the last handle is dropped.
pub struct Audit {
    tx: mpsc::Sender<Line>,
    fsync: FsyncPolicy,
    when_full: WhenFull,
    thread: std::thread::JoinHandle<()>,
    pub config: AuditConfig,
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

// === impl Audit ===

impl Audit {
    /// Opens (or continues) the log and starts the writer thread.
    pub fn start(config: &AuditConfig) -> std::io::Result<Audit> {
        let writer = Writer::open(config)?;
        let (tx, rx) = mpsc::channel(config.queue);
        let thread = std::thread::Builder::new().name("modelgate-audit".into()).spawn(move || writer.run(rx))?;
        Ok(Audit { tx, fsync: config.fsync, when_full: config.when_full, thread, config: config.clone() })
    }

    /// Writes what is queued, fsyncs and stops the writer (at shutdown). Other clones of the sender (requests
    /// still in flight) keep it alive until they finish.
    pub fn close(self) {
        let Audit { tx, thread, .. } = self;
        drop(tx);
        let _ = thread.join();
    }

    /// Hands an event to the writer; with `fsync: always` the caller waits on the returned future for the line to
    /// be on disk.
    pub fn record(&self, event: Event) -> Recorded {
        let time = SystemTime::now();
        let (ack, done) = if self.fsync == FsyncPolicy::Always {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let wait_ack = |done: Option<oneshot::Receiver<()>>| async move {
            match done {
                Some(rx) => rx.await.map_err(|_| Unavailable),
                None => Ok(()),
            }
        };
        match self.tx.try_send(Line { event, time, ack }) {
            Ok(()) if done.is_none() => Recorded::Done,
            Ok(()) => Recorded::Wait(Box::pin(wait_ack(done))),
            Err(mpsc::error::TrySendError::Closed(_)) => Recorded::Wait(Box::pin(async { Err(Unavailable) })),
            Err(mpsc::error::TrySendError::Full(line)) => match self.when_full {
                WhenFull::Reject => Recorded::Rejected,
                WhenFull::Block => {
                    let tx = self.tx.clone();
                    Recorded::Wait(Box::pin(async move {
                        tx.send(line).await.map_err(|_| Unavailable)?;
                        wait_ack(done).await
                    }))
                }
            },
        }
    }

    /// Records an event from outside a request (admin actions, reloads): waits for room, never rejects.
    pub async fn record_now(&self, event: Event) {
        let (ack, done) = oneshot::channel();
        let line = Line { event, time: SystemTime::now(), ack: (self.fsync == FsyncPolicy::Always).then_some(ack) };
        if self.tx.send(line).await.is_ok() && self.fsync == FsyncPolicy::Always {
            let _ = done.await;
        }
    }

    /// Lines queued and not yet written.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The one writer: owns the file and the chain state.
struct Writer {
    config: AuditConfig,
    file: File,
    size: u64,
    seq: u64,
    prev: String,
    since_checkpoint: u64,
    last_sync: Instant,
    dirty: bool,
    pending_note: Option<String>,
}

#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    time: String,
    #[serde(flatten)]
    event: &'a Event,
    prev: &'a str,
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
        Ok(Writer {
            config: config.clone(),
            file,
            size,
            seq,
            prev,
            since_checkpoint: 0,
            last_sync: Instant::now(),
            dirty: false,
            pending_note: note,
        })
    }

    fn run(mut self, mut rx: mpsc::Receiver<Line>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime");
        if let Some(note) = self.pending_note.take() {
            let event = Event { kind: "audit", decision: "ok", reason: note, ..Default::default() };
            self.write_all(vec![Line { event, time: SystemTime::now(), ack: None }]);
        }
        let mut batch = Vec::with_capacity(256);
        loop {
            let tick = match self.config.fsync {
                FsyncPolicy::Interval if self.dirty => self.config.fsync_interval.saturating_sub(self.last_sync.elapsed()),
                _ => Duration::from_secs(3600),
            };
            let got = rt.block_on(async { tokio::time::timeout(tick, rx.recv_many(&mut batch, 256)).await });
            match got {
                Ok(0) => {
                    self.sync();
                    return;
                }
                Ok(_) => self.write_all(std::mem::take(&mut batch)),
                Err(_) => {}
            }
            if self.config.fsync == FsyncPolicy::Interval && self.dirty && self.last_sync.elapsed() >= self.config.fsync_interval {
                self.sync();
            }
        }
    }

    fn write_all(&mut self, lines: Vec<Line>) {
        let mut buf = Vec::with_capacity(lines.len() * 256);
        let mut acks = Vec::new();
        for line in lines {
            self.append(&mut buf, &line.event, line.time);
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.config.checkpoint_every {
                self.since_checkpoint = 0;
                let cp = Event { kind: "checkpoint", decision: "ok", reason: format!("{} lines", self.seq), ..Default::default() };
                self.append(&mut buf, &cp, line.time);
            }
            acks.extend(line.ack);
            if self.size + buf.len() as u64 >= self.config.max_file_size {
                if !self.flush(&mut buf) {
                    return;
                }
                self.rotate();
            }
        }
        if !self.flush(&mut buf) {
            return;
        }
        if self.config.fsync == FsyncPolicy::Always {
            self.sync();
        }
        for a in acks {
            let _ = a.send(());
        }
    }

    /// Writes `buf` out; false (and nothing acknowledged) if the disk refused it.
    fn flush(&mut self, buf: &mut Vec<u8>) -> bool {
        if buf.is_empty() {
            return true;
        }
        if let Err(e) = self.file.write_all(buf) {
            // Unacknowledged: callers waiting on `always` see the failure as 503.
            tracing::error!(path = %self.config.path.display(), error = %e, "cannot write the audit log");
            return false;
        }
        self.size += buf.len() as u64;
        buf.clear();
        self.dirty = true;
        true
    }

    fn append(&mut self, buf: &mut Vec<u8>, event: &Event, time: SystemTime) {
        self.seq += 1;
        let rec = Record { seq: self.seq, time: humantime::format_rfc3339_micros(time).to_string(), event, prev: &self.prev };
        let start = buf.len();
        serde_json::to_writer(&mut *buf, &rec).expect("audit records serialize");
        self.prev = hex::encode(Sha256::digest(&buf[start..]));
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

/// Reads the last line of a file (lines are short; the last 64 KiB suffice).
fn last_line(f: &mut File, size: u64) -> std::io::Result<Tail> {
    if size == 0 {
        return Ok(Tail::Empty);
    }
    let start = size.saturating_sub(64 << 10);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let whole_end = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => i,
        None => return Ok(Tail::Torn { keep: start, line: None }),
    };
    let line_start = tail[..whole_end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = String::from_utf8_lossy(&tail[line_start..whole_end]).into_owned();
    if whole_end + 1 == tail.len() { Ok(Tail::Line(line)) } else { Ok(Tail::Torn { keep: start + whole_end as u64 + 1, line: Some(line) }) }
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
        Event { kind: "authz", request_id: Some(format!("r{i}")), decision: "allow", reason: "rule:test".into(), ..Default::default() }
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
