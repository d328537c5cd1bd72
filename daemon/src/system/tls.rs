//! TLS for the production listener (rustls with the `ring` provider): the certificate and key
//! live in `<data_dir>/tls/{cert.pem,key.pem}`; on first start a self-signed certificate valid
//! for two years is generated (`tls/self-signed` records its expiry; `airlockd --init` renews it
//! within 30 days of the end, and the daemon warns about it); SIGHUP reloads both files without
//! dropping connections (new handshakes get the new certificate).
//!
//! Invariant: the private key is read from its file into rustls and never logged; start-up and
//! reload apply the same checks (plain files, the key private, key and certificate a pair), and a
//! reload that fails keeps serving with the previous certificate and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};

/// Where the TLS files live.
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// How long a generated self-signed certificate is valid.
pub const SELF_SIGNED_DAYS: i64 = 730;
/// From how long before its expiry a generated certificate is renewed by `airlockd --init`
/// (and warned about at start and on SIGHUP).
pub const RENEW_DAYS: i64 = 30;

/// The marker beside a certificate airlockd generated: its expiry (`not_after=RFC3339`).
fn marker(data_dir: &Path) -> PathBuf {
    data_dir.join("tls/self-signed")
}

/// When the generated certificate expires (`None`: the certificate is not one airlockd made).
pub fn self_signed_expiry(data_dir: &Path) -> Option<time::OffsetDateTime> {
    let text = std::fs::read_to_string(marker(data_dir)).ok()?;
    let v = text.trim().strip_prefix("not_after=")?;
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()
}

/// Warns when the generated certificate expires within [`RENEW_DAYS`] (or has).
pub fn warn_if_expiring(data_dir: &Path) {
    if let Some(end) = self_signed_expiry(data_dir) {
        let left = end - time::OffsetDateTime::now_utc();
        if left < time::Duration::days(RENEW_DAYS) {
            tracing::warn!(
                not_after = %end,
                days_left = left.whole_days(),
                "the self-signed TLS certificate expires soon: renew it with `airlockd --init` (a new fingerprint), then `systemctl reload airlockd`"
            );
        }
    }
}

/// Generates a self-signed certificate for `names` (valid [`SELF_SIGNED_DAYS`]) if there is
/// none yet, or renews one airlockd generated that expires within [`RENEW_DAYS`]. A
/// certificate the operator installed is never replaced. Returns whether it wrote one.
pub fn ensure_certificate(data_dir: &Path, names: Vec<String>) -> anyhow::Result<bool> {
    let (cert, key) = paths(data_dir);
    let renew = self_signed_expiry(data_dir).is_some_and(|end| {
        end - time::OffsetDateTime::now_utc() < time::Duration::days(RENEW_DAYS)
    });
    if cert.exists() && key.exists() && !renew {
        return Ok(false);
    }
    let dir = cert.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir)?;
    let mut params = rcgen::CertificateParams::new(names)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "airlock appliance (self-signed)");
    let end = params
        .not_after
        .format(&time::format_description::well_known::Rfc3339)?;
    let key_pair = rcgen::KeyPair::generate()?;
    let generated = params.self_signed(&key_pair)?;
    let key_pem = key_pair.serialize_pem();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = key.with_extension("pem.new");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key_pem.as_bytes())?;
        f.sync_all()?;
        std::fs::write(cert.with_extension("pem.new"), generated.pem())?;
        std::fs::rename(&tmp, &key)?;
        std::fs::rename(cert.with_extension("pem.new"), &cert)?;
    }
    std::fs::write(marker(data_dir), format!("not_after={end}\n"))?;
    if renew {
        tracing::warn!(cert = %cert.display(), not_after = %end, "renewed the self-signed TLS certificate (it was about to expire): clients that pin the fingerprint need the new one");
    } else {
        tracing::info!(cert = %cert.display(), not_after = %end, "generated a self-signed TLS certificate");
    }
    Ok(true)
}

/// A file the daemon reads its TLS identity from: a regular file, not a symbolic link, and
/// (`secret`) not readable by group or others.
fn check_file(path: &Path, secret: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        anyhow::bail!(
            "{} is not a regular file (a symbolic link or something else); TLS files must be plain files",
            path.display()
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        anyhow::bail!(
            "{} has mode {mode:04o}, which lets other users read the private key; chmod 600 it",
            path.display()
        );
    }
    Ok(())
}

/// Loads a certificate chain and key into a rustls `CertifiedKey` with the checks of start-up
/// (plain files, the key private, the key belonging to the certificate); also returns the
/// leaf's SHA-256 fingerprint (what operators compare).
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<(Arc<CertifiedKey>, String)> {
    check_file(cert, false)?;
    check_file(key, true)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", cert.display()))?;
    let fingerprint = hex::encode(Sha256::digest(leaf.as_ref()));
    // The key's parse error is not shown: it could quote key material.
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM private key", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| anyhow::anyhow!("{}: unsupported private key type", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => anyhow::bail!(
            "the private key {} does not belong to the certificate {}",
            key.display(),
            cert.display()
        ),
    }
    Ok((Arc::new(ck), fingerprint))
}

/// A certificate resolver whose certificate can be swapped at run time.
#[derive(Debug)]
pub struct Reloadable {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl Reloadable {
    fn data_dir(&self) -> Option<&Path> {
        self.cert.parent().and_then(Path::parent)
    }
}

impl Reloadable {
    /// Loads the files.
    pub fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<Arc<Reloadable>> {
        let (ck, fp) = load(&cert, &key)?;
        tracing::info!(sha256 = %fp, "TLS certificate loaded");
        Ok(Arc::new(Reloadable {
            current: ArcSwap::new(ck),
            cert,
            key,
        }))
    }

    /// Reloads the files; on failure the previous certificate stays in use.
    pub fn reload(&self) {
        match load(&self.cert, &self.key) {
            Ok((ck, fp)) => {
                self.current.store(ck);
                tracing::info!(sha256 = %fp, "TLS certificate reloaded");
                if let Some(d) = self.data_dir() {
                    warn_if_expiring(d);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use")
            }
        }
    }

    /// A rustls server configuration that asks this resolver on every handshake (so a reload
    /// reaches every listener), offering the ALPN protocols `alpn` (`http/1.1` for the
    /// inference and admin listener, `h2` for gRPC).
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
