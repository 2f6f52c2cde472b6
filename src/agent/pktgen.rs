//! In-process packet-rate jobs: the kernel's packet generator driven through /proc/net/pktgen
//! (upstream `lnst/Tests/PktGen.py`, without its shell) and the interface counter sampler
//! (upstream `InterfaceStatsMonitor`).
//!
//! Both run on a thread of their own that first joins the job's network namespace: pktgen's
//! control files and /proc/net/dev belong to the namespace of the thread that opens them
//! (`/proc/thread-self/net`), and pktgen resolves its devices in that namespace. Writing
//! `start` to pktgen's control file blocks until pktgen stops, so it is written from a second
//! thread (created by the first, so in the same namespace); `stop` ends it.

use super::OpError;
use crate::protocol::{unix_now, ErrorKind, JobResult, JobSpec, PktgenDevice};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// pktgen's files in the calling thread's namespace.
const PKTGEN_DIR: &str = "/proc/thread-self/net/pktgen";
/// Longest pktgen run (as iperf3's limit).
pub const MAX_DURATION_S: u32 = 86_400;
/// Most pktgen devices in one job.
pub const MAX_DEVICES: usize = 256;
/// Shortest interface sampling interval.
pub const MIN_IFSTATS_INTERVAL: Duration = Duration::from_millis(10);

/// One pktgen job at a time on an agent: clearing a thread would take the devices of another.
static PKTGEN_BUSY: AtomicBool = AtomicBool::new(false);

/// The jobs this module runs.
pub fn is_inproc(spec: &JobSpec) -> bool {
    matches!(spec, JobSpec::Pktgen { .. } | JobSpec::IfStats { .. })
}

fn bad(m: String) -> OpError {
    OpError::new(ErrorKind::BadRequest, m)
}

fn check_mac(what: &str, s: &str) -> Result<(), OpError> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "pktgen {what} {:?} is not a MAC address (xx:xx:xx:xx:xx:xx)",
            crate::text::clip(s, 32)
        )))
    }
}

fn check_pktgen_device(d: &PktgenDevice) -> Result<(), OpError> {
    super::net::check_ifname(&d.ifname)?;
    if d.ifname.contains('@') {
        return Err(bad(format!(
            "pktgen interface {:?} contains '@' (pktgen's device separator)",
            d.ifname
        )));
    }
    check_mac("src_mac", &d.src_mac)?;
    check_mac("dst_mac", &d.dst_mac)?;
    let ip = |what: &str, s: &str| {
        s.parse::<IpAddr>().map_err(|_| {
            bad(format!(
                "pktgen {what} {:?} is not an IP address",
                crate::text::clip(s, 64)
            ))
        })
    };
    let (src, dst) = (ip("src_ip", &d.src_ip)?, ip("dst_ip", &d.dst_ip)?);
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(bad(format!(
            "pktgen src_ip {src} and dst_ip {dst} are of different IP versions"
        )));
    }
    // pktgen needs room for Ethernet, IP and UDP headers; it caps at 64 KiB.
    let min = if src.is_ipv4() { 42 } else { 62 };
    if !(min..=65_535).contains(&d.pkt_size) {
        return Err(bad(format!(
            "pktgen pkt_size {} is outside {min} to 65535 bytes",
            d.pkt_size
        )));
    }
    if !(1..=65_536).contains(&d.burst) {
        return Err(bad(format!(
            "pktgen burst {} is outside 1 to 65536",
            d.burst
        )));
    }
    if let Some(v) = d.vlan_id {
        if v > 4094 {
            return Err(bad(format!("pktgen vlan_id {v} is above 4094")));
        }
    }
    Ok(())
}

/// Check a Pktgen or IfStats spec (other specs pass).
pub fn validate(spec: &JobSpec) -> Result<(), OpError> {
    match spec {
        JobSpec::Pktgen {
            devices,
            duration_s,
        } => {
            if devices.is_empty() || devices.len() > MAX_DEVICES {
                return Err(bad(format!(
                    "pktgen needs 1 to {MAX_DEVICES} devices, got {}",
                    devices.len()
                )));
            }
            if !(1..=MAX_DURATION_S).contains(duration_s) {
                return Err(bad(format!(
                    "pktgen duration {duration_s} s is outside 1 to {MAX_DURATION_S}"
                )));
            }
            let mut names = Vec::new();
            for d in devices {
                check_pktgen_device(d)?;
                if names.contains(&d.name()) {
                    return Err(bad(format!(
                        "pktgen device {} is given twice (one device per interface and CPU)",
                        d.name()
                    )));
                }
                names.push(d.name());
            }
            let cpus: Vec<u32> = devices.iter().map(|d| d.cpu).collect();
            // pktgen has one thread per online CPU; the agent's own CPU set does not matter.
            super::tunables::check_cpus(&cpus, false)
        }
        JobSpec::IfStats {
            interfaces,
            interval_ms,
        } => {
            if interfaces.is_empty() {
                return Err(bad("IfStats needs at least one interface".into()));
            }
            for i in interfaces {
                super::net::check_ifname(i)?;
            }
            if Duration::from_millis(*interval_ms) < MIN_IFSTATS_INTERVAL {
                return Err(bad(format!(
                    "IfStats interval {interval_ms} ms is below {} ms",
                    MIN_IFSTATS_INTERVAL.as_millis()
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Start an in-process job on its own thread (in `netns` when given); `done` gets the result.
/// The returned notify stops it early.
pub fn spawn_job(
    id: u64,
    spec: &JobSpec,
    netns: Option<OwnedFd>,
    killed: Arc<AtomicBool>,
    done: impl FnOnce(JobResult) + Send + 'static,
) -> Result<Arc<Notify>, OpError> {
    let spec = spec.clone();
    let is_pktgen = matches!(spec, JobSpec::Pktgen { .. });
    if is_pktgen && PKTGEN_BUSY.swap(true, Ordering::SeqCst) {
        return Err(OpError::new(
            ErrorKind::Failed,
            "a pktgen job is already running on this agent (clearing pktgen's threads would take its devices)",
        ));
    }
    let notify = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (n, s) = (notify.clone(), stop.clone());
        tokio::spawn(async move {
            n.notified().await;
            s.store(true, Ordering::SeqCst);
        });
    }
    let started_at = unix_now();
    // The result goes back through the runtime: `done` may spawn tasks (the JobFinished event),
    // which a plain thread cannot.
    let (rtx, rrx) = tokio::sync::oneshot::channel::<JobResult>();
    {
        let killed = killed.clone();
        tokio::spawn(async move {
            let r = rrx.await.unwrap_or_else(|_| JobResult {
                job_id: id,
                passed: false,
                exit_code: None,
                signal: None,
                stdout: String::new(),
                stderr: String::new(),
                started_at,
                finished_at: unix_now(),
                killed: killed.load(Ordering::SeqCst),
                error: Some("the job's thread ended without a result".into()),
                data: None,
            });
            done(r);
        });
    }
    let spawned = std::thread::Builder::new()
        .name(format!("job-{id}"))
        .spawn(move || {
            let outcome = match enter(netns.as_ref()) {
                Err(e) => Err(e),
                Ok(()) => match &spec {
                    JobSpec::Pktgen {
                        devices,
                        duration_s,
                    } => run_pktgen(devices, *duration_s, &stop),
                    JobSpec::IfStats {
                        interfaces,
                        interval_ms,
                    } => run_ifstats(interfaces, Duration::from_millis(*interval_ms), &stop),
                    _ => Err("not an in-process packet job".into()),
                },
            };
            if is_pktgen {
                PKTGEN_BUSY.store(false, Ordering::SeqCst);
            }
            let (passed, error, data) = match outcome {
                Ok(d) => (true, None, Some(d)),
                Err(e) => {
                    tracing::warn!("job {id}: {e}");
                    (false, Some(e), None)
                }
            };
            let _ = rtx.send(JobResult {
                job_id: id,
                passed,
                exit_code: None,
                signal: None,
                stdout: String::new(),
                stderr: String::new(),
                started_at,
                finished_at: unix_now(),
                killed: killed.load(Ordering::SeqCst),
                error,
                data,
            });
        });
    match spawned {
        Ok(_) => Ok(notify),
        Err(e) => {
            if is_pktgen {
                PKTGEN_BUSY.store(false, Ordering::SeqCst);
            }
            Err(OpError::new(
                ErrorKind::Internal,
                format!("cannot start a job thread: {e}"),
            ))
        }
    }
}

/// Join the namespace (this thread only).
fn enter(netns: Option<&OwnedFd>) -> Result<(), String> {
    if let Some(fd) = netns {
        // SAFETY: setns on a descriptor we own; it changes only this thread's namespace.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "joining the job's namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Sleep until `until`, waking early when `stop` is set; false when stopped.
fn sleep_until(until: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// One write to a pktgen file (pktgen takes one command per write).
fn pg_write(path: &Path, cmd: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    f.write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| format!("pktgen refused '{cmd}' on {}: {e}", path.display()))
}

/// Load the module when pktgen's directory is missing.
fn ensure_module(dir: &Path) -> Result<(), String> {
    if dir.join("pgctrl").exists() {
        return Ok(());
    }
    let out = std::process::Command::new("modprobe")
        .arg("pktgen")
        .stdin(std::process::Stdio::null())
        .output();
    if dir.join("pgctrl").exists() {
        return Ok(());
    }
    let why = match out {
        Ok(o) if !o.status.success() => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Ok(_) => format!("{} did not appear", dir.display()),
        Err(e) => format!("running modprobe: {e}"),
    };
    Err(format!(
        "the kernel's packet generator is not available: modprobe pktgen: {why} (kernel {})",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    ))
}

fn run_pktgen(
    devices: &[PktgenDevice],
    duration_s: u32,
    stop: &AtomicBool,
) -> Result<Value, String> {
    let dir = PathBuf::from(PKTGEN_DIR);
    ensure_module(&dir)?;
    let mut cpus: Vec<u32> = devices.iter().map(|d| d.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    for c in &cpus {
        if !dir.join(format!("kpktgend_{c}")).exists() {
            return Err(format!("pktgen has no thread for CPU {c} (offline?)"));
        }
    }
    // Leftovers of a job that could not clean up (killed agent) off the threads used here;
    // not pgctrl's reset, which flags every thread (see clear_thread).
    for c in &cpus {
        clear_thread(&dir, *c)?;
    }
    let result = configure_and_run(&dir, devices, duration_s, stop);
    // Teardown whatever happened: the devices off their threads, waited for.
    let mut cleared = Ok(());
    for c in &cpus {
        let r = clear_thread(&dir, *c);
        if cleared.is_ok() {
            cleared = r;
        }
    }
    result.and_then(|v| cleared.map(|()| v))
}

/// The devices on pktgen thread `cpu` (its `Running:` and `Stopped:` lists).
fn thread_devices(dir: &Path, cpu: u32) -> Result<Vec<String>, String> {
    let path = dir.join(format!("kpktgend_{cpu}"));
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Running:")
                .or_else(|| l.strip_prefix("Stopped:"))
        })
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect())
}

/// Remove every device of pktgen thread `cpu` and wait until the thread has done it.
///
/// `rem_device_all` (and pgctrl's `reset`, which does it on every thread) only flags the
/// thread; it acts when it next polls (every 100 ms, much later in a loaded TCG guest), at the
/// latest in the iteration that handles `start`. A flag still pending when the next job adds
/// its devices would take them right after its start ("reading /proc/net/pktgen/eth0@0: No
/// such file or directory"). So a removal is only asked of a thread that has devices, and
/// waited for until its lists are empty: no flag is ever left pending.
fn clear_thread(dir: &Path, cpu: u32) -> Result<(), String> {
    if thread_devices(dir, cpu)?.is_empty() {
        return Ok(());
    }
    pg_write(&dir.join(format!("kpktgend_{cpu}")), "rem_device_all")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = thread_devices(dir, cpu)?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "pktgen thread {cpu} still has {} 10 s after rem_device_all",
                left.join(" ")
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn configure_and_run(
    dir: &Path,
    devices: &[PktgenDevice],
    duration_s: u32,
    stop: &AtomicBool,
) -> Result<Value, String> {
    for d in devices {
        let thread = dir.join(format!("kpktgend_{}", d.cpu));
        if !thread.exists() {
            return Err(format!("pktgen has no thread for CPU {} (offline?)", d.cpu));
        }
        pg_write(&thread, &format!("add_device {}", d.name()))?;
        let file = dir.join(d.name());
        for cmd in d.commands() {
            pg_write(&file, &cmd)?;
        }
    }
    let names: Vec<String> = devices.iter().map(PktgenDevice::name).collect();
    let mut samples: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let read_all = |samples: &mut BTreeMap<String, Vec<Value>>| -> Result<(), String> {
        for n in &names {
            let path = dir.join(n);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            samples
                .entry(n.clone())
                .or_default()
                .push(json!({"t": unix_now(), "text": text}));
        }
        Ok(())
    };
    let pgctrl = dir.join("pgctrl");
    let starter = {
        let pgctrl = pgctrl.clone();
        // Created by this thread, so it runs in the job's namespace too.
        std::thread::Builder::new()
            .name("pktgen-start".into())
            .spawn(move || pg_write(&pgctrl, "start"))
            .map_err(|e| format!("cannot start pktgen's start thread: {e}"))?
    };
    let t0 = Instant::now();
    let mut run = read_all(&mut samples);
    if run.is_ok() {
        for k in 1..=u64::from(duration_s) {
            if !sleep_until(t0 + Duration::from_secs(k), stop) {
                break;
            }
            run = read_all(&mut samples);
            if run.is_err() {
                break;
            }
        }
    }
    let stopped = pg_write(&pgctrl, "stop");
    // The start write returns once every pktgen thread has stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !starter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = if starter.is_finished() {
        starter
            .join()
            .unwrap_or_else(|_| Err("pktgen's start thread panicked".into()))
    } else {
        Err("pktgen did not stop within 10 s of 'stop'".into())
    };
    run?;
    stopped?;
    started?;
    let mut out = Map::new();
    for (k, v) in samples {
        out.insert(k, Value::Array(v));
    }
    Ok(Value::Object(out))
}

/// The counters of /proc/net/dev: interface → (rx_bytes, rx_packets, tx_bytes, tx_packets).
pub fn parse_proc_net_dev(text: &str) -> BTreeMap<String, [u64; 4]> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 16 {
            out.insert(name.trim().to_string(), [f[0], f[1], f[8], f[9]]);
        }
    }
    out
}

fn run_ifstats(
    interfaces: &[String],
    interval: Duration,
    stop: &AtomicBool,
) -> Result<Value, String> {
    let path = "/proc/thread-self/net/dev";
    let mut samples = Vec::new();
    let mut seen = vec![false; interfaces.len()];
    let t0 = Instant::now();
    let mut k: u32 = 0;
    loop {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        let t = unix_now();
        let all = parse_proc_net_dev(&text);
        let mut ifaces = Map::new();
        for (i, name) in interfaces.iter().enumerate() {
            if let Some([rb, rp, tb, tp]) = all.get(name) {
                seen[i] = true;
                ifaces.insert(
                    name.clone(),
                    json!({"rx_bytes": rb, "rx_packets": rp, "tx_bytes": tb, "tx_packets": tp}),
                );
            }
        }
        samples.push(json!({"t": t, "ifaces": ifaces}));
        k = k.saturating_add(1);
        if samples.len() >= 1_000_000 || !sleep_until(t0 + interval * k, stop) {
            break;
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(format!(
            "interface {} is not in this namespace's /proc/net/dev",
            interfaces[i]
        ));
    }
    Ok(Value::Array(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's devices are read from its Running and Stopped lists (pktgen's own format),
    /// not from its result line; an idle thread has none, so it is not flagged.
    #[test]
    fn thread_devices_reads_both_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kpktgend_1"),
            "Running: eth0@1 \nStopped: eth1@1 eth0@x \nResult: OK: add_device=eth0@x\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("kpktgend_0"),
            "Running: \nStopped: \nResult: OK: rem_device_all\n",
        )
        .unwrap();
        assert_eq!(
            thread_devices(dir.path(), 1).unwrap(),
            ["eth0@1", "eth1@1", "eth0@x"]
        );
        assert!(thread_devices(dir.path(), 0).unwrap().is_empty());
        assert_eq!(clear_thread(dir.path(), 0), Ok(()));
        let e = thread_devices(dir.path(), 2).unwrap_err();
        assert!(e.contains("kpktgend_2"), "{e}");
    }

    fn dev() -> PktgenDevice {
        PktgenDevice {
            ifname: "eth0".into(),
            cpu: 0,
            src_mac: "02:00:00:00:00:01".into(),
            dst_mac: "02:00:00:00:00:02".into(),
            src_ip: "198.18.96.1".into(),
            dst_ip: "198.18.96.2".into(),
            src_port: 9,
            dst_port: 9,
            pkt_size: 123,
            burst: 8,
            ratep: None,
            vlan_id: None,
        }
    }

    fn pktgen(devices: Vec<PktgenDevice>) -> JobSpec {
        JobSpec::Pktgen {
            devices,
            duration_s: 1,
        }
    }

    #[test]
    fn pktgen_specs_are_checked() {
        assert!(validate(&pktgen(vec![dev()])).is_ok());
        type Change = Box<dyn Fn(&mut PktgenDevice)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|d| d.ifname = "eth0 start".into()),
                "interface name",
            ),
            (Box::new(|d| d.ifname = "eth@0".into()), "'@'"),
            (Box::new(|d| d.dst_mac = "02:00:00:00:00".into()), "MAC"),
            (Box::new(|d| d.src_mac = "count 0".into()), "MAC"),
            (
                Box::new(|d| d.dst_ip = "fd00:96::2".into()),
                "different IP versions",
            ),
            (Box::new(|d| d.src_ip = "host1".into()), "not an IP"),
            (Box::new(|d| d.pkt_size = 20), "pkt_size"),
            (Box::new(|d| d.burst = 0), "burst"),
            (Box::new(|d| d.vlan_id = Some(5000)), "vlan_id"),
            (Box::new(|d| d.cpu = 100_000), "CPU"),
        ];
        for (f, want) in cases {
            let mut d = dev();
            f(&mut d);
            let e = validate(&pktgen(vec![d.clone()])).expect_err(want);
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
        let e = validate(&pktgen(vec![dev(), dev()])).expect_err("twice");
        assert!(e.message.contains("eth0@0 is given twice"), "{}", e.message);
        assert!(validate(&pktgen(vec![])).is_err());
        let long = JobSpec::Pktgen {
            devices: vec![dev()],
            duration_s: 0,
        };
        assert!(validate(&long).is_err());
        let stats = |i: Vec<&str>, ms| JobSpec::IfStats {
            interfaces: i.into_iter().map(String::from).collect(),
            interval_ms: ms,
        };
        assert!(validate(&stats(vec!["eth0"], 1000)).is_ok());
        assert!(validate(&stats(vec![], 1000)).is_err());
        assert!(validate(&stats(vec!["../x"], 1000)).is_err());
        assert!(validate(&stats(vec!["eth0"], 1)).is_err());
    }

    #[test]
    fn proc_net_dev_counters() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 987654321 1234567    0    3    0     0          0        12 55555     777    0    0    0     0       0          0\n";
        let m = parse_proc_net_dev(text);
        assert_eq!(m["eth0"], [987_654_321, 1_234_567, 55_555, 777]);
        assert_eq!(m["lo"], [1000, 10, 1000, 10]);
        assert_eq!(m.len(), 2);
    }

    /// The sampler in this process's namespace: `lo` is always there; a missing interface
    /// fails the job; stopping ends it.
    #[tokio::test]
    async fn ifstats_samples_until_stopped() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spec = JobSpec::IfStats {
            interfaces: vec!["lo".into()],
            interval_ms: 20,
        };
        let stop = spawn_job(1, &spec, None, Arc::new(AtomicBool::new(false)), move |r| {
            let _ = tx.send(r);
        })
        .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
        stop.notify_one();
        let r = rx.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(r.passed, "{r:?}");
        let samples = r
            .data
            .as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples[0]["ifaces"]["lo"]["rx_packets"].is_u64());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spec = JobSpec::IfStats {
            interfaces: vec!["lo".into(), "nosuch0".into()],
            interval_ms: 20,
        };
        let stop = spawn_job(2, &spec, None, Arc::new(AtomicBool::new(false)), move |r| {
            let _ = tx.send(r);
        })
        .unwrap_or_else(|e| panic!("{e}"));
        stop.notify_one();
        let r = rx.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!r.passed);
        assert!(r.error.unwrap_or_default().contains("nosuch0"));
    }
}
