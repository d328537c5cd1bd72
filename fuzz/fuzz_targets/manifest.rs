//! Fuzzes the manifest parser and its rule check, and the other parsers that read bundle content:
//! trust roots, `.npy` headers and ONNX models. None may panic on any input.
#![no_main]

use airlock_signing::manifest::{Limits, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_json(data) {
        let _ = m.check(&Limits::default());
        let _ = m.payload_size();
    }
    let _ = airlock_signing::TrustRoot::from_json(data);
    let _ = airlock_signing::npy::parse("fuzz", data.to_vec());
    let _ = airlock_signing::onnx::read_model_info(data.to_vec());
});
