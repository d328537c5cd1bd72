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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
pub trait Executor: Send {
    /// Runs one set of inputs (a request, or a batch merged along dimension 0); outputs in the
    /// contract's order.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError>;
    /// After a fatal error: builds a fresh executor in place. `false`: this instance stops.
    fn rebuild(&mut self) -> bool {
        false
    }
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
    shared: Mutex<Shared>,
    policy: BatchPolicy,
    instances: u32,
    depth: AtomicUsize,
    ready: AtomicUsize,
    ewma_us: AtomicU64,
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
            shared: Mutex::new(Shared {
                rx,
                pending: VecDeque::new(),
            }),
            policy,
            instances,
            depth: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
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
    fn next_batch(&self) -> Option<Vec<Job>> {
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
    /// closed and drained (or the executor cannot be rebuilt after a fatal error).
    pub fn serve(&self, mut exec: impl Executor) {
        while let Some(batch) = self.next_batch() {
            self.depth.fetch_sub(batch.len(), Ordering::SeqCst);
            let start = Instant::now();
            let rows: Vec<u64> = batch.iter().map(Job::rows).collect();
            let result = if batch.len() == 1 {
                exec.run(&batch[0].inputs).map(|o| vec![o])
            } else {
                run_batched(&mut exec, &batch, &rows)
            };
            let compute = start.elapsed();
            let st = &self.stats;
            st.executions.fetch_add(1, Ordering::Relaxed);
            st.compute_ns
                .fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
            let us = compute.as_micros() as u64;
            let old = self.ewma_us.load(Ordering::Relaxed);
            self.ewma_us.store(
                if old == 0 { us } else { (old * 7 + us) / 8 },
                Ordering::Relaxed,
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
                    if e.fatal {
                        // Self-healing: the instance is not ready while it rebuilds.
                        self.ready.fetch_sub(1, Ordering::SeqCst);
                        st.rebuilds.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(model = %self.name, "rebuilding the session after a fatal run-time error");
                        if !exec.rebuild() {
                            return;
                        }
                        self.ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

fn run_batched(
    exec: &mut impl Executor,
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
    use std::sync::Arc;

    /// Echoes its first input as output `y` and records the rows of every batch it ran, with
    /// the first value of each request's rows (their tags).
    #[derive(Clone, Default)]
    struct Echo {
        batches: Arc<Mutex<Vec<Vec<f32>>>>,
        /// How long a run takes.
        delay: Duration,
    }

    impl Executor for Echo {
        fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
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
}
