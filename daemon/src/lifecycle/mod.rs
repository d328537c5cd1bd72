//! The model lifecycle inside the daemon: import (from a path or a streamed upload), validation
//! on this machine's execution provider, approval, promotion with zero dropped requests,
//! rollback (by hand or automatic), and retention. The registry (`airlock-updater`) decides what
//! is legal and records it; this module does the serving side of each step in an order that a
//! crash at any point leaves consistent:
//!
//! ```text
//! promote: begin_promotion (intent persisted) → load + warm → complete_promotion → swap → drain
//! rollback: load + warm the target → registry rollback → swap → drain
//! ```
//!
//! A crash before `complete_promotion` is undone at start-up (the registry abandons the intent,
//! the old version is loaded); a crash after it is completed by start-up (the new version is
//! loaded because the registry says it is active). Invariant: the routing table only ever holds
//! versions the registry has made active (or is about to, in the same step), and a replaced
//! version is released only after the requests holding it finished or the drain timeout passed.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::Config;
use airlock_updater::{Actor, Updater, ValidationReport, VersionState};
use semver::Version;

use airlock_engine::{Infer, LoadedModel, Runtime};
use sandbox::{SandboxedValidator, ValidationLimits};

pub use crate::events::Event;

pub mod sandbox;
pub mod serving;
pub mod validator;

/// Why a lifecycle step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The registry or store refused or failed.
    #[error(transparent)]
    Updater(#[from] airlock_updater::Error),
    /// Another step that excludes this one is running.
    #[error("{0}")]
    Busy(String),
    /// The step is refused for a reason the registry does not know (e.g. an unacknowledged
    /// contract change).
    #[error("{0}")]
    Refused(String),
    /// The version could not be loaded for serving; nothing changed.
    #[error("{0}")]
    Load(String),
    /// The request itself is unusable (e.g. a bundle path that cannot be opened).
    #[error("{0}")]
    BadInput(String),
    /// A path the daemon does not open for callers (only bundles on media it offers).
    #[error("{0}")]
    NotOffered(String),
}

/// Opens `path` for reading as a regular file: no symbolic link as the last component
/// (`O_NOFOLLOW`), never blocking on a FIFO or device (`O_NONBLOCK`), and (`on`) on the same
/// filesystem as that mount point.
fn open_regular(path: &std::path::Path, on: Option<&std::path::Path>) -> Result<std::fs::File> {
    use nix::fcntl::{open, OFlag};
    use std::os::unix::fs::MetadataExt;
    let fd = open(
        path,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        LifecycleError::BadInput(format!("cannot open {}: {}", path.display(), e.desc()))
    })?;
    let f = std::fs::File::from(fd);
    let meta = f
        .metadata()
        .map_err(|e| LifecycleError::BadInput(format!("cannot read {}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(LifecycleError::BadInput(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if let Some(mount) = on {
        let dev = std::fs::metadata(mount).map(|m| m.dev()).ok();
        if dev != Some(meta.dev()) {
            return Err(LifecycleError::BadInput(format!(
                "{} is not on the medium mounted at {}",
                path.display(),
                mount.display()
            )));
        }
    }
    Ok(f)
}

type Result<T> = std::result::Result<T, LifecycleError>;

/// How long a replaced version stays loaded at least after the swap.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

pub use airlock_updater::fault_point;

/// The lifecycle engine, shared by the admin API's handlers (which call it on blocking threads).
pub struct Lifecycle {
    /// The registry and store.
    pub updater: Arc<Updater>,
    /// The inference core and its routing table (what is served).
    pub infer: Arc<Infer>,
    runtime: &'static Runtime,
    config: Config,
    /// `[lifecycle]`, replaced live on reload (drain timeout, retention, auto-rollback).
    settings: arc_swap::ArcSwap<airlock_config::Lifecycle>,
    validator: SandboxedValidator,
    /// One import at a time (imports are disk-bound; a second one is refused, not queued).
    importing: Mutex<Option<String>>,
    /// One validation at a time (bounded share of the machine).
    validating: Mutex<()>,
    /// Promotion and rollback of one model are serialised.
    model_locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    /// Removable media with bundles, by UDisks2 object path (filled by `system::usb`).
    pub media: Arc<crate::events::Media>,
    /// Lifecycle and media events.
    pub events: crate::events::Bus,
    /// Versions waiting for or in validation in the background (`status`, `validating`).
    pub in_validation: Mutex<std::collections::BTreeSet<(String, Version)>>,
    /// Models whose retention should run, for the retention thread (off the request path);
    /// taken at shutdown, which ends the thread.
    retention: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    /// The background threads (retention, validation, drains, auto-rollback watches), joined by
    /// [`Lifecycle::shutdown`].
    threads: Mutex<Vec<(String, std::thread::JoinHandle<()>)>>,
    /// Set by `shutdown`: watches end, nothing new starts.
    stopping: std::sync::atomic::AtomicBool,
}

/// The version an import created.
#[derive(Debug, Clone)]
pub struct ImportedVersion {
    /// The model.
    pub model: String,
    /// The version.
    pub version: Version,
    /// SHA-256 of the manifest.
    pub digest: String,
    /// The import repaired the damaged store directory of this very release (no new version,
    /// no validation; an active version is loaded again).
    pub repaired: bool,
}

impl Lifecycle {
    /// A lifecycle engine over `updater`, serving through `infer`.
    pub fn new(
        updater: Arc<Updater>,
        infer: Arc<Infer>,
        runtime: &'static Runtime,
        config: Config,
    ) -> Arc<Self> {
        // Validation runs with one intra-op thread: it must not take serving's cores.
        let mut vconfig = config.clone();
        vconfig.serving.intra_op_threads = 1;
        for o in vconfig.models.values_mut() {
            o.intra_op_threads = Some(1);
        }
        // One entry per promotion and per model at start: bounded by what people do.
        let (retention, queue) = std::sync::mpsc::channel::<String>();
        let me = Arc::new(Lifecycle {
            retention: Mutex::new(Some(retention)),
            threads: Mutex::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            validator: SandboxedValidator::new(vconfig),
            settings: arc_swap::ArcSwap::from_pointee(config.lifecycle.clone()),
            updater,
            infer,
            runtime,
            config,
            importing: Mutex::new(None),
            validating: Mutex::new(()),
            model_locks: Mutex::new(BTreeMap::new()),
            in_validation: Mutex::new(std::collections::BTreeSet::new()),
            events: crate::events::bus(),
            media: Arc::new(crate::events::Media::default()),
        });
        // Retention deletes files (a large version takes a while): never inside a request.
        let weak = Arc::downgrade(&me);
        let spawned = me.spawn("retention", move || {
            while let Ok(model) = queue.recv() {
                let Some(me) = weak.upgrade() else { return };
                me.retain(&model);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the retention thread; old versions stay on disk");
        }
        me
    }

    /// Starts a background thread that [`Lifecycle::shutdown`] joins.
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        if self.stopping() {
            return Err(std::io::Error::other("the daemon is stopping"));
        }
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(f)?;
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|(_, h)| !h.is_finished());
        threads.push((name.to_string(), handle));
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// At shutdown: ends the auto-rollback watches and the retention thread (after the model it
    /// is on), and joins every background thread — drains release their versions, a retention
    /// finishes its files — waiting at most `within`. A validation still running then is left
    /// to end with the process (its worker dies with the daemon) and is said to resume at the
    /// next start, which it does: its version is still `staged`.
    pub fn shutdown(&self, within: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let until = Instant::now() + within;
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for (name, handle) in threads {
            while !handle.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!(thread = %name, "still running at shutdown; it ends with the process (an interrupted validation resumes at the next start)");
            }
        }
    }

    /// Asks the retention thread to apply `[lifecycle] retain_versions` to `model`.
    fn retain_later(&self, model: &str) {
        let sent = self
            .retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(model.to_string()).is_ok());
        if !sent {
            tracing::warn!(
                model,
                "the retention thread is not running; old versions stay on disk until the next start"
            );
        }
    }

    /// Applies a reloaded `[lifecycle]` section (takes effect for the next step).
    pub fn set_settings(&self, l: airlock_config::Lifecycle) {
        self.settings.store(Arc::new(l));
    }

    fn model_lock(&self, model: &str) -> Arc<Mutex<()>> {
        self.model_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(model.to_string())
            .or_default()
            .clone()
    }

    /// Imports a bundle stream (verify, stage, store, record), then starts its validation in
    /// the background. A second import while one runs is refused with [`LifecycleError::Busy`].
    pub fn import(
        self: &Arc<Self>,
        input: impl Read,
        source: &str,
        actor: &Actor,
    ) -> Result<ImportedVersion> {
        {
            let mut slot = self.importing.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = slot.as_ref() {
                return Err(LifecycleError::Busy(format!(
                    "another import is running (from {other}); try again when it has finished"
                )));
            }
            *slot = Some(source.to_string());
        }
        // Freed however the import ends (a panic included), so one failure cannot block imports.
        struct Slot<'a>(&'a Mutex<Option<String>>);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        let slot = Slot(&self.importing);
        fault_point("import");
        let result = self.updater.import(input, source, actor);
        drop(slot);
        let imported = result?;
        let m = &imported.verified.manifest;
        let out = ImportedVersion {
            model: m.model.name.to_string(),
            version: m.model.version.clone(),
            digest: imported.verified.digest.to_hex(),
            repaired: imported.repaired,
        };
        if out.repaired {
            self.after_repair(&out.model, &out.version);
            return Ok(out);
        }
        tracing::info!(model = %out.model, version = %out.version, by = %actor, source, "bundle imported; validating");
        let _ = self.events.send(Event::Staged {
            model: out.model.clone(),
            version: out.version.to_string(),
        });
        self.validate_in_background(
            vec![(out.model.clone(), out.version.clone())],
            &format!("validate-{}", out.model),
        )?;
        Ok(out)
    }

    /// After a repairing import: an active version is loaded from the repaired files and
    /// served (it may have been unavailable).
    fn after_repair(&self, model: &str, version: &Version) {
        let lock = self.model_lock(model);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let active = self
            .updater
            .registry()
            .model(model)
            .ok()
            .flatten()
            .and_then(|m| m.active);
        // An active version is loaded again from the repaired files (what served, if anything,
        // was loaded from the damaged ones).
        if active.as_ref() != Some(version) {
            return;
        }
        match self.load(model, version) {
            Ok(loaded) => {
                self.swap(loaded);
                tracing::info!(model, version = %version, "repaired version loaded; the model is served again");
            }
            Err(e) => {
                tracing::error!(model, version = %version, error = %e, "the repaired version still cannot be loaded")
            }
        }
    }

    /// At start-up: validations that a stop or crash interrupted run again (a version must not
    /// stay `staged` for ever), one after another on a background thread; retention runs for
    /// every model (finishing one a stop interrupted).
    pub fn resume(self: &Arc<Self>) -> Result<()> {
        let mut staged = Vec::new();
        for m in self.updater.registry().models()? {
            self.retain_later(&m.name);
            for v in m.versions.values() {
                if v.state == VersionState::Staged {
                    staged.push((m.name.clone(), v.version.clone()));
                }
            }
        }
        if staged.is_empty() {
            return Ok(());
        }
        for (model, version) in &staged {
            tracing::info!(model = %model, version = %version, "validation interrupted earlier; running it again");
        }
        self.validate_in_background(staged, "validate-resume")
    }

    /// Validates `versions` one after another on a thread of their own; each is listed in
    /// `in_validation` from now until its validation ended.
    fn validate_in_background(
        self: &Arc<Self>,
        versions: Vec<(String, Version)>,
        thread: &str,
    ) -> Result<()> {
        self.in_validation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(versions.iter().cloned());
        let me = self.clone();
        self.spawn(thread, move || {
            for (model, version) in versions {
                // At shutdown the rest wait, staged, for the next start.
                if me.stopping() {
                    break;
                }
                if let Err(e) = me.validate(&model, &version) {
                    tracing::error!(model = %model, version = %version, error = %e, "validation could not run");
                }
                me.in_validation
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(model, version));
            }
        })
        .map_err(|e| LifecycleError::Busy(format!("cannot start validation: {e}")))?;
        Ok(())
    }

    /// Imports a bundle that a removable medium airlockd mounted offers (listed by the media
    /// watch, under its mount point). Only those paths: the daemon never opens a path for a
    /// caller with its own privileges, so every other path gets the same refusal whether it
    /// exists or not. Opened without following a symbolic link and without blocking, it must
    /// be a regular file on the medium's filesystem.
    pub fn import_offered(
        self: &Arc<Self>,
        path: &std::path::Path,
        actor: &Actor,
    ) -> Result<ImportedVersion> {
        let mount = self
            .media
            .lock()
            .values()
            .find(|m| m.listing.bundles.iter().any(|b| b.path == path))
            .map(|m| m.mount.clone())
            .ok_or_else(|| {
                LifecycleError::NotOffered(
                    "that path is not a bundle on removable media airlockd offers (airlockctl bundle media lists them); stream a file of your own instead: airlockctl bundle import FILE".into(),
                )
            })?;
        let f = open_regular(path, Some(&mount))?;
        self.import(
            std::io::BufReader::with_capacity(1 << 20, f),
            &path.display().to_string(),
            actor,
        )
    }

    /// Imports from a file the caller opened and handed over (a descriptor passed over D-Bus):
    /// the caller's own permissions applied when it was opened. It must be a regular file.
    pub fn import_handed(
        self: &Arc<Self>,
        file: std::fs::File,
        source: &str,
        actor: &Actor,
    ) -> Result<ImportedVersion> {
        let meta = file.metadata().map_err(|e| {
            LifecycleError::BadInput(format!("cannot read the file handed over: {e}"))
        })?;
        if !meta.file_type().is_file() {
            return Err(LifecycleError::BadInput(
                "the file handed over is not a regular file".into(),
            ));
        }
        self.import(
            std::io::BufReader::with_capacity(1 << 20, file),
            source,
            actor,
        )
    }

    /// Validates a staged version on this machine's execution provider, comparing its contract
    /// with the active version's, and records the report.
    pub fn validate(&self, model: &str, version: &Version) -> Result<ValidationReport> {
        let _one = self.validating.lock().unwrap_or_else(|p| p.into_inner());
        lower_priority();
        fault_point("validate");
        let change = self.contract_change(model, version)?;
        let validator = ContractAware {
            inner: &self.validator,
            change,
            limits: ValidationLimits::from_config(&self.settings.load()),
        };
        let (report, state) =
            self.updater
                .validate(model, version, &validator, &Actor::system())?;
        tracing::info!(model, version = %version, passed = report.passed, provider = ?report.provider, state = %state, "validated");
        let _ = self.events.send(Event::Validated {
            model: model.to_string(),
            version: version.to_string(),
            passed: report.passed,
        });
        Ok(report)
    }

    /// How `version`'s I/O contract differs from the active version's, if it does.
    fn contract_change(&self, model: &str, version: &Version) -> Result<Option<String>> {
        let Some(rec) = self.updater.registry().model(model)? else {
            return Ok(None);
        };
        let Some(active) = rec.active.as_ref().filter(|a| *a != version) else {
            return Ok(None);
        };
        let (new, _) = self.updater.stored_manifest(model, version)?;
        // A new release must stay importable when the active version's files are damaged (it
        // may be the fix): the contract cannot be compared then, and approval must say so.
        let old = match self.updater.stored_manifest(model, active) {
            Ok((old, _)) => old,
            Err(e @ airlock_updater::Error::StoreDamaged { .. }) => {
                return Ok(Some(format!(
                    "the contract could not be compared with active {active}: {e}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let mut diffs = Vec::new();
        for (what, a, b) in [
            ("input", &old.contract.inputs, &new.contract.inputs),
            ("output", &old.contract.outputs, &new.contract.outputs),
        ] {
            for o in a.iter() {
                match b.iter().find(|n| n.name == o.name) {
                    None => diffs.push(format!("{what} '{}' removed", o.name)),
                    Some(n) if n.dtype != o.dtype || n.shape != o.shape => diffs.push(format!(
                        "{what} '{}' changed from {} {} to {} {}",
                        o.name,
                        o.dtype,
                        o.describe(),
                        n.dtype,
                        n.describe()
                    )),
                    Some(_) => {}
                }
            }
            for n in b.iter().filter(|n| !a.iter().any(|o| o.name == n.name)) {
                diffs.push(format!("{what} '{}' added", n.name));
            }
        }
        Ok((!diffs.is_empty()).then(|| {
            format!(
                "contract differs from active {active}: {}",
                diffs.join("; ")
            )
        }))
    }

    /// Records an approval. A version whose contract differs from the active one's needs
    /// `acknowledge_contract_change`.
    pub fn approve(
        &self,
        model: &str,
        version: &Version,
        actor: &Actor,
        comment: Option<&str>,
        acknowledge_contract_change: bool,
        signature: Option<airlock_signing::Signature>,
    ) -> Result<VersionState> {
        let rec = self
            .updater
            .registry()
            .model(model)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(model.into()))?;
        let v =
            rec.versions
                .get(version)
                .ok_or_else(|| airlock_updater::Error::UnknownVersion {
                    model: model.into(),
                    version: version.to_string(),
                })?;
        let change = v
            .validation
            .as_ref()
            .and_then(|r| r.contract_change.clone());
        let comment = match (&change, acknowledge_contract_change) {
            (Some(c), false) => {
                return Err(LifecycleError::Refused(format!(
                    "{model} {version}: {c}; clients may break. Approve with \"acknowledge_contract_change\": true (airlockctl: --acknowledge-contract-change) if that is intended"
                )))
            }
            (Some(_), true) => Some(format!(
                "[contract change acknowledged]{}",
                comment.map(|c| format!(" {c}")).unwrap_or_default()
            )),
            (None, _) => comment.map(str::to_string),
        };
        let signed = match signature {
            None => None,
            Some(sig) => {
                let payload = approval_payload_of(model, v)?;
                let root = self.updater.trust_root()?;
                // The new signature alone must be a valid approver signature...
                match root.count_signatures(
                    airlock_signing::Role::Approver,
                    airlock_signing::SigningContext::Approval,
                    &payload,
                    std::slice::from_ref(&sig),
                ) {
                    Ok(_) | Err(airlock_signing::Error::ThresholdNotMet { valid: 1, .. }) => {}
                    Err(e) => {
                        return Err(LifecycleError::Refused(format!(
                            "the approval signature is not accepted: {e}"
                        )))
                    }
                }
                // ...and with the earlier ones it may reach the role's threshold.
                let mut all: Vec<_> = v.approvals.iter().filter_map(|a| a.signature).collect();
                all.push(sig);
                let threshold_met = root
                    .count_signatures(
                        airlock_signing::Role::Approver,
                        airlock_signing::SigningContext::Approval,
                        &payload,
                        &all,
                    )
                    .is_ok();
                Some(airlock_updater::SignedApproval {
                    signature: sig,
                    threshold_met,
                })
            }
        };
        fault_point("approve");
        let now = self.updater.now()?;
        let state = self.updater.registry().approve(
            now,
            model,
            version,
            actor,
            comment.as_deref(),
            signed,
        )?;
        fault_point("approve:recorded");
        Ok(state)
    }

    /// Rejects a version.
    pub fn reject(
        &self,
        model: &str,
        version: &Version,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<()> {
        let now = self.updater.now()?;
        self.updater
            .registry()
            .reject(now, model, version, actor, reason)?;
        // A validation still running for it is stopped (its report says so).
        if self.validator.cancel(model, &version.to_string()) {
            tracing::info!(model, version = %version, "validation stopped: the version was rejected");
        }
        Ok(())
    }

    /// Under the signed-approval policy, a version is promoted only if its recorded approvals
    /// carry a threshold of valid approver signatures under the current trust root: whoever
    /// edits the state database cannot forge an approval.
    fn verify_signed_approvals(&self, model: &str, version: &Version) -> Result<()> {
        let rec = self
            .updater
            .registry()
            .model(model)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(model.into()))?;
        let Some(v) = rec.versions.get(version) else {
            return Err(airlock_updater::Error::UnknownVersion {
                model: model.into(),
                version: version.to_string(),
            }
            .into());
        };
        if v.state != VersionState::Approved {
            // Not approved at all: the registry's refusal says so.
            return Ok(());
        }
        let payload = approval_payload_of(model, v)?;
        let sigs: Vec<_> = v.approvals.iter().filter_map(|a| a.signature).collect();
        self.updater
            .trust_root()?
            .count_signatures(
                airlock_signing::Role::Approver,
                airlock_signing::SigningContext::Approval,
                &payload,
                &sigs,
            )
            .map_err(|e| {
                LifecycleError::Refused(format!(
                    "{model} {version}: its approvals do not carry valid approver signatures under the current trust root ({e}); not promoting"
                ))
            })?;
        Ok(())
    }

    fn load(&self, model: &str, version: &Version) -> Result<Arc<LoadedModel>> {
        let (manifest, dir) = self.updater.stored_manifest(model, version)?;
        let rec = self
            .updater
            .registry()
            .model(model)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(model.into()))?;
        let digest = rec
            .versions
            .get(version)
            .map(|v| v.manifest_digest.clone())
            .unwrap_or_default();
        let settings = self
            .config
            .serving
            .with(self.config.models.get(model).unwrap_or(&Default::default()));
        LoadedModel::load(self.runtime, &manifest, dir, digest, settings)
            .map_err(|e| LifecycleError::Load(format!("{model} {version} cannot be loaded: {e}")))
    }

    /// Promotes an approved version with zero dropped requests (see the module docs).
    pub fn promote(self: &Arc<Self>, model: &str, version: &Version, actor: &Actor) -> Result<()> {
        let lock = self.model_lock(model);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let reg = self.updater.registry();
        if reg.policy() == airlock_updater::ApprovalPolicy::Signed {
            self.verify_signed_approvals(model, version)?;
        }
        let p = reg.begin_promotion(self.updater.now()?, model, version, actor)?;
        fault_point("promote:begun");
        let loaded = match self.load(model, version) {
            Ok(l) => l,
            Err(e) => {
                reg.abort_promotion(self.updater.now()?, model, actor, &e.to_string())?;
                return Err(e);
            }
        };
        fault_point("promote:loaded");
        if let Err(e) = reg.complete_promotion(self.updater.now()?, model, actor) {
            loaded.unload();
            // Leave no intent behind: the old version keeps serving, as after a crash here.
            if let Err(a) = reg.abort_promotion(self.updater.now()?, model, actor, &e.to_string()) {
                tracing::error!(model, error = %a, "cannot abandon the failed promotion; a restart will");
            }
            return Err(e.into());
        }
        fault_point("promote:completed");
        self.swap(loaded);
        tracing::info!(model, from = ?p.from.map(|v| v.to_string()), to = %version, by = %actor, "promoted");
        let _ = self.events.send(Event::Promoted {
            model: model.to_string(),
            version: version.to_string(),
        });
        self.watch(model, version.clone());
        self.retain_later(model);
        Ok(())
    }

    /// Rolls back to `to` (default: the most recently retired version approved here).
    pub fn rollback(
        self: &Arc<Self>,
        model: &str,
        to: Option<&Version>,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Version> {
        let lock = self.model_lock(model);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let reg = self.updater.registry();
        let rec = reg
            .model(model)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(model.into()))?;
        let target = match to {
            Some(v) => v.clone(),
            None => rec.rollback_target()?,
        };
        // Refuse illegal targets before spending a load on them.
        match rec.versions.get(&target) {
            Some(v) if v.state == VersionState::Retired && v.approved_here => {}
            Some(v) => {
                return Err(airlock_updater::Error::IllegalTransition {
                    model: model.into(),
                    version: target.to_string(),
                    state: v.state,
                    action: "roll back to it (only retired versions approved on this appliance)"
                        .into(),
                }
                .into())
            }
            None => {
                return Err(airlock_updater::Error::UnknownVersion {
                    model: model.into(),
                    version: target.to_string(),
                }
                .into())
            }
        }
        let loaded = self.load(model, &target)?;
        fault_point("rollback:loaded");
        let now = self.updater.now()?;
        if let Err(e) = reg.rollback(now, model, Some(&target), actor, reason) {
            loaded.unload();
            return Err(e.into());
        }
        fault_point("rollback:recorded");
        self.swap(loaded);
        tracing::warn!(model, to = %target, by = %actor, reason = reason.unwrap_or(""), "rolled back");
        let _ = self.events.send(Event::RolledBack {
            model: model.to_string(),
            version: target.to_string(),
            reason: reason.unwrap_or("").to_string(),
        });
        Ok(target)
    }

    /// Routes requests to `loaded` atomically, then drains and releases the version it replaced.
    fn swap(&self, loaded: Arc<LoadedModel>) {
        let Some(old) = self.infer.models().swap(loaded) else {
            return;
        };
        let timeout = self.settings.load().drain_timeout.get();
        let name = format!("drain-{}", old.name);
        let drain = move || {
            // Requests that were routed to `old` before the swap finish on it. A request that
            // loaded the old table but has not registered yet does so within microseconds: the
            // grace period covers it.
            let start = Instant::now();
            std::thread::sleep(DRAIN_GRACE.min(timeout));
            while old.in_flight() > 0 && start.elapsed() < timeout {
                std::thread::sleep(Duration::from_millis(5));
            }
            if old.in_flight() > 0 {
                tracing::warn!(model = %old.name, version = %old.version, requests = old.in_flight(), "drain timeout passed; releasing the replaced version anyway");
            }
            old.unload();
        };
        if let Err(e) = self.spawn(&name, drain) {
            tracing::error!(error = %e, "cannot start the drain thread; the replaced version stays loaded");
        }
    }

    /// Watches a freshly promoted version for the auto-rollback window.
    fn watch(self: &Arc<Self>, model: &str, version: Version) {
        let l = self.settings.load_full();
        let window = l.auto_rollback_window.get();
        if window.is_zero() {
            return;
        }
        let (rate, latency, min) = (
            l.auto_rollback_error_rate,
            l.auto_rollback_latency.get(),
            l.auto_rollback_min_requests,
        );
        let Ok(served) = self.infer.models().get(model, Some(&version.to_string())) else {
            return;
        };
        let me = self.clone();
        let model = model.to_string();
        let weak = Arc::downgrade(&served);
        drop(served);
        let name = format!("watch-{model}");
        let watch = move || {
            let start = Instant::now();
            while start.elapsed() < window && !me.stopping() {
                std::thread::sleep(Duration::from_millis(250));
                if me.stopping() {
                    return;
                }
                let Some(m) = weak.upgrade() else { return };
                // Only the version that is still the active one is judged (a later promotion or
                // a manual rollback ends the watch).
                let still_active = me
                    .infer
                    .models()
                    .get(&model, None)
                    .is_ok_and(|a| Arc::ptr_eq(&a, &m));
                if !still_active {
                    return;
                }
                let s = m.stats();
                use std::sync::atomic::Ordering::Relaxed;
                let (ok, bad) = (s.success.load(Relaxed), s.failure.load(Relaxed));
                let (execs, ns) = (s.executions.load(Relaxed), s.compute_ns.load(Relaxed));
                drop(m);
                if ok + bad < min.max(1) {
                    continue;
                }
                let err_rate = bad as f64 / (ok + bad) as f64;
                let mean = Duration::from_nanos(ns / execs.max(1));
                let why = if err_rate > rate {
                    Some(format!(
                        "error rate {:.1} % over {} requests exceeds {:.1} %",
                        err_rate * 100.0,
                        ok + bad,
                        rate * 100.0
                    ))
                } else if !latency.is_zero() && mean > latency {
                    Some(format!(
                        "mean compute latency {} µs exceeds {} µs",
                        mean.as_micros(),
                        latency.as_micros()
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    let actor =
                        Actor::new("airlockd:auto-rollback").unwrap_or_else(|_| Actor::system());
                    match me.rollback(
                        &model,
                        None,
                        &actor,
                        Some(&format!("automatic: {version} {why}")),
                    ) {
                        Ok(to) => {
                            tracing::error!(model = %model, from = %version, to = %to, reason = %why, "automatic rollback")
                        }
                        Err(e) => {
                            tracing::error!(model = %model, version = %version, reason = %why, error = %e, "automatic rollback needed but refused")
                        }
                    }
                    return;
                }
            }
        };
        if let Err(e) = self.spawn(&name, watch) {
            tracing::error!(error = %e, "cannot start the auto-rollback watch");
        }
    }

    /// Removes from disk the approved versions of `model` beyond the newest
    /// `[lifecycle] retain_versions`, never the active one or the rollback target.
    fn retain(&self, model: &str) {
        // The decision and the marks are serialised with promotion and rollback of the model;
        // the deletions (long for a large version) run after the lock is released.
        let lock = self.model_lock(model);
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let keep = self.settings.load().retain_versions as usize;
        let reg = self.updater.registry();
        let Ok(Some(rec)) = reg.model(model) else {
            return;
        };
        let target = rec.rollback_target().ok();
        let mut retired: Vec<_> = rec
            .versions
            .values()
            .filter(|v| v.state == VersionState::Retired && v.approved_here)
            .collect();
        retired.sort_by(|a, b| b.version.cmp(&a.version));
        // The active version counts towards `keep`.
        let mut marked = Vec::new();
        for v in retired.into_iter().skip(keep.saturating_sub(1)) {
            if Some(&v.version) == target.as_ref() {
                continue;
            }
            match self.updater.prune(model, &v.version, &Actor::system()) {
                Ok(dir) => marked.push((v.version.clone(), dir)),
                Err(e) => {
                    tracing::warn!(model, version = %v.version, error = %e, "retention could not prune")
                }
            }
        }
        drop(guard);
        for (version, dir) in marked {
            match self.updater.remove_files(&dir) {
                Ok(()) => tracing::info!(model, version = %version, "pruned from disk (retention)"),
                Err(e) => {
                    tracing::warn!(model, version = %version, error = %e, "retention could not delete the files; the next start does")
                }
            }
        }
    }
}

/// Validation runs at nice 10 on the thread that calls this (with one intra-op thread, ONNX
/// Runtime computes on the calling thread), so serving threads win the CPU. Uses `renice` on
/// the thread's id (the workspace forbids `unsafe`, and `nix` has no `setpriority`); a failure
/// is logged and validation runs at normal priority.
fn lower_priority() {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    let Some(tid) = link
        .file_name()
        .and_then(|t| t.to_str())
        .map(str::to_string)
    else {
        return;
    };
    let ok = std::process::Command::new("renice")
        .args(["-n", "10", "-p", &tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::warn!(tid, "could not lower the validation thread's priority (renice); validating at normal priority");
    }
}

/// What approvers sign for a version: its manifest's and its validation report's SHA-256.
fn approval_payload_of(
    model: &str,
    v: &airlock_updater::registry::VersionRecord,
) -> Result<Vec<u8>> {
    let report = v.report_digest().ok_or_else(|| {
        LifecycleError::Refused(format!(
            "{model} {}: no validation report to sign yet",
            v.version
        ))
    })?;
    Ok(airlock_signing::approval_payload(
        model,
        &v.version.to_string(),
        &v.manifest_digest,
        &report,
    ))
}

/// Adds the contract comparison to the ONNX Runtime validator's report.
struct ContractAware<'a> {
    inner: &'a SandboxedValidator,
    change: Option<String>,
    limits: ValidationLimits,
}

impl airlock_updater::Validator for ContractAware<'_> {
    fn validate(&self, model: &airlock_updater::StagedModel<'_>) -> ValidationReport {
        let mut r = self.inner.run(model, self.limits);
        if let Some(c) = &self.change {
            r.notes
                .push(format!("{c} (approval must acknowledge the change)"));
            r.contract_change = Some(c.clone());
        }
        r
    }
}
