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

/// A completed import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The verified manifest.
    pub verified: VerifiedManifest,
    /// Its store directory.
    pub dir: PathBuf,
}

/// The appliance side of bundles, over one data directory.
pub struct Updater {
    layout: Layout,
    registry: Registry,
    limits: Limits,
    time: airlock_config::TimeConfig,
    reserve: u64,
    /// Refused imports recorded per actor in the current hour (the audit chain is permanent:
    /// its growth from refusals is bounded).
    refusals: std::sync::Mutex<std::collections::HashMap<String, RefusalWindow>>,
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
        let registry = Registry::open(&layout.state(), ApprovalPolicy::from(&config.approval))?;
        let now = registry.trusted_now(OffsetDateTime::now_utc())?;
        for p in layout.clean_leftovers(&registry)? {
            tracing::warn!(path = %p.display(), "removed an incomplete import left by an interruption");
        }
        for m in registry.recover_interrupted(now)? {
            tracing::warn!(model = %m, "abandoned a promotion interrupted by a restart; the previous version stays active");
        }
        Ok(Updater {
            layout,
            registry,
            limits: Limits::from(&config.bundles),
            time: config.time.clone(),
            reserve: config.bundles.reserve_free_space.0,
            refusals: std::sync::Mutex::new(std::collections::HashMap::new()),
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
        let now = self.now()?;
        let system = OffsetDateTime::now_utc();
        let skew =
            time::Duration::try_from(self.time.max_clock_skew.get()).unwrap_or(time::Duration::DAY);
        if let Some(behind) = self.clock_behind()? {
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

    /// Installs `initial` as the current trust root if there is none yet (first start).
    pub fn install_initial_trust_root(&self, initial: &Path) -> Result<()> {
        let dest = self.layout.trust_root();
        if dest.exists() {
            return Ok(());
        }
        let bytes = std::fs::read(initial).map_err(Error::io(format!(
            "cannot read the initial trust root {}",
            initial.display()
        )))?;
        TrustRoot::from_json(&bytes)?;
        airlock_signing::writer::write_atomically(&dest, |w| {
            std::io::Write::write_all(w, &bytes)?;
            Ok(())
        })?;
        store::fsync_dir(dest.parent().unwrap_or(self.layout.root()))
    }

    /// Replaces the trust root with a rotated one if the current root's rules accept it
    /// (signed by a threshold of both the current and the new root keys, version increasing,
    /// not expired); the refusal names the rule otherwise. Returns the new root.
    pub fn rotate_trust_root(&self, candidate: &[u8], actor: &Actor) -> Result<TrustRoot> {
        let current = self.trust_root()?;
        let accepted = current
            .accept_rotation(candidate, &self.expiry_check()?)
            .map_err(Error::TrustRootRefused)?;
        let dest = self.layout.trust_root();
        airlock_signing::writer::write_atomically(&dest, |w| {
            std::io::Write::write_all(w, candidate)?;
            Ok(())
        })?;
        store::fsync_dir(dest.parent().unwrap_or(self.layout.root()))?;
        self.registry.audit_only(
            self.now()?,
            &[AuditEntry {
                actor: actor.to_string(),
                action: "trust_root_rotated".into(),
                model: None,
                version: None,
                detail: serde_json::json!({ "from": current.version(), "to": accepted.version() }),
            }],
        )?;
        Ok(accepted)
    }

    /// The current trust root.
    pub fn trust_root(&self) -> Result<TrustRoot> {
        Ok(TrustRoot::read(&self.layout.trust_root())?)
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
                self.registry.audit_only(now, &entries)?;
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
        let dir = sink.commit(&verified)?;
        if let Err(e) = self
            .registry
            .record_import(self.now()?, &verified, source, actor)
        {
            // The store directory is ours (just renamed); without a record it must not stay.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        for w in &verified.warnings {
            tracing::warn!(model = %verified.manifest.model.name, warning = %w, "bundle accepted with an expiry warning");
        }
        Ok(Imported { verified, dir })
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

    /// The stored manifest of a version.
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
        let bytes = std::fs::read(dir.join("manifest.json")).map_err(Error::io(format!(
            "cannot read the stored manifest of {model} {version}"
        )))?;
        // The store is written only after verification; re-check the content address anyway.
        if airlock_signing::Sha256Digest::of(&bytes).to_hex() != v.manifest_digest {
            return Err(Error::Database(format!(
                "stored manifest of {model} {version} does not match its digest"
            )));
        }
        Ok((airlock_signing::Manifest::from_json(&bytes)?, dir))
    }

    /// Retention: marks a retired version `removed` and deletes its store directory.
    pub fn prune(&self, model: &str, version: &Version, actor: &Actor) -> Result<()> {
        let digest = self
            .registry
            .mark_removed(self.now()?, model, version, actor)?;
        let dir = self.layout.stored(&digest);
        std::fs::remove_dir_all(&dir).map_err(Error::io(format!(
            "cannot remove {} of {model} {version}",
            dir.display()
        )))?;
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
