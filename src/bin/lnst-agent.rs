//! lnst-agent: the test agent that lnst-runner drives (see docs/PROTOCOL.md).

use anyhow::Context;
use clap::Parser;
use lnst_runner::agent::{self, AgentConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser, Debug)]
#[command(
    name = "lnst-agent",
    version,
    about = "LNST test agent: serves one controller at a time over stdin/stdout or TCP"
)]
struct Args {
    /// Serve one controller on stdin/stdout, then exit.
    #[arg(long, conflicts_with = "port")]
    stdio: bool,
    /// Listen on this TCP port (one controller at a time).
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// Address to bind with --port.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Require controllers to prove this shared secret (env LNST_AGENT_SECRET_FILE; or the
    /// secret itself in LNST_AGENT_SECRET).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Serve the Shell operation (run an argv given by the controller).
    #[arg(long)]
    allow_shell: bool,
    /// Load the kernel modules of the devices it creates itself, from the running kernel's
    /// modules.dep, instead of leaving it to the kernel's modprobe (VM agents: the VM source
    /// passes it; a machine's own /etc/modprobe.d is then not consulted).
    #[arg(long)]
    load_modules: bool,
    /// With --load-modules: load these kernel modules (comma-separated names, with their
    /// dependencies) on a thread beside serving (a device that needs one waits for it); VM
    /// agents get the recipe's list from the VM init.
    #[arg(long, value_delimiter = ',', requires = "load_modules")]
    preload_modules: Vec<String>,
    /// Debug logging.
    #[arg(long, short = 'd')]
    debug: bool,
}

/// Report bad input on one line and exit 2.
fn bad_input(msg: &dyn std::fmt::Display) -> ! {
    lnst_runner::say!("lnst-agent: {msg}");
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LNST_AGENT_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(if args.debug {
                "debug"
            } else {
                // netlink-packet-route warns about every kernel attribute newer than itself.
                "info,netlink_packet_route=error"
            })
        });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(agent::ForwardLayer)
        .init();

    let secret_file = args
        .secret_file
        .clone()
        .or_else(|| std::env::var_os("LNST_AGENT_SECRET_FILE").map(PathBuf::from));
    // The secret itself may come in the environment (the Podman provisioner passes it in the
    // exec's environment); it is taken out before any thread or child process exists.
    let secret_env = std::env::var_os(agent::AGENT_SECRET_ENV);
    std::env::remove_var(agent::AGENT_SECRET_ENV);
    // A secret that cannot be used is bad input: one line, exit 2.
    let secret = match (&secret_file, secret_env) {
        (Some(p), _) => Some(AgentConfig::load_secret(p).unwrap_or_else(|e| bad_input(&e))),
        (None, Some(v)) => Some(
            lnst_runner::protocol::normalize_secret(v.as_encoded_bytes()).unwrap_or_else(|| {
                bad_input(&format!(
                    "{} is empty or only whitespace",
                    agent::AGENT_SECRET_ENV
                ))
            }),
        ),
        (None, None) => None,
    };
    let cfg = AgentConfig {
        secret,
        allow_shell: args.allow_shell,
        ..AgentConfig::default()
    };
    if !args.stdio && args.port.is_none() {
        bad_input(&"give --stdio or --port PORT");
    }
    if args.load_modules {
        agent::kmod::enable();
        agent::kmod::load_in_background(args.preload_modules.clone())
            .unwrap_or_else(|e| bad_input(&format!("--preload-modules: {e}")));
    }
    // Idle blocking-pool threads (sysctl and restore work, malloc_trim after a session) end
    // after 1 s instead of tokio's 10 s: a long-lived lab agent's threads return to their
    // count between sessions.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(async {
        if args.stdio {
            agent::run_stdio(cfg).await
        } else {
            let port = args.port.unwrap_or(lnst_runner::protocol::DEFAULT_PORT);
            agent::run_tcp(SocketAddr::new(args.bind, port), cfg).await
        }
    });
    // The session is over and cleaned up. A write to a control channel whose other end is gone
    // may still block in the runtime's blocking pool (a virtio-serial port whose host side
    // closed does that): exit without waiting for it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    Ok(())
}
