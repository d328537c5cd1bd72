//! A loaded model version: N ONNX Runtime sessions on dedicated threads serving one
//! [`Queue`], with the provider chosen by the settings (CUDA, and on its failure what
//! `on_failure` says: CPU, another model, a refusal, or waiting for recovery) and self-healing
//! after fatal run-time errors.
//!
//! Invariant: ONNX Runtime is only ever called from these threads, never from the async
//! runtime; a version is released (its threads joined, its sessions freed) only by `unload`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use airlock_config::{OnFailure, Provider, Serving};
use airlock_signing::manifest::{Contract, Dim, Manifest};
use ort::session::Session;

use crate::batcher::{BatchPolicy, Executor, Queue, RunError};
use crate::error::InferError;
use crate::infer::RequestObserver;
use crate::runtime::{EngineError, Runtime};
use crate::tensor::{self, Tensor};

/// A model version loaded for serving.
pub struct LoadedModel {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: semver::Version,
    /// SHA-256 of the manifest (the bundle's content address).
    pub digest: String,
    /// The contract.
    pub contract: Contract,
    /// The settings it runs with.
    pub settings: Serving,
    /// Whether requests are batched (every input and output has a dynamic first dimension).
    pub batched: bool,
    /// The provider actually in use.
    pub provider: Provider,
    /// Why the model runs degraded (CUDA unavailable: on CPU, via a fallback model, or
    /// waiting for recovery), if it does.
    degraded: Mutex<Option<String>>,
    /// `on_failure = "model:NAME"` after a GPU failure: requests go to this model.
    pub fallback: Option<String>,
    /// `on_failure = "fail"` after a GPU failure: why every request is refused with 503.
    pub unavailable: Option<String>,
    /// The queue its instances serve, with the counters.
    queue: Arc<Queue>,
    /// Requests between routing and their answer (see [`LoadedModel::enter`]).
    in_flight: AtomicUsize,
    stopped: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// What the metrics see of its requests (made on first use).
    observer: OnceLock<Arc<dyn RequestObserver>>,
}

/// A request using a model version (from routing to its answer): the drain guard.
pub struct InFlight(Arc<LoadedModel>);

impl InFlight {
    /// The version in use.
    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a contract allows batching along dimension 0.
pub fn batchable(c: &Contract) -> bool {
    let dynamic_first = |s: &airlock_signing::manifest::TensorSpec| {
        matches!(
            s.shape.as_deref().and_then(|d| d.first()),
            Some(Dim::Named(_)) | Some(Dim::Any(()))
        )
    };
    c.inputs.iter().chain(&c.outputs).all(dynamic_first)
}

impl LoadedModel {
    /// Loads `manifest`'s model from `dir`, builds `settings.instances` sessions (with the
    /// configured provider and fallback), warms them up, and starts their threads.
    pub fn load(
        runtime: &'static Runtime,
        manifest: &Manifest,
        dir: PathBuf,
        digest: String,
        settings: Serving,
    ) -> Result<Arc<LoadedModel>, EngineError> {
        let model_path = dir.join(manifest.model_file.as_str());
        let name = manifest.model.name.to_string();
        let (mut provider, mut degraded) = (settings.execution_provider, None);
        let (mut fallback, mut unavailable, mut recover) = (None, None, false);
        let mut sessions = Vec::new();
        match runtime.session(&model_path, &settings, provider) {
            Ok(s) => sessions.push(s),
            // The GPU path failed: the model's on_failure decides, visibly (degraded).
            Err(e) if provider == Provider::Cuda => {
                tracing::warn!(model = %name, error = %e, on_failure = ?settings.on_failure, "the CUDA path failed");
                match &settings.on_failure {
                    OnFailure::Cpu => {
                        degraded = Some(format!("CUDA unavailable ({e}); running on CPU"));
                        provider = Provider::Cpu;
                        sessions.push(runtime.session(&model_path, &settings, provider)?);
                    }
                    OnFailure::Fail => {
                        unavailable =
                            Some(format!("model {name} is unavailable: CUDA failed ({e})"));
                        degraded = unavailable.clone();
                    }
                    OnFailure::Model(other) => {
                        degraded = Some(format!(
                            "CUDA unavailable ({e}); answered by fallback model {other}"
                        ));
                        fallback = Some(other.clone());
                    }
                    OnFailure::Queue => {
                        degraded = Some(format!("CUDA unavailable ({e}); requests wait for recovery until their deadline"));
                        recover = true;
                    }
                }
            }
            Err(e) => return Err(e),
        }
        if !sessions.is_empty() {
            for i in 1..settings.instances {
                sessions.push(runtime.session(&model_path, &settings, provider)?);
                tracing::debug!(model = %name, instance = i, "session built");
            }
        }
        let batched = batchable(&manifest.contract) && settings.max_batch_size > 1;
        let version = manifest.model.version.clone();
        let queue = Arc::new(Queue::new(
            &name,
            &version.to_string(),
            settings.queue_capacity as usize,
            settings.instances,
            BatchPolicy {
                batched,
                max_batch_size: settings.max_batch_size,
                preferred: settings.preferred_batch_sizes.clone(),
                max_queue_delay: settings.max_queue_delay.get(),
            },
        ));
        let model = Arc::new(LoadedModel {
            name: name.clone(),
            version,
            digest,
            contract: manifest.contract.clone(),
            settings: settings.clone(),
            batched,
            provider,
            degraded: Mutex::new(degraded),
            fallback,
            unavailable,
            queue,
            in_flight: AtomicUsize::new(0),
            stopped: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            observer: OnceLock::new(),
        });
        let start = Starter {
            model: model.clone(),
            faults: Arc::new(Faults::from_env(&name)),
            runtime,
            model_path,
        };
        if recover {
            // on_failure = "queue": requests wait (bounded queue, their own deadlines) while a
            // background thread keeps trying to build the CUDA sessions; it is joined by unload.
            let handle = std::thread::Builder::new()
                .name(format!("recover-{name}"))
                .spawn(move || start.recover())
                .map_err(|e| {
                    EngineError::Session(format!("cannot start the recovery thread: {e}"))
                })?;
            model
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        } else {
            start.start(sessions)?;
        }
        tracing::info!(model = %name, version = %model.version, provider = ?model.provider, batched, instances = settings.instances, degraded = ?model.degraded(), "model loaded");
        Ok(model)
    }

    /// The observer of this version's requests, made by `make` on first use.
    pub fn observer(
        &self,
        make: impl FnOnce() -> Arc<dyn RequestObserver>,
    ) -> Arc<dyn RequestObserver> {
        self.observer.get_or_init(make).clone()
    }

    /// Why the model is degraded, if it is.
    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether at least one instance can run requests.
    pub fn ready(&self) -> bool {
        self.queue.ready_instances() > 0 && !self.stopped.load(Ordering::SeqCst)
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    /// The counters.
    pub fn stats(&self) -> &crate::batcher::Stats {
        &self.queue.stats
    }

    /// Queues a request; a full queue is refused at once with a retry estimate.
    pub fn submit(&self, job: crate::batcher::Job) -> Result<(), InferError> {
        if let Some(reason) = &self.unavailable {
            return Err(InferError::Unavailable(reason.clone()));
        }
        self.queue.submit(job)
    }

    /// Marks a request as using this version until the guard drops: a replaced version is
    /// released only when none is left (or the drain timeout passed).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Requests using this version now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting work, lets queued work finish, and joins the threads (frees the sessions).
    pub fn unload(&self) {
        self.queue.close();
        let handles: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
        // A recovery that started instances while we joined: join those too.
        let late: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in late {
            let _ = h.join();
        }
        self.stopped.store(true, Ordering::SeqCst);
        tracing::info!(model = %self.name, version = %self.version, "model unloaded");
    }
}

/// Starts instance threads for a model, now or once its sessions can be built.
struct Starter {
    model: Arc<LoadedModel>,
    faults: Arc<Faults>,
    runtime: &'static Runtime,
    model_path: PathBuf,
}

impl Starter {
    fn start(&self, sessions: Vec<Session>) -> Result<(), EngineError> {
        let m = &self.model;
        for (i, mut session) in sessions.into_iter().enumerate() {
            warm_up(&mut session, &m.contract, m.settings.warmup_runs);
            let exec = OrtExecutor {
                session,
                faults: self.faults.clone(),
                model: m.clone(),
                runtime: self.runtime,
                model_path: self.model_path.clone(),
            };
            m.queue.instance_ready();
            let queue = m.queue.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ort-{}-{i}", m.name))
                .spawn(move || queue.serve(exec))
                .map_err(|e| EngineError::Session(format!("cannot start a session thread: {e}")))?;
            m.threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        }
        Ok(())
    }

    /// Retries the configured provider with backoff until it works or the model is unloaded.
    fn recover(self) {
        let m = self.model.clone();
        let mut wait = Duration::from_millis(500);
        while !m.stopped.load(Ordering::SeqCst) && m.queue.is_open() {
            let built: Result<Vec<Session>, EngineError> = (0..m.settings.instances)
                .map(|_| {
                    self.runtime
                        .session(&self.model_path, &m.settings, m.provider)
                })
                .collect();
            match built {
                Ok(sessions) => {
                    // Unloaded while the sessions were built: nothing to start.
                    if !m.queue.is_open() {
                        return;
                    }
                    if self.start(sessions).is_ok() {
                        *m.degraded.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        tracing::info!(model = %m.name, "recovered: the CUDA sessions are up");
                    }
                    return;
                }
                Err(e) => tracing::debug!(model = %m.name, error = %e, "recovery attempt failed"),
            }
            // Sleeps in short steps so that an unload does not wait for the backoff.
            let until = std::time::Instant::now() + wait;
            while std::time::Instant::now() < until && m.queue.is_open() {
                std::thread::sleep(Duration::from_millis(50));
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
}

/// Runs zero-filled inputs through a fresh session so the first request does not pay for it.
fn warm_up(session: &mut Session, c: &Contract, runs: u32) {
    if runs == 0 {
        return;
    }
    let inputs: Option<Vec<Tensor>> = c
        .inputs
        .iter()
        .map(|s| {
            let shape: Vec<u64> = s
                .shape
                .as_ref()?
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    _ => 1,
                })
                .collect();
            let n = tensor::elements(&shape) as usize;
            let data = match s.dtype.size() {
                Some(size) => tensor::Data::Raw(vec![0; n * size].into()),
                None => tensor::Data::Strings(vec![Vec::new(); n]),
            };
            Tensor::new(&s.name, s.dtype, shape, data).ok()
        })
        .collect();
    let Some(inputs) = inputs else { return };
    for _ in 0..runs {
        if let Err(e) = run_session(session, &inputs, c) {
            tracing::warn!(error = %e, "warm-up run failed");
            return;
        }
    }
}

/// Runs one set of inputs; outputs come back in the contract's order.
pub fn run_session(
    session: &mut Session,
    inputs: &[Tensor],
    c: &Contract,
) -> Result<Vec<Tensor>, RunError> {
    let mut values = Vec::with_capacity(inputs.len());
    for t in inputs {
        values.push((
            t.name.as_str(),
            tensor::to_ort(t).map_err(|e| RunError {
                client: true,
                fatal: false,
                message: format!("input '{}': {e}", t.name),
            })?,
        ));
    }
    let outputs = session.run(values).map_err(|e| {
        let message = e.to_string();
        RunError {
            client: e.code() == ort::error::ErrorCode::InvalidArgument,
            fatal: looks_fatal(&message),
            message,
        }
    })?;
    Ok(c.outputs
        .iter()
        .map(|o| {
            let v = outputs
                .get(&o.name)
                .ok_or_else(|| format!("the model produced no output '{}'", o.name))?;
            tensor::from_ort(&o.name, v)
        })
        .collect::<Result<Vec<_>, String>>()?)
}

/// Fault-injection points for the failure tests, read from the environment in debug builds
/// only (release builds ignore the variables):
/// - `AIRLOCK_FAULT_RUN_ERROR=<model>`: the first run of that model fails as a CUDA arena /
///   out-of-memory error would (the session is then rebuilt);
/// - `AIRLOCK_FAULT_RUN_DELAY_MS=<ms>`: every run sleeps that long first (to fill queues).
#[derive(Debug, Default)]
struct Faults {
    run_error: AtomicBool,
    delay: Option<Duration>,
}

impl Faults {
    fn from_env(model: &str) -> Faults {
        if !cfg!(debug_assertions) {
            return Faults::default();
        }
        Faults {
            run_error: AtomicBool::new(
                std::env::var("AIRLOCK_FAULT_RUN_ERROR").is_ok_and(|m| m == model),
            ),
            delay: std::env::var("AIRLOCK_FAULT_RUN_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
        }
    }
}

/// One instance: an ONNX Runtime session, rebuilt in place after a fatal error.
struct OrtExecutor {
    session: Session,
    faults: Arc<Faults>,
    model: Arc<LoadedModel>,
    runtime: &'static Runtime,
    model_path: PathBuf,
}

impl Executor for OrtExecutor {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        if let Some(d) = self.faults.delay {
            std::thread::sleep(d);
        }
        if self.faults.run_error.swap(false, Ordering::SeqCst) {
            return Err(RunError {
                client: false,
                fatal: true,
                message: "injected fault: CUDA failure 2: out of memory (arena)".into(),
            });
        }
        run_session(&mut self.session, inputs, &self.model.contract)
    }

    /// Self-healing: after an arena or out-of-memory failure the session is rebuilt.
    fn rebuild(&mut self) -> bool {
        let m = &self.model;
        for attempt in 1..=5u32 {
            match self
                .runtime
                .session(&self.model_path, &m.settings, m.provider)
            {
                Ok(mut s) => {
                    warm_up(&mut s, &m.contract, m.settings.warmup_runs);
                    self.session = s;
                    tracing::info!(model = %m.name, attempt, "session rebuilt");
                    return true;
                }
                Err(e) => {
                    tracing::error!(model = %m.name, attempt, error = %e, "session rebuild failed");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
            }
        }
        false
    }
}

/// Errors after which a session is not trusted again (CUDA/arena/allocation failures).
fn looks_fatal(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    [
        "out of memory",
        "cuda failure",
        "arena",
        "bad_alloc",
        "cudnn",
        "cublas",
    ]
    .iter()
    .any(|k| e.contains(k))
}
