//! Generates the messages of Envoy's external authorization API (`envoy.service.auth.v3`, which `modelgate authz`
//! answers over gRPC) from the workspace's `proto/envoy/…` files.
//!
//! The .proto files are compiled in Rust by `protox` (no `protoc` binary): a machine with only the Rust toolchain
//! builds. Only the messages are generated; the one RPC is framed by hand in `src/authz/envoy.rs`, on the proxy
//! listener's own HTTP/2 connection handling.
fn main() {
    const PROTO: &str = "../../proto/envoy/service/auth/v3/external_auth.proto";
    println!("cargo:rerun-if-changed=../../proto/envoy");
    println!("cargo:rerun-if-changed=../../proto/google/rpc");
    let fds = match protox::compile([PROTO], ["../../proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("compile {PROTO}: {e}"),
    };
    if let Err(e) = prost_build::Config::new().bytes(["."]).include_file("envoy_authz.rs").compile_fds(fds) {
        panic!("generate the messages of {PROTO}: {e}");
    }
}
