//! The on-disk layout under the data directory, the content-addressed model store, and the
//! importer's staging sink.
//!
//! ```text
//! DATA/state/            sled: registry, audit chain, time floor
//! DATA/store/<sha256>/   one verified bundle: manifest.json, signatures.json, payload at its bundle paths
//! DATA/staging/import-*/ private (0700) directories of imports in progress
//! DATA/trust/root.json   the current trust root
//! ```
//!
//! Invariant: a store directory is named by the SHA-256 of its manifest, appears only by one
//! `rename` of a fully written, fsynced staging directory, and is never modified afterwards.
//! Nothing is written outside the import's own staging directory before that rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use airlock_signing::manifest::FileEntry;
use airlock_signing::{PayloadSink, VerifiedManifest};

use crate::error::{Error, Result};
use crate::registry::Registry;

/// Paths under the data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            root: data_dir.to_path_buf(),
        }
    }
    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The sled database.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The model store.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    /// Import staging.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// The current trust root.
    pub fn trust_root(&self) -> PathBuf {
        self.root.join("trust").join("root.json")
    }
    /// A stored bundle's directory.
    pub fn stored(&self, digest_hex: &str) -> PathBuf {
        self.store().join(digest_hex)
    }

    /// Creates the directories (mode 0750; staging and state 0700).
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for (dir, mode) in [
            (self.root.clone(), 0o750),
            (self.store(), 0o750),
            (self.staging(), 0o700),
            (self.root.join("trust"), 0o750),
            // The state database: approvals, audit chain, token hashes.
            (self.root.join("state"), 0o700),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&dir)
                .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        }
        Ok(())
    }

    /// Removes what a crash can leave behind, each with why: staging directories, store
    /// directories no registry version refers to (a crash between the store rename and the
    /// registry commit), and store directories of `removed` versions (retention interrupted
    /// between marking a version removed and deleting its files, or inside the deletion).
    pub fn clean_leftovers(&self, registry: &Registry) -> Result<Vec<(PathBuf, &'static str)>> {
        let mut removed = Vec::new();
        for e in fs::read_dir(self.staging()).map_err(Error::io("cannot list staging"))? {
            let p = e.map_err(Error::io("cannot list staging"))?.path();
            remove_any(&p)?;
            removed.push((p, "removed an incomplete import left by an interruption"));
        }
        let mut kept = std::collections::BTreeSet::new();
        let mut retired = std::collections::BTreeSet::new();
        for m in registry.models()? {
            for v in m.versions.into_values() {
                if v.state == crate::registry::VersionState::Removed {
                    retired.insert(v.manifest_digest);
                } else {
                    kept.insert(v.manifest_digest);
                }
            }
        }
        for e in fs::read_dir(self.store()).map_err(Error::io("cannot list the store"))? {
            let e = e.map_err(Error::io("cannot list the store"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !kept.contains(&name) {
                remove_any(&e.path())?;
                removed.push((
                    e.path(),
                    if retired.contains(&name) {
                        "finished the retention of a removed version (its files were still there after an interruption)"
                    } else {
                        "removed an incomplete import left by an interruption"
                    },
                ));
            }
        }
        if !removed.is_empty() {
            fsync_dir(&self.staging())?;
            fsync_dir(&self.store())?;
        }
        Ok(removed)
    }
}

/// Deletes a store directory; one already gone is fine (retention finished before).
pub fn remove_stored(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            what: format!("cannot remove {}", dir.display()),
            source: e,
        }),
    }
}

fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    r.map_err(Error::io(format!("cannot remove {}", p.display())))
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(format!("cannot fsync {}", dir.display())))
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub fn available_space(path: &Path) -> Result<u64> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| Error::Io {
        what: format!("statvfs {}", path.display()),
        source: io::Error::from_raw_os_error(e as i32),
    })?;
    Ok((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// Checks a version's store directory `dir` against the manifest digest the registry recorded:
/// `manifest.json` present and matching it, every payload file present, a regular file, and of
/// the size the manifest gives. Returns the manifest; a damaged directory is
/// [`Error::StoreDamaged`], naming the file. (Contents are hashed on import and on repair, not
/// at every load: a multi-gigabyte model would delay every start.)
pub fn check_stored(
    dir: &Path,
    digest: &str,
    model: &str,
    version: &semver::Version,
) -> Result<airlock_signing::Manifest> {
    let damaged = |file: &str, reason: String| Error::StoreDamaged {
        model: model.into(),
        version: version.to_string(),
        file: dir.join(file).display().to_string(),
        reason,
    };
    let bytes = match fs::read(dir.join("manifest.json")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(damaged("manifest.json", "is missing".into()))
        }
        Err(e) => return Err(damaged("manifest.json", format!("cannot be read: {e}"))),
    };
    // The store is written only after verification; re-check the content address anyway.
    if airlock_signing::Sha256Digest::of(&bytes).to_hex() != digest {
        return Err(damaged(
            "manifest.json",
            format!(
                "does not match the SHA-256 recorded at import ({} bytes: truncated or modified)",
                bytes.len()
            ),
        ));
    }
    let manifest = airlock_signing::Manifest::from_json(&bytes)
        .map_err(|e| damaged("manifest.json", format!("does not parse: {e}")))?;
    for f in &manifest.files {
        let path = f.path.as_str();
        match fs::symlink_metadata(dir.join(path)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(damaged(path, "is missing".into()))
            }
            Err(e) => return Err(damaged(path, format!("cannot be read: {e}"))),
            Ok(m) if !m.file_type().is_file() => {
                return Err(damaged(path, "is not a regular file".into()))
            }
            Ok(m) if m.len() != f.size => {
                return Err(damaged(
                    path,
                    format!("has {} bytes, the manifest says {}", m.len(), f.size),
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(manifest)
}

/// What a full read of a store directory finds that [`check_stored`] cannot: a payload file
/// whose content no longer has its manifest's SHA-256 (a flipped bit, a same-size overwrite).
/// Streams each file; used only when the same release is imported again, to decide whether
/// that import repairs it.
pub fn content_damage(dir: &Path, manifest: &airlock_signing::Manifest) -> Option<String> {
    use sha2::{Digest, Sha256};
    for f in &manifest.files {
        let path = dir.join(f.path.as_str());
        let mut h = Sha256::new();
        let read = File::open(&path).and_then(|mut file| io::copy(&mut file, &mut h));
        match read {
            Err(e) => return Some(format!("{} cannot be read: {e}", path.display())),
            Ok(_) if h.finalize().as_slice() != f.sha256.0.as_slice() => {
                return Some(format!(
                    "{} does not match its SHA-256 in the manifest",
                    path.display()
                ))
            }
            Ok(_) => {}
        }
    }
    None
}

/// Writes verified entries into a private staging directory. Created by the importer.
pub(crate) struct StagingSink<'a> {
    pub layout: &'a Layout,
    pub registry: &'a Registry,
    pub reserve: u64,
    pub dir: Option<tempfile::TempDir>,
    pub seen: Option<(String, String)>,
    /// Set when this import repairs the damaged store directory of the same signed release
    /// (what was damaged).
    pub repair: Option<String>,
    buf: Vec<u8>,
    dirs: Vec<PathBuf>,
}

impl<'a> StagingSink<'a> {
    pub fn new(layout: &'a Layout, registry: &'a Registry, reserve: u64) -> Self {
        StagingSink {
            layout,
            registry,
            reserve,
            dir: None,
            seen: None,
            repair: None,
            buf: Vec::new(),
            dirs: Vec::new(),
        }
    }

    /// Writes the metadata, fsyncs everything, and renames the staging directory into the store.
    pub fn commit(mut self, v: &VerifiedManifest) -> Result<PathBuf> {
        let tmp = self
            .dir
            .take()
            .ok_or_else(|| Error::Database("staging directory missing".into()))?;
        let dir = tmp.path().to_path_buf();
        write_synced(&dir.join("manifest.json"), &v.manifest_bytes)?;
        let sigs = serde_json::to_vec_pretty(&airlock_signing::reader::SignatureFile {
            signatures: v.signatures.clone(),
        })
        .map_err(|e| Error::Database(e.to_string()))?;
        write_synced(&dir.join("signatures.json"), &sigs)?;
        for d in self.dirs.iter().rev() {
            fsync_dir(d)?;
        }
        fsync_dir(&dir)?;
        let dest = self.layout.stored(&v.digest.to_hex());
        // A repair: the damaged directory goes aside (into staging, which start-up empties)
        // and is deleted once the repaired one is in place.
        let damaged = if self.repair.is_some() && dest.exists() {
            let aside = self
                .layout
                .staging()
                .join(format!("damaged-{}", v.digest.to_hex()));
            remove_stored(&aside)?;
            fs::rename(&dest, &aside).map_err(Error::io(format!(
                "cannot move the damaged {} aside",
                dest.display()
            )))?;
            Some(aside)
        } else {
            None
        };
        // The one step that makes the bundle visible; it either happens whole or not at all.
        fs::rename(&dir, &dest).map_err(Error::io(format!(
            "cannot move the staged bundle to {}",
            dest.display()
        )))?;
        let _ = tmp.keep();
        fsync_dir(&self.layout.store())?;
        if let Some(aside) = damaged {
            // The repair is done; the damaged copy is only in the way (a start empties staging).
            if let Err(e) = remove_stored(&aside) {
                tracing::warn!(error = %e, "the damaged copy stays in staging until the next start");
            }
        }
        fsync_dir(&self.layout.staging())?;
        Ok(dest)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .map_err(Error::io(format!("cannot create {}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(Error::io(format!("cannot write {}", path.display())))
}

impl PayloadSink for StagingSink<'_> {
    type Error = Error;

    fn begin(&mut self, v: &VerifiedManifest) -> Result<()> {
        let m = &v.manifest;
        self.seen = Some((m.model.name.to_string(), m.model.version.to_string()));
        // Anti-rollback first: an old bundle is refused before a byte of it is written. The
        // one exception is the very release on the appliance (the same signed manifest) whose
        // store directory is damaged: importing it again repairs the files.
        if let Some(rec) = self.registry.model(m.model.name.as_str())? {
            let same = rec.versions.get(&m.model.version).filter(|e| {
                e.manifest_digest == v.digest.to_hex()
                    && e.state != crate::registry::VersionState::Removed
            });
            let damage = same.and_then(|e| {
                let dir = self.layout.stored(&e.manifest_digest);
                match check_stored(
                    &dir,
                    &e.manifest_digest,
                    m.model.name.as_str(),
                    &m.model.version,
                ) {
                    Err(d) => Some(d.to_string()),
                    Ok(manifest) => content_damage(&dir, &manifest).map(|d| {
                        format!(
                            "the stored files of {} {} are damaged: {d}",
                            m.model.name, m.model.version
                        )
                    }),
                }
            });
            match damage {
                Some(d) => self.repair = Some(d),
                None => rec.admits(&m.model.version)?,
            }
        }
        // Free space against the declared size, before writing.
        let staging = self.layout.staging();
        let available = available_space(&staging)?;
        let needed = m.payload_size();
        if needed.saturating_add(self.reserve) > available {
            return Err(Error::InsufficientSpace {
                path: staging.display().to_string(),
                needed,
                reserve: self.reserve,
                available,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&staging)
            .map_err(Error::io("cannot create a staging directory"))?;
        self.dir = Some(dir);
        self.buf = vec![0u8; 1 << 20];
        Ok(())
    }

    fn file(&mut self, entry: &FileEntry, data: &mut dyn Read) -> Result<()> {
        let root = self
            .dir
            .as_ref()
            .ok_or_else(|| Error::Database("payload before manifest".into()))?
            .path()
            .to_path_buf();
        // `entry.path` is a validated relative path without `..`: the join stays inside `root`.
        let target = root.join(entry.path.as_str());
        let parent = target.parent().unwrap_or(&root).to_path_buf();
        if !parent.exists() {
            fs::create_dir_all(&parent)
                .map_err(Error::io(format!("cannot create {}", parent.display())))?;
            let mut p = parent.clone();
            while p != root {
                if !self.dirs.contains(&p) {
                    self.dirs.push(p.clone());
                }
                if !p.pop() {
                    break;
                }
            }
        }
        // Unverified bytes go to a hidden name; only a confirmed entry gets its real name.
        let partial = parent.join(format!(".partial-{}", self.dirs.len()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&partial)
            .map_err(Error::io(format!("cannot create {}", partial.display())))?;
        let copied = (|| -> io::Result<()> {
            loop {
                let n = data.read(&mut self.buf)?;
                if n == 0 {
                    return Ok(());
                }
                f.write_all(&self.buf[..n])?;
            }
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&partial);
            return Err(Error::Io {
                what: format!("staging {}", entry.path),
                source: e,
            });
        }
        f.sync_all()
            .map_err(Error::io(format!("cannot fsync {}", partial.display())))?;
        fs::rename(&partial, &target)
            .map_err(Error::io(format!("cannot name {}", target.display())))?;
        Ok(())
    }
}
