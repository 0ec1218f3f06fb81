//! A standalone OTLP trace receiver (the test-support one) for benchmarks: prints a JSON ready line with its gRPC
//! and HTTP endpoints, and on SIGTERM/SIGINT the number of spans received per service.

use modelgate_test_support::otlp::OtlpReceiver;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rx = OtlpReceiver::start().await;
    println!("{}", serde_json::json!({ "event": "ready", "grpc": rx.grpc, "http": rx.http }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let mut per: std::collections::BTreeMap<String, u64> = Default::default();
    for s in rx.spans() {
        *per.entry(s.service).or_default() += 1;
    }
    println!("{}", serde_json::json!({ "event": "spans", "per_service": per }));
}
