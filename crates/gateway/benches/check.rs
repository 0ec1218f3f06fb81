//! The CPU cost of one allowed `modelgate authz` decision — API key + policy + a local rate limit, every phase from
//! match to log (metrics included), the identity headers answered — without the HTTP exchange around it (issue 21's
//! "≤ 5 µs CPU per allowed check"). One thread, checks back to back; prints the mean and the best of 5 rounds, in CPU time (and wall time). Requests
//! are built in batches before the clock starts for each batch (in the service, hyper parses them), so a round times the
//! decisions alone: match, the phases, the answer's headers, metrics, and dropping the request and the answer.
//!
//! `cargo bench -p modelgate-gateway --bench check` (release profile; `-- N` for N checks per round).
#![allow(clippy::disallowed_methods, reason = "a benchmark reads the clock and its own arguments")]

use std::time::Instant;

use modelgate_config::{Source, Vars};
use modelgate_gateway::driver::decide;
use modelgate_gateway::snapshot::{Registries, Snapshot};
use modelgate_pipeline::peer::Peer;

/// Requests built ahead of each timed stretch.
const BATCH: u32 = 256;

fn main() {
    let n: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(50_000);
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
    // A request as hyper hands it over: one read buffer, each header value a shared slice of it, names parsed
    // (a custom name copied), the map sized to the headers.
    let head = bytes::Bytes::from(format!("models.example{key}application/json*/*curl/8.5.0"));
    let request = || {
        let (mut parts, ()) = http::Request::post("/v2/models/digits/infer").body(()).expect("a request").into_parts();
        let mut at = 0;
        let mut value = |len: usize| {
            at += len;
            http::HeaderValue::from_maybe_shared(head.slice(at - len..at)).expect("a header value")
        };
        parts.headers = http::HeaderMap::with_capacity(5);
        for (name, len) in [("host", 14), ("x-api-key", key.len()), ("content-type", 16), ("accept", 3), ("user-agent", 10)] {
            parts.headers.append(http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"), value(len));
        }
        parts
    };
    rt.block_on(async {
        // Warm-up: the limit's counter, the metric handles and the principal's identity headers are made once.
        for _ in 0..2_000 {
            assert_eq!(decide(&snap, request(), peer.clone()).await.status(), 200);
        }
        let (mut best, mut total) = (f64::MAX, 0.0);
        for round in 0..5 {
            let (mut wall, mut cpu) = (std::time::Duration::ZERO, 0);
            // In batches small enough to stay in cache, as a server's requests are.
            for _ in 0..n / BATCH {
                let requests: Vec<_> = (0..BATCH).map(|_| request()).collect();
                let (started, cpu_from) = (Instant::now(), thread_cpu_ns());
                for parts in requests {
                    let answer = decide(&snap, parts, peer.clone()).await;
                    assert_eq!(answer.status(), 200);
                }
                (wall, cpu) = (wall + started.elapsed(), cpu + thread_cpu_ns() - cpu_from);
            }
            let n = n / BATCH * BATCH;
            let wall = wall.as_secs_f64() * 1e6 / f64::from(n);
            let per = cpu as f64 / 1e3 / f64::from(n);
            println!("round {round}: {per:.2} µs CPU ({wall:.2} µs wall) per allowed check ({n} checks)");
            best = best.min(per);
            total += per;
        }
        println!("allowed check (API key + policy + local rate limit, no HTTP): mean {:.2} µs CPU, best {best:.2} µs", total / 5.0);
    });
}

/// This thread's time on a CPU so far, in nanoseconds (Linux `/proc/thread-self/schedstat`): what a round costs
/// even when other processes share the cores.
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    stat.split_whitespace().next().and_then(|v| v.parse().ok()).expect("the run time in ns")
}
