//! Zero-downtime promotion and rollback: clients keep sending requests while versions are
//! promoted and rolled back; no request may fail and every answer must be the one of the version
//! that says it served it.

// In tests a panic is the failure report; unwrapping is the assertion.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use airlock_tests::{airlockctl_as, iris_answer, iris_bundle, iris_infer, DevServer};

#[test]
fn promote_and_rollback_drop_no_request() {
    let s = DevServer::start(None, &[]);
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    let (st, v, original) = iris_infer(&s.addr, "");
    assert_eq!((st, v.as_str()), (200, "1.0.0"));
    let expected: BTreeMap<String, f32> = [
        ("1.0.0".to_string(), original),
        ("1.1.0".to_string(), iris_answer(1.1)),
    ]
    .into();
    // --dev approves automatically once validation passes.
    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &["bundle", "import", &b.display().to_string(), "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("APPROVED"), "{out}");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, seen, failures, addr, expected) = (
                stop.clone(),
                seen.clone(),
                failures.clone(),
                s.addr.clone(),
                expected.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (st, v, y) = iris_infer(&addr, "");
                    match expected.get(&v) {
                        Some(want) if st == 200 && (*want - y).abs() < 1e-6 => {
                            *seen.lock().unwrap().entry(v).or_default() += 1
                        }
                        _ => failures.lock().unwrap().push(format!("{st} {v} {y}")),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ctl = |args: &[&str]| {
        let (code, out, err) = airlockctl_as(None, &sock, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    ctl(&["model", "promote", "demo-iris", "1.1.0"]);
    for _ in 0..3 {
        ctl(&["model", "rollback", "demo-iris"]);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        seen.get("1.0.0").copied().unwrap_or(0) > 10
            && seen.get("1.1.0").copied().unwrap_or(0) > 10,
        "both versions served: {seen:?}"
    );
    // Four swaps happened; the replaced versions were released after draining.
    let log = s.log();
    assert!(log.matches("model unloaded").count() >= 4, "{log}");
    assert!(s.stop());
}

/// Auto-rollback: a promoted version whose compute latency crosses the configured threshold
/// within the window is rolled back by the daemon itself, and the audit log says why.
#[test]
fn a_version_crossing_the_latency_threshold_is_rolled_back_automatically() {
    let s = DevServer::start(
        Some("[lifecycle]\nauto_rollback_window = \"60s\"\nauto_rollback_latency = \"1us\"\nauto_rollback_min_requests = 5\n"),
        &[],
    );
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &["bundle", "import", &b.display().to_string(), "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = airlockctl_as(None, &sock, &["model", "promote", "demo-iris", "1.1.0"]);
    assert_eq!(code, 0, "{out}{err}");
    let start = std::time::Instant::now();
    loop {
        let (_, v, _) = iris_infer(&s.addr, "");
        if v == "1.0.0" {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no automatic rollback:\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, out, _) = airlockctl_as(None, &sock, &["audit", "list", "--limit", "100"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("airlockd:auto-rollback") && out.contains("mean compute latency"),
        "{out}"
    );
    assert!(s.stop());
}

/// A bundle whose model parses (its contract reads fine) but that ONNX Runtime cannot load fails
/// validation on the real runtime, and cannot be promoted.
#[test]
fn a_model_onnx_runtime_cannot_load_fails_validation() {
    let s = DevServer::start(None, &[]);
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    let b = airlock_tests::model_bundle(
        &dd,
        "1.1.0",
        &airlock_signing::onnx::unknown_op_model(),
        false,
    )
    .expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &["bundle", "import", &b.display().to_string(), "--watch"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("VALIDATION_FAILED")
            && out.contains("the model does not load")
            && out.contains("NoSuchOp"),
        "{out}"
    );
    let (code, _, err) = airlockctl_as(None, &sock, &["model", "promote", "demo-iris", "1.1.0"]);
    assert_eq!(code, 1);
    assert!(err.contains("only approved versions"), "{err}");
    assert_eq!(iris_infer(&s.addr, "").1, "1.0.0");
    assert!(s.stop());
}

/// Retention: with `retain_versions = 2`, promoting a third version removes the oldest retired
/// one from disk (its history stays), never the active version or the rollback target.
#[test]
fn retention_removes_old_retired_versions_only() {
    let s = DevServer::start(Some("[lifecycle]\nretain_versions = 2\n"), &[]);
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    for (v, x) in [("1.1.0", 1.1), ("1.2.0", 1.2), ("1.3.0", 1.3)] {
        let b = iris_bundle(&dd, v, x, 0.0).expect("bundle");
        let (code, out, err) = airlockctl_as(
            None,
            &sock,
            &["bundle", "import", &b.display().to_string(), "--watch"],
        );
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = airlockctl_as(None, &sock, &["model", "promote", "demo-iris", v]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // Retention runs on its own thread after the promotion has answered: wait for its outcome.
    let show = || {
        let (_, out, _) = airlockctl_as(None, &sock, &["--json", "models", "show", "demo-iris"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let record = |m: &serde_json::Value, v: &str| {
        m["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == v)
            .unwrap()
            .clone()
    };
    let digest = record(&show(), "1.1.0")["manifest_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = dd.join("store").join(digest);
    airlock_tests::wait_until("retention to remove 1.1.0 from disk", || {
        record(&show(), "1.1.0")["state"] == "removed" && !stored.exists()
    });
    let m = show();
    let state = |v: &str| record(&m, v)["state"].as_str().unwrap().to_string();
    assert_eq!(state("1.3.0"), "active");
    assert_eq!(state("1.2.0"), "retired", "the rollback target stays");
    assert_eq!(state("1.1.0"), "removed");
    assert_eq!(state("1.0.0"), "removed");
    let (code, out, err) = airlockctl_as(None, &sock, &["model", "rollback", "demo-iris"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(iris_infer(&s.addr, "").1, "1.2.0");
    // `--dev` reruns over this state (the demo version long retired) and serves what is active.
    let dir = s.kill();
    let s = DevServer::spawn(
        dir,
        &[
            "--dev".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            "airlockd.toml".into(),
        ],
        &[],
    );
    assert_eq!(iris_infer(&s.addr, "").1, "1.2.0");
    assert!(s.stop());
}

/// A stop right after a promotion: the background work the promotion started — the drain that
/// releases the replaced version, the auto-rollback watch of the new one — is joined before the
/// daemon exits, not cut off by it (the drain waits at least 100 ms before it releases).
#[test]
fn a_stop_right_after_a_promotion_joins_its_drain_and_watch() {
    let s = DevServer::start(Some("[lifecycle]\nauto_rollback_window = \"1h\"\n"), &[]);
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &["bundle", "import", &b.display().to_string(), "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = airlockctl_as(None, &sock, &["model", "promote", "demo-iris", "1.1.0"]);
    assert_eq!(code, 0, "{out}{err}");
    let started = std::time::Instant::now();
    let (clean, log) = s.stop_with_log();
    assert!(clean, "{log}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the one-hour watch did not hold up the stop"
    );
    let unloaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("model unloaded"))
        .collect();
    assert!(
        unloaded.iter().any(|l| l.contains("1.0.0"))
            && unloaded.iter().any(|l| l.contains("1.1.0")),
        "both versions released before the exit: {unloaded:?}\n{log}"
    );
    assert!(!log.contains("still running at shutdown"), "{log}");
}
