//! Packet-rate jobs (docs/PROTOCOL.md §6.4): the kernel's packet generator (`Pktgen`, driven
//! through /proc/net/pktgen by the agent itself, upstream `lnst/Tests/PktGen.py`), `xdp-bench`
//! from xdp-tools on the receiver (`XdpBench`, `XdpBenchRedirectCpu`, upstream
//! `lnst/Tests/XDPBench*.py`), `xdp-forward` (`XdpForward`) and the interface counter sampler
//! (`IfStats`, upstream `InterfaceStatsMonitor`).
//!
//! Every field is typed: interface names, MAC and IP addresses are checked by the agent, the
//! choices are enums, so nothing a controller sends becomes a free-form pktgen command or an
//! option of xdp-bench.

use serde::{Deserialize, Serialize};

/// One pktgen device (`<ifname>@<cpu>`): one kernel thread on `cpu` sending one UDP flow
/// out of `ifname` (upstream `PktgenDevice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PktgenDevice {
    pub ifname: String,
    /// The CPU whose pktgen thread (`kpktgend_<cpu>`) sends.
    pub cpu: u32,
    pub src_mac: String,
    pub dst_mac: String,
    /// IPv4 or IPv6 literals of the same family.
    pub src_ip: String,
    pub dst_ip: String,
    /// UDP ports (upstream default 9, the discard port).
    pub src_port: u16,
    pub dst_port: u16,
    /// Frame size without the CRC (pktgen `pkt_size`).
    pub pkt_size: u32,
    /// Packets per skb burst (upstream default 8).
    pub burst: u32,
    /// Packets per second (pktgen `ratep`); unlimited when unset.
    #[serde(default)]
    pub ratep: Option<u64>,
    /// 802.1Q id; none when unset.
    #[serde(default)]
    pub vlan_id: Option<u16>,
}

impl PktgenDevice {
    /// The pktgen device name: `<ifname>@<cpu>`.
    pub fn name(&self) -> String {
        format!("{}@{}", self.ifname, self.cpu)
    }

    /// The writes to `/proc/net/pktgen/<ifname>@<cpu>` that configure it, in upstream's order
    /// (flags, count, size, MACs, addresses, ports, VLAN, rate, burst).
    pub fn commands(&self) -> Vec<String> {
        let mut c = vec![
            "flag NO_TIMESTAMP".to_string(),
            "flag QUEUE_MAP_CPU".to_string(),
            "count 0".to_string(),
            format!("pkt_size {}", self.pkt_size),
            format!("dst_mac {}", self.dst_mac),
            format!("src_mac {}", self.src_mac),
        ];
        if self.src_ip.contains(':') {
            c.push(format!("dst6 {}", self.dst_ip));
            c.push(format!("src6 {}", self.src_ip));
        } else {
            c.push(format!("dst_min {}", self.dst_ip));
            c.push(format!("dst_max {}", self.dst_ip));
            c.push(format!("src_min {}", self.src_ip));
            c.push(format!("src_max {}", self.src_ip));
        }
        c.push(format!("udp_src_min {}", self.src_port));
        c.push(format!("udp_src_max {}", self.src_port));
        c.push(format!("udp_dst_min {}", self.dst_port));
        c.push(format!("udp_dst_max {}", self.dst_port));
        if let Some(v) = self.vlan_id.filter(|v| *v > 0) {
            c.push(format!("vlan_id {v}"));
        }
        if let Some(r) = self.ratep.filter(|r| *r > 0) {
            c.push(format!("ratep {r}"));
        }
        c.push(format!("burst {}", self.burst));
        c
    }
}

macro_rules! wire_choice {
    ($(#[$m:meta])* $name:ident { $($v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $s)] $v),+ }
        impl $name {
            /// The spelling xdp-bench (and upstream's parameter) uses.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
            /// Every spelling, in declaration order.
            pub const ALL: &'static [&'static str] = &[$($s),+];
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_choice! {
    /// The `xdp-bench` commands on one interface (upstream's recipes use drop and tx).
    XdpBenchCommand { Pass = "pass", Drop = "drop", Tx = "tx" }
}

wire_choice! {
    /// Where the XDP program runs: the driver (`native`) or the generic hook (`skb`).
    XdpMode { Native = "native", Skb = "skb" }
}

wire_choice! {
    /// `xdp-bench --load-mode` (xdp-tools ≥ 1.4).
    XdpLoadMode { Dpa = "dpa", LoadBytes = "load-bytes" }
}

wire_choice! {
    /// What the program does with a packet before its action (xdp-tools ≥ 1.4 calls the option
    /// `--packet-operation`, 1.3 `--program-mode`; both accept `--program-mode`).
    XdpPacketOperation {
        NoTouch = "no-touch",
        ReadData = "read-data",
        ParseIp = "parse-ip",
        SwapMacs = "swap-macs",
    }
}

wire_choice! {
    /// `xdp-bench --remote-action`.
    XdpRemoteAction { Disabled = "disabled", Drop = "drop", Pass = "pass", Redirect = "redirect" }
}

wire_choice! {
    /// `xdp-bench redirect-cpu --program-mode`: how packets are spread over the CPUs
    /// (`l4-sport`/`l4-dport` need xdp-tools ≥ 1.5).
    XdpRedirectProgram {
        NoTouch = "no-touch",
        Touch = "touch",
        RoundRobin = "round-robin",
        L4Proto = "l4-proto",
        L4Filter = "l4-filter",
        L4Hash = "l4-hash",
        L4Sport = "l4-sport",
        L4Dport = "l4-dport",
    }
}

/// `stdbuf -oL <argv>`: xdp-tools before 1.4 (Debian 12 ships 1.3.1) never flush stdout,
/// so through a pipe its per-interval lines would all arrive at its exit; coreutils' stdbuf
/// makes them line-buffered (and changes nothing for a release that flushes).
pub fn line_buffered(argv: Vec<String>) -> Vec<String> {
    let mut v = vec!["stdbuf".to_string(), "-oL".to_string()];
    v.extend(argv);
    v
}

/// `xdp-bench <command> <interface> --interval N [--load-mode M] [--program-mode P]
/// [--remote-action A] --xdp-mode X`: upstream's argument order (its module's parameters in
/// alphabetical order), with `--program-mode`, the spelling every xdp-tools release accepts,
/// for upstream's `--packet-operation`.
#[allow(clippy::too_many_arguments)]
pub fn xdp_bench_argv(
    command: XdpBenchCommand,
    interface: &str,
    interval_s: u32,
    load_mode: Option<XdpLoadMode>,
    packet_operation: Option<XdpPacketOperation>,
    remote_action: Option<XdpRemoteAction>,
    xdp_mode: XdpMode,
) -> Vec<String> {
    let mut v = vec![
        "xdp-bench".to_string(),
        command.as_str().into(),
        interface.into(),
        "--interval".into(),
        interval_s.to_string(),
    ];
    if let Some(m) = load_mode {
        v.extend(["--load-mode".into(), m.as_str().into()]);
    }
    if let Some(p) = packet_operation {
        v.extend(["--program-mode".into(), p.as_str().into()]);
    }
    if let Some(a) = remote_action {
        v.extend(["--remote-action".into(), a.as_str().into()]);
    }
    v.extend(["--xdp-mode".into(), xdp_mode.as_str().into()]);
    v
}

/// `xdp-bench redirect-cpu <if> -c <cpu>… -p <program> -r <action> -i <interval> -q <qsize>
/// -e [-m <mode>]` (upstream `XDPBenchRedirectCpu`; the extended output lists the per-CPU
/// kthread rates).
pub fn xdp_bench_redirect_cpu_argv(
    interface: &str,
    cpus: &[u32],
    program: XdpRedirectProgram,
    remote_action: XdpRemoteAction,
    interval_s: u32,
    qsize: u32,
    xdp_mode: Option<XdpMode>,
) -> Vec<String> {
    let mut v = vec![
        "xdp-bench".to_string(),
        "redirect-cpu".into(),
        interface.into(),
    ];
    for c in cpus {
        v.extend(["-c".into(), c.to_string()]);
    }
    v.extend(["-p".into(), program.as_str().into()]);
    v.extend(["-r".into(), remote_action.as_str().into()]);
    v.extend(["-i".into(), interval_s.to_string()]);
    v.extend(["-q".into(), qsize.to_string()]);
    v.push("-e".into());
    if let Some(m) = xdp_mode {
        v.extend(["-m".into(), m.as_str().into()]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(src: &str, dst: &str) -> PktgenDevice {
        PktgenDevice {
            ifname: "eth0".into(),
            cpu: 1,
            src_mac: "02:00:00:00:00:01".into(),
            dst_mac: "02:00:00:00:00:02".into(),
            src_ip: src.into(),
            dst_ip: dst.into(),
            src_port: 9,
            dst_port: 9,
            pkt_size: 123,
            burst: 8,
            ratep: None,
            vlan_id: None,
        }
    }

    #[test]
    fn pktgen_commands_follow_upstream_order() {
        let d = dev("198.18.96.1", "198.18.96.2");
        assert_eq!(d.name(), "eth0@1");
        assert_eq!(
            d.commands(),
            [
                "flag NO_TIMESTAMP",
                "flag QUEUE_MAP_CPU",
                "count 0",
                "pkt_size 123",
                "dst_mac 02:00:00:00:00:02",
                "src_mac 02:00:00:00:00:01",
                "dst_min 198.18.96.2",
                "dst_max 198.18.96.2",
                "src_min 198.18.96.1",
                "src_max 198.18.96.1",
                "udp_src_min 9",
                "udp_src_max 9",
                "udp_dst_min 9",
                "udp_dst_max 9",
                "burst 8",
            ]
        );
        let mut d6 = dev("fd00:96::1", "fd00:96::2");
        d6.ratep = Some(1000);
        d6.vlan_id = Some(10);
        d6.burst = 1;
        let c = d6.commands();
        assert_eq!(c[6..8], ["dst6 fd00:96::2", "src6 fd00:96::1"]);
        assert_eq!(c[c.len() - 3..], ["vlan_id 10", "ratep 1000", "burst 1"]);
        // ratep 0 and vlan 0 mean "none", as upstream's -1 and 0.
        d6.ratep = Some(0);
        d6.vlan_id = Some(0);
        assert_eq!(d6.commands().last().map(String::as_str), Some("burst 1"));
        assert_eq!(d6.commands().len(), 13);
    }

    #[test]
    fn xdp_bench_argv_is_upstreams() {
        // Upstream: `xdp-bench drop eth0 --interval 1 --xdp-mode native`.
        assert_eq!(
            xdp_bench_argv(
                XdpBenchCommand::Drop,
                "eth0",
                1,
                None,
                None,
                None,
                XdpMode::Native
            ),
            [
                "xdp-bench",
                "drop",
                "eth0",
                "--interval",
                "1",
                "--xdp-mode",
                "native"
            ]
        );
        assert_eq!(
            xdp_bench_argv(
                XdpBenchCommand::Tx,
                "eth0",
                1,
                Some(XdpLoadMode::Dpa),
                Some(XdpPacketOperation::SwapMacs),
                Some(XdpRemoteAction::Drop),
                XdpMode::Skb
            )
            .join(" "),
            "xdp-bench tx eth0 --interval 1 --load-mode dpa --program-mode swap-macs --remote-action drop --xdp-mode skb"
        );
        assert_eq!(
            xdp_bench_redirect_cpu_argv(
                "eth1",
                &[0, 1],
                XdpRedirectProgram::L4Dport,
                XdpRemoteAction::Drop,
                1,
                512,
                None
            )
            .join(" "),
            "xdp-bench redirect-cpu eth1 -c 0 -c 1 -p l4-dport -r drop -i 1 -q 512 -e"
        );
        assert_eq!(
            XdpPacketOperation::parse("parse-ip"),
            Some(XdpPacketOperation::ParseIp)
        );
        assert_eq!(XdpMode::parse("generic"), None);
        assert_eq!(XdpRedirectProgram::ALL.len(), 8);
    }
}
