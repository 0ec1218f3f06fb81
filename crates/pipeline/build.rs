//! Generates the OIP v2 gRPC message types the gateway decodes (`ModelInferRequest`, `ModelReadyRequest`, …) from
//! the workspace's `proto/open_inference_grpc.proto`: messages only, no service code, `bytes` fields as
//! [`bytes::Bytes`] so decoding a buffered message copies no tensor data.
//!
//! The .proto is compiled in Rust by `protox` (no `protoc` binary).
fn main() {
    const PROTO: &str = "../../proto/open_inference_grpc.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = match protox::compile([PROTO], ["../../proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("compile {PROTO}: {e}"),
    };
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    if let Err(e) = config.compile_fds(fds) {
        panic!("generate message types from {PROTO}: {e}");
    }
}
