//! Device and host tunables: pause frames, interrupt coalescing, channels, RSS hash function
//! and key, rx-flow-hash fields, IRQ affinity, turbo boost, CPU idle states, drop_caches, and
//! the `perf record` job's plumbing.
//!
//! Device settings go through the `ethtool` binary (no maintained crate sets pause, coalescing,
//! channels or RSS over ethtool netlink): every value is one validated argv element, and the
//! output is parsed. Host settings are sysfs/procfs writes to paths the agent chooses. Every
//! change records the previous state as an [`Undo`] in the links journal
//! ([`super::links::Links::exec_tunable`]), so it is undone in reverse order with the links at
//! EndRecipe and when the connection ends. A device or host without the setting answers
//! `Unsupported` with a message naming the device (and driver) or the missing file; a request
//! whose every value is "off" on a device without the setting answers
//! [`SetOutcome::NotApplicable`] instead (an explicit off is not a failure).

use super::links::Loc;
use super::{net, OpError, Session};
use crate::protocol::{
    ChannelCounts, Channels, Coalesce, CpuInfo, DropCachesWhat, ErrorKind, FlowType, IdleState,
    IdleStateId, IrqAffinity, IrqInfo, IrqPin, IrqPinning, IrqPolicy, JobResult, JobSpec,
    NamedFlag, Op, PauseParams, PerfData, Previous, Reply, RssInfo, SetOutcome,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn bad(m: impl Into<String>) -> OpError {
    OpError::new(ErrorKind::BadRequest, m)
}

fn failed(m: impl Into<String>) -> OpError {
    OpError::new(ErrorKind::Failed, m)
}

fn unsupported(m: impl Into<String>) -> OpError {
    OpError::new(ErrorKind::Unsupported, m)
}

/// Whether `op` is one of the tunables served here.
pub fn is_tunable(op: &Op) -> bool {
    matches!(
        op,
        Op::GetPause { .. }
            | Op::SetPause { .. }
            | Op::GetCoalesce { .. }
            | Op::SetCoalesce { .. }
            | Op::GetChannels { .. }
            | Op::SetChannels { .. }
            | Op::GetRss { .. }
            | Op::SetRss { .. }
            | Op::GetRxFlowHash { .. }
            | Op::SetRxFlowHash { .. }
            | Op::GetIrqs { .. }
            | Op::SetIrqAffinity { .. }
            | Op::GetCpus
            | Op::DropCaches { .. }
            | Op::SetTurboBoost { .. }
            | Op::DisableIdleStates { .. }
            | Op::RestoreIrqAffinity { .. }
            | Op::EnableIdleStates { .. }
    )
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// An interface name that goes on an ethtool command line: a valid name
/// ([`net::check_ifname`]) not starting with `-`.
pub fn check_dev(ifname: &str) -> Result<(), OpError> {
    super::links::check_new_ifname(ifname)
}

/// Parse a kernel CPU list (`0-3,6,8-9`).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// A CPU list as the kernel prints it (`0-3,6`).
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut v: Vec<u32> = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The host's online CPUs.
pub fn online_cpus() -> Result<Vec<u32>, OpError> {
    let p = "/sys/devices/system/cpu/online";
    let text = std::fs::read_to_string(p).map_err(|e| failed(format!("reading {p}: {e}")))?;
    parse_cpu_list(&text).ok_or_else(|| failed(format!("{p}: cannot parse {:?}", text.trim())))
}

/// The CPUs this agent may run on (its affinity; a container's cpuset).
pub fn allowed_cpus() -> Vec<u32> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..nix::sched::CpuSet::count())
        .filter(|c| set.is_set(*c).unwrap_or(false))
        .filter_map(|c| u32::try_from(c).ok())
        .collect()
}

/// Most CPUs one request may name.
pub const MAX_CPU_LIST: usize = 4096;

/// Check a controller's CPU list against `online` (and, for a process to pin, `allowed`).
pub fn check_cpu_list(
    cpus: &[u32],
    online: &[u32],
    allowed: Option<&[u32]>,
) -> Result<(), OpError> {
    if cpus.is_empty() {
        return Err(bad("empty CPU list"));
    }
    if cpus.len() > MAX_CPU_LIST {
        return Err(bad(format!(
            "CPU list of {} entries (at most {MAX_CPU_LIST})",
            cpus.len()
        )));
    }
    for c in cpus {
        if !online.contains(c) {
            return Err(bad(format!(
                "host has no CPU {c} (online CPUs: {})",
                format_cpu_list(online)
            )));
        }
        if let Some(a) = allowed {
            if !a.contains(c) {
                return Err(bad(format!(
                    "CPU {c} is outside this agent's CPU set ({})",
                    format_cpu_list(a)
                )));
            }
        }
    }
    Ok(())
}

/// Check CPUs for IRQs (online) or for a process to be pinned to (`process`: also inside the
/// agent's own affinity).
pub fn check_cpus(cpus: &[u32], process: bool) -> Result<(), OpError> {
    let online = online_cpus()?;
    let allowed = process.then(allowed_cpus);
    check_cpu_list(cpus, &online, allowed.as_deref())
}

// ---------------------------------------------------------------------------------------------
// ethtool
// ---------------------------------------------------------------------------------------------

/// Longest wait for one ethtool run.
const ETHTOOL_TIMEOUT: Duration = Duration::from_secs(15);

struct Ran {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

async fn ethtool_raw(args: &[String]) -> Result<Ran, OpError> {
    let child = tokio::process::Command::new("ethtool")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(ETHTOOL_TIMEOUT, child)
        .await
        .map_err(|_| {
            failed(format!(
                "ethtool {} did not finish within {} s",
                args.join(" "),
                ETHTOOL_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                failed("ethtool: not found in PATH")
            } else {
                failed(format!("running ethtool: {e}"))
            }
        })?;
    Ok(Ran {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The first line of ethtool's complaint.
fn complaint(r: &Ran) -> String {
    r.stderr
        .lines()
        .chain(r.stdout.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

fn says_unsupported(r: &Ran) -> bool {
    let all = format!("{}\n{}", r.stderr, r.stdout);
    all.contains("Operation not supported") || all.contains("not supported")
}

/// `driver X` of a device for messages (`ethtool -i`).
async fn driver_note(ifname: &str) -> String {
    match ethtool_raw(&["-i".into(), ifname.into()]).await {
        Ok(r) if r.ok => net::parse_ethtool_driver(&r.stdout)
            .map(|d| format!(" (driver {d})"))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Run ethtool on `ifname`; a refusal because the device lacks the feature is `Unsupported`
/// naming the device, its driver and `what`.
async fn ethtool(ifname: &str, args: Vec<String>, what: &str) -> Result<String, OpError> {
    let r = ethtool_raw(&args).await?;
    if r.ok {
        return Ok(r.stdout);
    }
    let why = complaint(&r);
    if says_unsupported(&r) {
        return Err(unsupported(format!(
            "{ifname}{} has no {what} (ethtool: {why})",
            driver_note(ifname).await
        )));
    }
    if r.stderr.contains("No such device") {
        return Err(OpError::new(
            ErrorKind::NotFound,
            format!("no such interface: {ifname}"),
        ));
    }
    Err(failed(format!(
        "ethtool {} failed ({}): {why}",
        args.join(" "),
        r.status
    )))
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn parse_on_off(s: &str) -> Option<bool> {
    match s.trim() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsers of ethtool's output (ethtool 6.x; the older ioctl output has the same shape)
// ---------------------------------------------------------------------------------------------

/// `ethtool -a`.
pub fn parse_pause(text: &str) -> Option<PauseParams> {
    let (mut autoneg, mut rx, mut tx) = (None, None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "Autonegotiate" => autoneg = parse_on_off(v),
            "RX" => rx = parse_on_off(v),
            "TX" => tx = parse_on_off(v),
            _ => {}
        }
    }
    Some(PauseParams {
        autoneg,
        rx: rx?,
        tx: tx?,
    })
}

/// `ethtool -c`: parameters printed as `n/a` stay None.
pub fn parse_coalesce(text: &str) -> Option<Coalesce> {
    let mut c = Coalesce::default();
    let mut seen = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Adaptive RX:") {
            // `Adaptive RX: off  TX: n/a`
            seen = true;
            let (rx, tx) = rest.split_once("TX:").unwrap_or((rest, ""));
            c.adaptive_rx = parse_on_off(rx);
            c.adaptive_tx = parse_on_off(tx);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if let Some(slot) = c.number_mut(k.trim()) {
            seen = true;
            *slot = v.trim().parse().ok();
        }
    }
    seen.then_some(c)
}

/// `ethtool -l`.
pub fn parse_channels(text: &str) -> Option<Channels> {
    let mut ch = Channels::default();
    let mut block: Option<bool> = None; // Some(true): maxima
    let mut seen = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Pre-set maximums") {
            block = Some(true);
            continue;
        }
        if line.starts_with("Current hardware settings") {
            block = Some(false);
            continue;
        }
        let (Some(max), Some((k, v))) = (block, line.split_once(':')) else {
            continue;
        };
        let counts = if max { &mut ch.max } else { &mut ch.current };
        if let Some(slot) = counts.get_mut(&k.trim().to_ascii_lowercase()) {
            seen = true;
            *slot = v.trim().parse().ok();
        }
    }
    seen.then_some(ch)
}

fn is_hex_key(s: &str) -> bool {
    !s.is_empty()
        && s.split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// `ethtool -x`.
pub fn parse_rss(text: &str) -> RssInfo {
    #[derive(PartialEq)]
    enum Sec {
        Other,
        Key,
        Hfunc,
        Xfrm,
    }
    let mut info = RssInfo::default();
    let mut sec = Sec::Other;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("RSS hash key") {
            sec = Sec::Key;
            continue;
        }
        if line.starts_with("RSS hash function") {
            sec = Sec::Hfunc;
            continue;
        }
        if line.starts_with("RSS input transformation") {
            sec = Sec::Xfrm;
            info.xfrm = Some(Vec::new());
            continue;
        }
        if line.starts_with("RX flow hash indirection table") {
            sec = Sec::Other;
            continue;
        }
        match sec {
            Sec::Key if is_hex_key(line) => info.key = Some(line.to_ascii_lowercase()),
            Sec::Hfunc | Sec::Xfrm => {
                let Some((name, v)) = line.split_once(':') else {
                    continue;
                };
                let Some(on) = parse_on_off(v) else { continue };
                let f = NamedFlag {
                    name: name.trim().to_string(),
                    on,
                };
                if sec == Sec::Hfunc {
                    info.hfuncs.push(f);
                } else if let Some(x) = info.xfrm.as_mut() {
                    x.push(f);
                }
            }
            _ => {}
        }
    }
    info
}

/// ethtool's `rx-flow-hash` letters and the lines `ethtool -n` prints for them.
const FLOW_FIELDS: [(char, &str); 9] = [
    ('m', "L2DA"),
    ('v', "VLAN tag"),
    ('t', "L3 proto"),
    ('s', "IP SA"),
    ('d', "IP DA"),
    ('f', "L4 bytes 0 & 1 [TCP/UDP src port]"),
    ('n', "L4 bytes 2 & 3 [TCP/UDP dst port]"),
    ('e', "GTP TEID"),
    ('r', "All matching flows discarded on RX"),
];

fn sorted_letters(s: &str) -> String {
    let mut v: Vec<char> = s.chars().collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().collect()
}

/// `ethtool -n DEV rx-flow-hash TYPE`: the letters, sorted; Err names an unknown line.
pub fn parse_flow_hash(text: &str) -> Result<String, String> {
    let mut letters = String::new();
    let mut started = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.contains("flows use these fields") {
            started = true;
            continue;
        }
        if !started {
            continue;
        }
        if line == "None" {
            continue;
        }
        match FLOW_FIELDS.iter().find(|(_, l)| *l == line) {
            Some((c, _)) => letters.push(*c),
            None => return Err(line.to_string()),
        }
    }
    if !started {
        return Err(text.lines().next().unwrap_or("").to_string());
    }
    Ok(sorted_letters(&letters))
}

/// Check `SetRxFlowHash` letters.
pub fn check_flow_fields(fields: &str) -> Result<String, OpError> {
    let ok = !fields.is_empty()
        && fields.len() <= FLOW_FIELDS.len()
        && fields
            .chars()
            .all(|c| FLOW_FIELDS.iter().any(|(l, _)| *l == c));
    let sorted = sorted_letters(fields);
    if !ok || sorted.len() != fields.len() {
        let mut shown: String = fields.chars().take(20).collect();
        if fields.chars().nth(20).is_some() {
            shown.push('…');
        }
        return Err(bad(format!(
            "invalid rx-flow-hash fields {shown:?}: distinct letters of m v t s d f n e r"
        )));
    }
    Ok(sorted)
}

/// One line of /proc/interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    pub irq: u32,
    /// Everything after the per-CPU counts, whitespace collapsed (chip, hwirq, handlers).
    pub desc: String,
}

/// The numbered lines of /proc/interrupts.
pub fn parse_interrupts(text: &str) -> Vec<IrqLine> {
    let mut lines = text.lines();
    let ncpu = lines
        .next()
        .map(|h| {
            h.split_whitespace()
                .filter(|w| w.starts_with("CPU"))
                .count()
        })
        .unwrap_or(0);
    let mut out = Vec::new();
    for line in lines {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = label.trim().parse::<u32>() else {
            continue;
        };
        let desc: Vec<&str> = rest.split_whitespace().skip(ncpu).collect();
        out.push(IrqLine {
            irq,
            desc: desc.join(" "),
        });
    }
    out
}

/// Whether `needle` occurs in `hay` with no letter or digit right before or after it.
pub fn contains_token(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = hay.get(from..).and_then(|h| h.find(needle)) {
        let start = from + pos;
        let end = start + needle.len();
        let before = hay[..start].chars().next_back();
        let after = hay[end..].chars().next();
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !alnum(before) && !alnum(after) {
            return true;
        }
        from = start + needle.len().max(1);
    }
    false
}

/// The IRQs of a device: lines naming its bus address (`PCI-MSIX-0000:00:03.0`,
/// `mlx5_comp0@pci:0000:3b:00.0`) or the device itself (`eth0-TxRx-0`), as upstream's
/// `grep -P "(name)|(bus_info)" /proc/interrupts` finds them, plus `msi_irqs` of its PCI
/// function.
pub fn match_irqs(lines: &[IrqLine], ifname: &str, bus: Option<&str>, msi: &[u32]) -> Vec<IrqLine> {
    lines
        .iter()
        .filter(|l| {
            msi.contains(&l.irq)
                || contains_token(&l.desc, ifname)
                || bus.is_some_and(|b| contains_token(&l.desc, b))
        })
        .cloned()
        .collect()
}

/// The affinity list each IRQ gets under `policy`.
pub fn irq_targets(n: usize, cpus: &[u32], policy: IrqPolicy) -> Vec<String> {
    (0..n)
        .map(|i| match policy {
            IrqPolicy::RoundRobin => cpus
                .get(i % cpus.len().max(1))
                .map(|c| c.to_string())
                .unwrap_or_default(),
            IrqPolicy::All => format_cpu_list(cpus),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Undo steps (journaled by links.rs)
// ---------------------------------------------------------------------------------------------

/// The previous state of one change, restored at EndRecipe and at the end of the session.
#[derive(Debug, Clone)]
pub enum Undo {
    Pause {
        ifname: String,
        autoneg: Option<bool>,
        rx: Option<bool>,
        tx: Option<bool>,
    },
    Coalesce {
        ifname: String,
        settings: Coalesce,
    },
    Channels {
        ifname: String,
        counts: ChannelCounts,
    },
    Rss {
        ifname: String,
        hfunc: Option<String>,
        key: Option<String>,
        xfrm: Option<Vec<String>>,
    },
    FlowHash {
        ifname: String,
        flow_type: FlowType,
        fields: String,
    },
    /// IRQ affinity lists to write back (irq, list).
    Irqs(Vec<(u32, String)>),
    /// Start irqbalance again.
    Irqbalance,
    /// sysfs/procfs files (agent-chosen paths) to write back, in reverse order.
    Files(Vec<(PathBuf, String)>),
}

impl Undo {
    /// Host-wide state, restored from the agent's own namespace whatever namespace the change
    /// was asked from.
    pub fn is_global(&self) -> bool {
        matches!(self, Undo::Irqs(_) | Undo::Irqbalance | Undo::Files(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Undo::Pause { ifname, .. } => format!("restoring pause frames of {ifname}"),
            Undo::Coalesce { ifname, .. } => format!("restoring coalescing of {ifname}"),
            Undo::Channels { ifname, .. } => format!("restoring channels of {ifname}"),
            Undo::Rss { ifname, .. } => format!("restoring RSS settings of {ifname}"),
            Undo::FlowHash {
                ifname, flow_type, ..
            } => format!("restoring rx-flow-hash {} of {ifname}", flow_type.name()),
            Undo::Irqs(v) => format!(
                "restoring the affinity of IRQ {}",
                v.iter()
                    .map(|(i, _)| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Undo::Irqbalance => "starting irqbalance again".into(),
            Undo::Files(v) => match v.first() {
                Some((p, _)) if v.len() == 1 => format!("restoring {}", p.display()),
                Some((p, _)) => format!("restoring {} and {} more files", p.display(), v.len() - 1),
                None => "restoring nothing".into(),
            },
        }
    }

    fn ifname(&self) -> Option<&str> {
        match self {
            Undo::Pause { ifname, .. }
            | Undo::Coalesce { ifname, .. }
            | Undo::Channels { ifname, .. }
            | Undo::Rss { ifname, .. }
            | Undo::FlowHash { ifname, .. } => Some(ifname),
            _ => None,
        }
    }
}

/// Undo one change (from the namespace it was made in, or any thread for host state). A
/// device that is gone has nothing to restore.
pub(super) async fn undo(nl: &net::Netlink, u: Undo) -> Result<(), OpError> {
    if let Some(ifname) = u.ifname() {
        match nl.link(ifname).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {
                tracing::info!("{}: the device is gone, nothing to restore", u.describe());
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    let what = u.describe();
    match u {
        Undo::Pause {
            ifname,
            autoneg,
            rx,
            tx,
        } => write_pause(&ifname, autoneg, rx, tx).await?,
        Undo::Coalesce { ifname, settings } => write_coalesce(&ifname, &settings).await?,
        Undo::Channels { ifname, counts } => write_channels(&ifname, &counts).await?,
        Undo::Rss {
            ifname,
            hfunc,
            key,
            xfrm,
        } => write_rss(&ifname, hfunc.as_deref(), key.as_deref(), xfrm.as_deref()).await?,
        Undo::FlowHash {
            ifname,
            flow_type,
            fields,
        } => write_flow_hash(&ifname, flow_type, &fields).await?,
        Undo::Irqs(v) => {
            let mut errs = Vec::new();
            for (irq, list) in v.into_iter().rev() {
                if let Err(e) = write_affinity(irq, &list) {
                    errs.push(e.message);
                }
            }
            if !errs.is_empty() {
                return Err(failed(errs.join("; ")));
            }
        }
        Undo::Irqbalance => systemctl("start").await?,
        Undo::Files(v) => {
            let mut errs = Vec::new();
            for (p, value) in v.into_iter().rev() {
                if let Err(e) = std::fs::write(&p, value.as_bytes()) {
                    errs.push(format!("writing {}: {e}", p.display()));
                }
            }
            if !errs.is_empty() {
                return Err(failed(errs.join("; ")));
            }
        }
    }
    tracing::info!("{what}: done");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Device settings
// ---------------------------------------------------------------------------------------------

async fn read_pause(ifname: &str) -> Result<PauseParams, OpError> {
    let text = ethtool(ifname, argv(&["-a", ifname]), "pause-frame settings").await?;
    parse_pause(&text).ok_or_else(|| failed(format!("{ifname}: cannot parse ethtool -a: {text:?}")))
}

async fn write_pause(
    ifname: &str,
    autoneg: Option<bool>,
    rx: Option<bool>,
    tx: Option<bool>,
) -> Result<(), OpError> {
    command_pause(ifname, autoneg, rx, tx).await?;
    await_pause(ifname, autoneg, rx, tx).await
}

/// `ethtool -A`.
async fn command_pause(
    ifname: &str,
    autoneg: Option<bool>,
    rx: Option<bool>,
    tx: Option<bool>,
) -> Result<(), OpError> {
    let mut a = argv(&["-A", ifname]);
    for (k, v) in [("autoneg", autoneg), ("rx", rx), ("tx", tx)] {
        if let Some(v) = v {
            a.extend([k.to_string(), on_off(v).to_string()]);
        }
    }
    ethtool(ifname, a, "pause-frame settings").await.map(|_| ())
}

/// Wait until the pause settings read back as written: the driver may apply them after a
/// renegotiation (upstream waits up to 5 s).
async fn await_pause(
    ifname: &str,
    autoneg: Option<bool>,
    rx: Option<bool>,
    tx: Option<bool>,
) -> Result<(), OpError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = read_pause(ifname).await?;
        let matches = autoneg.is_none_or(|v| now.autoneg.is_none_or(|n| n == v))
            && rx.is_none_or(|v| now.rx == v)
            && tx.is_none_or(|v| now.tx == v);
        if matches {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(format!(
                "{ifname}: pause frames are rx {} tx {} 5 s after ethtool -A",
                on_off(now.rx),
                on_off(now.tx)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn set_pause(
    ifname: &str,
    autoneg: Option<bool>,
    rx: Option<bool>,
    tx: Option<bool>,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    let asked: Vec<bool> = [autoneg, rx, tx].into_iter().flatten().collect();
    if asked.is_empty() {
        return Err(bad("SetPause: give at least one of autoneg, rx, tx"));
    }
    let cur = match read_pause(ifname).await {
        Ok(c) => c,
        Err(e) if e.kind == ErrorKind::Unsupported && asked.iter().all(|v| !v) => {
            return Ok(Reply::Tuned(SetOutcome::NotApplicable {
                reason: e.message,
            }));
        }
        Err(e) => return Err(e),
    };
    let want_autoneg = autoneg.filter(|v| cur.autoneg != Some(*v));
    let want_rx = rx.filter(|v| cur.rx != *v);
    let want_tx = tx.filter(|v| cur.tx != *v);
    if want_autoneg.is_none() && want_rx.is_none() && want_tx.is_none() {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    // ethtool sends one request: refused means unchanged. Once accepted it is journaled,
    // even if the driver then does not show the new values.
    command_pause(ifname, want_autoneg, want_rx, want_tx).await?;
    undos.push(Undo::Pause {
        ifname: ifname.to_string(),
        autoneg: want_autoneg.and(cur.autoneg),
        rx: want_rx.map(|_| cur.rx),
        tx: want_tx.map(|_| cur.tx),
    });
    await_pause(ifname, want_autoneg, want_rx, want_tx).await?;
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::Pause(cur),
    }))
}

async fn read_coalesce(ifname: &str) -> Result<Coalesce, OpError> {
    let text = ethtool(
        ifname,
        argv(&["-c", ifname]),
        "interrupt coalescing settings",
    )
    .await?;
    parse_coalesce(&text)
        .ok_or_else(|| failed(format!("{ifname}: cannot parse ethtool -c: {text:?}")))
}

async fn write_coalesce(ifname: &str, c: &Coalesce) -> Result<(), OpError> {
    let mut a = argv(&["-C", ifname]);
    for (k, v) in c.flags() {
        if let Some(v) = v {
            a.extend([k.to_string(), on_off(v).to_string()]);
        }
    }
    for (k, v) in c.numbers() {
        if let Some(v) = v {
            a.extend([k.to_string(), v.to_string()]);
        }
    }
    if a.len() == 2 {
        return Ok(());
    }
    ethtool(ifname, a, "interrupt coalescing settings").await?;
    Ok(())
}

async fn set_coalesce(
    ifname: &str,
    want: &Coalesce,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    if want.is_empty() {
        return Err(bad("SetCoalesce: no parameter given"));
    }
    let only_off = want.numbers().iter().all(|(_, v)| v.is_none())
        && want.flags().iter().all(|(_, v)| *v != Some(true));
    let cur = match read_coalesce(ifname).await {
        Ok(c) => c,
        Err(e) if e.kind == ErrorKind::Unsupported && only_off => {
            return Ok(Reply::Tuned(SetOutcome::NotApplicable {
                reason: e.message,
            }));
        }
        Err(e) => return Err(e),
    };
    let mut change = Coalesce::default();
    let mut old = Coalesce::default();
    let mut missing = Vec::new();
    let mut not_applicable = Vec::new();
    // Adaptive modes: an "off" the device cannot have (n/a) is already the case.
    let mut flag = |w: Option<bool>, c: Option<bool>, name: &'static str| match (w, c) {
        (Some(false), None) => {
            not_applicable.push(name);
            (None, None)
        }
        (Some(true), None) => {
            missing.push(name.to_string());
            (None, None)
        }
        (Some(w), Some(c)) if w != c => (Some(w), Some(c)),
        _ => (None, None),
    };
    (change.adaptive_rx, old.adaptive_rx) = flag(want.adaptive_rx, cur.adaptive_rx, "adaptive-rx");
    (change.adaptive_tx, old.adaptive_tx) = flag(want.adaptive_tx, cur.adaptive_tx, "adaptive-tx");
    let cur_numbers = cur.numbers();
    for (name, w) in want.numbers() {
        let Some(w) = w else { continue };
        let c = cur_numbers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v);
        match c {
            None => missing.push(name.to_string()),
            Some(c) if c != w => {
                if let Some(s) = change.number_mut(name) {
                    *s = Some(w);
                }
                if let Some(s) = old.number_mut(name) {
                    *s = Some(c);
                }
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(unsupported(format!(
            "{ifname}{} does not support coalescing parameter{} {} (ethtool -c shows n/a)",
            driver_note(ifname).await,
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        )));
    }
    if change.is_empty() {
        if !not_applicable.is_empty() && want.numbers().iter().all(|(_, v)| v.is_none()) {
            return Ok(Reply::Tuned(SetOutcome::NotApplicable {
                reason: format!(
                    "{ifname} has no {} (n/a): off already",
                    not_applicable.join(", ")
                ),
            }));
        }
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    // One ethtool request: refused means unchanged, so the undo follows the write.
    write_coalesce(ifname, &change).await?;
    undos.push(Undo::Coalesce {
        ifname: ifname.to_string(),
        settings: old.clone(),
    });
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::Coalesce(Box::new(old)),
    }))
}

async fn read_channels(ifname: &str) -> Result<Channels, OpError> {
    let text = ethtool(ifname, argv(&["-l", ifname]), "channel settings").await?;
    parse_channels(&text)
        .ok_or_else(|| failed(format!("{ifname}: cannot parse ethtool -l: {text:?}")))
}

async fn write_channels(ifname: &str, c: &ChannelCounts) -> Result<(), OpError> {
    let mut a = argv(&["-L", ifname]);
    for (k, v) in c.named() {
        if let Some(v) = v {
            a.extend([k.to_string(), v.to_string()]);
        }
    }
    if a.len() == 2 {
        return Ok(());
    }
    ethtool(ifname, a, "channel settings").await?;
    Ok(())
}

async fn set_channels(
    ifname: &str,
    want: &ChannelCounts,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    if want.named().iter().all(|(_, v)| v.is_none()) {
        return Err(bad("SetChannels: no count given"));
    }
    let cur = read_channels(ifname).await?;
    let mut change = ChannelCounts::default();
    let mut old = ChannelCounts::default();
    let cur_named = cur.current.named();
    let max_named = cur.max.named();
    for (i, (name, w)) in want.named().into_iter().enumerate() {
        let Some(w) = w else { continue };
        let (Some((_, c)), Some((_, max))) = (cur_named.get(i), max_named.get(i)) else {
            continue;
        };
        let Some(max) = max else {
            return Err(unsupported(format!(
                "{ifname}{} has no separate {name} channels (ethtool -l shows n/a)",
                driver_note(ifname).await
            )));
        };
        if w > *max {
            return Err(bad(format!(
                "{ifname}: {name} {w} exceeds the device's maximum {max}"
            )));
        }
        if *c != Some(w) {
            if let Some(s) = change.get_mut(name) {
                *s = Some(w);
            }
            if let Some(s) = old.get_mut(name) {
                *s = Some(c.unwrap_or(0));
            }
        }
    }
    if change.named().iter().all(|(_, v)| v.is_none()) {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    write_channels(ifname, &change).await?;
    undos.push(Undo::Channels {
        ifname: ifname.to_string(),
        counts: old,
    });
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::Channels(old),
    }))
}

async fn read_rss(ifname: &str) -> Result<RssInfo, OpError> {
    let text = ethtool(ifname, argv(&["-x", ifname]), "RSS settings").await?;
    Ok(parse_rss(&text))
}

async fn write_rss(
    ifname: &str,
    hfunc: Option<&str>,
    key: Option<&str>,
    xfrm: Option<&[String]>,
) -> Result<(), OpError> {
    let mut a = argv(&["-X", ifname]);
    if let Some(h) = hfunc {
        a.extend(["hfunc".to_string(), h.to_string()]);
    }
    if let Some(k) = key {
        a.extend(["hkey".to_string(), k.to_string()]);
    }
    if let Some(x) = xfrm {
        // `xfrm none` clears the bitmap; each `xfrm NAME` after it sets one bit.
        a.extend(["xfrm".to_string(), "none".to_string()]);
        for n in x {
            a.extend(["xfrm".to_string(), n.clone()]);
        }
    }
    if a.len() == 2 {
        return Ok(());
    }
    // A device with RSS may still lack a hash function ethtool lists (virtio_net: Toeplitz
    // only): the refusal names the setting.
    let what = format!("RSS setting '{}'", a[2..].join(" "));
    ethtool(ifname, a, &what).await?;
    Ok(())
}

fn check_word(what: &str, s: &str) -> Result<(), OpError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid {what} {:?}: 1 to 32 of A-Z a-z 0-9 - _, not starting with -",
            s.chars().take(40).collect::<String>()
        )))
    }
}

async fn set_rss(
    ifname: &str,
    hfunc: Option<&str>,
    key: Option<&str>,
    xfrm: Option<&[String]>,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    if hfunc.is_none() && key.is_none() && xfrm.is_none() {
        return Err(bad("SetRss: give hfunc, key or xfrm"));
    }
    if let Some(h) = hfunc {
        check_word("hash function", h)?;
    }
    if let Some(k) = key {
        if !is_hex_key(k) || k.len() > 3 * 512 {
            return Err(bad(format!(
                "invalid RSS key {:?}: hex bytes aa:bb:…",
                k.chars().take(40).collect::<String>()
            )));
        }
    }
    for x in xfrm.unwrap_or_default() {
        check_word("RSS input transformation", x)?;
    }
    let cur = read_rss(ifname).await?;
    let mut new_h = None;
    if let Some(h) = hfunc {
        if cur.hfuncs.is_empty() {
            return Err(unsupported(format!(
                "{ifname}{} reports no RSS hash functions",
                driver_note(ifname).await
            )));
        }
        if !cur.hfuncs.iter().any(|f| f.name == h) {
            return Err(bad(format!(
                "{ifname} offers the hash functions {}, not {h}",
                cur.hfuncs
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if cur.active_hfunc() != Some(h) {
            new_h = Some(h);
        }
    }
    let mut new_k = None;
    if let Some(k) = key {
        let k = k.to_ascii_lowercase();
        let Some(old) = &cur.key else {
            return Err(unsupported(format!(
                "{ifname}{} reports no RSS hash key",
                driver_note(ifname).await
            )));
        };
        if old.len() != k.len() {
            return Err(bad(format!(
                "{ifname}'s RSS key is {} bytes; the one given is {}",
                old.len().div_ceil(3),
                k.len().div_ceil(3)
            )));
        }
        if *old != k {
            new_k = Some(k);
        }
    }
    let mut new_x = None;
    if let Some(x) = xfrm {
        let Some(avail) = &cur.xfrm else {
            return Err(unsupported(format!(
                "{ifname}: RSS input transformations are not reported (device{} or this ethtool)",
                driver_note(ifname).await
            )));
        };
        if let Some(n) = x.iter().find(|n| !avail.iter().any(|f| f.name == **n)) {
            return Err(bad(format!(
                "{ifname} has no RSS input transformation {n} (it has {})",
                avail
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut want: Vec<String> = x.to_vec();
        want.sort();
        want.dedup();
        let mut have = cur.xfrm_on().unwrap_or_default();
        have.sort();
        if want != have {
            new_x = Some(want);
        }
    }
    if new_h.is_none() && new_k.is_none() && new_x.is_none() {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    write_rss(ifname, new_h, new_k.as_deref(), new_x.as_deref()).await?;
    undos.push(Undo::Rss {
        ifname: ifname.to_string(),
        hfunc: new_h.and(cur.active_hfunc().map(String::from)),
        key: new_k.as_ref().and(cur.key.clone()),
        xfrm: new_x.as_ref().and(cur.xfrm_on()),
    });
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::Rss(cur),
    }))
}

async fn read_flow_hash(ifname: &str, ft: FlowType) -> Result<String, OpError> {
    let what = format!("rx-flow-hash settings for {}", ft.name());
    let r = ethtool_raw(&argv(&["-n", ifname, "rx-flow-hash", ft.name()])).await?;
    // ethtool may print the header and `None` and still fail (no RSS support).
    if !r.ok {
        let why = complaint(&r);
        if says_unsupported(&r) {
            return Err(unsupported(format!(
                "{ifname}{} has no {what} (ethtool: {why})",
                driver_note(ifname).await
            )));
        }
        if r.stderr.contains("No such device") {
            return Err(OpError::new(
                ErrorKind::NotFound,
                format!("no such interface: {ifname}"),
            ));
        }
        return Err(failed(format!(
            "ethtool -n {ifname} rx-flow-hash {} failed ({}): {why}",
            ft.name(),
            r.status
        )));
    }
    parse_flow_hash(&r.stdout).map_err(|line| {
        failed(format!(
            "{ifname}: unknown line in ethtool -n rx-flow-hash {}: {line:?}",
            ft.name()
        ))
    })
}

async fn write_flow_hash(ifname: &str, ft: FlowType, fields: &str) -> Result<(), OpError> {
    let what = format!("rx-flow-hash settings for {}", ft.name());
    ethtool(
        ifname,
        argv(&["-N", ifname, "rx-flow-hash", ft.name(), fields]),
        &what,
    )
    .await?;
    Ok(())
}

async fn set_flow_hash(
    ifname: &str,
    ft: FlowType,
    fields: &str,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    let want = check_flow_fields(fields)?;
    let cur = read_flow_hash(ifname, ft).await?;
    if cur == want {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    if cur.is_empty() {
        return Err(unsupported(format!(
            "{ifname} hashes no fields of {} flows (ethtool: None): that state could not be \
             restored afterwards, so it is left alone",
            ft.name()
        )));
    }
    write_flow_hash(ifname, ft, &want).await?;
    undos.push(Undo::FlowHash {
        ifname: ifname.to_string(),
        flow_type: ft,
        fields: cur.clone(),
    });
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::FlowHash { fields: cur },
    }))
}

// ---------------------------------------------------------------------------------------------
// IRQs
// ---------------------------------------------------------------------------------------------

fn affinity_path(irq: u32) -> PathBuf {
    PathBuf::from(format!("/proc/irq/{irq}/smp_affinity_list"))
}

fn read_affinity(irq: u32) -> Result<String, OpError> {
    let p = affinity_path(irq);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| failed(format!("reading {}: {e}", p.display())))
}

fn write_affinity(irq: u32, list: &str) -> Result<(), OpError> {
    let p = affinity_path(irq);
    std::fs::write(&p, list.as_bytes()).map_err(|e| {
        let kind = if e.raw_os_error() == Some(libc::EIO) {
            // Kernel-managed IRQs refuse affinity changes.
            ErrorKind::NotAllowed
        } else {
            ErrorKind::Failed
        };
        OpError::new(kind, format!("writing {list} to {}: {e}", p.display()))
    })
}

/// Driver and bus address of a device (`ethtool -i`).
async fn driver_and_bus(ifname: &str) -> (Option<String>, Option<String>) {
    match ethtool_raw(&argv(&["-i", ifname])).await {
        Ok(r) if r.ok => {
            let bus = r
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("bus-info:"))
                .map(|b| b.trim().to_string())
                .filter(|b| {
                    !b.is_empty()
                        && b != "N/A"
                        && !b.contains("..")
                        && b.bytes().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'-' | b'_')
                        })
                });
            (net::parse_ethtool_driver(&r.stdout), bus)
        }
        _ => (None, None),
    }
}

/// `msi_irqs` of a PCI function.
fn msi_irqs(bus: &str) -> Vec<u32> {
    std::fs::read_dir(Path::new("/sys/bus/pci/devices").join(bus).join("msi_irqs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// The device's IRQs with their current affinity; `Unsupported` naming the device when it has
/// none (a veth, a bridge: virtual devices have no interrupts of their own).
async fn device_irqs(nl: &net::Netlink, ifname: &str) -> Result<Vec<IrqInfo>, OpError> {
    let link = nl.link(ifname).await?;
    let (driver, bus) = driver_and_bus(ifname).await;
    let msi = bus.as_deref().map(msi_irqs).unwrap_or_default();
    let text = std::fs::read_to_string("/proc/interrupts")
        .map_err(|e| failed(format!("reading /proc/interrupts: {e}")))?;
    let lines = match_irqs(&parse_interrupts(&text), ifname, bus.as_deref(), &msi);
    if lines.is_empty() {
        let drv = driver.map(|d| format!(" (driver {d})")).unwrap_or_default();
        let why = match &bus {
            None => "it has no bus device and no /proc/interrupts line names it".to_string(),
            Some(b) if !link.up => format!(
                "nothing in /proc/interrupts names it or its bus address {b}; it is down, and \
                 many drivers request their IRQs only when the device is up"
            ),
            Some(b) => format!("nothing in /proc/interrupts names it or its bus address {b}"),
        };
        return Err(unsupported(format!(
            "{ifname}{drv} has no IRQs to pin: {why}"
        )));
    }
    let mut out = Vec::new();
    for l in lines {
        out.push(IrqInfo {
            irq: l.irq,
            name: l.desc,
            affinity: read_affinity(l.irq)?,
        });
    }
    Ok(out)
}

/// The pid of a running irqbalance.
fn irqbalance_pid() -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "irqbalance")
                .unwrap_or(false)
        })
}

async fn systemctl(verb: &str) -> Result<(), OpError> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("systemctl")
            .args([verb, "irqbalance.service"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        failed(format!(
            "systemctl {verb} irqbalance: no answer within 30 s"
        ))
    })?
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            unsupported(format!(
                "cannot {verb} irqbalance: systemctl is not available on this host"
            ))
        } else {
            failed(format!("systemctl {verb} irqbalance: {e}"))
        }
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "systemctl {verb} irqbalance failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

async fn set_irq_affinity(
    nl: &net::Netlink,
    ifname: &str,
    cpus: &[u32],
    policy: IrqPolicy,
    stop_irqbalance: bool,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    check_cpus(cpus, false)?;
    let irqs = device_irqs(nl, ifname).await?;
    let pid = irqbalance_pid();
    let mut stopped = false;
    if stop_irqbalance && pid.is_some() {
        systemctl("stop").await?;
        undos.push(Undo::Irqbalance);
        stopped = true;
        tracing::info!("irqbalance stopped for this session");
    }
    let targets = irq_targets(irqs.len(), cpus, policy);
    let mut pins = Vec::new();
    let mut done: Vec<(u32, String)> = Vec::new();
    let mut result = Ok(());
    for (info, target) in irqs.into_iter().zip(targets) {
        let mut pin = IrqPin {
            irq: info.irq,
            name: info.name,
            previous: info.affinity.clone(),
            requested: target.clone(),
            now: info.affinity.clone(),
            skipped: None,
        };
        if parse_cpu_list(&info.affinity) != parse_cpu_list(&target) {
            match write_affinity(info.irq, &target) {
                Ok(()) => done.push((info.irq, info.affinity.clone())),
                Err(e) if e.kind == ErrorKind::NotAllowed => {
                    pin.skipped = Some(format!("kernel-managed IRQ: {}", e.message));
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            pin.now = read_affinity(info.irq).unwrap_or_default();
        }
        pins.push(pin);
    }
    if !done.is_empty() {
        undos.push(Undo::Irqs(done));
    }
    result?;
    Ok(Reply::IrqsPinned(IrqPinning {
        irqs: pins,
        irqbalance_running: pid.is_some() && !stopped,
        irqbalance_stopped: stopped,
    }))
}

/// Give each listed IRQ of `ifname` its own affinity list (putting a pinning back). Every IRQ
/// must be one of the device's and every list name online CPUs; nothing is written otherwise.
async fn restore_irq_affinity(
    nl: &net::Netlink,
    ifname: &str,
    wanted: &[IrqAffinity],
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    if wanted.is_empty() {
        return Err(bad("RestoreIrqAffinity: no IRQ given"));
    }
    let irqs = device_irqs(nl, ifname).await?;
    if wanted.len() > irqs.len() {
        return Err(bad(format!(
            "RestoreIrqAffinity: {} IRQs given, {ifname} has {}",
            wanted.len(),
            irqs.len()
        )));
    }
    let online = online_cpus()?;
    let mut plan = Vec::new();
    for w in wanted {
        let Some(info) = irqs.iter().find(|i| i.irq == w.irq) else {
            return Err(bad(format!("IRQ {} is not one of {ifname}'s", w.irq)));
        };
        let cpus = parse_cpu_list(&w.affinity)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad(format!("IRQ {}: not a CPU list: {:?}", w.irq, w.affinity)))?;
        check_cpu_list(&cpus, &online, None)?;
        if plan
            .iter()
            .any(|(i, _, _): &(IrqInfo, String, Vec<u32>)| i.irq == w.irq)
        {
            return Err(bad(format!("IRQ {} given twice", w.irq)));
        }
        plan.push((info.clone(), format_cpu_list(&cpus), cpus));
    }
    let mut pins = Vec::new();
    let mut done: Vec<(u32, String)> = Vec::new();
    let mut result = Ok(());
    for (info, list, cpus) in plan {
        let mut pin = IrqPin {
            irq: info.irq,
            name: info.name,
            previous: info.affinity.clone(),
            requested: list.clone(),
            now: info.affinity.clone(),
            skipped: None,
        };
        if parse_cpu_list(&info.affinity).as_deref() != Some(cpus.as_slice()) {
            match write_affinity(info.irq, &list) {
                Ok(()) => done.push((info.irq, info.affinity.clone())),
                Err(e) if e.kind == ErrorKind::NotAllowed => {
                    pin.skipped = Some(format!("kernel-managed IRQ: {}", e.message));
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            pin.now = read_affinity(info.irq).unwrap_or_default();
        }
        pins.push(pin);
    }
    if !done.is_empty() {
        undos.push(Undo::Irqs(done));
    }
    result?;
    Ok(Reply::IrqsPinned(IrqPinning {
        irqs: pins,
        irqbalance_running: irqbalance_pid().is_some(),
        irqbalance_stopped: false,
    }))
}

// ---------------------------------------------------------------------------------------------
// Host settings
// ---------------------------------------------------------------------------------------------

/// Where the CPU sysfs tree is (tests point it elsewhere).
pub const CPU_SYSFS: &str = "/sys/devices/system/cpu";

fn read_trim(p: &Path) -> Result<String, OpError> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| failed(format!("reading {}: {e}", p.display())))
}

fn write_file(p: &Path, v: &str) -> Result<(), OpError> {
    std::fs::write(p, v.as_bytes())
        .map_err(|e| failed(format!("writing {v} to {}: {e}", p.display())))
}

/// The turbo-boost switch of a CPU sysfs tree: (file, whether "1" means turbo off).
pub fn turbo_control(cpu_root: &Path) -> Option<(PathBuf, bool)> {
    let intel = cpu_root.join("intel_pstate/no_turbo");
    if intel.is_file() {
        return Some((intel, true));
    }
    let boost = cpu_root.join("cpufreq/boost");
    boost.is_file().then_some((boost, false))
}

/// Turn turbo boost on or off in the CPU sysfs tree `cpu_root`.
pub fn set_turbo_boost(
    cpu_root: &Path,
    enabled: bool,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    let Some((path, inverted)) = turbo_control(cpu_root) else {
        return Err(unsupported(format!(
            "this host has no turbo boost control: neither {} nor {} exists (no intel_pstate \
             driver and no cpufreq boost support)",
            cpu_root.join("intel_pstate/no_turbo").display(),
            cpu_root.join("cpufreq/boost").display()
        )));
    };
    let old = read_trim(&path)?;
    let was_enabled = (old == "1") != inverted;
    if was_enabled == enabled {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    let value = if enabled != inverted { "1" } else { "0" };
    write_file(&path, value)?;
    undos.push(Undo::Files(vec![(path.clone(), old)]));
    tracing::info!(
        "turbo boost {}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::TurboBoost {
            enabled: was_enabled,
        },
    }))
}

fn numbered(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Every CPU idle state of a CPU sysfs tree.
pub fn idle_states(cpu_root: &Path) -> Result<Vec<(IdleState, PathBuf)>, OpError> {
    let mut out = Vec::new();
    for (cpu, cdir) in numbered(cpu_root, "cpu") {
        for (state, sdir) in numbered(&cdir.join("cpuidle"), "state") {
            let latency_us = read_trim(&sdir.join("latency"))?
                .parse()
                .map_err(|e| failed(format!("{}/latency: {e}", sdir.display())))?;
            let disabled = read_trim(&sdir.join("disable"))? == "1";
            let name = read_trim(&sdir.join("name")).unwrap_or_default();
            out.push((
                IdleState {
                    cpu,
                    state,
                    name,
                    latency_us,
                    disabled,
                },
                sdir.join("disable"),
            ));
        }
    }
    Ok(out)
}

/// Disable every idle state with an exit latency ≥ `min_latency_us` (as `cpupower idle-set
/// -D`), recording the previous `disable` values.
pub fn disable_idle_states(
    cpu_root: &Path,
    min_latency_us: u64,
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    let all = idle_states(cpu_root)?;
    if all.is_empty() {
        return Err(unsupported(format!(
            "this host has no CPU idle states to disable: {} is missing (no cpuidle driver)",
            cpu_root.join("cpu0/cpuidle").display()
        )));
    }
    let mut changed = Vec::new();
    let mut files = Vec::new();
    let mut result = Ok(());
    for (st, disable) in all {
        if st.latency_us < min_latency_us || st.disabled {
            continue;
        }
        match write_file(&disable, "1") {
            Ok(()) => {
                files.push((disable, "0".to_string()));
                changed.push(st);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if !files.is_empty() {
        undos.push(Undo::Files(files));
    }
    result?;
    if changed.is_empty() {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    tracing::info!(
        "disabled {} CPU idle states with latency ≥ {min_latency_us} µs",
        changed.len()
    );
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::IdleStates { states: changed },
    }))
}

/// Enable the listed idle states of a CPU sysfs tree again (putting a `DisableIdleStates`
/// back); each must exist. States already enabled are left alone.
pub fn enable_idle_states(
    cpu_root: &Path,
    wanted: &[IdleStateId],
    undos: &mut Vec<Undo>,
) -> Result<Reply, OpError> {
    if wanted.is_empty() {
        return Err(bad("EnableIdleStates: no state given"));
    }
    let all = idle_states(cpu_root)?;
    let mut plan = Vec::new();
    for w in wanted {
        let Some((st, disable)) = all
            .iter()
            .find(|(s, _)| s.cpu == w.cpu && s.state == w.state)
        else {
            return Err(bad(format!(
                "this host has no idle state {} on CPU {}",
                w.state, w.cpu
            )));
        };
        if st.disabled && !plan.iter().any(|(s, _): &(IdleState, PathBuf)| s == st) {
            plan.push((st.clone(), disable.clone()));
        }
    }
    let mut changed = Vec::new();
    let mut files = Vec::new();
    let mut result = Ok(());
    for (st, disable) in plan {
        match write_file(&disable, "0") {
            Ok(()) => {
                files.push((disable, "1".to_string()));
                changed.push(st);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if !files.is_empty() {
        undos.push(Undo::Files(files));
    }
    result?;
    if changed.is_empty() {
        return Ok(Reply::Tuned(SetOutcome::Unchanged));
    }
    tracing::info!("enabled {} CPU idle states again", changed.len());
    Ok(Reply::Tuned(SetOutcome::Applied {
        previous: Previous::IdleStates { states: changed },
    }))
}

/// Write /proc/sys/vm/drop_caches (after a sync, so dirty pages can be dropped too).
fn drop_caches(what: DropCachesWhat) -> Result<Reply, OpError> {
    nix::unistd::sync();
    let p = Path::new("/proc/sys/vm/drop_caches");
    std::fs::write(p, what.value().as_bytes()).map_err(|e| {
        failed(format!(
            "writing {} to {}: {e}{}",
            what.value(),
            p.display(),
            if matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)) {
                " (is /proc/sys read-only here, e.g. in a container?)"
            } else {
                ""
            }
        ))
    })?;
    tracing::info!("dropped caches ({})", what.value());
    Ok(Reply::Ok)
}

// ---------------------------------------------------------------------------------------------
// Running a tunable
// ---------------------------------------------------------------------------------------------

/// Run one tunable (in the namespace whose netlink handle `nl` is): its reply, and the undo
/// steps of what it changed in order (also when it failed half-way).
pub(super) async fn run(nl: &net::Netlink, op: Op) -> (Result<Reply, OpError>, Vec<Undo>) {
    let mut undos = Vec::new();
    let r = run_inner(nl, op, &mut undos).await;
    (r, undos)
}

async fn dev(nl: &net::Netlink, ifname: &str) -> Result<(), OpError> {
    check_dev(ifname)?;
    nl.link(ifname).await.map(|_| ())
}

async fn run_inner(nl: &net::Netlink, op: Op, undos: &mut Vec<Undo>) -> Result<Reply, OpError> {
    let cpu_root = Path::new(CPU_SYSFS);
    match op {
        Op::GetPause { ifname } => {
            dev(nl, &ifname).await?;
            Ok(Reply::Pause(read_pause(&ifname).await?))
        }
        Op::SetPause {
            ifname,
            autoneg,
            rx,
            tx,
        } => {
            dev(nl, &ifname).await?;
            set_pause(&ifname, autoneg, rx, tx, undos).await
        }
        Op::GetCoalesce { ifname } => {
            dev(nl, &ifname).await?;
            Ok(Reply::Coalesce(Box::new(read_coalesce(&ifname).await?)))
        }
        Op::SetCoalesce { ifname, settings } => {
            dev(nl, &ifname).await?;
            set_coalesce(&ifname, &settings, undos).await
        }
        Op::GetChannels { ifname } => {
            dev(nl, &ifname).await?;
            Ok(Reply::Channels(read_channels(&ifname).await?))
        }
        Op::SetChannels { ifname, channels } => {
            dev(nl, &ifname).await?;
            set_channels(&ifname, &channels, undos).await
        }
        Op::GetRss { ifname } => {
            dev(nl, &ifname).await?;
            Ok(Reply::Rss(read_rss(&ifname).await?))
        }
        Op::SetRss {
            ifname,
            hfunc,
            key,
            xfrm,
        } => {
            dev(nl, &ifname).await?;
            set_rss(
                &ifname,
                hfunc.as_deref(),
                key.as_deref(),
                xfrm.as_deref(),
                undos,
            )
            .await
        }
        Op::GetRxFlowHash { ifname, flow_type } => {
            dev(nl, &ifname).await?;
            Ok(Reply::FlowHash(read_flow_hash(&ifname, flow_type).await?))
        }
        Op::SetRxFlowHash {
            ifname,
            flow_type,
            fields,
        } => {
            dev(nl, &ifname).await?;
            set_flow_hash(&ifname, flow_type, &fields, undos).await
        }
        Op::GetIrqs { ifname } => {
            check_dev(&ifname)?;
            Ok(Reply::Irqs(device_irqs(nl, &ifname).await?))
        }
        Op::SetIrqAffinity {
            ifname,
            cpus,
            policy,
            stop_irqbalance,
        } => {
            check_dev(&ifname)?;
            set_irq_affinity(nl, &ifname, &cpus, policy, stop_irqbalance, undos).await
        }
        Op::GetCpus => Ok(Reply::Cpus(CpuInfo {
            online: online_cpus()?,
            allowed: allowed_cpus(),
        })),
        Op::DropCaches { what } => drop_caches(what),
        Op::SetTurboBoost { enabled } => set_turbo_boost(cpu_root, enabled, undos),
        Op::DisableIdleStates { min_latency_us } => {
            disable_idle_states(cpu_root, min_latency_us, undos)
        }
        Op::RestoreIrqAffinity { ifname, irqs } => {
            check_dev(&ifname)?;
            if irqs.len() > MAX_CPU_LIST {
                return Err(bad(format!(
                    "RestoreIrqAffinity: {} IRQs (at most {MAX_CPU_LIST})",
                    irqs.len()
                )));
            }
            restore_irq_affinity(nl, &ifname, &irqs, undos).await
        }
        Op::EnableIdleStates { states } => enable_idle_states(cpu_root, &states, undos),
        other => Err(OpError::new(
            ErrorKind::Internal,
            format!("{} is not a tunable", other.name()),
        )),
    }
}

impl Session {
    /// Run a tunable at `loc` as its own task under the journal's lock: if the request is
    /// aborted (Bye, lost connection) it still finishes and is journaled before the undo.
    pub(super) async fn dispatch_tunables(&self, loc: Loc, op: Op) -> Result<Reply, OpError> {
        let links = self.links.clone();
        tokio::spawn(async move { links.exec_tunable(loc, op).await })
            .await
            .map_err(|e| OpError::new(ErrorKind::Internal, format!("tunable: {e}")))?
    }
}

// ---------------------------------------------------------------------------------------------
// perf record jobs
// ---------------------------------------------------------------------------------------------

/// Largest perf.data returned (base64 makes it 4/3 larger; the JobFinished frame must stay
/// under 16 MiB with stdout and stderr).
pub const PERF_DATA_CAP: u64 = 8 * 1024 * 1024;

/// Most bytes of a perf job's stdout and stderr kept each.
pub const PERF_TEXT_CAP: usize = 256 * 1024;

/// Longest `duration_s` of a LinuxPerf job.
pub const PERF_MAX_DURATION_S: u32 = 3600;

/// Check a LinuxPerf spec.
pub fn check_perf(spec: &JobSpec) -> Result<(), OpError> {
    let JobSpec::LinuxPerf {
        duration_s,
        record_cpus,
        events,
        frequency,
        ..
    } = spec
    else {
        return Ok(());
    };
    if let Some(d) = duration_s {
        if *d == 0 || *d > PERF_MAX_DURATION_S {
            return Err(bad(format!(
                "perf duration {d} s out of range 1–{PERF_MAX_DURATION_S}"
            )));
        }
    }
    if let Some(f) = frequency {
        if *f == 0 || *f > 100_000 {
            return Err(bad(format!("perf frequency {f} Hz out of range 1–100000")));
        }
    }
    if let Some(c) = record_cpus {
        check_cpus(c, false)?;
    }
    if events.len() > 16 {
        return Err(bad(format!("{} perf events (at most 16)", events.len())));
    }
    for e in events {
        let ok = !e.is_empty()
            && e.len() <= 128
            && !e.starts_with('-')
            && e.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'_' | b'.' | b':' | b'/' | b'=' | b',' | b'-')
            });
        if !ok {
            return Err(bad(format!(
                "invalid perf event {:?}: 1 to 128 of A-Z a-z 0-9 _ . : / = , -, not starting \
                 with -",
                e.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// The output file's name, relative to the job's directory (its working directory).
pub const PERF_FILE: &str = "perf.data";

/// argv of a LinuxPerf job.
pub fn perf_argv(spec: &JobSpec) -> Option<Vec<String>> {
    let JobSpec::LinuxPerf {
        duration_s,
        record_cpus,
        events,
        call_graph,
        frequency,
    } = spec
    else {
        return None;
    };
    // No build-id cache: perf writes nothing outside the job's directory.
    let mut v = argv(&[
        "perf",
        "record",
        "--no-buildid-cache",
        "-o",
        PERF_FILE,
        "-a",
    ]);
    if *call_graph {
        v.push("-g".into());
    }
    if let Some(f) = frequency {
        v.extend(["-F".into(), f.to_string()]);
    }
    if let Some(c) = record_cpus {
        v.extend(["-C".into(), format_cpu_list(c)]);
    }
    for e in events {
        v.extend(["-e".into(), e.clone()]);
    }
    if let Some(d) = duration_s {
        v.extend(["--".into(), "sleep".into(), d.to_string()]);
    }
    Some(v)
}

/// A fresh private directory for one perf job under the agent's run directory.
pub fn perf_dir(job_id: u64) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = Path::new(super::links::RUN_DIR);
    std::fs::create_dir_all(base).map_err(|e| format!("creating {}: {e}", base.display()))?;
    let tag = hex::encode(crate::protocol::new_nonce().get(..6).unwrap_or_default());
    let dir = base.join(format!("perf-{}-{job_id}-{tag}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

async fn perf_version() -> Option<String> {
    let out = tokio::process::Command::new("perf")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Attach the job directory's perf.data to the result (size-capped) and remove the directory.
/// A perf job passes when perf exited 0 or ended on the SIGINT of StopJob, with its file.
pub async fn perf_collect(mut r: JobResult, dir: PathBuf) -> JobResult {
    let file = dir.join(PERF_FILE);
    let ended_ok = r.exit_code == Some(0) || r.signal == Some(libc::SIGINT);
    let mut passed = false;
    match tokio::fs::metadata(&file).await {
        Err(e) => {
            r.error
                .get_or_insert(format!("perf wrote no {PERF_FILE}: {e}"));
        }
        Ok(m) if m.len() > PERF_DATA_CAP => {
            r.error = Some(format!(
                "{PERF_FILE} is {} bytes, over the {} MiB the agent returns; record fewer \
                 CPUs, a lower frequency or a shorter time",
                m.len(),
                PERF_DATA_CAP / (1024 * 1024)
            ));
        }
        Ok(_) => match tokio::fs::read(&file).await {
            Ok(bytes) => {
                use base64::Engine;
                let data = PerfData {
                    perf_data_b64: base64::engine::general_purpose::STANDARD.encode(&bytes),
                    bytes: bytes.len() as u64,
                    perf_version: perf_version().await,
                };
                r.data = serde_json::to_value(data).ok();
                passed = ended_ok;
            }
            Err(e) => r.error = Some(format!("reading {}: {e}", file.display())),
        },
    }
    r.passed = passed && r.error.is_none();
    // perf's own chatter is small; keep the JobFinished frame well under the frame limit.
    for s in [&mut r.stdout, &mut r.stderr] {
        if s.len() > PERF_TEXT_CAP {
            let mut cut = PERF_TEXT_CAP;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("\n[truncated]\n");
        }
    }
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        tracing::warn!("removing {}: {e}", dir.display());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,6,8-9\n"),
            Some(vec![0, 1, 2, 3, 6, 8, 9])
        );
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        assert_eq!(format_cpu_list(&[3, 0, 1, 2, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(format_cpu_list(&[5]), "5");
        let online = [0, 1];
        assert!(check_cpu_list(&[0, 1], &online, None).is_ok());
        let e = check_cpu_list(&[0, 6], &online, None).err();
        assert_eq!(
            e.as_ref().map(|e| e.message.as_str()),
            Some("host has no CPU 6 (online CPUs: 0-1)")
        );
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::BadRequest));
        let e = check_cpu_list(&[1], &online, Some(&[0])).err();
        assert_eq!(
            e.map(|e| e.message),
            Some("CPU 1 is outside this agent's CPU set (0)".into())
        );
        assert!(check_cpu_list(&[], &online, None).is_err());
    }

    #[test]
    fn pause_text() {
        let t = "Pause parameters for eth0:\nAutonegotiate:\ton\nRX:\t\toff\nTX:\t\ton\n\
                 RX negotiated: on\nTX negotiated: on\n";
        assert_eq!(
            parse_pause(t),
            Some(PauseParams {
                autoneg: Some(true),
                rx: false,
                tx: true
            })
        );
        assert_eq!(
            parse_pause("netlink error: Operation not supported\n"),
            None
        );
    }

    const COALESCE: &str = "Coalesce parameters for eth0:\nAdaptive RX: off  TX: n/a\n\
        stats-block-usecs: n/a\nsample-interval: n/a\npkt-rate-low: n/a\npkt-rate-high: n/a\n\n\
        rx-usecs: 0\nrx-frames: 1\nrx-usecs-irq: n/a\nrx-frames-irq: n/a\n\ntx-usecs: 0\n\
        tx-frames: 1\ntx-usecs-irq: n/a\ntx-frames-irq: n/a\n\nrx-usecs-low: n/a\n\
        rx-frame-low: 5\ntx-usecs-low: n/a\ntx-frame-low: n/a\n\nrx-usecs-high: n/a\n\
        rx-frame-high: n/a\ntx-usecs-high: n/a\ntx-frame-high: n/a\n\nCQE mode RX: n/a  TX: n/a\n";

    #[test]
    fn coalesce_text() {
        let c = parse_coalesce(COALESCE).unwrap_or_default();
        assert_eq!(
            c,
            Coalesce {
                adaptive_rx: Some(false),
                adaptive_tx: None,
                rx_usecs: Some(0),
                rx_frames: Some(1),
                tx_usecs: Some(0),
                tx_frames: Some(1),
                rx_frames_low: Some(5),
                ..Coalesce::default()
            }
        );
        assert_eq!(
            parse_coalesce("netlink error: Operation not supported"),
            None
        );
    }

    #[test]
    fn channels_text() {
        let t = "Channel parameters for tunA:\nPre-set maximums:\nRX:\t\t2\nTX:\t\t2\n\
                 Other:\t\tn/a\nCombined:\tn/a\nCurrent hardware settings:\nRX:\t\t1\nTX:\t\t1\n\
                 Other:\t\tn/a\nCombined:\tn/a\n";
        assert_eq!(
            parse_channels(t),
            Some(Channels {
                max: ChannelCounts {
                    rx: Some(2),
                    tx: Some(2),
                    other: None,
                    combined: None
                },
                current: ChannelCounts {
                    rx: Some(1),
                    tx: Some(1),
                    other: None,
                    combined: None
                },
            })
        );
        assert_eq!(parse_channels("garbage"), None);
    }

    #[test]
    fn rss_text() {
        let t = "RX flow hash indirection table for eth0 with 4 RX ring(s):\n    0:      0     1     2     3\n\
                 RSS hash key:\n6D:5a:56:da\nRSS hash function:\n    toeplitz: off\n    xor: on\n    crc32: off\n\
                 RSS input transformation:\n    symmetric-xor: on\n";
        let r = parse_rss(t);
        assert_eq!(r.active_hfunc(), Some("xor"));
        assert_eq!(r.hfuncs.len(), 3);
        assert_eq!(r.key.as_deref(), Some("6d:5a:56:da"));
        assert_eq!(r.xfrm_on(), Some(vec!["symmetric-xor".to_string()]));
        // ethtool 6.1 on virtio_net without RSS: no table, no key, no xfrm section.
        let t = "RX flow hash indirection table for eth0 with 1 RX ring(s):\nOperation not supported\n\
                 RSS hash key:\nOperation not supported\nRSS hash function:\n    toeplitz: on\n    xor: off\n";
        let r = parse_rss(t);
        assert_eq!(r.key, None);
        assert_eq!(r.xfrm, None);
        assert_eq!(r.active_hfunc(), Some("toeplitz"));
    }

    #[test]
    fn flow_hash_text() {
        let t = "TCP over IPV4 flows use these fields for computing Hash flow key:\nIP SA\nIP DA\n\
                 L4 bytes 0 & 1 [TCP/UDP src port]\nL4 bytes 2 & 3 [TCP/UDP dst port]\n";
        assert_eq!(parse_flow_hash(t), Ok("dfns".into()));
        let t = "UDP over IPV6 flows use these fields for computing Hash flow key:\nNone\n";
        assert_eq!(parse_flow_hash(t), Ok(String::new()));
        let t = "TCP over IPV4 flows use these fields for computing Hash flow key:\nIP SA\nFoo\n";
        assert_eq!(parse_flow_hash(t), Err("Foo".into()));
        assert!(parse_flow_hash("Cannot get RX network flow hashing options").is_err());
        assert_eq!(check_flow_fields("sdfn").ok(), Some("dfns".into()));
        for badf in ["", "sdx", "ss", "-sd", "sd fn", &"s".repeat(100)] {
            assert!(check_flow_fields(badf).is_err(), "{badf:?}");
        }
    }

    const INTERRUPTS: &str = "           CPU0       CPU1       \n\
         24:          1          0  IO-APIC   5-edge      ACPI:Ged\n\
         37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config\n\
         38:          0       5169 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
         39:       4027          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
         41:       4679          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx\n\
         50:          1          2 IR-PCI-MSI 1048576-edge      eth1-TxRx-0\n\
         51:          1          2 IR-PCI-MSI 1048577-edge      eth10-TxRx-0\n\
         52:          1          2 IR-PCI-MSI 1048578-edge      eth1\n\
        NMI:          0          0   Non-maskable interrupts\n";

    #[test]
    fn interrupts() {
        let lines = parse_interrupts(INTERRUPTS);
        assert_eq!(lines.len(), 8);
        assert_eq!(
            lines[2],
            IrqLine {
                irq: 38,
                desc: "PCI-MSIX-0000:00:03.0 1-edge virtio2-input.0".into()
            }
        );
        let irqs = |name: &str, bus: Option<&str>, msi: &[u32]| -> Vec<u32> {
            match_irqs(&lines, name, bus, msi)
                .into_iter()
                .map(|l| l.irq)
                .collect()
        };
        // virtio_net: found by its PCI function, not by name.
        assert_eq!(irqs("eth0", Some("0000:00:03.0"), &[]), vec![37, 38, 39]);
        assert_eq!(
            irqs("eth0", Some("0000:00:03.0"), &[37, 38, 39]),
            vec![37, 38, 39]
        );
        // By name, as a whole token: eth1 is not eth10.
        assert_eq!(irqs("eth1", None, &[]), vec![50, 52]);
        assert!(irqs("veth0", None, &[]).is_empty());
        assert!(contains_token(
            "mlx5_comp0@pci:0000:3b:00.0",
            "0000:3b:00.0"
        ));
        assert!(!contains_token("0000:3b:00.01", "0000:3b:00.0"));
        assert!(!contains_token("x", ""));
        assert_eq!(
            irq_targets(5, &[2, 3], IrqPolicy::RoundRobin),
            vec!["2", "3", "2", "3", "2"]
        );
        assert_eq!(
            irq_targets(2, &[0, 1, 2], IrqPolicy::All),
            vec!["0-2", "0-2"]
        );
    }

    fn fake_cpu_tree(root: &Path, latencies: &[u64]) {
        for cpu in 0..2 {
            for (i, lat) in latencies.iter().enumerate() {
                let d = root.join(format!("cpu{cpu}/cpuidle/state{i}"));
                std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
                std::fs::write(d.join("latency"), format!("{lat}\n")).unwrap_or_default();
                std::fs::write(d.join("disable"), "0\n").unwrap_or_default();
                std::fs::write(d.join("name"), format!("S{i}\n")).unwrap_or_default();
            }
        }
    }

    fn disabled(root: &Path) -> Vec<(u32, u32, bool)> {
        idle_states(root)
            .unwrap_or_default()
            .into_iter()
            .map(|(s, _)| (s.cpu, s.state, s.disabled))
            .collect()
    }

    /// The sysfs logic against a tree of real files shaped like /sys/devices/system/cpu.
    #[tokio::test]
    async fn idle_states_and_turbo_in_a_tree() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path();
        // No cpuidle, no turbo switch: Unsupported, naming what is missing.
        let mut undos = Vec::new();
        let e = disable_idle_states(root, 0, &mut undos).err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(ErrorKind::Unsupported));
        assert!(e
            .map(|e| e.message)
            .unwrap_or_default()
            .contains("cpu0/cpuidle"));
        let e = set_turbo_boost(root, false, &mut undos).err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(ErrorKind::Unsupported));
        assert!(e
            .map(|e| e.message)
            .unwrap_or_default()
            .contains("intel_pstate/no_turbo"));
        assert!(undos.is_empty());

        fake_cpu_tree(root, &[0, 2, 100]);
        let before = disabled(root);
        let r = disable_idle_states(root, 2, &mut undos);
        let Ok(Reply::Tuned(SetOutcome::Applied {
            previous: Previous::IdleStates { states },
        })) = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(states.len(), 4);
        assert_eq!(
            disabled(root),
            vec![
                (0, 0, false),
                (0, 1, true),
                (0, 2, true),
                (1, 0, false),
                (1, 1, true),
                (1, 2, true)
            ]
        );
        // Again: nothing left to do.
        assert!(matches!(
            disable_idle_states(root, 2, &mut undos),
            Ok(Reply::Tuned(SetOutcome::Unchanged))
        ));
        assert_eq!(undos.len(), 1);
        // Enabling two of them again (what a controller does to put the change back): only
        // those change; an unknown state is refused before anything is written.
        let mut again = Vec::new();
        let ids = [
            IdleStateId { cpu: 0, state: 1 },
            IdleStateId { cpu: 1, state: 2 },
        ];
        let bad_ids = [ids[0], IdleStateId { cpu: 7, state: 0 }];
        let e = enable_idle_states(root, &bad_ids, &mut again).err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(ErrorKind::BadRequest));
        assert!(again.is_empty());
        assert!(disabled(root).contains(&(0, 1, true)));
        let r = enable_idle_states(root, &ids, &mut again);
        let Ok(Reply::Tuned(SetOutcome::Applied {
            previous: Previous::IdleStates { states },
        })) = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(
            states.iter().map(|s| (s.cpu, s.state)).collect::<Vec<_>>(),
            [(0, 1), (1, 2)]
        );
        assert!(disabled(root).contains(&(0, 1, false)) && disabled(root).contains(&(1, 2, false)));
        assert!(matches!(
            enable_idle_states(root, &ids, &mut again),
            Ok(Reply::Tuned(SetOutcome::Unchanged))
        ));
        assert!(enable_idle_states(root, &[], &mut again).is_err());
        // Its own undo disables them again (journal order: this first, then the disable).
        let nl0 = net::Netlink::new().unwrap_or_else(|e| panic!("{e}"));
        for u in again.into_iter().rev() {
            undo(&nl0, u).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(disabled(root).contains(&(0, 1, true)) && disabled(root).contains(&(1, 2, true)));
        // intel_pstate: no_turbo 0 means turbo on.
        std::fs::create_dir_all(root.join("intel_pstate")).unwrap_or_default();
        std::fs::write(root.join("intel_pstate/no_turbo"), "0\n").unwrap_or_default();
        let r = set_turbo_boost(root, false, &mut undos);
        assert!(matches!(
            r,
            Ok(Reply::Tuned(SetOutcome::Applied {
                previous: Previous::TurboBoost { enabled: true }
            }))
        ));
        assert_eq!(
            read_trim(&root.join("intel_pstate/no_turbo")).ok(),
            Some("1".into())
        );
        assert!(matches!(
            set_turbo_boost(root, false, &mut undos),
            Ok(Reply::Tuned(SetOutcome::Unchanged))
        ));
        // Undo in reverse journal order restores every file.
        let nl = net::Netlink::new().unwrap_or_else(|e| panic!("{e}"));
        for u in undos.into_iter().rev() {
            undo(&nl, u).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(disabled(root), before);
        assert_eq!(
            read_trim(&root.join("intel_pstate/no_turbo")).ok(),
            Some("0".into())
        );
        // cpufreq boost: 1 means on.
        std::fs::remove_dir_all(root.join("intel_pstate")).unwrap_or_default();
        std::fs::create_dir_all(root.join("cpufreq")).unwrap_or_default();
        std::fs::write(root.join("cpufreq/boost"), "1\n").unwrap_or_default();
        let mut undos = Vec::new();
        assert!(set_turbo_boost(root, false, &mut undos).is_ok());
        assert_eq!(
            read_trim(&root.join("cpufreq/boost")).ok(),
            Some("0".into())
        );
    }

    #[test]
    fn perf_specs() {
        let spec = |events: Vec<&str>, d: Option<u32>| JobSpec::LinuxPerf {
            duration_s: d,
            record_cpus: None,
            events: events.into_iter().map(String::from).collect(),
            call_graph: true,
            frequency: Some(99),
        };
        assert_eq!(
            perf_argv(&spec(vec!["cycles", "sched:sched_switch"], Some(3))),
            Some(argv(&[
                "perf",
                "record",
                "--no-buildid-cache",
                "-o",
                "perf.data",
                "-a",
                "-g",
                "-F",
                "99",
                "-e",
                "cycles",
                "-e",
                "sched:sched_switch",
                "--",
                "sleep",
                "3"
            ]))
        );
        assert!(check_perf(&spec(vec!["cycles"], Some(3))).is_ok());
        for e in ["-o/etc/passwd", "", "a b", "x;y", &"e".repeat(200)] {
            assert!(check_perf(&spec(vec![e], None)).is_err(), "{e:?}");
        }
        assert!(check_perf(&spec(vec![], Some(0))).is_err());
        assert!(check_perf(&spec(vec![], Some(PERF_MAX_DURATION_S + 1))).is_err());
    }
}
