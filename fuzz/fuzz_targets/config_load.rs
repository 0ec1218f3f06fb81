//! Config parsing and validation (crates/config): any YAML text gives a config or errors that name a file and a
//! YAML path, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_config::{Source, Vars, load};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = Source::Inline { name: "fuzz.yaml".into(), text: text.into() };
    if let Err(errors) = load(&source, &Vars::default()) {
        assert!(!errors.0.is_empty());
    }
});
