//! Path normalization (crates/pipeline/src/path.rs): never panics; what it accepts is normal — it starts with `/`,
//! has no empty, `.` or `..` segment, no raw `\` or `;` — and normalizing it again changes nothing, so routing and
//! the upstream can never see two spellings of one path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_pipeline::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(once) = normalize(input) else { return };
    assert!(once.starts_with('/'), "{input:?} → {once:?}");
    let inner = once.trim_end_matches('/');
    for seg in inner.split('/').skip(1) {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{input:?} → {once:?}");
    }
    assert!(!once.contains(['\\', ';']), "{input:?} → {once:?}");
    let twice = normalize(&once).expect("a normal path stays valid");
    assert_eq!(once, twice, "not idempotent for {input:?}");
});
