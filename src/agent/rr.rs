//! Built-in request/response generator: `tcp_rr`, `tcp_crr` and `udp_rr`, the workloads
//! upstream LNST runs with neper (reference R§2.5). Ours, not a port: no package here provides
//! neper, so the agent carries its own.
//!
//! Design: plain threads with blocking sockets. A client thread drives its flows in lock-step
//! (each flow sends its request, then each flow reads its response), so with the default of
//! one thread per flow every flow is a simple blocking ping-pong. A coordinator thread per job
//! takes the samples (cumulative transactions, CPU time of the job's threads, latency sums)
//! every `interval_ms`, watches the deadline and the stop request, and at the end builds the
//! JSON report that is the job's stdout (the raw file of a flow, like iperf3's `-J` output).
//!
//! * tcp_rr: one connection per flow; a transaction is `request_size` bytes written and
//!   `response_size` bytes read back. Client latency: before the write to after the last byte
//!   of the response.
//! * tcp_crr: per transaction the client connects, writes the request, reads the response and
//!   closes with `SO_LINGER` 0 (an RST, so no TIME_WAIT exhausts the ephemeral ports, as
//!   neper's default). Latency: before connect to after the response. The server counts
//!   transactions too (upstream's neper server reports zeros for tcp_crr).
//! * udp_rr: one connected UDP socket per flow. The first `min(8, request, response)` bytes of
//!   a request carry its sequence number and the server echoes them; a response that does not
//!   come back within `loss_timeout_ms` counts as lost and the flow sends the next request; a
//!   late response with an old number is discarded (counted as stale).
//!
//! Stopping never depends on the peer: every socket is registered while open, and the
//! coordinator shuts them down (which wakes a blocked connect, accept or recv) when the job
//! must end and a thread did not finish on its own within a grace period.

use crate::protocol::{unix_now, JobResult, JobSpec, RrWorkload};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Largest request or response (TCP).
pub const MAX_MSG: u32 = 1 << 20;
/// Largest request or response of udp_rr (one IPv4 datagram).
pub const MAX_UDP_MSG: u32 = 65_507;
/// Most flows of a client, most concurrent connections of a tcp_rr server, most threads.
pub const MAX_FLOWS: u32 = 1024;
/// Longest test (one day).
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// Sample interval bounds and default.
pub const MIN_INTERVAL_MS: u64 = 10;
pub const MAX_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_INTERVAL_MS: u64 = 1000;
/// Most transactions per flow in fixed-count mode.
pub const MAX_TRANSACTIONS: u64 = 1_000_000_000_000;
/// udp_rr loss timeout bounds and default.
pub const MAX_LOSS_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_LOSS_TIMEOUT_MS: u64 = 200;
/// Samples kept; beyond, every other one is dropped and the interval doubles (samples are
/// cumulative, so dropping one merges two intervals exactly).
pub const MAX_SAMPLES: usize = 16_384;
/// Message buffers of one job together (one per flow, serving thread or connection).
pub const MAX_BUFFERS: usize = 256 << 20;
/// A server ends once it has seen traffic for `duration_ms` and then none for this long.
pub const IDLE_END: Duration = Duration::from_secs(2);
/// A server that never sees a client gives up `duration_ms` plus this after its start.
pub const NO_CLIENT_WAIT: Duration = Duration::from_secs(60);
/// A client gives up connecting its flows after this long.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// How long client threads may take to finish their transaction after the deadline before
/// their sockets are shut down.
pub const CLIENT_GRACE: Duration = Duration::from_secs(2);
/// How often the coordinator looks at the stop request, the deadline and the end rules.
const CHECK: Duration = Duration::from_millis(50);
/// Listen backlog of the TCP servers.
const BACKLOG: i32 = 1024;
/// Stack of every generator thread (buffers live on the heap).
const STACK: usize = 256 * 1024;
/// Percentiles in the report (neper prints them as `latency_p<N>`).
const PERCENTILES: [(f64, &str); 4] = [
    (50.0, "latency_p50"),
    (90.0, "latency_p90"),
    (99.0, "latency_p99"),
    (99.9, "latency_p99.9"),
];

/// Errors of the generator: bad parameters (before anything runs) and socket set-up.
#[derive(Debug, thiserror::Error)]
pub enum RrError {
    #[error("rr job: {field} = {value} is out of range {range}")]
    OutOfRange {
        field: &'static str,
        value: String,
        range: String,
    },
    #[error("rr job: {field} = {value:?} is not an IP address")]
    BadAddress {
        field: &'static str,
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("rr job: {0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RrError {
    let what = what.into();
    move |source| RrError::Io { what, source }
}

/// Which end of the workload a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

impl RrWorkload {
    /// Upstream's name (`tcp_rr`, `tcp_crr`, `udp_rr`).
    pub fn name(self) -> &'static str {
        match self {
            RrWorkload::TcpRr => "tcp_rr",
            RrWorkload::TcpCrr => "tcp_crr",
            RrWorkload::UdpRr => "udp_rr",
        }
    }
}

/// A validated job: every number bounded, every address parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RrConfig {
    pub role: Role,
    pub workload: RrWorkload,
    /// Server: the address it listens on. Client: the server's address.
    pub addr: SocketAddr,
    /// Client: the local address to bind.
    pub bind: Option<IpAddr>,
    pub request_size: usize,
    pub response_size: usize,
    pub duration: Duration,
    pub flows: usize,
    pub threads: usize,
    pub transactions: Option<u64>,
    pub interval: Duration,
    pub loss_timeout: Duration,
    pub cpus: Option<Vec<u32>>,
}

fn range_check<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, RrError> {
    if v < lo || v > hi {
        return Err(RrError::OutOfRange {
            field,
            value: v.to_string(),
            range: format!("{lo}..={hi}"),
        });
    }
    Ok(v)
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, RrError> {
    s.parse::<IpAddr>().map_err(|source| RrError::BadAddress {
        field,
        value: s.to_string(),
        source,
    })
}

/// Whether a spec is one of the generator's.
pub fn is_rr(spec: &JobSpec) -> bool {
    matches!(spec, JobSpec::RrServer { .. } | JobSpec::RrClient { .. })
}

impl RrConfig {
    /// Concurrent connections of a tcp_rr server: [`MAX_FLOWS`], fewer for messages so large
    /// that their buffers would pass [`MAX_BUFFERS`].
    pub fn max_connections(&self) -> usize {
        let per = self.request_size.max(self.response_size).max(1);
        (MAX_FLOWS as usize).min(MAX_BUFFERS / per).max(1)
    }

    /// Validate a spec; `Ok(None)` for specs that are not the generator's.
    pub fn from_spec(spec: &JobSpec) -> Result<Option<RrConfig>, RrError> {
        let (
            role,
            workload,
            addr,
            port,
            bind,
            req,
            resp,
            duration_ms,
            flows,
            threads,
            transactions,
            interval_ms,
            loss_ms,
            cpus,
        ) = match spec {
            JobSpec::RrServer {
                workload,
                bind,
                port,
                request_size,
                response_size,
                duration_ms,
                flows,
                threads,
                interval_ms,
                cpus,
            } => (
                Role::Server,
                *workload,
                parse_ip("bind", bind)?,
                *port,
                None,
                *request_size,
                *response_size,
                *duration_ms,
                *flows,
                *threads,
                None,
                *interval_ms,
                None,
                cpus,
            ),
            JobSpec::RrClient {
                workload,
                server,
                port,
                bind,
                request_size,
                response_size,
                duration_ms,
                flows,
                threads,
                transactions,
                interval_ms,
                loss_timeout_ms,
                cpus,
            } => (
                Role::Client,
                *workload,
                parse_ip("server", server)?,
                *port,
                bind.as_deref().map(|b| parse_ip("bind", b)).transpose()?,
                *request_size,
                *response_size,
                *duration_ms,
                *flows,
                *threads,
                *transactions,
                *interval_ms,
                *loss_timeout_ms,
                cpus,
            ),
            _ => return Ok(None),
        };
        range_check("port", port, 1, u16::MAX)?;
        let max_msg = if workload == RrWorkload::UdpRr {
            MAX_UDP_MSG
        } else {
            MAX_MSG
        };
        range_check("request_size", req, 1, max_msg)?;
        range_check("response_size", resp, 1, max_msg)?;
        range_check("duration_ms", duration_ms, 1, MAX_DURATION_MS)?;
        let flows = range_check("flows", flows.unwrap_or(1), 1, MAX_FLOWS)?;
        let threads = match role {
            Role::Client => range_check("threads", threads.unwrap_or(flows), 1, flows)?,
            Role::Server => range_check("threads", threads.unwrap_or(1), 1, MAX_FLOWS)?,
        };
        if let Some(n) = transactions {
            range_check("transactions", n, 1, MAX_TRANSACTIONS)?;
        }
        let interval_ms = range_check(
            "interval_ms",
            interval_ms.unwrap_or(DEFAULT_INTERVAL_MS),
            MIN_INTERVAL_MS,
            MAX_INTERVAL_MS,
        )?;
        let loss_ms = range_check(
            "loss_timeout_ms",
            loss_ms.unwrap_or(DEFAULT_LOSS_TIMEOUT_MS),
            1,
            MAX_LOSS_TIMEOUT_MS,
        )?;
        // One buffer of the larger message per client flow or per crr/udp serving thread
        // (tcp_rr servers limit their connections instead, see `max_connections`).
        let buffers = match (role, workload) {
            (Role::Client, _) => flows as usize,
            (Role::Server, RrWorkload::TcpRr) => 1,
            (Role::Server, _) => threads as usize,
        };
        let per = if role == Role::Server && workload == RrWorkload::UdpRr {
            MAX_UDP_MSG as usize + 1
        } else {
            req.max(resp) as usize
        };
        if buffers.saturating_mul(per) > MAX_BUFFERS {
            return Err(RrError::Invalid(format!(
                "{buffers} {} × {per}-byte buffers exceed {} MiB",
                if role == Role::Client {
                    "flows"
                } else {
                    "threads"
                },
                MAX_BUFFERS >> 20
            )));
        }
        if let Some(b) = bind {
            if b.is_ipv4() != addr.is_ipv4() {
                return Err(RrError::Invalid(format!(
                    "bind {b} and server {addr} are of different address families"
                )));
            }
        }
        if role == Role::Client && addr.is_unspecified() {
            return Err(RrError::Invalid(format!(
                "server {addr} is the unspecified address"
            )));
        }
        if let Some(c) = cpus {
            let max = nix::sched::CpuSet::count();
            if c.is_empty() {
                return Err(RrError::Invalid("empty CPU list".into()));
            }
            if c.len() > max {
                return Err(RrError::Invalid(format!("{} CPUs listed", c.len())));
            }
            if let Some(bad) = c.iter().find(|c| **c as usize >= max) {
                return Err(RrError::Invalid(format!("CPU {bad} out of range")));
            }
        }
        Ok(Some(RrConfig {
            role,
            workload,
            addr: SocketAddr::new(addr, port),
            bind,
            request_size: req as usize,
            response_size: resp as usize,
            duration: Duration::from_millis(duration_ms),
            flows: flows as usize,
            threads: threads as usize,
            transactions,
            interval: Duration::from_millis(interval_ms),
            loss_timeout: Duration::from_millis(loss_ms),
            cpus: cpus.clone(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------

/// Sub-buckets per power of two: 32, so a bucket spans at most 1/32 of its values.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

/// Log-linear histogram of nanosecond values: exact below 32 ns, then 32 buckets per power
/// of two (≤ 3.2 % relative width). Exact count, sum, sum of squares, min and max.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    pub n: u64,
    pub sum_ns: u128,
    pub sum_sq: f64,
    pub min_ns: u64,
    pub max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            n: 0,
            sum_ns: 0,
            sum_sq: 0.0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // ≥ SUB_BITS
    let shift = e - SUB_BITS;
    let mant = v >> shift; // in [SUB, 2·SUB)
    (((shift as u64 + 1) << SUB_BITS) + (mant - SUB)) as usize
}

/// Largest value of a bucket.
fn bucket_hi(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i >> SUB_BITS) - 1;
    let mant = u128::from(SUB + (i & (SUB - 1)));
    u64::try_from(((mant + 1) << shift) - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        if let Some(c) = self.counts.get_mut(bucket_of(ns)) {
            *c += 1;
        }
        self.n += 1;
        self.sum_ns += u128::from(ns);
        self.sum_sq += (ns as f64) * (ns as f64);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum_ns += o.sum_ns;
        self.sum_sq += o.sum_sq;
        self.min_ns = self.min_ns.min(o.min_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    /// The value at percentile `p` (0 < p ≤ 100): the upper bound of the bucket holding the
    /// ⌈p·n/100⌉-th smallest value, clamped to [min, max]. None when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_hi(i).clamp(self.min_ns, self.max_ns));
            }
        }
        Some(self.max_ns)
    }

    pub fn mean_ns(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum_ns as f64 / self.n as f64)
    }

    /// Population standard deviation (neper's).
    pub fn stddev_ns(&self) -> Option<f64> {
        let mean = self.mean_ns()?;
        let var = self.sum_sq / self.n as f64 - mean * mean;
        Some(var.max(0.0).sqrt())
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

/// One thread's live counters, written only by that thread and read by the coordinator.
#[repr(align(64))]
struct Slot {
    clock: libc::clockid_t,
    tx: AtomicU64,
    lat_ns: AtomicU64,
    /// f64 bits: Σ latency², ns².
    lat_sq: AtomicU64,
    /// When this thread began its first transaction (a server: completed it) and completed
    /// its latest one, ns after the job's start (`u64::MAX` and 0: none yet).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

fn own_cpu_clock() -> libc::clockid_t {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self() names the calling thread, which is alive; `id` is a valid
    // out-pointer for the duration of the call.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    if rc == 0 {
        id
    } else {
        libc::CLOCK_THREAD_CPUTIME_ID
    }
}

/// CPU time of a clock, ns (0 if it cannot be read).
fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; a stale clock id only makes the call fail.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl Slot {
    fn new() -> Slot {
        Slot {
            clock: own_cpu_clock(),
            tx: AtomicU64::new(0),
            lat_ns: AtomicU64::new(0),
            lat_sq: AtomicU64::new(0f64.to_bits()),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
        }
    }
}

/// Cumulative figures of a job at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Totals {
    tx: u64,
    lat_ns: u64,
    lat_sq: f64,
    cpu_ns: u64,
    /// Start of the first transaction (a server: its completion) and latest completion, ns
    /// after the job's start.
    first_ns: u64,
    last_ns: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            tx: 0,
            lat_ns: 0,
            lat_sq: 0.0,
            cpu_ns: 0,
            first_ns: u64::MAX,
            last_ns: 0,
        }
    }
}

impl Totals {
    fn add_slot(&mut self, s: &Slot, cpu_ns: u64) {
        self.tx += s.tx.load(Ordering::Relaxed);
        self.lat_ns += s.lat_ns.load(Ordering::Relaxed);
        self.lat_sq += f64::from_bits(s.lat_sq.load(Ordering::Relaxed));
        self.cpu_ns += cpu_ns;
        self.first_ns = self.first_ns.min(s.first_ns.load(Ordering::Relaxed));
        self.last_ns = self.last_ns.max(s.last_ns.load(Ordering::Relaxed));
    }
}

#[derive(Default)]
struct Registry {
    slots: Vec<Arc<Slot>>,
    /// Figures of threads that have ended.
    retired: Totals,
    /// Every open socket of the job, for a forced shutdown.
    sockets: HashMap<u64, Arc<Socket>>,
    next_key: u64,
}

#[derive(Default)]
struct Control {
    /// Stop requested from outside (StopJob, KillJob, session end).
    stop: bool,
    /// Generator threads alive.
    active: usize,
    /// Client threads that finished connecting (or failed to).
    ready: usize,
    /// Client threads may start.
    go: bool,
    /// First error of a thread.
    error: Option<String>,
    /// tcp servers: connections accepted, open now, turned away (over [`MAX_FLOWS`]).
    accepted: u64,
    live: usize,
    turned_away: u64,
}

struct Shared {
    cfg: RrConfig,
    /// The job's start: sample and completion times count from here.
    t0: Instant,
    unix0: f64,
    /// All threads must finish.
    halt: AtomicBool,
    reg: Mutex<Registry>,
    ctl: Mutex<Control>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn halted(&self) -> bool {
        self.halt.load(Ordering::Relaxed)
    }

    /// Make every thread stop (under the control lock, so no waiter misses the wake-up).
    fn halt_all(&self) {
        let _c = lock(&self.ctl);
        self.halt.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// Record the first error and make every thread stop.
    fn fail(&self, msg: String) {
        let mut c = lock(&self.ctl);
        if c.error.is_none() {
            c.error = Some(msg);
        }
        self.halt.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    fn totals(&self) -> Totals {
        let r = lock(&self.reg);
        let mut t = r.retired;
        for s in &r.slots {
            t.add_slot(s, clock_ns(s.clock));
        }
        t
    }

    fn track(&self, sock: Socket) -> Tracked<'_> {
        let sock = Arc::new(sock);
        let mut r = lock(&self.reg);
        r.next_key += 1;
        let key = r.next_key;
        r.sockets.insert(key, sock.clone());
        Tracked {
            sh: self,
            key,
            sock,
        }
    }

    /// Shut every open socket down: wakes threads blocked in connect, accept, recv or send.
    fn shutdown_all(&self) {
        let r = lock(&self.reg);
        for s in r.sockets.values() {
            // An unconnected UDP socket answers ENOTCONN but is woken all the same.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Wait until every thread ended, at most `limit`.
    fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut c = lock(&self.ctl);
        while c.active > 0 {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            c = match self.cv.wait_timeout(c, end - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// A registered socket; unregistered (and closed, once the last user drops it) on drop.
struct Tracked<'a> {
    sh: &'a Shared,
    key: u64,
    sock: Arc<Socket>,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        lock(&self.sh.reg).sockets.remove(&self.key);
    }
}

impl std::ops::Deref for Tracked<'_> {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        &self.sock
    }
}

/// Pin the calling thread to the job's CPUs, if it has any.
fn pin_this_thread(sh: &Shared) {
    if let Some(cpus) = &sh.cfg.cpus {
        let mut set = nix::sched::CpuSet::new();
        for c in cpus {
            let _ = set.set(*c as usize);
        }
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            sh.fail(format!("pinning to CPUs {cpus:?}: {e}"));
        }
    }
}

/// A generator thread's membership: pins the thread, registers its counters; on drop folds
/// them (and the thread's CPU time) into the job's totals and counts the thread out.
struct Member {
    sh: Arc<Shared>,
    slot: Arc<Slot>,
}

impl Member {
    /// Call first thing in a new thread; the spawner has already counted it in `active`.
    fn enter(sh: &Arc<Shared>) -> Member {
        pin_this_thread(sh);
        let slot = Arc::new(Slot::new());
        lock(&sh.reg).slots.push(slot.clone());
        Member {
            sh: sh.clone(),
            slot,
        }
    }

    /// Publish this thread's running figures after a transaction that began `began` (a
    /// client's request; a server passes the completion) completed `at`.
    #[inline]
    fn record(&self, tx: u64, lat_ns: u64, lat_sq: f64, began: Instant, at: Instant) {
        let since = |i: Instant| {
            let d = i.saturating_duration_since(self.sh.t0);
            d.as_secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(d.subsec_nanos()))
        };
        let at_ns = since(at);
        if tx == 1 {
            let first = if began == at { at_ns } else { since(began) };
            self.slot.first_ns.store(first, Ordering::Relaxed);
        }
        self.slot.last_ns.store(at_ns, Ordering::Relaxed);
        self.slot.tx.store(tx, Ordering::Relaxed);
        self.slot.lat_ns.store(lat_ns, Ordering::Relaxed);
        self.slot.lat_sq.store(lat_sq.to_bits(), Ordering::Relaxed);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        {
            let mut r = lock(&self.sh.reg);
            r.slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
            let cpu = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
            let mut t = r.retired;
            t.add_slot(&self.slot, cpu);
            r.retired = t;
        }
        let mut c = lock(&self.sh.ctl);
        c.active = c.active.saturating_sub(1);
        self.sh.cv.notify_all();
    }
}

/// Spawn a generator thread counted in `active`.
fn spawn_member<T: Send + 'static>(
    sh: &Arc<Shared>,
    name: String,
    f: impl FnOnce(Member) -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, RrError> {
    lock(&sh.ctl).active += 1;
    let sh2 = sh.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .stack_size(STACK)
        .spawn(move || {
            let m = Member::enter(&sh2);
            f(m)
        })
        .map_err(|e| {
            let mut c = lock(&sh.ctl);
            c.active = c.active.saturating_sub(1);
            RrError::Io {
                what: format!("starting thread {name}"),
                source: e,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

fn domain_of(a: &SocketAddr) -> Domain {
    if a.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

fn tcp_socket(cfg: &RrConfig) -> io::Result<Socket> {
    let s = Socket::new(domain_of(&cfg.addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_linger(Some(Duration::ZERO))?;
    if let Some(b) = cfg.bind {
        s.bind(&SockAddr::from(SocketAddr::new(b, 0)))?;
    }
    Ok(s)
}

fn udp_client_socket(cfg: &RrConfig) -> io::Result<Socket> {
    let s = Socket::new(domain_of(&cfg.addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(b) = cfg.bind {
        s.bind(&SockAddr::from(SocketAddr::new(b, 0)))?;
    }
    s.connect(&SockAddr::from(cfg.addr))?;
    s.set_read_timeout(Some(cfg.loss_timeout))?;
    Ok(s)
}

fn server_socket(cfg: &RrConfig) -> Result<Socket, RrError> {
    let what = format!("{} server on {}", cfg.workload.name(), cfg.addr);
    let (ty, proto) = if cfg.workload == RrWorkload::UdpRr {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let s = Socket::new(domain_of(&cfg.addr), ty, Some(proto)).map_err(io_err(what.clone()))?;
    s.set_reuse_address(true).map_err(io_err(what.clone()))?;
    s.bind(&SockAddr::from(cfg.addr))
        .map_err(io_err(format!("{what}: bind")))?;
    if cfg.workload != RrWorkload::UdpRr {
        s.listen(BACKLOG)
            .map_err(io_err(format!("{what}: listen")))?;
    }
    Ok(s)
}

/// Socket I/O by direct system calls. glibc's `send`/`recv` wrappers are cancellation
/// points: in a multi-threaded process (the agent) each call switches asynchronous
/// cancellation on and off around the system call, which a single-threaded program skips.
/// Rust never cancels threads, so the generator's loops call the kernel directly: about 1 %
/// of a loopback transaction (bench/rr-report.md).
mod sys {
    use std::io;
    use std::os::fd::RawFd;

    fn ret(r: libc::c_long) -> io::Result<usize> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// `sendto(fd, buf, MSG_NOSIGNAL, addr)`; `addr` None on a connected socket.
    pub fn send(
        fd: RawFd,
        buf: &[u8],
        addr: Option<(&libc::sockaddr_storage, libc::socklen_t)>,
    ) -> io::Result<usize> {
        let (a, alen) = addr.map_or((std::ptr::null(), 0), |(a, l)| {
            (
                a as *const libc::sockaddr_storage as *const libc::sockaddr,
                l,
            )
        });
        // SAFETY: `buf` is valid for `buf.len()` bytes and `a` (when not null) for `alen`
        // bytes during the call; the kernel only reads them. Every argument is passed as a
        // c_long, the width the variadic syscall() reads.
        ret(unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd as libc::c_long,
                buf.as_ptr() as libc::c_long,
                buf.len() as libc::c_long,
                libc::MSG_NOSIGNAL as libc::c_long,
                a as libc::c_long,
                alen as libc::c_long,
            )
        })
    }

    /// `recvfrom(fd, buf, 0, addr)`; with `addr`, the sender's address is stored there.
    pub fn recv(
        fd: RawFd,
        buf: &mut [u8],
        addr: Option<(&mut libc::sockaddr_storage, &mut libc::socklen_t)>,
    ) -> io::Result<usize> {
        let (a, alen) = match addr {
            Some((a, l)) => {
                *l = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                (
                    a as *mut libc::sockaddr_storage as *mut libc::sockaddr,
                    l as *mut libc::socklen_t,
                )
            }
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        // SAFETY: `buf` is writable for `buf.len()` bytes, `a` (when not null) for the
        // `*alen` bytes of a sockaddr_storage, `alen` is a valid socklen_t; all outlive the
        // call. Arguments are passed as c_long (see `send`).
        ret(unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                fd as libc::c_long,
                buf.as_mut_ptr() as libc::c_long,
                buf.len() as libc::c_long,
                0 as libc::c_long,
                a as libc::c_long,
                alen as libc::c_long,
            )
        })
    }

    pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match send(fd, buf, None) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = buf.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn read_exact(fd: RawFd, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match recv(fd, buf, None) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the peer",
                    ))
                }
                Ok(n) => buf = std::mem::take(&mut buf).get_mut(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An all-zero sockaddr_storage (a valid value of this plain C struct).
fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a C struct of integers, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Bytes of a request that carry the sequence number (udp_rr).
fn tag_len(cfg: &RrConfig) -> usize {
    cfg.request_size.min(cfg.response_size).min(8)
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// One client flow's result.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlowOut {
    pub flow: usize,
    pub transactions: u64,
    /// udp_rr: requests whose response did not come back in time.
    pub lost: u64,
    /// udp_rr: responses that came back too late (an old sequence number).
    pub stale: u64,
    /// Connections made (tcp_rr: 1; tcp_crr: one per transaction).
    pub connections: u64,
}

struct ClientOut {
    flows: Vec<FlowOut>,
    histo: Histogram,
}

/// Per-thread running figures.
struct Acc {
    tx: u64,
    lat_ns: u64,
    lat_sq: f64,
    histo: Histogram,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            tx: 0,
            lat_ns: 0,
            lat_sq: 0.0,
            histo: Histogram::default(),
        }
    }
    #[inline]
    fn done(&mut self, m: &Member, t1: Instant, t2: Instant) {
        let ns = u64::try_from(t2.duration_since(t1).as_nanos()).unwrap_or(u64::MAX);
        self.tx += 1;
        self.lat_ns = self.lat_ns.saturating_add(ns);
        self.lat_sq += (ns as f64) * (ns as f64);
        self.histo.record(ns);
        m.record(self.tx, self.lat_ns, self.lat_sq, t1, t2);
    }
}

/// Signal "connected" and wait for the start (or the end).
fn ready_and_wait(sh: &Shared) {
    let mut c = lock(&sh.ctl);
    c.ready += 1;
    sh.cv.notify_all();
    while !c.go && !sh.halted() {
        c = match sh.cv.wait(c) {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
    }
}

fn client_thread(sh: Arc<Shared>, m: Member, flows: Vec<usize>) -> ClientOut {
    let cfg = &sh.cfg;
    let mut out: Vec<FlowOut> = flows
        .iter()
        .map(|f| FlowOut {
            flow: *f,
            ..FlowOut::default()
        })
        .collect();
    let mut acc = Acc::new();
    let r = match cfg.workload {
        RrWorkload::TcpRr => client_tcp_rr(&sh, &m, &mut out, &mut acc),
        RrWorkload::TcpCrr => {
            ready_and_wait(&sh);
            client_tcp_crr(&sh, &m, &mut out, &mut acc)
        }
        RrWorkload::UdpRr => client_udp_rr(&sh, &m, &mut out, &mut acc),
    };
    if let Err(e) = r {
        if !sh.halted() {
            sh.fail(e);
        }
    }
    drop(m);
    ClientOut {
        flows: out,
        histo: acc.histo,
    }
}

fn limit_reached(cfg: &RrConfig, f: &FlowOut) -> bool {
    cfg.transactions.is_some_and(|n| f.transactions >= n)
}

fn client_tcp_rr(
    sh: &Shared,
    m: &Member,
    out: &mut [FlowOut],
    acc: &mut Acc,
) -> Result<(), String> {
    let cfg = &sh.cfg;
    let mut socks = Vec::with_capacity(out.len());
    let mut failed = None;
    for f in out.iter_mut() {
        let r = tcp_socket(cfg).map(|s| sh.track(s)).and_then(|s| {
            s.connect(&SockAddr::from(cfg.addr))?;
            Ok(s)
        });
        match r {
            Ok(s) => {
                f.connections = 1;
                socks.push(s);
            }
            Err(e) => {
                failed = Some(format!("flow {}: connecting to {}: {e}", f.flow, cfg.addr));
                break;
            }
        }
    }
    if let Some(e) = failed {
        sh.fail(e.clone());
        ready_and_wait(sh);
        return Err(e);
    }
    ready_and_wait(sh);
    let ids: Vec<usize> = out.iter().map(|f| f.flow).collect();
    let id = |i: usize| ids.get(i).copied().unwrap_or(i);
    let mut buf = vec![0u8; cfg.request_size.max(cfg.response_size)];
    let mut t1 = vec![Instant::now(); socks.len()];
    let mut active: Vec<bool> = out.iter().map(|f| !limit_reached(cfg, f)).collect();
    while !sh.halted() && active.iter().any(|a| *a) {
        for (i, s) in socks.iter().enumerate() {
            if !active.get(i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(t) = t1.get_mut(i) {
                *t = Instant::now();
            }
            let req = buf.get(..cfg.request_size).unwrap_or_default();
            sys::write_all(s.as_raw_fd(), req)
                .map_err(|e| format!("flow {}: sending a request: {e}", id(i)))?;
        }
        for (i, s) in socks.iter().enumerate() {
            if !active.get(i).copied().unwrap_or(false) {
                continue;
            }
            let resp = buf.get_mut(..cfg.response_size).unwrap_or_default();
            sys::read_exact(s.as_raw_fd(), resp).map_err(|e| {
                format!(
                    "flow {}: reading a response: {e} (server closed or reset?)",
                    id(i)
                )
            })?;
            let t2 = Instant::now();
            acc.done(m, t1.get(i).copied().unwrap_or(t2), t2);
            if let Some(f) = out.get_mut(i) {
                f.transactions += 1;
                if limit_reached(cfg, f) {
                    if let Some(a) = active.get_mut(i) {
                        *a = false;
                    }
                }
            }
        }
    }
    Ok(())
}

fn client_tcp_crr(
    sh: &Shared,
    m: &Member,
    out: &mut [FlowOut],
    acc: &mut Acc,
) -> Result<(), String> {
    let cfg = &sh.cfg;
    let mut buf = vec![0u8; cfg.request_size.max(cfg.response_size)];
    let target = SockAddr::from(cfg.addr);
    let mut active: Vec<bool> = out.iter().map(|f| !limit_reached(cfg, f)).collect();
    while !sh.halted() && active.iter().any(|a| *a) {
        for (i, f) in out.iter_mut().enumerate() {
            if !active.get(i).copied().unwrap_or(false) || sh.halted() {
                continue;
            }
            let t1 = Instant::now();
            let s = sh.track(tcp_socket(cfg).map_err(|e| format!("flow {}: socket: {e}", f.flow))?);
            s.connect(&target)
                .map_err(|e| format!("flow {}: connecting to {}: {e}", f.flow, cfg.addr))?;
            f.connections += 1;
            let req = buf.get(..cfg.request_size).unwrap_or_default();
            sys::write_all(s.as_raw_fd(), req)
                .map_err(|e| format!("flow {}: sending a request: {e}", f.flow))?;
            let resp = buf.get_mut(..cfg.response_size).unwrap_or_default();
            sys::read_exact(s.as_raw_fd(), resp)
                .map_err(|e| format!("flow {}: reading a response: {e}", f.flow))?;
            let t2 = Instant::now();
            drop(s); // SO_LINGER 0: the close sends an RST
            acc.done(m, t1, t2);
            f.transactions += 1;
            if limit_reached(cfg, f) {
                if let Some(a) = active.get_mut(i) {
                    *a = false;
                }
            }
        }
    }
    Ok(())
}

fn put_tag(buf: &mut [u8], seq: u64, n: usize) {
    for (b, v) in buf.iter_mut().zip(seq.to_le_bytes()).take(n) {
        *b = v;
    }
}

fn tag_matches(buf: &[u8], seq: u64, n: usize) -> bool {
    buf.iter()
        .zip(seq.to_le_bytes())
        .take(n)
        .all(|(a, b)| *a == b)
}

fn client_udp_rr(
    sh: &Shared,
    m: &Member,
    out: &mut [FlowOut],
    acc: &mut Acc,
) -> Result<(), String> {
    let cfg = &sh.cfg;
    let mut socks = Vec::with_capacity(out.len());
    let mut failed = None;
    for f in out.iter() {
        match udp_client_socket(cfg) {
            Ok(s) => socks.push(sh.track(s)),
            Err(e) => {
                failed = Some(format!("flow {}: UDP socket to {}: {e}", f.flow, cfg.addr));
                break;
            }
        }
    }
    if let Some(e) = failed {
        sh.fail(e.clone());
        ready_and_wait(sh);
        return Err(e);
    }
    ready_and_wait(sh);
    let ids: Vec<usize> = out.iter().map(|f| f.flow).collect();
    let id = |i: usize| ids.get(i).copied().unwrap_or(i);
    let tag = tag_len(cfg);
    let mut sbuf = vec![0u8; cfg.request_size];
    // One byte more than expected, to see an oversized datagram.
    let mut rbuf = vec![0u8; cfg.response_size + 1];
    let mut seq = vec![0u64; socks.len()];
    let mut t1 = vec![Instant::now(); socks.len()];
    let mut active: Vec<bool> = out.iter().map(|f| !limit_reached(cfg, f)).collect();
    while !sh.halted() && active.iter().any(|a| *a) {
        for (i, s) in socks.iter().enumerate() {
            if !active.get(i).copied().unwrap_or(false) {
                continue;
            }
            let q = seq.get(i).copied().unwrap_or(0).wrapping_add(1);
            if let Some(x) = seq.get_mut(i) {
                *x = q;
            }
            put_tag(&mut sbuf, q, tag);
            if let Some(t) = t1.get_mut(i) {
                *t = Instant::now();
            }
            match sys::send(s.as_raw_fd(), &sbuf, None) {
                Ok(_) => {}
                // An ICMP error for an earlier datagram surfaces here.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(format!(
                        "flow {}: {} refused the datagrams (no udp_rr server there?)",
                        id(i),
                        cfg.addr
                    ))
                }
                Err(e) => return Err(format!("flow {}: sending a request: {e}", id(i))),
            }
        }
        for (i, s) in socks.iter().enumerate() {
            if !active.get(i).copied().unwrap_or(false) {
                continue;
            }
            let q = seq.get(i).copied().unwrap_or(0);
            let Some(f) = out.get_mut(i) else { continue };
            loop {
                match sys::recv(s.as_raw_fd(), &mut rbuf, None) {
                    Ok(n) if n == cfg.response_size && tag_matches(&rbuf, q, tag) => {
                        let t2 = Instant::now();
                        acc.done(m, t1.get(i).copied().unwrap_or(t2), t2);
                        f.transactions += 1;
                        break;
                    }
                    Ok(_) if sh.halted() => break,
                    Ok(_) => f.stale += 1,
                    Err(e) if would_block(&e) => {
                        f.lost += 1;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(format!(
                            "flow {}: {} refused the datagrams (no udp_rr server there?)",
                            id(i),
                            cfg.addr
                        ))
                    }
                    Err(e) => return Err(format!("flow {}: reading a response: {e}", id(i))),
                }
            }
            if limit_reached(cfg, f) {
                if let Some(a) = active.get_mut(i) {
                    *a = false;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Serve one tcp_rr connection until the peer closes it (or the job ends).
fn serve_tcp_rr_conn(sh: &Shared, m: &Member, s: Tracked<'_>) {
    let cfg = &sh.cfg;
    let mut buf = vec![0u8; cfg.request_size.max(cfg.response_size)];
    let mut tx = 0u64;
    loop {
        let req = buf.get_mut(..cfg.request_size).unwrap_or_default();
        if sys::read_exact(s.as_raw_fd(), req).is_err() {
            break; // the client closed or reset: the connection's normal end
        }
        let resp = buf.get(..cfg.response_size).unwrap_or_default();
        if sys::write_all(s.as_raw_fd(), resp).is_err() {
            break;
        }
        tx += 1;
        {
            let now = Instant::now();
            m.record(tx, 0, 0.0, now, now);
        }
    }
}

fn server_tcp_rr_acceptor(sh: Arc<Shared>, m: Member, listener: Arc<Socket>) {
    let mut conns: Vec<std::thread::JoinHandle<()>> = Vec::new();
    loop {
        let r = listener.accept();
        if sh.halted() {
            break;
        }
        let (sock, _peer) = match r {
            Ok(x) => x,
            Err(e) => {
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    continue;
                }
                sh.fail(format!("accepting on {}: {e}", sh.cfg.addr));
                break;
            }
        };
        conns.retain(|h| !h.is_finished());
        {
            let mut c = lock(&sh.ctl);
            if c.live >= sh.cfg.max_connections() {
                c.turned_away += 1;
                continue; // dropping `sock` closes it
            }
            c.accepted += 1;
            c.live += 1;
        }
        let sh2 = sh.clone();
        let spawned = spawn_member(&sh, "rr-srv-conn".into(), move |cm| {
            let t = sh2.track(sock);
            serve_tcp_rr_conn(&sh2, &cm, t);
            let mut c = lock(&sh2.ctl);
            c.live = c.live.saturating_sub(1);
            sh2.cv.notify_all();
            drop(c);
            drop(cm);
        });
        match spawned {
            Ok(h) => conns.push(h),
            Err(e) => {
                let mut c = lock(&sh.ctl);
                c.live = c.live.saturating_sub(1);
                drop(c);
                sh.fail(e.to_string());
                break;
            }
        }
    }
    drop(m);
    for h in conns {
        let _ = h.join();
    }
}

fn server_tcp_crr_thread(sh: Arc<Shared>, m: Member, listener: Arc<Socket>) {
    let cfg = &sh.cfg;
    let mut buf = vec![0u8; cfg.request_size.max(cfg.response_size)];
    let mut tx = 0u64;
    loop {
        let r = listener.accept();
        if sh.halted() {
            break;
        }
        let sock = match r {
            Ok((s, _)) => s,
            Err(e) => {
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    continue;
                }
                sh.fail(format!("accepting on {}: {e}", cfg.addr));
                break;
            }
        };
        let s = sh.track(sock);
        lock(&sh.ctl).accepted += 1;
        let req = buf.get_mut(..cfg.request_size).unwrap_or_default();
        if sys::read_exact(s.as_raw_fd(), req).is_err() {
            continue;
        }
        let resp = buf.get(..cfg.response_size).unwrap_or_default();
        if sys::write_all(s.as_raw_fd(), resp).is_err() {
            continue;
        }
        tx += 1;
        {
            let now = Instant::now();
            m.record(tx, 0, 0.0, now, now);
        }
        // Dropping `s` closes our side; the client's RST follows.
    }
}

fn server_udp_thread(sh: Arc<Shared>, m: Member, sock: Arc<Socket>) {
    let cfg = &sh.cfg;
    let mut buf = vec![0u8; (MAX_UDP_MSG as usize + 1).max(cfg.response_size)];
    let mut tx = 0u64;
    loop {
        let mut peer: libc::sockaddr_storage = zeroed_storage();
        let mut plen: libc::socklen_t = 0;
        let r = sys::recv(sock.as_raw_fd(), &mut buf, Some((&mut peer, &mut plen)));
        if sh.halted() {
            break;
        }
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP error about an earlier response (the client went away).
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                sh.fail(format!("receiving on {}: {e}", cfg.addr));
                break;
            }
        };
        // The response starts with the request's first bytes: the sequence number echoed.
        let resp = buf.get(..cfg.response_size).unwrap_or_default();
        match sys::send(sock.as_raw_fd(), resp, Some((&peer, plen))) {
            Ok(_) => {
                tx += 1;
                {
                    let now = Instant::now();
                    m.record(tx, 0, 0.0, now, now);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) if sh.halted() => break,
            Err(_) => {} // a full buffer or a vanished peer: that transaction is lost
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Coordinator and report
// ---------------------------------------------------------------------------------------------

/// One sample: cumulative figures since the job's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time, seconds.
    pub time: f64,
    pub transactions: u64,
    /// CPU time of the job's threads, seconds.
    pub cpu_s: f64,
    /// Σ latency, seconds, and Σ latency², seconds² (client only).
    pub latency_sum_s: f64,
    pub latency_sumsq_s2: f64,
}

/// What a job produced.
#[derive(Debug, Clone)]
pub struct RrReport {
    /// The generator's JSON report (the job's stdout).
    pub json: serde_json::Value,
    pub error: Option<String>,
    pub started_at: f64,
    pub finished_at: f64,
    pub transactions: u64,
    /// Ended by a stop request.
    pub stopped: bool,
}

/// Sampler state of the coordinator.
struct Sampler {
    t0: Instant,
    unix0: f64,
    interval: Duration,
    next: Duration,
    samples: Vec<Sample>,
}

impl Sampler {
    /// Times count from `t0` (Unix time `unix0`).
    fn new(t0: Instant, unix0: f64, interval: Duration) -> Sampler {
        Sampler {
            t0,
            unix0,
            interval,
            next: Duration::ZERO,
            samples: Vec::new(),
        }
    }

    fn sample(&self, t: &Totals, at: Duration) -> Sample {
        Sample {
            time: self.unix0 + at.as_secs_f64(),
            transactions: t.tx,
            cpu_s: t.cpu_ns as f64 / 1e9,
            latency_sum_s: t.lat_ns as f64 / 1e9,
            latency_sumsq_s2: t.lat_sq / 1e18,
        }
    }

    fn take(&mut self, sh: &Shared) {
        let now = self.t0.elapsed();
        let s = self.sample(&sh.totals(), now);
        self.push(s, now);
    }

    /// Start the samples just before the first transaction completed (a server's samples
    /// begin with its first client, not with its own start).
    fn begin_at(&mut self, first: Duration) {
        let at = first.saturating_sub(Duration::from_nanos(1));
        let s = self.sample(&Totals::default(), at);
        self.push(s, at);
    }

    /// The last sample: the final figures, timed at the latest transaction completion (the
    /// measured span ends with the work, not with the threads' exit or an idle tail; samples
    /// taken after that instant are dropped), or now if nothing completed.
    fn finish(&mut self, sh: &Shared) {
        let t = sh.totals();
        let now = self.t0.elapsed();
        if self.samples.is_empty() {
            let s = self.sample(&Totals::default(), Duration::ZERO);
            self.push(s, Duration::ZERO);
        }
        let end = if t.tx > 0 && t.last_ns > 0 {
            Duration::from_nanos(t.last_ns)
        } else {
            now
        };
        let end_time = self.unix0 + end.as_secs_f64();
        while self.samples.len() > 1 && self.samples.last().is_some_and(|s| s.time > end_time) {
            self.samples.pop();
        }
        // The head: a client's threads may start their first request a little after the
        // first sample (on a loaded machine, a scheduling delay). Nothing had completed then,
        // so the zero sample moves to just before the first request (keeping its order).
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|s| s.transactions == 0) {
            self.samples.remove(0);
        }
        if t.tx > 0 && t.first_ns < u64::MAX {
            let first = self.unix0 + Duration::from_nanos(t.first_ns).as_secs_f64() - 1e-9;
            let limit = self.samples.get(1).map_or(end_time, |s| s.time);
            if let Some(s0) = self.samples.first_mut() {
                if s0.transactions == 0 && first > s0.time && first < limit {
                    s0.time = first;
                }
            }
        }
        let s = self.sample(&t, end);
        self.push(s, end);
    }

    /// Add a sample taken `now` after the start.
    fn push(&mut self, s: Sample, now: Duration) {
        // A final sample right after a periodic one replaces it (no near-zero intervals);
        // the first sample stays, so a short run still has its one interval.
        let n = self.samples.len();
        if let Some(last) = self.samples.last_mut() {
            if s.time <= last.time || (n >= 2 && s.time - last.time < 1e-3) {
                if n >= 2 {
                    *last = s;
                }
                return;
            }
        }
        self.samples.push(s);
        if self.samples.len() == 1 {
            self.next = now; // the grid starts at the first sample
        }
        while now >= self.next {
            self.next += self.interval;
        }
        if self.samples.len() >= MAX_SAMPLES {
            self.samples = self.samples.iter().step_by(2).copied().collect();
            self.interval *= 2;
            self.next = now + self.interval;
        }
    }

    fn due(&self) -> bool {
        self.t0.elapsed() >= self.next
    }

    /// Time until the next sample is due.
    fn wait(&self) -> Duration {
        self.next.saturating_sub(self.t0.elapsed())
    }
}

/// Wait on the control condvar at most `d`; returns whether a stop was requested.
fn nap(sh: &Shared, d: Duration) -> bool {
    let c = lock(&sh.ctl);
    if c.stop {
        return true;
    }
    let c = match sh.cv.wait_timeout(c, d) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    };
    c.stop
}

/// A running job.
pub struct RrJob {
    sh: Arc<Shared>,
    result: tokio::sync::oneshot::Receiver<RrReport>,
}

/// Ends a job from outside (StopJob, KillJob).
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    pub fn stop(&self) {
        let mut c = lock(&self.0.ctl);
        c.stop = true;
        self.0.cv.notify_all();
    }
}

impl RrJob {
    pub fn stopper(&self) -> Stopper {
        Stopper(self.sh.clone())
    }

    /// Block until the job ends (not from inside an async runtime).
    pub fn wait(self) -> RrReport {
        let cfg = self.sh.cfg.clone();
        self.result
            .blocking_recv()
            .unwrap_or_else(|_| lost_report(&cfg))
    }

    /// Wait in async code.
    pub async fn finish(self) -> RrReport {
        let cfg = self.sh.cfg.clone();
        self.result.await.unwrap_or_else(|_| lost_report(&cfg))
    }
}

fn lost_report(cfg: &RrConfig) -> RrReport {
    let now = unix_now();
    let error = "the generator's coordinator thread ended without a report".to_string();
    RrReport {
        json: report_json(cfg, &[], None, &[], &Control::default(), Some(&error), now),
        error: Some(error),
        started_at: now,
        finished_at: now,
        transactions: 0,
        stopped: false,
    }
}

/// Start a job. A server is bound and listening when this returns; the client connects in
/// its own threads.
pub fn start(cfg: RrConfig) -> Result<RrJob, RrError> {
    let listener = match cfg.role {
        Role::Server => Some(server_socket(&cfg)?),
        Role::Client => None,
    };
    let sh = Arc::new(Shared {
        cfg,
        t0: Instant::now(),
        unix0: unix_now(),
        halt: AtomicBool::new(false),
        reg: Mutex::new(Registry::default()),
        ctl: Mutex::new(Control::default()),
        cv: Condvar::new(),
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sh2 = sh.clone();
    let name = match sh.cfg.role {
        Role::Server => "rr-server",
        Role::Client => "rr-client",
    };
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK)
        .spawn(move || {
            let report = match listener {
                Some(l) => run_server(&sh2, l),
                None => run_client(&sh2),
            };
            let _ = tx.send(report);
        })
        .map_err(io_err("starting the generator thread"))?;
    Ok(RrJob { sh, result: rx })
}

fn coordinator_slot(sh: &Shared) -> Arc<Slot> {
    pin_this_thread(sh);
    let slot = Arc::new(Slot::new());
    lock(&sh.reg).slots.push(slot.clone());
    slot
}

fn run_client(sh: &Arc<Shared>) -> RrReport {
    let cfg = &sh.cfg;
    let started_at = unix_now();
    let _slot = coordinator_slot(sh);
    let mut handles = Vec::new();
    let mut error = None;
    for t in 0..cfg.threads {
        let flows: Vec<usize> = (0..cfg.flows).filter(|f| f % cfg.threads == t).collect();
        let sh2 = sh.clone();
        match spawn_member(sh, format!("rr-client-{t}"), move |m| {
            client_thread(sh2, m, flows)
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    // Connecting phase: every thread reports ready (or failed), or the limit passes.
    let mut stopped = false;
    if error.is_none() {
        let limit = Instant::now() + CONNECT_LIMIT;
        let mut c = lock(&sh.ctl);
        while c.ready < handles.len() && !c.stop && !sh.halted() {
            let now = Instant::now();
            if now >= limit {
                c.error.get_or_insert_with(|| {
                    format!(
                        "could not connect to {} within {} s",
                        cfg.addr,
                        CONNECT_LIMIT.as_secs()
                    )
                });
                break;
            }
            c = match sh.cv.wait_timeout(c, (limit - now).min(CHECK)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        stopped = c.stop;
    }
    let mut sampler = Sampler::new(sh.t0, sh.unix0, cfg.interval);
    sampler.take(sh);
    let deadline = sampler.t0.elapsed() + cfg.duration;
    {
        let mut c = lock(&sh.ctl);
        c.go = true;
        if error.is_some() || c.error.is_some() || stopped {
            sh.halt.store(true, Ordering::SeqCst);
        }
        sh.cv.notify_all();
    }
    while !sh.halted() {
        let left = deadline.saturating_sub(sampler.t0.elapsed());
        if left.is_zero() {
            break;
        }
        if nap(sh, sampler.wait().min(left).min(CHECK)) {
            stopped = true;
            break;
        }
        if lock(&sh.ctl).active == 0 {
            break; // every flow did its transactions
        }
        if sampler.due() {
            sampler.take(sh);
        }
    }
    sh.halt_all();
    if !sh.wait_idle(CLIENT_GRACE) {
        sh.shutdown_all();
    }
    let mut flows = Vec::new();
    let mut histo = Histogram::default();
    for h in handles {
        match h.join() {
            Ok(o) => {
                flows.extend(o.flows);
                histo.merge(&o.histo);
            }
            Err(_) => {
                error.get_or_insert_with(|| "a client thread panicked".to_string());
            }
        }
    }
    sampler.finish(sh);
    flows.sort_by_key(|f| f.flow);
    let ctl = std::mem::take(&mut *lock(&sh.ctl));
    let mut error = error.or(ctl.error.clone());
    let total: u64 = flows.iter().map(|f| f.transactions).sum();
    if error.is_none() && total == 0 && !stopped {
        let lost: u64 = flows.iter().map(|f| f.lost).sum();
        error = Some(if lost > 0 {
            format!(
                "no response came back from {} ({lost} requests lost)",
                cfg.addr
            )
        } else {
            format!("no transaction completed with {}", cfg.addr)
        });
    }
    let finished_at = unix_now();
    RrReport {
        json: report_json(
            cfg,
            &sampler.samples,
            Some(&histo),
            &flows,
            &ctl,
            error.as_deref(),
            started_at,
        ),
        error,
        started_at,
        finished_at,
        transactions: total,
        stopped,
    }
}

fn run_server(sh: &Arc<Shared>, listener: Socket) -> RrReport {
    let cfg = &sh.cfg;
    let started_at = unix_now();
    let _slot = coordinator_slot(sh);
    let listener = Arc::new(listener);
    // Registered so that a forced shutdown wakes the threads blocked on it.
    let key = {
        let mut r = lock(&sh.reg);
        r.next_key += 1;
        let k = r.next_key;
        r.sockets.insert(k, listener.clone());
        k
    };
    let mut handles = Vec::new();
    let mut error = None;
    let n = match cfg.workload {
        RrWorkload::TcpRr => 1,
        _ => cfg.threads,
    };
    for t in 0..n {
        let sh2 = sh.clone();
        let l = listener.clone();
        let r = match cfg.workload {
            RrWorkload::TcpRr => spawn_member(sh, "rr-srv-accept".into(), move |m| {
                server_tcp_rr_acceptor(sh2, m, l)
            }),
            RrWorkload::TcpCrr => spawn_member(sh, format!("rr-srv-crr-{t}"), move |m| {
                server_tcp_crr_thread(sh2, m, l)
            }),
            RrWorkload::UdpRr => spawn_member(sh, format!("rr-srv-udp-{t}"), move |m| {
                server_udp_thread(sh2, m, l)
            }),
        };
        match r {
            Ok(h) => handles.push(h),
            Err(e) => {
                error = Some(e.to_string());
                sh.halt_all();
                break;
            }
        }
    }
    let mut sampler = Sampler::new(sh.t0, sh.unix0, cfg.interval);
    let mut stopped = false;
    let mut first: Option<Instant> = None;
    let mut last_change = Instant::now();
    let mut last_tx = 0u64;
    while !sh.halted() {
        // Before the first client, only the end rules need looking at.
        let pause = if sampler.samples.is_empty() {
            CHECK
        } else {
            sampler.wait().min(CHECK)
        };
        if nap(sh, pause) {
            stopped = true;
            break;
        }
        let now = Instant::now();
        let t = sh.totals();
        if t.tx != last_tx {
            last_tx = t.tx;
            last_change = now;
            first.get_or_insert(now);
        }
        if sampler.samples.is_empty() && t.tx > 0 && t.first_ns < u64::MAX {
            sampler.begin_at(Duration::from_nanos(t.first_ns));
        }
        if !sampler.samples.is_empty() && sampler.due() {
            sampler.take(sh);
        }
        if cfg.workload == RrWorkload::TcpRr {
            let c = lock(&sh.ctl);
            if c.accepted >= cfg.flows as u64 && c.live == 0 {
                break; // every expected connection came and went
            }
        }
        match first {
            Some(f) if now - f >= cfg.duration && now - last_change >= IDLE_END => break,
            None if sampler.t0.elapsed() >= cfg.duration + NO_CLIENT_WAIT => {
                error = Some(format!(
                    "no client came within {} s",
                    (cfg.duration + NO_CLIENT_WAIT).as_secs()
                ));
                break;
            }
            _ => {}
        }
    }
    // Server threads block in accept or recv: shut their sockets down at once (a transaction
    // in flight when the server ends is lost to the client anyway).
    sh.halt_all();
    sh.shutdown_all();
    for h in handles {
        if h.join().is_err() {
            error.get_or_insert_with(|| "a server thread panicked".to_string());
        }
    }
    lock(&sh.reg).sockets.remove(&key);
    sampler.finish(sh);
    let ctl = std::mem::take(&mut *lock(&sh.ctl));
    let error = error.or(ctl.error.clone());
    let total = sampler.samples.last().map_or(0, |s| s.transactions);
    let finished_at = unix_now();
    RrReport {
        json: report_json(
            cfg,
            &sampler.samples,
            None,
            &[],
            &ctl,
            error.as_deref(),
            started_at,
        ),
        error,
        started_at,
        finished_at,
        transactions: total,
        stopped,
    }
}

fn secs(ns: Option<f64>) -> serde_json::Value {
    ns.map_or(serde_json::Value::Null, |v| serde_json::json!(v / 1e9))
}

fn report_json(
    cfg: &RrConfig,
    samples: &[Sample],
    histo: Option<&Histogram>,
    flows: &[FlowOut],
    ctl: &Control,
    error: Option<&str>,
    started_at: f64,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let first = samples.first();
    let last = samples.last();
    let total = last.map_or(0, |s| s.transactions);
    let span = match (first, last) {
        (Some(a), Some(b)) => b.time - a.time,
        _ => 0.0,
    };
    let cpu_s = last.map_or(0.0, |s| s.cpu_s);
    let mut summary = Map::new();
    summary.insert("num_transactions".into(), json!(total));
    summary.insert("duration_s".into(), json!(span));
    summary.insert(
        "throughput".into(),
        if span > 0.0 {
            json!(total as f64 / span)
        } else {
            Value::Null
        },
    );
    summary.insert("cpu_s".into(), json!(cpu_s));
    summary.insert(
        "cpu_per_transaction_us".into(),
        if total > 0 {
            json!(cpu_s * 1e6 / total as f64)
        } else {
            Value::Null
        },
    );
    match cfg.role {
        Role::Client => {
            let sum = |f: fn(&FlowOut) -> u64| flows.iter().map(f).sum::<u64>();
            summary.insert("lost".into(), json!(sum(|f| f.lost)));
            summary.insert("stale".into(), json!(sum(|f| f.stale)));
            summary.insert("connections".into(), json!(sum(|f| f.connections)));
        }
        Role::Server => {
            if cfg.workload != RrWorkload::UdpRr {
                summary.insert("connections".into(), json!(ctl.accepted));
                summary.insert("turned_away".into(), json!(ctl.turned_away));
            }
        }
    }
    let h = histo.filter(|h| h.n > 0);
    summary.insert("latency_min".into(), secs(h.map(|h| h.min_ns as f64)));
    summary.insert("latency_max".into(), secs(h.map(|h| h.max_ns as f64)));
    summary.insert("latency_mean".into(), secs(h.and_then(Histogram::mean_ns)));
    summary.insert(
        "latency_stddev".into(),
        secs(h.and_then(Histogram::stddev_ns)),
    );
    for (p, key) in PERCENTILES {
        summary.insert(
            key.into(),
            secs(h.and_then(|h| h.percentile(p)).map(|v| v as f64)),
        );
    }
    let (peer_key, local) = match cfg.role {
        Role::Server => ("bind", Value::Null),
        Role::Client => (
            "server",
            cfg.bind.map_or(Value::Null, |b| json!(b.to_string())),
        ),
    };
    json!({
        "tool": "lnst-agent rr",
        "version": env!("CARGO_PKG_VERSION"),
        "role": match cfg.role { Role::Server => "server", Role::Client => "client" },
        "workload": cfg.workload.name(),
        "config": {
            peer_key: cfg.addr.ip().to_string(),
            "port": cfg.addr.port(),
            "local": local,
            "request_size": cfg.request_size,
            "response_size": cfg.response_size,
            "duration_ms": cfg.duration.as_millis() as u64,
            "flows": cfg.flows,
            "threads": cfg.threads,
            "transactions": cfg.transactions,
            "interval_ms": cfg.interval.as_millis() as u64,
            "loss_timeout_ms": cfg.loss_timeout.as_millis() as u64,
            "cpus": cfg.cpus,
        },
        "start_time": first.map_or(started_at, |s| s.time),
        "end_time": last.map_or(started_at, |s| s.time),
        "samples": samples.iter().map(|s| json!({
            "time": s.time,
            "transactions": s.transactions,
            "cpu_s": s.cpu_s,
            "latency_sum_s": s.latency_sum_s,
            "latency_sumsq_s2": s.latency_sumsq_s2,
        })).collect::<Vec<_>>(),
        "summary": summary,
        "flows": flows.iter().map(|f| json!({
            "flow": f.flow,
            "transactions": f.transactions,
            "lost": f.lost,
            "stale": f.stale,
            "connections": f.connections,
        })).collect::<Vec<_>>(),
        "error": error,
    })
}

// ---------------------------------------------------------------------------------------------
// Agent glue
// ---------------------------------------------------------------------------------------------

/// Check a spec the way StartJob must (for the agent's BadRequest reply).
pub fn validate(spec: &JobSpec) -> Result<(), RrError> {
    RrConfig::from_spec(spec).map(|_| ())
}

/// Turn a report into the job's result: stdout is the JSON report.
pub fn job_result(id: u64, r: RrReport, killed: bool) -> JobResult {
    JobResult {
        job_id: id,
        passed: r.error.is_none(),
        exit_code: None,
        signal: None,
        stdout: serde_json::to_string_pretty(&r.json).unwrap_or_default(),
        stderr: r.error.clone().map(|e| e + "\n").unwrap_or_default(),
        started_at: r.started_at,
        finished_at: r.finished_at,
        killed,
        error: r.error,
        data: None,
    }
}

/// Start an agent job: `done` receives its result. Returns the handle that stops it. A job
/// that cannot start (a bind that fails) finishes at once as a failed job.
pub fn spawn_job(
    id: u64,
    spec: &JobSpec,
    killed: Arc<AtomicBool>,
    done: impl FnOnce(JobResult) + Send + 'static,
) -> Result<Arc<tokio::sync::Notify>, RrError> {
    let cfg = RrConfig::from_spec(spec)?
        .ok_or_else(|| RrError::Invalid("not a request/response job".into()))?;
    let stop = Arc::new(tokio::sync::Notify::new());
    tracing::info!(
        "job {id}: built-in {} {} {}",
        cfg.workload.name(),
        match cfg.role {
            Role::Server => "server on",
            Role::Client => "client to",
        },
        cfg.addr
    );
    match start(cfg) {
        Ok(job) => {
            let n = stop.clone();
            tokio::spawn(async move {
                let stopper = job.stopper();
                let mut fin = Box::pin(job.finish());
                let report = tokio::select! {
                    r = &mut fin => r,
                    _ = n.notified() => {
                        stopper.stop();
                        fin.await
                    }
                };
                tracing::info!(
                    "job {id} finished: {} transactions, error {:?}",
                    report.transactions,
                    report.error
                );
                done(job_result(id, report, killed.load(Ordering::SeqCst)));
            });
        }
        Err(e) => {
            tracing::warn!("job {id} could not start: {e}");
            let now = unix_now();
            done(JobResult {
                job_id: id,
                passed: false,
                exit_code: None,
                signal: None,
                stdout: String::new(),
                stderr: String::new(),
                started_at: now,
                finished_at: now,
                killed: false,
                error: Some(e.to_string()),
                data: None,
            });
        }
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    //! Loopback self-checks of the generator against trivial blocking reference programs
    //! (a ping-pong over the same kind of sockets, written the obvious way).
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::sync::atomic::AtomicUsize;

    const V4: &str = "127.0.0.1";
    const V6: &str = "::1";

    fn free_port(ip: &str, udp: bool) -> u16 {
        let a: SocketAddr = SocketAddr::new(ip.parse().unwrap(), 0);
        if udp {
            UdpSocket::bind(a).unwrap().local_addr().unwrap().port()
        } else {
            TcpListener::bind(a).unwrap().local_addr().unwrap().port()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_spec(
        w: RrWorkload,
        ip: &str,
        port: u16,
        req: u32,
        resp: u32,
        duration_ms: u64,
        flows: u32,
        threads: Option<u32>,
        transactions: Option<u64>,
    ) -> JobSpec {
        JobSpec::RrClient {
            workload: w,
            server: ip.into(),
            port,
            bind: None,
            request_size: req,
            response_size: resp,
            duration_ms,
            flows: Some(flows),
            threads,
            transactions,
            interval_ms: Some(100),
            loss_timeout_ms: Some(50),
            cpus: None,
        }
    }

    fn server_spec(w: RrWorkload, ip: &str, port: u16, req: u32, resp: u32, flows: u32) -> JobSpec {
        JobSpec::RrServer {
            workload: w,
            bind: ip.into(),
            port,
            request_size: req,
            response_size: resp,
            duration_ms: 500,
            flows: Some(flows),
            threads: None,
            interval_ms: Some(100),
            cpus: None,
        }
    }

    fn run(spec: &JobSpec) -> RrJob {
        let cfg = RrConfig::from_spec(spec).unwrap().unwrap();
        start(cfg).unwrap()
    }

    fn summary_u64(r: &RrReport, key: &str) -> u64 {
        r.json["summary"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary.{key} in {}", r.json))
    }

    /// Reference tcp_rr server: one thread per connection, read exactly `req`, write `resp`,
    /// until the peer closes at a message boundary. Returns (port, transactions, clean ends).
    fn ref_tcp_server(
        ip: &str,
        req: usize,
        resp: usize,
        conns: usize,
    ) -> (u16, std::thread::JoinHandle<(u64, usize)>) {
        let l = TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut hs = Vec::new();
            for _ in 0..conns {
                let (mut s, _) = l.accept().unwrap();
                hs.push(std::thread::spawn(move || {
                    let mut b = vec![0u8; req.max(resp)];
                    let mut n = 0u64;
                    loop {
                        // A clean end: EOF (or the client's reset) before a request's first byte.
                        let mut first = [0u8; 1];
                        match s.read(&mut first) {
                            Ok(0) | Err(_) => return (n, true),
                            Ok(_) => {}
                        }
                        if s.read_exact(&mut b[1..req]).is_err() {
                            return (n, false);
                        }
                        s.write_all(&b[..resp]).unwrap();
                        n += 1;
                    }
                }));
            }
            let mut total = 0;
            let mut clean = 0;
            for h in hs {
                let (n, c) = h.join().unwrap();
                total += n;
                clean += usize::from(c);
            }
            (total, clean)
        });
        (port, h)
    }

    /// Reference tcp_rr client: `n` blocking ping-pongs on one connection.
    fn ref_tcp_client(addr: SocketAddr, req: usize, resp: usize, n: u64) {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut b = vec![0u8; req.max(resp)];
        for _ in 0..n {
            s.write_all(&b[..req]).unwrap();
            s.read_exact(&mut b[..resp]).unwrap();
        }
    }

    fn check_samples(r: &RrReport) {
        let s = r.json["samples"].as_array().unwrap();
        assert!(s.len() >= 2, "{}", r.json);
        let mut prev_t = 0.0;
        let mut prev_n = 0;
        for x in s {
            let t = x["time"].as_f64().unwrap();
            let n = x["transactions"].as_u64().unwrap();
            assert!(t > prev_t && n >= prev_n, "samples go backwards: {s:?}");
            prev_t = t;
            prev_n = n;
        }
        assert_eq!(prev_n, summary_u64(r, "num_transactions"));
    }

    fn tcp_rr_fixed_count(ip: &str) {
        let (req, resp, n) = (100usize, 3000usize, 400u64);
        // Our client against the reference server: exact counts on both sides.
        let (port, refsrv) = ref_tcp_server(ip, req, resp, 2);
        let spec = client_spec(
            RrWorkload::TcpRr,
            ip,
            port,
            req as u32,
            resp as u32,
            60_000,
            2,
            None,
            Some(n),
        );
        let r = run(&spec).wait();
        assert_eq!(r.error, None, "{}", r.json);
        let (served, clean) = refsrv.join().unwrap();
        assert_eq!(served, 2 * n);
        assert_eq!(clean, 2, "a connection ended in the middle of a message");
        assert_eq!(summary_u64(&r, "num_transactions"), 2 * n);
        assert_eq!(summary_u64(&r, "connections"), 2);
        for f in r.json["flows"].as_array().unwrap() {
            assert_eq!(f["transactions"].as_u64(), Some(n));
        }
        check_samples(&r);
        // Every transaction has a latency; the order statistics are ordered.
        let sm = &r.json["summary"];
        let l = |k: &str| sm[k].as_f64().unwrap();
        assert!(l("latency_min") > 0.0);
        assert!(l("latency_min") <= l("latency_p50") && l("latency_p50") <= l("latency_p99"));
        assert!(l("latency_p99") <= l("latency_max"));
        assert!(l("latency_mean") >= l("latency_min") && l("latency_mean") <= l("latency_max"));
        let s = r.json["samples"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let mean = s["latency_sum_s"].as_f64().unwrap() / (2 * n) as f64;
        assert!((mean - l("latency_mean")).abs() <= 1e-9 + 1e-6 * mean);

        // Our server against two reference clients: exact count, and it ends on its own once
        // both connections closed.
        let port = free_port(ip, false);
        let job = run(&server_spec(
            RrWorkload::TcpRr,
            ip,
            port,
            req as u32,
            resp as u32,
            2,
        ));
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        let hs: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || ref_tcp_client(addr, req, resp, n)))
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let t = Instant::now();
        let r = job.wait();
        assert!(t.elapsed() < Duration::from_secs(2), "server did not end");
        assert_eq!(r.error, None);
        assert!(!r.stopped);
        assert_eq!(summary_u64(&r, "num_transactions"), 2 * n);
        assert_eq!(summary_u64(&r, "connections"), 2);
        assert!(r.json["summary"]["latency_mean"].is_null());
    }

    #[test]
    fn tcp_rr_fixed_count_v4() {
        tcp_rr_fixed_count(V4);
    }

    #[test]
    fn tcp_rr_fixed_count_v6() {
        tcp_rr_fixed_count(V6);
    }

    #[test]
    fn tcp_rr_duration_rate_matches_reference_server() {
        let (req, resp) = (1usize, 1usize);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // Reference server: counts and timestamps the first and last transaction itself.
        let refsrv = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1];
            let mut n = 0u64;
            let mut first = None;
            let mut last = Instant::now();
            while s.read_exact(&mut b[..req]).is_ok() {
                if s.write_all(&b[..resp]).is_err() {
                    break;
                }
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            (n, last.duration_since(first.unwrap()).as_secs_f64())
        });
        let spec = client_spec(RrWorkload::TcpRr, V4, port, 1, 1, 1500, 1, None, None);
        let r = run(&spec).wait();
        let (n, span) = refsrv.join().unwrap();
        assert_eq!(r.error, None);
        // Every response the server sent was read: the counts agree exactly.
        assert_eq!(summary_u64(&r, "num_transactions"), n);
        // And the rates within 5 % (our span runs from the start sample to the last one).
        let ours = r.json["summary"]["throughput"].as_f64().unwrap();
        let theirs = n as f64 / span;
        assert!(
            (ours / theirs - 1.0).abs() < 0.05,
            "ours {ours:.0}/s, reference {theirs:.0}/s"
        );
        let dur = r.json["summary"]["duration_s"].as_f64().unwrap();
        assert!((1.4..2.5).contains(&dur), "duration {dur}");
        check_samples(&r);
        // 100 ms samples over 1.5 s.
        let k = r.json["samples"].as_array().unwrap().len();
        assert!((12..=18).contains(&k), "{k} samples");
        assert!(r.json["summary"]["cpu_s"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn tcp_crr_counts_connections() {
        for ip in [V4, V6] {
            let port = free_port(ip, false);
            let srv = run(&server_spec(RrWorkload::TcpCrr, ip, port, 10, 20, 1));
            let spec = client_spec(
                RrWorkload::TcpCrr,
                ip,
                port,
                10,
                20,
                60_000,
                2,
                None,
                Some(150),
            );
            let c = run(&spec).wait();
            assert_eq!(c.error, None, "{}", c.json);
            assert_eq!(summary_u64(&c, "num_transactions"), 300);
            assert_eq!(summary_u64(&c, "connections"), 300);
            // The reference: plain connect, request, response, close, 50 times.
            let addr = SocketAddr::new(ip.parse().unwrap(), port);
            for _ in 0..50 {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&[7u8; 10]).unwrap();
                let mut b = [0u8; 20];
                s.read_exact(&mut b).unwrap();
                // The server closes after its response.
                assert_eq!(s.read(&mut b).unwrap(), 0);
            }
            let stopper = srv.stopper();
            // The server counts what the clients did once every connection was handled.
            let t = Instant::now();
            loop {
                let tx = srv.sh.totals().tx;
                if tx == 350 || t.elapsed() > Duration::from_secs(5) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            stopper.stop();
            let s = srv.wait();
            assert_eq!(s.error, None);
            assert!(s.stopped);
            assert_eq!(summary_u64(&s, "num_transactions"), 350);
            assert_eq!(summary_u64(&s, "connections"), 350);
        }
    }

    /// Reference UDP server: echoes each request's first bytes in a `resp`-byte response,
    /// drops the requests whose number ≡ 3 (mod 10) and answers request 5 only after `late`.
    fn lossy_udp_server(
        ip: &str,
        resp: usize,
        late: Duration,
        stop: Arc<AtomicBool>,
    ) -> (u16, std::thread::JoinHandle<(u64, u64)>) {
        let s = UdpSocket::bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let port = s.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut b = vec![0u8; 65536];
            let (mut got, mut dropped) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let Ok((_, peer)) = s.recv_from(&mut b) else {
                    continue;
                };
                got += 1;
                if got % 10 == 3 {
                    dropped += 1;
                    continue;
                }
                if got == 5 {
                    std::thread::sleep(late);
                }
                s.send_to(&b[..resp], peer).unwrap();
            }
            (got, dropped)
        });
        (port, h)
    }

    #[test]
    fn udp_rr_loss_times_out_and_late_answers_are_stale() {
        for ip in [V4, V6] {
            let stop = Arc::new(AtomicBool::new(false));
            // Request 5 comes back after 150 ms, the client gives up after 50 ms.
            let (port, h) = lossy_udp_server(ip, 16, Duration::from_millis(150), stop.clone());
            let spec = client_spec(
                RrWorkload::UdpRr,
                ip,
                port,
                32,
                16,
                60_000,
                1,
                None,
                Some(100),
            );
            let t = Instant::now();
            let r = run(&spec).wait();
            let took = t.elapsed();
            stop.store(true, Ordering::SeqCst);
            let (got, dropped) = h.join().unwrap();
            assert_eq!(r.error, None, "{}", r.json);
            let (tx, lost, stale) = (
                summary_u64(&r, "num_transactions"),
                summary_u64(&r, "lost"),
                summary_u64(&r, "stale"),
            );
            assert_eq!(tx, 100);
            // Every request the server saw completed a transaction or was given up on; every
            // answer it sent completed one or came too late.
            assert_eq!(got, tx + lost, "{}", r.json);
            assert_eq!(got - dropped, tx + stale, "{}", r.json);
            // The late answer: request 5 and those sent while the server slept were lost.
            assert!(lost > dropped && stale >= 1, "{}", r.json);
            assert!(dropped >= 10);
            assert!(took < Duration::from_secs(5), "took {took:?}");
        }
    }

    #[test]
    fn udp_rr_ours_both_sides_exact() {
        for ip in [V4, V6] {
            let port = free_port(ip, true);
            let srv = run(&server_spec(RrWorkload::UdpRr, ip, port, 1, 1024, 1));
            let spec = client_spec(
                RrWorkload::UdpRr,
                ip,
                port,
                1,
                1024,
                60_000,
                3,
                Some(1),
                Some(200),
            );
            let c = run(&spec).wait();
            assert_eq!(c.error, None, "{}", c.json);
            assert_eq!(summary_u64(&c, "num_transactions"), 600);
            // On a loaded machine an answer can take longer than the 50 ms loss timeout: it
            // is then counted lost (and later stale), but the server did answer it.
            let lost = summary_u64(&c, "lost");
            assert!(summary_u64(&c, "stale") <= lost);
            srv.stopper().stop();
            let s = srv.wait();
            assert_eq!(s.error, None);
            assert_eq!(summary_u64(&s, "num_transactions"), 600 + lost);
        }
    }

    #[test]
    fn server_span_is_its_traffic() {
        // The server idles 300 ms before its client and 500 ms after: its samples start just
        // before the first transaction and end with the last, so its rate is the client's.
        let port = free_port(V4, true);
        let srv = run(&server_spec(RrWorkload::UdpRr, V4, port, 1, 1, 1));
        std::thread::sleep(Duration::from_millis(300));
        let spec = client_spec(RrWorkload::UdpRr, V4, port, 1, 1, 600, 1, None, None);
        let c = run(&spec).wait();
        std::thread::sleep(Duration::from_millis(500));
        srv.stopper().stop();
        let s = srv.wait();
        assert_eq!((c.error.clone(), s.error.clone()), (None, None));
        let f = |r: &RrReport, k: &str| r.json["summary"][k].as_f64().unwrap();
        let (cd, sd) = (f(&c, "duration_s"), f(&s, "duration_s"));
        assert!((cd - sd).abs() < 0.05, "client span {cd}, server span {sd}");
        let (ct, st) = (f(&c, "throughput"), f(&s, "throughput"));
        assert!((ct / st - 1.0).abs() < 0.1, "client {ct}/s, server {st}/s");
        assert!(s.json["start_time"].as_f64() >= c.json["start_time"].as_f64());
        assert!(s.json["end_time"].as_f64() <= c.json["end_time"].as_f64().map(|t| t + 0.01));
        // The client's span ends with its last transaction, not after the threads' exit.
        assert!((0.55..0.7).contains(&cd), "{cd}");
    }

    #[test]
    fn cpus_pin_every_thread_of_the_job() {
        let port = free_port(V4, false);
        let srv = run(&server_spec(RrWorkload::TcpRr, V4, port, 1, 1, 1));
        let mut spec = client_spec(RrWorkload::TcpRr, V4, port, 1, 1, 10_000, 1, None, None);
        if let JobSpec::RrClient { cpus, .. } = &mut spec {
            *cpus = Some(vec![0]);
        }
        let job = run(&spec);
        // Other tests run unpinned jobs in this process at the same time: look for ours, a
        // coordinator and a worker thread pinned to CPU 0, for up to 5 s (a loaded machine
        // may start the threads late).
        let pinned = |name: &str| {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .any(|t| {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    let status =
                        std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                    comm.trim() == name
                        && status
                            .lines()
                            .filter_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                            .any(|v| v.trim() == "0")
                })
        };
        let t = Instant::now();
        let mut found = (false, false);
        while t.elapsed() < Duration::from_secs(5) && !(found.0 && found.1) {
            found = (pinned("rr-client"), pinned("rr-client-0"));
            std::thread::sleep(Duration::from_millis(20));
        }
        job.stopper().stop();
        let r = job.wait();
        srv.wait();
        assert_eq!(r.error, None);
        assert_eq!(found, (true, true), "(coordinator, worker) pinned to CPU 0");
    }

    #[test]
    fn lock_step_flows_over_fewer_threads() {
        let port = free_port(V4, false);
        let srv = run(&server_spec(RrWorkload::TcpRr, V4, port, 64, 64, 5));
        let spec = client_spec(
            RrWorkload::TcpRr,
            V4,
            port,
            64,
            64,
            60_000,
            5,
            Some(2),
            Some(77),
        );
        let c = run(&spec).wait();
        assert_eq!(c.error, None);
        let flows = c.json["flows"].as_array().unwrap();
        assert_eq!(flows.len(), 5);
        for (i, f) in flows.iter().enumerate() {
            assert_eq!(f["flow"].as_u64(), Some(i as u64));
            assert_eq!(f["transactions"].as_u64(), Some(77));
        }
        let s = srv.wait(); // ends on its own: 5 connections came and went
        assert_eq!(summary_u64(&s, "num_transactions"), 5 * 77);
    }

    #[test]
    fn stop_and_silence_never_hang() {
        // A server that accepts and never answers: a duration-mode client ends at its
        // deadline plus the grace, with an error (nothing completed).
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let held = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (h2, r2) = (held.clone(), release.clone());
        let acc = std::thread::spawn(move || {
            let mut keep = Vec::new();
            for _ in 0..2 {
                keep.push(l.accept().unwrap().0);
                h2.fetch_add(1, Ordering::SeqCst);
            }
            while !r2.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(keep);
        });
        let t = Instant::now();
        let r = run(&client_spec(
            RrWorkload::TcpRr,
            V4,
            port,
            1,
            1,
            300,
            1,
            None,
            None,
        ))
        .wait();
        let took = t.elapsed();
        assert!(took < CLIENT_GRACE + Duration::from_secs(1), "{took:?}");
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("no transaction completed")),
            "{:?}",
            r.error
        );
        // Stopped while blocked: no error, marked stopped, ends within the grace.
        let job = run(&client_spec(
            RrWorkload::TcpRr,
            V4,
            port,
            1,
            1,
            60_000,
            1,
            None,
            None,
        ));
        while held.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        job.stopper().stop();
        let r = job.wait();
        assert!(t.elapsed() < CLIENT_GRACE + Duration::from_secs(1));
        assert!(r.stopped);
        assert_eq!(r.error, None);
        // A server nobody talks to stops at once.
        let p = free_port(V4, true);
        let job = run(&server_spec(RrWorkload::UdpRr, V4, p, 1, 1, 1));
        std::thread::sleep(Duration::from_millis(400));
        let t = Instant::now();
        job.stopper().stop();
        let r = job.wait();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(r.transactions, 0);
        assert!(r.json["samples"].as_array().unwrap().len() >= 2);
        // Waiting for a client costs (almost) nothing: no thread spins.
        let idle_cpu = r.json["summary"]["cpu_s"].as_f64().unwrap();
        assert!(idle_cpu < 0.05, "idle server used {idle_cpu} s of CPU");
        release.store(true, Ordering::SeqCst);
        acc.join().unwrap();
    }

    #[test]
    fn refused_and_unbindable() {
        let port = free_port(V4, false);
        let r = run(&client_spec(
            RrWorkload::TcpRr,
            V4,
            port,
            1,
            1,
            1000,
            1,
            None,
            None,
        ))
        .wait();
        let e = r.error.unwrap_or_default();
        assert!(
            e.contains("connecting to 127.0.0.1:") && e.contains("refused"),
            "{e}"
        );
        let r = run(&client_spec(
            RrWorkload::TcpCrr,
            V4,
            port,
            1,
            1,
            1000,
            1,
            None,
            None,
        ))
        .wait();
        assert!(r.error.is_some_and(|e| e.contains("connecting to")));
        // A port already in use.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = l.local_addr().unwrap().port();
        let cfg = RrConfig::from_spec(&server_spec(RrWorkload::TcpRr, V4, busy, 1, 1, 1))
            .unwrap()
            .unwrap();
        let e = start(cfg).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(&format!("127.0.0.1:{busy}: bind")), "{e}");
    }

    #[test]
    fn validation_bounds() {
        let ok = client_spec(
            RrWorkload::TcpRr,
            "198.18.0.2",
            5000,
            1,
            1,
            1000,
            1,
            None,
            None,
        );
        let cfg = RrConfig::from_spec(&ok).unwrap().unwrap();
        assert_eq!(cfg.threads, 1);
        assert_eq!(cfg.interval, Duration::from_millis(100));
        assert!(RrConfig::from_spec(&JobSpec::CpuStat { interval_ms: 1 })
            .unwrap()
            .is_none());
        type Mutation = Box<dyn Fn(&mut JobSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("request_size", Box::new(|s| set(s, |f| *f.req = 0))),
            (
                "request_size",
                Box::new(|s| set(s, |f| *f.req = MAX_MSG + 1)),
            ),
            ("response_size", Box::new(|s| set(s, |f| *f.resp = 0))),
            ("duration_ms", Box::new(|s| set(s, |f| *f.dur = 0))),
            (
                "duration_ms",
                Box::new(|s| set(s, |f| *f.dur = MAX_DURATION_MS + 1)),
            ),
            ("flows", Box::new(|s| set(s, |f| *f.flows = Some(0)))),
            (
                "flows",
                Box::new(|s| set(s, |f| *f.flows = Some(MAX_FLOWS + 1))),
            ),
            ("threads", Box::new(|s| set(s, |f| *f.threads = Some(2)))),
            ("transactions", Box::new(|s| set(s, |f| *f.tx = Some(0)))),
            (
                "interval_ms",
                Box::new(|s| set(s, |f| *f.interval = Some(1))),
            ),
            (
                "loss_timeout_ms",
                Box::new(|s| set(s, |f| *f.loss = Some(0))),
            ),
            ("port", Box::new(|s| set(s, |f| *f.port = 0))),
            (
                "not an IP address",
                Box::new(|s| set(s, |f| *f.server = "host.example".into())),
            ),
            (
                "not an IP address",
                Box::new(|s| set(s, |f| *f.server = "-c".into())),
            ),
            (
                "not an IP address",
                Box::new(|s| set(s, |f| *f.bind = Some("1.2.3".into()))),
            ),
            (
                "different address families",
                Box::new(|s| set(s, |f| *f.bind = Some("fd00::1".into()))),
            ),
            (
                "unspecified",
                Box::new(|s| set(s, |f| *f.server = "0.0.0.0".into())),
            ),
            (
                "CPU",
                Box::new(|s| set(s, |f| *f.cpus = Some(vec![1 << 20]))),
            ),
            (
                "exceed 256 MiB",
                Box::new(|s| {
                    set(s, |f| {
                        *f.flows = Some(300);
                        *f.req = MAX_MSG;
                    })
                }),
            ),
            (
                "empty CPU list",
                Box::new(|s| set(s, |f| *f.cpus = Some(vec![]))),
            ),
        ];
        for (want, mutate) in cases {
            let mut s = ok.clone();
            mutate(&mut s);
            let e = RrConfig::from_spec(&s).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(want)),
                "{s:?}: expected an error naming {want:?}, got {e:?}"
            );
        }
        // UDP: one datagram at most.
        let mut udp = ok.clone();
        if let JobSpec::RrClient {
            workload,
            request_size,
            ..
        } = &mut udp
        {
            *workload = RrWorkload::UdpRr;
            *request_size = MAX_UDP_MSG + 1;
        }
        assert!(RrConfig::from_spec(&udp).is_err());
        // Servers: threads up to MAX_FLOWS, the bind address parsed.
        let srv = server_spec(RrWorkload::UdpRr, "fd00::2", 1, 1, 1, 1);
        assert!(RrConfig::from_spec(&srv).unwrap().is_some());
        let mut bad = srv.clone();
        if let JobSpec::RrServer { bind, .. } = &mut bad {
            *bind = "fd00::2%eth0".into();
        }
        assert!(RrConfig::from_spec(&bad).is_err());
        let mut bad = srv.clone();
        if let JobSpec::RrServer { threads, .. } = &mut bad {
            *threads = Some(MAX_FLOWS + 1);
        }
        assert!(RrConfig::from_spec(&bad).is_err());
        // 1024 udp serving threads would need 64 MiB of buffers: allowed; 1 MiB tcp_crr
        // messages allow 256 threads, not 257; a 1 MiB tcp_rr server takes 256 connections.
        let mut big = srv;
        if let JobSpec::RrServer { threads, .. } = &mut big {
            *threads = Some(MAX_FLOWS);
        }
        assert!(RrConfig::from_spec(&big).is_ok());
        let crr = |t: u32| JobSpec::RrServer {
            workload: RrWorkload::TcpCrr,
            bind: "fd00::2".into(),
            port: 1,
            request_size: MAX_MSG,
            response_size: 1,
            duration_ms: 1,
            flows: None,
            threads: Some(t),
            interval_ms: None,
            cpus: None,
        };
        assert!(RrConfig::from_spec(&crr(256)).is_ok());
        let e = RrConfig::from_spec(&crr(257)).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("257 threads")));
        let mut rr = crr(1);
        if let JobSpec::RrServer { workload, .. } = &mut rr {
            *workload = RrWorkload::TcpRr;
        }
        let cfg = RrConfig::from_spec(&rr).unwrap().unwrap();
        assert_eq!(cfg.max_connections(), 256);
    }

    #[test]
    fn wire_shape() {
        // Optional fields may be left out; workloads carry upstream's names.
        let v = serde_json::json!({
            "kind": "RrClient", "workload": "tcp_crr", "server": "fd00::2", "port": 12000,
            "request_size": 1, "response_size": 1, "duration_ms": 1000
        });
        let spec: JobSpec = serde_json::from_value(v).unwrap();
        let cfg = RrConfig::from_spec(&spec).unwrap().unwrap();
        assert_eq!(cfg.workload, RrWorkload::TcpCrr);
        assert_eq!((cfg.flows, cfg.threads, cfg.transactions), (1, 1, None));
        assert_eq!(
            cfg.loss_timeout,
            Duration::from_millis(DEFAULT_LOSS_TIMEOUT_MS)
        );
        let back = serde_json::to_value(server_spec(RrWorkload::UdpRr, V4, 9, 1, 2, 1)).unwrap();
        assert_eq!(back["kind"], "RrServer");
        assert_eq!(back["workload"], "udp_rr");
        // Unknown fields and unknown workloads are refused by the decoder.
        for bad in [
            serde_json::json!({"kind": "RrServer", "workload": "tcp_stream", "bind": "::1",
                "port": 1, "request_size": 1, "response_size": 1, "duration_ms": 1}),
            serde_json::json!({"kind": "RrServer", "workload": "tcp_rr", "bind": "::1",
                "port": 1, "request_size": 1, "response_size": 1, "duration_ms": 1, "x": 1}),
        ] {
            assert!(serde_json::from_value::<JobSpec>(bad).is_err());
        }
    }

    struct Fields<'a> {
        server: &'a mut String,
        port: &'a mut u16,
        bind: &'a mut Option<String>,
        req: &'a mut u32,
        resp: &'a mut u32,
        dur: &'a mut u64,
        flows: &'a mut Option<u32>,
        threads: &'a mut Option<u32>,
        tx: &'a mut Option<u64>,
        interval: &'a mut Option<u64>,
        loss: &'a mut Option<u64>,
        cpus: &'a mut Option<Vec<u32>>,
    }

    fn set(s: &mut JobSpec, f: impl FnOnce(Fields<'_>)) {
        if let JobSpec::RrClient {
            server,
            port,
            bind,
            request_size,
            response_size,
            duration_ms,
            flows,
            threads,
            transactions,
            interval_ms,
            loss_timeout_ms,
            cpus,
            ..
        } = s
        {
            f(Fields {
                server,
                port,
                bind,
                req: request_size,
                resp: response_size,
                dur: duration_ms,
                flows,
                threads,
                tx: transactions,
                interval: interval_ms,
                loss: loss_timeout_ms,
                cpus,
            });
        }
    }

    #[test]
    fn histogram() {
        // Buckets are contiguous and ordered, each at most 1/32 of its values wide.
        let mut prev = 0;
        for v in (0u64..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= prev || v > 5000);
            prev = b;
            assert!(b < BUCKETS);
            assert!(
                bucket_hi(b) >= v,
                "{v}: bucket {b} ends at {}",
                bucket_hi(b)
            );
            let lo = if b == 0 { 0 } else { bucket_hi(b - 1) + 1 };
            assert!(lo <= v);
            assert!((bucket_hi(b) - lo) as f64 <= (v as f64 / 32.0).max(0.0) + 1.0);
        }
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        assert_eq!((h.min_ns, h.max_ns, h.n), (1000, 1_000_000, 1000));
        assert_eq!(h.mean_ns(), Some(500_500.0));
        // population stddev of 1000·(1..=1000)
        let sd = h.stddev_ns().unwrap();
        assert!((sd - 288_674.99).abs() < 1.0, "{sd}");
        for (p, exact) in [
            (50.0, 500_000u64),
            (90.0, 900_000),
            (99.0, 990_000),
            (100.0, 1_000_000),
        ] {
            let got = h.percentile(p).unwrap();
            assert!(
                got >= exact && (got - exact) as f64 <= exact as f64 / 32.0,
                "p{p}: {got}"
            );
        }
        let mut other = Histogram::default();
        other.record(5);
        h.merge(&other);
        assert_eq!((h.min_ns, h.n), (5, 1001));
        assert_eq!(h.percentile(0.01), Some(5));
    }

    #[test]
    fn coarsening_keeps_cumulative_samples() {
        let mut s = Sampler::new(Instant::now(), 1000.0, Duration::from_millis(10));
        for k in 0..3 * MAX_SAMPLES as u64 {
            let now = Duration::from_millis(10 * k);
            if now < s.next {
                continue; // what `due` says
            }
            s.push(
                Sample {
                    time: 1000.0 + now.as_secs_f64(),
                    transactions: 7 * k,
                    cpu_s: 0.0,
                    latency_sum_s: 0.0,
                    latency_sumsq_s2: 0.0,
                },
                now,
            );
        }
        assert!(s.samples.len() < MAX_SAMPLES, "{}", s.samples.len());
        assert!(s.samples.len() > MAX_SAMPLES / 4, "{}", s.samples.len());
        assert_eq!(s.interval, Duration::from_millis(40));
        assert_eq!(s.samples[0].time, 1000.0);
        // Still cumulative: each kept sample is one of the originals, in order.
        assert!(s.samples.windows(2).all(|w| w[0].time < w[1].time
            && w[1].transactions - w[0].transactions
                == (7.0 * 100.0 * (w[1].time - w[0].time)).round() as u64));
    }
}
