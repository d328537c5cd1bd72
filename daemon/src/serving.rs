//! What is being served: the loaded version(s) of each model and which one requests without a
//! version go to. The table is swapped atomically (`arc-swap`), so a promotion replaces the
//! active version in one step while requests in flight keep their `Arc` to the old one.
//!
//! Invariant: only versions the registry says are `active` are loaded here at start-up or on
//! activation; the engine never serves anything the lifecycle did not approve.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_config::Config;
use airlock_updater::Updater;
use arc_swap::ArcSwap;

use crate::engine::model::LoadedModel;
use crate::engine::{EngineError, Runtime};

/// One model's loaded versions.
#[derive(Clone)]
pub struct ModelSlot {
    /// The version requests without an explicit version go to.
    pub active: Arc<LoadedModel>,
    /// Every loaded version (explicit-version requests).
    pub versions: BTreeMap<semver::Version, Arc<LoadedModel>>,
}

/// The routing table.
#[derive(Default)]
pub struct Models {
    table: ArcSwap<BTreeMap<String, ModelSlot>>,
}

impl Models {
    /// The current table.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, ModelSlot>> {
        self.table.load_full()
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
        replaced
    }

    /// Loads and activates every version the registry says is active.
    pub fn load_active(
        &self,
        runtime: &'static Runtime,
        updater: &Updater,
        config: &Config,
    ) -> Result<usize, EngineError> {
        let mut n = 0;
        let models = updater
            .registry()
            .models()
            .map_err(|e| EngineError::Session(e.to_string()))?;
        for m in models {
            let Some(active) = &m.active else { continue };
            let (manifest, dir) = updater
                .stored_manifest(&m.name, active)
                .map_err(|e| EngineError::Session(e.to_string()))?;
            let digest = m.versions[active].manifest_digest.clone();
            let settings = config
                .serving
                .with(config.models.get(&m.name).unwrap_or(&Default::default()));
            let loaded = LoadedModel::load(runtime, &manifest, dir, digest, settings)?;
            self.swap(loaded);
            n += 1;
        }
        Ok(n)
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
