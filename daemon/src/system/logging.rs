//! Logging: `tracing` to stderr (plain text, journald-friendly) and, when a log directory is
//! configured, JSON lines to `airlockd.log` in that directory, rotated by size and capped in
//! count (`[logging] max_file_size`, `max_files`). `tracing-appender`'s rolling writer rotates
//! by time only, so the size-capped writer is here; `tracing-appender`'s non-blocking worker
//! keeps file I/O off the serving threads.
//!
//! Invariant: the total size of the log directory stays below `max_file_size × max_files`
//! (plus one line); nothing in this module decides *what* is logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the file writer's background thread alive (drop it last: it flushes) and can change
/// the level filter live.
pub struct LogGuard {
    _guard: Option<tracing_appender::non_blocking::WorkerGuard>,
    filter: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl LogGuard {
    /// Applies a reloaded `[logging] level` (unless `AIRLOCK_LOG` overrides it).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        if std::env::var_os("AIRLOCK_LOG").is_some() {
            return Err("AIRLOCK_LOG is set and overrides [logging] level".into());
        }
        let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.filter.reload(f).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber: stderr (plain text, colour only on a terminal) and, when
/// `config.dir` is set, JSON lines in size-capped files. The `AIRLOCK_LOG` variable overrides
/// the configured filter.
pub fn init(config: &airlock_config::Logging) -> io::Result<LogGuard> {
    let filter = || {
        EnvFilter::try_from_env("AIRLOCK_LOG")
            .or_else(|_| EnvFilter::try_new(&config.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    // Under systemd (stderr connected to the journal, JOURNAL_STREAM set): no timestamp
    // (journald stamps each line) and a `<N>` syslog priority prefix (sd-daemon(3)), so that
    // `journalctl -p warning` and the colours in `journalctl` follow airlockd's levels.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let stderr = if journald {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false),
            ))
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (file, guard) = if config.dir.as_os_str().is_empty() {
        (None, None)
    } else {
        let writer = SizeCapped::open(
            &config.dir,
            "airlockd.log",
            config.max_file_size.0,
            config.max_files,
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot open the log directory {}: {e}",
                    config.dir.display()
                ),
            )
        })?;
        let (nb, guard) = tracing_appender::non_blocking(writer);
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(nb);
        (Some(layer), Some(guard))
    };
    // One level filter for both outputs, swappable on reload.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    Ok(LogGuard {
        _guard: guard,
        filter: handle,
    })
}

/// Prefixes each stderr line with its syslog priority for journald.
struct Journald<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journald<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// A file writer that rotates `NAME` → `NAME.1` → … → `NAME.<max-1>` when it reaches the size.
pub struct SizeCapped {
    dir: PathBuf,
    name: String,
    max_size: u64,
    max_files: u32,
    file: Option<File>,
    written: u64,
}

/// Opens a log file for appending, creating it with mode 0640.
fn log_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl SizeCapped {
    /// Opens (appending to) `dir/name`, creating the directory.
    pub fn open(dir: &Path, name: &str, max_size: u64, max_files: u32) -> io::Result<SizeCapped> {
        // Logs are the operators' (0750/0640), never world-readable, under systemd or not.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
            .create(dir)?;
        let path = dir.join(name);
        let file = log_file(&path)?;
        let written = file.metadata()?.len();
        Ok(SizeCapped {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            max_size: max_size.max(4096),
            max_files: max_files.max(1),
            file: Some(file),
            written,
        })
    }

    fn path(&self, i: u32) -> PathBuf {
        if i == 0 {
            self.dir.join(&self.name)
        } else {
            self.dir.join(format!("{}.{i}", self.name))
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let last = self.max_files - 1;
        if last == 0 {
            std::fs::remove_file(self.path(0)).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        } else {
            let _ = std::fs::remove_file(self.path(last));
            for i in (0..last).rev() {
                let from = self.path(i);
                if from.exists() {
                    std::fs::rename(&from, self.path(i + 1))?;
                }
            }
        }
        self.file = Some(log_file(&self.path(0))?);
        self.written = 0;
        Ok(())
    }
}

impl Write for SizeCapped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let f = match self.file.as_mut() {
            Some(f) => f,
            None => {
                self.rotate()?;
                self.file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("log file unavailable"))?
            }
        };
        let n = f.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), File::flush)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids() {
        use crate::trace::trace_id;
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(t), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = SizeCapped::open(dir.path(), "airlockd.log", 4096, 3).expect("open");
        let line = vec![b'x'; 1000];
        for _ in 0..40 {
            w.write_all(&line).expect("write");
            w.write_all(b"\n").expect("write");
        }
        w.flush().expect("flush");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["airlockd.log", "airlockd.log.1", "airlockd.log.2"]
        );
        let total: u64 = names
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).expect("meta").len())
            .sum();
        assert!(total <= 3 * 4096, "{total}");
    }
}
