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
