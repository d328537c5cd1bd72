//! What happens when a model's GPU path fails, per its `on_failure`. The CPU build of ONNX
//! Runtime cannot register the CUDA provider, so `execution_provider = "cuda"` exercises every
//! branch here for real: `cpu` (same model on CPU), `fail` (503), `queue` (requests wait until
//! their deadline while recovery retries), `model:NAME` (a fallback model answers). Each is
//! visible in metadata, readiness, metrics and the responses — never silent.

use airlock_tests::{http, DevServer};
use serde_json::{json, Value};

const INFER: &str = "/v2/models/demo-iris/infer";

fn body(timeout_us: Option<u64>) -> Vec<u8> {
    let mut v = json!({ "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2] }] });
    if let Some(t) = timeout_us {
        v["parameters"] = json!({ "timeout": t });
    }
    serde_json::to_vec(&v).expect("json")
}

/// Bootstraps the dev appliance with the default (CPU) settings — validation runs on the
/// production provider, so a CUDA-configured model cannot pass it on a machine without a GPU —
/// then restarts it with the model configured for CUDA.
fn start(on_failure: &str) -> DevServer {
    start_in(airlock_tests::bootstrapped_dev_dir(), on_failure)
}

/// Restarts the dev appliance in `dir` with demo-iris configured for CUDA and `on_failure`.
fn start_in(dir: tempfile::TempDir, on_failure: &str) -> DevServer {
    let config = dir.path().join("airlockd.toml");
    std::fs::write(&config, format!("[models.\"demo-iris\"]\nexecution_provider = \"cuda\"\non_failure = \"{on_failure}\"\n")).expect("w");
    let args = [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().expect("p"),
    ]
    .map(String::from);
    DevServer::spawn(dir, &args, &[])
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).expect("json")
}

#[test]
fn cpu_fallback_serves_and_says_it_is_degraded() {
    let s = start("cpu");
    let (code, _, b) = http(&s.addr, "POST", INFER, &[], &body(None));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["parameters"]["degraded"], true);
    let (_, _, meta) = http(&s.addr, "GET", "/v2/models/demo-iris", &[], b"");
    let meta = json_of(&meta);
    assert!(
        meta["parameters"]["degraded"]
            .as_str()
            .expect("reason")
            .contains("running on CPU"),
        "{meta}"
    );
    assert_eq!(meta["parameters"]["execution_provider"], "cpu");
    let (_, _, m) = http(&s.addr, "GET", "/metrics", &[], b"");
    assert!(String::from_utf8_lossy(&m).contains(
        r#"airlock_model_info{model="demo-iris",version="1.0.0",provider="cpu",degraded="true"} 1"#
    ));
    assert_eq!(http(&s.addr, "GET", "/v2/health/ready", &[], b"").0, 200);
    assert!(
        s.log().contains("the CUDA path failed"),
        "the failure is logged"
    );
}

#[test]
fn fail_answers_503_and_is_not_ready() {
    let s = start("fail");
    let (code, _, b) = http(&s.addr, "POST", INFER, &[], &body(None));
    assert_eq!(code, 503);
    assert!(json_of(&b)["error"]
        .as_str()
        .expect("e")
        .contains("model demo-iris is unavailable: CUDA failed"));
    assert_eq!(
        http(&s.addr, "GET", "/v2/models/demo-iris/ready", &[], b"").0,
        400
    );
    assert_eq!(http(&s.addr, "GET", "/v2/health/ready", &[], b"").0, 400);
    assert_eq!(
        http(&s.addr, "GET", "/v2/health/live", &[], b"").0,
        200,
        "alive, just not ready"
    );
}

#[test]
fn queue_holds_requests_until_their_deadline() {
    let s = start("queue");
    let t = std::time::Instant::now();
    let (code, _, b) = http(&s.addr, "POST", INFER, &[], &body(Some(300_000)));
    let took = t.elapsed();
    assert_eq!(code, 504, "{}", String::from_utf8_lossy(&b));
    assert!(
        took >= std::time::Duration::from_millis(250),
        "answered after {took:?}, before the deadline"
    );
    assert_eq!(
        http(&s.addr, "GET", "/v2/models/demo-iris/ready", &[], b"").0,
        400
    );
    let (_, _, meta) = http(&s.addr, "GET", "/v2/models/demo-iris", &[], b"");
    assert!(json_of(&meta)["parameters"]["degraded"]
        .as_str()
        .expect("reason")
        .contains("wait for recovery"));
}

#[test]
fn a_fallback_model_answers_and_the_answer_names_it() {
    // A second model with the same contract, installed through the real pipeline.
    let dir = airlock_tests::bootstrapped_dev_dir();
    let small = airlock_signing::onnx::linear_classifier(&[0.1; 12], &[0.0; 3]);
    airlock_tests::install_dev_model(&dir.path().join("airlock-dev"), "iris-small", &small)
        .expect("install");
    let s = start_in(dir, "model:iris-small");
    let (code, _, b) = http(&s.addr, "POST", INFER, &[], &body(None));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    let v = json_of(&b);
    assert_eq!(v["model_name"], "iris-small", "the model that answered");
    assert_eq!(v["parameters"]["degraded"], true);
    assert_eq!(v["parameters"]["requested_model"], "demo-iris");
    // Uniform weights: every class gets a third.
    for p in v["outputs"][0]["data"].as_array().expect("data") {
        assert!((p.as_f64().expect("f") - 1.0 / 3.0).abs() < 1e-5);
    }
    assert_eq!(
        http(&s.addr, "GET", "/v2/models/demo-iris/ready", &[], b"").0,
        200,
        "ready through its fallback"
    );
}

#[test]
fn validation_runs_on_the_production_provider() {
    // With CUDA configured and no GPU, validating the demo model fails (and says why) unless
    // its on_failure is "cpu", in which case it validates on CPU, as it would serve.
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("airlockd.toml");
    std::fs::write(
        &config,
        "[models.\"demo-iris\"]\nexecution_provider = \"cuda\"\non_failure = \"fail\"\n",
    )
    .expect("w");
    let out = std::process::Command::new(airlock_tests::bin("airlockd"))
        .args(["--dev", "--once", "--config", config.to_str().expect("p")])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed validation") && err.contains("CUDA"),
        "{err}"
    );
}
