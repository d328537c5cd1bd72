//! The gRPC front end: `inference.GRPCInferenceService` (the KServe Open Inference Protocol
//! RPCs and Triton's extensions — model configuration, statistics, repository index and the
//! bidirectional `ModelStreamInfer`) over the engine's `Infer`, on its own HTTP/2 listener
//! (`[grpc]`, Triton's port 8001) with the inference listener's TLS certificate, tokens and
//! connection cap.
//!
//! Every call is authenticated from its `authorization` metadata before a byte of its message
//! is read (`ServerLive` and `ServerReady` stay open for load-balancer probes, as the HTTP
//! health routes do); the model scope is checked on the decoded message, whose size
//! `[grpc] max_message_size` bounds. `grpc-timeout` is the deadline over queue and execution;
//! a cancelled call drops its work. Failures map once from their class to a gRPC code
//! ([`code`]), with the failure's kind in the `airlock-error-kind` metadata and the queue's
//! retry hint in `grpc-retry-pushback-ms`. Shared memory, repository load/unload, trace and log
//! settings answer UNIMPLEMENTED: models change only through signed bundles.
//!
//! API boundary: the gRPC adapter. It uses the engine, `auth`, `trace` and `limits`; no other
//! module of the daemon imports it (only the composition root in `lib.rs` wires it).

pub mod wire;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_engine::{Infer, InferError, LoadedModel};
use futures_util::stream::{FuturesOrdered, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tracing::Instrument;

use crate::auth::{Caller, Tokens};
use crate::error::{Class, Failure};
use crate::limits::{BodyPace, ConnCap, ConnHandler, PacedBody, SendTimeout};

/// The messages and the service trait generated from `daemon/proto/grpc_service.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// The service's path prefix on the wire.
const SERVICE: &str = "/inference.GRPCInferenceService/";

/// The extensions this server implements (listed by `ServerMetadata`).
pub const EXTENSIONS: [&str; 4] = [
    "model_configuration",
    "statistics",
    "model_repository",
    "schedule_policy",
];

/// Streams one HTTP/2 connection may have open at once.
pub const MAX_STREAMS: u32 = 32;

/// Requests of one `ModelStreamInfer` call in flight at once (answers still go out in order).
pub const STREAM_PIPELINE: usize = 16;

/// Longest status message sent (a header: clients cap metadata at a few KiB).
const MAX_MESSAGE_CHARS: usize = 1024;

/// What every RPC shares.
pub struct GrpcState {
    /// The inference core.
    pub infer: Arc<Infer>,
    /// Token records; `None` only in `--dev` (no authentication).
    pub tokens: Option<Arc<Tokens>>,
    /// Largest message a client may send.
    pub max_message: usize,
    /// Largest answer (the smaller of `[server] max_response_size` and the message size).
    pub max_response: u64,
    /// Cancelled at shutdown: streams stop taking requests and end once answered.
    pub shutdown: CancellationToken,
    /// The request traces.
    pub traces: Arc<crate::traces::Traces>,
}

/// The one mapping of failure classes to gRPC codes.
pub fn code(class: Class) -> Code {
    match class {
        Class::BadRequest | Class::UnsupportedMedia => Code::InvalidArgument,
        Class::Unauthenticated => Code::Unauthenticated,
        Class::Forbidden => Code::PermissionDenied,
        Class::NotFound => Code::NotFound,
        Class::Conflict | Class::Unprocessable => Code::FailedPrecondition,
        Class::TooLarge | Class::QueueFull | Class::InsufficientStorage => Code::ResourceExhausted,
        Class::BodyTimeout | Class::DeadlineExceeded => Code::DeadlineExceeded,
        Class::Unavailable => Code::Unavailable,
        Class::Internal => Code::Internal,
    }
}

/// A message cut to what a status header may carry.
fn bounded(mut m: String) -> String {
    if m.len() > MAX_MESSAGE_CHARS {
        let mut end = MAX_MESSAGE_CHARS;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push('…');
    }
    m
}

/// A failure as a gRPC status: its class's code, its message, its kind in
/// `airlock-error-kind`, and the queue's retry hint in `grpc-retry-pushback-ms`.
pub fn status(f: Failure) -> Status {
    let mut md = MetadataMap::new();
    md.insert("airlock-error-kind", MetadataValue::from_static(f.kind));
    if let Some(s) = f.retry_after {
        md.insert(
            "grpc-retry-pushback-ms",
            MetadataValue::from(s.saturating_mul(1000)),
        );
    }
    Status::with_metadata(code(f.class), bounded(f.message), md)
}

fn infer_status(e: InferError) -> Status {
    status(Failure::from(e))
}

fn refuse(class: Class, m: impl Into<String>) -> Status {
    status(Failure::new(class, class.kind(), m))
}

/// The deadline a client set with `grpc-timeout` (`None` without one).
pub fn grpc_timeout(md: &MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(v) = md.get("grpc-timeout") else {
        return Ok(None);
    };
    let malformed = || {
        refuse(
            Class::BadRequest,
            "grpc-timeout is malformed (at most 8 digits and one of H, M, S, m, u, n)",
        )
    };
    let s = v.to_str().map_err(|_| malformed())?;
    if s.len() < 2 || s.len() > 9 {
        return Err(malformed());
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let n: u64 = digits.parse().map_err(|_| malformed())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(malformed()),
    }))
}

/// The caller the connection layer authenticated (every RPC has one: see [`Grpc::handle`]).
fn caller<T>(req: &tonic::Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller(None))
}

/// Refuses a caller whose token does not cover `model` (the same words as HTTP's refusal).
fn may_use(caller: &Caller, model: &str) -> Result<(), Status> {
    if caller.may_use(model) {
        Ok(())
    } else {
        Err(refuse(
            Class::Forbidden,
            "this token does not grant access to this resource",
        ))
    }
}

/// A model name as a client sent it: refused unless it is a valid model name (so that what is
/// echoed in messages and logs is never arbitrary bytes).
fn model_name(name: &str) -> Result<&str, Status> {
    match airlock_signing::manifest::ModelName::parse(name) {
        Ok(_) => Ok(name),
        Err(_) => Err(refuse(
            Class::NotFound,
            "unknown model: the name is not a valid model name",
        )),
    }
}

fn version(v: &str) -> Result<Option<&str>, Status> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > 64 || semver::Version::parse(v).is_err() {
        return Err(refuse(
            Class::NotFound,
            "unknown version: the version is not a semantic version",
        ));
    }
    Ok(Some(v))
}

/// The service over the engine.
#[derive(Clone)]
pub struct Service(Arc<GrpcState>);

impl Service {
    /// The service over `state`.
    pub fn new(state: Arc<GrpcState>) -> Service {
        Service(state)
    }

    fn lookup(&self, caller: &Caller, name: &str, v: &str) -> Result<Arc<LoadedModel>, Status> {
        let name = model_name(name)?;
        may_use(caller, name)?;
        self.0.infer.lookup(name, version(v)?).map_err(infer_status)
    }

    /// One inference: routed (counted from here), parsed against the answering version's
    /// contract, run under the deadline, encoded.
    async fn infer_one(
        &self,
        caller: &Caller,
        mut msg: pb::ModelInferRequest,
        deadline: Option<Instant>,
        cell: Option<&crate::traces::Cell>,
    ) -> Result<pb::ModelInferResponse, Status> {
        let mark = |f: &dyn Fn(&mut crate::traces::Detail)| {
            if let Some(c) = cell {
                c.with(f);
            }
        };
        mark(&|_| {});
        let name = model_name(&msg.model_name)?;
        may_use(caller, name)?;
        let mut call = self
            .0
            .infer
            .route(name, version(&msg.model_version)?)
            .map_err(infer_status)?;
        let model = call.model().clone();
        mark(&|d| d.model = Some((model.name.clone(), model.version.to_string())));
        let budget = (self.0.max_message as u64).saturating_mul(2);
        let req = wire::parse(&model.contract, &mut msg, budget)
            .map_err(|e| infer_status(call.refuse(e)))?;
        mark(&|d| d.decoded = Some(Instant::now()));
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = match (req.timeout, left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let answer = call
            .infer(req.inputs, timeout)
            .await
            .map_err(infer_status)?;
        mark(&|d| {
            d.answered = Some(Instant::now());
            d.engine = Some((answer.queue, answer.compute, answer.batch_rows));
        });
        let who = wire::Answering {
            model: &model.name,
            version: model.version.to_string(),
            digest: &model.digest,
            id: std::mem::take(&mut msg.id),
            degraded_request_for: call.degraded_request_for(),
        };
        wire::response(who, answer.outputs, &req.outputs, self.0.max_response).map_err(|size| {
            infer_status(call.refuse(InferError::Internal(format!(
                "the model's outputs ({size} bytes) are larger than the response limit of {} bytes ([server] max_response_size, [grpc] max_message_size)",
                self.0.max_response
            ))))
        })
    }
}

fn tensors(
    specs: &[airlock_signing::manifest::TensorSpec],
) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: airlock_engine::datatype::v2_name(t.dtype).to_string(),
            shape: airlock_engine::contract::metadata_shape(t),
        })
        .collect()
}

fn config_of(model: &LoadedModel) -> pb::ModelConfig {
    use airlock_engine::datatype::config_name;
    let batched = model.batched;
    // Triton's convention: with max_batch_size > 0 the dims leave out the batch dimension.
    let dims = |t: &airlock_signing::manifest::TensorSpec| {
        let d = airlock_engine::contract::metadata_shape(t);
        if batched {
            d[1..].to_vec()
        } else {
            d
        }
    };
    let dt = |d| {
        pb::DataType::from_str_name(config_name(d))
            .map(|t| t as i32)
            .unwrap_or(0)
    };
    let st = &model.settings;
    pb::ModelConfig {
        name: model.name.clone(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(pb::model_version_policy::PolicyChoice::Latest(
                pb::model_version_policy::Latest { num_versions: 1 },
            )),
        }),
        max_batch_size: if batched { st.max_batch_size as i32 } else { 0 },
        input: model
            .contract
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: dt(t.dtype),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        output: model
            .contract
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: dt(t.dtype),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![pb::ModelInstanceGroup {
            count: st.instances as i32,
            kind: if model.provider == airlock_config::Provider::Cuda {
                pb::model_instance_group::Kind::Gpu as i32
            } else {
                pb::model_instance_group::Kind::Cpu as i32
            },
            ..Default::default()
        }],
        parameters: [(
            "model_digest".to_string(),
            pb::ModelParameter {
                string_value: model.digest.clone(),
            },
        )]
        .into(),
        scheduling_choice: Some(pb::model_config::SchedulingChoice::DynamicBatching(
            pb::ModelDynamicBatching {
                preferred_batch_size: st.preferred_batch_sizes.iter().map(|b| *b as i32).collect(),
                max_queue_delay_microseconds: st.max_queue_delay.get().as_micros() as u64,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn stats_of(model: &LoadedModel) -> pb::ModelStatistics {
    use std::sync::atomic::Ordering::Relaxed;
    let st = model.stats();
    let d = |count, ns| Some(pb::StatisticDuration { count, ns });
    let success = st.success.load(Relaxed);
    let (queue_ns, compute_ns) = (st.queue_ns.load(Relaxed), st.compute_ns.load(Relaxed));
    pb::ModelStatistics {
        name: model.name.clone(),
        version: model.version.to_string(),
        last_inference: st.last_inference_ms.load(Relaxed),
        inference_count: success,
        execution_count: st.executions.load(Relaxed),
        inference_stats: Some(pb::InferStatistics {
            success: d(success, queue_ns + compute_ns),
            fail: d(st.failure.load(Relaxed), 0),
            queue: d(success, queue_ns),
            compute_input: d(0, 0),
            compute_infer: d(st.executions.load(Relaxed), compute_ns),
            compute_output: d(0, 0),
            cache_hit: d(0, 0),
            cache_miss: d(0, 0),
        }),
        ..Default::default()
    }
}

fn unsupported<T>(what: &str) -> Result<tonic::Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by airlock"
    )))
}

type Answer<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: tonic::Request<pb::ServerLiveRequest>,
    ) -> Answer<pb::ServerLiveResponse> {
        Ok(tonic::Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: tonic::Request<pb::ServerReadyRequest>,
    ) -> Answer<pb::ServerReadyResponse> {
        Ok(tonic::Response::new(pb::ServerReadyResponse {
            ready: self.0.infer.ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: tonic::Request<pb::ModelReadyRequest>,
    ) -> Answer<pb::ModelReadyResponse> {
        let caller = caller(&req);
        let r = req.into_inner();
        let name = model_name(&r.name)?;
        may_use(&caller, name)?;
        // As over HTTP: an unknown model is not ready (no error).
        let ready = match self.0.infer.models().get(name, version(&r.version)?) {
            Ok(m) => self.0.infer.can_answer(&m),
            Err(_) => false,
        };
        Ok(tonic::Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: tonic::Request<pb::ServerMetadataRequest>,
    ) -> Answer<pb::ServerMetadataResponse> {
        Ok(tonic::Response::new(pb::ServerMetadataResponse {
            name: "airlock".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: tonic::Request<pb::ModelMetadataRequest>,
    ) -> Answer<pb::ModelMetadataResponse> {
        let caller = caller(&req);
        let r = req.into_inner();
        let model = self.lookup(&caller, &r.name, &r.version)?;
        let versions = self
            .0
            .infer
            .models()
            .snapshot()
            .get(&model.name)
            .map(|slot| slot.versions.keys().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        Ok(tonic::Response::new(pb::ModelMetadataResponse {
            name: model.name.clone(),
            versions,
            platform: "onnxruntime_onnx".into(),
            inputs: tensors(&model.contract.inputs),
            outputs: tensors(&model.contract.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: tonic::Request<pb::ModelInferRequest>,
    ) -> Answer<pb::ModelInferResponse> {
        let deadline = grpc_timeout(req.metadata())?.map(|t| Instant::now() + t);
        let caller = caller(&req);
        let cell = req.extensions().get::<Arc<crate::traces::Cell>>().cloned();
        self.infer_one(&caller, req.into_inner(), deadline, cell.as_deref())
            .await
            .map(tonic::Response::new)
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

    async fn model_stream_infer(
        &self,
        req: tonic::Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> Answer<Self::ModelStreamInferStream> {
        let deadline = grpc_timeout(req.metadata())?.map(|t| Instant::now() + t);
        let caller = caller(&req);
        let mut inbound = req.into_inner();
        let svc = self.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel(STREAM_PIPELINE);
        let shutdown = self.0.shutdown.clone();
        tokio::spawn(
            async move {
                let one = |m: pb::ModelInferRequest| {
                    let (svc, caller) = (svc.clone(), caller.clone());
                    async move {
                        let (id, model_name, model_version) =
                            (m.id.clone(), m.model_name.clone(), m.model_version.clone());
                        match svc.infer_one(&caller, m, deadline, None).await {
                            Ok(r) => pb::ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(r),
                            },
                            // The stream stays open: the error answers this request only,
                            // with its id (and the names, when they are valid ones).
                            Err(s) => pb::ModelStreamInferResponse {
                                error_message: s.message().to_string(),
                                infer_response: Some(pb::ModelInferResponse {
                                    id: bounded(id),
                                    model_name: model_name_or_empty(model_name),
                                    model_version: version(&model_version)
                                        .ok()
                                        .flatten()
                                        .map(str::to_string)
                                        .unwrap_or_default(),
                                    ..Default::default()
                                }),
                            },
                        }
                    }
                };
                let mut pending = FuturesOrdered::new();
                let mut reading = true;
                loop {
                    tokio::select! {
                        biased;
                        // The client went away: dropping what is pending skips its queued work.
                        _ = tx.closed() => return,
                        Some(done) = pending.next(), if !pending.is_empty() => {
                            if tx.send(Ok(done)).await.is_err() {
                                return;
                            }
                        }
                        _ = shutdown.cancelled(), if reading => reading = false,
                        m = inbound.message(), if reading && pending.len() < STREAM_PIPELINE => match m {
                            Ok(Some(m)) => pending.push_back(one(m)),
                            Ok(None) => reading = false,
                            // A reset, a cancel or a broken message: the call is over, and
                            // what is pending is dropped (its queued work skipped).
                            Err(s) => {
                                let _ = tx.try_send(Err(s));
                                return;
                            }
                        },
                        else => return,
                    }
                    if !reading && pending.is_empty() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        let out = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn model_config(
        &self,
        req: tonic::Request<pb::ModelConfigRequest>,
    ) -> Answer<pb::ModelConfigResponse> {
        let caller = caller(&req);
        let r = req.into_inner();
        let model = self.lookup(&caller, &r.name, &r.version)?;
        Ok(tonic::Response::new(pb::ModelConfigResponse {
            config: Some(config_of(&model)),
        }))
    }

    async fn model_statistics(
        &self,
        req: tonic::Request<pb::ModelStatisticsRequest>,
    ) -> Answer<pb::ModelStatisticsResponse> {
        let caller = caller(&req);
        let r = req.into_inner();
        let model_stats = if r.name.is_empty() {
            let table = self.0.infer.models().snapshot();
            table
                .iter()
                .filter(|(name, _)| caller.may_use(name))
                .flat_map(|(_, slot)| slot.versions.values().map(|m| stats_of(m)))
                .collect()
        } else {
            {
                let m = self.lookup(&caller, &r.name, &r.version)?;
                vec![stats_of(&m)]
            }
        };
        Ok(tonic::Response::new(pb::ModelStatisticsResponse {
            model_stats,
        }))
    }

    async fn repository_index(
        &self,
        req: tonic::Request<pb::RepositoryIndexRequest>,
    ) -> Answer<pb::RepositoryIndexResponse> {
        use pb::repository_index_response::ModelIndex;
        let caller = caller(&req);
        let ready_only = req.get_ref().ready;
        let table = self.0.infer.models().snapshot();
        let unavailable = self.0.infer.models().unavailable();
        let models = table
            .iter()
            .filter(|(name, _)| caller.may_use(name))
            .flat_map(|(_, slot)| {
                slot.versions.values().map(|m| ModelIndex {
                    name: m.name.clone(),
                    version: m.version.to_string(),
                    state: if m.ready() { "READY" } else { "UNAVAILABLE" }.into(),
                    reason: String::new(),
                })
            })
            .chain(
                unavailable
                    .iter()
                    .filter(|(name, _)| caller.may_use(name))
                    .map(|(name, u)| ModelIndex {
                        name: name.clone(),
                        version: u.version.to_string(),
                        state: "UNAVAILABLE".into(),
                        reason: "its version cannot be served on this appliance".into(),
                    }),
            )
            .filter(|m| !ready_only || m.state == "READY")
            .collect();
        Ok(tonic::Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        _: tonic::Request<pb::RepositoryModelLoadRequest>,
    ) -> Answer<pb::RepositoryModelLoadResponse> {
        Err(Status::unimplemented(
            "models are loaded only by promoting a signed bundle (airlockctl model promote), not through the repository API",
        ))
    }

    async fn repository_model_unload(
        &self,
        _: tonic::Request<pb::RepositoryModelUnloadRequest>,
    ) -> Answer<pb::RepositoryModelUnloadResponse> {
        Err(Status::unimplemented(
            "models are unloaded only through the lifecycle (airlockctl), not through the repository API",
        ))
    }

    async fn system_shared_memory_status(
        &self,
        _: tonic::Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Answer<pb::SystemSharedMemoryStatusResponse> {
        unsupported("shared memory (send tensors in raw_input_contents)")
    }

    async fn system_shared_memory_register(
        &self,
        _: tonic::Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Answer<pb::SystemSharedMemoryRegisterResponse> {
        unsupported("shared memory (send tensors in raw_input_contents)")
    }

    async fn system_shared_memory_unregister(
        &self,
        _: tonic::Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Answer<pb::SystemSharedMemoryUnregisterResponse> {
        unsupported("shared memory (send tensors in raw_input_contents)")
    }

    async fn cuda_shared_memory_status(
        &self,
        _: tonic::Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Answer<pb::CudaSharedMemoryStatusResponse> {
        unsupported("CUDA shared memory (send tensors in raw_input_contents)")
    }

    async fn cuda_shared_memory_register(
        &self,
        _: tonic::Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Answer<pb::CudaSharedMemoryRegisterResponse> {
        unsupported("CUDA shared memory (send tensors in raw_input_contents)")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: tonic::Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Answer<pb::CudaSharedMemoryUnregisterResponse> {
        unsupported("CUDA shared memory (send tensors in raw_input_contents)")
    }

    async fn trace_setting(
        &self,
        _: tonic::Request<pb::TraceSettingRequest>,
    ) -> Answer<pb::TraceSettingResponse> {
        unsupported("changing trace settings over gRPC")
    }

    async fn log_settings(
        &self,
        _: tonic::Request<pb::LogSettingsRequest>,
    ) -> Answer<pb::LogSettingsResponse> {
        unsupported("changing log settings over gRPC (use [logging] and SIGHUP)")
    }
}

fn model_name_or_empty(name: String) -> String {
    if model_name(&name).is_ok() {
        name
    } else {
        String::new()
    }
}

/// HTTP/2 connections carrying the service: every request authenticated before its message is
/// read, given an id and a span with the client's trace id, and logged once.
#[derive(Clone)]
pub struct Grpc {
    service: GrpcInferenceServiceServer<Service>,
    state: Arc<GrpcState>,
    pace: BodyPace,
    send: Duration,
}

impl Grpc {
    /// The connection handler over `state`, with the inference listener's body pace and send
    /// timeout.
    pub fn new(state: Arc<GrpcState>, timeouts: crate::limits::ConnTimeouts) -> Grpc {
        let service = GrpcInferenceServiceServer::new(Service::new(state.clone()))
            .max_decoding_message_size(state.max_message)
            .max_encoding_message_size(
                state.max_message.max(state.max_response as usize) + (64 << 10),
            );
        Grpc {
            service,
            state,
            pace: timeouts.body,
            send: timeouts.send,
        }
    }

    async fn handle(
        &self,
        mut req: axum::http::Request<hyper::body::Incoming>,
    ) -> axum::http::Response<tonic::body::Body> {
        let path = req.uri().path();
        let method = path
            .strip_prefix(SERVICE)
            .filter(|m| m.len() <= 40 && m.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("(other)")
            .to_string();
        let id = crate::trace::RequestId::new();
        let (ctx, cell) = crate::traces::Context::begin(&mut req);
        // As for HTTP's `/v2` routes: the RPC handlers write no line of their own while they
        // run, so the span waits for the closing line unless debug lines are on.
        let span = crate::trace::RequestSpan::new(
            !tracing::enabled!(tracing::Level::DEBUG),
            || tracing::info_span!("rpc", id = %id, trace_id = %ctx.trace_id(), method = %method),
        );
        let start = Instant::now();
        let open = method == "ServerLive" || method == "ServerReady";
        let caller = match &self.state.tokens {
            None => Some(Caller(None)),
            Some(_) if open => Some(Caller(None)),
            Some(t) => t
                .authenticate(
                    req.headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                )
                .map(|rec| Caller(Some(rec))),
        };
        let mut resp = match caller {
            // Refused before a byte of the message is read; nothing says why the token failed.
            None => refuse(Class::Unauthenticated, "a valid bearer token is required")
                .into_http::<tonic::body::Body>(),
            Some(c) => {
                if let Some(Caller(Some(rec))) = Some(&c) {
                    span.running()
                        .in_scope(|| tracing::debug!(token = %rec.id, "authenticated"));
                }
                req.extensions_mut().insert(c);
                let svc = self.service.clone();
                let r = if method == "ModelStreamInfer" {
                    // A stream may rest between requests: no pace.
                    tower::ServiceExt::oneshot(svc, req)
                        .instrument(span.running())
                        .await
                } else {
                    let pace = self.pace;
                    let req = req.map(|b| PacedBody::new(b, pace));
                    tower::ServiceExt::oneshot(svc, req)
                        .instrument(span.running())
                        .await
                };
                match r {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        };
        // Failures before the answer are "trailers-only": their status is in the headers.
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(Code::from_i32);
        let micros = start.elapsed().as_micros() as u64;
        let written = !matches!(code, None | Some(Code::Ok));
        span.closing(written).in_scope(|| match code {
            None | Some(Code::Ok) => tracing::debug!(micros, "rpc"),
            Some(c @ (Code::Internal | Code::Unknown | Code::DataLoss)) => {
                tracing::warn!(code = ?c, micros, "rpc failed")
            }
            Some(c) => tracing::info!(code = ?c, micros, "rpc refused"),
        });
        resp.headers_mut().insert("x-request-id", id.header());
        resp.headers_mut().insert("traceparent", ctx.header());
        let ok = matches!(code, None | Some(Code::Ok));
        if let Some(t) = crate::traces::Trace::finish(
            ctx,
            crate::traces::Origin {
                request_id: id.to_string(),
                transport: "grpc",
                operation: "ModelInfer",
            },
            start,
            &cell,
            code.map_or(0, |c| c as u32),
            !ok,
        ) {
            self.state.traces.record(t);
        }
        resp
    }
}

impl ConnHandler for Grpc {
    async fn serve<T>(self, stream: T, peer: String, shutdown: CancellationToken)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        let send = self.send;
        let this = self;
        let svc = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(16 << 10)
            // A peer that stops answering pings is dropped (its streams with it).
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .serve_connection(TokioIo::new(SendTimeout::new(stream, send)), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "gRPC connection ended with an error");
                }
            }
            _ = shutdown.cancelled() => {
                // GOAWAY: no new streams; those open finish (streams end once answered).
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// Serves gRPC on `listener` (over TLS when `tls` is given, ALPN h2) until `shutdown`, under
/// `cap` (shared with the HTTP listener) and the handshake timeout.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<GrpcState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: crate::limits::ConnTimeouts,
    cap: Arc<ConnCap>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    crate::limits::accept_loop(
        "grpc",
        listener,
        tls,
        timeouts.header,
        cap,
        Grpc::new(state, timeouts),
        shutdown,
        drain,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn raw_tensor_contents_decode_as_slices_of_the_request_buffer() {
        let sent = pb::ModelInferRequest {
            model_name: "m".into(),
            raw_input_contents: vec![bytes::Bytes::from_static(&[1, 2, 3, 4])],
            ..Default::default()
        };
        let wire = bytes::Bytes::from(sent.encode_to_vec());
        let got = pb::ModelInferRequest::decode(wire.clone()).expect("decodes");
        let raw: &bytes::Bytes = &got.raw_input_contents[0];
        assert_eq!(&raw[..], &[1, 2, 3, 4]);
        // Zero-copy: the field points into the buffer it was decoded from.
        let within = wire.as_ptr_range();
        assert!(
            within.contains(&raw.as_ptr()),
            "raw_input_contents was copied"
        );
    }

    #[test]
    fn grpc_timeout_parses_every_unit_and_refuses_the_malformed() {
        let t = |v: &'static str| {
            let mut md = MetadataMap::new();
            md.insert("grpc-timeout", MetadataValue::from_static(v));
            grpc_timeout(&md)
        };
        assert_eq!(t("2S").expect("ok"), Some(Duration::from_secs(2)));
        assert_eq!(t("1500m").expect("ok"), Some(Duration::from_millis(1500)));
        assert_eq!(t("7u").expect("ok"), Some(Duration::from_micros(7)));
        assert_eq!(t("3M").expect("ok"), Some(Duration::from_secs(180)));
        assert_eq!(
            t("99999999n").expect("ok"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(grpc_timeout(&MetadataMap::new()).expect("none"), None);
        for bad in ["S", "123456789S", "12x", "-1S", "1.5S"] {
            let e = t(bad).expect_err(bad);
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn every_class_has_a_code_and_statuses_keep_the_kind_and_the_retry_hint() {
        let s = status(Failure::from(InferError::QueueFull {
            model: "m".into(),
            retry_after: 2,
        }));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("2000")
        );
        assert_eq!(
            s.metadata()
                .get("airlock-error-kind")
                .and_then(|v| v.to_str().ok()),
            Some("queue_full")
        );
        assert_eq!(
            infer_status(InferError::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            infer_status(InferError::BadRequest("x".into())).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            infer_status(InferError::Timeout { waited_ms: 1 }).code(),
            Code::DeadlineExceeded
        );
        assert_eq!(
            infer_status(InferError::Unavailable("x".into())).code(),
            Code::Unavailable
        );
        assert_eq!(code(Class::Unauthenticated), Code::Unauthenticated);
        assert_eq!(code(Class::Forbidden), Code::PermissionDenied);
        let long = status(Failure::new(
            Class::BadRequest,
            "bad_request",
            "é".repeat(5000),
        ));
        assert!(
            long.message().len() <= MAX_MESSAGE_CHARS + 3,
            "{}",
            long.message().len()
        );
    }

    #[test]
    fn names_that_are_not_model_names_are_never_echoed() {
        let e = model_name("a\nb\u{7}").expect_err("refused");
        assert_eq!(e.code(), Code::NotFound);
        assert!(!e.message().contains('\n'));
        assert!(model_name("demo-iris").is_ok());
        assert!(version("1.0.0").expect("ok").is_some());
        assert!(version("").expect("ok").is_none());
        assert_eq!(version("x\n").expect_err("bad").code(), Code::NotFound);
    }
}
