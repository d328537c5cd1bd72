//! One broadcast bus for what happens on the appliance — lifecycle steps and removable media —
//! and the list of media the daemon offers. The lifecycle and the UDisks2 watcher publish; the
//! D-Bus signals (and, later, the console's live updates) subscribe.
//!
//! Invariant: publishing never blocks a step: a subscriber that falls behind misses old events
//! (and is told how many), it never holds anything up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use airlock_updater::media::MediaListing;

/// The bus.
pub type Bus = tokio::sync::broadcast::Sender<Event>;

/// A bus that keeps the last 64 events for slow subscribers.
pub fn bus() -> Bus {
    tokio::sync::broadcast::channel(64).0
}

/// What happened, for the D-Bus signals (and anyone else who subscribes).
#[derive(Debug, Clone)]
pub enum Event {
    /// A bundle was imported: its version is staged and validation starts.
    Staged {
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// Validation ended.
    Validated {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// Its verdict.
        passed: bool,
    },
    /// A version went into service.
    Promoted {
        /// The model.
        model: String,
        /// The version now active.
        version: String,
    },
    /// A removable medium with bundles appeared.
    MediaBundles {
        /// Where it is mounted.
        mount: String,
        /// The bundle files on it.
        bundles: Vec<String>,
    },
    /// A rollback put an earlier version back.
    RolledBack {
        /// The model.
        model: String,
        /// The version now active.
        version: String,
        /// Why (empty when none was given).
        reason: String,
    },
}

/// A removable filesystem and the bundles on it.
#[derive(Debug, Clone)]
pub struct Medium {
    /// The block device (`/dev/sdb1`).
    pub device: String,
    /// Its label, if any.
    pub label: String,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// What is on it.
    pub listing: MediaListing,
}

/// Removable media with bundles, by UDisks2 object path.
#[derive(Debug, Default)]
pub struct Media(Mutex<BTreeMap<String, Medium>>);

impl Media {
    /// The list, locked.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Medium>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
