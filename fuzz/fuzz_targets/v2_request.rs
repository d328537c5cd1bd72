//! Fuzzes the Open Inference Protocol v2 request parser (JSON tensors and the binary tensor data
//! extension) against real contracts — the demo classifier's (FP32 [batch, 4]) and a BYTES
//! model's, both read from real ONNX files — and the response encoder on what it accepts. No
//! input may panic; an accepted request holds exactly the tensors its contract allows; decoding
//! never takes more than the budget.
#![no_main]

use std::sync::OnceLock;

use airlock_signing::manifest::Contract;
use airlockd::http::wire::{encode_response, parse_request, Answering};
use libfuzzer_sys::fuzz_target;

fn contracts() -> &'static [Contract] {
    static C: OnceLock<Vec<Contract>> = OnceLock::new();
    C.get_or_init(|| {
        let demo = airlock_signing::onnx::demo_files().0;
        [demo, airlock_signing::onnx::string_identity()]
            .into_iter()
            .map(|m| airlock_signing::onnx::read_model_info(m).expect("a real model").contract)
            .collect()
    })
}

const BUDGET: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the JSON header ends and the binary data begins.
    let (split, body) = match data {
        [a, b, rest @ ..] => ((usize::from(*a) << 8 | usize::from(*b)) % (rest.len() + 1), rest),
        _ => return,
    };
    let (header, binary) = body.split_at(split);
    for c in contracts() {
        match parse_request(c, header, bytes::Bytes::copy_from_slice(binary), BUDGET) {
            Ok(r) => {
                assert_eq!(r.inputs.len(), c.inputs.len());
                for (t, spec) in r.inputs.iter().zip(&c.inputs) {
                    assert_eq!(t.name, spec.name);
                    assert_eq!(t.dtype, spec.dtype);
                }
                assert!(r.outputs.len() <= c.outputs.len());
                let who = Answering {
                    model: "m",
                    version: "1.0.0",
                    digest: "d",
                    id: r.id.as_deref(),
                    degraded_request_for: None,
                };
                let wanted: Vec<(usize, bool)> =
                    (0..r.inputs.len()).map(|i| (i, i % 2 == 1)).collect();
                if let Ok((out, json)) = encode_response(&who, &r.inputs, &wanted, 4 << 20) {
                    let end = json.unwrap_or(out.len());
                    assert!(serde_json::from_slice::<serde_json::Value>(&out[..end]).is_ok());
                }
            }
            Err(e) => {
                assert!(matches!(e.kind(), "bad_request" | "too_large"), "{e:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
