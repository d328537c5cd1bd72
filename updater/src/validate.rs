//! Validation of a staged version: the [`Validator`] trait (the daemon implements it with ONNX
//! Runtime on the real execution provider), the report it produces, and the contract check of
//! the golden vectors that every validator runs first.
//!
//! API boundary: this crate knows nothing about ONNX Runtime; it only defines what a validation
//! must report and checks what can be checked without executing the model.

use std::collections::BTreeMap;
use std::path::Path;

use airlock_signing::manifest::{GoldenVector, Manifest};
use airlock_signing::npy::{self, NpyArray};

/// Arrays by tensor name.
pub type Tensors = BTreeMap<String, NpyArray>;

/// A staged version as a validator sees it.
#[derive(Debug, Clone, Copy)]
pub struct StagedModel<'a> {
    /// The verified manifest.
    pub manifest: &'a Manifest,
    /// The store directory holding the payload files at their bundle paths.
    pub dir: &'a Path,
}

impl StagedModel<'_> {
    /// Loads one golden vector's arrays: (inputs, expected), by tensor name.
    pub fn load_case(&self, case: &GoldenVector) -> Result<(Tensors, Tensors), String> {
        let load = |m: &BTreeMap<String, airlock_signing::BundlePath>| {
            m.iter()
                .map(|(t, p)| {
                    npy::read(&self.dir.join(p.as_str()))
                        .map(|a| (t.clone(), a))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<BTreeMap<_, _>, String>>()
        };
        Ok((load(&case.inputs)?, load(&case.expected)?))
    }
}

/// The report and its parts are defined with the API's types: what is stored is what approvers
/// are shown, byte for byte (a signed approval covers the report's SHA-256).
pub use airlock_api::{CaseResult, Latency, ValidationReport};

/// Validates a staged version. Implementations must bound their resources and must not disturb
/// serving beyond their configured share.
pub trait Validator {
    /// Produces a report; failures are reported, not returned as errors.
    fn validate(&self, model: &StagedModel<'_>) -> ValidationReport;
}

/// Checks every golden vector against the contract: each input present, every array's element
/// type and shape compatible with the contract, named dimensions consistent within a case.
pub fn check_vectors(model: &StagedModel<'_>) -> Vec<CaseResult> {
    let m = model.manifest;
    m.vectors
        .iter()
        .map(|case| {
            let verdict = (|| -> Result<String, String> {
                let (inputs, expected) = model.load_case(case)?;
                let mut bindings = BTreeMap::new();
                for spec in &m.contract.inputs {
                    let arr = inputs
                        .get(&spec.name)
                        .ok_or_else(|| format!("input {} has no array", spec.name))?;
                    npy::check_against_spec(spec, &arr.header, &mut bindings)?;
                }
                for (name, arr) in &expected {
                    let spec = m
                        .contract
                        .outputs
                        .iter()
                        .find(|s| &s.name == name)
                        .ok_or_else(|| format!("{name} is not an output"))?;
                    npy::check_against_spec(spec, &arr.header, &mut bindings)?;
                }
                Ok(format!(
                    "{} input(s), {} expected output(s) match the contract",
                    inputs.len(),
                    expected.len()
                ))
            })();
            match verdict {
                Ok(detail) => CaseResult {
                    name: case.name.clone(),
                    passed: true,
                    detail,
                    max_abs_error: None,
                    max_rel_error: None,
                },
                Err(detail) => CaseResult {
                    name: case.name.clone(),
                    passed: false,
                    detail,
                    max_abs_error: None,
                    max_rel_error: None,
                },
            }
        })
        .collect()
}

/// A validator that checks the vectors against the contract without executing the model. It is
/// the first stage of every real validator; on its own it is what `airlockd --dev` uses until the
/// serving engine exists, and what the updater's tests use.
#[derive(Debug, Default, Clone, Copy)]
pub struct ContractValidator;

impl Validator for ContractValidator {
    fn validate(&self, model: &StagedModel<'_>) -> ValidationReport {
        let cases = check_vectors(model);
        let mut notes =
            vec!["the model was not executed: contract and vector shapes only".to_string()];
        if cases.is_empty() {
            notes.push("the bundle has no golden vectors".into());
        }
        ValidationReport {
            contract_change: None,
            latency: Vec::new(),
            passed: cases.iter().all(|c| c.passed),
            engine: "contract-check".into(),
            provider: None,
            cases,
            notes,
        }
    }
}
