//! The gRPC front end, being built: so far the Open Inference Protocol's messages and the
//! `inference.GRPCInferenceService` trait generated from the vendored protos. The service over
//! the engine's `Infer` comes next; like `http`, no other module of the daemon will import it.

/// The messages and the service trait generated from `daemon/proto/grpc_service.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn raw_tensor_contents_decode_as_slices_of_the_request_buffer() {
        let sent = super::pb::ModelInferRequest {
            model_name: "m".into(),
            raw_input_contents: vec![bytes::Bytes::from_static(&[1, 2, 3, 4])],
            ..Default::default()
        };
        let wire = bytes::Bytes::from(sent.encode_to_vec());
        let got = super::pb::ModelInferRequest::decode(wire.clone()).expect("decodes");
        let raw: &bytes::Bytes = &got.raw_input_contents[0];
        assert_eq!(&raw[..], &[1, 2, 3, 4]);
        // Zero-copy: the field points into the buffer it was decoded from.
        let within = wire.as_ptr_range();
        assert!(
            within.contains(&raw.as_ptr()),
            "raw_input_contents was copied"
        );
    }
}
