//! Generates the OIP v2 gRPC server and client code from `proto/open_inference_grpc.proto` (needs `protoc`).
fn main() {
    println!("cargo:rerun-if-changed=proto/open_inference_grpc.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/open_inference_grpc.proto"], &["proto"])
        .expect("compile proto/open_inference_grpc.proto (is protoc installed? apt-get install protobuf-compiler)");
}
