//! Putting what the registry says is active into the engine's routing table at start.
//!
//! Invariant: only versions the registry says are `active` are loaded; one that cannot be
//! loaded does not stop the others.

use airlock_config::Config;
use airlock_engine::{EngineError, LoadedModel, Models, Runtime, Unavailable};
use airlock_updater::Updater;

/// Loads and activates every version the registry says is active. One that cannot be loaded
/// (a store file missing or damaged, a model the runtime refuses) is marked unavailable,
/// logged naming the file, and returned, so that the caller can audit it; the others are served.
pub fn load_active(
    models: &Models,
    runtime: &'static Runtime,
    updater: &Updater,
    config: &Config,
) -> Result<(usize, Vec<(String, Unavailable)>), EngineError> {
    let mut n = 0;
    let mut failed = Vec::new();
    let records = updater
        .registry()
        .models()
        .map_err(|e| EngineError::Session(e.to_string()))?;
    for m in records {
        let Some(active) = &m.active else { continue };
        let loaded = updater
            .stored_manifest(&m.name, active)
            .map_err(|e| e.to_string())
            .and_then(|(manifest, dir)| {
                let digest = m.versions[active].manifest_digest.clone();
                let settings = config
                    .serving
                    .with(config.models.get(&m.name).unwrap_or(&Default::default()));
                LoadedModel::load(runtime, &manifest, dir, digest, settings)
                    .map_err(|e| format!("{} {active} cannot be loaded: {e}", m.name))
            });
        match loaded {
            Ok(l) => {
                models.swap(l);
                n += 1;
            }
            Err(reason) => {
                tracing::error!(model = %m.name, version = %active, reason = %reason, "model unavailable: its active version cannot be served (every other model is)");
                let u = Unavailable {
                    version: active.clone(),
                    reason,
                };
                models.mark_unavailable(&m.name, u.clone());
                failed.push((m.name.clone(), u));
            }
        }
    }
    Ok((n, failed))
}
