//! Production mode's bearer tokens: created and revoked with `airlockctl` over the admin Unix
//! socket (peer uid checked), stored hashed, scoped to models and `metrics`, revocable at once;
//! health stays open; refusals reveal nothing; no token reaches logs, metrics or error bodies.

use std::process::Command;

use airlock_tests::{bin, http, DevServer};
use serde_json::Value;

fn uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("proc"))
}

fn ctl(socket: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("airlockctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("airlockctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A production-mode daemon over a data dir that `--dev --once` bootstrapped (demo model active).
fn production(admins: &[u32], tls: bool) -> (DevServer, String) {
    let dir = airlock_tests::bootstrapped_dev_dir();
    let d = dir.path().display().to_string();
    let socket = format!("{d}/run/admin.sock");
    let roles: String = admins
        .iter()
        .map(|u| format!("\"uid:{u}\" = \"admin\"\n"))
        .collect();
    let config = format!(
        "[paths]\ndata_dir = \"{d}/airlock-dev\"\ninitial_trust_root = \"{d}/airlock-dev/dev/root.json\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\ntls = {tls}\n[grpc]\nlisten = \"127.0.0.1:0\"\n[logging]\ndir = \"{d}/logs\"\n\
         [daemon]\nallow_root = true\n[admin]\nsocket = \"{socket}\"\n[admin.roles]\n{roles}"
    );
    std::fs::write(dir.path().join("prod.toml"), config).expect("config");
    let args = vec!["--config".to_string(), format!("{d}/prod.toml")];
    (DevServer::spawn(dir, &args, &[]), socket)
}

fn infer_body() -> Vec<u8> {
    br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#
        .to_vec()
}

#[test]
fn tokens_scopes_revocation_and_no_leaks() {
    let (s, socket) = production(&[uid()], false);
    let infer = "/v2/models/demo-iris/infer";
    // Health is open; everything else needs a token.
    assert_eq!(http(&s.addr, "GET", "/v2/health/ready", &[], b"").0, 200);
    let (code, h, body) = http(&s.addr, "POST", infer, &[], &infer_body());
    assert_eq!(code, 401);
    assert!(h
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v == "Bearer"));
    assert!(String::from_utf8_lossy(&body).contains("a valid bearer token is required"));
    assert_eq!(http(&s.addr, "GET", "/v2", &[], b"").0, 401);
    assert_eq!(http(&s.addr, "GET", "/metrics", &[], b"").0, 401);

    // airlockctl creates a model-scoped token; it is shown once.
    let token = create_token(&socket, "ci", "model:demo-iris");
    let (code, out, _) = ctl(&socket, &["--json", "token", "list"]);
    assert_eq!(code, 0);
    assert!(!out.contains(&token[20..]), "list never shows secrets");
    let listed: Value = serde_json::from_str(&out).expect("json");
    let id = listed["tokens"][0]["id"].as_str().expect("id").to_string();

    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    assert_eq!(http(&s.addr, "POST", infer, &auth, &infer_body()).0, 200);
    assert_eq!(
        http(&s.addr, "GET", "/v2/models/demo-iris", &auth, b"").0,
        200
    );
    // Out of scope: another model's path, and /metrics.
    let (code, _, body) = http(&s.addr, "GET", "/metrics", &auth, b"");
    assert_eq!(code, 403);
    assert!(String::from_utf8_lossy(&body).contains("does not grant access"));
    assert_eq!(
        http(
            &s.addr,
            "POST",
            "/v2/models/other/infer",
            &auth,
            &infer_body()
        )
        .0,
        403
    );
    // A wrong secret with a real id looks exactly like garbage.
    let forged = format!("Bearer {}{}", &token[..20], "0".repeat(64));
    let (c1, _, b1) = http(
        &s.addr,
        "POST",
        infer,
        &[("Authorization", forged.as_str())],
        &infer_body(),
    );
    let (c2, _, b2) = http(
        &s.addr,
        "POST",
        infer,
        &[("Authorization", "Bearer nonsense")],
        &infer_body(),
    );
    assert_eq!(
        (c1, &b1),
        (c2, &b2),
        "refusals reveal nothing about the token"
    );

    // A metrics token reads /metrics; the metrics never contain a token.
    let mtoken = create_token(&socket, "prometheus", "metrics");
    let mbearer = format!("Bearer {mtoken}");
    let (code, _, metrics) = http(
        &s.addr,
        "GET",
        "/metrics",
        &[("Authorization", mbearer.as_str())],
        b"",
    );
    assert_eq!(code, 200);
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(metrics.contains("airlock_inference_requests_total"));

    // Revocation takes effect at once.
    let (code, out, err) = ctl(&socket, &["token", "revoke", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(http(&s.addr, "POST", infer, &auth, &infer_body()).0, 401);
    let (code, _, err) = ctl(&socket, &["token", "revoke", "ffffffffffffffff"]);
    assert_eq!(code, 1);
    assert!(err.contains("no token with id"), "{err}");

    // No token anywhere: logs (stderr and JSON files), metrics, the audit log.
    let logs = std::fs::read_dir(s.dir.path().join("logs"))
        .expect("logs")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default())
        .collect::<String>();
    for t in [&token, &mtoken] {
        let secret = &t[20..];
        assert!(
            !s.log().contains(secret) && !logs.contains(secret) && !metrics.contains(secret),
            "a token leaked"
        );
    }
    let db = std::fs::read_dir(s.dir.path().join("airlock-dev/state"))
        .expect("state")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .flatten()
        .collect::<Vec<u8>>();
    assert!(
        !String::from_utf8_lossy(&db).contains(&token[20..]),
        "the state store holds only hashes"
    );
    assert!(s.stop(), "clean exit");
}

#[test]
fn the_admin_socket_checks_the_peer_uid() {
    let (s, socket) = production(&[u32::MAX - 1], false);
    let (code, _, err) = ctl(
        &socket,
        &["token", "create", "--name", "x", "--scope", "metrics"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("(no role) may not create tokens: that needs the admin role"),
        "{err}"
    );
    let (code, _, err) = ctl("/nonexistent/admin.sock", &["token", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
    drop(s);
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (installed by scripts/setup.sh)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `curl --cacert CA URL`: (exit code, HTTP status).
fn https_status(ca: &std::path::Path, url: &str) -> (i32, String) {
    curl(&[
        "--cacert",
        ca.to_str().expect("path"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ])
}

/// Waits (from `start`, up to `secs`) until the daemon has logged `text`.
fn wait_for_log(s: &DevServer, text: &str, start: std::time::Instant, secs: u64) {
    while !s.log().contains(text) {
        assert!(
            start.elapsed().as_secs() < secs,
            "{text:?} was never logged: {}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A new self-signed P-256 pair for localhost (valid 2 days) at `key` and `cert`.
fn new_pair(key: &std::path::Path, cert: &std::path::Path) {
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl (installed by scripts/setup.sh)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn production_serves_tls_and_reloads_the_certificate_on_sighup() {
    let (s, socket) = production(&[uid()], true);
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    let data = s.dir.path().join("airlock-dev/tls");
    let url = format!("https://localhost:{port}/v2/health/ready");
    // The generated certificate verifies for localhost; plain HTTP gets no answer.
    assert_eq!(
        https_status(&data.join("cert.pem"), &url),
        (0, "200".to_string())
    );
    let (code, _) = curl(&[
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/v2/health/ready"),
    ]);
    assert_ne!(code, 0, "plain HTTP must not be served on a TLS listener");
    assert!(
        !s.log().contains("PRIVATE KEY"),
        "the key never reaches the log"
    );
    // gRPC serves the same certificate (ALPN h2).
    crate::grpc::grpc_tls_ok(&s, &data.join("cert.pem"));
    // A new certificate, then SIGHUP: new handshakes get it; the daemon keeps serving.
    new_pair(&data.join("key.pem"), &data.join("cert2.pem"));
    // A client holds a keep-alive connection across the reload.
    let mut held = Command::new(airlock_tests::venv_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/tls_keepalive.py"
        ))
        .args(["127.0.0.1", &port, "/v2/health/ready"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut to_client = held.stdin.take().expect("stdin");
    let mut from_client =
        std::io::BufRead::lines(std::io::BufReader::new(held.stdout.take().expect("stdout")));
    let mut ask = |cmd: &str| -> String {
        use std::io::Write;
        writeln!(to_client, "{cmd}").expect("write");
        from_client.next().expect("answer").expect("line")
    };
    let before = ask("held");
    assert!(before.starts_with("200 "), "{before}");
    std::fs::copy(data.join("cert2.pem"), data.join("cert.pem")).expect("replace");
    let pid = s.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    let start = std::time::Instant::now();
    wait_for_log(&s, "TLS certificate reloaded", start, 10);
    assert_eq!(
        https_status(&data.join("cert2.pem"), &url),
        (0, "200".to_string()),
        "the new certificate is served"
    );
    crate::grpc::grpc_tls_ok(&s, &data.join("cert2.pem"));
    // The held connection finishes on the old certificate; a new handshake sees the new one.
    let again = ask("held");
    assert_eq!(
        again, before,
        "the held connection keeps working, on its certificate"
    );
    let fresh = ask("fresh");
    assert!(
        fresh.starts_with("200 ") && fresh != before,
        "{fresh} vs {before}"
    );
    let _ = held.kill();
    let _ = held.wait();
    // A broken certificate file on reload keeps the current one.
    std::fs::write(data.join("cert.pem"), b"not a certificate").expect("w");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    wait_for_log(&s, "TLS reload failed", start, 20);
    assert_eq!(
        https_status(&data.join("cert2.pem"), &url),
        (0, "200".to_string()),
        "still serving with the previous certificate"
    );
    drop(socket);
}

/// A rotated token: the new secret works, the previous one keeps working for the overlap window
/// (so clients in flight are not cut off), and revocation ends both at once.
#[test]
fn a_rotated_token_overlaps_and_revocation_ends_both() {
    let (s, socket) = production(&[uid()], false);
    let infer = "/v2/models/demo-iris/infer";
    let token_of = |out: &str| -> String {
        serde_json::from_str::<Value>(out).expect("json")["token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let (code, out, err) = ctl(
        &socket,
        &[
            "--json", "token", "create", "--name", "line-3", "--scope", "model:*",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let old = token_of(&out);
    let id = old[3..19].to_string();
    let status = |t: &str| {
        let auth = format!("Bearer {t}");
        http(
            &s.addr,
            "POST",
            infer,
            &[("Authorization", &auth)],
            &infer_body(),
        )
        .0
    };
    assert_eq!(status(&old), 200);
    let (code, out, err) = ctl(&socket, &["--json", "token", "rotate", &id]);
    assert_eq!(code, 0, "{err}");
    let new = token_of(&out);
    assert_ne!(new, old);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["previous_valid_for_s"],
        300
    );
    assert_eq!(status(&new), 200, "the new secret works");
    assert_eq!(
        status(&old),
        200,
        "the previous secret works during the overlap"
    );
    let (code, _, err) = ctl(&socket, &["token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(&new), 401, "revoked: the new secret stops at once");
    assert_eq!(
        status(&old),
        401,
        "revoked: the previous secret stops at once"
    );
    let (code, _, err) = ctl(&socket, &["token", "rotate", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("revoked"), "{err}");
    let log = s.log();
    assert!(
        !log.contains(&old[20..]) && !log.contains(&new[20..]),
        "no secret in the log"
    );
    assert!(s.stop());
}

/// A reload applies the checks of start-up: a certificate that does not match the key, or a
/// key that is a symbolic link, is refused and the running pair stays; the generated
/// certificate lives two years, not until the year 4096.
#[test]
fn a_tls_reload_that_would_break_tls_keeps_the_running_pair() {
    let (s, _socket) = production(&[uid()], true);
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    let data = s.dir.path().join("airlock-dev/tls");
    let url = format!("https://localhost:{port}/v2/health/ready");
    let original = s.dir.path().join("original-cert.pem");
    std::fs::copy(data.join("cert.pem"), &original).expect("copy");
    let checkend = |secs: u64| {
        Command::new("openssl")
            .args(["x509", "-noout", "-checkend", &secs.to_string(), "-in"])
            .arg(&original)
            .status()
            .expect("openssl")
            .success()
    };
    assert!(
        checkend(728 * 86400),
        "the generated certificate expires within 728 days"
    );
    assert!(
        !checkend(732 * 86400),
        "the generated certificate outlives two years"
    );
    // Another pair's certificate over ours: the key no longer matches.
    let other = s.dir.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    new_pair(&other.join("key.pem"), &other.join("cert.pem"));
    std::fs::copy(other.join("cert.pem"), data.join("cert.pem")).expect("replace");
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &s.pid().to_string()])
            .status()
            .expect("kill")
            .success())
    };
    let start = std::time::Instant::now();
    hup();
    wait_for_log(&s, "does not belong to the certificate", start, 20);
    wait_for_log(&s, "reload done", start, 20);
    assert!(!s.log().contains("TLS certificate reloaded"), "{}", s.log());
    assert_eq!(
        https_status(&original, &url),
        (0, "200".to_string()),
        "TLS went down"
    );
    // Our certificate back, and the key a symbolic link to a private copy: refused too.
    std::fs::copy(&original, data.join("cert.pem")).expect("restore");
    let key_copy = s.dir.path().join("key-copy.pem");
    std::fs::copy(data.join("key.pem"), &key_copy).expect("copy key");
    std::fs::remove_file(data.join("key.pem")).expect("rm");
    std::os::unix::fs::symlink(&key_copy, data.join("key.pem")).expect("symlink");
    let start = std::time::Instant::now();
    hup();
    wait_for_log(&s, "is not a regular file", start, 20);
    assert_eq!(
        https_status(&original, &url),
        (0, "200".to_string()),
        "TLS went down"
    );
}

/// `airlockctl` from another machine: over HTTPS with a token file, trusting the appliance's
/// certificate by CA file or by fingerprint; the token's `admin:ROLE` decides, as on the socket.
#[test]
fn airlockctl_over_https_with_a_token() {
    use std::os::unix::fs::PermissionsExt;
    let (s, socket) = production(&[uid()], true);
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    let url = format!("https://localhost:{port}");
    let cert = s.dir.path().join("airlock-dev/tls/cert.pem");
    let cert = cert.to_str().expect("utf-8");
    let token = create_token(&socket, "remote", "admin:viewer");
    let file = s.dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).expect("token file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let file = file.to_str().expect("utf-8").to_string();
    let remote = |extra: &[&str], args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "--token-file", file.as_str()];
        all.extend_from_slice(extra);
        all.extend_from_slice(args);
        ctl("/nonexistent/admin.sock", &all)
    };

    // Who we are is the token; reading is a viewer's right.
    let (code, out, err) = remote(&["--ca", cert], &["whoami"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("token:") && out.contains("viewer"), "{out}");
    let (code, out, err) = remote(&["--ca", cert], &["--json", "models", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["models"][0]["name"], "demo-iris", "{v}");
    // Writing is not: refused by airlockd (exit 1) with its reason.
    let (code, out, err) = remote(
        &["--ca", cert],
        &["token", "create", "--name", "x", "--scope", "metrics"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("refused (403)"), "{err}");

    // Pinned by fingerprint (as airlockd logs it): the right one works, another is refused
    // before any request is sent.
    let log = s.log();
    let fp = log
        .split("sha256=")
        .nth(1)
        .and_then(|t| t.get(..64))
        .expect("the fingerprint is logged")
        .to_string();
    let (code, out, err) = remote(&["--fingerprint", &fp], &["whoami"]);
    assert_eq!(code, 0, "{out}{err}");
    let wrong = "00".repeat(32);
    let (code, _, err) = remote(&["--fingerprint", &wrong], &["whoami"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not the fingerprint given"), "{err}");

    // A token file others may read, a missing trust anchor, or plain http: refused here.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = remote(&["--ca", cert], &["whoami"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600") && !err.contains(&token), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, _, err) = remote(&[], &["whoami"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca"), "{err}");
    let (code, _, err) = ctl(
        "/nonexistent/admin.sock",
        &[
            "--url",
            &format!("http://localhost:{port}"),
            "--token-file",
            &file,
            "whoami",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https://"), "{err}");
    // The secret never reaches airlockd's log.
    assert!(!s.log().contains(&token));
}

/// Creates a token with one scope through airlockctl on `socket` and returns its secret (the
/// one line of the answer that starts with `al_`; it is shown only then).
fn create_token(socket: &str, name: &str, scope: &str) -> String {
    let (code, out, err) = ctl(
        socket,
        &["token", "create", "--name", name, "--scope", scope],
    );
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find(|l| l.starts_with("al_"))
        .expect("the token line")
        .to_string()
}
