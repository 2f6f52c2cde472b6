//! The ENRT parameters several recipes share, one group per upstream class or mixin that
//! declares them (upstream `lnst/Recipes/ENRT/`: BaseEnrtRecipe.py, MeasurementGenerators/,
//! PerfTestMixins/, ConfigMixins/, RecipeReqs/). A recipe
//! embeds the groups it has with `group NAME: TYPE` in its [`param_set!`](crate::param_set).

use crate::param_set;
use crate::recipes::typed::{str_tuple, IpVersion};
use crate::schema::ParamType;

/// Largest value of a u32 field of the agent protocol (ping count, sizes).
pub const U32_MAX: f64 = u32::MAX as f64;
/// iperf3 refuses longer tests (its MAX_TIME).
pub const IPERF_MAX_SECONDS: f64 = 86_400.0;
/// iperf3's limit on `-P` (its MAX_STREAMS).
pub const IPERF_MAX_STREAMS: f64 = 128.0;
/// Highest CPU index any Linux kernel can have: `NR_CPUS` is at most 8192 (x86 MAXSMP,
/// powerpc); a larger index cannot name a CPU.
pub const MAX_CPU_INDEX: f64 = 8191.0;

crate::choice_enum! {
    /// A flow type of `perf_tests` (iperf: *_stream; neper: *_rr, tcp_crr).
    pub enum PerfTest {
        TcpStream = "tcp_stream",
        UdpStream = "udp_stream",
        SctpStream = "sctp_stream",
        MptcpStream = "mptcp_stream",
        TcpRr = "tcp_rr",
        TcpCrr = "tcp_crr",
        UdpRr = "udp_rr",
    }
}

crate::choice_enum! {
    /// `net_perf_tool`.
    pub enum NetPerfTool { Iperf = "iperf", Neper = "neper" }
}

crate::choice_enum! {
    /// `perf_tool_cpu_policy`.
    pub enum CpuPolicy { All = "all", RoundRobin = "round-robin" }
}

crate::choice_enum! {
    /// `cpu_perf_tool` (upstream takes the class object; we take its name).
    pub enum CpuPerfTool { StatCpuMeasurement = "StatCPUMeasurement" }
}

crate::choice_enum! {
    /// `vf_trust`.
    pub enum OnOff { On = "on", Off = "off" }
}

fn seq(t: ParamType) -> ParamType {
    ParamType::Seq(Box::new(t))
}

fn int_list() -> ParamType {
    ParamType::List(Some(Box::new(ParamType::Int)))
}

param_set! {
    /// BaseEnrtRecipe: IP versions, the ping phase, iterations and simulation.
    pub struct EnrtParams {
        param ip_versions: Vec<IpVersion> = dflt(
            seq(IpVersion::param_type()),
            str_tuple(&["ipv4", "ipv6"]),
            "IP versions the ping and perf phases loop over",
        ),
        param ping_parallel: bool = dflt(
            Bool,
            false,
            "ping all IP pairs in parallel (False: only the first pair per IP version)",
        ),
        param ping_bidirect: bool = dflt(Bool, false, "also ping in the reverse direction (not evaluated)"),
        param ping_count: u32 = dflt(Int, 100i64, "ping -c").range(1.0, U32_MAX),
        param ping_interval: f64 = dflt(Float, 0.2, "ping -i, seconds").range(0.001, 86_400.0),
        param ping_psize: u32 = dflt(Int, 56i64, "ping -s, payload bytes").range(0.0, 65_535.0),
        param perf_iterations: u32 = dflt(Int, 5i64, "iterations per perf configuration")
            .range(1.0, U32_MAX),
        param perf_test_simulation: bool = dflt(
            Bool,
            false,
            "do not run flows; produce zero-valued results",
        ),
    }
}

param_set! {
    /// BaseFlowMeasurementGenerator and FlowMeasurementGenerator: the flows of the perf phase.
    pub struct FlowParams {
        param perf_tests: Vec<PerfTest> = dflt(
            seq(PerfTest::param_type()),
            str_tuple(&["tcp_stream", "udp_stream", "sctp_stream"]),
            "flow types (iperf: tcp/udp/sctp/mptcp_stream; neper: tcp_rr/tcp_crr/udp_rr)",
        ),
        param perf_duration: u32 = dflt(Int, 60i64, "measured seconds per iteration")
            .range(1.0, IPERF_MAX_SECONDS),
        param perf_warmup_duration: u32 = dflt(
            Int,
            0i64,
            "warm-up seconds trimmed from both ends (iperf -t = duration + 2*warmup)",
        )
        .range(0.0, IPERF_MAX_SECONDS),
        param perf_parallel_streams: u32 = dflt(Int, 1i64, "iperf -P streams per process")
            .range(1.0, IPERF_MAX_STREAMS),
        param perf_parallel_processes: u32 = dflt(
            Int,
            1i64,
            "client/server process pairs per endpoint pair",
        )
        .range(1.0, 1024.0),
        param perf_msg_sizes: Vec<u32> = dflt(
            int_list(),
            crate::params::Value::List(vec![crate::params::Value::Int(123)]),
            "iperf -l sizes; one perf configuration per size",
        )
        .range(1.0, U32_MAX),
        param net_perf_tool: NetPerfTool = dflt(NetPerfTool::param_type(), "iperf", "flow measurement tool"),
        param perf_tool_cpu: Option<Vec<u32>> = opt(
            int_list(),
            "CPUs the perf tool is pinned to (taskset -c), client and server",
        )
        .range(0.0, MAX_CPU_INDEX),
        param perf_tool_cpu_policy: Option<CpuPolicy> = opt(
            CpuPolicy::param_type(),
            "how perf_tool_cpu is applied (unset acts like 'all')",
        ),
    }
}

param_set! {
    /// FlowEndpointsStatCPUMeasurementGenerator, LinuxPerfMeasurementGenerator and
    /// CommonPerfTestTweakMixin: the measurements next to the flows and the perf tweaks.
    pub struct PerfMeasurementParams {
        param cpu_perf_tool: CpuPerfTool = dflt(
            CpuPerfTool::param_type(),
            "StatCPUMeasurement",
            "CPU measurement class",
        ),
        param do_linuxperf_measurement: bool = dflt(
            Bool,
            false,
            "run perf record on all hosts during flows",
        ),
        param udp_fragmentation_threshold: u32 = dflt(
            Int,
            104_857_600i64,
            "ipfrag_high_thresh during udp_stream",
        )
        .range(0.0, U32_MAX),
        param udp_fragmentation_time: u32 = dflt(Int, 1i64, "ipfrag_time during udp_stream")
            .range(0.0, 86_400.0),
        param drop_caches: bool = dflt(Bool, false, "drop page caches before each iteration"),
    }
}

param_set! {
    /// BaremetalEnrtCommonMixins and UseVfsMixin: host tuning and SR-IOV.
    pub struct BaremetalParams {
        param disable_turboboost: bool = dflt(
            Bool,
            false,
            "disable Intel turbo boost during the test",
        ),
        param minimal_idlestates_latency: Option<u32> = opt(
            Int,
            "disable CPU idle states above this latency (cpupower idle-set -D)",
        )
        .range(0.0, U32_MAX),
        param enable_intel_sst_tf: Option<bool> = opt(
            Bool,
            "enable Intel SST turbo-frequency on the perf and IRQ CPUs",
        ),
        param use_vfs: bool = dflt(Bool, false, "create one VF per matched NIC and test through it"),
        param vf_trust: Option<OnOff> = opt(OnOff::param_type(), "VF trust setting"),
    }
}

param_set! {
    /// VirtualEnrtRecipe's host tuning (DisableTurboboostMixin, DisableIdleStatesMixin): no
    /// SR-IOV and no SST-TF.
    pub struct VirtualParams {
        param disable_turboboost: bool = dflt(
            Bool,
            false,
            "disable Intel turbo boost on the hypervisors during the test",
        ),
        param minimal_idlestates_latency: Option<u32> = opt(
            Int,
            "disable CPU idle states above this latency on the hypervisors (cpupower idle-set -D)",
        )
        .range(0.0, U32_MAX),
    }
}

param_set! {
    /// VirtualEnrtRecipe: the ENRT parameters of the recipes whose flows run between guests.
    pub struct VirtualEnrtParams {
        group enrt: EnrtParams,
        group flows: FlowParams,
        group measurements: PerfMeasurementParams,
        group virt: VirtualParams,
    }
}

/// The host tuning settings of either base (Baremetal or Virtual), as the ENRT run reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuningView {
    pub disable_turboboost: bool,
    pub minimal_idlestates_latency: Option<u32>,
    pub enable_intel_sst_tf: Option<bool>,
    pub use_vfs: bool,
}

/// The ENRT parameters every recipe has, whichever base class it derives from.
#[derive(Debug, Clone, Copy)]
pub struct EnrtBase<'a> {
    pub enrt: &'a EnrtParams,
    pub flows: &'a FlowParams,
    pub measurements: &'a PerfMeasurementParams,
    pub baremetal: TuningView,
    /// Where the CPU is measured when fixed: the hypervisors host1 and host2 of the Virtual
    /// base (upstream `HypervisorsStatCPUMeasurementGenerator`); None: the flows' endpoints.
    pub cpu_hosts: Option<&'static [&'static str]>,
}

/// The Virtual base's hypervisors.
pub const HYPERVISORS: &[&str] = &["host1", "host2"];

impl BaremetalEnrtParams {
    pub fn view(&self) -> EnrtBase<'_> {
        let b = &self.baremetal;
        EnrtBase {
            enrt: &self.enrt,
            flows: &self.flows,
            measurements: &self.measurements,
            baremetal: TuningView {
                disable_turboboost: b.disable_turboboost,
                minimal_idlestates_latency: b.minimal_idlestates_latency,
                enable_intel_sst_tf: b.enable_intel_sst_tf,
                use_vfs: b.use_vfs,
            },
            cpu_hosts: None,
        }
    }
}

impl VirtualEnrtParams {
    pub fn view(&self) -> EnrtBase<'_> {
        EnrtBase {
            enrt: &self.enrt,
            flows: &self.flows,
            measurements: &self.measurements,
            baremetal: TuningView {
                disable_turboboost: self.virt.disable_turboboost,
                minimal_idlestates_latency: self.virt.minimal_idlestates_latency,
                enable_intel_sst_tf: None,
                use_vfs: false,
            },
            cpu_hosts: Some(HYPERVISORS),
        }
    }
}

param_set! {
    /// BaremetalEnrtRecipe: everything an ENRT recipe on bare metal (or namespaces,
    /// containers) shares, in upstream's order.
    pub struct BaremetalEnrtParams {
        group enrt: EnrtParams,
        group flows: FlowParams,
        group measurements: PerfMeasurementParams,
        group baremetal: BaremetalParams,
    }
}

param_set! {
    /// EnrtDeviceReqParams: match filters of the requirement devices.
    pub struct DeviceReqParams {
        param driver: Option<String> = opt(Str, "match only NICs with this driver"),
        param nic_speed: Option<String> = opt(Str, "match only NICs with this speed"),
        param nic_model: Option<String> = opt(Str, "match only NICs of this model"),
    }
}

impl DeviceReqParams {
    /// No device filter (the layout `lnst-runner recipes` shows).
    pub const NONE: DeviceReqParams = DeviceReqParams {
        driver: None,
        nic_speed: None,
        nic_model: None,
    };
}

param_set! {
    /// CommonHWSubConfigMixin: the hardware sub-configuration (MTU, pause frames, IRQ
    /// pinning, coalescing).
    pub struct CommonHwParams {
        param mtu: Option<u32> = opt(Int, "MTU set on host1.eth0 and host2.eth0").range(68.0, 65_535.0),
        param rx_pause_frames: Option<bool> = opt(Bool, "ethtool -A rx on/off"),
        param tx_pause_frames: Option<bool> = opt(Bool, "ethtool -A tx on/off"),
        param dev_intr_cpu: Option<Vec<u32>> = opt(
            int_list(),
            "CPUs the NIC IRQs are pinned to, round-robin",
        )
        .range(0.0, MAX_CPU_INDEX),
        param coalescing_settings: super::devparams::CoalescingSettings = dflt(
            Dict,
            crate::params::Value::Dict(vec![]),
            "ethtool -C settings per host and device",
        ),
    }
}

crate::choice_enum! {
    pub enum FailOverMac { None = "none", Active = "active", Follow = "follow" }
}

param_set! {
    /// BondingMixin: the bond of Bond, DoubleBond and VlansOverBond.
    pub struct BondingParams {
        param bonding_mode: crate::protocol::BondMode = mandatory(
            Str,
            "bonding mode: a name (active-backup, balance-rr, 802.3ad, ...) or its number",
        ),
        param miimon_value: u32 = mandatory(Int, "MII link monitoring interval, ms")
            .range(0.0, U32_MAX),
        param fail_over_mac: FailOverMac = dflt(
            FailOverMac::param_type(),
            "none",
            "fail_over_mac, applied in active-backup mode only",
        ),
    }
}

impl BondingParams {
    /// The bond's options: mode, miimon, and fail_over_mac in active-backup mode.
    pub fn options(&self) -> crate::protocol::BondOptions {
        let mut o = bond_options(self.bonding_mode, self.miimon_value);
        if self.bonding_mode == crate::protocol::BondMode::ActiveBackup {
            o.fail_over_mac = Some(match self.fail_over_mac {
                FailOverMac::None => crate::protocol::FailOverMac::None,
                FailOverMac::Active => crate::protocol::FailOverMac::Active,
                FailOverMac::Follow => crate::protocol::FailOverMac::Follow,
            });
        }
        o
    }
}

param_set! {
    /// The bond parameters the recipes without BondingMixin declare themselves (no
    /// fail_over_mac).
    pub struct BondParams {
        param bonding_mode: crate::protocol::BondMode = mandatory(
            Str,
            "bonding mode: a name (active-backup, balance-rr, 802.3ad, ...) or its number",
        ),
        param miimon_value: u32 = mandatory(Int, "MII link monitoring interval, ms")
            .range(0.0, U32_MAX),
    }
}

impl BondParams {
    pub fn options(&self) -> crate::protocol::BondOptions {
        bond_options(self.bonding_mode, self.miimon_value)
    }
}

/// `BondDevice(mode, miimon)`.
pub fn bond_options(mode: crate::protocol::BondMode, miimon: u32) -> crate::protocol::BondOptions {
    crate::protocol::BondOptions {
        mode: Some(mode),
        miimon: Some(miimon),
        ..Default::default()
    }
}

param_set! {
    /// The team recipes' runner.
    pub struct TeamParams {
        param runner_name: crate::protocol::TeamRunner = mandatory(
            Str,
            "teamd runner: activebackup, roundrobin, loadbalance, broadcast, random or lacp",
        ),
    }
}

param_set! {
    /// PerfReversibleFlowMixin.
    pub struct PerfReverseParams {
        param perf_reverse: bool = dflt(Bool, false, "swap the flows' client and server"),
    }
}

param_set! {
    /// The three VLANs of Vlans, VlansOverBond and VlansOverTeam: ids and networks.
    pub struct ThreeVlansParams {
        param vlan0_id: u16 = dflt(Int, 10i64, "id of vlan0").range(1.0, 4094.0),
        param vlan1_id: u16 = dflt(Int, 20i64, "id of vlan1").range(1.0, 4094.0),
        param vlan2_id: u16 = dflt(Int, 30i64, "id of vlan2").range(1.0, 4094.0),
        param vlan0_ipv4: ipnet::Ipv4Net = dflt(Ipv4Net, "192.168.10.0/24", "IPv4 network of vlan0")
            .check(crate::schema::TWO_HOSTS),
        param vlan1_ipv4: ipnet::Ipv4Net = dflt(Ipv4Net, "192.168.20.0/24", "IPv4 network of vlan1")
            .check(crate::schema::TWO_HOSTS),
        param vlan2_ipv4: ipnet::Ipv4Net = dflt(Ipv4Net, "192.168.30.0/24", "IPv4 network of vlan2")
            .check(crate::schema::TWO_HOSTS),
        param vlan0_ipv6: ipnet::Ipv6Net = dflt(Ipv6Net, "fc00:0:0:1::/64", "IPv6 network of vlan0")
            .check(crate::schema::TWO_HOSTS),
        param vlan1_ipv6: ipnet::Ipv6Net = dflt(Ipv6Net, "fc00:0:0:2::/64", "IPv6 network of vlan1")
            .check(crate::schema::TWO_HOSTS),
        param vlan2_ipv6: ipnet::Ipv6Net = dflt(Ipv6Net, "fc00:0:0:3::/64", "IPv6 network of vlan2")
            .check(crate::schema::TWO_HOSTS),
    }
}

impl ThreeVlansParams {
    /// (id, IPv4 network, IPv6 network) of vlan0, vlan1, vlan2.
    pub fn vlans(&self) -> [(u16, ipnet::Ipv4Net, ipnet::Ipv6Net); 3] {
        [
            (self.vlan0_id, self.vlan0_ipv4, self.vlan0_ipv6),
            (self.vlan1_id, self.vlan1_ipv4, self.vlan1_ipv6),
            (self.vlan2_id, self.vlan2_ipv4, self.vlan2_ipv6),
        ]
    }
}

/// The offload keys of the five-combination set (O5).
pub const O5_KEYS: [&str; 5] = ["gro", "gso", "tso", "tx", "rx"];
/// O5: all on; gro off; gso+tso off; tso+tx off; rx off.
pub const O5: [&[&str]; 5] = [
    &["on", "on", "on", "on", "on"],
    &["off", "on", "on", "on", "on"],
    &["on", "off", "off", "on", "on"],
    &["on", "on", "off", "off", "on"],
    &["on", "on", "on", "on", "off"],
];
/// The offload keys of the four-combination set (O4).
pub const O4_KEYS: [&str; 4] = ["gro", "gso", "tso", "tx"];
/// O4: all on; gro off; gso+tso off; tso+tx off.
pub const O4: [&[&str]; 4] = [
    &["on", "on", "on", "on"],
    &["off", "on", "on", "on"],
    &["on", "off", "off", "on"],
    &["on", "on", "off", "off"],
];

/// An `offload_combinations` default: a tuple of dicts `{key: value}`.
pub fn offload_sets(keys: &[&str], rows: &[&[&str]]) -> crate::params::Value {
    use crate::params::Value;
    Value::Tuple(
        rows.iter()
            .map(|row| {
                Value::Dict(
                    keys.iter()
                        .zip(row.iter())
                        .map(|(k, v)| (Value::from(*k), Value::from(*v)))
                        .collect(),
                )
            })
            .collect(),
    )
}

/// The type of `offload_combinations`: a sequence of dicts of "on"/"off".
pub fn offload_type() -> ParamType {
    let on_off = ParamType::Choice(vec!["on", "off"]);
    ParamType::Seq(Box::new(ParamType::Map(Box::new(on_off))))
}

impl ThreeVlansParams {
    /// `<host>.vlan0`–`vlan2`.
    pub fn devs(host: &str) -> [crate::recipes::context::Dev; 3] {
        ["vlan0", "vlan1", "vlan2"].map(|v| crate::recipes::context::Dev::new(host, v))
    }

    /// Create vlan0–vlan2 on `lower` (a device of `host`).
    pub fn create(
        &self,
        tw: &mut crate::recipes::common::config::TestWide,
        lower: &crate::recipes::context::Dev,
    ) {
        for ((id, _, _), dev) in self.vlans().into_iter().zip(Self::devs(&lower.host)) {
            tw.create(
                &dev,
                crate::recipes::common::config::Link::Vlan {
                    parent: lower.clone(),
                    id,
                },
            );
        }
    }

    /// Host address `n` of each VLAN's networks on `host`'s VLANs: every IPv4 address, then
    /// every IPv6 one (upstream's order).
    pub fn addresses(
        &self,
        tw: &mut crate::recipes::common::config::TestWide,
        host: &str,
        n: u128,
    ) -> Result<(), crate::recipes::context::RecipeError> {
        use crate::recipes::common::config::nth_address;
        let devs = Self::devs(host);
        for ((_, v4, _), dev) in self.vlans().into_iter().zip(&devs) {
            tw.address(dev, nth_address(v4.into(), n)?);
        }
        for ((_, _, v6), dev) in self.vlans().into_iter().zip(&devs) {
            tw.address(dev, nth_address(v6.into(), n)?);
        }
        Ok(())
    }
}
