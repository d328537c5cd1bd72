//! The Open Inference Protocol v2 as served by the real `airlockd --dev` (the demo model, loaded
//! with the real ONNX Runtime): every endpoint, JSON and binary tensors, gzip, and each bad input
//! with its status code and message, over raw HTTP exactly as clients send it.

use airlock_signing::onnx::{linear_classifier_eval, DEMO_BIAS, DEMO_INPUT, DEMO_WEIGHTS};
use airlock_tests::{header, http, DevServer};
use serde_json::{json, Value};

const M: &str = "/v2/models/demo-iris";

fn post(
    s: &DevServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http(&s.addr, "POST", path, headers, body)
}

fn get_json(s: &DevServer, path: &str) -> (u16, Value) {
    let (code, _, body) = http(&s.addr, "GET", path, &[], b"");
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn expected() -> Vec<f32> {
    linear_classifier_eval(&DEMO_WEIGHTS, &DEMO_BIAS, &DEMO_INPUT)
}

fn json_request() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "req-1",
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": [2, 4], "data": DEMO_INPUT }]
    }))
    .expect("json")
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

fn error_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("v2 error bodies are JSON");
    v["error"]
        .as_str()
        .expect("an \"error\" string")
        .to_string()
}

#[test]
fn metadata_health_config_stats_and_index() {
    let s = DevServer::start(None, &[]);
    let (code, v) = get_json(&s, "/v2");
    assert_eq!(code, 200);
    assert_eq!(v["name"], "airlock");
    assert!(v["extensions"]
        .as_array()
        .expect("list")
        .iter()
        .any(|e| e == "binary_tensor_data"));
    assert_eq!(http(&s.addr, "GET", "/v2/health/live", &[], b"").0, 200);
    assert_eq!(http(&s.addr, "GET", "/v2/health/ready", &[], b"").0, 200);
    let (code, meta) = get_json(&s, M);
    assert_eq!(code, 200);
    assert_eq!(
        meta["inputs"][0],
        json!({ "name": "x", "datatype": "FP32", "shape": [-1, 4] })
    );
    assert_eq!(
        meta["outputs"][0],
        json!({ "name": "y", "datatype": "FP32", "shape": [-1, 3] })
    );
    assert_eq!(meta["versions"], json!(["1.0.0"]));
    assert_eq!(
        meta["parameters"]["model_digest"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(get_json(&s, &format!("{M}/versions/1.0.0")).0, 200);
    assert_eq!(http(&s.addr, "GET", &format!("{M}/ready"), &[], b"").0, 200);
    assert_eq!(
        http(
            &s.addr,
            "GET",
            &format!("{M}/versions/1.0.0/ready"),
            &[],
            b""
        )
        .0,
        200
    );
    let (code, config) = get_json(&s, &format!("{M}/config"));
    assert_eq!(code, 200);
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(
        config["input"][0]["dims"],
        json!([4]),
        "batch dimension left out, as Triton does"
    );
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    let (code, _, body) = post(&s, "/v2/repository/index", &[], b"{}");
    assert_eq!(code, 200);
    let index: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        index[0],
        json!({ "name": "demo-iris", "version": "1.0.0", "state": "READY" })
    );
    // Unknown model or version: 404 for metadata, 400 for readiness (Triton's mapping).
    let (code, _, body) = http(&s.addr, "GET", "/v2/models/nope", &[], b"");
    assert_eq!(code, 404);
    assert!(error_of(&body).contains("unknown model 'nope'"));
    assert_eq!(
        http(&s.addr, "GET", &format!("{M}/versions/9.9.9"), &[], b"").0,
        404
    );
    assert_eq!(
        http(&s.addr, "GET", "/v2/models/nope/ready", &[], b"").0,
        400
    );
    let (code, _, body) = post(&s, "/v2/models/nope/infer", &[], &json_request());
    assert_eq!(code, 404);
    assert!(error_of(&body).contains("nope"));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["kind"],
        "not_found"
    );
    // Stats count what ran.
    assert_eq!(post(&s, &format!("{M}/infer"), &[], &json_request()).0, 200);
    let (code, stats) = get_json(&s, &format!("{M}/stats"));
    assert_eq!(code, 200);
    assert_eq!(stats["model_stats"][0]["inference_count"], 1);
    assert_eq!(
        get_json(&s, "/v2/models/stats").1["model_stats"][0]["name"],
        "demo-iris"
    );
    assert!(s.stop(), "clean exit on SIGTERM");
}

#[test]
fn json_binary_gzip_and_requested_outputs() {
    let s = DevServer::start(None, &[]);
    // JSON in, JSON out, no Content-Type at all (as the sync tritonclient sends).
    let (code, h, body) = post(&s, &format!("{M}/infer"), &[], &json_request());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["model_name"], "demo-iris");
    assert_eq!(v["model_version"], "1.0.0");
    assert_eq!(v["id"], "req-1");
    assert_eq!(
        v["parameters"]["model_digest"].as_str().map(str::len),
        Some(64)
    );
    assert!(
        v["outputs"][0].get("parameters").is_none(),
        "no empty output parameters (perf_analyzer rejects them)"
    );
    let got: Vec<f32> = serde_json::from_value(v["outputs"][0]["data"].clone()).expect("floats");
    assert_close(&got, &expected());

    // Binary in, binary out; Content-Type octet-stream (the aio client's habit).
    let raw: Vec<u8> = DEMO_INPUT.iter().flat_map(|f| f.to_le_bytes()).collect();
    let head = serde_json::to_vec(&json!({
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": { "binary_data_size": raw.len() } }],
        "outputs": [{ "name": "y", "parameters": { "binary_data": true } }]
    }))
    .expect("json");
    let len = head.len().to_string();
    let body = [head.clone(), raw.clone()].concat();
    let hdrs = [
        ("Inference-Header-Content-Length", len.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    let (code, h, resp) = post(&s, &format!("{M}/infer"), &hdrs, &body);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
    let n: usize = header(&h, "inference-header-content-length")
        .expect("header length")
        .parse()
        .expect("number");
    let v: Value = serde_json::from_slice(&resp[..n]).expect("json header");
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 24);
    let got: Vec<f32> = resp[n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_close(&got, &expected());

    // perf_analyzer's JSON shape: Inference-Header-Content-Length equal to the whole body.
    let req = json_request();
    let whole = req.len().to_string();
    let (code, _, _) = post(
        &s,
        &format!("{M}/infer"),
        &[("Inference-Header-Content-Length", &whole)],
        &req,
    );
    assert_eq!(code, 200);

    // binary_data_output for all outputs, via the request parameters; explicit version path.
    let mut r: Value = serde_json::from_slice(&json_request()).expect("json");
    r["parameters"] = json!({ "binary_data_output": true });
    let (code, h, _) = post(
        &s,
        &format!("{M}/versions/1.0.0/infer"),
        &[],
        &serde_json::to_vec(&r).expect("json"),
    );
    assert_eq!(code, 200);
    assert!(header(&h, "inference-header-content-length").is_some());

    // gzip request body.
    use std::io::Write;
    let mut gz = flate2_encoder();
    gz.write_all(&json_request()).expect("gzip");
    let zipped = gz.finish().expect("gzip");
    let (code, _, body) = post(
        &s,
        &format!("{M}/infer"),
        &[("Content-Encoding", "gzip")],
        &zipped,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    // A request the batcher merges: batch of 1 and batch of 2 both answered correctly.
    let one = serde_json::to_vec(&json!({ "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 4], "data": &DEMO_INPUT[..4] }] })).expect("json");
    let (code, _, body) = post(&s, &format!("{M}/infer"), &[], &one);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).expect("json");
    let got: Vec<f32> = serde_json::from_value(v["outputs"][0]["data"].clone()).expect("floats");
    assert_close(&got, &expected()[..3]);
}

fn flate2_encoder() -> GzipWriter {
    GzipWriter(Vec::new())
}

/// A minimal gzip writer (stored deflate blocks + CRC32), so the test needs no compression crate.
struct GzipWriter(Vec<u8>);

impl std::io::Write for GzipWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl GzipWriter {
    fn finish(self) -> std::io::Result<Vec<u8>> {
        let data = self.0;
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(65535).collect()
        };
        for (i, c) in chunks.iter().enumerate() {
            out.push(u8::from(i + 1 == chunks.len()));
            out.extend_from_slice(&(c.len() as u16).to_le_bytes());
            out.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
            out.extend_from_slice(c);
        }
        let mut crc = 0xffff_ffffu32;
        for b in &data {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        out.extend_from_slice(&(!crc).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(out)
    }
}

/// (body, extra headers, expected status, expected part of the error message).
type BadCase = (Vec<u8>, Vec<(&'static str, String)>, u16, &'static str);

#[test]
fn bad_inputs_get_a_status_and_a_message_that_names_the_problem() {
    let s = DevServer::start(None, &[]);
    let infer = format!("{M}/infer");
    let cases: Vec<BadCase> = vec![
        (b"{\"inputs\": [".to_vec(), vec![], 400, "malformed JSON"),
        (
            br#"{"inputs":[{"name":"x","datatype":"INT64","shape":[1,4],"data":[1,2,3,4]}]}"#.to_vec(),
            vec![],
            400,
            "input 'x': datatype INT64, the model expects FP32",
        ),
        (
            br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[1,2,3,4]}]}"#.to_vec(),
            vec![],
            400,
            "input 'x': shape [2, 4] needs 8 elements, \"data\" holds 4",
        ),
        (
            br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,5],"data":[1,2,3,4,5]}]}"#.to_vec(),
            vec![],
            400,
            "input 'x': dimension 1 is 5, the model expects 4",
        ),
        (
            br#"{"inputs":[{"name":"z","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}"#.to_vec(),
            vec![],
            400,
            "unexpected input 'z'",
        ),
        (br#"{"inputs":[]}"#.to_vec(), vec![], 400, "input 'x' is missing"),
        (
            br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}"#.to_vec(),
            vec![],
            400,
            "binary_data_size 16 runs past the end of the body",
        ),
        (
            br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}"#.to_vec(),
            vec![],
            400,
            "unknown output 'nope'",
        ),
        (
            br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[9,4],"data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}"#.to_vec(),
            vec![],
            400,
            "larger than max_batch_size 8",
        ),
        (json_request(), vec![("Inference-Header-Content-Length", "100000".to_string())], 400, "Inference-Header-Content-Length is 100000 but the body has only"),
        (json_request(), vec![("Content-Encoding", "gzip".to_string())], 400, "does not decompress"),
        (json_request(), vec![("Content-Encoding", "br".to_string())], 415, "Content-Encoding br is not supported"),
    ];
    for (body, hdrs, status, message) in cases {
        let h: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, _, resp) = post(&s, &infer, &h, &body);
        assert_eq!(
            code,
            status,
            "{message}: {}",
            String::from_utf8_lossy(&resp)
        );
        let e = error_of(&resp);
        assert!(e.contains(message), "expected {message:?} in {e:?}");
    }
    // The server still serves after all of that.
    assert_eq!(post(&s, &infer, &[], &json_request()).0, 200);
}

#[test]
fn two_gib_content_length_is_refused_before_buffering() {
    use std::io::{Read, Write};
    let s = DevServer::start(None, &[]);
    let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let head = format!("POST {M}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n");
    c.write_all(head.as_bytes()).expect("write");
    c.write_all(b"{\"inputs\":")
        .expect("write a few body bytes");
    let mut buf = vec![0u8; 4096];
    let n = c
        .read(&mut buf)
        .expect("an answer without waiting for 2 GiB");
    let (code, _, body) = airlock_tests::parse_response(&buf[..n]);
    assert_eq!(code, 413);
    assert!(
        error_of(&body).contains("larger than the limit"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn nan_and_inf_inputs_reach_the_model() {
    let s = DevServer::start(None, &[]);
    let vals = [f32::NAN, 1.0, f32::INFINITY, -1.0];
    let raw: Vec<u8> = vals.iter().flat_map(|f| f.to_le_bytes()).collect();
    let head = serde_json::to_vec(&json!({
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": { "binary_data_size": 16 } }],
        "parameters": { "binary_data_output": true }
    }))
    .expect("json");
    let len = head.len().to_string();
    let (code, h, resp) = post(
        &s,
        &format!("{M}/infer"),
        &[("Inference-Header-Content-Length", &len)],
        &[head, raw].concat(),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
    let n: usize = header(&h, "inference-header-content-length")
        .expect("len")
        .parse()
        .expect("n");
    assert_eq!(resp.len() - n, 12, "three FP32 outputs came back");
}

#[test]
fn a_failing_session_fails_that_request_rebuilds_and_keeps_serving() {
    let s = DevServer::start(None, &[("AIRLOCK_FAULT_RUN_ERROR", "demo-iris")]);
    let (code, _, body) = post(&s, &format!("{M}/infer"), &[], &json_request());
    assert_eq!(code, 500);
    assert!(
        error_of(&body).contains("out of memory"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The session is rebuilt; readiness comes back and the next request succeeds.
    let start = std::time::Instant::now();
    while http(&s.addr, "GET", &format!("{M}/ready"), &[], b"").0 != 200 {
        assert!(
            start.elapsed().as_secs() < 30,
            "the model never became ready again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(post(&s, &format!("{M}/infer"), &[], &json_request()).0, 200);
    let (_, stats) = get_json(&s, &format!("{M}/stats"));
    assert_eq!(stats["model_stats"][0]["session_rebuilds"], 1);
    assert!(s.log().contains("rebuilding the session"), "{}", s.log());
}

#[test]
fn full_queue_is_429_with_retry_after_and_a_passed_deadline_is_504() {
    // One instance, queue of 1, batching off, each run held for 1.2 s by the fault point.
    let config = "[serving]\nqueue_capacity = 1\nmax_batch_size = 1\n";
    let s = DevServer::start(Some(config), &[("AIRLOCK_FAULT_RUN_DELAY_MS", "1200")]);
    let infer = format!("{M}/infer");
    let addr = s.addr.clone();
    let send = move |body: Vec<u8>| {
        let (addr, infer) = (addr.clone(), infer.clone());
        std::thread::spawn(move || http(&addr, "POST", &infer, &[], &body))
    };
    let running = send(json_request());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Deadline 1 ms: it waits behind the running request and must not run.
    let mut r: Value = serde_json::from_slice(&json_request()).expect("json");
    r["parameters"] = json!({ "timeout": 1000 });
    let late = send(serde_json::to_vec(&r).expect("json"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The queue (capacity 1) is now full: refused at once.
    let (code, h, body) = http(&s.addr, "POST", &format!("{M}/infer"), &[], &json_request());
    assert_eq!(code, 429, "{}", String::from_utf8_lossy(&body));
    assert!(header(&h, "retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v >= 1));
    assert!(error_of(&body).contains("queue of model demo-iris is full"));
    let kind =
        |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json")["kind"].clone();
    assert_eq!(kind(&body), "queue_full", "the kind is in every error body");
    assert_eq!(running.join().expect("thread").0, 200);
    let (code, _, body) = late.join().expect("thread");
    assert_eq!(code, 504, "{}", String::from_utf8_lossy(&body));
    assert!(error_of(&body).contains("deadline passed"));
    assert_eq!(kind(&body), "deadline_exceeded");
    let (_, stats) = get_json(&s, &format!("{M}/stats"));
    assert_eq!(stats["model_stats"][0]["rejected_count"], 1);
    assert_eq!(stats["model_stats"][0]["timed_out_count"], 1);
    assert_eq!(
        stats["model_stats"][0]["inference_count"], 1,
        "the late request never ran"
    );
}

#[test]
fn slow_loris_clients_are_cut_off() {
    use std::io::{Read, Write};
    let s = DevServer::start(Some("[server]\nheader_read_timeout = \"1s\"\n"), &[]);
    let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
    c.write_all(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("partial head");
    let start = std::time::Instant::now();
    c.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the connection was held for {waited:?}"
    );
    // hyper answers 408 or just closes; either way no request was served.
    assert!(
        buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Well-behaved clients are unaffected.
    assert_eq!(http(&s.addr, "GET", "/v2/health/live", &[], b"").0, 200);
}

#[test]
fn tritonclient_sync_and_aio_json_and_binary() {
    let s = DevServer::start(None, &[]);
    let rows: Vec<Vec<f32>> = DEMO_INPUT.chunks(4).map(<[f32]>::to_vec).collect();
    let out: Vec<Vec<f32>> = expected().chunks(3).map(<[f32]>::to_vec).collect();
    let expected = json!({ "input": rows, "output": out }).to_string();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tritonclient_check.py");
    let output = std::process::Command::new(airlock_tests::venv_python())
        .arg(script)
        .args([&s.addr, "demo-iris", &expected])
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{text}\n--- airlockd log ---\n{}",
        s.log()
    );
    assert!(text.contains("tritonclient: OK"), "{text}");
}

#[test]
fn metrics_are_valid_openmetrics_with_outcomes_and_latencies() {
    let s = DevServer::start(None, &[]);
    assert_eq!(post(&s, &format!("{M}/infer"), &[], &json_request()).0, 200);
    assert_eq!(post(&s, &format!("{M}/infer"), &[], b"{").0, 400);
    assert_eq!(
        post(&s, "/v2/models/random-name-123/infer", &[], &json_request()).0,
        404
    );
    let (code, h, body) = http(&s.addr, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(
        header(&h, "content-type").is_some_and(|c| c.starts_with("application/openmetrics-text"))
    );
    let text = String::from_utf8(body).expect("utf8");
    // Parsed by the reference parser (prometheus_client's OpenMetrics parser).
    let check = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
def value(name, **labels):
    for s in fams[name].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()) and s.name.endswith("_total"):
            return s.value
    raise SystemExit(f"no sample {name} {labels}")
assert value("airlock_inference_requests", model="demo-iris", outcome="success") == 1
assert value("airlock_inference_requests", model="demo-iris", outcome="bad_request") == 1
assert value("airlock_inference_requests", model="_unknown", outcome="not_found") == 1
for h in ["airlock_request_duration_seconds", "airlock_queue_duration_seconds", "airlock_compute_duration_seconds", "airlock_batch_size"]:
    assert fams[h].type == "histogram", h
info = [s for s in fams["airlock_model_info"].samples][0]
assert info.labels == {"model": "demo-iris", "version": "1.0.0", "provider": "cpu", "degraded": "false"}, info.labels
assert "random-name-123" not in str(fams), "unknown model names never become label values"
print("metrics: OK")
"#;
    let mut child = std::process::Command::new(airlock_tests::venv_python())
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msg.contains("metrics: OK"),
        "{msg}\n---\n{text}"
    );
}

#[test]
fn requests_are_logged_as_json_with_ids_and_trace_context_but_no_secrets() {
    let s = DevServer::start(None, &[]);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (code, h, _) = post(
        &s,
        &format!("{M}/infer"),
        &[
            ("traceparent", tp),
            ("Authorization", "Bearer s3cr3t-t0ken"),
        ],
        b"{",
    );
    assert_eq!(code, 400);
    let id = header(&h, "x-request-id")
        .expect("x-request-id")
        .to_string();
    let logs = s.dir.path().join("airlock-dev/logs/airlockd.log");
    let start = std::time::Instant::now();
    let line = loop {
        let text = std::fs::read_to_string(&logs).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("request refused")) {
            break l.to_string();
        }
        assert!(
            start.elapsed().as_secs() < 10,
            "no JSON log line for the refused request in {}",
            logs.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let v: Value = serde_json::from_str(&line).expect("log lines are JSON");
    assert_eq!(v["span"]["id"], id.as_str());
    assert_eq!(v["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(v["fields"]["status"], 400);
    // Nothing secret reached the logs: not the client's token, not the dev keys.
    let all = format!(
        "{}\n{}",
        std::fs::read_to_string(&logs).expect("log"),
        s.log()
    );
    assert!(!all.contains("s3cr3t-t0ken"), "a bearer token was logged");
    for k in ["dev-root.key", "dev-bundle.key"] {
        let key: Value = serde_json::from_slice(
            &std::fs::read(s.dir.path().join("airlock-dev/dev").join(k)).expect("key"),
        )
        .expect("json");
        assert!(
            !all.contains(key["private_key"].as_str().expect("hex")),
            "{k} leaked"
        );
    }
}
