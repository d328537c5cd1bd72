//! TLS for the production listener (rustls with the `ring` provider): the certificate and key
//! live in `<data_dir>/tls/{cert.pem,key.pem}`; on first start a self-signed certificate is
//! generated (the image's first boot will do this with the appliance identity); SIGHUP reloads
//! both files without dropping connections (new handshakes get the new certificate).
//!
//! Invariant: the private key is read from its file into rustls and never logged; a reload that
//! fails keeps serving with the previous certificate and says why.

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

/// Generates a self-signed certificate for `names` if there is none yet.
pub fn ensure_certificate(data_dir: &Path, names: Vec<String>) -> anyhow::Result<()> {
    let (cert, key) = paths(data_dir);
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let dir = cert.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir)?;
    let generated = rcgen::generate_simple_self_signed(names)?;
    let key_pem = generated.key_pair.serialize_pem();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)?;
        f.write_all(key_pem.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::write(&cert, generated.cert.pem())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// Loads a certificate chain and key into a rustls `CertifiedKey`; also returns the leaf's
/// SHA-256 fingerprint (what operators compare).
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<(Arc<CertifiedKey>, String)> {
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
    Ok((Arc::new(CertifiedKey::new(chain, signing)), fingerprint))
}

/// A certificate resolver whose certificate can be swapped at run time.
#[derive(Debug)]
pub struct Reloadable {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
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
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use")
            }
        }
    }

    /// A rustls server configuration that asks this resolver on every handshake.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
