//! Validation in a process of its own: a signed model is still code the appliance has not run
//! before (a `Loop` with a trip count of 10¹², an allocation that never ends), so ONNX Runtime
//! validates it in a child `airlockd --validate-worker` that the daemon watches: it is killed
//! when it runs longer than `[lifecycle] validation_timeout`, holds more resident memory than
//! `validation_memory`, when its version is rejected, or when the daemon goes away; the
//! validation then fails with the reason, like any other failed validation.
//!
//! Invariant: the worker gets the configuration, the verified manifest and the store directory
//! on stdin and writes one report on stdout; it opens nothing else of the daemon's (not the
//! state database, which one process holds).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::Config;
use airlock_signing::manifest::Manifest;
use airlock_updater::validate::{StagedModel, ValidationReport, Validator};
use serde::{Deserialize, Serialize};

/// What the worker is asked to do.
#[derive(Serialize, Deserialize)]
struct Request {
    config: String,
    manifest: Manifest,
    dir: PathBuf,
}

/// How far one validation may go.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    /// Wall-clock time.
    pub timeout: Duration,
    /// Resident memory of the worker, bytes.
    pub memory: u64,
}

impl ValidationLimits {
    /// From `[lifecycle]`.
    pub fn from_config(l: &airlock_config::Lifecycle) -> Self {
        ValidationLimits {
            timeout: l.validation_timeout.get(),
            memory: l.validation_memory.0,
        }
    }
}

/// Runs validations in worker processes.
pub struct SandboxedValidator {
    exe: PathBuf,
    config: Config,
    /// Cancellation flags of the validations running, by (model, version).
    running: Mutex<HashMap<(String, String), Arc<AtomicBool>>>,
}

fn failed(why: String) -> ValidationReport {
    ValidationReport {
        contract_change: None,
        latency: Vec::new(),
        passed: false,
        engine: format!("onnxruntime {}", airlock_engine::runtime::ORT_VERSION),
        provider: None,
        cases: Vec::new(),
        notes: vec![why],
    }
}

fn resident_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl SandboxedValidator {
    /// Workers run this executable (`airlockd` itself) with `config` (one intra-op thread).
    pub fn new(config: Config) -> Self {
        SandboxedValidator {
            // /proc/self/exe, resolved when the worker is started, is this executable too.
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            config,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Stops the validation of `model` `version` if one is running (its report says why).
    pub fn cancel(&self, model: &str, version: &str) -> bool {
        match self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(model.to_string(), version.to_string()))
        {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Validates `staged` in a worker under `limits`.
    pub fn run(&self, staged: &StagedModel<'_>, limits: ValidationLimits) -> ValidationReport {
        let m = staged.manifest;
        let key = (m.model.name.to_string(), m.model.version.to_string());
        let cancel = Arc::new(AtomicBool::new(false));
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), cancel.clone());
        let report = self.supervise(staged, limits, &cancel);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        report
    }

    fn supervise(
        &self,
        staged: &StagedModel<'_>,
        limits: ValidationLimits,
        cancel: &AtomicBool,
    ) -> ValidationReport {
        let m = staged.manifest;
        let request = Request {
            config: self.config.to_toml(),
            manifest: m.clone(),
            dir: staged.dir.to_path_buf(),
        };
        let Ok(request) = serde_json::to_vec(&request) else {
            return failed("cannot hand the validation to a worker".into());
        };
        let mut child = match Command::new(&self.exe)
            .arg("--validate-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start the validation worker: {e}")),
        };
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            if stdin.write_all(&request).is_err() {
                let _ = child.kill();
                let _ = child.wait();
                return failed("the validation worker did not take its task".into());
            }
        }
        // The report, read as it comes (bounded), so that a full pipe cannot stall the worker.
        let out = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(o) = out {
                let _ = o.take(64 << 20).read_to_end(&mut buf);
            }
            buf
        });
        let start = Instant::now();
        let mut peak = 0u64;
        let stop = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(format!("cannot watch the validation worker: {e}")),
            }
            if let Some(rss) = resident_bytes(pid) {
                peak = peak.max(rss);
                if rss > limits.memory {
                    break Err(format!(
                        "validation stopped: the model used more than {} MiB of memory ([lifecycle] validation_memory)",
                        limits.memory >> 20
                    ));
                }
            }
            if start.elapsed() > limits.timeout {
                break Err(format!(
                    "validation stopped: it ran longer than {} s ([lifecycle] validation_timeout)",
                    limits.timeout.as_secs()
                ));
            }
            if cancel.load(Ordering::SeqCst) {
                break Err("validation stopped: the version was rejected while it ran".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        match stop {
            Ok(status) => {
                let out = reader.join().unwrap_or_default();
                match serde_json::from_slice::<ValidationReport>(&out) {
                    Ok(r) if status.success() => r,
                    _ => {
                        use std::os::unix::process::ExitStatusExt;
                        let how = match (status.code(), status.signal()) {
                            (_, Some(sig)) => format!("was killed by signal {sig}"),
                            (Some(c), None) => format!("exited with status {c}"),
                            _ => "ended".into(),
                        };
                        failed(format!("the validation worker {how} without a report"))
                    }
                }
            }
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                tracing::warn!(
                    model = %m.model.name,
                    version = %m.model.version,
                    seconds = start.elapsed().as_secs(),
                    peak_mib = peak >> 20,
                    "{why}"
                );
                failed(why)
            }
        }
    }
}

impl Validator for SandboxedValidator {
    fn validate(&self, staged: &StagedModel<'_>) -> ValidationReport {
        self.run(
            staged,
            ValidationLimits::from_config(&self.config.lifecycle),
        )
    }
}

/// `airlockd --validate-worker`: one validation, from stdin to stdout. Dies with the daemon.
pub fn worker() -> anyhow::Result<()> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let mut input = Vec::new();
    std::io::stdin().take(64 << 20).read_to_end(&mut input)?;
    let req: Request = serde_json::from_slice(&input)?;
    let config: Config = toml::from_str(&req.config)?;
    let runtime = airlock_engine::Runtime::get(&config)?;
    let report = super::validator::OrtValidator::new(runtime, config).validate(&StagedModel {
        manifest: &req.manifest,
        dir: &req.dir,
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    out.flush()?;
    Ok(())
}
