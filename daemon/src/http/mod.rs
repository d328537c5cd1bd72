//! The HTTP front end: the Open Inference Protocol v2 routes (and Triton's extensions its
//! clients call) over the engine's `Infer`, the admin API (`admin`), bearer-token authorisation
//! and request tracing middleware, request body limits, the one mapping of failure classes to
//! statuses ([`status`]), and the connection loop (TCP_NODELAY, header read timeout against
//! slow clients, graceful shutdown).
//!
//! API boundary: the HTTP adapter. It uses the engine, `auth`, `lifecycle` and `metrics`; no
//! other module of the daemon imports it (only the composition root in `lib.rs` wires it).

pub mod admin;
pub mod bodies;
pub mod wire;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use airlock_engine::{Infer, InferError, LoadedModel, Outcome};

use crate::error::{Class, Failure};

/// What every handler shares.
pub struct AppState {
    /// The inference core (and its routing table).
    pub infer: Arc<Infer>,
    /// Largest request body.
    pub max_body: u64,
    /// Largest response body.
    pub max_response: u64,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Token records to authenticate against; `None` only in `--dev` (no authentication).
    pub tokens: Option<Arc<crate::auth::Tokens>>,
    /// The request traces.
    pub traces: Arc<crate::traces::Traces>,
}

type S = State<Arc<AppState>>;

/// The extensions this server implements (listed by `GET /v2`).
pub const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "model_repository",
    "schedule_policy",
];

/// The one mapping of failure classes to HTTP statuses.
pub fn status(class: Class) -> StatusCode {
    match class {
        Class::BadRequest => StatusCode::BAD_REQUEST,
        Class::Unauthenticated => StatusCode::UNAUTHORIZED,
        Class::Forbidden => StatusCode::FORBIDDEN,
        Class::NotFound => StatusCode::NOT_FOUND,
        Class::Conflict => StatusCode::CONFLICT,
        Class::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Class::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        Class::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        Class::QueueFull => StatusCode::TOO_MANY_REQUESTS,
        Class::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Class::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Class::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        Class::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Class::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Failure {
    /// `{"error": message, "kind": kind}` with the class's status (and `Retry-After`).
    fn into_response(self) -> Response {
        let mut r = (
            status(self.class),
            Json(json!({ "error": self.message, "kind": self.kind })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// An error body of `class`, its kind the class's general one.
pub fn error(class: Class, message: impl Into<String>) -> Response {
    Failure::new(class, class.kind(), message).into_response()
}

/// An engine error as an HTTP answer.
pub fn infer_error(e: InferError) -> Response {
    Failure::from(e).into_response()
}

/// The router.
pub fn router(state: Arc<AppState>, admin: Option<Router>) -> Router {
    let r = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/repository/index", post(repository_index))
        .route(
            "/v2/models/{m}",
            get(|s: S, Path(m): Path<String>| model_metadata(s, m, None)),
        )
        .route(
            "/v2/models/{m}/ready",
            get(|s: S, Path(m): Path<String>| model_ready(s, m, None)),
        )
        .route(
            "/v2/models/{m}/config",
            get(|s: S, Path(m): Path<String>| model_config(s, m, None)),
        )
        .route(
            "/v2/models/{m}/stats",
            get(|s: S, Path(m): Path<String>| model_stats(s, m, None)),
        )
        .route(
            "/v2/models/{m}/infer",
            post(|s: S, Path(m): Path<String>, r: axum::extract::Request| infer(s, m, None, r)),
        )
        .route(
            "/v2/models/{m}/versions/{v}",
            get(|s: S, Path((m, v)): Path<(String, String)>| model_metadata(s, m, Some(v))),
        )
        .route(
            "/v2/models/{m}/versions/{v}/ready",
            get(|s: S, Path((m, v)): Path<(String, String)>| model_ready(s, m, Some(v))),
        )
        .route(
            "/v2/models/{m}/versions/{v}/config",
            get(|s: S, Path((m, v)): Path<(String, String)>| model_config(s, m, Some(v))),
        )
        .route(
            "/v2/models/{m}/versions/{v}/stats",
            get(|s: S, Path((m, v)): Path<(String, String)>| model_stats(s, m, Some(v))),
        )
        .route(
            "/v2/models/{m}/versions/{v}/infer",
            post(
                |s: S, Path((m, v)): Path<(String, String)>, r: axum::extract::Request| {
                    infer(s, m, Some(v), r)
                },
            ),
        )
        .with_state(state.clone());
    // Nested as routes (not as a service) so that the authorisation below sees their routes.
    let r = match admin {
        Some(a) => r.nest("/api/v1", a),
        None => r,
    };
    r.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        authorize,
    ))
    .fallback(|| async { error(Class::NotFound, "no such endpoint") })
    .layer(axum::middleware::from_fn_with_state(
        state.traces.clone(),
        trace_request,
    ))
}

use crate::auth::Caller;

/// Bearer-token authorisation, decided on the route the router matched (never on the raw
/// path): the health routes stay open for load-balancer probes; `/metrics` needs the `metrics`
/// scope; every route with a `{m}` parameter needs `model:{m}` (or `model:*`) for the model the
/// handler will use; the other `/v2` routes need any valid token and show only what its scopes
/// cover; `/api/v1` maps `admin:ROLE` scopes to roles. Runs before any byte of the body is
/// read. Refusals say nothing about why a token failed (unknown, malformed and revoked look
/// the same) and never echo it.
async fn authorize(
    State(s): S,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use airlock_updater::tokens::Scope;
    use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
    let Some(cache) = &s.tokens else {
        let mut req = req;
        req.extensions_mut().insert(Caller(None));
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if route == "/v2/health/live" || route == "/v2/health/ready" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(rec) = cache.authenticate(presented) else {
        let mut r = error(Class::Unauthenticated, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let (mut parts, body) = req.into_parts();
    if route == "/api/v1" || route.starts_with("/api/v1/") {
        // The admin API: the token's admin:ROLE scopes are its roles.
        let Some(who) = crate::auth::token_identity(&rec) else {
            return error(
                Class::Forbidden,
                "this token does not grant access to the admin API",
            );
        };
        parts.extensions.insert(who);
        tracing::debug!(token = %rec.id, "authenticated (admin API)");
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let model = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "m")
                .map(|(_, v)| v.to_string())
        });
    let needed = match (route.as_str(), model) {
        ("/metrics", _) => Some(Scope::Metrics),
        (_, Some(m)) => Some(Scope::Model(m)),
        (_, None) => None,
    };
    if let Some(scope) = needed {
        if !rec.grants(&scope) {
            return error(
                Class::Forbidden,
                "this token does not grant access to this resource",
            );
        }
    }
    tracing::debug!(token = %rec.id, "authenticated");
    parts.extensions.insert(Caller(Some(rec)));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Gives every request an id (echoed as `x-request-id`), a span carrying it and the client's
/// W3C trace id, and one log line when it ends (errors at warn/info, successes at debug).
/// Only the method, path, status and timing are logged — never headers or bodies.
async fn trace_request(
    State(traces): State<Arc<crate::traces::Traces>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let id = crate::trace::RequestId::new();
    // The client's trace continued, or a new one: its id is on every line of the request and
    // in the answer's `traceparent`.
    let (ctx, cell) = crate::traces::Context::begin(&mut req);
    // The span carries only what every line of the request needs (its id and the trace id):
    // method and path go on the closing line.
    // The `/v2` handlers write no line of their own while they run (the engine's lines come
    // from its session threads) and authorisation writes only debug lines, so their span waits
    // for the closing line unless debug lines are on ([`crate::trace::RequestSpan`]). Every
    // other route (the admin API logs as it works) opens its span at once.
    let span = crate::trace::RequestSpan::new(
        req.uri().path().starts_with("/v2/") && !tracing::enabled!(tracing::Level::DEBUG),
        || tracing::info_span!("request", id = %id, trace_id = %ctx.trace_id()),
    );
    let method = req.method().clone();
    let uri = req.uri().clone();
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.running()).await;
    let status = resp.status().as_u16();
    let micros = start.elapsed().as_micros() as u64;
    span.closing(status >= 400).in_scope(|| match status {
        500.. => tracing::warn!(status, micros, %method, path = uri.path(), "request failed"),
        400.. => tracing::info!(status, micros, %method, path = uri.path(), "request refused"),
        _ => tracing::debug!(status, micros, %method, path = uri.path(), "request"),
    });
    resp.headers_mut().insert("x-request-id", id.header());
    resp.headers_mut().insert("traceparent", ctx.header());
    if let Some(t) = crate::traces::Trace::finish(
        ctx,
        crate::traces::Origin {
            request_id: id.to_string(),
            transport: "http",
            operation: "infer",
        },
        start,
        &cell,
        u32::from(status),
        status >= 400,
    ) {
        traces.record(t);
    }
    resp
}

async fn metrics(State(s): S) -> Response {
    let body = s.metrics.render(s.infer.models());
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn server_metadata() -> Json<Value> {
    Json(
        json!({ "name": "airlock", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }),
    )
}

async fn server_ready(State(s): S) -> StatusCode {
    if s.infer.ready() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn lookup(s: &AppState, m: &str, v: Option<&str>) -> Result<Arc<LoadedModel>, Response> {
    s.infer.lookup(m, v).map_err(infer_error)
}

async fn model_metadata(State(s): S, m: String, v: Option<String>) -> Response {
    let model = match lookup(&s, &m, v.as_deref()) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let versions: Vec<String> = s
        .infer
        .models()
        .snapshot()
        .get(&m)
        .map(|slot| slot.versions.keys().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    let tensors = |specs: &[airlock_signing::manifest::TensorSpec]| {
        specs
            .iter()
            .map(|t| json!({ "name": t.name, "datatype": wire::datatype(t.dtype), "shape": wire::metadata_shape(t) }))
            .collect::<Vec<_>>()
    };
    let mut params = json!({ "model_digest": model.digest, "execution_provider": format!("{:?}", model.provider).to_lowercase() });
    if let Some(d) = model.degraded() {
        params["degraded"] = json!(d);
    }
    Json(json!({
        "name": model.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": tensors(&model.contract.inputs),
        "outputs": tensors(&model.contract.outputs),
        "parameters": params,
    }))
    .into_response()
}

async fn model_ready(State(s): S, m: String, v: Option<String>) -> Response {
    match s.infer.models().get(&m, v.as_deref()) {
        Ok(model) if s.infer.can_answer(&model) => StatusCode::OK.into_response(),
        Ok(_) => StatusCode::BAD_REQUEST.into_response(),
        Err(e) => error(Class::BadRequest, e),
    }
}

async fn model_config(State(s): S, m: String, v: Option<String>) -> Response {
    let model = match lookup(&s, &m, v.as_deref()) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Triton's convention: with max_batch_size > 0 the dims leave out the batch dimension.
    let batched = model.batched;
    let dims = |t: &airlock_signing::manifest::TensorSpec| {
        let d = wire::metadata_shape(t);
        if batched {
            d[1..].to_vec()
        } else {
            d
        }
    };
    let tensors = |specs: &[airlock_signing::manifest::TensorSpec]| {
        specs.iter().map(|t| json!({ "name": t.name, "data_type": wire::config_type(t.dtype), "dims": dims(t) })).collect::<Vec<_>>()
    };
    let st = &model.settings;
    Json(json!({
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": { "latest": { "num_versions": 1 } },
        "max_batch_size": if batched { st.max_batch_size } else { 0 },
        "input": tensors(&model.contract.inputs),
        "output": tensors(&model.contract.outputs),
        "dynamic_batching": {
            "preferred_batch_size": st.preferred_batch_sizes,
            "max_queue_delay_microseconds": st.max_queue_delay.get().as_micros() as u64,
        },
        "instance_group": [{
            "count": st.instances,
            "kind": if model.provider == airlock_config::Provider::Cuda { "KIND_GPU" } else { "KIND_CPU" },
        }],
        "parameters": { "model_digest": { "string_value": model.digest } },
    }))
    .into_response()
}

fn stats_of(model: &LoadedModel) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let st = model.stats();
    let success = st.success.load(Relaxed);
    json!({
        "name": model.name,
        "version": model.version.to_string(),
        "last_inference": st.last_inference_ms.load(Relaxed),
        "inference_count": success,
        "execution_count": st.executions.load(Relaxed),
        "inference_stats": {
            "success": { "count": success, "ns": st.queue_ns.load(Relaxed) + st.compute_ns.load(Relaxed) },
            "fail": { "count": st.failure.load(Relaxed), "ns": 0 },
            "queue": { "count": success, "ns": st.queue_ns.load(Relaxed) },
            "compute_input": { "count": 0, "ns": 0 },
            "compute_infer": { "count": st.executions.load(Relaxed), "ns": st.compute_ns.load(Relaxed) },
            "compute_output": { "count": 0, "ns": 0 },
        },
        "rejected_count": st.rejected.load(Relaxed),
        "timed_out_count": st.timed_out.load(Relaxed),
        "session_rebuilds": st.rebuilds.load(Relaxed),
        "batch_stats": [],
    })
}

async fn all_stats(State(s): S, axum::Extension(caller): axum::Extension<Caller>) -> Json<Value> {
    let table = s.infer.models().snapshot();
    let stats: Vec<Value> = table
        .iter()
        .filter(|(name, _)| caller.may_use(name))
        .flat_map(|(_, slot)| slot.versions.values().map(|m| stats_of(m)))
        .collect();
    Json(json!({ "model_stats": stats }))
}

async fn model_stats(State(s): S, m: String, v: Option<String>) -> Response {
    match lookup(&s, &m, v.as_deref()) {
        Ok(model) => Json(json!({ "model_stats": [stats_of(&model)] })).into_response(),
        Err(r) => r,
    }
}

async fn repository_index(
    State(s): S,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Json<Value> {
    let table = s.infer.models().snapshot();
    let index: Vec<Value> = table
        .iter()
        .filter(|(name, _)| caller.may_use(name))
        .flat_map(|(_, slot)| {
            slot.versions.values().map(|m| {
                json!({ "name": m.name, "version": m.version.to_string(), "state": if m.ready() { "READY" } else { "UNAVAILABLE" } })
            })
        })
        .chain(
            s.infer
                .models()
                .unavailable()
                .iter()
                .filter(|(name, _)| caller.may_use(name))
                .map(|(name, u)| json!({ "name": name, "version": u.version.to_string(), "state": "UNAVAILABLE" })),
        )
        .collect();
    Json(Value::Array(index))
}

/// Reads a body of at most `max` bytes (refusing by `Content-Length` before reading a byte):
/// 413 above the limit, 408 when it does not keep its pace ([`crate::limits::PacedBody`]), 400
/// when it is cut off.
pub async fn read_limited(
    max: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, Response> {
    let too_large = || {
        error(
            Class::TooLarge,
            format!("the request body is larger than the limit of {max} bytes"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(n) if n > max => return Err(too_large()),
            Some(_) => {}
            None => return Err(error(Class::BadRequest, "Content-Length is not a number")),
        }
    }
    Ok(http_body_util::Limited::new(body, max as usize)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else if let Some(slow) = crate::limits::too_slow(&*e) {
                error(Class::BodyTimeout, slow.to_string())
            } else {
                error(
                    Class::BadRequest,
                    "the request body was cut off before its end",
                )
            }
        })?
        .to_bytes())
}

/// Reads the body under the size limit and undoes `Content-Encoding: gzip` under the same limit.
async fn read_body(max: u64, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, Response> {
    let bytes = read_limited(max, headers, body).await?;
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => Ok(bytes),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .take(max + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    error(
                        Class::BadRequest,
                        format!("the gzip body does not decompress: {e}"),
                    )
                })?;
            if out.len() as u64 > max {
                return Err(error(
                    Class::TooLarge,
                    format!("the request body is larger than the limit of {max} bytes once decompressed"),
                ));
            }
            Ok(out.into())
        }
        Some(other) => {
            // Named back only when it is a plain coding token.
            let name = Some(other)
                .filter(|o| {
                    o.len() <= 32 && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .unwrap_or("(unprintable)");
            Err(error(
                Class::UnsupportedMedia,
                format!("Content-Encoding {name} is not supported (gzip and identity are)"),
            ))
        }
    }
}

/// An inference request: routed by the core (which counts its outcome), the body read only
/// then, parsed against the answering version's contract, run, and the answer encoded.
async fn infer(State(s): S, m: String, v: Option<String>, req: axum::extract::Request) -> Response {
    // The request itself, not a `HeaderMap` extractor (which copies every header).
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let cell = parts.extensions.get::<Arc<crate::traces::Cell>>();
    let mut call = match s.infer.route(&m, v.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            if let Some(c) = cell {
                c.with(|_| {});
            }
            return infer_error(e);
        }
    };
    if let Some(c) = cell {
        let m = call.model();
        c.with(|d| d.model = Some((m.name.clone(), m.version.to_string())));
    }
    let body = match read_body(s.max_body, headers, body).await {
        Ok(b) => b,
        Err(r) => {
            call.set_outcome(Outcome::BadRequest);
            return r;
        }
    };
    let header_len = match headers.get("inference-header-content-length") {
        None => body.len(),
        Some(h) => match h.to_str().ok().and_then(|h| h.parse::<usize>().ok()) {
            Some(n) if n <= body.len() => n,
            Some(n) => {
                return infer_error(call.refuse(InferError::BadRequest(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                ))))
            }
            None => {
                return infer_error(call.refuse(InferError::BadRequest(
                    "Inference-Header-Content-Length is not a number".into(),
                )))
            }
        },
    };
    // Decoded, a request's tensors may take twice the body limit (JSON numbers are shorter
    // than their values; BYTES elements cost more than their bytes).
    let budget = s.max_body.saturating_mul(2);
    let model = call.model().clone();
    let req = match wire::parse_request(
        &model.contract,
        &body[..header_len],
        body.slice(header_len..),
        budget,
    ) {
        Ok(r) => r,
        Err(e) => return infer_error(call.refuse(e)),
    };
    // (Raw tensors are slices of the body: it is freed when the answer is.)
    drop(body);
    if let Some(c) = cell {
        c.with(|d| d.decoded = Some(std::time::Instant::now()));
    }
    let answer = match call
        .infer(req.inputs, req.timeout_us.map(Duration::from_micros))
        .await
    {
        Ok(a) => a,
        Err(e) => return infer_error(e),
    };
    if let Some(c) = cell {
        c.with(|d| {
            d.answered = Some(std::time::Instant::now());
            d.engine = Some((answer.queue, answer.compute, answer.batch_rows));
        });
    }
    let version = model.version.to_string();
    let who = wire::Answering {
        model: &model.name,
        version: &version,
        digest: &model.digest,
        id: req.id.as_deref(),
        degraded_request_for: call.degraded_request_for(),
    };
    let (body, json_len) =
        match wire::encode_response(&who, &answer.outputs, &req.outputs, s.max_response) {
            Ok(x) => x,
            Err(wire::ResponseTooLarge { json: true }) => {
                return infer_error(call.refuse(InferError::BadRequest(format!(
                    "the answer would be larger than the response limit of {} bytes; ask for binary outputs (binary_data_output) or fewer rows",
                    s.max_response
                ))))
            }
            Err(wire::ResponseTooLarge { json: false }) => {
                return infer_error(call.refuse(InferError::Internal(format!(
                    "the model's outputs are larger than the response limit of {} bytes ([server] max_response_size)",
                    s.max_response
                ))))
            }
        };
    drop(answer);
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    match json_len {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert("inference-header-content-length", HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    resp
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` is cancelled,
/// then lets open connections finish their current request. Every connection is held under
/// `cap` and the [`crate::limits::ConnTimeouts`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: crate::limits::ConnTimeouts,
    cap: Arc<crate::limits::ConnCap>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) {
    // The handshake gets the same time budget as a request head.
    crate::limits::accept_loop(
        "inference",
        listener,
        tls,
        timeouts.header,
        cap,
        Http1 { app, timeouts },
        shutdown,
        drain_timeout,
    )
    .await;
}

/// HTTP/1.1 connections under every timeout ([`crate::limits::serve_http1`]).
#[derive(Clone)]
struct Http1 {
    app: Router,
    timeouts: crate::limits::ConnTimeouts,
}

impl crate::limits::ConnHandler for Http1 {
    async fn serve<T>(self, stream: T, peer: String, shutdown: CancellationToken)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        crate::limits::serve_http1(stream, self.app, self.timeouts, shutdown, &peer).await
    }
}
