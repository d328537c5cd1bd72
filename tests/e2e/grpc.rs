//! The Open Inference Protocol over gRPC, driven by the real third-party `tritonclient[grpc]`
//! (sync, aio and streaming clients, and the generated stubs for what the clients never send):
//! the same answers as over HTTP for every datatype, every bad input with its code and message,
//! tokens and scopes, overload, deadlines and cancellation. The checks themselves are in
//! `tests/python/tritonclient_grpc_check.py`; each test here sets up a daemon and runs one mode.

use std::process::Command;

use airlock_tests::{airlockctl_as, bootstrapped_dev_dir, install_dev_model, DevServer};

fn check(args: &[&str]) {
    let out = Command::new(airlock_tests::venv_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/tritonclient_grpc_check.py"
        ))
        .args(args)
        .output()
        .expect("python (scripts/setup.sh makes the venv)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "tritonclient_grpc_check.py {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn grpc_tritonclient_sync_aio_and_stream_answer_as_http_does_for_every_datatype_and_bad_input() {
    let dir = bootstrapped_dev_dir();
    install_dev_model(
        &dir.path().join("airlock-dev"),
        "every",
        &airlock_signing::onnx::every_type_identity(),
    )
    .expect("every 1.0.0");
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, "[grpc]\nmax_message_size = \"1MiB\"\n").expect("config");
    let args: Vec<String> = ["--dev", "--listen", "127.0.0.1:0", "--config"]
        .iter()
        .map(|s| s.to_string())
        .chain([config.display().to_string()])
        .collect();
    let s = DevServer::spawn(dir, &args, &[]);
    assert_ne!(
        s.grpc,
        "off",
        "--dev serves gRPC and logs where: {}",
        s.log()
    );
    check(&["serve", &s.addr, &s.grpc]);
    // Every RPC was logged with its id and method; nothing the clients sent is echoed.
    let (clean, log) = s.stop_with_log();
    assert!(clean, "{log}");
    assert!(log.contains("method=ModelInfer"), "{log}");
    assert!(log.contains("rpc refused"), "{log}");
    assert!(!log.contains("no\nsuch"), "{log}");
}

#[test]
fn grpc_takes_the_same_tokens_and_scopes_as_http() {
    let (s, socket, token_all) =
        airlock_tests::production_server(&[("uid:0", "admin")], "mode = \"approvers\"", "", &[]);
    let (code, out, err) = airlockctl_as(
        None,
        &socket,
        &[
            "--json",
            "token",
            "create",
            "--name",
            "other",
            "--scope",
            "model:other",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let other = serde_json::from_str::<serde_json::Value>(&out).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    check(&["auth", &s.grpc, &token_all, &other]);
    let (_, log) = s.stop_with_log();
    for secret in [&token_all, &other] {
        let tail = secret.rsplit('_').next().expect("secret part");
        assert!(!log.contains(tail), "a token secret reached the log");
    }
}

#[test]
fn grpc_overload_is_resource_exhausted_with_a_hint_and_deadlines_and_cancels_skip_the_work() {
    let s = DevServer::start(
        Some("[serving]\nqueue_capacity = 1\nmax_batch_size = 1\n"),
        &[("AIRLOCK_FAULT_RUN_DELAY_MS", "1200")],
    );
    check(&["overload", &s.addr, &s.grpc]);
}

/// `localhost:PORT` of a daemon's gRPC listener, for TLS name checks.
pub fn grpc_tls_ok(s: &DevServer, ca: &std::path::Path) {
    let port = s.grpc.rsplit(':').next().expect("port");
    check(&[
        "tls",
        &format!("localhost:{port}"),
        ca.to_str().expect("utf8"),
    ]);
}
