//! OpenMetrics at `/metrics` (`prometheus-client`): requests by model/version/outcome, latency
//! histograms (end to end, queue, compute), batch sizes, queue depth, in-flight requests,
//! session rebuilds, and each model's execution provider and degraded state.
//!
//! Invariant: labels carry model names, versions, outcomes and providers only — never request
//! content, tokens or client identities.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use airlock_engine::infer::{Observers, RequestObserver};
use airlock_engine::{Answer, LoadedModel, Models, Outcome as Ended};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// `success`, `bad_request`, `not_found`, `unavailable`, `rejected`, `timeout`, `error`,
    /// `cancelled` (the client went away before the answer).
    pub outcome: String,
}

/// Labels naming a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// Model name.
    pub model: String,
}

/// Labels naming a model version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelVersion {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
}

/// Labels of the per-model info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelInfo {
    /// Model name.
    pub model: String,
    /// Active version.
    pub version: String,
    /// Execution provider in use.
    pub provider: String,
    /// `true` when running degraded.
    pub degraded: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Labels of a lifecycle event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// `staged`, `validation_passed`, `validation_failed`, `promoted`, `rolled_back`.
    pub event: String,
}

/// What the telemetry store says about itself, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreGauges {
    /// 1 while history is not being written (full disk, unwritable directory, store not open).
    pub paused: bool,
    /// Bytes of every file of the store.
    pub bytes: u64,
    /// Its budget.
    pub max_bytes: u64,
    /// Segment files found damaged.
    pub damaged_segments: u64,
    /// Chunks whose checksum did not match.
    pub damaged_chunks: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Samples dropped (beyond `max_series`).
    pub dropped_samples: u64,
    /// Segments deleted to stay within the budget.
    pub budget_deletions: u64,
}

/// Every metric the daemon exports.
pub struct Metrics {
    /// Requests by outcome.
    pub requests: Family<Outcome, Counter>,
    /// End-to-end latency of inference requests.
    pub request_seconds: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Time in the queue.
    pub queue_seconds: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Time the batch ran.
    pub compute_seconds: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Rows per executed batch (as seen by each request).
    pub batch_size: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Requests being handled.
    pub in_flight: Family<ModelLabel, Gauge<i64, AtomicI64>>,
    queue_depth: Family<ModelLabel, Gauge<i64, AtomicI64>>,
    rebuilds: Family<ModelLabel, Gauge<i64, AtomicI64>>,
    info: Family<ModelInfo, Gauge<i64, AtomicI64>>,
    unavailable: Family<ModelVersion, Gauge<i64, AtomicI64>>,
    lifecycle_events: Family<EventLabel, Counter>,
    store: [Gauge<i64, AtomicI64>; 8],
    registry: Registry,
    /// One render at a time (a render clears and refills the per-model gauges).
    rendering: std::sync::Mutex<()>,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("airlock");
        let requests = Family::<Outcome, Counter>::default();
        let request_seconds =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_histogram,
            );
        let queue_seconds =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_histogram,
            );
        let compute_seconds =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_histogram,
            );
        let batch_size =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 9))
            });
        let in_flight = Family::<ModelLabel, Gauge<i64, AtomicI64>>::default();
        let queue_depth = Family::<ModelLabel, Gauge<i64, AtomicI64>>::default();
        let rebuilds = Family::<ModelLabel, Gauge<i64, AtomicI64>>::default();
        let info = Family::<ModelInfo, Gauge<i64, AtomicI64>>::default();
        let unavailable = Family::<ModelVersion, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "inference_requests",
            "Inference requests by model, version and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "End-to-end inference latency",
            request_seconds.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time requests waited in the model's queue",
            queue_seconds.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "Time the batch a request ran in took",
            compute_seconds.clone(),
        );
        registry.register(
            "batch_size",
            "Rows in the batch each request ran in",
            batch_size.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Inference requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting in the model's queue",
            queue_depth.clone(),
        );
        registry.register(
            "session_rebuilds",
            "Sessions rebuilt after a fatal run-time error",
            rebuilds.clone(),
        );
        registry.register(
            "model_info",
            "The active version of each model, its provider and degraded state",
            info.clone(),
        );
        registry.register(
            "model_unavailable",
            "1 for each model whose active version cannot be served (a damaged store file, a model the runtime refuses)",
            unavailable.clone(),
        );
        let lifecycle_events = Family::<EventLabel, Counter>::default();
        registry.register(
            "lifecycle_events",
            "Lifecycle steps that happened: staged, validation_passed, validation_failed, promoted, rolled_back",
            lifecycle_events.clone(),
        );
        let store: [Gauge<i64, AtomicI64>; 8] = Default::default();
        for (g, (name, help)) in store.iter().zip([
            ("telemetry_paused", "1 while the local telemetry store writes no history (full disk, unwritable directory, not open); inference is unaffected"),
            ("telemetry_bytes", "Bytes of every file of the local telemetry store"),
            ("telemetry_max_bytes", "The telemetry store's byte budget ([telemetry] max_bytes)"),
            ("telemetry_damaged_segments", "Telemetry segment files found damaged (their intact blocks are still read)"),
            ("telemetry_damaged_chunks", "Telemetry chunks whose checksum did not match when read"),
            ("telemetry_write_errors", "Telemetry writes that failed"),
            ("telemetry_dropped_samples", "Telemetry samples dropped because [telemetry] max_series was reached"),
            ("telemetry_budget_deletions", "Telemetry segments deleted to stay within the byte budget"),
        ]) {
            registry.register(name, help, g.clone());
        }
        Arc::new(Metrics {
            lifecycle_events,
            store,
            rendering: std::sync::Mutex::new(()),
            unavailable,
            requests,
            request_seconds,
            queue_seconds,
            compute_seconds,
            batch_size,
            in_flight,
            queue_depth,
            rebuilds,
            info,
            registry,
        })
    }

    fn observer(self: &Arc<Self>, model: &str, version: &str) -> ModelMetrics {
        let label = ModelLabel {
            model: model.to_string(),
        };
        ModelMetrics {
            metrics: self.clone(),
            model: model.to_string(),
            version: version.to_string(),
            label,
            outcomes: Default::default(),
            in_flight: OnceLock::new(),
            request_seconds: OnceLock::new(),
            queue_seconds: OnceLock::new(),
            compute_seconds: OnceLock::new(),
            batch_size: OnceLock::new(),
        }
    }

    /// Counts one lifecycle event (`staged`, `validation_passed`, …).
    pub fn lifecycle_event(&self, event: &str) {
        self.lifecycle_events
            .get_or_create(&EventLabel {
                event: event.to_string(),
            })
            .inc();
    }

    /// Sets the telemetry store's gauges.
    pub fn set_store(&self, g: &StoreGauges) {
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        for (gauge, v) in self.store.iter().zip([
            u64::from(g.paused),
            g.bytes,
            g.max_bytes,
            g.damaged_segments,
            g.damaged_chunks,
            g.write_errors,
            g.dropped_samples,
            g.budget_deletions,
        ]) {
            gauge.set(clamp(v));
        }
    }

    /// The OpenMetrics text, with the gauges read from the engine at scrape time.
    pub fn render(&self, models: &Models) -> String {
        let _one = self.rendering.lock().unwrap_or_else(|p| p.into_inner());
        self.info.clear();
        self.unavailable.clear();
        for (name, u) in models.unavailable().iter() {
            self.unavailable
                .get_or_create(&ModelVersion {
                    model: name.clone(),
                    version: u.version.to_string(),
                })
                .set(1);
            self.info
                .get_or_create(&ModelInfo {
                    model: name.clone(),
                    version: u.version.to_string(),
                    provider: "none".into(),
                    degraded: "true".into(),
                })
                .set(1);
        }
        for (name, slot) in models.snapshot().iter() {
            let m = &slot.active;
            let label = ModelLabel {
                model: name.clone(),
            };
            self.queue_depth
                .get_or_create(&label)
                .set(m.queue_depth() as i64);
            self.rebuilds
                .get_or_create(&label)
                .set(m.stats().rebuilds.load(Ordering::Relaxed) as i64);
            self.info
                .get_or_create(&ModelInfo {
                    model: name.clone(),
                    version: m.version.to_string(),
                    provider: format!("{:?}", m.provider).to_lowercase(),
                    degraded: m.degraded().is_some().to_string(),
                })
                .set(1);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One model version's metric handles, each resolved once, when first used (no label lookup per
/// request, and no series before it has something to say).
struct ModelMetrics {
    metrics: Arc<Metrics>,
    model: String,
    version: String,
    label: ModelLabel,
    outcomes: [OnceLock<Counter>; Ended::ALL.len()],
    in_flight: OnceLock<Gauge<i64, AtomicI64>>,
    request_seconds: OnceLock<Histogram>,
    queue_seconds: OnceLock<Histogram>,
    compute_seconds: OnceLock<Histogram>,
    batch_size: OnceLock<Histogram>,
}

type Seconds = Family<ModelLabel, Histogram, fn() -> Histogram>;

impl ModelMetrics {
    fn in_flight(&self) -> &Gauge<i64, AtomicI64> {
        self.in_flight
            .get_or_init(|| self.metrics.in_flight.get_or_create(&self.label).clone())
    }

    fn histogram<'a>(&self, cell: &'a OnceLock<Histogram>, family: &Seconds) -> &'a Histogram {
        cell.get_or_init(|| family.get_or_create(&self.label).clone())
    }
}

impl RequestObserver for ModelMetrics {
    fn started(&self) {
        self.in_flight().inc();
    }

    fn finished(&self, outcome: Ended, elapsed: Option<Duration>) {
        self.in_flight().dec();
        let i = Ended::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i]
            .get_or_init(|| {
                self.metrics
                    .requests
                    .get_or_create(&Outcome {
                        model: self.model.clone(),
                        version: self.version.clone(),
                        outcome: outcome.as_str().into(),
                    })
                    .clone()
            })
            .inc();
        if let Some(e) = elapsed {
            self.histogram(&self.request_seconds, &self.metrics.request_seconds)
                .observe(e.as_secs_f64());
        }
    }

    fn answered(&self, a: &Answer) {
        let m = &self.metrics;
        self.histogram(&self.queue_seconds, &m.queue_seconds)
            .observe(a.queue.as_secs_f64());
        self.histogram(&self.compute_seconds, &m.compute_seconds)
            .observe(a.compute.as_secs_f64());
        self.histogram(&self.batch_size, &m.batch_size)
            .observe(a.batch_rows as f64);
    }
}

/// The engine's observers, counting into [`Metrics`].
pub struct Observe(pub Arc<Metrics>);

impl Observers for Observe {
    fn model(&self, m: &LoadedModel) -> Arc<dyn RequestObserver> {
        Arc::new(self.0.observer(&m.name, &m.version.to_string()))
    }

    /// Requests naming no loaded model are counted under `_unknown`, so that clients cannot
    /// create label values at will.
    fn unknown(&self) -> Arc<dyn RequestObserver> {
        Arc::new(self.0.observer("_unknown", ""))
    }
}
