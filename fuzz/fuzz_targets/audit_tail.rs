//! The audit log's tail reader (crates/telemetry/src/audit.rs), which decides where a restarted gateway resumes the
//! chain: for any file content and any read step, it finds exactly what a plain forward reading finds — the last
//! whole line, and the length to keep (everything up to the last newline) — and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_telemetry::audit::tail_of;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else { return };
    let (keep, line) = tail_of(bytes, u64::from(step % 32) + 1).expect("short inputs never exceed the tail bound");
    let last_newline = bytes.iter().rposition(|&b| b == b'\n');
    assert_eq!(keep, last_newline.map_or(0, |i| i as u64 + 1), "keep everything up to the last newline");
    let expected = last_newline.map(|end| {
        let start = bytes[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        String::from_utf8_lossy(&bytes[start..end]).into_owned()
    });
    assert_eq!(line, expected, "the last whole line");
});
