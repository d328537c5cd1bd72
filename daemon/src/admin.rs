//! The admin API on a Unix socket (`[admin] socket`), the start of the `/api/v1` surface the
//! lifecycle issue completes. The peer's uid (`SO_PEERCRED`) decides who may use it; today:
//! tokens — create (the secret is returned once), list (never secrets), revoke (at once).
//!
//! Invariant: a token's secret exists only in the response to its creation; the serving path
//! sees only the refreshed cache of hashed records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_updater::tokens::{Scope, TokenRecord};
use airlock_updater::{Actor, Updater};
use arc_swap::ArcSwap;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::api::error;

/// The hashed token records the serving path checks against (`None`: no authentication, --dev).
pub type TokenCache = Arc<ArcSwap<BTreeMap<String, TokenRecord>>>;

/// Loads the token cache from the registry.
pub fn load_tokens(updater: &Updater) -> anyhow::Result<TokenCache> {
    Ok(Arc::new(ArcSwap::from_pointee(
        updater.registry().tokens()?,
    )))
}

struct AdminState {
    updater: Arc<Updater>,
    tokens: TokenCache,
    admins: Vec<u32>,
    uid: u32,
}

type S = State<Arc<AdminState>>;

fn authorised(s: &AdminState) -> Result<Actor, Response> {
    if !s.admins.contains(&s.uid) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("uid {} may not use the admin API", s.uid),
        ));
    }
    Actor::new(&format!("uid:{}", s.uid))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn public(r: &TokenRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "scopes": r.scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "created_by": r.created_by,
        "created_at": r.created_at,
        "revoked_at": r.revoked_at,
    })
}

fn refresh(s: &AdminState) -> Result<(), Response> {
    let all = s
        .updater
        .registry()
        .tokens()
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    s.tokens.store(Arc::new(all));
    Ok(())
}

async fn list(State(s): S) -> Response {
    if let Err(r) = authorised(&s) {
        return r;
    }
    match s.updater.registry().tokens() {
        Ok(all) => {
            Json(json!({ "tokens": all.values().map(public).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn create(State(s): S, body: axum::body::Bytes) -> Response {
    let actor = match authorised(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be JSON: {\"name\": \"...\", \"scopes\": [\"model:NAME\" | \"model:*\" | \"metrics\"]}");
    };
    let Some(name) = req
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 64)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "\"name\" must be a string of 1 to 64 characters",
        );
    };
    let scopes = match req.get("scopes").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|v| Scope::parse(v.as_str().unwrap_or("")))
            .collect::<Result<Vec<_>, _>>(),
        _ => Err("\"scopes\" must be a non-empty array (model:NAME, model:*, metrics)".to_string()),
    };
    let scopes = match scopes {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = match s.updater.now() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match s.updater.registry().create_token(now, name, scopes, &actor) {
        Ok((rec, token)) => {
            if let Err(r) = refresh(&s) {
                return r;
            }
            tracing::info!(id = %rec.id, name = %rec.name, by = %actor, "token created");
            let mut v = public(&rec);
            v["token"] = json!(token);
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn revoke(State(s): S, UrlPath(id): UrlPath<String>) -> Response {
    let actor = match authorised(&s) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = match s.updater.now() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match s.updater.registry().revoke_token(now, &id, &actor) {
        Ok(rec) => {
            if let Err(r) = refresh(&s) {
                return r;
            }
            tracing::info!(id = %rec.id, name = %rec.name, by = %actor, "token revoked");
            Json(public(&rec)).into_response()
        }
        Err(airlock_updater::Error::UnknownToken(id)) => {
            error(StatusCode::NOT_FOUND, format!("no token with id {id}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Binds the admin socket (replacing a stale socket from an earlier run, nothing else).
pub fn bind(socket: &std::path::Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            std::fs::remove_file(socket)?;
        }
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("cannot bind the admin socket {}: {e}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "admin API listening");
    Ok(listener)
}

/// Serves the admin API on `listener` (bound at `socket`) until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    updater: Arc<Updater>,
    tokens: TokenCache,
    admins: Vec<u32>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok(x) => x, Err(e) => { tracing::warn!(error = %e, "admin accept failed"); continue; } },
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!(error = %e, "admin peer credentials unavailable; connection refused");
                continue;
            }
        };
        let state = Arc::new(AdminState {
            updater: updater.clone(),
            tokens: tokens.clone(),
            admins: admins.clone(),
            uid,
        });
        let app = Router::new()
            .route("/api/v1/tokens", get(list).post(create))
            .route("/api/v1/tokens/{id}", delete(revoke))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
            .with_state(state);
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
