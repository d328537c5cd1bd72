//! Compiles the vendored Open Inference Protocol gRPC definitions (`proto/`, Triton's
//! `grpc_service.proto`, a superset of KServe's) with protox: pure Rust, no system `protoc`.
//! The raw tensor contents are `Bytes`, decoded without a copy from the request buffer.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/grpc_service.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(fds)?;
    Ok(())
}
