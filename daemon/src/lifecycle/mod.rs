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
//!
//! One file per step, each an `impl Lifecycle` over this struct's private fields: `import`
//! (import from every source, background validation), `approve` (approval, rejection, signed
//! approvals), `promote` (promotion, rollback, swap and drain, the auto-rollback watch,
//! retention); `sandbox` and `validator` run validation in a child process; `serving` loads what
//! the registry says is active at start.

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

mod approve;
mod import;
mod promote;
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

type Result<T> = std::result::Result<T, LifecycleError>;

/// How long a replaced version stays loaded at least after the swap.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

pub use airlock_updater::fault_point;

/// The lifecycle engine, shared by the admin API's handlers (which call it on blocking threads).
pub struct Lifecycle {
    /// The registry and store.
    updater: Arc<Updater>,
    /// The inference core and its routing table (what is served).
    infer: Arc<Infer>,
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
    media: Arc<crate::events::Media>,
    /// Lifecycle and media events.
    events: crate::events::Bus,
    /// Versions waiting for or in validation in the background (`status`, `validating`).
    in_validation: Mutex<std::collections::BTreeSet<(String, Version)>>,
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
    /// The registry and store.
    pub fn updater(&self) -> &Arc<Updater> {
        &self.updater
    }

    /// The inference core and its routing table (what is served).
    pub fn infer(&self) -> &Arc<Infer> {
        &self.infer
    }

    /// Removable media with bundles, by UDisks2 object path (kept by `system::usb`).
    pub fn media(&self) -> &crate::events::Media {
        &self.media
    }

    /// Lifecycle and media events.
    pub fn events(&self) -> &crate::events::Bus {
        &self.events
    }

    /// The versions waiting for or in validation in the background, in order.
    pub fn in_validation(&self) -> Vec<(String, Version)> {
        self.in_validation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Whether `model` `version` waits for or is in validation in the background.
    pub fn is_validating(&self, model: &str, version: &Version) -> bool {
        self.in_validation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(model.to_string(), version.clone()))
    }

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
}
