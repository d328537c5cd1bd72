//! Least privilege at start-up: production mode refuses to run as root unless `[daemon]
//! allow_root = true` (`--dev` runs as root, as development machines and CI do), and the files
//! that hold secrets or trust must not be readable or writable by the wrong people. Each finding
//! names the file, its mode and the fix; the daemon does not start with any of them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use airlock_config::Config;

/// Why the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Refuses root in production unless the configuration allows it.
pub fn check_user(config: &Config, dev: bool) -> Result<(), Refusal> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() && !dev && !config.daemon.allow_root {
        return Err(Refusal(
            "airlockd is running as root: production mode refuses that (run it as its own user, \
             as the systemd unit does with User=airlock), or set [daemon] allow_root = true"
                .into(),
        ));
    }
    Ok(())
}

/// A file or directory must not grant the permission bits in `forbidden` (e.g. `0o077`).
fn mode_at_most(path: &Path, forbidden: u32, what: &str, fix: &str) -> Result<(), Refusal> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // not there (yet): whoever creates it creates it right
    };
    if meta.file_type().is_symlink() {
        return Err(Refusal(format!(
            "{} ({what}) is a symbolic link; it must be a plain file or directory",
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & forbidden != 0 {
        return Err(Refusal(format!(
            "{} ({what}) has mode {mode:04o}, which {}; {fix}",
            path.display(),
            if forbidden & 0o044 != 0 {
                "lets other users read it"
            } else {
                "lets other users change it"
            }
        )));
    }
    Ok(())
}

/// Checks the ownership-sensitive files of the data directory and the configuration file.
pub fn check_files(config: &Config, config_file: Option<&Path>) -> Result<(), Refusal> {
    let d = &config.paths.data_dir;
    let (_, key) = crate::system::tls::paths(d);
    mode_at_most(
        &key,
        0o077,
        "the TLS private key",
        &format!("chmod 600 {}", key.display()),
    )?;
    for (p, what) in [
        (
            d.join("identity/appliance.key"),
            "the appliance identity key",
        ),
        (d.join("dev/dev-root.key"), "a development signing key"),
        (d.join("dev/dev-bundle.key"), "a development signing key"),
    ] {
        mode_at_most(&p, 0o077, what, &format!("chmod 600 {}", p.display()))?;
    }
    let root = d.join("trust/root.json");
    mode_at_most(
        &root,
        0o022,
        "the trust root",
        &format!("chmod go-w {}", root.display()),
    )?;
    for (p, what) in [
        (d.to_path_buf(), "the data directory"),
        (
            d.join("state"),
            "the state database (tokens, approvals, audit)",
        ),
        (d.join("trust"), "the trust directory"),
    ] {
        mode_at_most(&p, 0o022, what, &format!("chmod go-w {}", p.display()))?;
    }
    mode_at_most(
        &d.join("state"),
        0o007,
        "the state database (tokens, approvals, audit)",
        &format!("chmod o-rwx {}", d.join("state").display()),
    )?;
    if let Some(c) = config_file {
        mode_at_most(
            c,
            0o022,
            "the configuration",
            &format!("chmod go-w {}", c.display()),
        )?;
    }
    Ok(())
}
