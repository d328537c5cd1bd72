//! A model version's bounded queue and the dynamic batcher that its instance threads run.
//!
//! Each instance thread forms its own batch while holding the queue (so batches form while
//! other instances compute), runs it through its [`Executor`] (an ONNX Runtime session in
//! production, a stand-in in the unit tests below: this is logic, not ONNX Runtime), splits the
//! outputs and answers each request through its oneshot channel. A request whose deadline
//! passed or whose client went away is dropped before it runs.
//!
//! Invariant: the queue is bounded (`try_send`), so overload costs a refusal, not memory; a
//! request that does not fit the batch being formed keeps its place at the head of the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use airlock_signing::manifest::DType;
use tokio::sync::oneshot;

use crate::error::InferError;
use crate::tensor::{self, Tensor};

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

impl Job {
    fn rows(&self) -> u64 {
        self.inputs.first().map(|t| t.rows()).unwrap_or(1)
    }
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

/// Counters for the statistics endpoints and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered with outputs.
    pub success: AtomicU64,
    /// Requests that failed while running.
    pub failure: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Requests whose deadline passed before they were answered.
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

/// How requests are merged into batches.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    /// Whether requests are merged at all (every input and output has a dynamic first
    /// dimension, and `max_batch_size` > 1).
    pub batched: bool,
    /// Most rows in one batch.
    pub max_batch_size: u32,
    /// Batch sizes that end the forming of a batch at once.
    pub preferred: Vec<u32>,
    /// How long the first request of a batch waits for others.
    pub max_queue_delay: Duration,
}

/// A failed run, and whose fault it was.
#[derive(Debug, Clone)]
pub struct RunError {
    /// The client's input (the runtime refused it as an argument): answered 400, never counted
    /// as a failure of the model (it cannot trigger an automatic rollback).
    pub client: bool,
    /// The executor cannot be trusted again (a CUDA, arena or allocation failure): it is
    /// rebuilt before it runs anything else.
    pub fatal: bool,
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
            fatal: false,
            message,
        }
    }
}

/// What runs a batch: an ONNX Runtime session, or a stand-in in tests.
pub trait Executor: Send + 'static {
    /// Runs one set of inputs (a request, or a batch merged along dimension 0); outputs in the
    /// contract's order.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError>;
    /// After a fatal error: builds a fresh executor in place. `false`: this instance stops.
    fn rebuild(&mut self) -> bool {
        false
    }
}

/// Runs of at most this many microseconds on average are made on the caller's thread when an
/// instance is idle and nothing waits ([`Queue::run_inline`]): a hand-off to an instance thread
/// and back costs two cross-thread wake-ups (tens of µs of CPU on a VM), more than such a run,
/// and a caller on an async worker is held no longer than by a large request body's parse.
pub const INLINE_MAX_US: u64 = 50;

/// An instance's executor, shared by its thread and the inline path.
struct Slot {
    exec: Mutex<Box<dyn Executor>>,
    /// A run on the inline path failed fatally: the instance thread rebuilds it first.
    broken: AtomicBool,
}

struct Shared {
    rx: Receiver<Job>,
    pending: VecDeque<Job>,
}

/// A model version's queue: what requests are submitted to and what instance threads serve.
pub struct Queue {
    name: String,
    version: String,
    tx: Mutex<Option<SyncSender<Job>>>,
    closed: AtomicBool,
    shared: Mutex<Shared>,
    slots: ArcSwap<Vec<Arc<Slot>>>,
    policy: BatchPolicy,
    instances: u32,
    depth: AtomicUsize,
    ready: AtomicUsize,
    ewma_us: AtomicU64,
    /// The input bytes of a run, on average (as `ewma_us`), so that the inline path can tell
    /// a request of the usual size from one that would take longer.
    ewma_bytes: AtomicU64,
    /// Counters.
    pub stats: Stats,
}

impl Queue {
    /// A queue of at most `capacity` waiting requests for `instances` instance threads.
    pub fn new(
        name: &str,
        version: &str,
        capacity: usize,
        instances: u32,
        policy: BatchPolicy,
    ) -> Queue {
        let (tx, rx) = sync_channel::<Job>(capacity);
        Queue {
            name: name.to_string(),
            version: version.to_string(),
            tx: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            slots: ArcSwap::from_pointee(Vec::new()),
            shared: Mutex::new(Shared {
                rx,
                pending: VecDeque::new(),
            }),
            policy,
            instances,
            depth: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            ewma_bytes: AtomicU64::new(0),
            stats: Stats::default(),
        }
    }

    /// Requests waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Instances that can run requests now.
    pub fn ready_instances(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// Whether the queue still takes requests.
    pub fn is_open(&self) -> bool {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Stops taking requests; what is queued is still served, then the instances end.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Queues a request; a full queue is refused at once with a retry estimate.
    pub fn submit(&self, job: Job) -> Result<(), InferError> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
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
        let batches = (self.depth() as u64).div_ceil(self.policy.max_batch_size.max(1) as u64);
        let per_batch_us = self.ewma_us.load(Ordering::Relaxed).max(1);
        let us = batches * per_batch_us / u64::from(self.instances.max(1));
        us.div_ceil(1_000_000).max(1)
    }

    /// Counts an instance as ready before its thread starts (so that readiness does not lag).
    pub fn instance_ready(&self) {
        self.ready.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes the next batch: the first live request, then compatible ones until the batch is
    /// full, a preferred size is reached, or the first request has waited `max_queue_delay`.
    /// `None` once the queue is closed and empty.
    /// An empty batch when `broken` is seen while waiting (the executor needs a rebuild).
    fn next_batch(&self, broken: &AtomicBool) -> Option<Vec<Job>> {
        let p = &self.policy;
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
                Ok(None) if broken.load(Ordering::SeqCst) => return Some(Vec::new()),
                Ok(None) => continue,
                Ok(Some(j)) => {
                    if let Some(j) = self.live(j) {
                        break j;
                    }
                }
            }
        };
        let mut batch = vec![first];
        if !p.batched {
            return Some(batch);
        }
        let key = |j: &Job| -> Vec<(Vec<u64>, DType)> {
            j.inputs
                .iter()
                .map(|t| (t.shape[1..].to_vec(), t.dtype))
                .collect()
        };
        let first_key = key(&batch[0]);
        let mut rows = batch[0].rows();
        let max = u64::from(p.max_batch_size);
        let until = batch[0].enqueued + p.max_queue_delay;
        let mut skipped = VecDeque::new();
        while rows < max && !p.preferred.contains(&(rows as u32)) {
            let wait = until.saturating_duration_since(Instant::now());
            let next = match take(&mut sh, wait) {
                Ok(Some(j)) => j,
                _ => break,
            };
            let Some(next) = self.live(next) else {
                continue;
            };
            let r = next.rows();
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
        self.depth.fetch_sub(1, Ordering::SeqCst);
        if j.reply.is_closed() {
            return None;
        }
        if Instant::now() >= j.deadline {
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let waited_ms = j.enqueued.elapsed().as_millis() as u64;
            let _ = j.reply.send(Err(InferError::Timeout { waited_ms }));
            return None;
        }
        self.depth.fetch_add(1, Ordering::SeqCst);
        Some(j)
    }

    /// An instance thread's loop: forms batches and runs them on `exec` until the queue is
    /// closed and drained (or the executor cannot be rebuilt after a fatal error). The
    /// executor is shared with [`Queue::run_inline`], which may use it while this thread waits.
    pub fn serve(&self, exec: impl Executor + 'static) {
        let slot = Arc::new(Slot {
            exec: Mutex::new(Box::new(exec)),
            broken: AtomicBool::new(false),
        });
        self.slots.rcu(|v| {
            let mut v = Vec::clone(v);
            v.push(slot.clone());
            v
        });
        self.serve_slot(&slot);
        self.slots.rcu(|v| {
            v.iter()
                .filter(|s| !Arc::ptr_eq(s, &slot))
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    fn serve_slot(&self, slot: &Slot) {
        while let Some(batch) = self.next_batch(&slot.broken) {
            self.depth.fetch_sub(batch.len(), Ordering::SeqCst);
            let mut exec = slot.exec.lock().unwrap_or_else(|p| p.into_inner());
            if slot.broken.load(Ordering::SeqCst) {
                // A run on the inline path failed fatally: rebuilt here, off the caller's thread
                // (it already counted the rebuild and took the instance out of readiness).
                if !self.rebuild(&mut **exec) {
                    return;
                }
                slot.broken.store(false, Ordering::SeqCst);
            }
            if batch.is_empty() {
                continue;
            }
            if self.execute(&mut **exec, batch) {
                self.ready.fetch_sub(1, Ordering::SeqCst);
                self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
                if !self.rebuild(&mut **exec) {
                    return;
                }
            }
        }
    }

    /// Self-healing after a fatal run-time error: the instance is not ready while it rebuilds
    /// (the caller took it out of readiness); `false` when it cannot be rebuilt.
    fn rebuild(&self, exec: &mut dyn Executor) -> bool {
        tracing::warn!(model = %self.name, "rebuilding the session after a fatal run-time error");
        if !exec.rebuild() {
            return false;
        }
        self.ready.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Runs a request at once on the calling thread, when that costs less than handing it to
    /// an instance thread and back (two cross-thread wake-ups): the model's runs take at most
    /// [`INLINE_MAX_US`] on average, nothing is waiting (so no request is overtaken), no queue
    /// delay asks for batches to form, the request is at most twice the usual size of a run
    /// (so that a client cannot hold the caller's thread with one unusually large input: the
    /// average follows what runs really cost), and an instance is idle. Otherwise the inputs
    /// come back for [`Queue::submit`].
    pub fn run_inline(
        &self,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> Result<Result<Answer, InferError>, Vec<Tensor>> {
        let ewma = self.ewma_us.load(Ordering::Relaxed);
        if ewma == 0
            || ewma > INLINE_MAX_US
            || input_bytes(&inputs) > 2 * self.ewma_bytes.load(Ordering::Relaxed)
            || (self.policy.batched && !self.policy.max_queue_delay.is_zero())
            || self.depth.load(Ordering::SeqCst) != 0
            || self.closed.load(Ordering::SeqCst)
        {
            return Err(inputs);
        }
        let slots = self.slots.load();
        let Some(mut exec) = slots.iter().find_map(|s| {
            let guard = s.exec.try_lock().ok()?;
            (!s.broken.load(Ordering::SeqCst)).then_some((s, guard))
        }) else {
            return Err(inputs);
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(inputs);
        }
        let (tx, mut rx) = oneshot::channel();
        let job = Job {
            inputs,
            deadline,
            enqueued: now,
            reply: tx,
        };
        if self.execute(&mut **exec.1, vec![job]) {
            // Marked while still held, so that no other caller picks it up; the instance
            // thread rebuilds it.
            exec.0.broken.store(true, Ordering::SeqCst);
            self.ready.fetch_sub(1, Ordering::SeqCst);
            self.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        drop(exec);
        Ok(rx.try_recv().unwrap_or_else(|_| {
            Err(InferError::Internal(
                "the engine dropped the request".into(),
            ))
        }))
    }

    /// Runs one batch on `exec` and answers its requests, counting it; `true` when the error
    /// was fatal (the executor must be rebuilt before it runs anything else).
    fn execute(&self, exec: &mut dyn Executor, batch: Vec<Job>) -> bool {
        let start = Instant::now();
        let rows: Vec<u64> = batch.iter().map(Job::rows).collect();
        let result = if batch.len() == 1 {
            exec.run(&batch[0].inputs).map(|o| vec![o])
        } else {
            run_batched(exec, &batch, &rows)
        };
        let compute = start.elapsed();
        let st = &self.stats;
        st.executions.fetch_add(1, Ordering::Relaxed);
        st.compute_ns
            .fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
        let ewma = |avg: &AtomicU64, v: u64| {
            let old = avg.load(Ordering::Relaxed);
            avg.store(
                if old == 0 { v } else { (old * 7 + v) / 8 },
                Ordering::Relaxed,
            );
        };
        ewma(&self.ewma_us, (compute.as_micros() as u64).max(1));
        ewma(
            &self.ewma_bytes,
            batch
                .iter()
                .map(|j| input_bytes(&j.inputs))
                .sum::<u64>()
                .max(1),
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        st.last_inference_ms.store(now_ms, Ordering::Relaxed);
        match result {
            Ok(per_request) => {
                let total_rows = rows.iter().sum();
                for (job, outputs) in batch.into_iter().zip(per_request) {
                    let queue = start.saturating_duration_since(job.enqueued);
                    st.success.fetch_add(1, Ordering::Relaxed);
                    st.queue_ns
                        .fetch_add(queue.as_nanos() as u64, Ordering::Relaxed);
                    let _ = job.reply.send(Ok(Answer {
                        outputs,
                        queue,
                        compute,
                        batch_rows: total_rows,
                    }));
                }
                false
            }
            Err(e) if e.client => {
                // The runtime refused the input as an argument: the client's fault, not
                // the model's (not counted as a failure).
                tracing::info!(model = %self.name, version = %self.version, error = %e, "inference refused the input");
                for job in batch {
                    let _ = job.reply.send(Err(InferError::BadRequest(format!(
                        "model {} refused the input: {e}",
                        self.name
                    ))));
                }
                false
            }
            Err(e) => {
                tracing::error!(model = %self.name, version = %self.version, error = %e, "inference failed");
                for job in batch {
                    st.failure.fetch_add(1, Ordering::Relaxed);
                    let _ = job.reply.send(Err(InferError::Internal(format!(
                        "model {} failed to run: {e}",
                        self.name
                    ))));
                }
                e.fatal
            }
        }
    }
}

/// What a request's inputs weigh: their raw bytes, or for BYTES their strings and a length
/// each.
fn input_bytes(inputs: &[Tensor]) -> u64 {
    inputs
        .iter()
        .map(|t| match &t.data {
            tensor::Data::Raw(b) => b.len() as u64,
            tensor::Data::Strings(v) => v.iter().map(|e| e.len() as u64 + 4).sum(),
        })
        .sum()
}

fn run_batched(
    exec: &mut dyn Executor,
    batch: &[Job],
    rows: &[u64],
) -> Result<Vec<Vec<Tensor>>, RunError> {
    let n = batch[0].inputs.len();
    let merged = (0..n)
        .map(|i| tensor::concat(&batch.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = exec.run(&merged)?;
    let mut per_request: Vec<Vec<Tensor>> = (0..batch.len())
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for out in &outputs {
        for (i, part) in tensor::split(out, rows)?.into_iter().enumerate() {
            per_request[i].push(part);
        }
    }
    Ok(per_request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Data;

    /// Echoes its first input as output `y` and records the rows of every batch it ran, with
    /// the first value of each request's rows (their tags).
    #[derive(Clone, Default)]
    struct Echo {
        batches: Arc<Mutex<Vec<Vec<f32>>>>,
        /// How long a run takes.
        delay: Duration,
        /// The next run fails fatally.
        fatal_next: Arc<AtomicBool>,
        /// Rebuilds made.
        rebuilt: Arc<AtomicU64>,
        /// The thread of every run.
        threads: Arc<Mutex<Vec<std::thread::ThreadId>>>,
    }

    impl Executor for Echo {
        fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
            self.threads
                .lock()
                .expect("lock")
                .push(std::thread::current().id());
            if self.fatal_next.swap(false, Ordering::SeqCst) {
                return Err(RunError {
                    client: false,
                    fatal: true,
                    message: "injected: CUDA failure".into(),
                });
            }
            let x = &inputs[0];
            let Data::Raw(b) = &x.data else {
                return Err("not raw".to_string().into());
            };
            let per_row = tensor::elements(&x.shape[1..]) as usize * 4;
            let tags = b
                .chunks(per_row)
                .map(|row| f32::from_le_bytes(row[..4].try_into().expect("4 bytes")))
                .collect();
            self.batches.lock().expect("lock").push(tags);
            std::thread::sleep(self.delay);
            Ok(vec![Tensor::new(
                "y",
                x.dtype,
                x.shape.clone(),
                x.data.clone(),
            )?])
        }

        fn rebuild(&mut self) -> bool {
            self.rebuilt.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    fn policy(batched: bool, max: u32, preferred: &[u32], delay_ms: u64) -> BatchPolicy {
        BatchPolicy {
            batched,
            max_batch_size: max,
            preferred: preferred.to_vec(),
            max_queue_delay: Duration::from_millis(delay_ms),
        }
    }

    /// A request of `rows` rows of `width` values, every value `tag`.
    fn request(tag: f32, rows: u64, width: u64) -> Vec<Tensor> {
        let data: Vec<u8> = (0..rows * width).flat_map(|_| tag.to_le_bytes()).collect();
        vec![Tensor::new(
            "x",
            DType::Float32,
            vec![rows, width],
            Data::Raw(data.into()),
        )
        .expect("x")]
    }

    type Reply = oneshot::Receiver<Result<Answer, InferError>>;

    fn submit(q: &Queue, inputs: Vec<Tensor>, timeout: Duration) -> Reply {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        q.submit(Job {
            inputs,
            deadline: now + timeout,
            enqueued: now,
            reply: tx,
        })
        .expect("queued");
        rx
    }

    fn answer(rx: Reply) -> Result<Answer, InferError> {
        rx.blocking_recv().expect("answered")
    }

    /// Starts one instance on `exec`; the handle returns once the queue is closed and drained.
    fn start(q: &Arc<Queue>, exec: Echo) -> std::thread::JoinHandle<()> {
        let q = q.clone();
        q.instance_ready();
        std::thread::spawn(move || q.serve(exec))
    }

    const LONG: Duration = Duration::from_secs(60);

    fn tags_of(a: &Answer) -> Vec<f32> {
        let Data::Raw(b) = &a.outputs[0].data else {
            panic!("raw")
        };
        b.chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect()
    }

    #[test]
    fn requests_run_in_order_and_each_gets_its_own_rows_back() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 8, &[], 100)));
        let replies: Vec<Reply> = (1..=5)
            .map(|i| submit(&q, request(i as f32, i % 2 + 1, 3), LONG))
            .collect();
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        for (i, rx) in replies.into_iter().enumerate() {
            let a = answer(rx).expect("outputs");
            let rows = (i as u64 + 1) % 2 + 1;
            assert_eq!(a.outputs[0].shape, vec![rows, 3]);
            assert_eq!(tags_of(&a), vec![(i + 1) as f32; rows as usize * 3]);
            assert_eq!(a.batch_rows, 8, "all five (8 rows) ran together");
        }
        q.close();
        h.join().expect("joined");
        assert_eq!(
            *exec.batches.lock().expect("lock"),
            vec![vec![1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 5.0]],
            "one batch, in the order the requests came"
        );
        assert_eq!(q.stats.success.load(Ordering::Relaxed), 5);
        assert_eq!(q.stats.executions.load(Ordering::Relaxed), 1);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn without_batching_every_request_runs_alone_in_order() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(false, 8, &[], 100)));
        let replies: Vec<Reply> = (1..=3)
            .map(|i| submit(&q, request(i as f32, 1, 2), LONG))
            .collect();
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        for rx in replies {
            assert_eq!(answer(rx).expect("outputs").batch_rows, 1);
        }
        q.close();
        h.join().expect("joined");
        assert_eq!(
            *exec.batches.lock().expect("lock"),
            vec![vec![1.0], vec![2.0], vec![3.0]]
        );
    }

    #[test]
    fn a_preferred_size_ends_the_batch_and_the_maximum_is_never_passed() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 5, &[4], 200)));
        let replies: Vec<Reply> = [(1.0, 1), (2.0, 1), (3.0, 2), (4.0, 3), (5.0, 3), (6.0, 2)]
            .into_iter()
            .map(|(t, r)| submit(&q, request(t, r, 1), LONG))
            .collect();
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        for rx in replies {
            answer(rx).expect("outputs");
        }
        q.close();
        h.join().expect("joined");
        // 1+1+2 rows reach the preferred 4 and run at once; 3 rows and 3 more would pass the
        // maximum of 5, so the second waits while 3+2 fill the batch; it runs last, alone.
        assert_eq!(
            *exec.batches.lock().expect("lock"),
            vec![
                vec![1.0, 2.0, 3.0, 3.0],
                vec![4.0, 4.0, 4.0, 6.0, 6.0],
                vec![5.0, 5.0, 5.0],
            ]
        );
    }

    #[test]
    fn the_first_request_waits_at_most_the_queue_delay_and_a_later_one_joins_it() {
        // Alone: it runs once the delay has passed, as a batch of one.
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 4, &[], 150)));
        let h = start(&q, Echo::default());
        let t0 = Instant::now();
        let a = answer(submit(&q, request(1.0, 1, 1), LONG)).expect("outputs");
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "it waited for company"
        );
        assert_eq!(a.batch_rows, 1);
        // A second request within the delay joins the first.
        let first = submit(&q, request(2.0, 1, 1), LONG);
        std::thread::sleep(Duration::from_millis(20));
        let second = submit(&q, request(3.0, 1, 1), LONG);
        assert_eq!(answer(first).expect("outputs").batch_rows, 2);
        assert_eq!(answer(second).expect("outputs").batch_rows, 2);
        q.close();
        h.join().expect("joined");
    }

    #[test]
    fn a_request_past_its_deadline_is_answered_without_running() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 4, &[], 10)));
        let late = submit(&q, request(1.0, 1, 1), Duration::ZERO);
        let on_time = submit(&q, request(2.0, 1, 1), LONG);
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        assert!(matches!(answer(late), Err(InferError::Timeout { .. })));
        assert_eq!(tags_of(&answer(on_time).expect("outputs")), vec![2.0]);
        q.close();
        h.join().expect("joined");
        assert_eq!(*exec.batches.lock().expect("lock"), vec![vec![2.0]]);
        assert_eq!(q.stats.timed_out.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn work_for_a_client_that_went_away_is_skipped() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 4, &[], 10)));
        drop(submit(&q, request(1.0, 1, 1), LONG));
        let kept = submit(&q, request(2.0, 1, 1), LONG);
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        assert_eq!(tags_of(&answer(kept).expect("outputs")), vec![2.0]);
        q.close();
        h.join().expect("joined");
        assert_eq!(*exec.batches.lock().expect("lock"), vec![vec![2.0]]);
        assert_eq!(q.stats.success.load(Ordering::Relaxed), 1);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn requests_that_do_not_fit_are_skipped_and_keep_their_place_at_the_head() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 4, &[], 100)));
        let replies = vec![
            submit(&q, request(1.0, 1, 2), LONG),
            submit(&q, request(2.0, 1, 3), LONG), // another trailing shape
            submit(&q, request(3.0, 4, 2), LONG), // too many rows for what is left
            submit(&q, request(4.0, 1, 2), LONG),
            submit(&q, request(5.0, 1, 3), LONG),
        ];
        // Each run takes longer than the requests took to queue, so that by the second batch
        // every request has waited its full delay.
        let exec = Echo {
            delay: Duration::from_millis(20),
            ..Echo::default()
        };
        let h = start(&q, exec.clone());
        for rx in replies {
            answer(rx).expect("outputs");
        }
        q.close();
        h.join().expect("joined");
        assert_eq!(
            *exec.batches.lock().expect("lock"),
            vec![
                vec![1.0, 4.0],
                // The skipped ones come next, in their order, ahead of the later request 5.
                vec![2.0],
                vec![3.0, 3.0, 3.0, 3.0],
                vec![5.0],
            ]
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once_with_a_retry_hint() {
        let q = Queue::new("m", "1.0.0", 2, 1, policy(true, 4, &[], 10));
        let _a = submit(&q, request(1.0, 1, 1), LONG);
        let _b = submit(&q, request(2.0, 1, 1), LONG);
        let (tx, _rx) = oneshot::channel();
        let now = Instant::now();
        let e = q
            .submit(Job {
                inputs: request(3.0, 1, 1),
                deadline: now + LONG,
                enqueued: now,
                reply: tx,
            })
            .expect_err("full");
        assert!(
            matches!(
                e,
                InferError::QueueFull {
                    retry_after: 1..,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(q.depth(), 2);
        assert_eq!(q.stats.rejected.load(Ordering::Relaxed), 1);
        q.close();
        assert!(matches!(
            q.submit(Job {
                inputs: request(4.0, 1, 1),
                deadline: now + LONG,
                enqueued: now,
                reply: oneshot::channel().0,
            }),
            Err(InferError::Unavailable(_))
        ));
    }

    fn inline(q: &Queue, tag: f32) -> Result<Result<Answer, InferError>, Vec<Tensor>> {
        q.run_inline(request(tag, 1, 2), Instant::now() + LONG)
    }

    /// Runs inline once the instance thread let go of the executor (it answers the queued
    /// request before it unlocks it).
    fn inline_when_idle(q: &Queue, tag: f32) -> Result<Answer, InferError> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = inline(q, tag) {
                return r;
            }
            assert!(Instant::now() < until, "never ran inline");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (bounded) until `cond` holds.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_short_run_on_an_idle_instance_is_made_on_the_callers_thread_and_counted_alike() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 8, &[], 0)));
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        // Nothing known of the model's runs yet: the first request goes through the queue.
        eventually("the instance is registered", || !q.slots.load().is_empty());
        assert!(inline(&q, 1.0).is_err(), "no run measured yet");
        answer(submit(&q, request(1.0, 1, 2), LONG)).expect("queued answer");
        let a = inline_when_idle(&q, 2.0).expect("outputs");
        assert_eq!(tags_of(&a), vec![2.0, 2.0]);
        assert_eq!(a.batch_rows, 1);
        let threads = exec.threads.lock().expect("lock").clone();
        assert_eq!(threads.len(), 2);
        assert_ne!(
            threads[0],
            std::thread::current().id(),
            "queued: the instance thread"
        );
        assert_eq!(
            threads[1],
            std::thread::current().id(),
            "inline: the caller's thread"
        );
        assert_eq!(q.stats.success.load(Ordering::Relaxed), 2);
        assert_eq!(q.stats.executions.load(Ordering::Relaxed), 2);
        assert_eq!(q.depth(), 0);
        q.close();
        assert!(inline(&q, 3.0).is_err(), "a closed queue runs nothing");
        h.join().expect("joined");
        assert!(
            q.slots.load().is_empty(),
            "a finished instance leaves the inline path"
        );
    }

    #[test]
    fn the_inline_path_stands_aside_for_slow_runs_waiting_requests_queue_delays_and_busy_instances()
    {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 8, &[], 0)));
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        answer(submit(&q, request(1.0, 1, 2), LONG)).expect("queued answer");
        // Idle and eligible: each refusal below is for the reason it names.
        assert!(inline_when_idle(&q, 2.0).is_ok());
        q.ewma_us.store(INLINE_MAX_US + 1, Ordering::Relaxed);
        assert!(inline(&q, 2.0).is_err(), "runs longer than INLINE_MAX_US");
        q.ewma_us.store(INLINE_MAX_US, Ordering::Relaxed);
        q.depth.fetch_add(1, Ordering::SeqCst);
        assert!(
            inline(&q, 2.0).is_err(),
            "a waiting request is not overtaken"
        );
        q.depth.fetch_sub(1, Ordering::SeqCst);
        {
            let slots = q.slots.load();
            let _busy = slots[0].exec.lock().expect("lock");
            assert!(inline(&q, 2.0).is_err(), "the only instance is running");
        }
        q.ewma_bytes.store(8, Ordering::Relaxed);
        let big = q.run_inline(request(2.0, 5, 1), Instant::now() + LONG);
        assert!(big.is_err(), "20 bytes against runs of 8 on average");
        q.ewma_bytes.store(8, Ordering::Relaxed);
        let twice = q.run_inline(request(2.0, 4, 1), Instant::now() + LONG);
        assert!(
            twice.is_ok(),
            "16 bytes: twice the usual size is still run inline"
        );
        let gone = q.run_inline(
            request(2.0, 1, 2),
            Instant::now() - Duration::from_millis(1),
        );
        assert!(
            gone.is_err(),
            "a request past its deadline takes the queue's path"
        );
        q.ewma_us.store(1, Ordering::Relaxed);
        assert!(inline_when_idle(&q, 2.0).is_ok());
        q.close();
        h.join().expect("joined");

        let delayed = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 8, &[], 5)));
        let h = start(&delayed, Echo::default());
        answer(submit(&delayed, request(1.0, 1, 2), LONG)).expect("queued answer");
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            inline(&delayed, 2.0).is_err(),
            "a queue delay asks for batches to form"
        );
        delayed.close();
        h.join().expect("joined");
    }

    #[test]
    fn a_fatal_inline_run_takes_the_instance_out_until_its_thread_rebuilt_it() {
        let q = Arc::new(Queue::new("m", "1.0.0", 16, 1, policy(true, 8, &[], 0)));
        let exec = Echo::default();
        let h = start(&q, exec.clone());
        answer(submit(&q, request(1.0, 1, 2), LONG)).expect("queued answer");
        exec.fatal_next.store(true, Ordering::SeqCst);
        let e = inline_when_idle(&q, 2.0).expect_err("failed");
        assert!(matches!(e, InferError::Internal(_)), "{e:?}");
        assert_eq!(q.stats.failure.load(Ordering::Relaxed), 1);
        assert_eq!(q.stats.rebuilds.load(Ordering::Relaxed), 1);
        assert!(
            inline(&q, 3.0).is_err(),
            "a broken instance is not used inline"
        );
        // The instance thread notices while it waits, rebuilds, and is ready again.
        eventually("the instance is rebuilt", || {
            exec.rebuilt.load(Ordering::SeqCst) == 1 && q.ready_instances() == 1
        });
        eventually("the instance is usable inline again", || {
            !q.slots.load()[0].broken.load(Ordering::SeqCst)
        });
        assert!(inline_when_idle(&q, 4.0).is_ok());
        // Queued work still runs after the rebuild.
        answer(submit(&q, request(5.0, 1, 2), LONG)).expect("queued answer");
        q.close();
        h.join().expect("joined");
    }
}
