//! Wire types of the link, route, neighbour and namespace operations (`CreateLink`,
//! `Enslave`, `AddRoute`, `InNetns`, …; see docs/PROTOCOL.md §6.1). The agent builds every
//! netlink message and every teamd configuration from these typed fields: nothing the
//! controller sends is passed on as raw JSON or as a program option.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A link to create, tagged by `kind` (`{"kind": "vlan", "parent": "eth0", "id": 10}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LinkSpec {
    /// 802.1Q/802.1ad VLAN on `parent` (`ip link add link PARENT type vlan id ID`).
    Vlan {
        parent: String,
        /// 1–4094.
        id: u16,
        #[serde(default)]
        protocol: VlanProtocol,
    },
    /// Linux bridge; unset options keep the kernel defaults.
    Bridge(BridgeOptions),
    /// Bonding master (boxed: the largest kind, it would size every message).
    Bond(Box<BondOptions>),
    /// Team master driven by a teamd the agent starts (and stops when the link goes).
    Team(TeamOptions),
    /// macvlan on `parent`.
    Macvlan {
        parent: String,
        #[serde(default)]
        mode: MacvlanMode,
    },
    /// veth pair: this link and `peer`; the peer may be created directly in one of the
    /// agent's namespaces (`peer_netns`).
    Veth {
        peer: String,
        #[serde(default)]
        peer_netns: Option<String>,
    },
    /// dummy link.
    Dummy,
    /// GRE tunnel over IPv4 (`ip link add … type gre`).
    Gre(GreOptions),
    /// Ethernet over GRE over IPv4 (`gretap`).
    GreTap(GreOptions),
    /// GRE tunnel over IPv6 (`ip6gre`).
    Ip6Gre(GreOptions),
    /// Ethernet over GRE over IPv6 (`ip6gretap`).
    Ip6GreTap(GreOptions),
    /// IPv4 in IPv4 (`ipip`; modes `any`, `ipip`, `mplsip`).
    Ipip(IpTunOptions),
    /// IPv6 (or IPv4, MPLS) in IPv4 (`sit`; modes `any`, `ip6ip`, `ipip`, `mplsip`).
    Sit(IpTunOptions),
    /// IPv6 or IPv4 in IPv6 (`ip6tnl`; modes `any`, `ip6ip6`, `ipip6`).
    Ip6Tnl(IpTunOptions),
    /// VXLAN (`ip link add … type vxlan id ID [remote|group ADDR] [local ADDR] [dev PARENT]
    /// [dstport PORT]`).
    Vxlan(VxlanOptions),
    /// Geneve (`ip link add … type geneve id ID remote ADDR [dstport PORT]`).
    Geneve(GeneveOptions),
    /// MACsec on `parent` (`ip link add link PARENT … type macsec [encrypt on]`), port 1;
    /// its secure channels and keys come with `MacsecConfigure`.
    Macsec {
        parent: String,
        #[serde(default)]
        encrypt: bool,
    },
}

/// Options of the GRE kinds (`IFLA_GRE_*`); unset ones keep the kernel defaults. The
/// addresses' family must be the kind's (IPv4 for gre/gretap, IPv6 for ip6gre/ip6gretap).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreOptions {
    #[serde(default)]
    pub local: Option<std::net::IpAddr>,
    #[serde(default)]
    pub remote: Option<std::net::IpAddr>,
    /// Input and output key (`key K`: both directions, GRE_KEY set).
    #[serde(default)]
    pub key: Option<u32>,
    /// 0 inherits the inner packet's TTL.
    #[serde(default)]
    pub ttl: Option<u8>,
    #[serde(default)]
    pub tos: Option<u8>,
    /// `external` (`IFLA_GRE_COLLECT_METADATA`): a metadata-collecting device whose
    /// encapsulation (remote, key) comes from each packet's route (lightweight tunnel); no
    /// local, remote or key then.
    #[serde(default)]
    pub external: bool,
}

/// Options of the IP-in-IP kinds (`IFLA_IPTUN_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpTunOptions {
    #[serde(default)]
    pub local: Option<std::net::IpAddr>,
    #[serde(default)]
    pub remote: Option<std::net::IpAddr>,
    #[serde(default)]
    pub ttl: Option<u8>,
    #[serde(default)]
    pub tos: Option<u8>,
    /// What the tunnel carries (`IFLA_IPTUN_PROTO`); unset: the kernel's default for the kind.
    #[serde(default)]
    pub mode: Option<IpTunMode>,
}

/// `ip link … mode M` of ipip, sit and ip6tnl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpTunMode {
    Any,
    Ipip,
    Mplsip,
    Ip6ip,
    Ip6ip6,
    Ipip6,
}

impl IpTunMode {
    pub const ALL: [IpTunMode; 6] = [
        IpTunMode::Any,
        IpTunMode::Ipip,
        IpTunMode::Mplsip,
        IpTunMode::Ip6ip,
        IpTunMode::Ip6ip6,
        IpTunMode::Ipip6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IpTunMode::Any => "any",
            IpTunMode::Ipip => "ipip",
            IpTunMode::Mplsip => "mplsip",
            IpTunMode::Ip6ip => "ip6ip",
            IpTunMode::Ip6ip6 => "ip6ip6",
            IpTunMode::Ipip6 => "ipip6",
        }
    }

    /// The inner protocol number (`IFLA_IPTUN_PROTO`).
    pub fn proto(self) -> u8 {
        match self {
            IpTunMode::Any => 0,
            IpTunMode::Ipip | IpTunMode::Ipip6 => 4,
            IpTunMode::Ip6ip | IpTunMode::Ip6ip6 => 41,
            IpTunMode::Mplsip => 137,
        }
    }

    pub fn parse(s: &str) -> Option<IpTunMode> {
        IpTunMode::ALL.into_iter().find(|m| m.name() == s.trim())
    }
}

/// VXLAN options (`IFLA_VXLAN_*`). At most one of `remote` (unicast) and `group` (multicast).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanOptions {
    /// VNI, 0 to 16 777 215.
    pub id: u32,
    #[serde(default)]
    pub remote: Option<std::net::IpAddr>,
    #[serde(default)]
    pub group: Option<std::net::IpAddr>,
    #[serde(default)]
    pub local: Option<std::net::IpAddr>,
    /// Underlay device (`dev PARENT`, `IFLA_VXLAN_LINK`).
    #[serde(default)]
    pub parent: Option<String>,
    /// UDP destination port; unset: the kernel's default (8472, 4790 with `gpe`), as
    /// upstream's VxlanDevice.
    #[serde(default)]
    pub dstport: Option<u16>,
    #[serde(default)]
    pub ttl: Option<u8>,
    /// `external` (`IFLA_VXLAN_COLLECT_METADATA`): the VNI and remote of each packet come from
    /// its route (lightweight tunnel); no id, remote or group then.
    #[serde(default)]
    pub external: bool,
    /// `gpe` (`IFLA_VXLAN_GPE`): VXLAN Generic Protocol Extension (needs `external` and
    /// `learning` off).
    #[serde(default)]
    pub gpe: bool,
    /// `learning on|off` (`IFLA_VXLAN_LEARNING`); unset: the kernel's default (on).
    #[serde(default)]
    pub learning: Option<bool>,
}

/// Geneve options (`IFLA_GENEVE_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneveOptions {
    /// VNI, 0 to 16 777 215.
    pub id: u32,
    #[serde(default)]
    pub remote: Option<std::net::IpAddr>,
    /// UDP destination port; unset: the kernel's default (6081).
    #[serde(default)]
    pub dstport: Option<u16>,
    #[serde(default)]
    pub ttl: Option<u8>,
    /// `external` (`IFLA_GENEVE_COLLECT_METADATA`): VNI and remote come from each packet's
    /// route (lightweight tunnel); no id or remote then.
    #[serde(default)]
    pub external: bool,
}

impl LinkSpec {
    /// The rtnetlink kind (`ip link add … type KIND`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            LinkSpec::Vlan { .. } => "vlan",
            LinkSpec::Bridge(_) => "bridge",
            LinkSpec::Bond(_) => "bond",
            LinkSpec::Team(_) => "team",
            LinkSpec::Macvlan { .. } => "macvlan",
            LinkSpec::Veth { .. } => "veth",
            LinkSpec::Dummy => "dummy",
            LinkSpec::Gre(_) => "gre",
            LinkSpec::GreTap(_) => "gretap",
            LinkSpec::Ip6Gre(_) => "ip6gre",
            LinkSpec::Ip6GreTap(_) => "ip6gretap",
            LinkSpec::Ipip(_) => "ipip",
            LinkSpec::Sit(_) => "sit",
            LinkSpec::Ip6Tnl(_) => "ip6tnl",
            LinkSpec::Vxlan(_) => "vxlan",
            LinkSpec::Geneve(_) => "geneve",
            LinkSpec::Macsec { .. } => "macsec",
        }
    }
}

/// VLAN tag protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VlanProtocol {
    #[default]
    #[serde(rename = "802.1q")]
    Dot1Q,
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

/// macvlan mode (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Private,
    Vepa,
    #[default]
    Bridge,
    Passthru,
    Source,
}

/// Bridge options (`IFLA_BR_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeOptions {
    #[serde(default)]
    pub vlan_filtering: Option<bool>,
    /// STP on or off (`stp_state`).
    #[serde(default)]
    pub stp: Option<bool>,
    /// FDB ageing time in centiseconds (as `ip link … ageing_time`), 0 to 100 000 000.
    #[serde(default)]
    pub ageing_time: Option<u32>,
    /// Forward delay in centiseconds (200 to 3000 with STP on).
    #[serde(default)]
    pub forward_delay: Option<u32>,
    /// PVID given to new ports (1–4094, or 0 for none); needs VLAN filtering support.
    #[serde(default)]
    pub vlan_default_pvid: Option<u16>,
    /// Protocol of VLAN filtering; needs VLAN filtering support.
    #[serde(default)]
    pub vlan_protocol: Option<VlanProtocol>,
    #[serde(default)]
    pub multicast_snooping: Option<bool>,
}

impl BridgeOptions {
    /// Whether an option needs the kernel's bridge VLAN filtering.
    pub fn uses_vlan_filtering(&self) -> bool {
        self.vlan_filtering.is_some()
            || self.vlan_default_pvid.is_some()
            || self.vlan_protocol.is_some()
    }
}

/// Bonding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Lacp,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    /// The kernel's number (`IFLA_BOND_MODE`).
    pub fn number(self) -> u8 {
        match self {
            BondMode::BalanceRr => 0,
            BondMode::ActiveBackup => 1,
            BondMode::BalanceXor => 2,
            BondMode::Broadcast => 3,
            BondMode::Lacp => 4,
            BondMode::BalanceTlb => 5,
            BondMode::BalanceAlb => 6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }

    /// A mode as a recipe parameter gives it: a name (`active-backup`) or its number (`1`).
    pub fn parse(s: &str) -> Option<BondMode> {
        let s = s.trim();
        BondMode::ALL
            .into_iter()
            .find(|m| m.name() == s || m.number().to_string() == s)
    }
}

/// `fail_over_mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOverMac {
    None,
    Active,
    Follow,
}

/// `xmit_hash_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XmitHashPolicy {
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer3+4")]
    Layer34,
    #[serde(rename = "layer2+3")]
    Layer23,
    #[serde(rename = "encap2+3")]
    Encap23,
    #[serde(rename = "encap3+4")]
    Encap34,
    #[serde(rename = "vlan+srcmac")]
    VlanSrcMac,
}

/// 802.3ad `lacp_rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LacpRate {
    Slow,
    Fast,
}

/// 802.3ad `ad_select`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdSelect {
    Stable,
    Bandwidth,
    Count,
}

/// `arp_validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArpValidate {
    None,
    Active,
    Backup,
    All,
    Filter,
    FilterActive,
    FilterBackup,
}

/// `arp_all_targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArpAllTargets {
    Any,
    All,
}

/// `primary_reselect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryReselect {
    Always,
    Better,
    Failure,
}

/// Bonding options (`IFLA_BOND_*`, the set upstream's BondDevice exposes); unset ones keep
/// the kernel defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BondOptions {
    #[serde(default)]
    pub mode: Option<BondMode>,
    /// MII link monitoring interval, ms.
    #[serde(default)]
    pub miimon: Option<u32>,
    #[serde(default)]
    pub updelay: Option<u32>,
    #[serde(default)]
    pub downdelay: Option<u32>,
    #[serde(default)]
    pub use_carrier: Option<bool>,
    #[serde(default)]
    pub fail_over_mac: Option<FailOverMac>,
    #[serde(default)]
    pub xmit_hash_policy: Option<XmitHashPolicy>,
    #[serde(default)]
    pub lacp_rate: Option<LacpRate>,
    #[serde(default)]
    pub ad_select: Option<AdSelect>,
    /// 1–65535.
    #[serde(default)]
    pub ad_actor_sys_prio: Option<u16>,
    #[serde(default)]
    pub ad_user_port_key: Option<u16>,
    /// `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub ad_actor_system: Option<String>,
    #[serde(default)]
    pub arp_interval: Option<u32>,
    /// At most 16 targets.
    #[serde(default)]
    pub arp_ip_target: Option<Vec<Ipv4Addr>>,
    #[serde(default)]
    pub arp_validate: Option<ArpValidate>,
    #[serde(default)]
    pub arp_all_targets: Option<ArpAllTargets>,
    /// Primary port (an interface name; it must be a port of this bond when set later).
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default)]
    pub primary_reselect: Option<PrimaryReselect>,
    #[serde(default)]
    pub min_links: Option<u32>,
    #[serde(default)]
    pub num_peer_notif: Option<u8>,
    #[serde(default)]
    pub all_slaves_active: Option<bool>,
    /// 0–65535.
    #[serde(default)]
    pub packets_per_slave: Option<u32>,
    /// 0–255.
    #[serde(default)]
    pub resend_igmp: Option<u32>,
    /// 1–0x7fffffff.
    #[serde(default)]
    pub lp_interval: Option<u32>,
    #[serde(default)]
    pub tlb_dynamic_lb: Option<bool>,
}

/// teamd runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamRunner {
    Broadcast,
    Roundrobin,
    Random,
    Activebackup,
    Loadbalance,
    Lacp,
}

impl TeamRunner {
    pub const ALL: [TeamRunner; 6] = [
        TeamRunner::Broadcast,
        TeamRunner::Roundrobin,
        TeamRunner::Random,
        TeamRunner::Activebackup,
        TeamRunner::Loadbalance,
        TeamRunner::Lacp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TeamRunner::Broadcast => "broadcast",
            TeamRunner::Roundrobin => "roundrobin",
            TeamRunner::Random => "random",
            TeamRunner::Activebackup => "activebackup",
            TeamRunner::Loadbalance => "loadbalance",
            TeamRunner::Lacp => "lacp",
        }
    }

    /// A runner as a recipe parameter (`runner_name`) gives it.
    pub fn parse(s: &str) -> Option<TeamRunner> {
        TeamRunner::ALL.into_iter().find(|r| r.name() == s.trim())
    }
}

/// Hash inputs of the loadbalance and lacp runners (`runner.tx_hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamTxHash {
    Eth,
    Vlan,
    Ipv4,
    Ipv6,
    Ip,
    L3,
    Tcp,
    Udp,
    Sctp,
    L4,
}

/// activebackup `runner.hwaddr_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamHwaddrPolicy {
    SameAll,
    ByActive,
    OnlyActive,
}

/// teamd `link_watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum TeamLinkWatch {
    Ethtool {
        #[serde(default)]
        delay_up_ms: Option<u32>,
        #[serde(default)]
        delay_down_ms: Option<u32>,
    },
    ArpPing {
        source_host: Ipv4Addr,
        target_host: Ipv4Addr,
        #[serde(default)]
        interval_ms: Option<u32>,
        #[serde(default)]
        missed_max: Option<u32>,
    },
    NsnaPing {
        target_host: Ipv6Addr,
        #[serde(default)]
        interval_ms: Option<u32>,
        #[serde(default)]
        missed_max: Option<u32>,
    },
}

/// A team device's configuration; the agent writes teamd's JSON from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamOptions {
    pub runner: TeamRunner,
    #[serde(default)]
    pub link_watch: Option<TeamLinkWatch>,
    /// loadbalance, lacp.
    #[serde(default)]
    pub tx_hash: Option<Vec<TeamTxHash>>,
    /// activebackup.
    #[serde(default)]
    pub hwaddr_policy: Option<TeamHwaddrPolicy>,
    /// lacp: active LACPDU sending.
    #[serde(default)]
    pub active: Option<bool>,
    /// lacp: fast LACPDU rate.
    #[serde(default)]
    pub fast_rate: Option<bool>,
    /// lacp: 1–255.
    #[serde(default)]
    pub min_ports: Option<u8>,
}

impl TeamOptions {
    /// `{"runner": {"name": RUNNER}}`, everything else teamd's default (upstream's recipes).
    pub fn runner(runner: TeamRunner) -> TeamOptions {
        TeamOptions {
            runner,
            link_watch: None,
            tx_hash: None,
            hwaddr_policy: None,
            active: None,
            fast_rate: None,
            min_ports: None,
        }
    }
}

/// Per-port teamd options (`teamdctl DEV port config update PORT JSON`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamPortConfig {
    #[serde(default)]
    pub prio: Option<i32>,
    #[serde(default)]
    pub sticky: Option<bool>,
    #[serde(default)]
    pub queue_id: Option<u16>,
    #[serde(default)]
    pub lacp_prio: Option<u16>,
    #[serde(default)]
    pub lacp_key: Option<u16>,
}

impl TeamPortConfig {
    pub fn is_empty(&self) -> bool {
        *self == TeamPortConfig::default()
    }
}

/// A bridge VLAN entry of a port (`bridge vlan add dev IF vid N [pvid] [untagged] [self]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeVlan {
    /// A bridge port, or the bridge itself with `bridge_self`.
    pub ifname: String,
    /// 1–4094.
    pub vid: u16,
    #[serde(default)]
    pub pvid: bool,
    #[serde(default)]
    pub untagged: bool,
    /// The entry of the bridge device itself (`self`) rather than of a port (`master`).
    #[serde(default)]
    pub bridge_self: bool,
}

/// Route type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    #[default]
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

/// A route (`ip route add DST [via GW] [dev IF] [src SRC] [metric M] [table T]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `198.18.2.0/24`, `fd00:2::/64`, a host address (`198.18.2.2`), or `default` (the
    /// family then comes from `via`, else from `ipv6`).
    pub dst: String,
    #[serde(default)]
    pub via: Option<String>,
    #[serde(default)]
    pub dev: Option<String>,
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub metric: Option<u32>,
    /// Routing table id (default: main, 254).
    #[serde(default)]
    pub table: Option<u32>,
    #[serde(default)]
    pub kind: RouteKind,
    /// `onlink`: the gateway is on the link even when no prefix says so.
    #[serde(default)]
    pub onlink: bool,
    /// The family of `default` without `via`.
    #[serde(default)]
    pub ipv6: bool,
    /// Lightweight-tunnel encapsulation (`encap ip|ip6 id ID dst DST …`), for a route through
    /// a metadata-collecting (`external`) gre, vxlan or geneve device.
    #[serde(default)]
    pub encap: Option<Box<RouteEncap>>,
}

/// A route's IP lightweight-tunnel encapsulation (`RTA_ENCAP_TYPE` `LWTUNNEL_ENCAP_IP` for an
/// IPv4 `dst`, `LWTUNNEL_ENCAP_IP6` for an IPv6 one; `RTA_ENCAP` holds `LWTUNNEL_IP_*`). The
/// outer family is `dst`'s, independent of the route's own family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEncap {
    /// Tunnel id: the VNI of vxlan/geneve, the key of gre (`id ID`).
    pub id: u64,
    /// Outer destination (the peer's carrier address).
    pub dst: std::net::IpAddr,
    /// Outer source; unset: the kernel picks one.
    #[serde(default)]
    pub src: Option<std::net::IpAddr>,
    /// Outer TTL (hop limit).
    #[serde(default)]
    pub ttl: Option<u8>,
    /// Outer TOS (traffic class).
    #[serde(default)]
    pub tos: Option<u8>,
    /// `geneve_opts CLASS:TYPE:DATA`: one Geneve option.
    #[serde(default)]
    pub geneve_opt: Option<GeneveOpt>,
}

/// One Geneve option (`geneve_opts 0x102:0x80:00010001`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneveOpt {
    pub class: u16,
    /// Option type (the kernel takes 0–255).
    #[serde(rename = "type")]
    pub kind: u8,
    /// Option data, a multiple of 4 bytes, at most 124.
    pub data: Vec<u8>,
}

/// Neighbour entry state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighbourState {
    #[default]
    Permanent,
    Noarp,
    Reachable,
    Stale,
}

/// A neighbour (ARP/NDP) entry (`ip neigh replace IP lladdr MAC dev IF nud STATE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourSpec {
    pub ifname: String,
    /// IPv4 or IPv6 address.
    pub ip: String,
    /// `aa:bb:cc:dd:ee:ff`; required unless deleting.
    #[serde(default)]
    pub lladdr: Option<String>,
    #[serde(default)]
    pub state: NeighbourState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Op;
    use serde_json::json;

    fn op(v: serde_json::Value) -> Result<Op, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn wire_shapes() {
        let o = op(json!({"op": "CreateLink", "ifname": "vlan0",
            "link": {"kind": "vlan", "parent": "eth0", "id": 10}}));
        assert_eq!(
            o.ok(),
            Some(Op::CreateLink {
                ifname: "vlan0".into(),
                link: LinkSpec::Vlan {
                    parent: "eth0".into(),
                    id: 10,
                    protocol: VlanProtocol::Dot1Q
                },
                master: None,
                mtu: None,
                up: false
            })
        );
        let o = op(json!({"op": "CreateLink", "ifname": "br0", "up": true,
            "link": {"kind": "bridge", "stp": false, "vlan_filtering": true}}));
        assert!(
            matches!(&o, Ok(Op::CreateLink { link: LinkSpec::Bridge(b), up: true, .. })
                if b.stp == Some(false) && b.vlan_filtering == Some(true)),
            "{o:?}"
        );
        let o = op(json!({"op": "CreateLink", "ifname": "bond0",
            "link": {"kind": "bond", "mode": "active-backup", "miimon": 100,
                     "fail_over_mac": "follow", "xmit_hash_policy": "layer3+4"}}));
        assert!(
            matches!(&o, Ok(Op::CreateLink { link: LinkSpec::Bond(b), .. })
                if b.mode == Some(BondMode::ActiveBackup)
                    && b.xmit_hash_policy == Some(XmitHashPolicy::Layer34)),
            "{o:?}"
        );
        let o = op(json!({"op": "CreateLink", "ifname": "team0",
            "link": {"kind": "team", "runner": "lacp",
                     "link_watch": {"name": "ethtool", "delay_up_ms": 5}}}));
        assert!(o.is_ok(), "{o:?}");
        let o = op(json!({"op": "CreateLink", "ifname": "d0", "link": {"kind": "dummy"}}));
        assert!(o.is_ok(), "{o:?}");
        let o = op(json!({"op": "InNetns", "netns": "ns1",
            "inner": {"op": "AddAddress", "ifname": "np0", "addr": "198.18.102.2/24"}}));
        assert_eq!(o.as_ref().map(|o| o.name()).ok(), Some("AddAddress"));
        // Serialising gives the documented shape back.
        let back = serde_json::to_value(o.ok()).unwrap_or_default();
        assert_eq!(back["inner"]["op"], "AddAddress");
        assert_eq!(back["netns"], "ns1");
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        for bad in [
            // Unknown option inside a kind.
            json!({"op": "CreateLink", "ifname": "br0", "link": {"kind": "bridge", "stpp": true}}),
            json!({"op": "CreateLink", "ifname": "b", "link": {"kind": "bond", "mode": "rr"}}),
            json!({"op": "CreateLink", "ifname": "b", "link": {"kind": "bond", "bogus": 1}}),
            // Raw teamd JSON is not accepted.
            json!({"op": "CreateLink", "ifname": "t", "link": {"kind": "team", "runner": "lacp",
                   "config": {"runner": {"name": "lacp"}}}}),
            json!({"op": "CreateLink", "ifname": "t", "link": {"kind": "ipvlan"}}),
            json!({"op": "CreateLink", "ifname": "v", "link": {"kind": "vlan", "parent": "e", "id": 70000}}),
            json!({"op": "AddRoute", "route": {"dst": "default", "gw": "198.18.0.1"}}),
            json!({"op": "Enslave", "ifname": "e", "master": "t",
                   "team_port": {"prio": 1, "script": "x"}}),
            json!({"op": "InNetns", "netns": "n", "op": {"op": "ListInterfaces"}}),
        ] {
            assert!(op(bad.clone()).is_err(), "accepted {bad}");
        }
    }

    /// InNetns nests Op in Op: a deep nesting is refused by the decoder's recursion limit, not
    /// by the stack.
    #[test]
    fn deep_nesting_is_an_error() {
        let depth = 10_000;
        let mut text = String::new();
        for _ in 0..depth {
            text.push_str(r#"{"op":"InNetns","netns":"n","inner":"#);
        }
        text.push_str(r#"{"op":"ListInterfaces"}"#);
        text.push_str(&"}".repeat(depth));
        assert!(serde_json::from_str::<Op>(&text).is_err());
    }
}

/// The encapsulation of an L2TPv3 tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L2tpEncap {
    /// Directly over IP (protocol 115).
    Ip,
    /// Over UDP.
    Udp,
}

impl L2tpEncap {
    pub fn name(self) -> &'static str {
        match self {
            L2tpEncap::Ip => "ip",
            L2tpEncap::Udp => "udp",
        }
    }
}

/// A static (unmanaged) L2TPv3 tunnel, as upstream's `L2TPManager.create_tunnel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2tpTunnelSpec {
    /// 1 to 4294967295.
    pub tunnel_id: u32,
    pub peer_tunnel_id: u32,
    pub encap: L2tpEncap,
    pub local: std::net::IpAddr,
    pub remote: std::net::IpAddr,
    /// UDP ports (encap udp only).
    #[serde(default)]
    pub udp_sport: Option<u16>,
    #[serde(default)]
    pub udp_dport: Option<u16>,
}

impl L2tpTunnelSpec {
    /// `ip l2tp add tunnel …`.
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = ["ip", "l2tp", "add", "tunnel"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut kv = |k: &str, val: String| {
            v.push(k.to_string());
            v.push(val);
        };
        kv("tunnel_id", self.tunnel_id.to_string());
        kv("peer_tunnel_id", self.peer_tunnel_id.to_string());
        kv("encap", self.encap.name().to_string());
        kv("local", self.local.to_string());
        kv("remote", self.remote.to_string());
        if let Some(p) = self.udp_sport {
            kv("udp_sport", p.to_string());
        }
        if let Some(p) = self.udp_dport {
            kv("udp_dport", p.to_string());
        }
        v
    }
}

/// A session of an L2TPv3 tunnel and its Ethernet device (upstream `L2TPSessionDevice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2tpSessionSpec {
    /// The session's device.
    pub ifname: String,
    pub tunnel_id: u32,
    pub session_id: u32,
    pub peer_session_id: u32,
}

impl L2tpSessionSpec {
    /// `ip l2tp add session name IFNAME …`.
    pub fn argv(&self) -> Vec<String> {
        [
            "ip".to_string(),
            "l2tp".into(),
            "add".into(),
            "session".into(),
            "name".into(),
            self.ifname.clone(),
            "tunnel_id".into(),
            self.tunnel_id.to_string(),
            "session_id".into(),
            self.session_id.to_string(),
            "peer_session_id".into(),
            self.peer_session_id.to_string(),
        ]
        .to_vec()
    }
}
