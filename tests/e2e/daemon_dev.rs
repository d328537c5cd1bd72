//! `airlockd` as an operator runs it: `--check-config`, and `--dev` from an empty directory
//! (the demo model taken through the real pipeline), rerun, and stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use airlock_tests::{bin, run};

#[test]
fn check_config_names_the_key_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[time]\nenforcement = \"strict\"\n[approval]\napprovers = 2\n",
    )
    .expect("w");
    let (code, out, err) = run(
        "airlockd",
        &["--check-config", good.to_str().expect("utf8")],
    );
    assert_eq!(code, 0, "{out}{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[time]\nenforcement = \"strict\"\n\n[bundles]\nmax_entries = -3\n",
    )
    .expect("w");
    let (code, _, err) = run("airlockd", &["--check-config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("line 5") && err.contains("bundles.max_entries"),
        "{err}"
    );
    let (code, _, err) = run(
        "airlockd",
        &["--check-config", "/nonexistent/airlockd.toml"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/airlockd.toml"), "{err}");
}

#[test]
fn dev_mode_bootstraps_through_the_pipeline_and_reruns_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin("airlockd"))
        .args(["--dev", "--once"])
        .current_dir(dir.path())
        .output()
        .expect("spawn");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    for step in [
        "demo bundle imported",
        "demo model validated",
        "demo model promoted",
        "audit chain verified",
    ] {
        assert!(log.contains(step), "{step} missing: {log}");
    }
    // The real pipeline left a content-addressed store entry and a verifiable audit chain.
    let data = dir.path().join("airlock-dev");
    let stored: Vec<_> = std::fs::read_dir(data.join("store"))
        .expect("store")
        .collect();
    assert_eq!(stored.len(), 1);
    // Dev keys are 0600 and never printed.
    use std::os::unix::fs::PermissionsExt;
    for k in ["dev-root.key", "dev-bundle.key"] {
        let p = data.join("dev").join(k);
        assert_eq!(
            std::fs::metadata(&p).expect("key").permissions().mode() & 0o777,
            0o600
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
        assert!(
            !log.contains(v["private_key"].as_str().expect("hex")),
            "{k} leaked into the log"
        );
    }
    // The bundle the dev mode built verifies with the release tool against the dev root.
    let bundle = data.join("dev/demo-iris-1.0.0.airlock");
    let (code, o, e) = run(
        "airlock-sign",
        &[
            "bundle",
            "verify",
            bundle.to_str().expect("p"),
            "--trust",
            data.join("trust/root.json").to_str().expect("p"),
        ],
    );
    assert_eq!(code, 0, "{o}{e}");

    // A rerun reuses the data dir and does nothing again.
    let out = Command::new(bin("airlockd"))
        .args(["--dev", "--once"])
        .current_dir(dir.path())
        .output()
        .expect("spawn");
    let log2 = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log2}");
    assert!(
        !log2.contains("imported") && !log2.contains("promoted"),
        "{log2}"
    );
    // import, validate, approve, promote_begin, promote, and the trust root installed.
    assert!(log2.contains("records=6"), "no new audit records: {log2}");
}

#[test]
fn dev_mode_runs_until_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(bin("airlockd"))
        .args([
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("ready"));
    assert!(ready, "airlockd --dev never said it was ready");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit {exit:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:?}");
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_clearly() {
    let s = airlock_tests::DevServer::start(None, &[]);
    let out = Command::new(bin("airlockd"))
        .args(["--dev", "--once", "--listen", "127.0.0.1:0"])
        .current_dir(s.dir.path())
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use by another process (is another airlockd running"),
        "{err}"
    );
    assert!(s.stop(), "the first daemon is unaffected");
}
