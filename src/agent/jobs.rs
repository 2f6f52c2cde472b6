//! Jobs: ping and iperf3 processes (argv only, own process group, optional CPU pinning) and
//! the in-process /proc/stat sampler.

use super::OpError;
use crate::protocol::{unix_now, ErrorKind, JobResult, JobSpec};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{watch, Notify};

/// Per-stream output cap. Smaller than the spec's 16 MiB so that a JobResult carrying both
/// streams still fits in one 16 MiB frame.
pub const OUTPUT_CAP: usize = 7 * 1024 * 1024;

/// Grace period between SIGINT and SIGKILL in StopJob.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a waiter needs of a job: its process group, result channel, killed flag, stop signal.
type JobHandle = (
    Arc<Mutex<Option<i32>>>,
    watch::Receiver<Option<JobResult>>,
    Arc<AtomicBool>,
    Option<Arc<Notify>>,
);

/// Render a process job as argv (None for the in-process CPU sampler).
pub fn render_argv(spec: &JobSpec) -> Option<Vec<String>> {
    spec.argv()
}

fn cpus_of(spec: &JobSpec) -> Option<&[u32]> {
    match spec {
        JobSpec::IperfServer { cpus, .. } | JobSpec::IperfClient { cpus, .. } => cpus.as_deref(),
        _ => None,
    }
}

/// Shortest CpuStat interval (upstream samples every second).
pub const MIN_CPU_INTERVAL: Duration = Duration::from_millis(10);

/// Whether `s` is an IP address literal (what recipes send as ping and iperf3 addresses; a
/// host name would make the tool resolve it, an option-like string would be an option).
fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// Validate a spec before running it. Every string that becomes an argv element is an IP
/// address literal, or (ping's `-I`) an interface name that [`super::net::check_ifname`]
/// accepts: nothing a controller sends can become an option of ping or iperf3.
pub fn validate(spec: &JobSpec) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError::new(ErrorKind::BadRequest, m));
    let shown = |s: &str| {
        let mut t: String = s.chars().take(64).collect();
        if s.chars().nth(64).is_some() {
            t.push('…');
        }
        t
    };
    if let Err(e) = super::rr::validate(spec) {
        return bad(e.to_string());
    }
    super::pktgen::validate(spec)?;
    validate_xdp(spec)?;
    match spec {
        JobSpec::Ping {
            dst,
            src,
            interval_s,
            count,
            ..
        } => {
            if !is_ip(dst) {
                return bad(format!(
                    "invalid ping destination {:?}: expected an IP address",
                    shown(dst)
                ));
            }
            if let Some(s) = src {
                if !is_ip(s) && super::net::check_ifname(s).is_err() {
                    return bad(format!(
                        "invalid ping source {:?}: expected an IP address or an interface name",
                        shown(s)
                    ));
                }
            }
            if !interval_s.is_finite() || *interval_s < 0.0 {
                return bad(format!("invalid ping interval {interval_s}"));
            }
            if *count == 0 {
                return bad("ping count must be at least 1".into());
            }
        }
        JobSpec::IperfServer { bind, .. } if !is_ip(bind) => {
            return bad(format!(
                "invalid iperf3 bind address {:?}: expected an IP address",
                shown(bind)
            ));
        }
        JobSpec::IperfClient { server, .. } if !is_ip(server) => {
            return bad(format!(
                "invalid iperf3 server {:?}: expected an IP address",
                shown(server)
            ));
        }
        JobSpec::Capture { device, filter } => {
            super::net::check_ifname(device)?;
            if let (Some(a), Some(b)) = (filter.src, filter.dst) {
                if a.is_ipv6() != b.is_ipv6() {
                    return bad(format!(
                        "capture filter: source {a} and destination {b} differ in family"
                    ));
                }
            }
        }
        JobSpec::CpuStat { interval_ms }
            if Duration::from_millis(*interval_ms) < MIN_CPU_INTERVAL =>
        {
            return bad(format!(
                "CpuStat interval {interval_ms} ms is below {} ms",
                MIN_CPU_INTERVAL.as_millis()
            ));
        }
        _ => {}
    }
    if let Some(cpus) = cpus_of(spec) {
        // Online, and inside the agent's own CPU set (a container's cpuset).
        super::tunables::check_cpus(cpus, true)?;
    }
    super::tunables::check_perf(spec)
}

/// The xdp-tools jobs: interface names, CPUs, durations.
fn validate_xdp(spec: &JobSpec) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError::new(ErrorKind::BadRequest, m));
    let times = |interval_s: u32, duration_s: u32| {
        if !(1..=3600).contains(&interval_s) {
            return bad(format!(
                "xdp-bench interval {interval_s} s is outside 1 to 3600"
            ));
        }
        if !(1..=super::pktgen::MAX_DURATION_S).contains(&duration_s) {
            return bad(format!(
                "xdp-bench duration {duration_s} s is outside 1 to {}",
                super::pktgen::MAX_DURATION_S
            ));
        }
        Ok(())
    };
    match spec {
        JobSpec::XdpBench {
            interface,
            interval_s,
            duration_s,
            ..
        } => {
            super::net::check_ifname(interface)?;
            times(*interval_s, *duration_s)
        }
        JobSpec::XdpBenchRedirectCpu {
            interface,
            cpus,
            qsize,
            interval_s,
            duration_s,
            ..
        } => {
            super::net::check_ifname(interface)?;
            times(*interval_s, *duration_s)?;
            if cpus.is_empty() {
                return bad("xdp-bench redirect-cpu needs at least one CPU".into());
            }
            if !(1..=16_384).contains(qsize) {
                return bad(format!(
                    "xdp-bench redirect-cpu qsize {qsize} is outside 1 to 16384"
                ));
            }
            super::tunables::check_cpus(cpus, false)
        }
        JobSpec::XdpForward {
            ingress, egress, ..
        } => {
            super::net::check_ifname(ingress)?;
            super::net::check_ifname(egress)
        }
        _ => Ok(()),
    }
}

/// When the agent ends a job by itself with SIGINT (xdp-bench runs until interrupted and
/// detaches its program then).
fn sigint_after(spec: &JobSpec) -> Option<Duration> {
    match spec {
        JobSpec::XdpBench { duration_s, .. } | JobSpec::XdpBenchRedirectCpu { duration_s, .. } => {
            Some(Duration::from_secs(u64::from(*duration_s)))
        }
        _ => None,
    }
}

/// Longest wait for an xdp-bench job to be ready (below the controller's 30 s request
/// timeout).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The xdp-tools release of `xdp-bench` (`xdp-bench version 1.3.1 using libbpf …`).
pub fn parse_xdp_bench_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split("version").nth(1)?.split_whitespace().next()?;
    let mut it = v
        .trim_start_matches('v')
        .split('.')
        .map(|x| x.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// Before xdp-tools 1.5.8, `xdp-bench redirect-cpu -e` sets another option's field instead of
/// the extended output mode (its option table names the wrong struct), so the per-CPU
/// kthread lines upstream reads never appear; the agent then switches the mode with SIGQUIT
/// (xdp-bench's own toggle) once the job is ready. Asked once per agent.
fn redirect_cpu_extended_flag_broken() -> bool {
    static BROKEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BROKEN.get_or_init(|| {
        let out = std::process::Command::new("xdp-bench")
            .args(["redirect-cpu", "--version"])
            .stdin(std::process::Stdio::null())
            .output();
        let text = out
            .map(|o| {
                let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                t.push_str(&String::from_utf8_lossy(&o.stderr));
                t
            })
            .unwrap_or_default();
        parse_xdp_bench_version(&text).is_some_and(|v| v < (1, 5, 8))
    })
}

/// Whether process `pid` blocks SIGINT (`SigBlk` of /proc/<pid>/status, bit 2−1).
fn sigint_blocked(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// Jobs whose stdout lines are kept with the time each was read (xdp-bench prints one
/// summary per interval; upstream timestamps every line as it arrives).
fn timed_lines(spec: &JobSpec) -> bool {
    matches!(
        spec,
        JobSpec::XdpBench { .. } | JobSpec::XdpBenchRedirectCpu { .. }
    )
}

/// One running or finished job.
struct Job {
    /// Process group id while the process runs.
    pgid: Arc<Mutex<Option<i32>>>,
    result: watch::Receiver<Option<JobResult>>,
    killed: Arc<AtomicBool>,
    /// CPU sampler stop signal.
    stop: Option<Arc<Notify>>,
    /// xdp-bench: SIGINT this long after it is ready ([`Jobs::wait_ready`]).
    interrupt_after: Option<Duration>,
    /// xdp-bench redirect-cpu whose `-e` does not work: SIGQUIT once ready.
    toggle_extended: bool,
    /// A capture: true once tcpdump says it is listening ([`Jobs::wait_ready`]).
    capturing: Option<watch::Receiver<bool>>,
}

/// The jobs of one controller session.
#[derive(Default)]
pub struct Jobs {
    next_id: Mutex<u64>,
    jobs: Mutex<HashMap<u64, Job>>,
}

type OnFinish = Arc<dyn Fn(JobResult) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    /// Start a job; `on_finish` is called with its result (to push the JobFinished event).
    pub fn start(&self, spec: JobSpec, on_finish: OnFinish) -> Result<u64, OpError> {
        self.start_in(spec, on_finish, None)
    }

    /// [`Jobs::start`] with the process joining the network namespace `netns` (an open
    /// `/proc/…/ns/net` descriptor, see [`super::netns`]) before it executes.
    pub fn start_in(
        &self,
        spec: JobSpec,
        on_finish: OnFinish,
        netns: Option<&std::os::fd::OwnedFd>,
    ) -> Result<u64, OpError> {
        validate(&spec)?;
        let interrupt_after = sigint_after(&spec);
        let toggle_extended = matches!(spec, JobSpec::XdpBenchRedirectCpu { .. })
            && redirect_cpu_extended_flag_broken();
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        let (tx, rx) = watch::channel(None);
        let killed = Arc::new(AtomicBool::new(false));
        let pgid = Arc::new(Mutex::new(None));
        let mut stop = None;
        let (capture_tx, capturing) = match &spec {
            JobSpec::Capture { .. } => {
                let (t, r) = watch::channel(false);
                (Some(t), Some(r))
            }
            _ => (None, None),
        };
        match render_argv(&spec) {
            Some(argv) => {
                let k = killed.clone();
                let pg = pgid.clone();
                // perf record writes into a directory the agent chooses (its working
                // directory); the file comes back in the result.
                let perf_dir = match &spec {
                    JobSpec::LinuxPerf { .. } => Some(super::tunables::perf_dir(id)),
                    _ => None,
                };
                // Spawn synchronously so the pgid is known before StartJob returns.
                let started_at = unix_now();
                let started = match &perf_dir {
                    Some(Err(e)) => Err(e.clone()),
                    Some(Ok(dir)) => spawn_process(id, &spec, &argv, netns, Some(dir)),
                    None => spawn_process(id, &spec, &argv, netns, None),
                };
                let perf_dir = perf_dir.and_then(Result::ok);
                if started.is_err() {
                    if let Some(d) = &perf_dir {
                        let _ = std::fs::remove_dir_all(d);
                    }
                }
                match started {
                    Ok((child, pid)) => {
                        *lock(&pg) = Some(pid);
                        tokio::spawn(async move {
                            let r = finish_process(id, &spec, child, started_at, pg, k, capture_tx)
                                .await;
                            let r = match perf_dir {
                                Some(d) => super::tunables::perf_collect(r, d).await,
                                None => r,
                            };
                            on_finish(r.clone());
                            let _ = tx.send(Some(r));
                        });
                    }
                    Err(err) => {
                        let now = unix_now();
                        let r = JobResult {
                            job_id: id,
                            passed: false,
                            exit_code: None,
                            signal: None,
                            stdout: String::new(),
                            stderr: String::new(),
                            started_at: now,
                            finished_at: now,
                            killed: false,
                            error: Some(err),
                            data: None,
                        };
                        tracing::warn!(
                            "job {id} could not start: {}",
                            r.error.as_deref().unwrap_or("")
                        );
                        on_finish(r.clone());
                        let _ = tx.send(Some(r));
                    }
                }
            }
            None if super::rr::is_rr(&spec) => {
                let done = move |r: JobResult| {
                    on_finish(r.clone());
                    let _ = tx.send(Some(r));
                };
                let n = super::rr::spawn_job(id, &spec, killed.clone(), done)
                    .map_err(|e| OpError::new(ErrorKind::BadRequest, e.to_string()))?;
                stop = Some(n);
            }
            None if super::pktgen::is_inproc(&spec) => {
                let done = move |r: JobResult| {
                    on_finish(r.clone());
                    let _ = tx.send(Some(r));
                };
                let ns = match netns.map(|fd| fd.try_clone()).transpose() {
                    Ok(ns) => ns,
                    Err(e) => {
                        return Err(OpError::new(
                            ErrorKind::Internal,
                            format!("duplicating the namespace descriptor: {e}"),
                        ))
                    }
                };
                stop = Some(super::pktgen::spawn_job(
                    id,
                    &spec,
                    ns,
                    killed.clone(),
                    done,
                )?);
            }
            None => {
                let JobSpec::CpuStat { interval_ms } = spec else {
                    return Err(OpError::new(ErrorKind::Internal, "job without argv"));
                };
                let n = Arc::new(Notify::new());
                stop = Some(n.clone());
                let k = killed.clone();
                tokio::spawn(async move {
                    let r = cpu_sampler(id, Duration::from_millis(interval_ms), n, k).await;
                    on_finish(r.clone());
                    let _ = tx.send(Some(r));
                });
            }
        }
        lock(&self.jobs).insert(
            id,
            Job {
                pgid,
                result: rx,
                killed,
                stop,
                interrupt_after,
                toggle_extended,
                capturing,
            },
        );
        Ok(id)
    }

    /// For a job the agent interrupts itself (xdp-bench): wait until it is ready, then arm the
    /// SIGINT for its duration. xdp-bench is ready once it blocks SIGINT (it reads signals
    /// from a signalfd after attaching its program and setting up its statistics): an earlier
    /// SIGINT would kill it with its program still attached, and under TCG loading a program
    /// takes seconds. Waits [`READY_TIMEOUT`] at most (then arms the SIGINT anyway); returns
    /// at once for other jobs and for a job that already ended.
    pub async fn wait_ready(&self, id: u64) {
        let (pgid, after, rx, toggle, capturing) = {
            let jobs = lock(&self.jobs);
            let Some(j) = jobs.get(&id) else { return };
            (
                j.pgid.clone(),
                j.interrupt_after,
                j.result.clone(),
                j.toggle_extended,
                j.capturing.clone(),
            )
        };
        if let Some(mut listening) = capturing {
            // tcpdump has opened its socket and set its filter once it says "listening on"
            // (or it ended: the result tells why).
            let t0 = std::time::Instant::now();
            let mut rx = rx;
            let ready = tokio::time::timeout(READY_TIMEOUT, async {
                tokio::select! {
                    _ = listening.wait_for(|l| *l) => {}
                    _ = rx.wait_for(|r| r.is_some()) => {}
                }
            })
            .await;
            if ready.is_err() {
                tracing::warn!(
                    "job {id}: the capture did not say it was listening within {} s",
                    READY_TIMEOUT.as_secs()
                );
            }
            tracing::debug!(
                "job {id}: capturing after {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            return;
        }
        let Some(after) = after else { return };
        let t0 = std::time::Instant::now();
        loop {
            if rx.borrow().is_some() {
                return;
            }
            let pid = *lock(&pgid);
            let Some(pid) = pid else { return };
            if sigint_blocked(pid) {
                break;
            }
            if t0.elapsed() >= READY_TIMEOUT {
                tracing::warn!(
                    "job {id}: not ready after {} s; interrupting it after its duration anyway",
                    READY_TIMEOUT.as_secs()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::debug!("job {id}: ready after {:.2} s", t0.elapsed().as_secs_f64());
        if toggle {
            // xdp-bench switches between its simple and extended output on SIGQUIT.
            signal_group(&pgid, Signal::SIGQUIT);
        }
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            signal_group(&pgid, Signal::SIGINT);
        });
    }

    fn handle(&self, id: u64) -> Result<JobHandle, OpError> {
        let jobs = lock(&self.jobs);
        let j = jobs
            .get(&id)
            .ok_or_else(|| OpError::new(ErrorKind::NotFound, format!("no such job: {id}")))?;
        Ok((
            j.pgid.clone(),
            j.result.clone(),
            j.killed.clone(),
            j.stop.clone(),
        ))
    }

    /// Wait for a job's result.
    pub async fn wait(&self, id: u64, timeout: Duration) -> Result<JobResult, OpError> {
        let (_, rx, _, _) = self.handle(id)?;
        wait_result(rx, timeout).await.ok_or_else(|| {
            OpError::new(
                ErrorKind::Timeout,
                format!("job {id} still running after {} ms", timeout.as_millis()),
            )
        })
    }

    /// SIGINT (or stop the sampler), then SIGKILL after [`STOP_GRACE`].
    pub async fn stop(&self, id: u64) -> Result<JobResult, OpError> {
        let (pgid, rx, killed, stop) = self.handle(id)?;
        if let Some(r) = rx.borrow().clone() {
            return Ok(r);
        }
        killed.store(true, Ordering::SeqCst);
        if let Some(n) = stop {
            n.notify_one();
        } else {
            signal_group(&pgid, Signal::SIGINT);
        }
        if let Some(r) = wait_result(rx.clone(), STOP_GRACE).await {
            return Ok(r);
        }
        signal_group(&pgid, Signal::SIGKILL);
        self.wait(id, Duration::from_secs(5)).await
    }

    /// SIGKILL (or stop the sampler) and return the result.
    pub async fn kill(&self, id: u64) -> Result<JobResult, OpError> {
        let (pgid, rx, killed, stop) = self.handle(id)?;
        if let Some(r) = rx.borrow().clone() {
            return Ok(r);
        }
        killed.store(true, Ordering::SeqCst);
        if let Some(n) = stop {
            n.notify_one();
        }
        signal_group(&pgid, Signal::SIGKILL);
        self.wait(id, Duration::from_secs(5)).await
    }

    /// Kill every running job and wait (bounded) for them to be reaped.
    pub async fn kill_all(&self) {
        let ids: Vec<u64> = lock(&self.jobs).keys().copied().collect();
        let waits = ids.into_iter().map(|id| async move {
            if let Err(e) = self.kill(id).await {
                tracing::warn!("killing job {id}: {e}");
            }
        });
        futures::future::join_all(waits).await;
    }
}

async fn wait_result(
    mut rx: watch::Receiver<Option<JobResult>>,
    timeout: Duration,
) -> Option<JobResult> {
    let fut = async {
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return Some(r);
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

fn signal_group(pgid: &Mutex<Option<i32>>, sig: Signal) {
    if let Some(pid) = *lock(pgid) {
        if let Err(e) = killpg(Pid::from_raw(pid), sig) {
            tracing::debug!("killpg({pid}, {sig}): {e}");
        }
    }
}

fn spawn_process(
    id: u64,
    spec: &JobSpec,
    argv: &[String],
    netns: Option<&std::os::fd::OwnedFd>,
    cwd: Option<&std::path::Path>,
) -> Result<(tokio::process::Child, i32), String> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args.iter().map(OsString::from))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    if let Some(cpus) = cpus_of(spec) {
        let mut set = nix::sched::CpuSet::new();
        for c in cpus {
            set.set(*c as usize)
                .map_err(|e| format!("CPU {c} out of range: {e}"))?;
        }
        // SAFETY: the closure only calls sched_setaffinity (a plain syscall, async-signal-safe)
        // on a CpuSet built before fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
            });
        }
    }
    if let Some(fd) = netns {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        // SAFETY: setns is a plain syscall (async-signal-safe) on a descriptor that the caller
        // keeps open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    tracing::info!("job {id}: {}", argv.join(" "));
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{prog}: not found in PATH")
        } else {
            format!("{prog}: {e}")
        }
    })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| format!("{prog}: no pid"))?;
    Ok((child, pid))
}

/// Read a stream to the end, keeping at most `cap` bytes.
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>, cap: usize) -> (String, bool) {
    read_capped_watching(r, cap, None).await
}

/// What tcpdump writes to stderr once its capture is open and filtered.
const CAPTURE_LISTENING: &[u8] = b"listening on ";

/// [`read_capped`], telling `watch.1` as soon as the output holds `watch.0`.
async fn read_capped_watching<R: AsyncRead + Unpin>(
    r: Option<R>,
    cap: usize,
    mut watch: Option<(&'static [u8], watch::Sender<bool>)>,
) -> (String, bool) {
    let Some(mut r) = r else {
        return (String::new(), false);
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                let take = n.min(room);
                if take < n {
                    truncated = true;
                }
                let before = out.len();
                out.extend_from_slice(buf.get(..take).unwrap_or_default());
                if let Some((marker, tx)) = &watch {
                    // Only where the new bytes can complete the marker.
                    let from = before.saturating_sub(marker.len().saturating_sub(1));
                    let tail = out.get(from..).unwrap_or_default();
                    if tail.windows(marker.len()).any(|w| w == *marker) {
                        let _ = tx.send(true);
                        watch = None;
                    }
                }
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), truncated)
}

async fn finish_process(
    id: u64,
    spec: &JobSpec,
    mut child: tokio::process::Child,
    started_at: f64,
    pgid: Arc<Mutex<Option<i32>>>,
    killed: Arc<AtomicBool>,
    listening: Option<watch::Sender<bool>>,
) -> JobResult {
    use std::os::unix::process::ExitStatusExt;
    let timed = timed_lines(spec);
    let out = tokio::spawn(read_capped_lines(child.stdout.take(), OUTPUT_CAP, timed));
    let err = tokio::spawn(read_capped_watching(
        child.stderr.take(),
        OUTPUT_CAP,
        listening.map(|tx| (CAPTURE_LISTENING, tx)),
    ));
    let status = child.wait().await;
    // The leader is reaped; do not signal a group id that may be reused.
    *lock(&pgid) = None;
    let (stdout, out_trunc, lines) = out.await.unwrap_or_default();
    let (stderr, err_trunc) = err.await.unwrap_or_default();
    let finished_at = unix_now();
    let mut error = None;
    let (exit_code, signal) = match &status {
        Ok(s) => (s.code(), s.signal()),
        Err(e) => {
            error = Some(format!("waiting for the process: {e}"));
            (None, None)
        }
    };
    if out_trunc || err_trunc {
        error = Some(format!(
            "output truncated to {} MiB per stream",
            OUTPUT_CAP / (1024 * 1024)
        ));
    }
    let passed = exit_code.is_some_and(|c| spec.exit_code_passes(c)) && status.is_ok();
    tracing::info!("job {id} finished: exit {exit_code:?} signal {signal:?} passed {passed}");
    JobResult {
        job_id: id,
        passed,
        exit_code,
        signal,
        stdout,
        stderr,
        started_at,
        finished_at,
        killed: killed.load(Ordering::SeqCst),
        error,
        data: timed.then(|| {
            serde_json::Value::Array(
                lines
                    .into_iter()
                    .map(|(t, l)| serde_json::json!({"t": t, "line": l}))
                    .collect(),
            )
        }),
    }
}

/// [`read_capped`], and with `timed` every line with the time it was read.
async fn read_capped_lines<R: AsyncRead + Unpin>(
    r: Option<R>,
    cap: usize,
    timed: bool,
) -> (String, bool, Vec<(f64, String)>) {
    if !timed {
        let (s, t) = read_capped(r, cap).await;
        return (s, t, Vec::new());
    }
    use tokio::io::AsyncBufReadExt;
    let Some(r) = r else {
        return (String::new(), false, Vec::new());
    };
    let mut reader = tokio::io::BufReader::new(r);
    let (mut out, mut lines, mut truncated) = (String::new(), Vec::new(), false);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).into_owned();
                if out.len() + line.len() > cap {
                    truncated = true;
                    continue;
                }
                out.push_str(&line);
                lines.push((unix_now(), line.trim_end_matches(['\n', '\r']).to_string()));
            }
        }
    }
    (out, truncated, lines)
}

/// The `cpu*` lines of a /proc/stat text.
pub fn cpu_lines(stat: &str) -> String {
    let mut s = String::new();
    for l in stat.lines().filter(|l| l.starts_with("cpu")) {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Sample /proc/stat every `interval` (first sample immediately) until `stop` fires.
pub async fn cpu_sampler(
    id: u64,
    interval: Duration,
    stop: Arc<Notify>,
    killed: Arc<AtomicBool>,
) -> JobResult {
    sample_loop(id, interval, stop, killed, "/proc/stat").await
}

async fn sample_loop(
    id: u64,
    interval: Duration,
    stop: Arc<Notify>,
    killed: Arc<AtomicBool>,
    path: &str,
) -> JobResult {
    let started_at = unix_now();
    let mut samples = Vec::new();
    // The samples stay in memory until the job is stopped: cap them like process output.
    let mut kept = 0usize;
    let mut error = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            _ = ticker.tick() => {
                if kept >= OUTPUT_CAP {
                    continue;
                }
                match tokio::fs::read_to_string(path).await {
                    Ok(text) => {
                        let text = cpu_lines(&text);
                        kept += text.len() + 32;
                        samples.push(serde_json::json!({
                            "t": unix_now(),
                            "text": text,
                        }));
                    }
                    Err(e) => {
                        error = Some(format!("reading {path}: {e}"));
                        break;
                    }
                }
            }
        }
    }
    let passed = error.is_none() && !samples.is_empty();
    if kept >= OUTPUT_CAP && error.is_none() {
        error = Some(format!(
            "CPU samples truncated at {} MiB",
            OUTPUT_CAP / (1024 * 1024)
        ));
    }
    JobResult {
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
        data: Some(serde_json::Value::Array(samples)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::IperfProto;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test]
    async fn a_capture_is_ready_when_tcpdump_says_listening_even_across_reads() {
        use tokio::io::AsyncWriteExt;
        let (mut w, r) = tokio::io::duplex(64);
        let (tx, mut ready) = watch::channel(false);
        let reader = tokio::spawn(read_capped_watching(
            Some(r),
            1024,
            Some((CAPTURE_LISTENING, tx)),
        ));
        let step = Duration::from_millis(100);
        w.write_all(b"tcpdump: verbose output suppressed\nlisten")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let early = tokio::time::timeout(step, ready.wait_for(|l| *l))
            .await
            .is_err();
        assert!(early, "ready before tcpdump said it listens");
        w.write_all(b"ing on eth0, link-type EN10MB\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let on_time = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|l| *l))
            .await
            .is_ok();
        assert!(on_time, "not ready after 'listening on'");
        drop(w);
        let (text, truncated) = reader.await.unwrap_or_default();
        assert!(!truncated);
        assert!(
            text.ends_with("listening on eth0, link-type EN10MB\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_capture_that_never_listens_is_never_ready() {
        let (tx, ready) = watch::channel(false);
        let text: &[u8] = b"tcpdump: eth9: No such device exists\n";
        let (out, _) = read_capped_watching(Some(text), 1024, Some((CAPTURE_LISTENING, tx))).await;
        assert!(out.contains("No such device"));
        assert!(!*ready.borrow());
    }

    #[test]
    fn xdp_bench_versions() {
        assert_eq!(
            parse_xdp_bench_version("xdp-bench version 1.3.1 using libbpf version 1.1.2"),
            Some((1, 3, 1))
        );
        assert_eq!(
            parse_xdp_bench_version("xdp-bench version v1.5.8"),
            Some((1, 5, 8))
        );
        assert_eq!(parse_xdp_bench_version("Command unknown"), None);
        assert!((1, 3, 1) < (1, 5, 8) && (1, 6, 0) >= (1, 5, 8));
    }

    #[test]
    fn ping_argv() {
        let spec = JobSpec::Ping {
            dst: "198.18.101.2".into(),
            src: Some("198.18.101.1".into()),
            count: 100,
            interval_s: 0.2,
            size: Some(56),
            ipv6: false,
        };
        assert_eq!(
            render_argv(&spec),
            Some(s(&[
                "ping",
                "198.18.101.2",
                "-c",
                "100",
                "-i",
                "0.200000",
                "-I",
                "198.18.101.1",
                "-s",
                "56"
            ]))
        );
        let spec6 = JobSpec::Ping {
            dst: "fd00::2".into(),
            src: None,
            count: 3,
            interval_s: 1.0,
            size: None,
            ipv6: true,
        };
        assert_eq!(
            render_argv(&spec6),
            Some(s(&["ping", "fd00::2", "-6", "-c", "3", "-i", "1.000000"]))
        );
    }

    #[test]
    fn iperf_argv() {
        let srv = JobSpec::IperfServer {
            bind: "198.18.101.2".into(),
            port: 12000,
            cpus: Some(vec![0, 1]),
            oneoff: true,
        };
        assert_eq!(
            render_argv(&srv),
            Some(s(&[
                "iperf3",
                "-s",
                "-B",
                "198.18.101.2",
                "-J",
                "-p",
                "12000",
                "-1"
            ]))
        );
        let cli = JobSpec::IperfClient {
            server: "198.18.101.2".into(),
            port: 12000,
            cport: Some(12000),
            duration_s: 60,
            proto: IperfProto::Sctp,
            blksize: Some(123),
            parallel: None,
            cpus: None,
        };
        assert_eq!(
            render_argv(&cli),
            Some(s(&[
                "iperf3",
                "-c",
                "198.18.101.2",
                "-b",
                "0/1000",
                "-J",
                "-t",
                "60",
                "--sctp",
                "-l",
                "123",
                "-p",
                "12000",
                "--cport",
                "12000"
            ]))
        );
        let udp = JobSpec::IperfClient {
            server: "fd00::2".into(),
            port: 12000,
            cport: None,
            duration_s: 70,
            proto: IperfProto::Udp,
            blksize: None,
            parallel: Some(2),
            cpus: None,
        };
        assert_eq!(
            render_argv(&udp),
            Some(s(&[
                "iperf3", "-c", "fd00::2", "-b", "0/1000", "-J", "-t", "70", "--udp", "-P", "2",
                "-p", "12000"
            ]))
        );
        assert_eq!(render_argv(&JobSpec::CpuStat { interval_ms: 5 }), None);
    }

    #[test]
    fn validation() {
        let ping = |dst: &str, src: Option<&str>| JobSpec::Ping {
            dst: dst.into(),
            src: src.map(String::from),
            count: 1,
            interval_s: 0.2,
            size: None,
            ipv6: false,
        };
        assert!(validate(&ping("198.18.0.1", None)).is_ok());
        assert!(validate(&ping("fd00::1", Some("fd00::2"))).is_ok());
        assert!(validate(&ping("198.18.0.1", Some("eth0"))).is_ok());
        for (dst, src) in [
            ("-f", None),
            ("198.18.0.1", Some("--flood")),
            ("localhost", None),
            ("198.18.0.1 -f", None),
            ("", None),
            ("198.18.0.1", Some("")),
            ("198.18.0.1", Some("a b")),
            ("198.18.0.1", Some("-I")),
        ] {
            assert!(validate(&ping(dst, src)).is_err(), "{dst:?} {src:?}");
        }
        let srv = |cpus: Vec<u32>| JobSpec::IperfServer {
            bind: "198.18.0.1".into(),
            port: 1,
            cpus: Some(cpus),
            oneoff: false,
        };
        assert!(validate(&srv(vec![0])).is_ok());
        assert!(validate(&srv(vec![])).is_err());
        assert!(validate(&srv(vec![1_000_000])).is_err());
        assert!(validate(&JobSpec::CpuStat { interval_ms: 0 }).is_err());
        assert!(validate(&JobSpec::CpuStat { interval_ms: 9 }).is_err());
        assert!(validate(&JobSpec::CpuStat {
            interval_ms: u64::MAX
        })
        .is_ok());
        assert!(validate(&JobSpec::CpuStat { interval_ms: 1000 }).is_ok());
        let bind = |b: &str| JobSpec::IperfServer {
            bind: b.into(),
            port: 1,
            cpus: None,
            oneoff: true,
        };
        assert!(validate(&bind("fd00::1")).is_ok());
        for b in ["--logfile=/etc/passwd", "localhost", "-J", ""] {
            assert!(validate(&bind(b)).is_err(), "{b:?}");
        }
        let client = |s: &str| JobSpec::IperfClient {
            server: s.into(),
            port: 1,
            cport: None,
            duration_s: 1,
            proto: IperfProto::Tcp,
            blksize: None,
            parallel: None,
            cpus: None,
        };
        assert!(validate(&client("198.18.0.2")).is_ok());
        for b in ["--logfile", "example.org", "198.18.0.2 -R"] {
            assert!(validate(&client(b)).is_err(), "{b:?}");
        }
    }

    #[test]
    fn cpu_lines_filter() {
        let stat = "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 0 0 0 0 0 0\nintr 12345 0\nctxt 99\ncpu1 5 0 3 50 0 0 0 0 0 0\nbtime 1\n";
        assert_eq!(
            cpu_lines(stat),
            "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 0 0 0 0 0 0\ncpu1 5 0 3 50 0 0 0 0 0 0\n"
        );
    }

    #[tokio::test]
    async fn sampler_samples_until_stopped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("stat");
        std::fs::write(
            &path,
            "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 5\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(Notify::new());
        let killed = Arc::new(AtomicBool::new(true));
        let p = path.to_string_lossy().into_owned();
        let st = stop.clone();
        let task =
            tokio::spawn(
                async move { sample_loop(7, Duration::from_millis(20), st, killed, &p).await },
            );
        tokio::time::sleep(Duration::from_millis(110)).await;
        stop.notify_one();
        let r = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.job_id, 7);
        assert!(r.passed);
        assert!(r.killed);
        let data = r.data.unwrap_or_default();
        let arr = data.as_array().cloned().unwrap_or_default();
        // About 5 samples; a loaded machine (tests run in parallel) may delay the first ones,
        // and the upper bound is what shows the loop stopped.
        assert!(
            (1..=8).contains(&arr.len()),
            "expected about 5 samples, got {}",
            arr.len()
        );
        let mut prev = 0.0;
        for smp in &arr {
            assert_eq!(
                smp["text"],
                "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
            );
            let t = smp["t"].as_f64().unwrap_or(0.0);
            assert!(t >= prev && t >= r.started_at - 1.0);
            prev = t;
        }
        // A missing file fails the job with a reason.
        let stop = Arc::new(Notify::new());
        let r = sample_loop(
            8,
            Duration::from_millis(10),
            stop,
            Arc::new(AtomicBool::new(false)),
            "/nonexistent/stat",
        )
        .await;
        assert!(!r.passed);
        assert!(r.error.unwrap_or_default().contains("/nonexistent/stat"));
    }

    #[tokio::test]
    async fn missing_tool_is_a_failed_job() {
        let jobs = Jobs::default();
        let spec = JobSpec::IperfServer {
            bind: "198.18.0.1".into(),
            port: 5,
            cpus: None,
            oneoff: true,
        };
        // Render, but spawn a program that does not exist.
        let r = spawn_process(1, &spec, &s(&["lnst-no-such-tool-xyz", "-s"]), None, None);
        assert_eq!(
            r.err(),
            Some("lnst-no-such-tool-xyz: not found in PATH".to_string())
        );
        assert!(jobs.wait(99, Duration::from_millis(1)).await.is_err());
    }
}

/// Whether a TCP socket listens on `port` in the calling thread's network namespace
/// (/proc/thread-self/net/tcp{,6}: /proc/net is the main thread's view, and a namespace
/// worker thread of [`super::netns`] lives in another namespace).
pub fn is_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .any(|f| {
            std::fs::read_to_string(f)
                .map(|t| {
                    t.lines().skip(1).any(|l| {
                        let mut cols = l.split_whitespace();
                        let local = cols.nth(1).unwrap_or("");
                        let state = cols.nth(1).unwrap_or("");
                        state == "0A" && local.ends_with(&want)
                    })
                })
                .unwrap_or(false)
        })
}

/// Poll until something listens on `port`, at most `limit`.
pub async fn wait_listening(port: u16, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !is_listening(port) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    use std::os::fd::AsRawFd;

    /// Fork a child that holds a copy of every descriptor of this process until it is killed,
    /// as a process forked by another test (a command about to exec) does for a moment.
    fn hold_descriptors() -> nix::unistd::Pid {
        // SAFETY: the child only calls async-signal-safe functions (pause, _exit).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => loop {
                // SAFETY: pause has no preconditions; it returns only on a handled signal.
                unsafe { libc::pause() };
            },
            nix::unistd::ForkResult::Parent { child } => child,
        }
    }

    #[test]
    fn sees_a_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(is_listening(port));
        // Closing our descriptor does not end the socket while a forked child holds a copy
        // (this test was flaky for that); shutting the socket down stops it listening,
        // whoever holds it.
        let holder = hold_descriptors();
        // SAFETY: shutdown on a descriptor `l` owns; no memory is passed.
        let rc = unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RD) };
        let stopped = is_listening(port);
        let _ = nix::sys::signal::kill(holder, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(holder, None);
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        assert!(!stopped, "port {port} still listening after shutdown");
    }
}
