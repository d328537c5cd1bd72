//! The protocol-neutral entry point every front end calls: route a request to a model version
//! (with `on_failure = "model:NAME"` fallback), hold the version against release while it is
//! used, apply the batch rule and the deadline over queue and execution, and count the
//! outcome. HTTP and gRPC differ only in how they read tensors and write answers.
//!
//! ```text
//! let mut call = infer.route("iris", None)?;          // 404 / 503 here, counted
//! let inputs = /* parse against call.model().contract */;
//! let answer = call.infer(inputs, timeout).await?;    // 400 batch rule, 429, 504, 500
//! ```
//!
//! Invariant: every routed request is counted exactly once, under the outcome it ended with
//! (a client that goes away is `cancelled`), and the in-flight gauge always comes back down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batcher::{Answer, Job};
use crate::error::{InferError, Outcome};
use crate::model::{InFlight, LoadedModel};
use crate::routing::Models;
use crate::tensor::Tensor;

/// What the daemon's metrics see of one model's requests (resolved once per model version,
/// so that the request path does no label lookups).
pub trait RequestObserver: Send + Sync {
    /// A request started (in flight).
    fn started(&self);
    /// A request ended; `elapsed` is `None` for requests that named no loaded model.
    fn finished(&self, outcome: Outcome, elapsed: Option<Duration>);
    /// A request was answered by this model (queue and compute time, batch rows).
    fn answered(&self, answer: &Answer);
}

/// Makes the observers: one per loaded model version, one for requests naming none.
pub trait Observers: Send + Sync {
    /// The observer of `model`'s requests.
    fn model(&self, model: &LoadedModel) -> Arc<dyn RequestObserver>;
    /// The observer of requests that named no loaded model.
    fn unknown(&self) -> Arc<dyn RequestObserver>;
}

/// The inference core: the routing table and the observers.
pub struct Infer {
    models: Arc<Models>,
    observers: Arc<dyn Observers>,
    unknown: std::sync::OnceLock<Arc<dyn RequestObserver>>,
}

impl Infer {
    /// The core over a routing table.
    pub fn new(models: Arc<Models>, observers: Arc<dyn Observers>) -> Infer {
        Infer {
            models,
            observers,
            unknown: std::sync::OnceLock::new(),
        }
    }

    /// The routing table.
    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    fn observer(&self, m: &LoadedModel) -> Arc<dyn RequestObserver> {
        m.observer(|| self.observers.model(m))
    }

    /// Whether `m` can answer: its own sessions, or (on_failure = "model:NAME") its fallback's.
    pub fn can_answer(&self, m: &LoadedModel) -> bool {
        m.ready()
            || m.fallback
                .as_deref()
                .and_then(|f| self.models.get(f, None).ok())
                .is_some_and(|f| f.ready())
    }

    /// Whether every model can answer (strict readiness, as Triton's: one model that cannot
    /// makes the server not ready, so that a load balancer sends its requests elsewhere).
    pub fn ready(&self) -> bool {
        self.models.unavailable().is_empty()
            && self
                .models
                .snapshot()
                .values()
                .all(|slot| self.can_answer(&slot.active))
    }

    /// A model version for metadata and listings (no fallback, nothing counted): unknown is
    /// `NotFound`, a model whose active version cannot be served `Unavailable`.
    pub fn lookup(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedModel>, InferError> {
        self.models.get(model, version).map_err(|e| {
            match self.models.unavailable().get(model) {
                // Known and meant to serve, but its active version cannot: says so (the reason,
                // with store paths and runtime errors, is for operators: logs, audit, admin API).
                Some(u) if version.is_none_or(|v| v.is_empty() || v == u.version.to_string()) => {
                    InferError::Unavailable(format!(
                        "model '{model}' is unavailable: its active version {} cannot be served on this appliance (the operator sees why in airlockctl models list)",
                        u.version
                    ))
                }
                _ => InferError::NotFound(e),
            }
        })
    }

    /// Routes an inference request: the version asked for (or the active one), or its
    /// fallback. From here until the [`Call`] drops, the version answering is not released.
    pub fn route(&self, model: &str, version: Option<&str>) -> Result<Call, InferError> {
        let start = Instant::now();
        let requested = match self.lookup(model, version) {
            Ok(m) => m,
            Err(e) => {
                let unknown = self.unknown.get_or_init(|| self.observers.unknown());
                unknown.started();
                unknown.finished(e.outcome(), None);
                return Err(e);
            }
        };
        let observer = self.observer(&requested);
        observer.started();
        let mut call = Call {
            using: None,
            requested: requested.name.clone(),
            via_fallback: false,
            observer,
            answering: None,
            start,
            outcome: None,
        };
        let target = match &requested.fallback {
            None => requested,
            Some(f) => match self.models.get(f, None) {
                Ok(fb) => {
                    call.via_fallback = true;
                    fb
                }
                Err(_) => {
                    return Err(call.refuse(InferError::Unavailable(format!(
                        "model {} is degraded and its fallback model {f} is not loaded",
                        requested.name
                    ))))
                }
            },
        };
        call.answering = Some(self.observer(&target));
        call.using = Some(target.enter());
        Ok(call)
    }
}

/// One routed request, from routing to its answer. Dropping it counts the outcome.
pub struct Call {
    using: Option<InFlight>,
    requested: String,
    via_fallback: bool,
    observer: Arc<dyn RequestObserver>,
    answering: Option<Arc<dyn RequestObserver>>,
    start: Instant,
    outcome: Option<Outcome>,
}

impl Call {
    /// The version that answers (the requested one, or its fallback): parse against its
    /// contract.
    pub fn model(&self) -> &Arc<LoadedModel> {
        // Set by `route` before a Call is handed out.
        match &self.using {
            Some(u) => u.model(),
            None => unreachable!("a routed call holds its version"),
        }
    }

    /// The model the client asked for.
    pub fn requested(&self) -> &str {
        &self.requested
    }

    /// The model the client asked for, when the answer comes from elsewhere or degraded (the
    /// answer says so).
    pub fn degraded_request_for(&self) -> Option<&str> {
        (self.via_fallback || self.model().degraded().is_some()).then_some(self.requested.as_str())
    }

    /// Counts this request as refused by the front end (bad input, a limit) and hands the
    /// error back.
    pub fn refuse(&mut self, e: InferError) -> InferError {
        self.outcome = Some(e.outcome());
        e
    }

    /// Sets the outcome the request is counted under (a front end's own refusal after the
    /// engine answered, e.g. an answer over the response limit).
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    /// Runs the request: the batch rule, then the queue, under a deadline (the model's
    /// `default_timeout` unless the client gave one) that covers the queue and execution even
    /// if no session ever picks the job up. Dropping the future skips the queued work.
    pub async fn infer(
        &mut self,
        inputs: Vec<Tensor>,
        timeout: Option<Duration>,
    ) -> Result<Answer, InferError> {
        let r = self.run(inputs, timeout).await;
        match &r {
            Ok(a) => {
                self.outcome = Some(Outcome::Success);
                if let Some(o) = &self.answering {
                    o.answered(a);
                }
            }
            Err(e) => self.outcome = Some(e.outcome()),
        }
        r
    }

    async fn run(
        &mut self,
        inputs: Vec<Tensor>,
        timeout: Option<Duration>,
    ) -> Result<Answer, InferError> {
        let model = self.model().clone();
        if model.batched {
            check_batch(&inputs, model.settings.max_batch_size)?;
        }
        let now = Instant::now();
        let timeout = timeout.unwrap_or(model.settings.default_timeout.get());
        let deadline = now + timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        model.submit(Job {
            inputs,
            deadline,
            enqueued: now,
            reply: tx,
        })?;
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(InferError::Internal(
                "the engine dropped the request".into(),
            )),
            Err(_) => {
                model
                    .stats()
                    .timed_out
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(InferError::Timeout {
                    waited_ms: now.elapsed().as_millis() as u64,
                })
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.observer.finished(
            self.outcome.unwrap_or(Outcome::Cancelled),
            Some(self.start.elapsed()),
        );
    }
}

/// The batch rule: every input has the same rows along dimension 0, at most `max_batch_size`.
pub fn check_batch(inputs: &[Tensor], max_batch_size: u32) -> Result<(), InferError> {
    let rows: Vec<u64> = inputs.iter().map(|t| t.rows()).collect();
    if rows.windows(2).any(|w| w[0] != w[1]) {
        return Err(InferError::BadRequest(format!(
            "inputs disagree on the batch dimension: {rows:?}"
        )));
    }
    if rows.first().copied().unwrap_or(0) > u64::from(max_batch_size) {
        return Err(InferError::BadRequest(format!(
            "batch of {} rows is larger than max_batch_size {max_batch_size}",
            rows[0]
        )));
    }
    Ok(())
}
