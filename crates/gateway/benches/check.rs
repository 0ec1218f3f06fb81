//! The CPU cost of one allowed `modelgate authz` decision — API key + policy + a local rate limit, every phase from
//! match to log (metrics included), the identity headers answered — without the HTTP exchange around it (issue 21's
//! "≤ 5 µs CPU per allowed check"). One thread, checks back to back; prints the mean and the best of 5 rounds.
//!
//! `cargo bench -p modelgate-gateway --bench check` (release profile; `-- N` for N checks per round).
#![allow(clippy::disallowed_methods, reason = "a benchmark reads the clock and its own arguments")]

use std::time::Instant;

use modelgate_config::{Source, Vars};
use modelgate_gateway::driver::decide;
use modelgate_gateway::snapshot::{Registries, Snapshot};
use modelgate_pipeline::peer::Peer;

fn main() {
    let n: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (key, _) =
        modelgate_auth::identity::apikey::create_in(&dir.path().join("keys.yaml"), "bench", vec![], vec![], None).expect("a key file");
    let yaml = r#"listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity: { api_keys: { file: keys.yaml } }
routes:
  - name: checked
    match: { path_prefix: /v2/models/digits }
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [bench], models: [digits] } ] }
      - rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] }
"#;
    std::fs::write(dir.path().join("authz.yaml"), yaml).expect("write the config");
    let config = modelgate_config::load(&Source::File(dir.path().join("authz.yaml")), &Vars::default()).expect("a valid config");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let _guard = rt.enter();
    let mut registries = Registries { checks_only: true, ..Registries::default() };
    let snap = Snapshot::compile(config, &mut registries).expect("the config compiles");
    let peer = Peer::new("127.0.0.1:40000".parse().expect("an address"));
    let request = || {
        let (mut parts, ()) = http::Request::post("/v2/models/digits/infer").body(()).expect("a request").into_parts();
        parts.headers.insert(http::header::HOST, http::HeaderValue::from_static("models.example"));
        parts.headers.insert("x-api-key", key.parse().expect("a header value"));
        parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        parts
    };
    rt.block_on(async {
        let mut best = f64::MAX;
        let mut total = 0.0;
        for round in 0..5 {
            let started = Instant::now();
            for _ in 0..n {
                let answer = decide(&snap, request(), peer.clone()).await;
                assert_eq!(answer.status(), 200);
            }
            let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            println!("round {round}: {per:.2} µs per allowed check ({n} checks)");
            best = best.min(per);
            total += per;
        }
        println!("allowed check (API key + policy + local rate limit, no HTTP): mean {:.2} µs, best {best:.2} µs", total / 5.0);
    });
}
