//! What is being served: the loaded version(s) of each model and which one requests without a
//! version go to. The table is swapped atomically (`arc-swap`), so a promotion replaces the
//! active version in one step while requests in flight keep their `Arc` to the old one.
//!
//! Invariant: only the daemon's lifecycle puts versions in (those the registry says are
//! `active`, at start-up or on activation); the engine never serves anything it did not approve.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::LoadedModel;

/// One model's loaded versions.
#[derive(Clone)]
pub struct ModelSlot {
    /// The version requests without an explicit version go to.
    pub active: Arc<LoadedModel>,
    /// Every loaded version (explicit-version requests).
    pub versions: BTreeMap<semver::Version, Arc<LoadedModel>>,
}

/// A model whose active version could not be loaded (a damaged store file, a model ONNX
/// Runtime refuses): not served and not ready, until a rollback, a promotion or a repairing
/// import of the same bundle puts a loadable version in.
#[derive(Clone, Debug)]
pub struct Unavailable {
    /// The active version that cannot be served.
    pub version: semver::Version,
    /// Why, naming the file when one is at fault.
    pub reason: String,
}

/// The routing table.
#[derive(Default)]
pub struct Models {
    table: ArcSwap<BTreeMap<String, ModelSlot>>,
    unavailable: ArcSwap<BTreeMap<String, Unavailable>>,
}

impl Models {
    /// The current table.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, ModelSlot>> {
        self.table.load_full()
    }

    /// The models whose active version cannot be served, by name.
    pub fn unavailable(&self) -> Arc<BTreeMap<String, Unavailable>> {
        self.unavailable.load_full()
    }

    /// Records that `name`'s active version cannot be served.
    pub fn mark_unavailable(&self, name: &str, u: Unavailable) {
        self.unavailable.rcu(|t| {
            let mut t = (**t).clone();
            t.insert(name.to_string(), u.clone());
            t
        });
    }

    /// A model's version (`None`: the active one).
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, String> {
        let table = self.table.load();
        let slot = table
            .get(name)
            .ok_or_else(|| format!("unknown model '{name}'"))?;
        match version {
            None | Some("") => Ok(slot.active.clone()),
            Some(v) => {
                let parsed = semver::Version::parse(v)
                    .map_err(|_| format!("unknown version '{v}' of model '{name}'"))?;
                slot.versions
                    .get(&parsed)
                    .cloned()
                    .ok_or_else(|| format!("unknown version '{v}' of model '{name}'"))
            }
        }
    }

    /// Makes `model` the active version of its name in one atomic step and takes the version it
    /// replaces out of the table (requests already holding it finish on it); returns that one.
    pub fn swap(&self, model: Arc<LoadedModel>) -> Option<Arc<LoadedModel>> {
        let mut replaced = None;
        self.table.rcu(|t| {
            let mut t = (**t).clone();
            let slot = t.entry(model.name.clone()).or_insert_with(|| ModelSlot {
                active: model.clone(),
                versions: BTreeMap::new(),
            });
            replaced = (!Arc::ptr_eq(&slot.active, &model)).then(|| slot.active.clone());
            if let Some(old) = &replaced {
                slot.versions.remove(&old.version);
            }
            slot.active = model.clone();
            slot.versions.insert(model.version.clone(), model.clone());
            t
        });
        // A loadable version is in: the model is no longer unavailable.
        if self.unavailable.load().contains_key(&model.name) {
            self.unavailable.rcu(|t| {
                let mut t = (**t).clone();
                t.remove(&model.name);
                t
            });
        }
        replaced
    }

    /// Unloads everything (at shutdown), letting queued work finish.
    pub fn unload_all(&self) {
        let table = self.table.swap(Arc::new(BTreeMap::new()));
        for slot in table.values() {
            for v in slot.versions.values() {
                v.unload();
            }
        }
    }
}
