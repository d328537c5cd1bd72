//! A loaded model version: N session instances on dedicated threads, a bounded queue, and the
//! dynamic batcher that merges requests along dimension 0.
//!
//! Each instance thread forms its own batch while holding the queue (so batches form while
//! other instances compute), runs it, splits the outputs, and answers each request through its
//! oneshot channel. A request whose deadline passed or whose client went away is dropped before
//! it runs. Invariant: the queue is bounded (`try_send`), so overload costs a 429, not memory.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::{OnFailure, Provider, Serving};
use airlock_signing::manifest::{Contract, Dim, Manifest};
use ort::session::Session;
use tokio::sync::oneshot;

use super::tensor::{self, Tensor};
use super::{EngineError, Runtime};

/// Why a request was not answered with outputs; the HTTP layer maps each to a status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// The request does not fit the model (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such model or version (404).
    #[error("{0}")]
    NotFound(String),
    /// The model cannot serve now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The queue is full (429), with a retry estimate in seconds.
    #[error("the queue of model {model} is full; retry in about {retry_after}s")]
    QueueFull {
        /// The model.
        model: String,
        /// Seconds.
        retry_after: u64,
    },
    /// The deadline passed before the request ran (504).
    #[error("the request's deadline passed after {waited_ms} ms in the queue; it was not run")]
    Timeout {
        /// Time spent queued.
        waited_ms: u64,
    },
    /// The model failed while running (500).
    #[error("{0}")]
    Internal(String),
}

/// One queued request.
pub struct Job {
    /// Inputs in the contract's order.
    pub inputs: Vec<Tensor>,
    /// When the request must be answered by.
    pub deadline: Instant,
    /// When it was queued.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Answer, InferError>>,
}

/// The outputs of one request, with timings.
#[derive(Debug)]
pub struct Answer {
    /// Outputs in the contract's order.
    pub outputs: Vec<Tensor>,
    /// Time spent queued.
    pub queue: Duration,
    /// Time the batch took to run.
    pub compute: Duration,
    /// Size of the batch it ran in (rows).
    pub batch_rows: u64,
}

/// Counters for `/v2/models/{m}/stats` and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered with outputs.
    pub success: AtomicU64,
    /// Requests that failed while running.
    pub failure: AtomicU64,
    /// Requests refused with 429.
    pub rejected: AtomicU64,
    /// Requests whose deadline passed in the queue.
    pub timed_out: AtomicU64,
    /// Batches executed.
    pub executions: AtomicU64,
    /// Total queue time of successful requests (ns).
    pub queue_ns: AtomicU64,
    /// Total compute time of batches (ns).
    pub compute_ns: AtomicU64,
    /// Sessions rebuilt after a run-time failure.
    pub rebuilds: AtomicU64,
    /// Unix ms of the last inference.
    pub last_inference_ms: AtomicU64,
}

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
    /// Ready instances (0 while every instance is rebuilding).
    ready_instances: Arc<AtomicUsize>,
    /// Requests waiting.
    depth: Arc<AtomicUsize>,
    /// Moving average of batch execution time (µs).
    ewma_us: Arc<AtomicU64>,
    /// Counters.
    pub stats: Arc<Stats>,
    queue: Mutex<Option<SyncSender<Job>>>,
    /// Requests between routing and their answer (see [`LoadedModel::enter`]).
    in_flight: AtomicUsize,
    stopped: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// A request using a model version (from routing to its answer).
pub struct InFlight(Arc<LoadedModel>);

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

struct Shared {
    rx: Receiver<Job>,
    pending: VecDeque<Job>,
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
        let (tx, rx) = sync_channel::<Job>(settings.queue_capacity as usize);
        let model = Arc::new(LoadedModel {
            name: name.clone(),
            version: manifest.model.version.clone(),
            digest,
            contract: manifest.contract.clone(),
            settings: settings.clone(),
            batched,
            provider,
            degraded: Mutex::new(degraded),
            fallback,
            unavailable,
            ready_instances: Arc::new(AtomicUsize::new(0)),
            depth: Arc::new(AtomicUsize::new(0)),
            ewma_us: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(Stats::default()),
            queue: Mutex::new(Some(tx)),
            in_flight: AtomicUsize::new(0),
            stopped: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        });
        let shared = Arc::new(Mutex::new(Shared {
            rx,
            pending: VecDeque::new(),
        }));
        let faults = Arc::new(Faults::from_env(&name));
        let start = Starter {
            model: model.clone(),
            shared,
            faults,
            runtime,
            model_path,
            contract: manifest.contract.clone(),
        };
        if recover {
            // on_failure = "queue": requests wait (bounded queue, their own deadlines) while a
            // background thread keeps trying to build the CUDA sessions.
            std::thread::Builder::new()
                .name(format!("recover-{name}"))
                .spawn(move || start.recover())
                .map_err(|e| {
                    EngineError::Session(format!("cannot start the recovery thread: {e}"))
                })?;
        } else {
            start.start(sessions)?;
        }
        tracing::info!(model = %name, version = %model.version, provider = ?model.provider, batched, instances = settings.instances, degraded = ?model.degraded(), "model loaded");
        Ok(model)
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
        self.ready_instances.load(Ordering::SeqCst) > 0 && !self.stopped.load(Ordering::SeqCst)
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Queues a request; a full queue is refused at once with a retry estimate.
    pub fn submit(&self, job: Job) -> Result<(), InferError> {
        if let Some(reason) = &self.unavailable {
            return Err(InferError::Unavailable(reason.clone()));
        }
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard
            .as_ref()
            .ok_or_else(|| InferError::Unavailable(format!("model {} is unloading", self.name)))?;
        self.depth.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(InferError::QueueFull {
                    model: self.name.clone(),
                    retry_after: self.retry_after_secs(),
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                Err(InferError::Unavailable(format!(
                    "model {} is not running",
                    self.name
                )))
            }
        }
    }

    /// Estimated seconds until the current queue drains (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let batches =
            (self.queue_depth() as u64).div_ceil(self.settings.max_batch_size.max(1) as u64);
        let per_batch_us = self.ewma_us.load(Ordering::Relaxed).max(1);
        let us = batches * per_batch_us / self.settings.instances.max(1) as u64;
        us.div_ceil(1_000_000).max(1)
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
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handles: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
        self.stopped.store(true, Ordering::SeqCst);
        tracing::info!(model = %self.name, version = %self.version, "model unloaded");
    }
}

/// Starts instance threads for a model, now or once its sessions can be built.
struct Starter {
    model: Arc<LoadedModel>,
    shared: Arc<Mutex<Shared>>,
    faults: Arc<Faults>,
    runtime: &'static Runtime,
    model_path: PathBuf,
    contract: Contract,
}

impl Starter {
    fn start(&self, sessions: Vec<Session>) -> Result<(), EngineError> {
        let m = &self.model;
        for (i, mut session) in sessions.into_iter().enumerate() {
            warm_up(&mut session, &self.contract, m.settings.warmup_runs);
            let worker = Worker {
                faults: self.faults.clone(),
                model: m.clone(),
                shared: self.shared.clone(),
                runtime: self.runtime,
                model_path: self.model_path.clone(),
            };
            m.ready_instances.fetch_add(1, Ordering::SeqCst);
            let handle = std::thread::Builder::new()
                .name(format!("ort-{}-{i}", m.name))
                .spawn(move || worker.run(session))
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
        while !m.stopped.load(Ordering::SeqCst)
            && m.queue.lock().unwrap_or_else(|p| p.into_inner()).is_some()
        {
            let built: Result<Vec<Session>, EngineError> = (0..m.settings.instances)
                .map(|_| {
                    self.runtime
                        .session(&self.model_path, &m.settings, m.provider)
                })
                .collect();
            match built {
                Ok(sessions) => {
                    if self.start(sessions).is_ok() {
                        *m.degraded.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        tracing::info!(model = %m.name, "recovered: the CUDA sessions are up");
                    }
                    return;
                }
                Err(e) => tracing::debug!(model = %m.name, error = %e, "recovery attempt failed"),
            }
            std::thread::sleep(wait);
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
                Some(size) => tensor::Data::Raw(vec![0; n * size]),
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

/// A failed run, and whose fault it was.
#[derive(Debug, Clone)]
pub struct RunError {
    /// The client's input (the runtime refused it as an argument): answered 400, never counted
    /// as a failure of the model (it cannot trigger an automatic rollback).
    pub client: bool,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<RunError> for String {
    fn from(e: RunError) -> String {
        e.message
    }
}

impl From<String> for RunError {
    fn from(message: String) -> RunError {
        RunError {
            client: false,
            message,
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
            t.name.clone(),
            tensor::to_ort(t).map_err(|e| RunError {
                client: true,
                message: format!("input '{}': {e}", t.name),
            })?,
        ));
    }
    let outputs = session.run(values).map_err(|e| RunError {
        client: e.code() == ort::error::ErrorCode::InvalidArgument,
        message: e.to_string(),
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

struct Worker {
    faults: Arc<Faults>,
    model: Arc<LoadedModel>,
    shared: Arc<Mutex<Shared>>,
    runtime: &'static Runtime,
    model_path: PathBuf,
}

impl Worker {
    /// Takes the next batch: the first live request, then compatible ones until the batch is
    /// full, a preferred size is reached, or the first request has waited `max_queue_delay`.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let m = &self.model;
        let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let take = |sh: &mut Shared, wait: Duration| -> Result<Option<Job>, ()> {
            if let Some(j) = sh.pending.pop_front() {
                return Ok(Some(j));
            }
            match sh.rx.recv_timeout(wait) {
                Ok(j) => Ok(Some(j)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(()),
            }
        };
        // The first live request.
        let first = loop {
            match take(&mut sh, Duration::from_millis(200)) {
                Err(()) => return None,
                Ok(None) => continue,
                Ok(Some(j)) => {
                    if let Some(j) = self.live(j) {
                        break j;
                    }
                }
            }
        };
        let mut batch = vec![first];
        if !m.batched {
            return Some(batch);
        }
        let key = |j: &Job| {
            j.inputs
                .iter()
                .map(|t| (t.shape[1..].to_vec(), t.dtype))
                .collect::<Vec<_>>()
        };
        let first_key = key(&batch[0]);
        let mut rows: u64 = batch[0].inputs.first().map(|t| t.rows()).unwrap_or(1);
        let max = m.settings.max_batch_size as u64;
        let until = batch[0].enqueued + m.settings.max_queue_delay.get();
        let mut skipped = VecDeque::new();
        while rows < max && !m.settings.preferred_batch_sizes.contains(&(rows as u32)) {
            let wait = until.saturating_duration_since(Instant::now());
            let next = match take(&mut sh, wait) {
                Ok(Some(j)) => j,
                _ => break,
            };
            let Some(next) = self.live(next) else {
                continue;
            };
            let r = next.inputs.first().map(|t| t.rows()).unwrap_or(1);
            if key(&next) != first_key || rows + r > max {
                skipped.push_back(next);
                if Instant::now() >= until {
                    break;
                }
                continue;
            }
            rows += r;
            batch.push(next);
        }
        // Requests that did not fit keep their place at the head of the queue.
        while let Some(j) = skipped.pop_back() {
            sh.pending.push_front(j);
        }
        Some(batch)
    }

    /// Answers dead requests (deadline passed, client gone) without running them.
    fn live(&self, j: Job) -> Option<Job> {
        let m = &self.model;
        m.depth.fetch_sub(1, Ordering::SeqCst);
        if j.reply.is_closed() {
            return None;
        }
        if Instant::now() >= j.deadline {
            m.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let waited_ms = j.enqueued.elapsed().as_millis() as u64;
            let _ = j.reply.send(Err(InferError::Timeout { waited_ms }));
            return None;
        }
        m.depth.fetch_add(1, Ordering::SeqCst);
        Some(j)
    }

    fn run(self, mut session: Session) {
        while let Some(batch) = self.next_batch() {
            let m = &self.model;
            m.depth.fetch_sub(batch.len(), Ordering::SeqCst);
            let start = Instant::now();
            let rows: Vec<u64> = batch
                .iter()
                .map(|j| j.inputs.first().map(|t| t.rows()).unwrap_or(1))
                .collect();
            if let Some(d) = self.faults.delay {
                std::thread::sleep(d);
            }
            let result = if self.faults.run_error.swap(false, Ordering::SeqCst) {
                Err(RunError::from(
                    "injected fault: CUDA failure 2: out of memory (arena)".to_string(),
                ))
            } else if batch.len() == 1 {
                run_session(&mut session, &batch[0].inputs, &m.contract).map(|o| vec![o])
            } else {
                self.run_batched(&mut session, &batch, &rows)
            };
            let compute = start.elapsed();
            m.stats.executions.fetch_add(1, Ordering::Relaxed);
            m.stats
                .compute_ns
                .fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
            let us = compute.as_micros() as u64;
            let old = m.ewma_us.load(Ordering::Relaxed);
            m.ewma_us.store(
                if old == 0 { us } else { (old * 7 + us) / 8 },
                Ordering::Relaxed,
            );
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            m.stats.last_inference_ms.store(now_ms, Ordering::Relaxed);
            match result {
                Ok(per_request) => {
                    for (job, outputs) in batch.into_iter().zip(per_request) {
                        let queue = start.saturating_duration_since(job.enqueued);
                        m.stats.success.fetch_add(1, Ordering::Relaxed);
                        m.stats
                            .queue_ns
                            .fetch_add(queue.as_nanos() as u64, Ordering::Relaxed);
                        let total_rows = rows.iter().sum();
                        let _ = job.reply.send(Ok(Answer {
                            outputs,
                            queue,
                            compute,
                            batch_rows: total_rows,
                        }));
                    }
                }
                Err(e) if e.client => {
                    // The runtime refused the input as an argument: the client's fault, not
                    // the model's (not counted as a failure).
                    tracing::info!(model = %m.name, version = %m.version, error = %e, "inference refused the input");
                    for job in batch {
                        let _ = job.reply.send(Err(InferError::BadRequest(format!(
                            "model {} refused the input: {e}",
                            m.name
                        ))));
                    }
                }
                Err(e) => {
                    tracing::error!(model = %m.name, version = %m.version, error = %e, "inference failed");
                    for job in batch {
                        m.stats.failure.fetch_add(1, Ordering::Relaxed);
                        let _ = job.reply.send(Err(InferError::Internal(format!(
                            "model {} failed to run: {e}",
                            m.name
                        ))));
                    }
                    if looks_fatal(&e.message) {
                        session = match self.rebuild() {
                            Some(s) => s,
                            None => return,
                        };
                    }
                }
            }
        }
    }

    fn run_batched(
        &self,
        session: &mut Session,
        batch: &[Job],
        rows: &[u64],
    ) -> Result<Vec<Vec<Tensor>>, RunError> {
        let m = &self.model;
        let merged = (0..m.contract.inputs.len())
            .map(|i| tensor::concat(&batch.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = run_session(session, &merged, &m.contract)?;
        let mut per_request: Vec<Vec<Tensor>> = (0..batch.len()).map(|_| Vec::new()).collect();
        for out in &outputs {
            for (i, part) in tensor::split(out, rows)?.into_iter().enumerate() {
                per_request[i].push(part);
            }
        }
        Ok(per_request)
    }

    /// Self-healing: after an arena or out-of-memory failure the session is rebuilt; the model
    /// is not ready while no instance is.
    fn rebuild(&self) -> Option<Session> {
        let m = &self.model;
        m.ready_instances.fetch_sub(1, Ordering::SeqCst);
        m.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(model = %m.name, "rebuilding the session after a fatal run-time error");
        for attempt in 1..=5u32 {
            match self
                .runtime
                .session(&self.model_path, &m.settings, m.provider)
            {
                Ok(mut s) => {
                    warm_up(&mut s, &m.contract, m.settings.warmup_runs);
                    m.ready_instances.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(model = %m.name, attempt, "session rebuilt");
                    return Some(s);
                }
                Err(e) => {
                    tracing::error!(model = %m.name, attempt, error = %e, "session rebuild failed");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
            }
        }
        None
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
