//! systemd integration (`Type=notify`) through the pure-Rust `sd-notify` crate: no C
//! `libsystemd` to link, nothing to install on a build machine, and everything this daemon needs
//! (READY/STATUS/WATCHDOG/RELOADING/STOPPING/MAINPID) is a datagram to `$NOTIFY_SOCKET`.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
//!
//! Protocol as airlockd speaks it: `READY=1` only once the active models are loaded and the
//! listeners are bound; `STATUS=` whenever the picture changes (and every few seconds);
//! `WATCHDOG=1` from a task on the serving runtime, so a wedged runtime stops petting and is
//! restarted; `RELOADING=1` … `READY=1` around a SIGHUP reload; `STOPPING=1` when a stop begins.
//! Socket activation is not used: adopting an inherited descriptor needs `unsafe`, which the
//! workspace forbids, and the listeners bind fast enough for `READY=1` to be honest.

use std::time::Duration;

use sd_notify::NotifyState;

use airlock_engine::Models;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Ready to serve, with a status line.
pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// A new status line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A reload begins (`READY=1` follows when it is done).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    // systemd ≥ 253 wants the time of the reload request with RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A stop begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// One watchdog keep-alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to pet the watchdog (half its timeout), if systemd set one for this process:
/// `WATCHDOG_USEC`, and `WATCHDOG_PID` equal to ours or absent (as `sd_watchdog_enabled(3)`
/// reads them; the `sd-notify` crate's version insists on the PID).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then(|| Duration::from_micros(usec / 2)),
    }
}

/// The `STATUS=` line: what is served, what is degraded, what waits for people.
pub fn status_line(models: &Models, awaiting_approval: usize) -> String {
    let table = models.snapshot();
    let degraded = table
        .values()
        .filter(|s| s.active.degraded().is_some())
        .count();
    let not_ready = table.values().filter(|s| !s.active.ready()).count();
    let mut line = format!(
        "serving {} model{}",
        table.len(),
        if table.len() == 1 { "" } else { "s" }
    );
    if degraded > 0 {
        line.push_str(&format!(" ({degraded} degraded)"));
    }
    if not_ready > 0 {
        line.push_str(&format!(", {not_ready} not ready"));
    }
    let unavailable = models.unavailable();
    if !unavailable.is_empty() {
        let names: Vec<String> = unavailable
            .iter()
            .map(|(m, u)| format!("{m} {}", u.version))
            .collect();
        line.push_str(&format!(
            ", {} unavailable ({}: see airlockctl status)",
            unavailable.len(),
            names.join(", ")
        ));
    }
    line.push_str(&format!(
        ", {awaiting_approval} bundle{} awaiting approval",
        if awaiting_approval == 1 { "" } else { "s" }
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_unavailable_models() {
        let m = Models::default();
        assert_eq!(
            status_line(&m, 0),
            "serving 0 models, 0 bundles awaiting approval"
        );
        m.mark_unavailable(
            "second",
            airlock_engine::Unavailable {
                version: semver::Version::new(1, 0, 0),
                reason: "model.onnx is missing".into(),
            },
        );
        assert_eq!(
            status_line(&m, 1),
            "serving 0 models, 1 unavailable (second 1.0.0: see airlockctl status), 1 bundle awaiting approval"
        );
    }
}
