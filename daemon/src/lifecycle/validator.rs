//! The ONNX Runtime implementation of the updater's `Validator`: load the staged model with the
//! production provider and options, compare the contract with ONNX Runtime's own view of the
//! model, run every golden vector and compare within rtol/atol, measure latency.
//!
//! Invariant: validation uses its own session (one instance, the model's settings), never a
//! serving session, and a failure is a report, never a panic or an error that loses the report.

use std::time::Instant;

use airlock_config::{Config, Provider};
use airlock_signing::manifest::{DType, Dim};
use airlock_signing::npy::NpyArray;
use airlock_updater::validate::{
    check_vectors, CaseResult, Latency, StagedModel, ValidationReport, Validator,
};

use airlock_engine::model::run_session;
use airlock_engine::tensor::{self, Data, Tensor};
use airlock_engine::Runtime;

/// Validates staged versions with ONNX Runtime.
pub struct OrtValidator {
    runtime: &'static Runtime,
    config: Config,
}

impl OrtValidator {
    fn runs(&self) -> u32 {
        self.config.lifecycle.validation_latency_runs.max(1)
    }

    /// A validator for `config` (the model's `[serving]`/`[models]` settings decide the provider).
    pub fn new(runtime: &'static Runtime, config: Config) -> Self {
        OrtValidator { runtime, config }
    }
}

fn to_tensor(name: &str, a: &NpyArray) -> Result<Tensor, String> {
    let data = if a.header.dtype == DType::String {
        // NumPy `<U<n>`: fixed-width UTF-32; trailing NULs pad each element.
        let w = a.header.string_width * 4;
        Data::Strings(
            a.data
                .chunks(w.max(1))
                .map(|c| {
                    c.chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .take_while(|u| *u != 0)
                        .filter_map(char::from_u32)
                        .collect::<String>()
                        .into_bytes()
                })
                .collect(),
        )
    } else {
        Data::Raw(a.data.clone().into())
    };
    Tensor::new(name, a.header.dtype, a.header.shape.clone(), data)
}

/// Values as f64 for comparison (`None` for strings).
fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    let Data::Raw(b) = &t.data else { return None };
    airlock_engine::datatype::to_f64s(t.dtype, b)
}

/// Compares `got` with `want`: (passed, max abs error, max rel error, first problem).
pub fn compare(
    got: &Tensor,
    want: &Tensor,
    rtol: f64,
    atol: f64,
) -> (bool, f64, f64, Option<String>) {
    if got.shape != want.shape {
        return (
            false,
            f64::NAN,
            f64::NAN,
            Some(format!(
                "{}: shape {:?}, expected {:?}",
                got.name, got.shape, want.shape
            )),
        );
    }
    match (as_f64(got), as_f64(want)) {
        (Some(g), Some(w)) => {
            let (mut max_abs, mut max_rel, mut bad) = (0f64, 0f64, None);
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                let abs = (a - b).abs();
                let rel = if *b != 0.0 { abs / b.abs() } else { abs };
                // NaN matches NaN (same position); anything else must be within tolerance.
                let ok = (a.is_nan() && b.is_nan()) || a == b || abs <= atol + rtol * b.abs();
                if abs.is_finite() {
                    max_abs = max_abs.max(abs);
                    max_rel = max_rel.max(rel);
                }
                if !ok && bad.is_none() {
                    bad = Some(format!(
                        "{}[{i}] = {a}, expected {b} (rtol {rtol}, atol {atol})",
                        got.name
                    ));
                }
            }
            (bad.is_none(), max_abs, max_rel, bad)
        }
        _ => {
            let same = got.data == want.data;
            (
                same,
                0.0,
                0.0,
                (!same).then(|| format!("{}: strings differ", got.name)),
            )
        }
    }
}

/// Times `runs` runs at batch 1 and at `max_batch` rows (the first row of `case` repeated).
fn measure_latency(
    session: &mut ort::session::Session,
    staged: &StagedModel<'_>,
    case: &airlock_signing::manifest::GoldenVector,
    contract: &airlock_signing::manifest::Contract,
    max_batch: u64,
    runs: u32,
) -> Result<Vec<Latency>, String> {
    let (inputs, _) = staged.load_case(case)?;
    let mut rows = Vec::new();
    for spec in &contract.inputs {
        let t = to_tensor(&spec.name, &inputs[&spec.name])?;
        let first = if max_batch > 1 && t.rows() > 1 {
            tensor::split(&t, &[1, t.rows() - 1])?.swap_remove(0)
        } else {
            t
        };
        rows.push(first);
    }
    let mut out = Vec::new();
    let mut sizes = vec![1];
    if max_batch > 1 {
        sizes.push(max_batch);
    }
    for b in sizes {
        let batch: Vec<Tensor> = rows
            .iter()
            .map(|r| tensor::concat(&vec![r; b as usize]))
            .collect::<Result<_, _>>()?;
        run_session(session, &batch, contract)?; // warm-up
        let mut t = Vec::with_capacity(runs as usize);
        for _ in 0..runs {
            let start = Instant::now();
            run_session(session, &batch, contract)?;
            t.push(start.elapsed().as_secs_f64() * 1e6);
        }
        t.sort_by(|a, b| a.total_cmp(b));
        out.push(Latency {
            batch: b,
            runs,
            p50_us: percentile(&t, 0.5),
            p99_us: percentile(&t, 0.99),
        });
    }
    Ok(out)
}

/// GPU memory this process holds (MiB), from `nvidia-smi`; `None` without a GPU or the tool.
fn process_gpu_mib() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    let me = std::process::id().to_string();
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(','))
            .filter(|(pid, _)| pid.trim() == me)
            .filter_map(|(_, mib)| mib.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// A GPU property from `nvidia-smi --query-gpu` (e.g. `compute_cap`).
fn gpu_property(device: u32, what: &str) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            &format!("--query-gpu={what}"),
            "--format=csv,noheader",
            "-i",
            &device.to_string(),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks the manifest's `hardware` section against what validation used; notes every finding.
fn check_hardware(
    m: &airlock_signing::Manifest,
    provider: Provider,
    device: u32,
    gpu_before: Option<u64>,
    notes: &mut Vec<String>,
) -> bool {
    use airlock_signing::manifest::ExecutionProvider as Ep;
    let hw = &m.hardware;
    let mut ok = true;
    if hw.execution_provider == Ep::Cuda && provider != Provider::Cuda {
        ok = false;
        notes.push(format!(
            "requirement not met: the bundle requires the CUDA execution provider; this appliance ran it on {}",
            format!("{provider:?}").to_lowercase()
        ));
    }
    if let Some(min) = &hw.min_onnxruntime {
        let have = semver::Version::parse(airlock_engine::runtime::ORT_VERSION)
            .unwrap_or(semver::Version::new(0, 0, 0));
        if &have < min {
            ok = false;
            notes.push(format!(
                "requirement not met: ONNX Runtime {min} or newer is required, this appliance has {have}"
            ));
        }
    }
    if provider != Provider::Cuda {
        if hw.min_compute_capability.is_some() || hw.gpu_memory_budget_mib.is_some() {
            notes.push("GPU requirements (compute capability, memory budget) not checked: the model ran on the CPU".into());
        }
        return ok;
    }
    if let Some(min) = &hw.min_compute_capability {
        let parse = |s: &str| -> Option<(u32, u32)> {
            let (a, b) = s.trim().split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        match (gpu_property(device, "compute_cap"), parse(min)) {
            (Some(have), Some(want)) => match parse(&have) {
                Some(h) if h >= want => {
                    notes.push(format!("compute capability {have} (required {min})"))
                }
                _ => {
                    ok = false;
                    notes.push(format!("requirement not met: GPU {device} has compute capability {have}, the bundle requires {min}"));
                }
            },
            _ => notes.push(format!(
                "compute capability not checked (nvidia-smi unavailable); required {min}"
            )),
        }
    }
    if let Some(budget) = hw.gpu_memory_budget_mib {
        match (gpu_before, process_gpu_mib()) {
            (Some(before), Some(after)) => {
                let used = after.saturating_sub(before);
                if used > budget {
                    ok = false;
                    notes.push(format!("requirement not met: validation used {used} MiB of GPU memory, the budget is {budget} MiB"));
                } else {
                    notes.push(format!(
                        "GPU memory used while running: {used} MiB (budget {budget} MiB)"
                    ));
                }
            }
            _ => notes.push(format!(
                "GPU memory not measured (nvidia-smi unavailable); budget {budget} MiB"
            )),
        }
    }
    ok
}

fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    sorted_us[((sorted_us.len() - 1) as f64 * p).round() as usize]
}

impl Validator for OrtValidator {
    fn validate(&self, staged: &StagedModel<'_>) -> ValidationReport {
        let m = staged.manifest;
        let settings = self.config.serving.with(
            self.config
                .models
                .get(m.model.name.as_str())
                .unwrap_or(&Default::default()),
        );
        let mut notes = Vec::new();
        let fail = |notes: Vec<String>, cases: Vec<CaseResult>, provider: Option<String>| {
            ValidationReport {
                contract_change: None,
                latency: Vec::new(),
                passed: false,
                engine: format!("onnxruntime {}", airlock_engine::runtime::ORT_VERSION),
                provider,
                cases,
                notes,
            }
        };
        // 1. Vectors against the contract (shape and type), before spending a session on them.
        let contract_cases = check_vectors(staged);
        if contract_cases.iter().any(|c| !c.passed) {
            notes.push("golden vectors do not match the contract".into());
            return fail(notes, contract_cases, None);
        }
        // 2. A session with the production provider (and its fallback).
        let model_path = staged.dir.join(m.model_file.as_str());
        let gpu_before = process_gpu_mib();
        let mut provider = settings.execution_provider;
        let session = match self.runtime.session(&model_path, &settings, provider) {
            Ok(s) => Ok(s),
            Err(e)
                if provider == Provider::Cuda
                    && settings.on_failure == airlock_config::OnFailure::Cpu =>
            {
                notes.push(format!(
                    "CUDA unavailable ({e}); validated on CPU, as the model would serve"
                ));
                provider = Provider::Cpu;
                self.runtime.session(&model_path, &settings, provider)
            }
            Err(e) => Err(e),
        };
        let provider_name = Some(format!("{provider:?}").to_lowercase());
        let mut session = match session {
            Ok(s) => s,
            Err(e) => {
                notes.push(format!("the model does not load: {e}"));
                return fail(notes, vec![], provider_name);
            }
        };
        // 3. The contract against ONNX Runtime's own view of the model.
        let mut contract_ok = true;
        for (what, specs, outlets) in [
            ("input", &m.contract.inputs, session.inputs()),
            ("output", &m.contract.outputs, session.outputs()),
        ] {
            for spec in specs.iter() {
                match outlets.iter().find(|o| o.name() == spec.name) {
                    None => {
                        contract_ok = false;
                        notes.push(format!(
                            "the manifest's {what} '{}' is not in the model",
                            spec.name
                        ));
                    }
                    Some(o) => {
                        if let ort::value::ValueType::Tensor { ty, shape, .. } = o.dtype() {
                            if airlock_engine::datatype::from_ort(*ty) != Some(spec.dtype) {
                                contract_ok = false;
                                notes.push(format!(
                                    "{what} '{}': the model says {ty:?}, the manifest {}",
                                    spec.name, spec.dtype
                                ));
                            }
                            if let Some(dims) = &spec.shape {
                                let fixed_mismatch = dims.len() != shape.len()
                                    || dims.iter().zip(shape.iter()).any(|(d, s)| matches!(d, Dim::Fixed(n) if *s >= 0 && *n as i64 != *s));
                                if fixed_mismatch {
                                    contract_ok = false;
                                    notes.push(format!("{what} '{}': the model's shape is {:?}, the manifest says {}", spec.name, shape, spec.describe()));
                                }
                            }
                        }
                    }
                }
            }
            if outlets.len() != specs.len() {
                contract_ok = false;
                notes.push(format!(
                    "the model has {} {what}s, the manifest {}",
                    outlets.len(),
                    specs.len()
                ));
            }
        }
        // 4. Golden vectors, with latency.
        let mut cases = Vec::new();
        let mut latencies = Vec::new();
        for case in &m.vectors {
            let result = (|| -> Result<CaseResult, String> {
                let (inputs, expected) = staged.load_case(case)?;
                let tensors = m
                    .contract
                    .inputs
                    .iter()
                    .map(|s| to_tensor(&s.name, &inputs[&s.name]))
                    .collect::<Result<Vec<_>, _>>()?;
                let start = Instant::now();
                let outputs = run_session(&mut session, &tensors, &m.contract)?;
                latencies.push(start.elapsed().as_secs_f64() * 1e6);
                let (mut passed, mut max_abs, mut max_rel, mut detail) =
                    (true, 0f64, 0f64, Vec::new());
                for (name, want) in &expected {
                    let want = to_tensor(name, want)?;
                    let got = outputs
                        .iter()
                        .find(|o| &o.name == name)
                        .ok_or(format!("no output '{name}'"))?;
                    let (ok, a, r, problem) = compare(got, &want, case.rtol, case.atol);
                    passed &= ok;
                    max_abs = max_abs.max(a);
                    max_rel = max_rel.max(r);
                    detail.extend(problem);
                }
                Ok(CaseResult {
                    name: case.name.clone(),
                    passed,
                    detail: if detail.is_empty() {
                        format!("{} output(s) within tolerance", expected.len())
                    } else {
                        detail.join("; ")
                    },
                    max_abs_error: Some(max_abs),
                    max_rel_error: Some(max_rel),
                })
            })();
            cases.push(result.unwrap_or_else(|e| CaseResult {
                name: case.name.clone(),
                passed: false,
                detail: e,
                max_abs_error: None,
                max_rel_error: None,
            }));
        }
        if !latencies.is_empty() {
            let mut sorted = latencies.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            notes.push(format!(
                "latency per vector: p50 {:.0} µs, p99 {:.0} µs ({} runs)",
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.99),
                sorted.len()
            ));
        }
        // 5. Latency at batch 1 and at the maximum batch, from the first vector's first row.
        let mut latency = Vec::new();
        if let Some(case) = m.vectors.first() {
            let max = if airlock_engine::model::batchable(&m.contract) {
                u64::from(settings.max_batch_size)
            } else {
                1
            };
            match measure_latency(&mut session, staged, case, &m.contract, max, self.runs()) {
                Ok(l) => {
                    for x in &l {
                        notes.push(format!(
                            "latency at batch {}: p50 {:.0} µs, p99 {:.0} µs ({} runs)",
                            x.batch, x.p50_us, x.p99_us, x.runs
                        ));
                    }
                    latency = l;
                }
                Err(e) => notes.push(format!("latency not measured: {e}")),
            }
        }
        // 6. The manifest's hardware requirements against what this machine did.
        let hw_ok = check_hardware(m, provider, settings.device_id, gpu_before, &mut notes);
        drop(session);
        if m.vectors.is_empty() {
            notes.push(
                "the bundle has no golden vectors: only loading and the contract were checked"
                    .into(),
            );
        }
        ValidationReport {
            contract_change: None,
            latency,
            passed: contract_ok && hw_ok && cases.iter().all(|c| c.passed),
            engine: format!("onnxruntime {}", airlock_engine::runtime::ORT_VERSION),
            provider: provider_name,
            cases,
            notes,
        }
    }
}
