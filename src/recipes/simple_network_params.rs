//! SimpleNetworkRecipe: its 38 upstream parameters (reference lnst-recipes.md §1.4) and its
//! requirements (§1.2). The run itself lives in `simple_network.rs`.
//!
//! Type choices where upstream is untyped or a class object:
//! * `perf_msg_sizes`, `perf_tool_cpu`, `dev_intr_cpu` are lists of ints (upstream ListParam
//!   does not check items; every use is numeric).
//! * `cpu_perf_tool` is a choice of class names as strings (upstream takes a class object).
//! * `perf_tool_cpu_policy` is a choice {all, round-robin} (upstream StrParam that raises on
//!   anything else at run time).

use crate::params::Value;
use crate::requirements::{HostReq, Requirements};
use crate::schema::{ParamSpec, ParamType, ResolvedParams};
use std::collections::BTreeMap;

/// Upstream default of `net_ipv4`. Note: outside 198.18.0.0/15, the range our tests may use.
pub const DEFAULT_NET_IPV4: &str = "192.168.101.0/24";
/// Upstream default of `net_ipv6`. Note: outside fd00::/8, the range our tests may use.
pub const DEFAULT_NET_IPV6: &str = "fc00::/64";

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

fn strs(xs: &[&str]) -> Vec<Value> {
    xs.iter().map(|x| s(x)).collect()
}

fn int_list() -> ParamType {
    ParamType::List(Some(Box::new(ParamType::Int)))
}

/// Largest value of a u32 field of the agent protocol (ping count, CPU numbers, sizes).
const U32_MAX: f64 = u32::MAX as f64;
/// iperf3 refuses longer tests (its MAX_TIME).
const IPERF_MAX_SECONDS: f64 = 86_400.0;
/// iperf3's limit on `-P` (its MAX_STREAMS).
const IPERF_MAX_STREAMS: f64 = 128.0;
/// Flow types of upstream's flow generators (iperf: *_stream; neper: *_rr, tcp_crr); the run
/// says which of them this runner cannot measure.
const PERF_TESTS: [&str; 7] = [
    "tcp_stream",
    "udp_stream",
    "sctp_stream",
    "mptcp_stream",
    "tcp_rr",
    "tcp_crr",
    "udp_rr",
];

/// One offload combination dict in the upstream key order.
fn offloads(gro: &str, gso: &str, tso: &str, tx: &str, rx: &str) -> Value {
    Value::Dict(vec![
        (s("gro"), s(gro)),
        (s("gso"), s(gso)),
        (s("tso"), s(tso)),
        (s("tx"), s(tx)),
        (s("rx"), s(rx)),
    ])
}

/// The five default offload combinations of SimpleNetworkRecipe.
pub fn default_offload_combinations() -> Value {
    Value::Tuple(vec![
        offloads("on", "on", "on", "on", "on"),
        offloads("off", "on", "on", "on", "on"),
        offloads("on", "off", "off", "on", "on"),
        offloads("on", "on", "off", "off", "on"),
        offloads("on", "on", "on", "on", "off"),
    ])
}

/// All 38 parameters, in the order of reference §1.4.
pub fn params() -> Vec<ParamSpec> {
    use ParamType::*;
    let d = ParamSpec::with_default;
    let o = ParamSpec::opt;
    let seq_of = |t: ParamType| Seq(Box::new(t));
    vec![
        d(
            "net_ipv4",
            Ipv4Net,
            s(DEFAULT_NET_IPV4),
            "IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        ),
        d(
            "net_ipv6",
            Ipv6Net,
            s(DEFAULT_NET_IPV6),
            "IPv6 network; host1.eth0 gets ::1, host2.eth0 gets ::2",
        ),
        d(
            "ip_versions",
            seq_of(Choice(vec!["ipv4", "ipv6"])),
            Value::Tuple(strs(&["ipv4", "ipv6"])),
            "IP versions the ping and perf phases loop over",
        ),
        d(
            "ping_parallel",
            Bool,
            Value::Bool(false),
            "ping all IP pairs in parallel (False: only the first pair per IP version)",
        ),
        d(
            "ping_bidirect",
            Bool,
            Value::Bool(false),
            "also ping in the reverse direction (not evaluated)",
        ),
        d("ping_count", Int, Value::Int(100), "ping -c").range(1.0, U32_MAX),
        d(
            "ping_interval",
            Float,
            Value::Float(0.2),
            "ping -i, seconds",
        )
        .range(0.001, 86_400.0),
        d("ping_psize", Int, Value::Int(56), "ping -s, payload bytes").range(0.0, 65_535.0),
        d(
            "perf_iterations",
            Int,
            Value::Int(5),
            "iterations per perf configuration",
        )
        .range(1.0, U32_MAX),
        d(
            "perf_test_simulation",
            Bool,
            Value::Bool(false),
            "do not run flows; produce zero-valued results",
        ),
        d(
            "perf_tests",
            seq_of(Choice(PERF_TESTS.to_vec())),
            Value::Tuple(strs(&["tcp_stream", "udp_stream", "sctp_stream"])),
            "flow types (iperf: tcp/udp/sctp/mptcp_stream; neper: tcp_rr/tcp_crr/udp_rr)",
        ),
        d(
            "perf_duration",
            Int,
            Value::Int(60),
            "measured seconds per iteration",
        )
        .range(1.0, IPERF_MAX_SECONDS),
        d(
            "perf_warmup_duration",
            Int,
            Value::Int(0),
            "warm-up seconds trimmed from both ends (iperf -t = duration + 2*warmup)",
        )
        .range(0.0, IPERF_MAX_SECONDS),
        d(
            "perf_parallel_streams",
            Int,
            Value::Int(1),
            "iperf -P streams per process",
        )
        .range(1.0, IPERF_MAX_STREAMS),
        d(
            "perf_parallel_processes",
            Int,
            Value::Int(1),
            "client/server process pairs per endpoint pair",
        )
        .range(1.0, 1024.0),
        d(
            "perf_msg_sizes",
            int_list(),
            Value::List(vec![Value::Int(123)]),
            "iperf -l sizes; one perf configuration per size",
        )
        .range(1.0, U32_MAX),
        d(
            "net_perf_tool",
            Choice(vec!["iperf", "neper"]),
            s("iperf"),
            "flow measurement tool",
        ),
        o(
            "perf_tool_cpu",
            int_list(),
            "CPUs the perf tool is pinned to (taskset -c), client and server",
        )
        .range(0.0, U32_MAX),
        o(
            "perf_tool_cpu_policy",
            Choice(vec!["all", "round-robin"]),
            "how perf_tool_cpu is applied (unset acts like 'all')",
        ),
        d(
            "cpu_perf_tool",
            Choice(vec!["StatCPUMeasurement"]),
            s("StatCPUMeasurement"),
            "CPU measurement class",
        ),
        d(
            "do_linuxperf_measurement",
            Bool,
            Value::Bool(false),
            "run perf record on all hosts during flows",
        ),
        d(
            "udp_fragmentation_threshold",
            Int,
            Value::Int(104_857_600),
            "ipfrag_high_thresh during udp_stream",
        )
        .range(0.0, U32_MAX),
        d(
            "udp_fragmentation_time",
            Int,
            Value::Int(1),
            "ipfrag_time during udp_stream",
        )
        .range(0.0, 86_400.0),
        d(
            "drop_caches",
            Bool,
            Value::Bool(false),
            "drop page caches before each iteration",
        ),
        d(
            "disable_turboboost",
            Bool,
            Value::Bool(false),
            "disable Intel turbo boost during the test",
        ),
        o(
            "minimal_idlestates_latency",
            Int,
            "disable CPU idle states above this latency (cpupower idle-set -D)",
        )
        .range(0.0, U32_MAX),
        o(
            "enable_intel_sst_tf",
            Bool,
            "enable Intel SST turbo-frequency on the perf and IRQ CPUs",
        ),
        d(
            "use_vfs",
            Bool,
            Value::Bool(false),
            "create one VF per matched NIC and test through it",
        ),
        o("vf_trust", Choice(vec!["on", "off"]), "VF trust setting"),
        o("driver", Str, "match only NICs with this driver"),
        o("nic_speed", Str, "match only NICs with this speed"),
        o("nic_model", Str, "match only NICs of this model"),
        d(
            "offload_combinations",
            seq_of(Map(Box::new(Choice(vec!["on", "off"])))),
            default_offload_combinations(),
            "offload settings (gro/gso/tso/tx/rx); one sub-configuration per dict",
        ),
        o("mtu", Int, "MTU set on host1.eth0 and host2.eth0").range(68.0, 65_535.0),
        o("rx_pause_frames", Bool, "ethtool -A rx on/off"),
        o("tx_pause_frames", Bool, "ethtool -A tx on/off"),
        o(
            "dev_intr_cpu",
            int_list(),
            "CPUs the NIC IRQs are pinned to, round-robin",
        )
        .range(0.0, U32_MAX),
        d(
            "coalescing_settings",
            Dict,
            Value::Dict(vec![]),
            "ethtool -C settings per host and device",
        ),
    ]
}

/// host1.eth0 and host2.eth0 on network `net1`, filtered by `driver`/`speed`/`model` only
/// when the `driver`/`nic_speed`/`nic_model` params are set.
pub fn requirements(p: &ResolvedParams) -> Requirements {
    let mut dev = BTreeMap::new();
    for (param, key) in [
        ("driver", "driver"),
        ("nic_speed", "speed"),
        ("nic_model", "model"),
    ] {
        if let Some(v) = p.str(param) {
            dev.insert(key.to_string(), v.to_string());
        }
    }
    let mut r = Requirements::default();
    for host in ["host1", "host2"] {
        r.hosts.insert(
            host.to_string(),
            HostReq::default().with_interface("eth0", "net1", dev.clone()),
        );
    }
    r
}
