//! The reference for bench/rr.sh: the request/response workloads written the simplest way,
//! one blocking socket pair, no threads, no sampling, no latency, no timeouts.
//!
//! `rr_reference server WORKLOAD IP PORT REQ RESP` serves one client and exits when it is done
//! (tcp_rr: the connection closes; udp_rr: an empty datagram; tcp_crr: a connection that closes
//! before sending a request).
//! `rr_reference client WORKLOAD IP PORT REQ RESP SECONDS` runs for SECONDS.
//! Each prints one JSON line: role, transactions, seconds, rate, cpu_s (getrusage of itself).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn report(role: &str, n: u64, secs: f64) {
    println!(
        "{{\"role\":\"{role}\",\"transactions\":{n},\"seconds\":{secs},\"rate\":{},\"cpu_s\":{}}}",
        n as f64 / secs,
        cpu_s()
    );
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("REF_THREAD").is_some() {
        return std::thread::spawn(run)
            .join()
            .map_err(|_| anyhow::anyhow!("panic"))?;
    }
    run()
}

fn run() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
    let (role, workload) = (arg(1), arg(2));
    let addr = SocketAddr::new(arg(3).parse()?, arg(4).parse()?);
    let (req, resp): (usize, usize) = (arg(5).parse()?, arg(6).parse()?);
    let dur = Duration::from_secs_f64(arg(7).parse().unwrap_or(0.0));
    let mut b = vec![0u8; req.max(resp)];
    let mut n = 0u64;
    let t0 = Instant::now();
    match (role, workload) {
        ("server", "tcp_rr") => {
            let (mut s, _) = TcpListener::bind(addr)?.accept()?;
            while s.read_exact(&mut b[..req]).is_ok() {
                s.write_all(&b[..resp])?;
                n += 1;
            }
        }
        ("client", "tcp_rr") => {
            let mut s = TcpStream::connect(addr)?;
            while t0.elapsed() < dur {
                s.write_all(&b[..req])?;
                s.read_exact(&mut b[..resp])?;
                n += 1;
            }
        }
        ("server", "udp_rr") => {
            let s = UdpSocket::bind(addr)?;
            loop {
                let (k, peer) = s.recv_from(&mut b)?;
                if k == 0 {
                    break;
                }
                s.send_to(&b[..resp], peer)?;
                n += 1;
            }
        }
        ("client", "udp_rr") => {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let s = UdpSocket::bind(local)?;
            s.connect(addr)?;
            while t0.elapsed() < dur {
                s.send(&b[..req])?;
                s.recv(&mut b)?;
                n += 1;
            }
            s.send(&[])?;
        }
        ("server", "tcp_crr") => {
            let l = TcpListener::bind(addr)?;
            loop {
                let (mut s, _) = l.accept()?;
                if s.read_exact(&mut b[..req]).is_err() {
                    break;
                }
                s.write_all(&b[..resp])?;
                n += 1;
            }
        }
        ("client", "tcp_crr") => {
            while t0.elapsed() < dur {
                let mut s = TcpStream::connect(addr)?;
                // Close with an RST: no TIME_WAIT to run out of ports (as neper and ours).
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                s.write_all(&b[..req])?;
                s.read_exact(&mut b[..resp])?;
                n += 1;
            }
            drop(TcpStream::connect(addr)?);
        }
        _ => anyhow::bail!(
            "usage: rr_reference server|client tcp_rr|udp_rr|tcp_crr IP PORT REQ RESP [SECONDS]"
        ),
    }
    report(role, n, t0.elapsed().as_secs_f64());
    Ok(())
}
