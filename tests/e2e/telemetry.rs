//! The local telemetry store on the real daemon: history survives a SIGKILL inside a segment
//! write (losing at most the samples not yet journaled), a corrupt segment blanks only its own
//! history, and a full or unusable telemetry filesystem pauses history only — inference goes on.
//! The sampler's clock is warped (`AIRLOCK_TELEMETRY_WARP`, debug builds) so that pages close
//! within seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_tests::{airlockctl_as, http, iris_infer, wait_until, DevServer};
use serde_json::Value;

use crate::faults::Tmpfs;

fn socket(d: &DevServer) -> std::path::PathBuf {
    d.dir.path().join("airlock-dev/admin.sock")
}

fn ctl_json(d: &DevServer, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = airlockctl_as(None, &socket(d), &all);
    assert_eq!(code, 0, "airlockctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn metric(d: &DevServer, name: &str) -> Option<f64> {
    let (_, _, body) = http(&d.addr, "GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Successful requests the history holds for demo-iris since `from`.
fn recorded_successes(d: &DevServer, from: u64) -> i64 {
    let a = ctl_json(
        d,
        &[
            "telemetry",
            "query",
            r#"airlock_inference_requests_total{model="demo-iris",outcome="success"}"#,
            "--from",
            &from.to_string(),
            "--points",
            "2000",
        ],
    );
    assert_eq!(
        a["tier"], 0,
        "a window inside the last hour reads tier 0: {a}"
    );
    a["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["points"].as_array().unwrap())
        .map(|p| p["sum"].as_i64().unwrap())
        .sum()
}

/// Requests back to back until stopped; the instant each success completed.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (s, dn, addr) = (stop.clone(), Arc::clone(&done), addr.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if iris_infer(&addr, "").0 == 200 {
                    dn.lock().unwrap().push(Instant::now());
                }
            }
        });
        Load {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Stops; (successes completed before `before`, all successes).
    fn finish(mut self, before: Instant) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let d = self.done.lock().unwrap();
        (d.iter().filter(|t| **t < before).count(), d.len())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_sigkill_inside_a_segment_write_loses_only_unjournaled_samples_and_a_corrupt_segment_only_its_own(
) {
    // 30x: a tier-0 page (300 s) closes every 10 s. Each tier-0 block write pauses 1.5 s at the
    // fault point, and the daemon is killed inside the second one, between the block's halves.
    let from = unix_now() - 5;
    let d = DevServer::start(
        None,
        &[
            ("AIRLOCK_TELEMETRY_WARP", "30"),
            ("AIRLOCK_FAULT_PAUSE", "telemetry:block:tier0:1500"),
        ],
    );
    let load = Load::start(&d.addr);
    let blocks = |d: &DevServer| d.log().matches("point=\"telemetry:block:tier0\"").count();
    let start = Instant::now();
    while blocks(&d) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no second block write: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed_at = Instant::now();
    let pid = d.pid();
    let dir = d.kill();
    // The sample being taken and the second before it (or the pause before it) may be lost;
    // everything completed 3 s before the kill was journaled.
    let (safe, all) = load.finish(killed_at - Duration::from_secs(3));
    assert!(safe > 0, "the load ran before the second page closed");

    let args: Vec<String> = ["--dev", "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    let d = DevServer::spawn(dir, &args, &[("AIRLOCK_TELEMETRY_WARP", "30")]);
    assert_ne!(d.pid(), pid);
    wait_until("the store reopens", || {
        d.log().contains("telemetry store open")
    });
    let recorded = recorded_successes(&d, from) as usize;
    assert!(
        (safe..=all).contains(&recorded),
        "history holds {recorded} successes; {safe} completed 3 s before the kill, {all} in all"
    );
    let cat = ctl_json(&d, &["telemetry", "series"]);
    let store = &cat["store"];
    // The torn block is found, cut off from appends (its file sealed) and reported once.
    assert_eq!(store["damaged_segments"], 1, "{store}");
    assert!(d.log().contains("a torn block"), "{}", d.log());
    assert_eq!(store["state"], "recording", "{store}");
    // The history goes on after the restart, in a new segment.
    let before = recorded;
    for _ in 0..20 {
        assert_eq!(iris_infer(&d.addr, "").0, 200);
    }
    wait_until("the new requests are in the history", || {
        recorded_successes(&d, from) as usize >= before + 20
    });

    // A corrupt byte inside the block the crash left intact (just before the torn one): that
    // block's damage is found and reported; the rest of the history still answers.
    let dir = d.kill();
    let tier0 = dir.path().join("airlock-dev/telemetry/tier0");
    let mut corrupted = false;
    for e in std::fs::read_dir(&tier0).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let starts: Vec<usize> = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"BLK1")
            .map(|(i, _)| i)
            .collect();
        if starts.len() >= 2 && !corrupted {
            bytes[starts[1] - 1] ^= 0x5a;
            std::fs::write(&path, &bytes).unwrap();
            corrupted = true;
        }
    }
    assert!(
        corrupted,
        "the sealed segment has its intact block and the torn one"
    );
    let d = DevServer::spawn(dir, &args, &[("AIRLOCK_TELEMETRY_WARP", "30")]);
    wait_until("the store reopens", || {
        d.log().contains("telemetry store open")
    });
    ctl_json(
        &d,
        &[
            "telemetry",
            "query",
            "airlock*",
            "--from",
            &from.to_string(),
            "--points",
            "100",
        ],
    );
    let store = ctl_json(&d, &["telemetry", "series"])["store"].clone();
    let damage =
        store["damaged_segments"].as_u64().unwrap() + store["damaged_chunks"].as_u64().unwrap();
    assert!(
        damage >= 2,
        "the torn block and the corrupt one are reported: {store}"
    );
    assert_eq!(store["state"], "recording", "{store}");
    wait_until("the damage is on /metrics", || {
        metric(&d, "airlock_telemetry_damaged_segments").unwrap_or(0.0)
            + metric(&d, "airlock_telemetry_damaged_chunks").unwrap_or(0.0)
            >= 2.0
    });
    assert_eq!(iris_infer(&d.addr, "").0, 200);
    assert!(d.stop(), "a clean stop");
}

#[test]
fn a_full_telemetry_filesystem_pauses_history_only_and_history_resumes_when_space_returns() {
    let scratch = tempfile::tempdir().unwrap();
    let fs_dir = scratch.path().join("telemetry");
    let fs = Tmpfs::mount(&fs_dir, "2m");
    let config = format!(
        "[telemetry]\ndir = \"{}\"\nflush_interval = \"1s\"\n",
        fs_dir.join("store").display()
    );
    let d = DevServer::start(Some(&config), &[("AIRLOCK_TELEMETRY_WARP", "100")]);
    wait_until("the store is open and recording", || {
        metric(&d, "airlock_telemetry_paused") == Some(0.0)
            && metric(&d, "airlock_telemetry_bytes").is_some_and(|b| b > 0.0)
    });
    fs.leave(0);
    // Inference is unaffected while the journal and the blocks cannot be written.
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(iris_infer(&d.addr, "").0, 200);
    }
    wait_until("history reported paused", || {
        metric(&d, "airlock_telemetry_paused") == Some(1.0)
    });
    for _ in 0..100 {
        assert_eq!(iris_infer(&d.addr, "").0, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    let cat = ctl_json(&d, &["telemetry", "series"]);
    assert_eq!(cat["store"]["state"], "paused", "{cat}");
    let reason = cat["store"]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("No space left"), "{reason}");
    assert!(cat["store"]["write_errors"].as_u64().unwrap() >= 1);
    // One warning for the whole episode, not one per second.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.log().matches("telemetry: history paused").count(),
        1,
        "{}",
        d.log()
    );
    // The budget check and the writes see the space come back.
    fs.unfill();
    wait_until("history written again", || {
        metric(&d, "airlock_telemetry_paused") == Some(0.0)
    });
    assert!(d.log().contains("telemetry: history is written again"));
    assert_eq!(iris_infer(&d.addr, "").0, 200);
    assert!(d.stop(), "a clean stop");
    drop(fs);
}

#[test]
fn an_unusable_telemetry_directory_leaves_serving_and_the_api_answering() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let config = format!("[telemetry]\ndir = \"{}\"\n", file.join("store").display());
    let d = DevServer::start(Some(&config), &[]);
    wait_until("history reported paused", || {
        metric(&d, "airlock_telemetry_paused") == Some(1.0)
    });
    assert_eq!(iris_infer(&d.addr, "").0, 200);
    let (code, _, err) = airlockctl_as(None, &socket(&d), &["telemetry", "series"]);
    assert_eq!(code, 1, "refused by the daemon");
    assert!(err.contains("could not be opened"), "{err}");
    assert_eq!(
        d.log().matches("the store cannot be opened").count(),
        1,
        "{}",
        d.log()
    );
    assert!(d.stop(), "a clean stop");
}

#[test]
fn traces_carry_the_clients_trace_id_across_http_and_grpc_with_their_spans() {
    let d = DevServer::start(None, &[]);
    let (t_http, t_grpc, t_raw) = (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "0af7651916cd43dd8448eb211c80319c",
        "a3ce929d0e0e47364bf92f3577b34da6",
    );
    let out = std::process::Command::new(airlock_tests::venv_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/trace_check.py"
        ))
        .args([&d.addr, &d.grpc, t_http, t_grpc, t_raw])
        .output()
        .expect("python (scripts/setup.sh makes the venv)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "trace_check.py:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // HTTP answers with the client's trace and airlockd's own span; without a traceparent
    // airlockd makes a trace and says which.
    let body =
        br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;
    let tp = format!("00-{t_http}-00f067aa0ba902b7-01");
    let (status, headers, _) = http(
        &d.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &[("traceparent", &tp)],
        body,
    );
    assert_eq!(status, 200);
    let back = airlock_tests::header(&headers, "traceparent")
        .unwrap()
        .to_string();
    assert!(back.starts_with(&format!("00-{t_http}-")), "{back}");
    assert!(
        !back.contains("00f067aa0ba902b7"),
        "a span of its own: {back}"
    );
    let (_, headers, _) = http(&d.addr, "POST", "/v2/models/demo-iris/infer", &[], body);
    let made = airlock_tests::header(&headers, "traceparent")
        .unwrap()
        .to_string();
    let made_id = made.split('-').nth(1).unwrap().to_string();
    assert_eq!(made_id.len(), 32);
    // A failed request's log line names its trace and request id.
    let bad = br#"{"inputs":[{"name":"nope","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}"#;
    let t_bad = "5bf92f3577b34da6a3ce929d0e0e4736";
    let (status, headers, _) = http(
        &d.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &[("traceparent", &format!("00-{t_bad}-00f067aa0ba902b7-01"))],
        bad,
    );
    assert_eq!(status, 400);
    let rid = airlock_tests::header(&headers, "x-request-id")
        .unwrap()
        .to_string();
    wait_until("the refusal's log line", || {
        d.log()
            .lines()
            .any(|l| l.contains("request refused") && l.contains(t_bad) && l.contains(&rid))
    });

    let traces = |q: &[&str]| -> Vec<Value> {
        let mut args = vec!["telemetry", "traces"];
        args.extend_from_slice(q);
        ctl_json(&d, &args)["traces"].as_array().unwrap().clone()
    };
    for (id, transport) in [
        (t_http, "http"),
        (t_grpc, "grpc"),
        (t_raw, "grpc"),
        (made_id.as_str(), "http"),
    ] {
        let found = traces(&["--trace-id", id]);
        assert!(!found.is_empty(), "trace {id} is kept");
        let t = &found[0];
        assert_eq!(t["transport"], transport, "{t}");
        assert_eq!(t["model"], "demo-iris", "{t}");
        assert_eq!(t["version"], "1.0.0", "{t}");
        assert_eq!(t["status"], "ok", "{t}");
        let names: Vec<&str> = t["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["request", "decode", "queue", "batch", "execute", "respond"],
            "{t}"
        );
        let total = t["duration_us"].as_u64().unwrap();
        for s in t["spans"].as_array().unwrap() {
            assert!(
                s["start_us"].as_u64().unwrap() + s["duration_us"].as_u64().unwrap() <= total + 1,
                "spans lie inside the request: {t}"
            );
        }
        if id != made_id {
            assert_eq!(t["parent_span_id"], "00f067aa0ba902b7", "{t}");
        }
    }
    let failed = traces(&["--status", "error"]);
    assert!(
        failed
            .iter()
            .any(|t| t["trace_id"] == t_bad && t["code"] == 400),
        "{failed:?}"
    );
    assert!(traces(&["--status", "ok", "--model", "demo-iris"]).len() >= 5);
    assert!(traces(&["--model", "other"]).is_empty());
    let (code, _, err) = airlockctl_as(
        None,
        &socket(&d),
        &["telemetry", "traces", "--trace-id", "xyz<script>"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("32 hex digits") && !err.contains("script"),
        "{err}"
    );
    assert!(d.stop(), "a clean stop");
}

#[test]
fn no_token_secret_or_key_reaches_the_history_or_the_traces() {
    let (d, sock, token) = airlock_tests::production_server(
        &[("uid:0", "admin")],
        "mode = \"unattended-dev\"",
        "",
        &[],
    );
    let secret = token.rsplit('_').next().unwrap().to_string();
    assert!(secret.len() >= 16, "{token}");
    for _ in 0..5 {
        assert_eq!(iris_infer(&d.addr, &token).0, 200);
    }
    // A wrong token, and one that names another model, are refused and recorded as nothing.
    assert_eq!(iris_infer(&d.addr, &format!("{token}x")).0, 401);
    wait_until("the requests are in the history", || {
        let (code, out, _) = airlockctl_as(
            None,
            &sock,
            &[
                "--json",
                "telemetry",
                "query",
                "airlock_inference_requests_total*",
                "--from",
                "-5m",
            ],
        );
        code == 0 && out.contains("\"success\"") && out.contains("\"sum\":")
    });
    let (_, traces, _) = airlockctl_as(
        None,
        &sock,
        &["--json", "telemetry", "traces", "--limit", "1000"],
    );
    let (_, series, _) = airlockctl_as(None, &sock, &["--json", "telemetry", "series"]);
    let (_, _, metrics) = http(
        &d.addr,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    // Every file of the store, as bytes.
    let mut stored = Vec::new();
    fn walk(p: &std::path::Path, out: &mut Vec<u8>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.extend(std::fs::read(e.path()).unwrap());
            }
        }
    }
    walk(&d.dir.path().join("airlock-dev/telemetry"), &mut stored);
    assert!(!stored.is_empty());
    let keys: Vec<String> = ["dev-root.key", "dev-bundle.key"]
        .iter()
        .map(|k| {
            let v: Value = serde_json::from_slice(
                &std::fs::read(d.dir.path().join("airlock-dev/dev").join(k)).unwrap(),
            )
            .unwrap();
            v["private_key"].as_str().unwrap().to_string()
        })
        .collect();
    let stored = String::from_utf8_lossy(&stored).into_owned();
    for (what, text) in [
        ("the store's files", stored.as_str()),
        ("the traces", traces.as_str()),
        ("the catalog", series.as_str()),
        ("/metrics", &String::from_utf8_lossy(&metrics)),
        ("the log", &d.log()),
    ] {
        assert!(!text.contains(&secret), "a token secret in {what}");
        for k in &keys {
            assert!(!text.contains(k.as_str()), "key bytes in {what}");
        }
    }
    assert!(traces.contains("demo-iris"), "{traces}");
    assert!(d.stop(), "a clean stop");
}
