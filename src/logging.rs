//! Logging: tracing to stderr, plus journald when its socket exists.
//!
//! Colour codes only when stderr is a terminal. DEBUG and TRACE records meant for stderr are
//! held back from [`init`] until [`release_held`] (called once the run is past its checks):
//! bad input is then reported on its one line, whatever `DEBUG` says, instead of after a
//! line per pool machine. Held records still reach journald at once; at most
//! [`HELD_LIMIT`] bytes are held, the rest is counted and dropped.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The journald socket; the journald layer is added only when it exists.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// The default filter: INFO, or DEBUG for our crates when `debug`. netlink-packet-route warns
/// about every kernel attribute newer than itself (harmless, and many per link): errors only.
pub fn default_filter(debug: bool) -> &'static str {
    if debug {
        "info,lnst_runner=debug,lnst_agent=debug,netlink_packet_route=error"
    } else {
        "info,netlink_packet_route=error"
    }
}

/// Most bytes of debug output held back before the run starts.
pub const HELD_LIMIT: usize = 1 << 20;

static HOLDING: AtomicBool = AtomicBool::new(false);
static HELD: Mutex<Held> = Mutex::new(Held {
    buf: Vec::new(),
    dropped: 0,
});

struct Held {
    buf: Vec<u8>,
    dropped: usize,
}

/// Show the debug lines held back so far, and stop holding.
pub fn release_held() {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    HOLDING.store(false, Ordering::SeqCst);
    let buf = std::mem::take(&mut held.buf);
    let dropped = std::mem::take(&mut held.dropped);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(&buf);
    if dropped > 0 {
        let _ = writeln!(
            err,
            "lnst-runner: {dropped} debug line(s) from before the run were dropped (over {HELD_LIMIT} bytes)"
        );
    }
}

/// Writes one formatted record to stderr, or into the held lines.
pub enum LogWriter {
    Stderr(std::io::Stderr),
    Held(Vec<u8>),
}

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            LogWriter::Stderr(e) => e.write(data),
            LogWriter::Held(v) => {
                v.extend_from_slice(data);
                Ok(data.len())
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LogWriter::Stderr(e) => e.flush(),
            LogWriter::Held(_) => Ok(()),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let LogWriter::Held(v) = self else {
            return;
        };
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if !HOLDING.load(Ordering::SeqCst) {
            // Released while this record was being formatted.
            let _ = std::io::stderr().write_all(v);
        } else if held.buf.len() + v.len() <= HELD_LIMIT {
            held.buf.extend_from_slice(v);
        } else {
            held.dropped += 1;
        }
    }
}

/// The stderr writer of the fmt layer: DEBUG and TRACE records are held while holding.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrOrHeld;

impl<'a> MakeWriter<'a> for StderrOrHeld {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter::Stderr(std::io::stderr())
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LogWriter {
        let verbose = *meta.level() == Level::DEBUG || *meta.level() == Level::TRACE;
        if verbose && HOLDING.load(Ordering::SeqCst) {
            LogWriter::Held(Vec::new())
        } else {
            LogWriter::Stderr(std::io::stderr())
        }
    }
}

/// Install the global subscriber: fmt to stderr (INFO, DEBUG for our crates when `debug`;
/// a valid `RUST_LOG` overrides; debug records held until [`release_held`]), and journald
/// when present. Calling it twice is harmless.
pub fn init(debug: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(debug)));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(StderrOrHeld)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(debug);
    let journald = if Path::new(JOURNALD_SOCKET).exists() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(journald)
        .try_init();
    if installed.is_ok() {
        HOLDING.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_harmless_and_filters_parse() {
        assert!(EnvFilter::try_new(default_filter(true)).is_ok());
        assert!(EnvFilter::try_new(default_filter(false)).is_ok());
        init(false);
        init(true);
        tracing::info!("logging initialised twice");
    }
}
