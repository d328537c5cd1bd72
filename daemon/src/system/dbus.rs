//! The D-Bus interface `org.airlock.Daemon1` at `/org/airlock/Daemon1` on the system bus
//! (`zbus`, on the daemon's tokio runtime): properties (version, state, active models, bundles
//! awaiting approval), signals (`BundleStaged`, `ValidationFinished`, `ModelPromoted`,
//! `ModelRolledBack`, `Degraded`) and the lifecycle methods of the admin API. Every method asks
//! the bus who is calling (`GetConnectionCredentials`: uid, groups, pid) and applies the same
//! role mapping as the admin socket (`[admin.roles]`). The bus policy that lets the daemon own
//! the name and lets anyone call it ships as `packaging/org.airlock.Daemon1.conf`.
//!
//! Without a system bus (`--dev` on a development machine, a container) the daemon logs one
//! warning and runs on: the admin socket offers everything the interface does.
// zbus's `interface` macro generates undocumented helpers (`*_changed`, signal emitters).
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use airlock_config::Role;
use semver::Version;
use tokio_util::sync::CancellationToken;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{fdo, interface, Connection};

use crate::auth::{identity_of, permitted, Identity};
use crate::error::{Class, Failure};
use crate::events::Event;
use crate::lifecycle::{Lifecycle, LifecycleError};

/// The bus name.
pub const NAME: &str = "org.airlock.Daemon1";
/// The object path.
pub const PATH: &str = "/org/airlock/Daemon1";

/// The exported object.
pub struct Daemon1 {
    lc: Arc<Lifecycle>,
    roles: BTreeMap<String, Role>,
    state: Arc<std::sync::Mutex<&'static str>>,
}

/// A refusal or failure as a D-Bus error: one error name per failure class (the standard
/// names where D-Bus has one: `AccessDenied`, `InvalidArgs`, `AuthFailed`; `org.airlock.Error.*`
/// for the others) and the kind in front of the message (`anti_rollback: …`).
#[derive(Debug)]
pub struct BusError {
    name: String,
    description: String,
}

/// The one mapping of failure classes to D-Bus error names.
pub fn error_name(class: Class) -> &'static str {
    match class {
        Class::Forbidden => "org.freedesktop.DBus.Error.AccessDenied",
        Class::BadRequest => "org.freedesktop.DBus.Error.InvalidArgs",
        Class::Unauthenticated => "org.freedesktop.DBus.Error.AuthFailed",
        Class::NotFound => "org.airlock.Error.NotFound",
        Class::Conflict => "org.airlock.Error.Conflict",
        Class::TooLarge => "org.airlock.Error.TooLarge",
        Class::BodyTimeout => "org.airlock.Error.Timeout",
        Class::Unprocessable => "org.airlock.Error.Refused",
        Class::QueueFull => "org.airlock.Error.QueueFull",
        Class::DeadlineExceeded => "org.airlock.Error.DeadlineExceeded",
        Class::Unavailable => "org.airlock.Error.Unavailable",
        Class::InsufficientStorage => "org.airlock.Error.InsufficientStorage",
        Class::UnsupportedMedia => "org.airlock.Error.Unsupported",
        Class::Internal => "org.airlock.Error.Failed",
    }
}

impl From<Failure> for BusError {
    fn from(f: Failure) -> BusError {
        BusError {
            name: error_name(f.class).to_string(),
            description: format!("{}: {}", f.kind, f.message),
        }
    }
}

impl From<fdo::Error> for BusError {
    fn from(e: fdo::Error) -> BusError {
        use zbus::DBusError;
        BusError {
            name: e.name().to_string(),
            description: e.description().unwrap_or_default().to_string(),
        }
    }
}

impl From<zbus::Error> for BusError {
    fn from(e: zbus::Error) -> BusError {
        BusError::from(fdo::Error::from(e))
    }
}

impl zbus::DBusError for BusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        zbus::message::Message::error(call, self.name())?.build(&(self.description.as_str(),))
    }

    fn name(&self) -> zbus::names::ErrorName<'_> {
        zbus::names::ErrorName::from_str_unchecked(&self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.description)
    }
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.description)
    }
}

impl std::error::Error for BusError {}

fn failed(e: LifecycleError) -> BusError {
    Failure::from(e).into()
}

fn version(v: &str) -> Result<Version, BusError> {
    Version::parse(v).map_err(|_| {
        fdo::Error::InvalidArgs(format!("{v:?} is not a version (MAJOR.MINOR.PATCH)")).into()
    })
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl Daemon1 {
    /// Who sent this call, and their roles.
    async fn caller(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Identity, BusError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| fdo::Error::AccessDenied("the call has no sender".into()))?;
        let creds = fdo::DBusProxy::new(conn)
            .await?
            .get_connection_credentials(sender.clone().into())
            .await?;
        let uid = creds.unix_user_id().ok_or_else(|| {
            fdo::Error::AccessDenied("the bus does not say who is calling".into())
        })?;
        let gids = creds.unix_group_ids().cloned().unwrap_or_default();
        Ok(identity_of(&self.roles, uid, &gids))
    }

    async fn allowed(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        role: Role,
        what: &str,
    ) -> Result<Identity, BusError> {
        let who = self.caller(hdr, conn).await?;
        permitted(&who, role, what).map_err(fdo::Error::AccessDenied)?;
        Ok(who)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Lifecycle>) -> Result<T, LifecycleError> + Send + 'static,
    ) -> Result<T, BusError> {
        let lc = self.lc.clone();
        tokio::task::spawn_blocking(move || f(lc))
            .await
            .map_err(|e| fdo::Error::Failed(format!("the operation panicked: {e}")))?
            .map_err(failed)
    }
}

#[interface(name = "org.airlock.Daemon1")]
impl Daemon1 {
    /// The daemon's version.
    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// `serving` or `stopping`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_string()
    }

    /// (model, active version) for every model served.
    #[zbus(property)]
    fn active_models(&self) -> Vec<(String, String)> {
        self.lc
            .infer()
            .models()
            .snapshot()
            .iter()
            .map(|(n, s)| (n.clone(), s.active.version.to_string()))
            .collect()
    }

    /// (model, version) of every validated version waiting for approvals.
    #[zbus(property)]
    fn bundles_awaiting_approval(&self) -> Vec<(String, String)> {
        let models = self.lc.updater().registry().models().unwrap_or_default();
        models
            .iter()
            .flat_map(|m| {
                m.versions
                    .values()
                    .filter(|v| v.state == airlock_updater::VersionState::Validated)
                    .map(|v| (m.name.clone(), v.version.to_string()))
            })
            .collect()
    }

    /// Imports a bundle on removable media airlockd offers (operator; `BundlesAvailable` names
    /// them); any other path is refused. Validation starts right after. Returns (model, version).
    #[zbus(out_args("model", "version"))]
    async fn import_path(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        path: String,
    ) -> Result<(String, String), BusError> {
        let who = self
            .allowed(&hdr, conn, Role::Operator, "import bundles")
            .await?;
        let v = self
            .blocking(move |lc| lc.import_offered(std::path::Path::new(&path), &who.actor))
            .await?;
        Ok((v.model, v.version.to_string()))
    }

    /// Imports a bundle from a file the caller opened (operator): the caller passes the
    /// descriptor, so its own permissions decided what it could open. Returns (model, version).
    #[zbus(out_args("model", "version"))]
    async fn import_fd(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        file: zbus::zvariant::OwnedFd,
    ) -> Result<(String, String), BusError> {
        let who = self
            .allowed(&hdr, conn, Role::Operator, "import bundles")
            .await?;
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(file));
        let v = self
            .blocking(move |lc| lc.import_handed(file, "d-bus descriptor", &who.actor))
            .await?;
        Ok((v.model, v.version.to_string()))
    }

    /// Approves a validated version (approver); returns its state afterwards.
    async fn approve(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        model: String,
        version: String,
        comment: String,
        acknowledge_contract_change: bool,
    ) -> Result<String, BusError> {
        let who = self
            .allowed(&hdr, conn, Role::Approver, "approve versions")
            .await?;
        let v = self::version(&version)?;
        let state = self
            .blocking(move |lc| {
                lc.approve(
                    &model,
                    &v,
                    &who.actor,
                    opt(&comment),
                    acknowledge_contract_change,
                    None,
                )
            })
            .await?;
        Ok(state.to_string())
    }

    /// Rejects a version (approver).
    async fn reject(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        model: String,
        version: String,
        reason: String,
    ) -> Result<(), BusError> {
        let who = self
            .allowed(&hdr, conn, Role::Approver, "reject versions")
            .await?;
        let v = self::version(&version)?;
        self.blocking(move |lc| lc.reject(&model, &v, &who.actor, opt(&reason)))
            .await
    }

    /// Promotes an approved version (operator), with zero dropped requests.
    async fn promote(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        model: String,
        version: String,
    ) -> Result<(), BusError> {
        let who = self
            .allowed(&hdr, conn, Role::Operator, "promote versions")
            .await?;
        let v = self::version(&version)?;
        self.blocking(move |lc| lc.promote(&model, &v, &who.actor))
            .await
    }

    /// Rolls back to the version that served before (operator); returns the version now active.
    async fn rollback(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        model: String,
        reason: String,
    ) -> Result<String, BusError> {
        let who = self
            .allowed(&hdr, conn, Role::Operator, "roll back")
            .await?;
        let v = self
            .blocking(move |lc| lc.rollback(&model, None, &who.actor, opt(&reason)))
            .await?;
        Ok(v.to_string())
    }

    /// A bundle was imported; its version is staged and being validated.
    #[zbus(signal)]
    async fn bundle_staged(e: &SignalEmitter<'_>, model: &str, version: &str) -> zbus::Result<()>;

    /// Validation of a version ended.
    #[zbus(signal)]
    async fn validation_finished(
        e: &SignalEmitter<'_>,
        model: &str,
        version: &str,
        passed: bool,
    ) -> zbus::Result<()>;

    /// A version went into service.
    #[zbus(signal)]
    async fn model_promoted(e: &SignalEmitter<'_>, model: &str, version: &str) -> zbus::Result<()>;

    /// A rollback put an earlier version back in service.
    #[zbus(signal)]
    async fn model_rolled_back(
        e: &SignalEmitter<'_>,
        model: &str,
        version: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A removable medium with bundles appeared (they are offered, not imported, unless
    /// `[media] auto_stage`).
    #[zbus(signal)]
    async fn bundles_available(
        e: &SignalEmitter<'_>,
        mount: &str,
        bundles: Vec<String>,
    ) -> zbus::Result<()>;

    /// A model runs degraded (its GPU path failed; `reason` says what serves instead).
    #[zbus(signal)]
    async fn degraded(e: &SignalEmitter<'_>, model: &str, reason: &str) -> zbus::Result<()>;
}

/// Connects to the system bus, exports the interface and relays lifecycle events as signals
/// until `shutdown`. Without a system bus: one warning, and nothing else.
pub async fn serve(lc: Arc<Lifecycle>, roles: BTreeMap<String, Role>, shutdown: CancellationToken) {
    let state = Arc::new(std::sync::Mutex::new("serving"));
    let obj = Daemon1 {
        lc: lc.clone(),
        roles,
        state: state.clone(),
    };
    let built = async {
        zbus::connection::Builder::system()?
            .name(NAME)?
            .serve_at(PATH, obj)?
            .build()
            .await
    }
    .await;
    let conn = match built {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no system D-Bus: the org.airlock.Daemon1 interface is off (the admin socket offers the same)");
            return;
        }
    };
    tracing::info!(name = NAME, path = PATH, "D-Bus interface exported");
    let iface = match conn.object_server().interface::<_, Daemon1>(PATH).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "D-Bus interface lookup failed");
            return;
        }
    };
    let mut events = lc.events().subscribe();
    let mut degraded: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        let em = iface.signal_emitter();
        let sent = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                // Degradation is a state of the engine, not a lifecycle step: watch for it.
                let mut now = BTreeSet::new();
                for (name, slot) in lc.infer().models().snapshot().iter() {
                    if let Some(reason) = slot.active.degraded() {
                        now.insert(name.clone());
                        if !degraded.contains(name) {
                            let _ = Daemon1::degraded(em, name, &reason).await;
                        }
                    }
                }
                degraded = now;
                Ok(())
            }
            ev = events.recv() => match ev {
                Ok(Event::Staged { model, version }) => {
                    let r = Daemon1::bundle_staged(em, &model, &version).await;
                    r
                }
                Ok(Event::Validated { model, version, passed }) => {
                    let r = Daemon1::validation_finished(em, &model, &version, passed).await;
                    let _ = iface.get().await.bundles_awaiting_approval_changed(em).await;
                    r
                }
                Ok(Event::Promoted { model, version }) => {
                    let r = Daemon1::model_promoted(em, &model, &version).await;
                    let _ = iface.get().await.active_models_changed(em).await;
                    let _ = iface.get().await.bundles_awaiting_approval_changed(em).await;
                    r
                }
                Ok(Event::MediaBundles { mount, bundles }) => {
                    Daemon1::bundles_available(em, &mount, bundles).await
                }
                Ok(Event::RolledBack { model, version, reason }) => {
                    let r = Daemon1::model_rolled_back(em, &model, &version, &reason).await;
                    let _ = iface.get().await.active_models_changed(em).await;
                    r
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "D-Bus signals fell behind lifecycle events");
                    Ok(())
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot emit a D-Bus signal");
        }
    }
    *state.lock().unwrap_or_else(|p| p.into_inner()) = "stopping";
    let _ = iface
        .get()
        .await
        .state_changed(iface.signal_emitter())
        .await;
}
