//! Least privilege at start-up: production mode refuses root unless the configuration allows
//! it, and refuses to start with a TLS key others can read, a trust root others can change, or a
//! world-writable data directory — each refusal names the file and the fix (exit 2).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use airlock_tests::{bin, bootstrapped_dev_dir, DevServer};

fn config(d: &str, allow_root: bool) -> String {
    format!(
        "[paths]\ndata_dir = \"{d}/airlock-dev\"\ninitial_trust_root = \"{d}/airlock-dev/dev/root.json\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\ntls = true\n[logging]\ndir = \"{d}/logs\"\n\
         [admin]\nsocket = \"{d}/admin.sock\"\n[daemon]\nallow_root = {allow_root}\n"
    )
}

fn start(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin("airlockd"))
        .args(["--config", &dir.join("prod.toml").display().to_string()])
        .output()
        .expect("airlockd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn production_refuses_root_and_loose_modes_naming_the_file() {
    let dir = bootstrapped_dev_dir();
    let d = dir.path().display().to_string();
    // Root without allow_root.
    std::fs::write(dir.path().join("prod.toml"), config(&d, false)).expect("config");
    let (code, err) = start(dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("running as root") && err.contains("allow_root"),
        "{err}"
    );
    // Allowed: it starts (and makes its TLS key, mode 0600).
    std::fs::write(dir.path().join("prod.toml"), config(&d, true)).expect("config");
    let s = DevServer::spawn(dir, &["--config".into(), format!("{d}/prod.toml")], &[]);
    let dir = s.kill();
    let key = dir.path().join("airlock-dev/tls/key.pem");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated key is private");
    // A key others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, err) = start(dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&key.display().to_string())
            && err.contains("mode 0644")
            && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // A trust root others can change.
    let root = dir.path().join("airlock-dev/trust/root.json");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, err) = start(dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("root.json") && err.contains("lets other users change it"),
        "{err}"
    );
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // A world-writable data directory.
    let data = dir.path().join("airlock-dev");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, err) = start(dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the data directory"), "{err}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Put right, it starts again.
    let s = DevServer::spawn(dir, &["--config".into(), format!("{d}/prod.toml")], &[]);
    assert!(s.stop());
}

/// `airlockd --init` (the image's first boot): installs the trust root into a fresh data
/// directory, makes the TLS certificate and the identity key (0600), prints what the console
/// shows, and a second run keeps all of it; a loose identity key is then refused like the TLS key.
#[test]
fn init_creates_the_appliance_identity_once_and_keeps_it() {
    let src = bootstrapped_dev_dir();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    let root = src.path().join("airlock-dev/dev/root.json");
    let toml = format!(
        "[paths]\ndata_dir = \"{d}/data\"\ninitial_trust_root = \"{}\"\n\
         [server]\nlisten = \"0.0.0.0:8443\"\ntls = true\n[logging]\ndir = \"{d}/logs\"\n\
         [admin]\nsocket = \"{d}/admin.sock\"\n[daemon]\nallow_root = true\n",
        root.display()
    );
    std::fs::write(dir.path().join("prod.toml"), toml).expect("config");
    let init = || {
        let out = Command::new(bin("airlockd"))
            .args(["--config", &format!("{d}/prod.toml"), "--init"])
            .output()
            .expect("airlockd --init");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = init();
    let field = |s: &str, k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {k}= in {s}"))
    };
    assert!(
        field(&first, "url").starts_with("https://") && field(&first, "url").ends_with(":8443/"),
        "{first}"
    );
    // The fingerprint is the certificate's: SHA-256 of the leaf's DER, as openssl computes it.
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(dir.path().join("data/tls/cert.pem"))
        .output()
        .expect("openssl");
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.trim().rsplit('=').next().unwrap_or("").replace(':', "");
    assert_eq!(field(&first, "tls_sha256"), fp.to_lowercase(), "{first}");
    let key = dir.path().join("data/identity/appliance.key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(field(&first, "identity").starts_with("ed25519:"), "{first}");
    assert_eq!(
        std::fs::read(dir.path().join("data/trust/root.json")).expect("installed root"),
        std::fs::read(&root).expect("root")
    );
    // Idempotent: the same certificate and identity.
    assert_eq!(init(), first);
    // A private key others can read is refused, naming it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(bin("airlockd"))
        .args(["--config", &format!("{d}/prod.toml"), "--init"])
        .output()
        .expect("airlockd --init");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("identity key") && err.contains(&key.display().to_string()),
        "{err}"
    );
}
