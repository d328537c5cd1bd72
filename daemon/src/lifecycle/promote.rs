//! Promotion, rollback and what follows a swap: the new version is loaded and warmed before the
//! registry records the step, the routing table swapped, the old version drained; the
//! auto-rollback watch and retention run on background threads.

use super::*;

impl Lifecycle {
    pub(super) fn load(&self, model: &str, version: &Version) -> Result<Arc<LoadedModel>> {
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
    pub(super) fn swap(&self, loaded: Arc<LoadedModel>) {
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
    pub(super) fn watch(self: &Arc<Self>, model: &str, version: Version) {
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
    pub(super) fn retain(&self, model: &str) {
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

    /// Asks the retention thread to apply `[lifecycle] retain_versions` to `model`.
    pub(super) fn retain_later(&self, model: &str) {
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
}
