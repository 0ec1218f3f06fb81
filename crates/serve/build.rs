//! Generates the OIP v2 gRPC server and client code from the workspace's `proto/open_inference_grpc.proto`.
//!
//! The .proto is compiled in Rust by `protox` (no `protoc` binary): a machine with only the Rust toolchain builds.
fn main() {
    const PROTO: &str = "../../proto/open_inference_grpc.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = match protox::compile([PROTO], ["../../proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("compile {PROTO}: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure().compile_fds(fds) {
        panic!("generate gRPC code from {PROTO}: {e}");
    }
}
