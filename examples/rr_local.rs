//! Diagnostic: the agent's generator run standalone, without the agent (no protocol).
//! `rr_local server|client WORKLOAD IP PORT SIZE SECONDS` prints the report's summary.
use lnst_runner::agent::rr::{start, RrConfig};
use lnst_runner::protocol::{JobSpec, RrWorkload};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let workload = match arg(2).as_str() {
        "tcp_rr" => RrWorkload::TcpRr,
        "tcp_crr" => RrWorkload::TcpCrr,
        _ => RrWorkload::UdpRr,
    };
    let size: u32 = arg(5).parse()?;
    let duration_ms = (arg(6).parse::<f64>()? * 1000.0) as u64;
    let port: u16 = arg(4).parse()?;
    let spec = if arg(1) == "server" {
        JobSpec::RrServer {
            workload,
            bind: arg(3),
            port,
            request_size: size,
            response_size: size,
            duration_ms,
            flows: Some(1),
            threads: None,
            interval_ms: None,
            cpus: None,
        }
    } else {
        JobSpec::RrClient {
            workload,
            server: arg(3),
            port,
            bind: None,
            request_size: size,
            response_size: size,
            duration_ms,
            flows: Some(1),
            threads: None,
            transactions: None,
            interval_ms: None,
            loss_timeout_ms: None,
            cpus: None,
        }
    };
    let cfg = RrConfig::from_spec(&spec)?.ok_or_else(|| anyhow::anyhow!("spec"))?;
    let r = start(cfg)?.wait();
    println!("{}", r.json["summary"]);
    Ok(())
}
