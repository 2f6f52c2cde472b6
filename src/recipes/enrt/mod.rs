//! The ENRT base (upstream `lnst/Recipes/ENRT/BaseEnrtRecipe.py`, `BaremetalEnrtRecipe.py` and
//! the mixins of `ConfigMixins/`, `PerfTestMixins/` and `MeasurementGenerators/`).
//!
//! A recipe implements [`EnrtRecipe`]: its parameters ([`params::BaremetalEnrtParams`] or [`params::VirtualEnrtParams`] embedded in its
//! struct), its test-wide configuration ([`TestWide`] steps), its ping endpoints, its perf
//! endpoints and which sub-configurations apply on which devices. [`run`] drives the rest, as
//! upstream's `test()`:
//!
//! 1. the parameter summary, the test-wide configuration and its description;
//! 2. for every sub-configuration (one per offload combination): apply it and describe it,
//!    the ping tests of every endpoint pair and IP version, the perf tests of every endpoint
//!    collection, IP version, flow type and message size, then remove it (reverse order,
//!    also after a failure);
//! 3. the test-wide deconfiguration (reverse order, also after a failure).
//!
//! Hosts, interfaces and device names come from the recipe (its requirements and endpoints);
//! the base names none.

pub mod devparams;
pub mod nic_tunables;
pub mod params;
pub mod subconfig;
pub mod variant;

use crate::measure::flow::FlowSpec;
use crate::recipes::common::config::{self, Configured, TestWide};
use crate::recipes::common::perf::{perf_test, FlowEvaluator, PerfConf, PerfTweaks};
use crate::recipes::common::ping::{ping_test_and_evaluate, PingConf, PingEvaluator};
use crate::recipes::common::pktrate::{self, PacketFlow, PacketMeasurement};
use crate::recipes::context::{Dev, RecipeError, RunContext};
use crate::recipes::typed::{IfAddr, IpVersion};
use crate::recipes::Recipe;
use crate::results::{ResultEntry, ResultType};
pub use nic_tunables::NicTunables;
use params::{CpuPolicy, EnrtBase, NetPerfTool, PerfTest};
use std::time::Instant;
pub use subconfig::{HwConfig, SubConfig, SubConfigs};

/// First iperf3 port; the counter restarts for every perf configuration (upstream).
pub const FIRST_PORT: u16 = 12000;

/// Two devices to ping between (upstream `PingEndpoints`). Unreachable endpoints must not
/// answer: they are pinged over IPv4 only, and the pings pass when nothing comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingEndpoints {
    pub a: Dev,
    pub b: Dev,
    pub reachable: bool,
}

impl PingEndpoints {
    pub fn new(a: &Dev, b: &Dev) -> Self {
        PingEndpoints {
            a: a.clone(),
            b: b.clone(),
            reachable: true,
        }
    }
    /// Endpoints that must be isolated from each other.
    pub fn unreachable(a: &Dev, b: &Dev) -> Self {
        PingEndpoints {
            reachable: false,
            ..Self::new(a, b)
        }
    }
}

/// One perf endpoint: an address on a device (upstream `IPEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEndpoint {
    pub dev: Dev,
    pub addr: IfAddr,
}

/// Client and server of a flow (upstream `EndpointPair`).
pub type EndpointPair = (IpEndpoint, IpEndpoint);

/// Every pair of addresses of `a` and `b` of the same IP version, IPv4 first (upstream
/// `ip_endpoint_pairs` with `itertools.product`).
pub fn ip_endpoint_pairs(config: &Configured, a: &Dev, b: &Dev) -> Vec<EndpointPair> {
    let mut out = Vec::new();
    for v in [IpVersion::Ipv4, IpVersion::Ipv6] {
        for x in config.ips(a, Some(v)) {
            for y in config.ips(b, Some(v)) {
                out.push((
                    IpEndpoint {
                        dev: a.clone(),
                        addr: x,
                    },
                    IpEndpoint {
                        dev: b.clone(),
                        addr: y,
                    },
                ));
            }
        }
    }
    out
}

/// The same pairs with client and server swapped (upstream `PerfReversibleFlowMixin`).
pub fn reversed(pairs: Vec<EndpointPair>) -> Vec<EndpointPair> {
    pairs.into_iter().map(|(c, s)| (s, c)).collect()
}

/// The pairs, swapped when `perf_reverse` is set (upstream `PerfReversibleFlowMixin`).
pub fn reversible(pairs: Vec<EndpointPair>, perf_reverse: bool) -> Vec<EndpointPair> {
    if perf_reverse {
        reversed(pairs)
    } else {
        pairs
    }
}

/// An ENRT recipe: what it declares; [`run`] does the rest.
pub trait EnrtRecipe: Recipe {
    /// The parameters every ENRT recipe has.
    fn base(&self) -> EnrtBase<'_>;

    /// The test-wide configuration (upstream `test_wide_configuration`), from the parameters.
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError>;

    /// Lines after the header of the test-wide description (upstream
    /// `generate_test_wide_description`): by default the configured addresses.
    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        config.describe()
    }

    /// The one pair of devices most recipes ping and measure between (upstream's
    /// `generate_ping_endpoints` and `generate_perf_endpoints` of one `(a, b)`), used by the
    /// default [`EnrtRecipe::ping_endpoints`] and [`EnrtRecipe::perf_endpoints`].
    fn pair(&self) -> Option<(Dev, Dev)> {
        None
    }

    /// PerfReversibleFlowMixin's `perf_reverse` (false for recipes without the mixin).
    fn perf_reverse(&self) -> bool {
        false
    }

    /// The device pairs to ping between (upstream `generate_ping_endpoints`): by default
    /// [`EnrtRecipe::pair`].
    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        self.pair()
            .map(|(a, b)| vec![PingEndpoints::new(&a, &b)])
            .unwrap_or_default()
    }

    /// The evaluators of one ping (upstream `generate_ping_evaluators`): the rate evaluator
    /// for reachable endpoints, zero answers for isolated ones (VlanPingEvaluatorMixin).
    fn ping_evaluators(&self, endpoints: &PingEndpoints) -> Vec<PingEvaluator> {
        if endpoints.reachable {
            vec![PingEvaluator::Rate { min_rate: 50 }]
        } else {
            vec![PingEvaluator::ZeroPass]
        }
    }

    /// The packet assert of one ping (upstream BaseTunnelRecipe's `get_packet_assert_config`):
    /// a capture on an underlay device that runs from 2 s before the ping to 2 s after it,
    /// then is evaluated after the ping's own evaluation. None (the default): no capture.
    fn packet_assert(
        &self,
        _config: &Configured,
        _ping: &PingConf,
    ) -> Option<crate::recipes::common::packet_assert::PacketAssertConf> {
        None
    }

    /// Collections of endpoint pairs to measure; the pairs of one collection run in parallel
    /// (upstream `generate_perf_endpoints`): by default every address pair of
    /// [`EnrtRecipe::pair`], swapped with `perf_reverse`.
    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        self.pair()
            .map(|(a, b)| {
                vec![reversible(
                    ip_endpoint_pairs(config, &a, &b),
                    self.perf_reverse(),
                )]
            })
            .unwrap_or_default()
    }

    /// Where the CPU is measured: None for the flows' endpoint hosts (Baremetal), or a fixed
    /// list (Virtual: the hypervisors host1 and host2).
    fn cpu_hosts(&self) -> Option<Vec<String>> {
        self.base()
            .cpu_hosts
            .map(|h| h.iter().map(|s| s.to_string()).collect())
    }

    /// The evaluators of the flows (upstream `net_perf_evaluators`).
    fn net_perf_evaluators(&self) -> Vec<FlowEvaluator> {
        vec![FlowEvaluator::Nonzero]
    }

    /// Which sub-configurations apply on which devices (upstream's mixins and dev-list
    /// properties).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        SubConfigs::default()
    }

    /// MultiDevInterruptHWConfigMixin (XDP*, Forwarding, SimpleNetworkTunable): the recipe's
    /// `multi_dev_interrupt_config` ([`devparams::MultiDevInterruptParams::config`]); None: the
    /// recipe does not have the mixin.
    fn multi_dev_interrupt_config(&self) -> Option<&devparams::MultiDevInterruptConfig> {
        None
    }
    /// The per-device NIC tunables of the sub-configuration (DevQueuesConfigMixin,
    /// DevNfcRxFlowHashConfigMixin, DevRxHashFunctionConfigMixin), for the recipes that have
    /// those mixins; applied after the other hardware settings.
    fn nic_tunables(&self) -> Option<NicTunables<'_>> {
        None
    }

    /// The CPUs the generator and the receiver of perf process `i` are pinned to (upstream
    /// `generator_cpupin`/`receiver_cpupin`); by default FlowMeasurementGenerator's:
    /// `perf_tool_cpu` by `perf_tool_cpu_policy`, the same for both.
    fn perf_cpupin(&self, i: usize) -> (Option<Vec<u32>>, Option<Vec<u32>>) {
        let c = cpupin(&self.base(), i);
        (c.clone(), c)
    }

    /// Whether the CPU index of [`EnrtRecipe::perf_cpupin`] counts the processes across all
    /// endpoint pairs of a measurement (GeneveLwtTunnelRecipe's `_create_perf_flows`: one
    /// flow per pair, each on the next CPU) instead of restarting at 0 for each pair.
    fn perf_cpupin_across_pairs(&self) -> bool {
        false
    }

    /// A packet-rate measurement instead of iperf3 flows (upstream's `net_perf_tool_class`
    /// of the XDP and forwarding measurement generators); `perf_tests` then only selects the
    /// perf tweaks, pktgen always sends UDP.
    fn packet_measurement(&self) -> Option<PacketMeasurement> {
        None
    }

    /// The recipe's own variants of every sub-configuration (upstream recipes that generate
    /// their sub-configurations themselves: SimpleMacsec's `macsec_encryption`, the IPsec
    /// recipes' IP version × algorithm): how many each mixin sub-configuration has. Default
    /// 1, with nothing of the recipe's own to apply.
    fn variants(&self) -> usize {
        1
    }

    /// Apply variant `v` (of [`EnrtRecipe::variants`]) after the mixins' sub-configuration;
    /// every change pushes its undo, so it is removed first when the sub-configuration is.
    /// Returns the configuration the variant's pings and flows use (None: the test-wide one)
    /// and lines for the sub-configuration's description.
    fn apply_variant<'a>(
        &'a self,
        _ctx: &'a mut RunContext,
        _config: &'a Configured,
        _v: usize,
    ) -> impl std::future::Future<Output = Result<(Option<Configured>, Vec<String>), RecipeError>>
           + Send
           + 'a {
        async { Ok((None, Vec::new())) }
    }

    /// Further pings after each ping (IpsecEspAhComp's size-1500 ping), each with its packet
    /// assert; run and evaluated like the first.
    fn extra_pings(
        &self,
        _config: &Configured,
        _ping: &PingConf,
    ) -> Vec<(
        PingConf,
        Option<crate::recipes::common::packet_assert::PacketAssertConf>,
    )> {
        Vec::new()
    }

    /// Test-wide configuration beyond the [`TestWide`] steps, run after them in the
    /// test-wide scope (upstream bodies that run tools: the redirect-cpu RSS key, the static
    /// neighbours and `xdp-forward load` of the forwarding recipes); every change pushes its
    /// undo. Returns lines for the test-wide description.
    fn test_wide_extra<'a>(
        &'a self,
        _ctx: &'a mut RunContext,
        _config: &'a Configured,
    ) -> impl std::future::Future<Output = Result<Vec<String>, RecipeError>> + Send + 'a {
        async { Ok(Vec::new()) }
    }
}

/// Parameters this runner cannot honour; a test that sets one FAILs with the reason instead
/// of silently ignoring it.
fn unsupported<R: EnrtRecipe>(r: &R) -> Vec<String> {
    let mut out = Vec::new();
    let b = r.base().baremetal;
    for (set, name, why) in [
        (
            b.use_vfs,
            "use_vfs",
            "SR-IOV virtual functions are not implemented by lnst-agent",
        ),
        (
            b.enable_intel_sst_tf == Some(true),
            "enable_intel_sst_tf",
            "Intel SST-TF control is not implemented by lnst-agent",
        ),
    ] {
        if set {
            out.push(format!("{name}=True: {why}"));
        }
    }
    out
}

/// The hosts of the host tuning (idle states, turbo boost) and of the LinuxPerf measurement:
/// the hypervisors of a virtual recipe, else every matched host (upstream's host lists).
fn tuning_hosts<R: EnrtRecipe>(r: &R, ctx: &RunContext) -> Vec<String> {
    r.cpu_hosts().unwrap_or_else(|| ctx.host_ids())
}

/// `perf_tool_cpu` names CPUs every host running a perf tool has (and that its agent may pin
/// to), checked before any traffic: a 2-CPU machine has no CPU 6.
async fn check_perf_tool_cpus<R: EnrtRecipe>(
    r: &R,
    ctx: &mut RunContext,
    config: &Configured,
) -> Result<(), RecipeError> {
    let base = r.base();
    let Some(cpus) = base.flows.perf_tool_cpu.as_ref().filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    if base.enrt.perf_test_simulation {
        return Ok(());
    }
    let mut hosts: Vec<String> = Vec::new();
    for (c, s) in r.perf_endpoints(config).iter().flatten() {
        for h in [&c.dev.host, &s.dev.host] {
            let root = ctx.root_host(h).to_string();
            if !hosts.contains(&root) {
                hosts.push(root);
            }
        }
    }
    for host in hosts {
        let info = ctx.client(&host)?.get_cpus().await?;
        let show = crate::agent::tunables::format_cpu_list;
        for c in cpus {
            if !info.online.contains(c) {
                return Err(RecipeError::Run(format!(
                    "perf_tool_cpu: {host} has no CPU {c} (online CPUs: {})",
                    show(&info.online)
                )));
            }
            if !info.allowed.contains(c) {
                return Err(RecipeError::Run(format!(
                    "perf_tool_cpu: CPU {c} of {host} is outside its agent's CPU set ({})",
                    show(&info.allowed)
                )));
            }
        }
    }
    Ok(())
}

/// Whether `net_perf_tool` runs `perf_tests` (upstream: IperfFlowMeasurement raises
/// "Unsupported flow type" for anything but *_stream, neper's test modules take tcp_rr,
/// tcp_crr and udp_rr only). Checked before anything is configured.
fn check_perf_tests(base: &EnrtBase<'_>) -> Result<(), RecipeError> {
    let f = base.flows;
    for t in &f.perf_tests {
        let rr = matches!(t, PerfTest::TcpRr | PerfTest::TcpCrr | PerfTest::UdpRr);
        let why = match (f.net_perf_tool, t) {
            (NetPerfTool::Iperf, PerfTest::TcpStream | PerfTest::UdpStream | PerfTest::SctpStream) => continue,
            (NetPerfTool::Neper, _) if rr => continue,
            (NetPerfTool::Iperf, PerfTest::MptcpStream) => {
                "iperf3 here runs tcp_stream, udp_stream and sctp_stream (no MPTCP)".to_string()
            }
            (NetPerfTool::Iperf, _) => format!(
                "{t} is a request/response test, which iperf cannot run (upstream's iperf measurement refuses it too); set net_perf_tool='neper' to run it with lnst-agent's request/response generator"
            ),
            (NetPerfTool::Neper, _) => format!(
                "{t} is a stream test, which neper does not run (net_perf_tool='neper' takes tcp_rr, tcp_crr and udp_rr); set net_perf_tool='iperf' for it"
            ),
        };
        return Err(RecipeError::Param(format!(
            "perf_tests: unsupported test '{t}' with net_perf_tool='{}': {why}",
            f.net_perf_tool
        )));
    }
    Ok(())
}

/// Upstream's `pprint.pformat(params)` equivalent: `{'name': value, ...}` sorted by name,
/// one entry per line.
fn params_pformat(params: &crate::schema::ResolvedParams) -> String {
    let mut entries: Vec<(String, String)> =
        params.shown().map(|(k, v)| (k.to_string(), v)).collect();
    entries.sort();
    let body = entries
        .iter()
        .map(|(k, v)| format!("'{k}': {v}"))
        .collect::<Vec<_>>()
        .join(",\n ");
    format!("{{{body}}}")
}

/// Run an ENRT recipe in a connected context (upstream `BaseEnrtRecipe.test`).
/// The kernel modules the recipe's test-wide configuration needs on each host (none when
/// its parameters cannot make one: the run reports that).
pub fn kernel_modules<R: EnrtRecipe>(r: &R) -> crate::recipes::HostModules {
    r.test_wide_configuration()
        .map(|tw| tw.kernel_modules())
        .unwrap_or_default()
}

pub async fn run<R: EnrtRecipe>(r: &R, ctx: &mut RunContext) -> Result<(), RecipeError> {
    // Parameters the runner cannot honour fail the test, never silently.
    let bad = unsupported(r);
    if !bad.is_empty() {
        return Err(RecipeError::Unsupported(bad.join("; ")));
    }
    if r.packet_measurement().is_none() {
        check_perf_tests(&r.base())?;
    }
    ctx.add(ResultEntry::generic(
        ResultType::Pass,
        format!(
            "Summary of used Recipe parameters:\n{}",
            params_pformat(&ctx.params)
        ),
    ));
    let mark = ctx.mark();
    let res = test_wide_scope(r, ctx).await;
    // test_wide_deconfiguration always runs.
    let t0 = Instant::now();
    let removed = ctx.unwind(mark).await;
    ctx.phases.deconfigure += t0.elapsed().as_secs_f64();
    res?;
    removed
}

async fn test_wide_scope<R: EnrtRecipe>(r: &R, ctx: &mut RunContext) -> Result<(), RecipeError> {
    ctx.progress("configuring the test network");
    let steps = r.test_wide_configuration()?;
    let t0 = Instant::now();
    // The recipe's extra test-wide configuration is part of the configure phase.
    let configured = async {
        let config = config::apply(ctx, &steps.steps).await?;
        ctx.begin_undo_group();
        let extra = r.test_wide_extra(ctx, &config).await?;
        Ok::<_, RecipeError>((config, extra))
    }
    .await;
    ctx.phases.configure += t0.elapsed().as_secs_f64();
    let (config, extra) = configured?;
    let mut desc = vec![format!(
        "Testwide configuration for recipe {} description:",
        R::NAME
    )];
    desc.extend(r.test_wide_description(&config));
    desc.extend(extra);
    ctx.add(ResultEntry::generic(ResultType::Pass, desc.join("\n")));
    check_perf_tool_cpus(r, ctx, &config).await?;

    let subs = r.sub_configurations();
    let all = subs.generate();
    let tuning = tuning_hosts(r, ctx);
    let variants = r.variants().max(1);
    let every: Vec<(&SubConfig, usize)> = all
        .iter()
        .flat_map(|sub| (0..variants).map(move |v| (sub, v)))
        .collect();
    for (k, &(sub, v)) in every.iter().enumerate() {
        ctx.progress_prefix = format!("[sub {}/{}]", k + 1, every.len());
        let mark = ctx.mark();
        let body = async {
            let t0 = Instant::now();
            let applied = subs
                .apply(
                    ctx,
                    sub,
                    r.base(),
                    &tuning,
                    r.multi_dev_interrupt_config(),
                    r.nic_tunables(),
                )
                .await;
            let own = match applied {
                Ok(()) => r.apply_variant(ctx, &config, v).await,
                Err(e) => Err(e),
            };
            ctx.phases.sub_configure += t0.elapsed().as_secs_f64();
            let (own, desc) = own?;
            if !desc.is_empty() {
                ctx.add(ResultEntry::generic(ResultType::Pass, desc.join("\n")));
            }
            let config = own.as_ref().unwrap_or(&config);
            do_ping_tests(r, ctx, config, k).await?;
            do_perf_tests(r, ctx, config, sub, k).await
        }
        .await;
        // remove_sub_configuration always runs (unless the agent is gone).
        let t0 = Instant::now();
        let removed = ctx.unwind(mark).await;
        ctx.phases.sub_configure += t0.elapsed().as_secs_f64();
        body?;
        removed?;
    }
    Ok(())
}

/// Upstream `generate_ping_configurations` + `ping_test` + `ping_report_and_evaluate`.
async fn do_ping_tests<R: EnrtRecipe>(
    r: &R,
    ctx: &mut RunContext,
    config: &Configured,
    sub: usize,
) -> Result<(), RecipeError> {
    let e = r.base().enrt;
    let all = r.ping_endpoints(config);
    let several = all.len() > 1;
    for (idx, endpoints) in all.into_iter().enumerate() {
        // Raw names stay unique with several endpoint pairs (`sub1_pair2_ping_...`).
        let raw_prefix = if several {
            format!("sub{}_pair{}_", sub + 1, idx + 1)
        } else {
            format!("sub{}_", sub + 1)
        };
        for &ipv in &e.ip_versions {
            if ipv == IpVersion::Ipv6 && !endpoints.reachable {
                continue;
            }
            let a = config.ips(&endpoints.a, Some(ipv));
            let b = config.ips(&endpoints.b, Some(ipv));
            if a.len() != b.len() {
                return Err(RecipeError::Run(format!(
                    "ping endpoints have different numbers of {ipv} addresses"
                )));
            }
            let mut confs = Vec::new();
            for (src, dst) in a.into_iter().zip(b) {
                let conf = PingConf {
                    client: endpoints.a.host.clone(),
                    src,
                    dst_host: endpoints.b.host.clone(),
                    dst,
                    count: e.ping_count,
                    interval: e.ping_interval,
                    size: Some(e.ping_psize),
                    evaluators: r.ping_evaluators(&endpoints),
                };
                if e.ping_bidirect {
                    // Upstream gives the reverse ping no evaluator (and crashes creating it);
                    // we evaluate it like the forward one.
                    let reverse = conf.reversed();
                    confs.push(conf);
                    confs.push(reverse);
                } else {
                    confs.push(conf);
                }
                if !e.ping_parallel {
                    break;
                }
            }
            let asserts: Vec<_> = confs
                .iter()
                .filter_map(|c| r.packet_assert(config, c))
                .collect();
            ping_with_asserts(ctx, &confs, &asserts, &raw_prefix, ipv).await?;
            for (i, (extra, assert)) in confs
                .iter()
                .flat_map(|c| r.extra_pings(config, c))
                .enumerate()
            {
                let prefix = format!("{raw_prefix}extra{}_", i + 1);
                let asserts: Vec<_> = assert.into_iter().collect();
                ping_with_asserts(ctx, &[extra], &asserts, &prefix, ipv).await?;
            }
        }
    }
    Ok(())
}

/// How long the captures keep running after the pings: tcpdump prints each packet as it
/// arrives (`--immediate-mode`), this covers a guest slow to schedule it.
const CAPTURE_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Pings, each packet assert capturing from before them (the agent answers StartJob once
/// tcpdump listens) to [`CAPTURE_DRAIN`] after them. Upstream waits 2 s before and 2 s after.
async fn ping_with_asserts(
    ctx: &mut RunContext,
    confs: &[PingConf],
    asserts: &[crate::recipes::common::packet_assert::PacketAssertConf],
    raw_prefix: &str,
    ipv: IpVersion,
) -> Result<(), RecipeError> {
    if asserts.is_empty() {
        return ping_test_and_evaluate(ctx, confs, raw_prefix).await;
    }
    use crate::recipes::common::packet_assert;
    let ids = packet_assert::start(ctx, asserts).await?;
    let pinged = ping_test_and_evaluate(ctx, confs, raw_prefix).await;
    tokio::time::sleep(CAPTURE_DRAIN).await;
    let raw = format!("{raw_prefix}packet_assert_{ipv}_");
    let stopped = packet_assert::stop_and_evaluate(ctx, asserts, ids, &raw).await;
    pinged?;
    stopped
}

/// Upstream `generate_perf_configurations` + `perf_test` + `perf_report_and_evaluate`.
async fn do_perf_tests<R: EnrtRecipe>(
    r: &R,
    ctx: &mut RunContext,
    config: &Configured,
    sub: &SubConfig,
    k: usize,
) -> Result<(), RecipeError> {
    let base = r.base();
    let f = &base.flows;
    let sizes: Vec<Option<u32>> = if f.perf_msg_sizes.is_empty() {
        vec![None]
    } else {
        f.perf_msg_sizes.iter().map(|s| Some(*s)).collect()
    };
    let tweaks = PerfTweaks {
        drop_caches: base.measurements.drop_caches,
        udp_fragmentation: Some((
            base.measurements.udp_fragmentation_threshold,
            base.measurements.udp_fragmentation_time,
        )),
    };
    for collection in r.perf_endpoints(config) {
        for &ipv in &base.enrt.ip_versions {
            let pairs: Vec<&EndpointPair> = collection
                .iter()
                .filter(|(c, _)| c.addr.version() == ipv)
                .collect();
            if pairs.is_empty() {
                continue;
            }
            for test in &f.perf_tests {
                for size in &sizes {
                    if *test == PerfTest::SctpStream && sub.sctp_conflict() {
                        ctx.add(ResultEntry::generic(
                            ResultType::Pass,
                            format!(
                                "sctp_stream skipped for offload combination {} (upstream SCTP/offload rule: a disabled offload with gso on)",
                                sub.describe_offloads()
                            ),
                        ));
                        continue;
                    }
                    let packet = r.packet_measurement();
                    let pflows = match &packet {
                        Some(m) => packet_flows(r, &pairs, *test, *size, m)?,
                        None => Vec::new(),
                    };
                    let flows = match &packet {
                        Some(_) => pflows.iter().map(|f| f.spec.clone()).collect(),
                        None => create_flows(r, &pairs, *test, *size)?,
                    };
                    let conf = PerfConf {
                        flows,
                        ip_version: ipv,
                        iterations: base.enrt.perf_iterations,
                        simulate: base.enrt.perf_test_simulation,
                        tweaks,
                        evaluators: r.net_perf_evaluators(),
                        sub_desc: sub.describe_offloads(),
                        raw_prefix: format!("sub{}_", k + 1),
                        cpu_hosts: r.cpu_hosts(),
                        linuxperf: base.measurements.do_linuxperf_measurement,
                    };
                    match &packet {
                        Some(m) => pktrate::perf_test(ctx, &conf, &pflows, m).await?,
                        None => perf_test(ctx, &conf).await?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// The CPUs of process `i` (FlowMeasurementGenerator: `perf_tool_cpu` by its policy, the
/// same for generator and receiver).
fn cpupin(base: &EnrtBase<'_>, i: usize) -> Option<Vec<u32>> {
    cpupin_by_policy(
        base.flows.perf_tool_cpu.as_deref(),
        base.flows.perf_tool_cpu_policy,
        i,
    )
}

/// Upstream `_cpupin_based_on_policy`: none without CPUs; `round-robin`: CPU `i mod n` of the
/// list; `all` or unset: the whole list.
pub fn cpupin_by_policy(
    cpus: Option<&[u32]>,
    policy: Option<CpuPolicy>,
    i: usize,
) -> Option<Vec<u32>> {
    let cpus = cpus.filter(|c| !c.is_empty())?;
    match policy {
        None | Some(CpuPolicy::All) => Some(cpus.to_vec()),
        Some(CpuPolicy::RoundRobin) => Some(vec![cpus[i % cpus.len()]]),
    }
}

/// Upstream `_create_perf_flows`: `perf_parallel_processes` flows per endpoint pair, ports
/// counted from [`FIRST_PORT`].
fn create_flows<R: EnrtRecipe>(
    r: &R,
    pairs: &[&EndpointPair],
    test: PerfTest,
    size: Option<u32>,
) -> Result<Vec<FlowSpec>, RecipeError> {
    let base = r.base();
    let f = &base.flows;
    let mut port = FIRST_PORT;
    let mut flows = Vec::new();
    let across = r.perf_cpupin_across_pairs();
    for (client, server) in pairs {
        for i in 0..f.perf_parallel_processes as usize {
            let (gen_cpus, recv_cpus) = r.perf_cpupin(if across { flows.len() } else { i });
            // One field when both are pinned alike (FlowMeasurementGenerator), the receiver's
            // own otherwise (`Some([])`: not pinned).
            let receiver_cpupin = (recv_cpus != gen_cpus).then(|| recv_cpus.unwrap_or_default());
            flows.push(FlowSpec {
                kind: test.as_str().to_string(),
                generator: client.dev.host.clone(),
                generator_bind: client.addr.addr.to_string(),
                generator_port: Some(port),
                receiver: server.dev.host.clone(),
                receiver_bind: server.addr.addr.to_string(),
                receiver_port: port,
                msg_size: size,
                duration: f.perf_duration,
                warmup: f.perf_warmup_duration,
                parallel_streams: f.perf_parallel_streams,
                cpupin: gen_cpus,
                receiver_cpupin,
            });
            port = port.checked_add(1).ok_or_else(|| {
                RecipeError::Param("too many parallel processes for the port range".into())
            })?;
        }
    }
    Ok(flows)
}

/// The flows of a packet measurement: [`create_flows`]' flows with their devices; the
/// redirect-cpu and forwarding generators pin flow i to `perf_tool_cpu[i % n]` whatever the
/// policy (pktgen runs one device per CPU), the XDP flow generator follows the policy.
fn packet_flows<R: EnrtRecipe>(
    r: &R,
    pairs: &[&EndpointPair],
    test: PerfTest,
    size: Option<u32>,
    m: &PacketMeasurement,
) -> Result<Vec<PacketFlow>, RecipeError> {
    let specs = create_flows(r, pairs, test, size)?;
    let base = r.base();
    let per = base.flows.perf_parallel_processes as usize;
    let cpus = base.flows.perf_tool_cpu.clone().unwrap_or_default();
    let round_robin = !matches!(m, PacketMeasurement::XdpBench { .. });
    let mut out = Vec::new();
    for (k, mut spec) in specs.into_iter().enumerate() {
        let (client, server) = pairs[k / per.max(1)];
        if round_robin && !cpus.is_empty() {
            // Upstream's flow id: the process index within its endpoint pair.
            spec.cpupin = Some(vec![cpus[(k % per.max(1)) % cpus.len()]]);
        }
        out.push(PacketFlow {
            spec,
            generator_nic: client.dev.clone(),
            receiver_nic: server.dev.clone(),
        });
    }
    Ok(out)
}
