//! Logging: tracing to stderr, plus journald when its socket exists.

use std::path::Path;
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

/// Install the global subscriber: fmt to stderr (INFO, DEBUG for our crates when `debug`;
/// a valid `RUST_LOG` overrides), and journald when present. Calling it twice is harmless.
pub fn init(debug: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(debug)));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(debug);
    let journald = if Path::new(JOURNALD_SOCKET).exists() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(journald)
        .try_init();
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
