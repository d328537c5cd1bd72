//! `airlock-config`: the typed configuration of the appliance (`/etc/airlock/airlockd.toml`).
//!
//! Invariant: a [`Config`] value is always valid. Parsing rejects unknown keys, wrong types and
//! impossible values with a [`ConfigError`] that names the key, the line and what is allowed;
//! nothing downstream re-checks what the types already guarantee.
//!
//! Every section has defaults, so an empty file is a valid configuration; `--print-config`
//! shows the effective one.
#![deny(missing_docs)]

mod units;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use units::{ByteSize, HumanDuration};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where state lives.
    pub paths: Paths,
    /// Bundle import limits and disk reserve.
    pub bundles: Bundles,
    /// The state database.
    pub state: State,
    /// The offline time model.
    pub time: TimeConfig,
    /// Who must approve a model version before it may serve.
    pub approval: Approval,
    /// The HTTP server.
    pub server: Server,
    /// The gRPC server (the Open Inference Protocol's `GRPCInferenceService`).
    pub grpc: Grpc,
    /// Where ONNX Runtime comes from.
    pub engine: Engine,
    /// Serving settings for every model (each key can be overridden per model).
    pub serving: Serving,
    /// Per-model overrides of `[serving]`, as `[models."NAME"]`.
    pub models: std::collections::BTreeMap<String, ServingOverrides>,
    /// Log files.
    pub logging: Logging,
    /// The local admin API.
    pub admin: Admin,
    /// Promotion, rollback and retention.
    pub lifecycle: Lifecycle,
    /// How the daemon itself runs.
    pub daemon: Daemon,
    /// Bundles on removable media (USB sticks), found through UDisks2.
    pub media: Media,
    /// The local telemetry store: metric history and traces on the appliance.
    pub telemetry: Telemetry,
}

/// `[telemetry]`: the appliance's own metric history (fixed-step tiers of aggregates in
/// append-only segment files under the data directory) and its trace store.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// `false`: no history is kept (`/metrics` is unaffected).
    pub enabled: bool,
    /// Directory of the store; `""` means `<data_dir>/telemetry`.
    pub dir: PathBuf,
    /// Every byte the store writes counts against this; the oldest segment goes first.
    pub max_bytes: ByteSize,
    /// Step of tier 0 (how often every series is sampled).
    pub tier0_step: HumanDuration,
    /// How long tier 0 is kept.
    pub tier0_keep: HumanDuration,
    /// Step of tier 1 (a multiple of `tier0_step`).
    pub tier1_step: HumanDuration,
    /// How long tier 1 is kept.
    pub tier1_keep: HumanDuration,
    /// Step of tier 2 (a multiple of `tier1_step`).
    pub tier2_step: HumanDuration,
    /// How long tier 2 is kept.
    pub tier2_keep: HumanDuration,
    /// How often the newest samples are written to the store's journal: what a crash can lose.
    pub flush_interval: HumanDuration,
    /// Most series the store tracks; samples of further series are dropped (one warning).
    pub max_series: u32,
    /// Requests or lifecycle steps slower than this keep their trace.
    pub slow_trace: HumanDuration,
    /// Traces kept (the newest, every failed one and every slow one, up to this many in all).
    pub max_traces: u32,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            enabled: true,
            dir: PathBuf::new(),
            max_bytes: ByteSize(1 << 30),
            tier0_step: HumanDuration::from_secs(1),
            tier0_keep: HumanDuration::from_secs(3600),
            tier1_step: HumanDuration::from_secs(60),
            tier1_keep: HumanDuration::from_secs(7 * 86_400),
            tier2_step: HumanDuration::from_secs(3600),
            tier2_keep: HumanDuration::from_secs(365 * 86_400),
            flush_interval: HumanDuration::from_secs(5),
            max_series: 4096,
            slow_trace: HumanDuration::from_secs(1),
            max_traces: 10_000,
        }
    }
}

impl Telemetry {
    /// Pages hold this many slots of tier 0, 1 and 2 (5 min, 1 h and 1 d with the default steps).
    pub const PAGE_SLOTS: [u64; 3] = [300, 60, 24];

    /// The store's directory for a data directory.
    pub fn dir_for(&self, data_dir: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() {
            data_dir.join("telemetry")
        } else {
            self.dir.clone()
        }
    }

    /// The tiers as (step, keep) in whole seconds.
    pub fn tiers(&self) -> [(u64, u64); 3] {
        [
            (self.tier0_step, self.tier0_keep),
            (self.tier1_step, self.tier1_keep),
            (self.tier2_step, self.tier2_keep),
        ]
        .map(|(s, k)| (s.get().as_secs(), k.get().as_secs()))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |k: String, m: String| Err((k, m));
        let us = |d: HumanDuration| d.get().as_micros();
        for (i, (step, keep)) in [
            (self.tier0_step, self.tier0_keep),
            (self.tier1_step, self.tier1_keep),
            (self.tier2_step, self.tier2_keep),
        ]
        .into_iter()
        .enumerate()
        {
            if us(step) == 0 || us(step) % 1_000_000 != 0 {
                return fail(
                    format!("telemetry.tier{i}_step"),
                    format!("{step} is not a whole number of seconds of at least 1s"),
                );
            }
            if us(step) > 86_400_000_000 {
                return fail(
                    format!("telemetry.tier{i}_step"),
                    format!("{step} is longer than a day"),
                );
            }
            if us(keep) < us(step) * u128::from(Self::PAGE_SLOTS[i]) {
                return fail(
                    format!("telemetry.tier{i}_keep"),
                    format!(
                        "{keep} is shorter than one page of this tier ({} steps of {step})",
                        Self::PAGE_SLOTS[i]
                    ),
                );
            }
            if us(keep) > 20 * 365 * 86_400_000_000 {
                return fail(
                    format!("telemetry.tier{i}_keep"),
                    format!("{keep} is longer than 20 years"),
                );
            }
        }
        let t = self.tiers();
        for i in 1..3 {
            let (step, prev) = (t[i].0, t[i - 1].0);
            if step % prev != 0 || step == prev {
                return fail(
                    format!("telemetry.tier{i}_step"),
                    format!(
                        "{}s is not a larger multiple of tier{}_step ({prev}s)",
                        step,
                        i - 1
                    ),
                );
            }
            let page = step * Self::PAGE_SLOTS[i];
            let prev_page = prev * Self::PAGE_SLOTS[i - 1];
            if page % prev_page != 0 {
                return fail(
                    format!("telemetry.tier{i}_step"),
                    format!(
                        "a page of tier {i} ({} steps, {page}s) is not a whole number of pages \
                         of tier {} ({prev_page}s)",
                        Self::PAGE_SLOTS[i],
                        i - 1
                    ),
                );
            }
            // The open page of a tier is rebuilt from the tier below after a restart.
            if t[i - 1].1 < page {
                return fail(
                    format!("telemetry.tier{}_keep", i - 1),
                    format!(
                        "{}s is shorter than a page of tier {i} ({page}s), which is rebuilt \
                         from this tier after a restart",
                        t[i - 1].1
                    ),
                );
            }
        }
        if us(self.flush_interval) < 1_000_000 || self.flush_interval.get().as_secs() > 300 {
            return fail(
                "telemetry.flush_interval".into(),
                format!(
                    "{} is out of range (allowed: 1s to 5m)",
                    self.flush_interval
                ),
            );
        }
        if self.max_bytes.0 < 1 << 20 {
            return fail(
                "telemetry.max_bytes".into(),
                format!("{} is less than the smallest store (1MiB)", self.max_bytes),
            );
        }
        if self.max_series == 0 || self.max_series > 1_000_000 {
            return fail(
                "telemetry.max_series".into(),
                format!(
                    "{} is out of range (allowed: 1 to 1000000)",
                    self.max_series
                ),
            );
        }
        if self.max_traces > 1_000_000 {
            return fail(
                "telemetry.max_traces".into(),
                format!(
                    "{} is out of range (allowed: 0 to 1000000)",
                    self.max_traces
                ),
            );
        }
        Ok(())
    }
}

/// `[media]`: removable media, watched through UDisks2 on the system bus.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    /// Watch for removable filesystems and list the bundles on them.
    pub watch: bool,
    /// Ask UDisks2 to mount an unmounted removable filesystem, read-only
    /// (`ro,nosuid,nodev,noexec`). Never writable.
    pub mount: bool,
    /// Import every bundle found to `staged` (validation follows; approval stays with people).
    /// Off: bundles are only offered, and an operator imports them.
    pub auto_stage: bool,
    /// Directory levels below the mount point that are searched.
    pub max_depth: u32,
    /// Directory entries examined per medium.
    pub max_entries: u32,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            watch: true,
            mount: true,
            auto_stage: false,
            max_depth: 4,
            max_entries: 10_000,
        }
    }
}

/// `[daemon]`: how the daemon process runs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// Allow production mode to run as root (off: the unit runs it as the `airlock` user).
    pub allow_root: bool,
}

/// `[admin]`: the admin API on a Unix socket (the peer's uid and groups map to roles) and on
/// the TLS listener (bearer tokens with `admin:ROLE` scopes).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// The socket's path.
    pub socket: PathBuf,
    /// The socket file's permission bits (who may connect at all; roles decide what they may do).
    pub socket_mode: u32,
    /// Who has which role: keys `uid:N`, `gid:N` or `group:NAME` (any of the peer's groups),
    /// values `viewer`, `operator`, `approver` or `admin`. A peer holds every role it matches.
    pub roles: std::collections::BTreeMap<String, Role>,
    /// Connections open at once on the socket.
    pub max_connections: u32,
    /// Connections open at once on the socket from one uid (root's included).
    pub max_connections_per_uid: u32,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            socket: PathBuf::from("/run/airlock/admin.sock"),
            socket_mode: 0o660,
            roles: [("uid:0".to_string(), Role::Admin)].into(),
            max_connections: 64,
            max_connections_per_uid: 8,
        }
    }
}

/// A role in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything (models, versions, reports, audit, trust root).
    Viewer,
    /// Viewer, plus import, promote and rollback.
    Operator,
    /// Viewer, plus approve and reject.
    Approver,
    /// Everything, plus tokens and the trust root.
    Admin,
}

impl Role {
    /// The role's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "approver" => Role::Approver,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// `[lifecycle]`: how versions are put into and out of service.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// How long requests already running on a replaced version may take to finish before its
    /// sessions are released anyway.
    pub drain_timeout: HumanDuration,
    /// Approved versions kept on disk per model (the active one and the rollback target are
    /// always kept).
    pub retain_versions: u32,
    /// After a promotion, how long the new version is watched for automatic rollback (`0s`: off).
    pub auto_rollback_window: HumanDuration,
    /// Automatic rollback when more than this share of the new version's requests fail (0–1).
    pub auto_rollback_error_rate: f64,
    /// Automatic rollback when the new version's mean compute latency exceeds this (`0s`: off).
    pub auto_rollback_latency: HumanDuration,
    /// Requests the new version must have answered before the thresholds are judged.
    pub auto_rollback_min_requests: u64,
    /// Timing runs per batch size when validation measures latency.
    pub validation_latency_runs: u32,
    /// Longest one validation may run (its process is killed and the validation fails).
    pub validation_timeout: HumanDuration,
    /// Most memory (resident) the validation process may use.
    pub validation_memory: ByteSize,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            drain_timeout: HumanDuration::from_secs(30),
            retain_versions: 3,
            auto_rollback_window: HumanDuration::from_secs(600),
            auto_rollback_error_rate: 0.05,
            auto_rollback_latency: HumanDuration::from_secs(0),
            auto_rollback_min_requests: 20,
            validation_latency_runs: 20,
            validation_timeout: HumanDuration::from_secs(600),
            validation_memory: ByteSize(8 << 30),
        }
    }
}

/// `[logging]`: JSON log files beside stderr (which journald collects).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// Directory of the JSON log files; `""` turns them off (stderr only).
    pub dir: PathBuf,
    /// Size at which `airlockd.log` is rotated.
    pub max_file_size: ByteSize,
    /// Files kept (the current one included): the directory's size cap is their product.
    pub max_files: u32,
    /// Filter (`info`, `airlockd=debug,info`, …); the `AIRLOCK_LOG` environment variable wins.
    pub level: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            dir: PathBuf::from("/var/log/airlock"),
            max_file_size: ByteSize(64 << 20),
            max_files: 8,
            level: "info".into(),
        }
    }
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Listen address (production: the TLS listener).
    pub listen: String,
    /// Largest request body accepted (checked before buffering).
    pub max_body_size: ByteSize,
    /// Time a client has to send the request head (slow-loris protection).
    pub header_read_timeout: HumanDuration,
    /// On stop, how long requests in flight may take to finish before the daemon exits anyway.
    pub shutdown_timeout: HumanDuration,
    /// After `airlockctl token rotate`, how long the previous secret keeps working.
    pub token_overlap: HumanDuration,
    /// Serve TLS (certificate and key in `<data_dir>/tls/`). `false` is allowed only on a
    /// loopback address (e.g. behind a local TLS-terminating proxy).
    pub tls: bool,
    /// Longest a request body may go without a byte arriving; on both listeners.
    pub body_timeout: HumanDuration,
    /// Slowest a request body may arrive, in bytes per second on average, once its first
    /// `body_timeout` has passed (a trickling body is cut off with 408).
    pub body_min_rate: ByteSize,
    /// Longest one write of a response may stay blocked on a client that does not read.
    pub send_timeout: HumanDuration,
    /// Connections open at once on the inference listener; more are closed at accept. Kept
    /// below the file-descriptor limit (airlockd lowers it, with a warning, where it is not).
    pub max_connections: u32,
    /// Largest response body (an answer above it is refused rather than built).
    pub max_response_size: ByteSize,
    /// Threads that run the listeners, connections and request handling (HTTP, gRPC, admin);
    /// ONNX Runtime's threads are separate. 0: half the cores, at least 1 and at most 8 (a
    /// worker more than the load needs costs a wake-up of a sibling on every request).
    pub io_threads: u32,
}

/// Most `[server] io_threads` one may ask for.
pub const MAX_IO_THREADS: u32 = 256;

impl Server {
    /// The number of I/O threads to start on a machine with `cores` cores.
    pub fn io_threads_for(&self, cores: usize) -> usize {
        match self.io_threads {
            0 => (cores / 2).clamp(1, 8),
            n => n as usize,
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "0.0.0.0:8443".into(),
            max_body_size: ByteSize(64 << 20),
            header_read_timeout: HumanDuration::from_secs(10),
            shutdown_timeout: HumanDuration::from_secs(30),
            token_overlap: HumanDuration::from_secs(300),
            tls: true,
            body_timeout: HumanDuration::from_secs(10),
            body_min_rate: ByteSize(16 << 10),
            send_timeout: HumanDuration::from_secs(30),
            max_connections: 1024,
            max_response_size: ByteSize(64 << 20),
            io_threads: 0,
        }
    }
}

/// `[grpc]`: the Open Inference Protocol over gRPC, on a listener of its own (HTTP/2). It takes
/// the same tokens, TLS certificate (`[server] tls`) and connection limits as `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    /// Serve gRPC at all.
    pub enabled: bool,
    /// Listen address (Triton's gRPC port by default; `--dev`: 127.0.0.1:8001).
    pub listen: String,
    /// Largest message a client may send (a request with its raw tensor contents); larger
    /// ones are refused before they are buffered.
    pub max_message_size: ByteSize,
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            enabled: true,
            listen: "0.0.0.0:8001".into(),
            max_message_size: ByteSize(64 << 20),
        }
    }
}

/// `[engine]`: the ONNX Runtime library.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Engine {
    /// Explicit path of `libonnxruntime.so` (first in the search order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_library: Option<PathBuf>,
}

/// The execution provider a model runs on.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// CPU.
    Cpu,
    /// CUDA GPU.
    Cuda,
}

/// What happens when a model's GPU path fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// Run the same model on the CPU provider (degraded).
    Cpu,
    /// Fail fast with 503.
    Fail,
    /// Hold requests up to their deadline while the engine recovers.
    Queue,
    /// Route to another (smaller) model; answers are marked degraded.
    Model(String),
}

impl<'de> Deserialize<'de> for OnFailure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "cpu" => Ok(OnFailure::Cpu),
            "fail" => Ok(OnFailure::Fail),
            "queue" => Ok(OnFailure::Queue),
            other => match other.strip_prefix("model:") {
                Some(name) if !name.is_empty() => Ok(OnFailure::Model(name.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "invalid on_failure {other:?} (allowed: \"cpu\", \"fail\", \"queue\", \"model:NAME\")"
                ))),
            },
        }
    }
}

impl Serialize for OnFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OnFailure::Cpu => s.serialize_str("cpu"),
            OnFailure::Fail => s.serialize_str("fail"),
            OnFailure::Queue => s.serialize_str("queue"),
            OnFailure::Model(m) => s.serialize_str(&format!("model:{m}")),
        }
    }
}

macro_rules! serving_settings {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// `[serving]`: how every model is served unless `[models."NAME"]` overrides a key.
        #[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct Serving {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Default for Serving {
            fn default() -> Self {
                Serving { $( $field: $default, )* }
            }
        }

        /// `[models."NAME"]`: per-model overrides of `[serving]` (same keys, all optional).
        #[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct ServingOverrides {
            $( $(#[$doc])* #[serde(skip_serializing_if = "Option::is_none")] pub $field: Option<$ty>, )*
        }

        impl Serving {
            /// These settings with `o`'s keys applied on top.
            pub fn with(&self, o: &ServingOverrides) -> Serving {
                Serving { $( $field: o.$field.clone().unwrap_or_else(|| self.$field.clone()), )* }
            }
        }
    };
}

serving_settings! {
    /// Execution provider: `cpu` or `cuda`.
    execution_provider: Provider = Provider::Cpu,
    /// CUDA device id.
    device_id: u32 = 0,
    /// CUDA memory arena limit (0: no limit).
    gpu_mem_limit: ByteSize = ByteSize(0),
    /// cuDNN convolution algorithm search: `exhaustive`, `heuristic` or `default`.
    cudnn_conv_search: String = "heuristic".to_string(),
    /// Intra-op threads per CPU session (0: ONNX Runtime's default).
    intra_op_threads: u32 = 1,
    /// Let ONNX Runtime's intra-op threads spin while waiting for work (off by default: the
    /// daemon shares its cores with the HTTP stack, and spinning threads take them away).
    intra_op_spinning: bool = false,
    /// Sessions (instances) per model version, each on its own thread.
    instances: u32 = 1,
    /// Largest batch the dynamic batcher forms (1: no batching).
    max_batch_size: u32 = 8,
    /// Batch sizes dispatched as soon as they are reached.
    preferred_batch_sizes: Vec<u32> = Vec::new(),
    /// How long the first request of a batch may wait for others (0: batch only what is
    /// already queued, never wait).
    max_queue_delay: HumanDuration = HumanDuration::from_micros(0),
    /// Requests queued per model before new ones get 429.
    queue_capacity: u32 = 256,
    /// Deadline (queue + execution) when a request gives none.
    default_timeout: HumanDuration = HumanDuration::from_secs(30),
    /// What to do when the GPU path fails: `cpu`, `fail`, `queue` or `model:NAME`.
    on_failure: OnFailure = OnFailure::Cpu,
    /// Warm-up runs per session at load.
    warmup_runs: u32 = 1,
}

/// `[paths]`: directories and files the daemon owns.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Everything that changes at run time: sled state, model store, staging, TLS material,
    /// the current trust root.
    pub data_dir: PathBuf,
    /// The initial trust root shipped with the image, copied to `data_dir` on first start.
    pub initial_trust_root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            data_dir: PathBuf::from("/var/lib/airlock"),
            initial_trust_root: PathBuf::from("/usr/share/airlock/trust/root.json"),
        }
    }
}

/// `[bundles]`: the limits every bundle is read under (see `docs/bundle-format.md`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Bundles {
    /// Largest accepted `manifest.json`.
    pub max_manifest_size: ByteSize,
    /// Largest accepted `signatures.json`.
    pub max_signatures_size: ByteSize,
    /// Most payload files in one bundle.
    pub max_entries: u32,
    /// Largest single payload file.
    pub max_file_size: ByteSize,
    /// Largest sum of payload file sizes.
    pub max_total_size: ByteSize,
    /// Largest zstd window (log2 of bytes) the decoder will allocate; bounds memory.
    pub max_zstd_window_log: u32,
    /// Free space that must remain on the data filesystem after an import.
    pub reserve_free_space: ByteSize,
}

impl Default for Bundles {
    fn default() -> Self {
        Bundles {
            max_manifest_size: ByteSize(1 << 20),
            max_signatures_size: ByteSize(256 << 10),
            max_entries: 4096,
            max_file_size: ByteSize(64 << 30),
            max_total_size: ByteSize(128 << 30),
            max_zstd_window_log: 25,
            reserve_free_space: ByteSize(1 << 30),
        }
    }
}

/// `[state]`: the state database (registry, approvals, audit log, tokens; sled under
/// `DATA/state`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// Free space the state database needs on the data filesystem. Below it airlockd does not
    /// open the database at start (a full disk could leave it unopenable) and refuses state
    /// changes (507) before starting them; imports leave this much free as well.
    pub reserve_free_space: ByteSize,
}

impl Default for State {
    fn default() -> Self {
        State {
            reserve_free_space: ByteSize(64 << 20),
        }
    }
}

/// How expiry dates (bundles, trust root) are enforced. An explicit mode, never a silent skip.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryEnforcement {
    /// Anything past its expiry is refused.
    Strict,
    /// Refused only once past expiry plus the grace window; inside the window, a warning.
    Grace,
    /// Never refused for expiry; every expired item is logged as a warning and audited.
    Warn,
}

/// `[time]`: the offline time model (see `docs/security.md`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// How expiry is enforced.
    pub enforcement: ExpiryEnforcement,
    /// The grace window used by `enforcement = "grace"`.
    pub grace: HumanDuration,
    /// How far a signed time (a bundle's `issued_at`) may be ahead of this appliance's clock:
    /// a bundle issued further in the future is refused and never moves the time floor; a
    /// clock further behind the floor is reported until an admin resets the floor.
    pub max_clock_skew: HumanDuration,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            enforcement: ExpiryEnforcement::Grace,
            grace: HumanDuration::from_secs(7 * 24 * 3600),
            max_clock_skew: HumanDuration::from_secs(24 * 3600),
        }
    }
}

/// The approval mode: people, or (development only) nobody.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalMode {
    /// `approval.approvers` distinct people, none of them the importer, must approve.
    Approvers,
    /// Like `approvers`, and each approval must carry an Ed25519 signature by a key of the trust
    /// root's `approver` role over the manifest's and the validation report's SHA-256; a version
    /// is approved when the role's threshold of distinct keys signed (re-checked at promotion).
    Signed,
    /// Validated versions are approved automatically. For development and unattended labs only;
    /// every automatic approval is audited as such.
    UnattendedDev,
}

/// `[approval]`: the policy a validated version must meet before it may be promoted.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Approval {
    /// Which policy applies.
    pub mode: ApprovalMode,
    /// Number of distinct approvers (mode `approvers`, default 1): at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvers: Option<u32>,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            mode: ApprovalMode::Approvers,
            approvers: None,
        }
    }
}

impl Approval {
    /// How many distinct approvers a version needs: 0 only in `unattended-dev` mode.
    pub fn required_approvers(&self) -> u32 {
        match self.mode {
            ApprovalMode::Approvers | ApprovalMode::Signed => self.approvers.unwrap_or(1),
            ApprovalMode::UnattendedDev => 0,
        }
    }
}

/// A configuration error: which key, where, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{location}: {message}")]
pub struct ConfigError {
    /// The dotted key path (`time.enforcement`), or empty for a syntax error.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What was wrong and what is allowed.
    pub message: String,
    origin: String,
    location: String,
}

impl ConfigError {
    fn new(origin: Option<&Path>, key: String, line: Option<usize>, message: String) -> Self {
        let origin = origin
            .map(|p| format!("{}: ", p.display()))
            .unwrap_or_default();
        let location = match (&line, key.is_empty()) {
            (Some(l), false) => format!("line {l}, key `{key}`"),
            (Some(l), true) => format!("line {l}"),
            (None, false) => format!("key `{key}`"),
            (None, true) => "configuration".to_string(),
        };
        ConfigError {
            key,
            line,
            message,
            origin,
            location,
        }
    }
}

/// Errors from [`load`]: the file could not be read, or its content is not valid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the file failed.
    #[error("cannot read configuration {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl Config {
    /// The configuration as TOML (every key, defaults included): what `--print-config` shows.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Parses and validates a configuration from TOML text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_origin(text, None)
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_with_origin(&text, Some(path))?)
}

fn parse_with_origin(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::new(text);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(text, s.start));
        ConfigError::new(origin, key, line, inner.message().trim().to_string())
    })?;
    config.validate().map_err(|(key, message)| {
        let line = line_of_key(text, &key);
        ConfigError::new(origin, key, line, message)
    })?;
    Ok(config)
}

impl Config {
    /// Cross-field rules that a single field's type cannot express.
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |k: &str, m: String| Err((k.to_string(), m));
        self.telemetry.validate()?;
        match (self.approval.mode, self.approval.approvers) {
            (ApprovalMode::Approvers, Some(0)) => {
                return fail(
                    "approval.approvers",
                    "0 would approve automatically; that needs mode = \"unattended-dev\" \
                     (allowed: 1 or more with mode = \"approvers\")"
                        .into(),
                )
            }
            (ApprovalMode::UnattendedDev, Some(n)) if n != 0 => {
                return fail(
                    "approval.approvers",
                    format!(
                        "mode = \"unattended-dev\" approves automatically, so approvers must be 0 \
                         or absent (got {n})"
                    ),
                )
            }
            _ => {}
        }
        for k in self.admin.roles.keys() {
            let ok = match k.split_once(':') {
                Some(("uid" | "gid", n)) => n.parse::<u32>().is_ok(),
                Some(("group", n)) => !n.is_empty(),
                _ => false,
            };
            if !ok {
                return fail(
                    &format!("admin.roles.{k}"),
                    format!(
                        "{k:?} is not an identity (allowed: \"uid:N\", \"gid:N\", \"group:NAME\")"
                    ),
                );
            }
        }
        if self.admin.socket_mode > 0o777 {
            return fail(
                "admin.socket_mode",
                format!(
                    "{:o} is not a permission mode (allowed: 0o000 to 0o777)",
                    self.admin.socket_mode
                ),
            );
        }
        let sv = &self.server;
        for (k, v) in [
            ("server.max_connections", sv.max_connections),
            ("admin.max_connections", self.admin.max_connections),
            (
                "admin.max_connections_per_uid",
                self.admin.max_connections_per_uid,
            ),
        ] {
            if v == 0 {
                return fail(k, "must be at least 1".into());
            }
        }
        if sv.io_threads > MAX_IO_THREADS {
            return fail(
                "server.io_threads",
                format!(
                    "{} is more than {MAX_IO_THREADS} (0: half the cores, at most 8)",
                    sv.io_threads
                ),
            );
        }
        if self.admin.max_connections_per_uid > self.admin.max_connections {
            return fail(
                "admin.max_connections_per_uid",
                format!(
                    "{} is larger than admin.max_connections ({})",
                    self.admin.max_connections_per_uid, self.admin.max_connections
                ),
            );
        }
        for (k, v) in [
            ("server.body_min_rate", sv.body_min_rate),
            ("server.max_response_size", sv.max_response_size),
            ("server.max_body_size", sv.max_body_size),
        ] {
            if v.0 == 0 {
                return fail(k, "must be larger than 0".into());
            }
        }
        for (k, v) in [
            ("time.max_clock_skew", self.time.max_clock_skew),
            ("server.body_timeout", sv.body_timeout),
            ("server.send_timeout", sv.send_timeout),
            ("server.header_read_timeout", sv.header_read_timeout),
        ] {
            if v.get().is_zero() {
                return fail(k, "must be longer than 0 s".into());
            }
        }
        let l = &self.lifecycle;
        if !(0.0..=1.0).contains(&l.auto_rollback_error_rate) {
            return fail(
                "lifecycle.auto_rollback_error_rate",
                format!(
                    "{} is not a share (allowed: 0 to 1)",
                    l.auto_rollback_error_rate
                ),
            );
        }
        if l.retain_versions == 0 {
            return fail(
                "lifecycle.retain_versions",
                "must be at least 1 (the active version)".into(),
            );
        }
        let b = &self.bundles;
        if !(10..=31).contains(&b.max_zstd_window_log) {
            return fail(
                "bundles.max_zstd_window_log",
                format!(
                    "{} is out of range (allowed: 10 to 31)",
                    b.max_zstd_window_log
                ),
            );
        }
        if b.max_entries == 0 {
            return fail("bundles.max_entries", "must be at least 1".into());
        }
        if b.max_file_size.0 > b.max_total_size.0 {
            return fail(
                "bundles.max_file_size",
                format!(
                    "{} is larger than bundles.max_total_size ({})",
                    b.max_file_size, b.max_total_size
                ),
            );
        }
        for (k, v) in [
            ("bundles.max_manifest_size", b.max_manifest_size),
            ("bundles.max_signatures_size", b.max_signatures_size),
            ("bundles.max_file_size", b.max_file_size),
            ("bundles.max_total_size", b.max_total_size),
        ] {
            if v.0 == 0 {
                return fail(k, "must be larger than 0".into());
            }
        }
        for (prefix, sv) in std::iter::once(("serving".to_string(), self.serving.clone())).chain(
            self.models
                .iter()
                .map(|(n, o)| (format!("models.{n}"), self.serving.with(o))),
        ) {
            if sv.instances == 0 {
                return fail(&format!("{prefix}.instances"), "must be at least 1".into());
            }
            if sv.max_batch_size == 0 {
                return fail(
                    &format!("{prefix}.max_batch_size"),
                    "must be at least 1 (1 disables batching)".into(),
                );
            }
            if sv.queue_capacity == 0 {
                return fail(
                    &format!("{prefix}.queue_capacity"),
                    "must be at least 1".into(),
                );
            }
            if let Some(p) = sv
                .preferred_batch_sizes
                .iter()
                .find(|p| **p == 0 || **p > sv.max_batch_size)
            {
                return fail(
                    &format!("{prefix}.preferred_batch_sizes"),
                    format!(
                        "{p} is not between 1 and max_batch_size ({})",
                        sv.max_batch_size
                    ),
                );
            }
            if !["exhaustive", "heuristic", "default"].contains(&sv.cudnn_conv_search.as_str()) {
                return fail(
                    &format!("{prefix}.cudnn_conv_search"),
                    format!(
                        "{:?} (allowed: \"exhaustive\", \"heuristic\", \"default\")",
                        sv.cudnn_conv_search
                    ),
                );
            }
        }
        if self.logging.max_files == 0 {
            return fail("logging.max_files", "must be at least 1".into());
        }
        if self.logging.max_file_size.0 < 4096 {
            return fail(
                "logging.max_file_size",
                format!(
                    "{} is below the minimum of 4KiB",
                    self.logging.max_file_size
                ),
            );
        }
        match self.server.listen.parse::<std::net::SocketAddr>() {
            Err(_) => {
                return fail(
                    "server.listen",
                    format!(
                        "{:?} is not an address (allowed: IP:PORT, e.g. \"0.0.0.0:8443\")",
                        self.server.listen
                    ),
                )
            }
            Ok(a) if !self.server.tls && !a.ip().is_loopback() => {
                return fail(
                    "server.tls",
                    format!("false is allowed only with a loopback listen address, and server.listen is {a}"),
                )
            }
            Ok(_) => {}
        }
        match self.grpc.listen.parse::<std::net::SocketAddr>() {
            Err(_) => {
                return fail(
                    "grpc.listen",
                    format!(
                        "{:?} is not an address (allowed: IP:PORT, e.g. \"0.0.0.0:8001\")",
                        self.grpc.listen
                    ),
                )
            }
            Ok(a) if self.grpc.enabled && !self.server.tls && !a.ip().is_loopback() => {
                return fail(
                    "grpc.listen",
                    format!("{a} is not loopback, and plaintext gRPC (server.tls = false) is allowed only on loopback: set grpc.listen to a loopback address, grpc.enabled = false, or server.tls = true"),
                )
            }
            Ok(_) => {}
        }
        if self.grpc.max_message_size.0 < 4096 || self.grpc.max_message_size.0 > (1 << 31) {
            return fail(
                "grpc.max_message_size",
                format!("{} is outside 4KiB..2GiB", self.grpc.max_message_size),
            );
        }
        if !self.paths.data_dir.is_absolute() {
            return fail(
                "paths.data_dir",
                format!(
                    "{} is relative (allowed: an absolute path)",
                    self.paths.data_dir.display()
                ),
            );
        }
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Finds the line that sets `section.key` (best effort; `None` when the key is a default).
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().replace(['"', '\''], "");
            continue;
        }
        if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").expect("valid"), Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = parse("[time]\nenforcement = \"strict\"\ngrase = \"1d\"\n").expect_err("invalid");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unknown field `grase`"), "{e}");
        assert!(e.message.contains("grace"), "says what is allowed: {e}");
    }

    #[test]
    fn grpc_section_parses_and_its_keys_are_checked() {
        let c = parse("[grpc]\nlisten = \"127.0.0.1:9001\"\nmax_message_size = \"8MiB\"\n")
            .expect("valid");
        assert_eq!(c.grpc.listen, "127.0.0.1:9001");
        assert_eq!(c.grpc.max_message_size, ByteSize(8 << 20));
        assert!(c.grpc.enabled, "on by default");
        assert_eq!(
            Config::default().grpc.listen,
            "0.0.0.0:8001",
            "Triton's port"
        );
        let e = parse("[server]\nlisten = \"127.0.0.1:8080\"\ntls = false\n")
            .expect_err("plaintext gRPC off loopback");
        assert!(e.message.contains("plaintext gRPC"), "{e}");
        assert!(parse(
            "[server]\nlisten = \"127.0.0.1:8080\"\ntls = false\n[grpc]\nlisten = \"127.0.0.1:8001\"\n"
        )
        .is_ok());
        assert!(parse(
            "[server]\nlisten = \"127.0.0.1:8080\"\ntls = false\n[grpc]\nenabled = false\n"
        )
        .is_ok());
        let e = parse("[grpc]\nport = 8001\n").expect_err("invalid");
        assert!(e.message.contains("unknown field `port`"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn unknown_section_is_refused() {
        let e = parse("[tiem]\n").expect_err("invalid");
        assert!(e.message.contains("unknown field `tiem`"), "{e}");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse("[bundles]\nmax_entries = \"many\"\n").expect_err("invalid");
        assert_eq!(e.key, "bundles.max_entries");
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("bundles.max_entries"), "{e}");
    }

    #[test]
    fn bad_enum_value_lists_the_choices() {
        let e = parse("[time]\nenforcement = \"lax\"\n").expect_err("invalid");
        assert_eq!(e.key, "time.enforcement");
        assert!(e.message.contains("strict"), "{e}");
    }

    #[test]
    fn impossible_values_name_the_key_and_line() {
        let e = parse("[approval]\nmode = \"approvers\"\napprovers = 0\n").expect_err("invalid");
        assert_eq!(e.key, "approval.approvers");
        assert_eq!(e.line, Some(3));
        let e = parse("[bundles]\nmax_zstd_window_log = 40\n").expect_err("invalid");
        assert_eq!(e.key, "bundles.max_zstd_window_log");
        assert!(e.message.contains("10 to 31"), "{e}");
        let e = parse("[paths]\ndata_dir = \"var/lib\"\n").expect_err("invalid");
        assert_eq!(e.key, "paths.data_dir");
        let e = parse("[bundles]\nmax_file_size = \"2 parsecs\"\n").expect_err("invalid");
        assert_eq!(e.key, "bundles.max_file_size");
        assert!(e.message.contains("GiB"), "{e}");
    }

    #[test]
    fn telemetry_tiers_must_nest_and_each_keep_must_hold_the_next_page() {
        let c = parse("[telemetry]\nmax_bytes = \"64MiB\"\ntier2_keep = \"30d\"\n").expect("valid");
        assert_eq!(c.telemetry.tiers()[2], (3600, 30 * 86_400));
        for (text, key) in [
            ("tier1_step = \"7s\"", "telemetry.tier1_step"),
            ("tier0_step = \"1500ms\"", "telemetry.tier0_step"),
            ("tier0_keep = \"30m\"", "telemetry.tier0_keep"),
            ("tier1_step = \"1s\"", "telemetry.tier1_step"),
            ("max_bytes = \"1KiB\"", "telemetry.max_bytes"),
            ("flush_interval = \"0s\"", "telemetry.flush_interval"),
            ("max_series = 0", "telemetry.max_series"),
        ] {
            let e = parse(&format!("[telemetry]\n{text}\n")).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert_eq!(e.line, Some(2), "{text}");
        }
    }

    #[test]
    fn io_threads_default_to_half_the_cores_and_are_bounded() {
        let d = Server::default();
        assert_eq!(
            [1, 2, 3, 16, 64].map(|c| d.io_threads_for(c)),
            [1, 1, 1, 8, 8]
        );
        let c = parse("[server]\nio_threads = 3\n").expect("valid");
        assert_eq!(c.server.io_threads_for(64), 3);
        let e = parse("[server]\nio_threads = 100000\n").expect_err("invalid");
        assert_eq!(e.key, "server.io_threads");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("256"), "{e}");
    }

    #[test]
    fn units_parse() {
        let c = parse(
            "[bundles]\nmax_file_size = \"2GiB\"\nmax_total_size = 4294967296\n\
             [time]\nenforcement = \"strict\"\ngrace = \"36h\"\n\
             [approval]\nmode = \"unattended-dev\"\n",
        )
        .expect("valid");
        assert_eq!(c.bundles.max_file_size, ByteSize(2 << 30));
        assert_eq!(c.time.grace, HumanDuration::from_secs(36 * 3600));
        assert_eq!(c.approval.mode, ApprovalMode::UnattendedDev);
        assert_eq!(
            c.approval.required_approvers(),
            0,
            "unattended mode has no approvers"
        );
    }

    #[test]
    fn per_model_overrides_and_their_errors() {
        let c = parse(
            "[serving]\nmax_batch_size = 16\nmax_queue_delay = \"2ms\"\n\
             [models.\"resnet\"]\nexecution_provider = \"cuda\"\non_failure = \"model:tiny\"\n",
        )
        .expect("valid");
        let r = c.serving.with(&c.models["resnet"]);
        assert_eq!(r.max_batch_size, 16);
        assert_eq!(r.execution_provider, Provider::Cuda);
        assert_eq!(r.on_failure, OnFailure::Model("tiny".into()));
        assert_eq!(r.max_queue_delay.get(), std::time::Duration::from_millis(2));
        let e = parse("[models.\"resnet\"]\non_failure = \"retry\"\n").expect_err("bad");
        assert_eq!(e.key, "models.resnet.on_failure");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("model:NAME"), "{e}");
        let e = parse("[models.\"resnet\"]\npreferred_batch_sizes = [4, 64]\n").expect_err("bad");
        assert_eq!(e.key, "models.resnet.preferred_batch_sizes");
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("[server]\nlisten = \"localhost\"\n").expect_err("bad");
        assert_eq!(e.key, "server.listen");
        let e = parse("[server]\nlisten = \"0.0.0.0:8443\"\ntls = false\n")
            .expect_err("plain on the network");
        assert_eq!(e.key, "server.tls");
        assert_eq!(e.line, Some(3));
        assert!(parse(
            "[server]\nlisten = \"127.0.0.1:8080\"\ntls = false\n[grpc]\nlisten = \"[::1]:8001\"\n"
        )
        .is_ok());
    }

    #[test]
    fn printed_config_parses_back() {
        let mut c = parse("[approval]\nmode = \"unattended-dev\"\n").expect("valid");
        c.bundles.max_file_size = ByteSize(3 << 30);
        assert_eq!(parse(&c.to_toml()).expect("round trip"), c);
        assert_eq!(
            parse(&Config::default().to_toml()).expect("defaults"),
            Config::default()
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = parse("[time\n").expect_err("invalid");
        assert_eq!(e.line, Some(1), "{e}");
    }
}
