//! What the gateway reads of an OIP v2 inference request (crates/pipeline/src/oip.rs), JSON and the binary
//! extension: never panics, and what it counts does not overflow (batch items, elements).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_pipeline::oip;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the binary extension's JSON length (as `Inference-Header-Content-Length` would).
    let Some((&first, body)) = data.split_first() else { return };
    let json_len = (first & 1 == 1).then(|| usize::from(first >> 1).min(body.len()));
    if let Ok(s) = oip::parse(body, json_len) {
        let _ = (s.batch_items(), s.elements());
        for i in &s.inputs {
            let _ = oip::elements(&i.shape);
        }
    }
});
