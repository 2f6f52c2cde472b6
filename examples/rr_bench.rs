//! Our side of bench/rr.sh: two `lnst-agent --stdio` processes (client in one namespace,
//! server in another, or both in the same one), one RrServer job and one RrClient job of one
//! flow through the real protocol, and the agents' own CPU time from /proc/<pid>/stat around
//! the jobs.
//!
//! `rr_bench AGENT WORKLOAD CLIENT_NS SERVER_NS SERVER_IP PORT REQ RESP SECONDS [CCPU SCPU]`
//! (with CCPU and SCPU, the client and server jobs are pinned to those CPUs)
//! prints one JSON line: rate (the client report's transactions/s), transactions, seconds,
//! cpu_s (both agent processes), gen_cpu_s (the generator threads, from the reports).

use lnst_runner::protocol::{JobSpec, RrWorkload};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions};
use std::time::Duration;

/// utime + stime of a process, seconds.
fn proc_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("odd /proc/{pid}/stat"))?;
    // fields after the comm: state(3) ppid(4) ... utime(14) stime(15)
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).unwrap_or(&"0").parse::<f64>()? + f.get(12).unwrap_or(&"0").parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

async fn agent(bin: &str, ns: &str) -> anyhow::Result<(tokio::process::Child, u32, AgentClient)> {
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, bin, "--stdio"])
        .env("LNST_AGENT_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // `ip netns exec` execs the agent: same pid.
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
        anyhow::bail!("no pipes");
    };
    let t = Transport {
        reader: Box::new(out),
        writer: Box::new(inp),
    };
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(30),
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(20),
    };
    let c = AgentClient::connect(ns, t, None, opts).await?;
    Ok((child, pid, c))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let bin = arg(1);
    let workload = match arg(2).as_str() {
        "tcp_rr" => RrWorkload::TcpRr,
        "tcp_crr" => RrWorkload::TcpCrr,
        "udp_rr" => RrWorkload::UdpRr,
        w => anyhow::bail!("unknown workload {w:?}"),
    };
    let (cns, sns, ip) = (arg(3), arg(4), arg(5));
    let port: u16 = arg(6).parse()?;
    let (req, resp): (u32, u32) = (arg(7).parse()?, arg(8).parse()?);
    let secs: f64 = arg(9).parse()?;
    let ccpu: Option<Vec<u32>> = arg(10).parse().ok().map(|c| vec![c]);
    let scpu: Option<Vec<u32>> = arg(11).parse().ok().map(|c| vec![c]);
    let (_sc, spid, srv) = agent(&bin, &sns).await?;
    let (_cc, cpid, cli) = agent(&bin, &cns).await?;
    let duration_ms = (secs * 1000.0) as u64;
    let c0 = proc_cpu_s(cpid)? + proc_cpu_s(spid)?;
    let s = srv
        .start_job(JobSpec::RrServer {
            workload,
            bind: ip.clone(),
            port,
            request_size: req,
            response_size: resp,
            duration_ms,
            flows: Some(1),
            threads: None,
            interval_ms: None,
            cpus: scpu,
        })
        .await?;
    let c = cli
        .start_job(JobSpec::RrClient {
            workload,
            server: ip,
            port,
            bind: None,
            request_size: req,
            response_size: resp,
            duration_ms,
            flows: Some(1),
            threads: None,
            transactions: None,
            interval_ms: None,
            loss_timeout_ms: None,
            cpus: ccpu,
        })
        .await?;
    let rc = cli
        .wait_job(c, Duration::from_millis(duration_ms + 15_000))
        .await?;
    let rs = srv.stop_job(s).await?;
    let c1 = proc_cpu_s(cpid)? + proc_cpu_s(spid)?;
    anyhow::ensure!(rc.passed, "client failed: {}", rc.stderr);
    anyhow::ensure!(rs.passed, "server failed: {}", rs.stderr);
    let cr: serde_json::Value = serde_json::from_str(&rc.stdout)?;
    let sr: serde_json::Value = serde_json::from_str(&rs.stdout)?;
    let n = cr["summary"]["num_transactions"].as_u64().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "role": "ours",
            "rate": cr["summary"]["throughput"],
            "transactions": n,
            "seconds": cr["summary"]["duration_s"],
            "cpu_s": c1 - c0,
            "gen_cpu_s": cr["summary"]["cpu_s"].as_f64().unwrap_or(0.0)
                + sr["summary"]["cpu_s"].as_f64().unwrap_or(0.0),
            "latency_p50": cr["summary"]["latency_p50"],
        })
    );
    cli.bye().await?;
    srv.bye().await?;
    Ok(())
}
