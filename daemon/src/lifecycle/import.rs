//! Import and validation: a bundle from a path, an upload, a medium or a handed descriptor is
//! verified, staged and recorded (one import at a time); validation then runs in the background
//! on this machine's execution provider, in the sandbox, one at a time.

use super::*;

impl Lifecycle {
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
    pub(super) fn after_repair(&self, model: &str, version: &Version) {
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
    pub(super) fn validate_in_background(
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
    pub(super) fn contract_change(&self, model: &str, version: &Version) -> Result<Option<String>> {
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
