//! The daemon under systemd's notify protocol: `NOTIFY_SOCKET` points at a datagram socket this
//! test reads, and the order READY → WATCHDOG → RELOADING → READY → STOPPING is asserted, with
//! the STATUS line an operator sees in `systemctl status`. And a stop under load: requests in
//! flight complete, new connections are refused, the exit is bounded by the shutdown timeout.

// In tests a panic is the failure report; unwrapping is the assertion.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_tests::{iris_infer, DevServer};

fn wait_for(msgs: &Mutex<Vec<String>>, what: &str, n: usize, log: impl Fn() -> String) {
    let start = Instant::now();
    while msgs
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains(what))
        .count()
        < n
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {what} (×{n}) in {:?}\n{}",
            msgs.lock().unwrap(),
            log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn notify_protocol_ready_watchdog_reload_stopping_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let msgs = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let msgs = msgs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                msgs.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
    }
    let p = path.display().to_string();
    let s = DevServer::start(None, &[("NOTIFY_SOCKET", &p), ("WATCHDOG_USEC", "300000")]);
    let log = || String::new();
    wait_for(&msgs, "READY=1", 1, log);
    let ready = msgs
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.contains("READY=1"))
        .cloned()
        .unwrap();
    assert!(ready.contains(&format!("MAINPID={}", s.pid())), "{ready}");
    assert!(
        ready.contains("STATUS=serving 1 model, 0 bundles awaiting approval"),
        "{ready}"
    );
    // Serving answers once READY=1 was sent.
    assert_eq!(iris_infer(&s.addr, "").0, 200);
    wait_for(&msgs, "WATCHDOG=1", 2, log);
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    wait_for(&msgs, "RELOADING=1", 1, log);
    wait_for(&msgs, "READY=1", 2, log);
    let pid = s.pid();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    wait_for(&msgs, "STOPPING=1", 1, log);
    let all = msgs.lock().unwrap().clone();
    let first = |what: &str, from: usize| {
        all.iter()
            .skip(from)
            .position(|m| m.contains(what))
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("{what} after {from} in {all:?}"))
    };
    let ready1 = first("READY=1", 0);
    let dog = first("WATCHDOG=1", ready1);
    let reload = first("RELOADING=1", dog);
    assert!(all[reload].contains("MONOTONIC_USEC="), "{}", all[reload]);
    let ready2 = first("READY=1", reload);
    let stop = first("STOPPING=1", ready2);
    assert!(all[stop].contains("STATUS=stopping"), "{}", all[stop]);
    assert!(s.stop(), "clean exit");
}

/// SIGTERM while requests run: they complete; new connections are refused; the daemon exits.
#[test]
fn sigterm_under_load_finishes_requests_in_flight_and_exits() {
    // Every run takes 700 ms (debug-build fault point), so requests are in flight at the stop.
    let s = DevServer::start(
        Some("[server]\nshutdown_timeout = \"10s\"\n"),
        &[("AIRLOCK_FAULT_RUN_DELAY_MS", "700")],
    );
    let addr = s.addr.clone();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || iris_infer(&addr, ""))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no new connections once stopping"
    );
    for c in clients {
        let (status, version, _) = c.join().unwrap();
        assert_eq!(
            (status, version.as_str()),
            (200, "1.0.0"),
            "the request in flight completed"
        );
    }
    assert!(s.stop(), "clean exit");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "exit within the shutdown timeout"
    );
}

/// SIGHUP re-reads the configuration: an invalid file is reported with its key and changes
/// nothing (serving goes on); `[logging] level` and `[lifecycle]` apply live; other changed
/// sections are named as needing a restart.
#[test]
fn sighup_reloads_the_configuration_live_where_it_can() {
    let (s, _, token) =
        airlock_tests::production_server(&[("uid:0", "admin")], "mode = \"approvers\"", "", &[]);
    let file = s.dir.path().join("prod.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &s.pid().to_string()])
            .status()
            .unwrap();
    };
    let wait = |what: &str, n: usize| {
        let start = Instant::now();
        while s.log().matches(what).count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {what}: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Invalid: named, nothing changes.
    std::fs::write(
        &file,
        format!("{good}\n[lifecycle]\ndrain_timout = \"5s\"\n"),
    )
    .unwrap();
    hup();
    wait("configuration not reloaded", 1);
    assert!(
        s.log().contains("drain_timout"),
        "the bad key is named: {}",
        s.log()
    );
    assert_eq!(iris_infer(&s.addr, &token).0, 200, "still serving");
    // Live: the log level and [lifecycle].
    assert!(
        !s.log().contains("authenticated"),
        "debug lines are off at first"
    );
    let live = good.replace("[logging]\n", "[logging]\nlevel = \"debug\"\n");
    assert_ne!(live, good);
    std::fs::write(
        &file,
        format!("{live}\n[lifecycle]\ndrain_timeout = \"5s\"\n"),
    )
    .unwrap();
    hup();
    wait("configuration reloaded", 1);
    assert!(
        s.log().contains("[logging] level, [lifecycle]"),
        "{}",
        s.log()
    );
    assert_eq!(iris_infer(&s.addr, &token).0, 200);
    // A debug line: the new level is in force.
    wait("authenticated", 1);
    // Not live: named as needing a restart.
    let restart = live.replace(
        "tls = false\n",
        "tls = false\nheader_read_timeout = \"7s\"\n",
    );
    assert_ne!(restart, live);
    std::fs::write(
        &file,
        format!("{restart}\n[lifecycle]\ndrain_timeout = \"5s\"\n"),
    )
    .unwrap();
    hup();
    wait("configuration changed", 1);
    assert!(s.log().contains("sections=[server]"), "{}", s.log());
    assert!(s.stop());
}

/// Under systemd (JOURNAL_STREAM set) stderr lines carry a syslog priority prefix and no
/// timestamp, so journald records airlockd's levels.
#[test]
fn journald_gets_priorities_and_no_timestamps() {
    let s = DevServer::start(None, &[("JOURNAL_STREAM", "8:12345")]);
    let log = s.log();
    let ready = log.lines().find(|l| l.contains("ready: serving")).unwrap();
    assert!(ready.starts_with("<6>"), "{ready}");
    assert!(!ready.contains("Z "), "no timestamp: {ready}");
    assert!(s.stop());
}
