//! `--dev`: a development appliance in `./airlock-dev`, bootstrapped through the real pipeline.
//!
//! On first run: generate a development root key and bundle key (mode 0600, under the data dir,
//! never printed), write a development trust root, build the demo model's bundle with the same
//! code as `airlock-sign bundle create`, import it (verify, stage, store), validate it, approve
//! it under the explicitly named `unattended-dev` policy, and promote it. A rerun reuses the
//! data dir and changes nothing. Invariant: dev keys and roots never leave the dev data dir.

use std::path::{Path, PathBuf};

use airlock_config::{ApprovalMode, Config};
use airlock_signing::manifest::ModelName;
use airlock_signing::trust::{Role, RootBuilder};
use airlock_signing::writer::{plan, write_plan, CreateOptions};
use airlock_signing::PrivateKey;
use airlock_updater::{Actor, Updater, VersionState};
use anyhow::Context;
use time::OffsetDateTime;

/// The demo model's name.
pub const DEMO_MODEL: &str = "demo-iris";
/// The demo model's version.
pub const DEMO_VERSION: &str = "1.0.0";

/// This process's real uid (the developer running `--dev` administers it).
fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

/// The embedded development configuration: data in `./airlock-dev`, unattended-dev approvals;
/// `base` (from `--dev --config FILE`) supplies the other sections.
pub fn config(base: Option<Config>) -> anyhow::Result<Config> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut c = base.unwrap_or_default();
    c.paths.data_dir = cwd.join("airlock-dev");
    c.paths.initial_trust_root = c.paths.data_dir.join("dev").join("root.json");
    c.approval.mode = ApprovalMode::UnattendedDev;
    c.approval.approvers = None;
    c.logging.dir = c.paths.data_dir.join("logs");
    c.server.tls = false;
    // Plaintext, so loopback only (`--grpc-listen` overrides).
    c.grpc.listen = "127.0.0.1:8001".into();
    c.admin.socket = c.paths.data_dir.join("admin.sock");
    c.admin.roles = [(format!("uid:{}", nix_uid()), airlock_config::Role::Admin)].into();
    c.admin.socket_mode = 0o600;
    c.bundles.reserve_free_space = airlock_config::ByteSize(64 << 20);
    Ok(c)
}

fn key(path: &Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        return Ok(PrivateKey::read(path)?);
    }
    let k = PrivateKey::generate()?;
    k.write_new(path)?;
    Ok(k)
}

/// Creates the dev keys and trust root if missing; returns the bundle key.
fn dev_trust(dir: &Path, root_path: &Path) -> anyhow::Result<PrivateKey> {
    // The data directory 0750 and the keys' directory 0700, whoever comes first.
    if let Some(data) = dir.parent() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
            .create(data)?;
    }
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)?;
    let root_key = key(&dir.join("dev-root.key"))?;
    let bundle_key = key(&dir.join("dev-bundle.key"))?;
    if !root_path.exists() {
        let mut b = RootBuilder::new(OffsetDateTime::now_utc() + time::Duration::days(3650));
        b.add_key(Role::Root, root_key.public())
            .add_key(Role::Bundle, bundle_key.public());
        let f = b.signed(std::slice::from_ref(&root_key))?;
        let bytes = serde_json::to_vec_pretty(&f)?;
        airlock_signing::writer::write_atomically(root_path, |w| {
            std::io::Write::write_all(w, &bytes)?;
            Ok(())
        })?;
    }
    Ok(bundle_key)
}

/// Writes the demo model directory and builds its bundle with the release-side code.
fn demo_bundle(dir: &Path, key: &PrivateKey) -> anyhow::Result<PathBuf> {
    let src = dir.join("demo-src");
    std::fs::create_dir_all(src.join("vectors/case-1/inputs"))?;
    std::fs::create_dir_all(src.join("vectors/case-1/expected"))?;
    let (model, x, y) = airlock_signing::onnx::demo_files();
    std::fs::write(src.join("model.onnx"), model)?;
    std::fs::write(src.join("vectors/case-1/inputs/x.npy"), x)?;
    std::fs::write(src.join("vectors/case-1/expected/y.npy"), y)?;
    let opts = CreateOptions::new(
        ModelName::parse(DEMO_MODEL).map_err(anyhow::Error::msg)?,
        semver::Version::parse(DEMO_VERSION)?,
        time::Duration::days(365),
    )?;
    let p = plan(
        &src.join("model.onnx"),
        &[],
        Some(&src.join("vectors")),
        &opts,
    )?;
    let dest = dir.join(p.manifest.bundle_file_name());
    write_plan(&p, std::slice::from_ref(key), &dest, 3)?;
    Ok(dest)
}

/// Brings the dev appliance to "demo model active", doing only the steps not yet done.
pub fn bootstrap(
    updater: &Updater,
    config: &Config,
    validator: &dyn airlock_updater::Validator,
) -> anyhow::Result<()> {
    let dev_dir = config.paths.data_dir.join("dev");
    let bundle_key = dev_trust(&dev_dir, &config.paths.initial_trust_root)?;
    if let Some(w) = updater.install_initial_trust_root(&config.paths.initial_trust_root)? {
        tracing::warn!("{w}");
    }
    let version = semver::Version::parse(DEMO_VERSION)?;
    let me = Actor::new("airlockd --dev")?;
    let reg = updater.registry();
    let state = |u: &Updater| -> anyhow::Result<Option<VersionState>> {
        Ok(u.registry()
            .model(DEMO_MODEL)?
            .and_then(|m| m.versions.get(&version).map(|v| v.state)))
    };
    if state(updater)?.is_none() {
        let bundle = demo_bundle(&dev_dir, &bundle_key)?;
        let imported = updater.import_file(&bundle, &me)?;
        tracing::info!(model = DEMO_MODEL, version = DEMO_VERSION, digest = %imported.verified.digest, "demo bundle imported");
    }
    if state(updater)? == Some(VersionState::Staged) {
        let (report, st) = updater.validate(DEMO_MODEL, &version, validator, &Actor::system())?;
        tracing::info!(passed = report.passed, engine = %report.engine, state = %st, "demo model validated");
        if !report.passed {
            anyhow::bail!(
                "the demo model failed validation: {}",
                serde_json::to_string(&report)?
            );
        }
    }
    if state(updater)? == Some(VersionState::Approved) {
        let now = updater.now()?;
        reg.begin_promotion(now, DEMO_MODEL, &version, &me)?;
        reg.complete_promotion(now, DEMO_MODEL, &me)?;
        tracing::info!(
            model = DEMO_MODEL,
            version = DEMO_VERSION,
            "demo model promoted"
        );
    }
    // A rerun after an operator promoted or rolled back other versions is fine: the demo
    // model must only have *some* active version.
    match state(updater)? {
        Some(VersionState::Active) => Ok(()),
        other => match reg.model(DEMO_MODEL)?.and_then(|m| m.active) {
            Some(active) => {
                tracing::info!(model = DEMO_MODEL, active = %active, "demo model: another version is active");
                Ok(())
            }
            None => anyhow::bail!(
                "the demo model ended in state {other:?}, and no version of it is active"
            ),
        },
    }
}
