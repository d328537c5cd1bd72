//! The attacks of issue 12, each reproduced against the real daemon: bodies sent to callers
//! without the role, stalled and trickling bodies, idle and surplus connections, descriptor
//! exhaustion, and scopes decided on the parsed route.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use airlock_tests::{airlockctl_as, http, production_server_with};

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("field")
}

/// CPU seconds (user + system) the process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn token(socket: &std::path::Path, scope: &str) -> String {
    let (code, out, err) = airlockctl_as(
        None,
        socket,
        &["--json", "token", "create", "--name", "t", "--scope", scope],
    );
    assert_eq!(code, 0, "token create: {err}");
    serde_json::from_str::<serde_json::Value>(&out).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// Sends `head` and then up to `total` bytes of chunked body, reading the answer on another
/// thread as it comes (the server may answer and close long before the body ends). Returns
/// (status line, bytes of body sent).
fn stream_chunked<S: Read + Write + Send + 'static>(
    mut s: S,
    reader: impl Read + Send + 'static,
    head: &str,
    total: u64,
) -> (String, u64) {
    let mut reader = reader;
    let answer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let mut sent = 0u64;
    if s.write_all(head.as_bytes()).is_ok() {
        let chunk = [b'x'; 1 << 20];
        while sent < total {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if s.write_all(&framed).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        let _ = s.write_all(b"0\r\n\r\n");
    }
    drop(s);
    (answer.join().expect("reader"), sent)
}

fn tcp_chunked(addr: &str, path: &str, auth: Option<&str>, total: u64) -> (String, u64) {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let r = s.try_clone().expect("clone");
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream_chunked(s, r, &head, total)
}

fn socket_chunked(socket: &std::path::Path, path: &str, total: u64) -> (String, u64) {
    let s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let r = s.try_clone().expect("clone");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream_chunked(s, r, &head, total)
}

/// A Python script run as `uid` (no groups): `python3 -c SCRIPT ARGS`; returns stdout.
fn python_as(uid: u32, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .args(args)
        .output()
        .expect("setpriv python3");
    assert!(
        out.status.success(),
        "python as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Streams `argv[3]` MiB of chunked body to `argv[2]` on socket `argv[1]`, reading on a thread;
/// prints the status line and the MiB sent.
const PY_STREAM: &str = r#"
import socket, sys, threading
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(60)
got = []
def read():
    buf = b""
    try:
        while True:
            b = s.recv(65536)
            if not b: break
            buf += b
    except OSError: pass
    got.append(buf.split(b"\r\n")[0].decode())
t = threading.Thread(target=read); t.start()
sent = 0
try:
    s.sendall(b"POST " + sys.argv[2].encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"100000\r\n" + b"x" * (1 << 20) + b"\r\n"
    while sent < int(sys.argv[3]):
        s.sendall(chunk); sent += 1
    s.sendall(b"0\r\n\r\n")
except OSError: pass
t.join()
print(got[0] if got else "", sent)
"#;

const MIB: u64 = 1 << 20;

#[test]
fn bodies_are_refused_on_the_headers_before_a_byte_is_buffered() {
    // uid 4201 holds no role; root is the admin.
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "",
        "",
        &[],
    );
    let pid = server.pid();
    let viewer = token(&socket, "admin:viewer");
    let base = status_kib(pid, "VmHWM");
    let grew = || (status_kib(pid, "VmHWM").saturating_sub(base)) / 1024;

    // A uid with no role streams 256 MiB at the trust root: refused on the headers.
    let out = python_as(
        4201,
        PY_STREAM,
        &[socket.to_str().expect("utf8"), "/api/v1/trust", "256"],
    );
    assert!(out.starts_with("HTTP/1.1 403"), "no role: {out}");
    let sent_mib: u64 = out
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or(999);
    assert!(
        sent_mib < 256,
        "the daemon read the whole body before refusing: {out}"
    );
    assert!(
        grew() < 48,
        "peak RSS grew by {} MiB for a refused body",
        grew()
    );

    // The admin may post a trust root, but not 256 MiB of one: 413 at the route's limit.
    let (status, sent) = socket_chunked(&socket, "/api/v1/trust", 256 * MIB);
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "admin, oversized: {status}"
    );
    assert!(sent < 256 * MIB, "the oversized body was read to its end");
    // By Content-Length, before any byte of the body.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(b"POST /api/v1/trust HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n")
        .expect("head");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Every small-body route has its limit: a token request of 1 MiB is refused too.
    let (status, _) = socket_chunked(&socket, "/api/v1/tokens", MIB);
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "token create, oversized: {status}"
    );

    // Over TCP: a viewer token, and no token at all.
    let (status, sent) = tcp_chunked(&server.addr, "/api/v1/trust", Some(&viewer), 256 * MIB);
    assert!(status.starts_with("HTTP/1.1 403"), "viewer token: {status}");
    assert!(sent < 256 * MIB, "the viewer's body was read to its end");
    let (status, _) = tcp_chunked(&server.addr, "/api/v1/trust", None, 64 * MIB);
    assert!(status.starts_with("HTTP/1.1 401"), "no token: {status}");
    let (status, _) = tcp_chunked(&server.addr, "/v2/models/demo-iris/infer", None, 64 * MIB);
    assert!(
        status.starts_with("HTTP/1.1 401"),
        "no token, inference: {status}"
    );
    assert!(
        grew() < 48,
        "peak RSS grew by {} MiB over the refusals",
        grew()
    );
    // Nothing was changed and the daemon still serves.
    let (code, out, _) = airlockctl_as(None, &socket, &["--json", "status"]);
    assert_eq!(code, 0, "{out}");
}

fn read_all_within(s: &mut impl Read, within: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        assert!(
            start.elapsed() < within,
            "the connection was not closed in {within:?}"
        );
    }
    (buf, start.elapsed())
}

#[test]
fn stalled_bodies_idle_connections_and_surplus_connections_are_cut_off() {
    let (server, socket, token) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "body_timeout = \"1s\"\nbody_min_rate = \"1KiB\"\nheader_read_timeout = \"1s\"\nmax_connections = 24",
        "max_connections = 12\nmax_connections_per_uid = 4",
        &[],
    );
    let addr = server.addr.clone();
    let connect = || {
        let s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        s
    };
    let infer = format!(
        "POST /v2/models/demo-iris/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    );

    // Content-Length 1000 and 9 bytes: 408 once the body stalls for body_timeout.
    let mut s = connect();
    s.write_all(format!("{infer}Content-Length: 1000\r\n\r\n{{\"inputs\"").as_bytes())
        .expect("write");
    let (answer, took) = read_all_within(&mut s, Duration::from_secs(8));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "stalled body: {text}");
    assert!(text.contains("stalled"), "{text}");
    assert!(
        took < Duration::from_secs(5),
        "stalled body held for {took:?}"
    );

    // One byte every 300 ms never stalls for 1 s but stays far below 1 KiB/s.
    let mut s = connect();
    s.write_all(format!("{infer}Transfer-Encoding: chunked\r\n\r\n").as_bytes())
        .expect("write");
    let mut r = s.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"1\r\nx\r\n").is_err() {
                return;
            }
        }
    });
    let (answer, took) = read_all_within(&mut r, Duration::from_secs(12));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "trickle: {text}");
    assert!(text.contains("too slowly"), "{text}");
    assert!(took < Duration::from_secs(8), "trickle held for {took:?}");
    let _ = trickle.join();

    // An idle connection, on either listener, is closed after the header timeout.
    let (_, took) = read_all_within(&mut connect(), Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(800),
        "closed before the timeout: {took:?}"
    );
    let mut idle = UnixStream::connect(&socket).expect("socket");
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let (_, took) = read_all_within(&mut idle, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(800),
        "socket: closed before the timeout: {took:?}"
    );
    // A stalled body on the socket too.
    let mut s = UnixStream::connect(&socket).expect("socket");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"name\"",
    )
    .expect("write");
    let (answer, _) = read_all_within(&mut s, Duration::from_secs(8));
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "socket, stalled body: {text}"
    );

    // 30 connections against a cap of 24: the surplus is closed at once, not queued.
    let held: Vec<_> = (0..30).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let closed_at_once = held
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut b = [0u8; 1];
            match (&**s).read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                // A read that times out: still open.
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count();
    assert!(
        closed_at_once >= 6,
        "only {closed_at_once} of 30 were refused over a cap of 24"
    );
    drop(held);
    // Once the idle ones time out, the listener serves again.
    airlock_tests::wait_until("health after the cap", || {
        http(&addr, "GET", "/v2/health/ready", &[], b"").0 == 200
    });
    assert!(
        server.log().contains("connection refused"),
        "the cap was not logged"
    );

    // Per uid on the socket: uid 4201 holds 4 connections; its 5th and 6th are closed at once,
    // and root still gets in.
    let script = r#"
import select, socket, sys, time
socks = []
for i in range(6):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); socks.append(s)
time.sleep(0.3)
ready, _, _ = select.select(socks, [], [], 0)
closed = 0
for s in ready:
    try:
        if s.recv(1) == b"": closed += 1
    except OSError: closed += 1
print(closed)
"#;
    let holder = std::thread::spawn({
        let socket = socket.clone();
        move || python_as(4201, script, &[socket.to_str().expect("utf8")])
    });
    std::thread::sleep(Duration::from_millis(150));
    let (code, out, err) = airlockctl_as(None, &socket, &["--json", "whoami"]);
    assert_eq!(code, 0, "root while uid 4201 is at its cap: {out}{err}");
    let closed: u32 = holder
        .join()
        .expect("python")
        .trim()
        .parse()
        .expect("count");
    assert_eq!(
        closed, 2,
        "uid 4201's connections beyond 4 were not closed at once"
    );
}

#[test]
fn out_of_descriptors_the_accept_loops_back_off_and_recover() {
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "header_read_timeout = \"30s\"",
        "",
        &[],
    );
    let pid = server.pid();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    // Leave room for two more descriptors: the third connection cannot be accepted.
    let limit = (open_fds + 2).to_string();
    let set = |soft: &str| {
        let st = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
            .status()
            .expect("prlimit");
        assert!(st.success(), "prlimit");
    };
    set(&limit);
    let (mut tcp, mut unix) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        tcp.push(std::net::TcpStream::connect(&server.addr).expect("connect"));
        unix.extend(UnixStream::connect(&socket).ok());
    }
    let cpu0 = cpu_s(pid);
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_s(pid) - cpu0;
    assert!(cpu < 0.5, "the accept loops spun: {cpu:.2} s of CPU in 3 s");
    let failures = server
        .log()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        (1..=4).contains(&failures),
        "{failures} accept-failure warnings in 3 s (one per listener per 10 s expected)"
    );
    set("4096");
    drop((tcp, unix));
    airlock_tests::wait_until("health after descriptors came back", || {
        http(&server.addr, "GET", "/v2/health/ready", &[], b"").0 == 200
    });
    let (code, _, err) = airlockctl_as(None, &socket, &["--json", "whoami"]);
    assert_eq!(code, 0, "the socket after descriptors came back: {err}");
}

#[test]
fn scopes_follow_the_parsed_route_and_listings_follow_the_scopes() {
    let (server, socket, all) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "",
        "",
        &[],
    );
    let other = token(&socket, "model:other");
    let auth = |t: &str| format!("Bearer {t}");
    let body =
        br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;
    // /v2/models/stats/... is the route of a model named "stats": its scope is model:stats.
    for path in [
        "/v2/models/stats/infer",
        "/v2/models/stats/versions/1.0.0/infer",
        "/v2/models/stats/ready",
        "/v2/models/%73tats/infer",
    ] {
        let (status, _, b) = http(
            &server.addr,
            "POST",
            path,
            &[("Authorization", &auth(&other))],
            body,
        );
        let status = if path.ends_with("/ready") {
            http(
                &server.addr,
                "GET",
                path,
                &[("Authorization", &auth(&other))],
                b"",
            )
            .0
        } else {
            status
        };
        assert_eq!(status, 403, "{path}: {}", String::from_utf8_lossy(&b));
    }
    // The statistics of every model and the repository index show what the token covers.
    let (status, _, b) = http(
        &server.addr,
        "GET",
        "/v2/models/stats",
        &[("Authorization", &auth(&other))],
        b"",
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(v["model_stats"], serde_json::json!([]), "{v}");
    let (_, _, b) = http(
        &server.addr,
        "POST",
        "/v2/repository/index",
        &[("Authorization", &auth(&other))],
        b"{}",
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&b).expect("json"),
        serde_json::json!([])
    );
    let (_, _, b) = http(
        &server.addr,
        "GET",
        "/v2/models/stats",
        &[("Authorization", &auth(&all))],
        b"",
    );
    assert!(String::from_utf8_lossy(&b).contains("demo-iris"));
    // Request ids tell nothing about the daemon: not its PID, not a count.
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let (_, h, _) = http(&server.addr, "GET", "/v2/health/live", &[], b"");
            airlock_tests::header(&h, "x-request-id")
                .expect("id")
                .to_string()
        })
        .collect();
    let pid_hex = format!("{:x}", server.pid());
    for id in &ids {
        assert_eq!(id.len(), 16, "{id}");
        assert!(!id.starts_with(&pid_hex), "{id} carries the PID {pid_hex}");
    }
    let n: Vec<u64> = ids
        .iter()
        .map(|i| u64::from_str_radix(i, 16).expect("hex"))
        .collect();
    assert!(n[1] != n[0] + 1 || n[2] != n[1] + 1, "ids count: {ids:?}");
}

#[test]
fn answers_and_decoded_inputs_are_bounded_by_what_the_request_may_cost() {
    let (server, _socket, token) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "",
        "",
        &[],
    );
    let pid = server.pid();
    let auth = format!("Bearer {token}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let x = r#""inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]"#;
    let (status, _, _) = http(
        &server.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &h,
        format!("{{{x}}}").as_bytes(),
    );
    assert_eq!(status, 200);
    let (base_hwm, base_rss) = (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"));
    // A million requested outputs (15 MB) used to build a 526 MB answer.
    let many = vec![r#"{"name":"y"}"#; 1_000_000].join(",");
    let (status, _, b) = http(
        &server.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &h,
        format!("{{{x},\"outputs\":[{many}]}}").as_bytes(),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&b));
    assert!(b.len() < 1024, "the refusal is {} bytes", b.len());
    let (status, _, b) = http(
        &server.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &h,
        format!(r#"{{{x},"outputs":[{{"name":"y"}},{{"name":"y"}}]}}"#).as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&b).contains("requested twice"));
    // A shape that claims far more than the body carries is refused before anything is made.
    let huge = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[100000000000,4],"parameters":{"binary_data_size":16}}]}"#;
    let body = [huge.as_bytes(), &[0u8; 16]].concat();
    let len = huge.len().to_string();
    let (status, _, b) = http(
        &server.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &[
            ("Authorization", auth.as_str()),
            ("Inference-Header-Content-Length", &len),
        ],
        &body,
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&b));
    // 2 M-element FP32 "data" for a [1, 4] input: refused at the 5th element, not stored.
    let zeros = vec!["0"; 2_000_000].join(",");
    let (status, _, b) = http(
        &server.addr,
        "POST",
        "/v2/models/demo-iris/infer",
        &h,
        format!(
            r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,4],"data":[{zeros}]}}]}}"#
        )
        .as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&b).contains("holds more than the 4 elements"));
    let (hwm, rss) = (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"));
    assert!(
        hwm - base_hwm < 96 * 1024,
        "peak RSS grew by {} MiB",
        (hwm - base_hwm) / 1024
    );
    assert!(
        rss.saturating_sub(base_rss) < 48 * 1024,
        "RSS stayed {} MiB above where it was",
        rss.saturating_sub(base_rss) / 1024
    );
}

#[test]
fn strings_the_runtime_cannot_carry_are_the_clients_fault_and_never_roll_back() {
    use airlock_tests::{
        airlockctl_as, bootstrapped_dev_dir, install_dev_model, named_model_bundle,
    };
    let dir = bootstrapped_dev_dir();
    let dd = dir.path().join("airlock-dev");
    let model = airlock_signing::onnx::string_identity();
    install_dev_model(&dd, "echo", &model).expect("echo 1.0.0");
    let config = dir.path().join("dev.toml");
    std::fs::write(
        &config,
        "[lifecycle]\nauto_rollback_window = \"60s\"\nauto_rollback_error_rate = 0.2\nauto_rollback_min_requests = 5\n",
    )
    .expect("config");
    let args: Vec<String> = ["--dev", "--listen", "127.0.0.1:0", "--config"]
        .iter()
        .map(|s| s.to_string())
        .chain([config.display().to_string()])
        .collect();
    let server = airlock_tests::DevServer::spawn(dir, &args, &[]);
    let sock = dd.join("admin.sock");
    let b = named_model_bundle(&dd, "echo", "1.1.0", &model, false).expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &["bundle", "import", &b.display().to_string(), "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = airlockctl_as(None, &sock, &["model", "promote", "echo", "1.1.0"]);
    assert_eq!(code, 0, "{out}{err}");
    let infer = "/v2/models/echo/infer";
    let binary = |item: &[u8]| {
        let data = [(item.len() as u32).to_le_bytes().to_vec(), item.to_vec()].concat();
        let head = format!(
            r#"{{"inputs":[{{"name":"s","datatype":"BYTES","shape":[1],"parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"t","parameters":{{"binary_data":true}}}}]}}"#,
            data.len()
        );
        let len = head.len().to_string();
        http(
            &server.addr,
            "POST",
            infer,
            &[("Inference-Header-Content-Length", &len)],
            &[head.into_bytes(), data].concat(),
        )
    };
    for _ in 0..10 {
        for (item, why) in [(&b"a\0b"[..], "NUL byte"), (b"\xff\xfe", "not UTF-8")] {
            let (status, _, b) = binary(item);
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&b));
            assert!(String::from_utf8_lossy(&b).contains(why));
        }
        let (status, _, _) = http(
            &server.addr,
            "POST",
            infer,
            &[],
            br#"{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"data":["x\u0000y"]}]}"#,
        );
        assert_eq!(status, 400);
    }
    // Text goes through unchanged, both ways.
    let (status, h, b) = binary("héllo wörld".as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    let n: usize = airlock_tests::header(&h, "inference-header-content-length")
        .expect("binary answer")
        .parse()
        .expect("len");
    let text = "héllo wörld".as_bytes();
    let framed = [&(text.len() as u32).to_le_bytes()[..], text].concat();
    assert_eq!(&b[n..], framed.as_slice());
    let (_, _, b) = http(&server.addr, "GET", "/v2/models/echo/stats", &[], b"");
    let stats: serde_json::Value = serde_json::from_slice(&b).expect("stats");
    assert_eq!(
        stats["model_stats"][0]["version"], "1.1.0",
        "rolled back: {stats}"
    );
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["fail"]["count"], 0,
        "{stats}"
    );
    assert!(!server.log().contains("auto-rollback"), "{}", server.log());
}

fn approve_with(addr: &str, token: &str, version: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let (status, _, b) = http(
        addr,
        "POST",
        &format!("/api/v1/models/demo-iris/versions/{version}/approve"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    (status, String::from_utf8_lossy(&b).into_owned())
}

#[test]
fn a_failed_or_rejected_release_cannot_burn_the_anti_rollback_floor() {
    use airlock_tests::{iris_bundle, model_bundle, world_readable};
    let (server, socket, _) = production_server_with(
        &[
            ("uid:0", "admin"),
            ("uid:4301", "operator"),
            ("uid:4302", "approver"),
        ],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "",
        "",
        &[],
    );
    let dd = server.dir.path().join("airlock-dev");
    // A validly signed 99999.0.0 that ONNX Runtime cannot load: it fails validation.
    let hostile = model_bundle(
        &dd,
        "99999.0.0",
        &airlock_signing::onnx::unknown_op_model(),
        false,
    )
    .expect("bundle");
    let (code, out, err) = airlockctl_as(
        Some(4301),
        &socket,
        &["bundle", "import", &world_readable(&hostile), "--watch"],
    );
    assert_ne!(code, 0, "the hostile bundle validated: {out}{err}");
    // The next real release still comes in, and after approval it is the floor.
    let real = iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        Some(4301),
        &socket,
        &["bundle", "import", &world_readable(&real), "--watch"],
    );
    assert_eq!(
        code, 0,
        "a real release after a failed 99999.0.0: {out}{err}"
    );
    let (code, out, err) = airlockctl_as(
        Some(4302),
        &socket,
        &["bundle", "approve", "demo-iris", "1.1.0"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = airlockctl_as(None, &socket, &["--json", "models", "show", "demo-iris"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["anti_rollback_floor"], "1.1.0", "{v}");
    // Below the floor: refused.
    let old = iris_bundle(&dd, "1.0.5", 1.05, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        Some(4301),
        &socket,
        &["bundle", "import", &world_readable(&old), "--watch"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("anti-rollback"), "{err}");
}

#[test]
fn approvals_count_people_not_the_tokens_they_made() {
    use airlock_tests::{iris_bundle, world_readable};
    let (server, socket, _) = production_server_with(
        &[
            ("uid:0", "admin"),
            ("uid:4301", "operator"),
            ("uid:4302", "approver"),
        ],
        "mode = \"approvers\"\napprovers = 2",
        "",
        "",
        "",
        &[],
    );
    let dd = server.dir.path().join("airlock-dev");
    let (t1, t2) = (
        token(&socket, "admin:approver"),
        token(&socket, "admin:approver"),
    );
    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        Some(4301),
        &socket,
        &["bundle", "import", &world_readable(&b), "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (status, body) = approve_with(&server.addr, &t1, "1.1.0");
    assert_eq!(status, 200, "{body}");
    // root's second token is root again.
    let (status, body) = approve_with(&server.addr, &t2, "1.1.0");
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("duplicate_approval") && body.contains("a token of uid:0(root)"),
        "{body}"
    );
    let (code, _, err) = airlockctl_as(None, &socket, &["bundle", "approve", "demo-iris", "1.1.0"]);
    assert_ne!(code, 0, "root approved again in person");
    assert!(
        err.contains("already approved") || err.contains("duplicate"),
        "{err}"
    );
    // A second person completes it.
    let (code, out, err) = airlockctl_as(
        Some(4302),
        &socket,
        &["bundle", "approve", "demo-iris", "1.1.0"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved"), "{out}");
    // The importer's own tokens are the importer: an admin who imports cannot approve with them.
    let b = iris_bundle(&dd, "1.2.0", 1.2, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &b.display().to_string(), "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (status, body) = approve_with(&server.addr, &t1, "1.2.0");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("self_approval"), "{body}");
}

#[test]
fn the_daemon_opens_no_path_for_a_caller_and_echoes_no_unverified_name() {
    use airlock_tests::fixtures::{compress, tar_bytes, RawEntry};
    use std::os::unix::fs::PermissionsExt;
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin"), ("uid:4301", "operator")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "",
        "",
        &[],
    );
    let dir = server.dir.path();
    // A root-only "bundle" whose first entry name is a secret, a FIFO, a symlink to it.
    let secret = dir.join("secret.tar.zst");
    let tar = tar_bytes(&[RawEntry::file("DB_PASSWORD=hunter2-prod", b"x".to_vec())]);
    std::fs::write(&secret, compress(&tar, 3)).expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let fifo = dir.join("fifo.airlock");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let link = dir.join("link.airlock");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    let operator = token(&socket, "admin:operator");
    let paths = [
        secret.display().to_string(),
        "/etc/shadow".into(),
        "/nonexistent/x.airlock".into(),
        "/etc".into(),
        fifo.display().to_string(),
        link.display().to_string(),
        "relative.airlock".into(),
    ];
    let mut answers = std::collections::BTreeSet::new();
    for p in &paths {
        let body = serde_json::json!({ "path": p }).to_string();
        // The operator uid on the socket, and an operator token over TCP.
        let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(20)
b = sys.argv[2].encode()
s.sendall(b"POST /api/v1/bundles/import HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
out = b""
while True:
    d = s.recv(65536)
    if not d: break
    out += d
print(out.split(b"\r\n\r\n", 1)[1].decode())
"#;
        let out = python_as(4301, script, &[socket.to_str().expect("utf8"), &body]);
        answers.insert(out.trim().to_string());
        let auth = format!("Bearer {operator}");
        let (status, _, b) = http(
            &server.addr,
            "POST",
            "/api/v1/bundles/import",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(status, 403, "{p}: {}", String::from_utf8_lossy(&b));
        answers.insert(String::from_utf8_lossy(&b).trim().to_string());
    }
    assert_eq!(
        answers.len(),
        1,
        "the answers tell paths apart: {answers:?}"
    );
    assert!(
        answers.iter().all(|a| a.contains("not_offered")),
        "{answers:?}"
    );
    // Streamed by the caller, the caller's permissions apply: uid 4301 cannot read it.
    let (code, _, err) = airlockctl_as(
        Some(4301),
        &socket,
        &["bundle", "import", &secret.display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    let (code, _, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &fifo.display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not a regular file"), "{err}");
    // Root streams it: refused, and the refusal names no byte of the entry name.
    let (code, out, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &secret.display().to_string()],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("manifest.json") && err.contains("24 bytes"),
        "{err}"
    );
    let (_, audit, _) = airlockctl_as(
        None,
        &socket,
        &["--json", "audit", "list", "--limit", "1000"],
    );
    for text in [&err, &out, &audit, &server.log()] {
        assert!(!text.contains("hunter2"), "the secret leaked: {text}");
    }
}

/// A bundle signed with `issued_at` at `issued`, valid for a year after it.
fn future_bundle(
    data_dir: &std::path::Path,
    version: &str,
    issued: time::OffsetDateTime,
) -> std::path::PathBuf {
    let root = data_dir
        .parent()
        .expect("dir")
        .join("bundles")
        .join(format!("future-{version}"));
    std::fs::create_dir_all(&root).expect("dir");
    let model = airlock_signing::onnx::linear_classifier(&[0.0; 12], &[1.0, 0.0, 0.0]);
    std::fs::write(root.join("model.onnx"), model).expect("model");
    airlock_tests::dev_signed_bundle(data_dir, "demo-iris", version, &root, |opts| {
        opts.issued_at = issued;
        opts.expires_at = issued + time::Duration::days(365);
    })
    .expect("bundle")
}

#[test]
fn signed_time_cannot_push_the_clock_ahead_and_a_clock_that_ran_ahead_can_be_reset() {
    use airlock_tests::{iris_bundle, restart_production};
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "",
        "",
        &[],
    );
    let dd = server.dir.path().join("airlock-dev");
    let floor = |socket: &std::path::Path| {
        let (_, out, _) = airlockctl_as(None, socket, &["--json", "time", "show"]);
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    let before = floor(&socket);
    // Validly signed, issued in 2035: refused, and the floor does not move.
    let b = future_bundle(&dd, "2.0.0", time::macros::datetime!(2035-01-01 0:00 UTC));
    let (code, _, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &b.display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("issued_in_the_future") || err.contains("later than this appliance accepts"),
        "{err}"
    );
    let after = floor(&socket);
    assert_eq!(
        before["floor"].as_str().map(|f| &f[..4]),
        after["floor"].as_str().map(|f| &f[..4]),
        "{after}"
    );
    assert!(after["clock_behind_floor_s"].is_null(), "{after}");
    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let (code, out, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &b.display().to_string()],
    );
    assert_eq!(code, 0, "a normal bundle after the future one: {out}{err}");
    // The appliance's clock ran 20 years ahead for one boot (a bad RTC), then was corrected.
    let dir = server.kill();
    {
        let config = airlock_config::load(&dir.path().join("prod.toml")).expect("config");
        let u = airlock_updater::Updater::open(&config).expect("open");
        u.registry()
            .trusted_now(time::OffsetDateTime::now_utc() + time::Duration::days(20 * 365))
            .expect("floor");
    }
    let server = restart_production(dir, &[]);
    let t = floor(&socket);
    assert!(
        t["clock_behind_floor_s"].as_i64().unwrap_or(0) > 19 * 365 * 86400,
        "{t}"
    );
    let b = iris_bundle(&dd, "1.2.0", 1.2, 0.0).expect("bundle");
    let (code, _, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &b.display().to_string()],
    );
    assert_ne!(code, 0, "imports are judged at the floor until it is reset");
    assert!(err.contains("expired"), "{err}");
    assert!(server.log().contains("time floor"), "the daemon says why");
    // An admin acknowledges the clock; the floor comes back, audited.
    let (code, out, err) = airlockctl_as(None, &socket, &["time", "reset-floor"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(floor(&socket)["clock_behind_floor_s"].is_null());
    let (code, out, err) = airlockctl_as(
        None,
        &socket,
        &["bundle", "import", &b.display().to_string()],
    );
    assert_eq!(code, 0, "after the reset: {out}{err}");
    let (_, audit, _) = airlockctl_as(
        None,
        &socket,
        &["--json", "audit", "list", "--limit", "1000"],
    );
    assert!(audit.contains("time_floor_reset"), "{audit}");
}

#[test]
fn validating_hostile_model_code_is_bounded_and_stops_when_rejected() {
    use airlock_signing::onnx::{endless_loop, memory_hog};
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin"), ("uid:4302", "approver")],
        "mode = \"approvers\"\napprovers = 1",
        "[lifecycle]\nvalidation_timeout = \"4s\"\nvalidation_memory = \"512MiB\"\n",
        "",
        "",
        &[],
    );
    let dd = server.dir.path().join("airlock-dev");
    let import_to = |dd: &std::path::Path,
                     socket: &std::path::Path,
                     version: &str,
                     model: &[u8],
                     watch: bool| {
        let b = vector_bundle(dd, version, model);
        let mut args = vec![
            "bundle".to_string(),
            "import".into(),
            b.display().to_string(),
        ];
        if watch {
            args.push("--watch".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        airlockctl_as(None, socket, &args)
    };
    let import =
        |version: &str, model: &[u8], watch: bool| import_to(&dd, &socket, version, model, watch);
    // A Loop of 10^12 trips, rejected while it validates: the run stops at once.
    let (code, out, err) = import("1.1.0", &endless_loop(1_000_000_000_000), false);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (code, out, err) = airlockctl_as(
        Some(4302),
        &socket,
        &[
            "bundle",
            "reject",
            "demo-iris",
            "1.1.0",
            "--reason",
            "never finishes",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    while !server.log().contains("rejected while it ran") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the validation did not stop on the rejection: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "stopping took {:?}",
        start.elapsed()
    );
    // The same model left alone: stopped at validation_timeout, and the validation fails.
    let start = Instant::now();
    let (code, out, err) = import("1.2.0", &endless_loop(1_000_000_000_000), true);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("ran longer than 4 s"), "{out}{err}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // No worker is left behind, and the daemon still serves.
    let no_worker_and_serving = |server: &airlock_tests::DevServer| {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.pid()))
                .unwrap_or_default();
        assert!(children.trim().is_empty(), "workers left: {children}");
        assert_eq!(
            http(&server.addr, "GET", "/v2/health/ready", &[], b"").0,
            200
        );
    };
    no_worker_and_serving(&server);
    assert!(server.stop());
    // A model whose run takes 2 GiB: stopped at validation_memory. On an appliance whose
    // timeout a slow, loaded CPU cannot reach while the worker faults its memory in (with the
    // 4 s above and two busy processes beside the suite, the timeout came first).
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "[lifecycle]\nvalidation_timeout = \"120s\"\nvalidation_memory = \"512MiB\"\n",
        "",
        "",
        &[],
    );
    let dd = server.dir.path().join("airlock-dev");
    let (code, out, err) = import_to(&dd, &socket, "1.3.0", &memory_hog(1 << 27), true);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("more than 512 MiB"), "{out}{err}");
    no_worker_and_serving(&server);
}

/// A signed demo-iris bundle around `model` (x float32[1, 4] in) with one golden vector whose
/// expected output is x itself: validation must run the model to judge it.
fn vector_bundle(data_dir: &std::path::Path, version: &str, model: &[u8]) -> std::path::PathBuf {
    use airlock_signing::manifest::DType;
    let root = data_dir
        .parent()
        .expect("dir")
        .join("bundles")
        .join(format!("vec-{version}"));
    std::fs::create_dir_all(root.join("vectors/case-1/inputs")).expect("dir");
    std::fs::create_dir_all(root.join("vectors/case-1/expected")).expect("dir");
    std::fs::write(root.join("model.onnx"), model).expect("model");
    let x: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let npy = airlock_signing::npy::encode(DType::Float32, 0, &[1, 4], &x).expect("npy");
    std::fs::write(root.join("vectors/case-1/inputs/x.npy"), &npy).expect("x");
    std::fs::write(root.join("vectors/case-1/expected/y.npy"), &npy).expect("y");
    airlock_tests::dev_signed_bundle(data_dir, "demo-iris", version, &root, |_| {}).expect("bundle")
}

#[test]
fn stalled_uploads_free_the_import_slot_and_refusals_cannot_grow_the_audit_log_without_bound() {
    use std::os::unix::fs::PermissionsExt;
    let (server, socket, _) = production_server_with(
        &[("uid:0", "admin")],
        "mode = \"approvers\"\napprovers = 1",
        "",
        "body_timeout = \"1s\"",
        "",
        &[],
    );
    // An upload that promises 10 MB and stops after 1 KiB holds the one import slot only until
    // its body stalls.
    let mut stalled = UnixStream::connect(&socket).expect("socket");
    stalled
        .write_all(b"POST /api/v1/bundles HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .and_then(|()| stalled.write_all(&[0x28; 1024]))
        .expect("write");
    std::thread::sleep(Duration::from_millis(200));
    let dd = server.dir.path().join("airlock-dev");
    let b = airlock_tests::iris_bundle(&dd, "1.1.0", 1.1, 0.0).expect("bundle");
    let start = Instant::now();
    loop {
        let (code, out, err) = airlockctl_as(
            None,
            &socket,
            &["bundle", "import", &b.display().to_string()],
        );
        if code == 0 {
            break;
        }
        assert!(err.contains("another import is running"), "{out}{err}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slot stayed taken: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stalled);
    // 40 refused imports: at most 10 audit records for them.
    let junk = server.dir.path().join("junk.airlock");
    std::fs::write(&junk, b"not a bundle at all").expect("junk");
    for _ in 0..40 {
        let (code, _, _) = airlockctl_as(
            None,
            &socket,
            &["bundle", "import", &junk.display().to_string()],
        );
        assert_ne!(code, 0);
    }
    let (_, audit, _) = airlockctl_as(
        None,
        &socket,
        &["--json", "audit", "list", "--limit", "10000"],
    );
    let n = audit.matches("\"import_refused\"").count();
    assert!((1..=10).contains(&n), "{n} refusal records for 40 refusals");
    // airlockctl into a pipe that is already closed (`| head`): no panic, SIGPIPE's status.
    let mut child = std::process::Command::new(airlock_tests::bin("airlockctl"))
        .arg("--socket")
        .arg(&socket)
        .args(["audit", "list", "--limit", "10000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("airlockctl");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
    // What the daemon writes is not world-readable: logs, the data directory.
    let logs = server.dir.path().join("logs");
    for entry in std::fs::read_dir(&logs).expect("logs") {
        let p = entry.expect("entry").path();
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{} is mode {mode:o}", p.display());
    }
    let mode = std::fs::metadata(&logs).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "logs/ is mode {mode:o}");
}

#[test]
fn a_fresh_dev_appliance_keeps_its_directory_and_logs_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(airlock_tests::bin("airlockd"))
        .args(["--dev", "--once"])
        .current_dir(dir.path())
        .output()
        .expect("airlockd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dd = dir.path().join("airlock-dev");
    for p in [dd.clone(), dd.join("logs"), dd.join("logs/airlockd.log")] {
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{} is mode {mode:o}", p.display());
    }
}
