//! `airlock-updater`: what happens to a bundle on the appliance — importing a verified stream
//! into staging and the content-addressed store, the lifecycle registry in sled (states,
//! approvals, anti-rollback floor, time floor, audit chain), and finding bundles on media.
//!
//! API boundary: no ONNX Runtime and no HTTP here; validation is the [`validate::Validator`]
//! trait that the daemon implements. Invariant: an import either ends with a complete store
//! directory and a `staged` registry record, or leaves nothing but an audit record.
#![deny(missing_docs)]

pub mod audit;
pub mod error;
pub mod media;
pub mod registry;
pub mod store;
pub mod tokens;
pub mod validate;

use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_config::Config;
use airlock_signing::{
    ExpiryCheck, Limits, ReadError, SignaturePolicy, TrustRoot, VerifiedManifest,
};
use semver::Version;
use time::OffsetDateTime;

pub use audit::AuditEntry;
pub use error::{Error, Result};
pub use registry::{Actor, ApprovalPolicy, Registry, SignedApproval, VersionState};
pub use store::Layout;
pub use validate::{StagedModel, ValidationReport, Validator};

use store::StagingSink;

/// A fault-injection point for crash tests (the daemon's `AIRLOCK_FAULT_PAUSE=NAME[:MS]`):
/// debug builds log that they reached `NAME` and sleep there (default 5000 ms), so a test can
/// kill the process inside a step. Release builds ignore the variable.
pub fn fault_point(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Ok(spec) = std::env::var("AIRLOCK_FAULT_PAUSE") else {
        return;
    };
    // Point names contain ':' themselves; a numeric last part is the pause.
    let (point, ms) = match spec.rsplit_once(':') {
        Some((p, ms)) if ms.parse::<u64>().is_ok() => (p, ms.parse().unwrap_or(5000)),
        _ => (spec.as_str(), 5000),
    };
    if point == name {
        tracing::warn!(point = name, "fault point reached");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// A failure-injection point for fault tests (`AIRLOCK_FAULT_FAIL=NAME`): debug builds report
/// that the step `NAME` failed (after doing it). Release builds ignore the variable.
pub fn fault_fails(name: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("AIRLOCK_FAULT_FAIL").is_ok_and(|v| v == name)
}

/// An expiry check that ignores expiry: a step of the chain of installed roots was current when
/// it was accepted, and is checked again only for its signatures and rules.
fn past() -> ExpiryCheck {
    ExpiryCheck {
        now: OffsetDateTime::now_utc(),
        enforcement: airlock_config::ExpiryEnforcement::Warn,
        grace: std::time::Duration::ZERO,
        latest_issue: None,
    }
}

/// The root in force of `chain` (oldest first): anchored at the image's initial root `image`
/// (byte for byte one of the chain), each later root an accepted rotation of the one before.
fn verify_chain(chain: &[Vec<u8>], image: &[u8], initial: &Path) -> Result<TrustRoot> {
    let start = chain.iter().position(|c| c == image).ok_or_else(|| {
        Error::TrustChain(format!(
            "none of the trust roots recorded in the state database is the image's initial root {}",
            initial.display()
        ))
    })?;
    let mut current = TrustRoot::from_json(&chain[start])?;
    for next in &chain[start + 1..] {
        current = current.accept_rotation(next, &past()).map_err(|e| {
            Error::TrustChain(format!(
                "a trust root recorded in the state database is not a rotation of the one before it ({e})"
            ))
        })?;
    }
    Ok(current)
}

/// Writes the trust root file atomically (and durably).
fn write_root(dest: &Path, bytes: &[u8], root: &Path) -> Result<()> {
    airlock_signing::writer::write_atomically(dest, |w| {
        std::io::Write::write_all(w, bytes)?;
        Ok(())
    })?;
    store::fsync_dir(dest.parent().unwrap_or(root))
}

/// A completed import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The verified manifest.
    pub verified: VerifiedManifest,
    /// Its store directory.
    pub dir: PathBuf,
    /// The version was on the appliance already with a damaged store directory, and this
    /// import of the same signed bundle (same manifest digest) replaced its files; its
    /// registry record is unchanged.
    pub repaired: bool,
}

/// The appliance side of bundles, over one data directory.
pub struct Updater {
    layout: Layout,
    registry: Registry,
    /// The image's initial trust root (read-only, outside the data directory): the anchor the
    /// chain of installed roots is verified from (`[paths] initial_trust_root`, or the file
    /// [`Updater::install_initial_trust_root`] was last given).
    initial_root: std::sync::Mutex<PathBuf>,
    limits: Limits,
    time: airlock_config::TimeConfig,
    reserve: u64,
    /// Refused imports recorded per actor in the current hour (the audit chain is permanent:
    /// its growth from refusals is bounded).
    refusals: std::sync::Mutex<std::collections::HashMap<String, RefusalWindow>>,
    /// Held across a rotation's read of the chain, its check and its record: two rotations at
    /// once would each extend the chain as it was, and the second would drop the first's root.
    rotating: std::sync::Mutex<()>,
}

/// Refused imports of one actor within an hour.
struct RefusalWindow {
    since: std::time::Instant,
    recorded: u32,
    held: u64,
}

/// Refused imports recorded per actor and hour; more are counted and summed up in one record.
pub const REFUSALS_RECORDED_PER_HOUR: u32 = 10;

impl Updater {
    /// Opens the data directory: creates the layout, opens the registry, removes what an
    /// interrupted import left, and abandons promotions a crash interrupted.
    pub fn open(config: &Config) -> Result<Self> {
        let layout = Layout::new(&config.paths.data_dir);
        layout.create()?;
        let registry = Registry::open(
            &layout.state(),
            ApprovalPolicy::from(&config.approval),
            config.state.reserve_free_space.0,
        )?;
        let now = registry.trusted_now(OffsetDateTime::now_utc())?;
        for (p, why) in layout.clean_leftovers(&registry)? {
            tracing::warn!(path = %p.display(), "{why}");
        }
        for m in registry.recover_interrupted(now)? {
            tracing::warn!(model = %m, "abandoned a promotion interrupted by a restart; the previous version stays active");
        }
        Ok(Updater {
            layout,
            registry,
            initial_root: std::sync::Mutex::new(config.paths.initial_trust_root.clone()),
            limits: Limits::from(&config.bundles),
            time: config.time.clone(),
            // An import leaves the state database its reserve too.
            reserve: config
                .bundles
                .reserve_free_space
                .0
                .max(config.state.reserve_free_space.0),
            refusals: std::sync::Mutex::new(std::collections::HashMap::new()),
            rotating: std::sync::Mutex::new(()),
        })
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The data layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The limits bundles are read under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Trusted now: the later of the system clock and the persisted floor.
    pub fn now(&self) -> Result<OffsetDateTime> {
        self.registry.trusted_now(OffsetDateTime::now_utc())
    }

    /// The expiry check imports run under.
    pub fn expiry_check(&self) -> Result<ExpiryCheck> {
        // One reading of the clock and of the floor: the trusted now is the later of the two,
        // and how far it is ahead of the clock is how far the clock is behind the floor.
        let system = OffsetDateTime::now_utc();
        let now = self.registry.trusted_now(system)?;
        let skew =
            time::Duration::try_from(self.time.max_clock_skew.get()).unwrap_or(time::Duration::DAY);
        let behind = now - system;
        if behind.whole_seconds() > skew.whole_seconds() {
            tracing::warn!(
                behind_s = behind.whole_seconds(),
                floor = %airlock_signing::clock::rfc3339(now),
                "this appliance's clock is behind its time floor by more than [time] max_clock_skew: expiry is judged at the floor; if the clock is right, an admin resets the floor (airlockctl time reset-floor)"
            );
        }
        Ok(ExpiryCheck {
            now,
            enforcement: self.time.enforcement,
            grace: self.time.grace.get(),
            latest_issue: system.checked_add(skew),
        })
    }

    /// How far the system clock is behind the time floor, when that is more than the allowed
    /// skew (a clock that ran ahead once and was corrected, or one set back).
    pub fn clock_behind(&self) -> Result<Option<time::Duration>> {
        let floor = self.registry.time_floor()?;
        let system = OffsetDateTime::now_utc().unix_timestamp();
        let skew = i64::try_from(self.time.max_clock_skew.get().as_secs()).unwrap_or(86400);
        Ok((floor - system > skew).then(|| time::Duration::seconds(floor - system)))
    }

    /// An admin's acknowledgement that the system clock is right: the time floor comes back to
    /// it (audited with both times). Expiry is then judged at the clock again.
    pub fn reset_time_floor(&self, actor: &Actor) -> Result<(i64, i64)> {
        self.registry
            .reset_time_floor(OffsetDateTime::now_utc(), actor)
    }

    /// At every start: makes `trust/root.json` the trust root in force, which the registry
    /// keeps as the chain of roots installed here (the image's initial root, then each
    /// rotation), verified from the image's initial root `initial` (read-only, outside the data
    /// directory) at every use, so that whoever can write the state database cannot plant a
    /// root. On a first start `initial` is installed and recorded. An image that ships the
    /// next rotation of the root in force as its initial root extends the chain. A
    /// `trust/root.json` that is missing or differs from the root in force (an older version,
    /// edited, replaced) is restored — never silently replaced by `initial` — with the found
    /// file kept beside it and an audit record (`trust_root_restored`). An appliance from
    /// before the registry kept the chain records the file it has, if it is `initial` or its
    /// next rotation (`trust_root_recorded`). Returns a warning when something was restored.
    pub fn install_initial_trust_root(&self, initial: &Path) -> Result<Option<String>> {
        let dest = self.layout.trust_root();
        let found = match std::fs::read(&dest) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Io {
                    what: format!("cannot read the trust root {}", dest.display()),
                    source: e,
                })
            }
        };
        let image = std::fs::read(initial).map_err(Error::io(format!(
            "cannot read the initial trust root {}",
            initial.display()
        )))?;
        let image_root = TrustRoot::from_json(&image)?;
        *self.initial_root.lock().unwrap_or_else(|p| p.into_inner()) = initial.to_path_buf();
        let sha = |b: &[u8]| airlock_signing::Sha256Digest::of(b).to_hex();
        let entry = |action: &str, detail: serde_json::Value| AuditEntry {
            actor: Actor::system().to_string(),
            action: action.into(),
            model: None,
            version: None,
            detail,
        };
        let mut chain = self.registry.trust_roots()?;
        // A first start with nothing on disk: installing is not restoring.
        let first_install = chain.is_empty() && found.is_none();
        // A chain this start extends is recorded (with its audit record) once it verifies.
        let mut extended = None;
        if chain.is_empty() {
            chain = match &found {
                // First start: the image's root.
                None => vec![image.clone()],
                Some(file) if *file == image => vec![image.clone()],
                // An appliance from before the registry kept the chain, rotated once.
                Some(file) => match image_root.accept_rotation(file, &past()) {
                    Ok(_) => vec![image.clone(), file.clone()],
                    Err(e) => {
                        return Err(Error::TrustChain(format!(
                            "{} does not follow from the initial trust root {} by one rotation ({e}), and the registry holds no chain of installed roots to check it against",
                            dest.display(),
                            initial.display()
                        )))
                    }
                },
            };
            let action = if found.is_some() {
                "trust_root_recorded"
            } else {
                "trust_root_installed"
            };
            extended = Some((
                action,
                serde_json::json!({ "from": initial.display().to_string() }),
            ));
        } else if !chain.contains(&image) {
            // An image that brings the next rotation of the root in force as its initial root
            // (the image is the anchor: it becomes the root in force).
            let last = TrustRoot::from_json(&chain[chain.len() - 1])?;
            last.accept_rotation(&image, &past()).map_err(|e| {
                Error::TrustChain(format!(
                    "the image's initial trust root {} (version {}) is neither one of the roots installed here nor the next rotation of the one in force, version {} ({e})",
                    initial.display(),
                    image_root.version(),
                    last.version()
                ))
            })?;
            chain.push(image.clone());
            extended = Some((
                "trust_root_rotated",
                serde_json::json!({ "from": last.version(), "to": image_root.version(), "from_image": initial.display().to_string() }),
            ));
        }
        let current = verify_chain(&chain, &image, initial)?;
        if let Some((action, mut detail)) = extended {
            if detail.get("to").is_none() {
                detail["version"] = serde_json::json!(current.version());
            }
            detail["sha256"] = serde_json::json!(sha(&chain[chain.len() - 1]));
            // Recorded first: a crash before the file is written restores it at the next start.
            self.registry
                .record_trust_roots(self.now()?, &chain, &[entry(action, detail)])?;
        }
        let copy = chain[chain.len() - 1].clone();
        if found.as_ref() == Some(&copy) {
            return Ok(None);
        }
        let describe = |b: &[u8]| -> String {
            match TrustRoot::from_json(b) {
                Ok(r) => format!("version {} (sha256 {})", r.version(), &sha(b)[..16]),
                Err(_) => format!(
                    "a file that is not a valid trust root (sha256 {})",
                    &sha(b)[..16]
                ),
            }
        };
        let aside = dest.with_file_name(format!(
            "root.json.found-{}",
            OffsetDateTime::now_utc().unix_timestamp()
        ));
        let reason = match &found {
            None => format!("{} was missing", dest.display()),
            Some(file) => format!(
                "{} held {} instead of the installed version {}",
                dest.display(),
                describe(file),
                current.version()
            ),
        };
        let kept = found.as_ref().map(|_| aside.display().to_string());
        if first_install {
            write_root(&dest, &copy, self.layout.root())?;
            return Ok(None);
        }
        // Audited first (restoring is idempotent: a crash before the file is written restores
        // it again at the next start).
        self.registry.audit_only(
            self.now()?,
            &[entry(
                "trust_root_restored",
                serde_json::json!({
                    "version": current.version(),
                    "sha256": sha(&copy),
                    "reason": reason,
                    "found_kept_as": kept,
                }),
            )],
        )?;
        if found.is_some() {
            std::fs::rename(&dest, &aside)
                .map_err(Error::io(format!("cannot move {} aside", dest.display())))?;
        }
        write_root(&dest, &copy, self.layout.root())?;
        Ok(Some(format!(
            "trust root restored from the registry's copy (version {}): {reason}{}",
            current.version(),
            kept.as_ref()
                .map(|k| format!("; the file found is kept as {k}"))
                .unwrap_or_default()
        )))
    }

    /// Replaces the trust root with a rotated one if the current root's rules accept it
    /// (signed by a threshold of both the current and the new root keys, version increasing,
    /// not expired); the refusal names the rule otherwise. The registry records the new root
    /// (with the audit record) before the file is written, so that a crash in between restores
    /// the new one at start, never the old. Returns the new root.
    pub fn rotate_trust_root(&self, candidate: &[u8], actor: &Actor) -> Result<TrustRoot> {
        let _rotating = self
            .rotating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.trust_root()?;
        let accepted = current
            .accept_rotation(candidate, &self.expiry_check()?)
            .map_err(Error::TrustRootRefused)?;
        let mut chain = self.registry.trust_roots()?;
        if chain.is_empty() {
            // No chain recorded yet: the root in force is the file, and the chain starts with
            // its bytes (the anchor is compared byte for byte with the image's initial root).
            chain.push(
                std::fs::read(self.layout.trust_root()).map_err(Error::io(format!(
                    "cannot read the trust root {}",
                    self.layout.trust_root().display()
                )))?,
            );
        }
        chain.push(candidate.to_vec());
        self.registry.record_trust_roots(
            self.now()?,
            &chain,
            &[AuditEntry {
                actor: actor.to_string(),
                action: "trust_root_rotated".into(),
                model: None,
                version: None,
                detail: serde_json::json!({ "from": current.version(), "to": accepted.version(), "sha256": airlock_signing::Sha256Digest::of(candidate).to_hex() }),
            }],
        )?;
        // In force from the record on; the file mirrors it and is restored at the next start
        // if this write fails.
        if let Err(e) = write_root(&self.layout.trust_root(), candidate, self.layout.root()) {
            tracing::warn!(error = %e, "the rotated trust root is recorded and in force, but trust/root.json could not be written; the next start writes it");
        }
        Ok(accepted)
    }

    /// The trust root in force: the last of the chain the registry keeps, verified from the
    /// image's initial root (the file on disk before the first start recorded a chain).
    pub fn trust_root(&self) -> Result<TrustRoot> {
        let chain = self.registry.trust_roots()?;
        if chain.is_empty() {
            return Ok(TrustRoot::read(&self.layout.trust_root())?);
        }
        let initial = self
            .initial_root
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let image = std::fs::read(&initial).map_err(Error::io(format!(
            "cannot read the initial trust root {}",
            initial.display()
        )))?;
        verify_chain(&chain, &image, &initial)
    }

    /// Imports a bundle stream: verify, stage, store, record. On any refusal nothing stays
    /// behind but an `import_refused` audit record naming the error kind — at most
    /// [`REFUSALS_RECORDED_PER_HOUR`] per actor and hour; the rest are counted and summed up in
    /// one `import_refused_unrecorded` record when the next hour's first refusal comes.
    pub fn import(&self, input: impl Read, source: &str, actor: &Actor) -> Result<Imported> {
        let mut seen = None;
        let result = self.import_inner(input, source, actor, &mut seen);
        if let Err(e) = &result {
            let now = self.now().unwrap_or_else(|_| OffsetDateTime::now_utc());
            let (model, version) = seen.unzip();
            let mut entries = Vec::new();
            {
                let mut all = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
                let w = all.entry(actor.to_string()).or_insert(RefusalWindow {
                    since: std::time::Instant::now(),
                    recorded: 0,
                    held: 0,
                });
                if w.since.elapsed() > std::time::Duration::from_secs(3600) {
                    if w.held > 0 {
                        entries.push(AuditEntry {
                            actor: actor.to_string(),
                            action: "import_refused_unrecorded".into(),
                            model: None,
                            version: None,
                            detail: serde_json::json!({ "count": w.held, "within_s": w.since.elapsed().as_secs() }),
                        });
                    }
                    *w = RefusalWindow {
                        since: std::time::Instant::now(),
                        recorded: 0,
                        held: 0,
                    };
                }
                if w.recorded < REFUSALS_RECORDED_PER_HOUR {
                    w.recorded += 1;
                    entries.push(AuditEntry {
                        actor: actor.to_string(),
                        action: "import_refused".into(),
                        model,
                        version,
                        detail: serde_json::json!({ "error": e.kind(), "message": e.to_string(), "source": source }),
                    });
                } else {
                    w.held += 1;
                    tracing::info!(actor = %actor, error = e.kind(), "import refused (not recorded in the audit log: more than {REFUSALS_RECORDED_PER_HOUR} this hour; counted)");
                }
            }
            if !entries.is_empty() {
                // The refusal is the answer; a full disk must not replace it with its own.
                if let Err(a) = self.registry.audit_only(now, &entries) {
                    tracing::warn!(error = %a, refused = e.kind(), "the refused import could not be recorded in the audit log");
                }
            }
        }
        result
    }

    fn import_inner(
        &self,
        input: impl Read,
        source: &str,
        actor: &Actor,
        seen: &mut Option<(String, String)>,
    ) -> Result<Imported> {
        let root = self.trust_root()?;
        let policy = SignaturePolicy::TrustRoot {
            root: &root,
            expiry: self.expiry_check()?,
        };
        let mut sink = StagingSink::new(&self.layout, &self.registry, self.reserve);
        let read = airlock_signing::read_bundle(input, &policy, &self.limits, &mut sink);
        *seen = sink.seen.clone();
        let verified = match read {
            Ok(v) => v,
            Err(ReadError::Bundle(e)) => return Err(e.into()),
            Err(ReadError::Sink(e)) => return Err(e),
        };
        let repair = sink.repair.clone();
        let dir = sink.commit(&verified)?;
        if let Some(damage) = repair {
            let m = &verified.manifest;
            // The files are repaired whatever happens to the record of it.
            let recorded = self.registry.audit_only(
                self.now()?,
                &[AuditEntry {
                    actor: actor.to_string(),
                    action: "store_repaired".into(),
                    model: Some(m.model.name.to_string()),
                    version: Some(m.model.version.to_string()),
                    detail: serde_json::json!({ "damage": damage, "manifest_sha256": verified.digest.to_hex(), "source": source }),
                }],
            );
            if let Err(e) = recorded {
                tracing::error!(error = %e, "the repair could not be recorded in the audit log");
            }
            tracing::warn!(model = %m.model.name, version = %m.model.version, damage = %damage, "store directory repaired from the same signed bundle");
            return Ok(Imported {
                verified,
                dir,
                repaired: true,
            });
        }
        if let Err(e) = self
            .registry
            .record_import(self.now()?, &verified, source, actor)
        {
            // A write whose confirmation failed, and which `Registry::write` could not check
            // against a reload at once, may have landed after all: the registry, once it can
            // answer, says. Only a version it answers is not there loses its store directory; while it
            // cannot answer, the directory stays (a start removes it if unreferenced).
            let m = &verified.manifest;
            let landed = if matches!(e, Error::NotRecorded(_)) {
                self.registry.model(m.model.name.as_str()).map(|r| {
                    r.and_then(|r| r.versions.get(&m.model.version).cloned())
                        .is_some_and(|v| v.manifest_digest == verified.digest.to_hex())
                })
            } else {
                Ok(false)
            };
            match landed {
                Ok(true) => {}
                Ok(false) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                Err(unknown) => {
                    tracing::warn!(model = %m.model.name, version = %m.model.version, error = %unknown, "the import's record was not confirmed and the state cannot say whether it landed: its files stay until the next start decides");
                    return Err(e);
                }
            }
            tracing::warn!(model = %m.model.name, version = %m.model.version, error = %e, "the import's record was not confirmed, yet it is on disk: imported");
        }
        for w in &verified.warnings {
            tracing::warn!(model = %verified.manifest.model.name, warning = %w, "bundle accepted with an expiry warning");
        }
        Ok(Imported {
            verified,
            dir,
            repaired: false,
        })
    }

    /// Imports a bundle file (opened read-only).
    pub fn import_file(&self, path: &Path, actor: &Actor) -> Result<Imported> {
        let f = std::fs::File::open(path)
            .map_err(Error::io(format!("cannot open {}", path.display())))?;
        self.import(
            std::io::BufReader::with_capacity(1 << 20, f),
            &path.display().to_string(),
            actor,
        )
    }

    /// The stored manifest of a version, after checking the version's store directory:
    /// `manifest.json` present and matching the digest the registry recorded, every payload
    /// file present, a regular file, and of the size the manifest gives. A damaged directory is
    /// [`Error::StoreDamaged`], naming the file (contents are hashed on import and on repair,
    /// not at every load: a multi-gigabyte model would delay every start).
    pub fn stored_manifest(
        &self,
        model: &str,
        version: &Version,
    ) -> Result<(airlock_signing::Manifest, PathBuf)> {
        let rec = self
            .registry
            .model(model)?
            .ok_or_else(|| Error::UnknownModel(model.into()))?;
        let v = rec.versions.get(version).ok_or(Error::UnknownVersion {
            model: model.into(),
            version: version.to_string(),
        })?;
        let dir = self.layout.stored(&v.manifest_digest);
        let manifest = store::check_stored(&dir, &v.manifest_digest, model, version)?;
        Ok((manifest, dir))
    }

    /// Retention, first step: marks a retired version `removed` (the registry refuses the
    /// rollback target and anything not retired). Returns its store directory, which
    /// [`Updater::remove_files`] deletes; a crash between the two (or inside the deletion) is
    /// finished at the next start, which deletes the directories of removed versions
    /// ([`Layout::clean_leftovers`]).
    pub fn prune(&self, model: &str, version: &Version, actor: &Actor) -> Result<PathBuf> {
        let digest = self
            .registry
            .mark_removed(self.now()?, model, version, actor)?;
        Ok(self.layout.stored(&digest))
    }

    /// Retention, second step: deletes the store directory of a version [`Updater::prune`]
    /// marked removed (one already gone is fine).
    pub fn remove_files(&self, dir: &Path) -> Result<()> {
        fault_point("prune:marked");
        store::remove_stored(dir)?;
        store::fsync_dir(dir.parent().unwrap_or(self.layout.root()))
    }

    /// Validates a staged version with `validator` and records the result.
    pub fn validate(
        &self,
        model: &str,
        version: &Version,
        validator: &dyn Validator,
        actor: &Actor,
    ) -> Result<(ValidationReport, VersionState)> {
        let (manifest, dir) = self.stored_manifest(model, version)?;
        let report = validator.validate(&StagedModel {
            manifest: &manifest,
            dir: &dir,
        });
        let state = self
            .registry
            .record_validation(self.now()?, model, version, &report, actor)?;
        Ok((report, state))
    }
}
