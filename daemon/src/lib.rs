//! `airlockd`, the appliance daemon: the composition root. [`run`] loads the configuration (or
//! the `--dev` one), loads ONNX Runtime, opens the state through `airlock-updater`, builds the
//! inference core (`airlock-engine`'s `Infer` over the routing table), the lifecycle and the
//! token records, and wires the adapters to them: `http` (Open Inference Protocol v2 and the
//! admin API), `system` (systemd, D-Bus, UDisks2, TLS, logging, privileges).
//!
//! Layering inside the crate (no circle): `auth`, `events`, `trace`, `metrics` and `limits`
//! import nothing of the daemon; `lifecycle` uses `events`; `error` knows the engine's and the
//! lifecycle's errors; the adapters (`http`, `system`) use those; nothing but this file imports
//! an adapter.
//!
//! Invariant: `main.rs` stays thin; everything here is reachable from [`run`].
#![deny(missing_docs)]
// HTTP handlers return `Result<_, Response>` so that an early refusal already is the answer;
// the size of `Response` in the error arm is irrelevant next to the request it answers.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod dev;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod system;
pub mod telemetry;
pub mod trace;
pub mod traces;

use std::path::PathBuf;
use std::sync::Arc;

use airlock_config::Config;
use airlock_updater::Updater;
use anyhow::Context;
use clap::Parser;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "airlockd", version, about = "The airlock appliance daemon")]
pub struct Args {
    /// Configuration file. With --dev, it supplies every section except [paths] and
    /// [approval], which development mode sets itself.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Development mode: embedded defaults, data under ./airlock-dev, a generated development
    /// trust root, and the demo model imported, validated and promoted through the real pipeline.
    #[arg(long)]
    pub dev: bool,
    /// Listen address (dev default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// gRPC listen address (default `[grpc] listen`; dev 127.0.0.1:8001).
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Internal: run one validation handed over on stdin (the daemon starts these).
    #[arg(long, hide = true, conflicts_with_all = ["config", "dev", "init", "once"])]
    pub validate_worker: bool,
    /// Validate a configuration file and exit (0 valid, 2 invalid).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "dev"])]
    pub check_config: Option<PathBuf>,
    /// Print the effective configuration (with every default) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Bootstrap (in --dev) or open the state, load the active models, report, and exit instead of serving.
    #[arg(long)]
    pub once: bool,
    /// First boot of an appliance (production only): install the initial trust root, generate
    /// the TLS certificate and the appliance identity key if missing, print `url=`,
    /// `tls_sha256=` and `identity=` lines, and exit. Idempotent: existing files are kept.
    #[arg(long, conflicts_with_all = ["dev", "once"])]
    pub init: bool,
}

/// Errors that mean "the configuration is wrong" (exit 2) rather than "running failed" (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigInvalid(String);

/// The exit code for an error returned by [`run`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigInvalid>().is_some() {
        2
    } else {
        1
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    airlock_config::load(path).map_err(|e| match e {
        airlock_config::LoadError::Invalid(c) => anyhow::Error::new(ConfigInvalid(c.to_string())),
        io => anyhow::Error::new(ConfigInvalid(io.to_string())),
    })
}

/// This machine's host name (the kernel's, else /etc/hostname).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .and_then(|h| h.split_whitespace().next().map(str::to_string))
}

/// The names a generated certificate is valid for: loopback and this machine's host name (the
/// one `--init` puts in the console URL).
fn certificate_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(host_name());
    names
}

/// `airlockd --init`: what an appliance's first boot needs before the daemon starts. Keeps
/// whatever exists (a second run changes nothing) and prints what the console shows.
fn first_boot(config: &Config, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let updater = Updater::open(config).context("cannot open the data directory")?;
    if let Some(w) = updater
        .install_initial_trust_root(&config.paths.initial_trust_root)
        .context("cannot install the initial trust root")?
    {
        tracing::warn!("{w}");
    }
    drop(updater);
    let identity = config.paths.data_dir.join("identity/appliance.key");
    if !identity.exists() {
        std::fs::create_dir_all(identity.parent().unwrap_or(&config.paths.data_dir))?;
        airlock_signing::PrivateKey::generate()?
            .write_new(&identity)
            .with_context(|| format!("cannot write {}", identity.display()))?;
        tracing::info!(key = %identity.display(), "generated the appliance identity key");
    }
    let public = airlock_signing::PrivateKey::read(&identity)?.public();
    let scheme = if config.server.tls { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() {
        host_name().unwrap_or_else(|| "localhost".into())
    } else {
        addr.ip().to_string()
    };
    println!("url={scheme}://{host}:{}/", addr.port());
    if config.server.tls {
        // Generated (or renewed within 30 days of its end) when airlockd made it; logged.
        system::tls::ensure_certificate(&config.paths.data_dir, certificate_names())?;
        let (cert, key) = system::tls::paths(&config.paths.data_dir);
        let (_, fingerprint) = system::tls::load(&cert, &key)?;
        println!("tls_sha256={fingerprint}");
    }
    println!("identity=ed25519:{}", public.to_hex());
    println!("identity_key_id={}", public.key_id());
    Ok(())
}

/// Runs the daemon with parsed arguments.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.validate_worker {
        return lifecycle::sandbox::worker();
    }
    if let Some(path) = &args.check_config {
        let c = load(path)?;
        if args.print_config {
            print!("{}", c.to_toml());
        }
        println!("{}: valid", path.display());
        return Ok(());
    }
    let (config, dev) = match (&args.config, args.dev) {
        (Some(path), false) => (load(path)?, false),
        (base, true) => (dev::config(base.as_deref().map(load).transpose()?)?, true),
        _ => return Err(ConfigInvalid("give --config FILE (production) or --dev".into()).into()),
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    system::privileges::check_user(&config, dev).map_err(|e| ConfigInvalid(e.0))?;
    system::privileges::check_files(&config, args.config.as_deref())
        .map_err(|e| ConfigInvalid(e.0))?;
    let log_guard =
        Arc::new(system::logging::init(&config.logging).context("cannot set up logging")?);
    let listen = match (&args.listen, dev) {
        (Some(l), _) => l.clone(),
        (None, true) => "127.0.0.1:8080".to_string(),
        (None, false) => config.server.listen.clone(),
    };
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| ConfigInvalid(format!("--listen {listen:?} is not an address (IP:PORT)")))?;
    // Plain HTTP only on loopback (--dev, or `tls = false` behind a local proxy).
    if !config.server.tls && !addr.ip().is_loopback() {
        return Err(ConfigInvalid(format!(
            "listen address {addr} is not loopback: plain HTTP is refused there (set [server] tls = true)"
        ))
        .into());
    }
    let grpc_addr: Option<std::net::SocketAddr> = match (&args.grpc_listen, config.grpc.enabled) {
        (None, false) => None,
        (l, _) => {
            let l = l.clone().unwrap_or_else(|| config.grpc.listen.clone());
            let a: std::net::SocketAddr = l.parse().map_err(|_| {
                ConfigInvalid(format!("--grpc-listen {l:?} is not an address (IP:PORT)"))
            })?;
            if !config.server.tls && !a.ip().is_loopback() {
                return Err(ConfigInvalid(format!(
                    "gRPC listen address {a} is not loopback: plaintext gRPC is refused there (set [server] tls = true)"
                ))
                .into());
            }
            Some(a)
        }
    };
    if args.init {
        return first_boot(&config, addr);
    }
    let runtime = airlock_engine::Runtime::get(&config)?;
    let updater = Arc::new(Updater::open(&config).context("cannot open the data directory")?);
    if dev {
        let validator = lifecycle::validator::OrtValidator::new(runtime, config.clone());
        dev::bootstrap(&updater, &config, &validator).context("development bootstrap failed")?;
    } else if let Some(w) = updater
        .install_initial_trust_root(&config.paths.initial_trust_root)
        .context("cannot install the trust root")?
    {
        tracing::warn!("{w}");
    }
    report(&updater)?;
    let tokens = auth::Tokens::load(updater.clone())?;
    let metrics = metrics::Metrics::new();
    let infer = Arc::new(airlock_engine::Infer::new(
        Arc::new(airlock_engine::Models::default()),
        Arc::new(metrics::Observe(metrics.clone())),
    ));
    let state = Arc::new(http::AppState {
        infer: infer.clone(),
        max_body: config.server.max_body_size.0,
        max_response: config.server.max_response_size.0,
        metrics,
        tokens: if dev { None } else { Some(tokens.clone()) },
        // Off with the rest of telemetry.
        traces: traces::Traces::new(
            if config.telemetry.enabled {
                config.telemetry.max_traces
            } else {
                0
            },
            config.telemetry.slow_trace.get(),
        ),
    });
    let (n, unavailable) =
        lifecycle::serving::load_active(infer.models(), runtime, &updater, &config)?;
    tracing::info!(
        models = n,
        unavailable = unavailable.len(),
        "active models loaded"
    );
    if !unavailable.is_empty() {
        let entries: Vec<_> = unavailable
            .iter()
            .map(|(m, u)| airlock_updater::AuditEntry {
                actor: airlock_updater::Actor::system().to_string(),
                action: "model_unavailable".into(),
                model: Some(m.clone()),
                version: Some(u.version.to_string()),
                detail: serde_json::json!({ "reason": u.reason }),
            })
            .collect();
        let now = updater.now()?;
        if let Err(e) = updater.registry().audit_only(now, &entries) {
            tracing::error!(error = %e, "the unavailable models could not be recorded in the audit log");
        }
    }
    let lifecycle =
        lifecycle::Lifecycle::new(updater.clone(), infer.clone(), runtime, config.clone());
    if !args.once {
        lifecycle.resume()?;
    }
    // History from the first second of serving (not for a --once check).
    let telemetry = if args.once {
        telemetry::Telemetry::off()
    } else {
        telemetry::Telemetry::start(&config, state.metrics.clone(), infer.models().clone())
    };
    let admin_state = Arc::new(http::admin::AdminState {
        telemetry: telemetry.clone(),
        traces: state.traces.clone(),
        lifecycle: lifecycle.clone(),
        tokens: tokens.clone(),
        token_overlap: config.server.token_overlap.get(),
    });
    if args.once {
        lifecycle.shutdown(
            config
                .server
                .shutdown_timeout
                .get()
                .min(std::time::Duration::from_secs(5)),
        );
        infer.models().unload_all();
        // A check (the image build runs one): a model that cannot be served fails it.
        if !unavailable.is_empty() {
            let list: Vec<String> = unavailable
                .iter()
                .map(|(m, u)| format!("{m} {}: {}", u.version, u.reason))
                .collect();
            anyhow::bail!(
                "{} model(s) unavailable: {}",
                unavailable.len(),
                list.join("; ")
            );
        }
        return Ok(());
    }
    let tls = if config.server.tls {
        system::tls::ensure_certificate(&config.paths.data_dir, certificate_names())?;
        system::tls::warn_if_expiring(&config.paths.data_dir);
        let (cert, key) = system::tls::paths(&config.paths.data_dir);
        Some(system::tls::Reloadable::new(cert, key)?)
    } else {
        None
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let io_threads = config.server.io_threads_for(cores);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .thread_name("airlock-io")
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let grpc_listener = match grpc_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on {a} (gRPC)"))?,
            ),
            None => None,
        };
        let grpc_bound = match &grpc_listener {
            Some(l) => l.local_addr()?.to_string(),
            None => "off".to_string(),
        };
        let admin_listener = http::admin::bind(&config.admin.socket, config.admin.socket_mode)?;
        // Signal handlers exist before anyone is told the daemon is ready.
        let stop_signals = stop_signals()?;
        tracing::info!(listen = %bound, grpc = %grpc_bound, tls = tls.is_some(), io_threads, "ready: serving the Open Inference Protocol v2 (HTTP and gRPC)");
        let status = {
            let (infer, updater) = (infer.clone(), updater.clone());
            move || system::systemd::status_line(infer.models(), awaiting_approval(&updater))
        };
        system::systemd::ready(&status());
        // The watchdog is petted from the serving runtime itself: if it wedges, systemd restarts us.
        if let Some(every) = system::systemd::watchdog_interval() {
            tracing::info!(interval_ms = every.as_millis() as u64, "systemd watchdog enabled");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    system::systemd::watchdog();
                }
            });
        }
        // STATUS= follows what is served (promotions, degradation, approvals waiting).
        {
            let status = status.clone();
            tokio::spawn(async move {
                let mut last = String::new();
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    let now = tokio::task::spawn_blocking(status.clone()).await.unwrap_or_default();
                    if now != last {
                        system::systemd::status(&now);
                        last = now;
                    }
                }
            });
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        // Lifecycle steps counted for /metrics (and so for the telemetry history).
        {
            let (mut events, metrics, stop) =
                (lifecycle.events().subscribe(), state.metrics.clone(), shutdown.clone());
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let e = tokio::select! {
                        _ = stop.cancelled() => break,
                        e = events.recv() => e,
                    };
                    let name = match e {
                        Ok(events::Event::Staged { .. }) => "staged",
                        Ok(events::Event::Validated { passed: true, .. }) => "validation_passed",
                        Ok(events::Event::Validated { passed: false, .. }) => "validation_failed",
                        Ok(events::Event::Promoted { .. }) => "promoted",
                        Ok(events::Event::RolledBack { .. }) => "rolled_back",
                        Ok(events::Event::MediaBundles { .. }) => continue,
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "lifecycle event counter fell behind");
                            continue;
                        }
                        Err(RecvError::Closed) => break,
                    };
                    metrics.lifecycle_event(name);
                }
            });
        }
        let usb_task = tokio::spawn(system::usb::watch(
            lifecycle.clone(),
            config.media.clone(),
            shutdown.clone(),
        ));
        let dbus_task = tokio::spawn(system::dbus::serve(
            lifecycle.clone(),
            config.admin.roles.clone(),
            shutdown.clone(),
        ));
        let timeouts = limits::ConnTimeouts::from_config(&config.server);
        let (server_cap, admin_cap) =
            limits::fit_caps(config.server.max_connections, config.admin.max_connections);
        let admin_task = tokio::spawn(http::admin::serve(
            admin_listener,
            config.admin.socket.clone(),
            admin_state.clone(),
            config.admin.roles.clone(),
            timeouts,
            limits::ConnCap::new(
                "admin socket",
                admin_cap,
                (config.admin.max_connections_per_uid as usize).min(admin_cap),
            ),
            shutdown.clone(),
        ));
        let acceptor = match &tls {
            Some(r) => Some(tokio_rustls::TlsAcceptor::from(r.server_config(&[b"http/1.1"])?)),
            None => None,
        };
        // One cap for both inference listeners: what fit_caps sized against the fd limit.
        let inference_cap = limits::ConnCap::new("inference", server_cap, server_cap);
        let grpc_task = match grpc_listener {
            Some(l) => {
                let grpc_tls = match &tls {
                    Some(r) => Some(tokio_rustls::TlsAcceptor::from(r.server_config(&[b"h2"])?)),
                    None => None,
                };
                let grpc_state = Arc::new(grpc::GrpcState {
                    infer: infer.clone(),
                    tokens: if dev { None } else { Some(tokens.clone()) },
                    traces: state.traces.clone(),
                    max_message: config.grpc.max_message_size.0 as usize,
                    max_response: config.server.max_response_size.0.min(config.grpc.max_message_size.0),
                    shutdown: shutdown.clone(),
                });
                Some(tokio::spawn(grpc::serve(
                    l,
                    grpc_state,
                    grpc_tls,
                    timeouts,
                    inference_cap.clone(),
                    shutdown.clone(),
                    config.server.shutdown_timeout.get(),
                )))
            }
            None => None,
        };
        // SIGHUP reloads what can change live: the TLS certificate and the token records.
        {
            let (tls, tokens, status) = (tls.clone(), tokens.clone(), status.clone());
            let (config_file, lifecycle, log_guard) =
                (args.config.clone().filter(|_| !dev), lifecycle.clone(), log_guard.clone());
            let mut running = config.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the TLS certificate and tokens");
                    system::systemd::reloading();
                    if let Some(path) = &config_file {
                        config_changes(path, &mut running, &lifecycle, &log_guard);
                    }
                    if let Some(t) = &tls {
                        t.reload();
                    }
                    if let Err(e) = tokens.refresh() {
                        tracing::error!(error = %e, "token reload failed");
                    }
                    let line = tokio::task::spawn_blocking(status.clone()).await.unwrap_or_default();
                    system::systemd::ready(&line);
                    tracing::info!("reload done");
                }
            });
        }
        let stop = shutdown.clone();
        let drain = config.server.shutdown_timeout.get();
        tokio::spawn(async move {
            wait_for_stop(stop_signals).await;
            system::systemd::stopping(&format!(
                "stopping: finishing requests in flight (at most {} s)",
                drain.as_secs()
            ));
            stop.cancel();
        });
        http::serve(
            listener,
            // The admin API on the TCP listener only where tokens authenticate it (not --dev).
            http::router(state.clone(), (!dev).then(|| http::admin::router(admin_state.clone()))),
            acceptor,
            timeouts,
            inference_cap,
            shutdown.clone(),
            config.server.shutdown_timeout.get(),
        )
        .await;
        shutdown.cancel();
        if let Some(t) = grpc_task {
            let _ = t.await;
        }
        admin_task.await??;
        let _ = dbus_task.await;
        let _ = usb_task.await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopping");
    telemetry.stop();
    lifecycle.shutdown(
        config
            .server
            .shutdown_timeout
            .get()
            .min(std::time::Duration::from_secs(5)),
    );
    infer.models().unload_all();
    updater.registry().flush()?;
    Ok(())
}

/// On SIGHUP: re-reads the configuration file. An invalid file is reported (key and line) and
/// changes nothing. A valid one is applied live where that is possible — `[logging] level` and
/// `[lifecycle]` (drain timeout, retention, auto-rollback) — and the other changed sections are
/// named as taking effect at the next restart. (Also reloaded on SIGHUP, as state: the TLS
/// certificate, the tokens; the trust root is read from the registry at each use.)
fn config_changes(
    path: &std::path::Path,
    running: &mut Config,
    lifecycle: &lifecycle::Lifecycle,
    log: &system::logging::LogGuard,
) {
    match airlock_config::load(path) {
        Err(e) => {
            tracing::error!(error = %e, "configuration not reloaded: the file is invalid; the running configuration stays")
        }
        Ok(mut new) => {
            // Live: [logging] level and [lifecycle].
            let mut live = Vec::new();
            if new.logging.level != running.logging.level {
                match log.set_level(&new.logging.level) {
                    Ok(()) => {
                        running.logging.level = new.logging.level.clone();
                        live.push("[logging] level");
                    }
                    Err(e) => tracing::warn!(error = %e, "[logging] level not applied"),
                }
            }
            if new.lifecycle != running.lifecycle {
                lifecycle.set_settings(new.lifecycle.clone());
                running.lifecycle = new.lifecycle.clone();
                live.push("[lifecycle]");
            }
            if !live.is_empty() {
                tracing::info!(applied = %live.join(", "), "configuration reloaded");
            }
            // What remains different needs a restart (the live parts are taken over first).
            new.logging.level = running.logging.level.clone();
            new.lifecycle = running.lifecycle.clone();
            let sections = |c: &Config| -> std::collections::BTreeMap<String, String> {
                match toml::Value::try_from(c) {
                    Ok(toml::Value::Table(t)) => {
                        t.into_iter().map(|(k, v)| (k, v.to_string())).collect()
                    }
                    _ => Default::default(),
                }
            };
            let (old, new) = (sections(running), sections(&new));
            let changed: Vec<&String> = new
                .keys()
                .chain(old.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| old.get(*k) != new.get(*k))
                .collect();
            if changed.is_empty() {
                if live.is_empty() {
                    tracing::info!("configuration unchanged");
                }
            } else {
                let list = changed
                    .iter()
                    .map(|k| format!("[{k}]"))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(sections = %list, "configuration changed; these sections take effect at the next restart (systemctl restart airlockd)");
            }
        }
    }
}

/// Versions that passed validation and wait for approvals.
fn awaiting_approval(updater: &Updater) -> usize {
    updater
        .registry()
        .models()
        .map(|ms| {
            ms.iter()
                .flat_map(|m| m.versions.values())
                .filter(|v| v.state == airlock_updater::VersionState::Validated)
                .count()
        })
        .unwrap_or(0)
}

/// Logs one line per model: what is active and what awaits approval.
fn report(updater: &Updater) -> anyhow::Result<()> {
    for m in updater.registry().models()? {
        let waiting = m
            .versions
            .values()
            .filter(|v| v.state == airlock_updater::VersionState::Validated)
            .count();
        tracing::info!(
            model = %m.name,
            active = %m.active.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
            versions = m.versions.len(),
            awaiting_approval = waiting,
            "model"
        );
    }
    let n = updater
        .registry()
        .verify_audit()
        .context("the audit chain does not verify")?;
    tracing::info!(records = n, "audit chain verified");
    Ok(())
}

type StopSignals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

fn stop_signals() -> anyhow::Result<StopSignals> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok((
        signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
    ))
}

async fn wait_for_stop((mut term, mut int): StopSignals) {
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "signal received");
}
