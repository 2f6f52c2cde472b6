//! SimpleNetworkTunableRecipe (upstream `ENRT/SimpleNetworkTunableRecipe.py`):
//! SimpleNetworkRecipe's network, pings and flows with finer control of the NICs: channel
//! counts (`dev_queues`, ethtool -L), the hashed fields of flow types
//! (`dev_nfc_rx_flow_hash_config`, ethtool -N rx-flow-hash), the RSS hash function
//! (`dev_rx_hash_functions`, ethtool -X hfunc), per-device coalescing and IRQ pinning, and
//! separate CPU pinning of the perf tools' generators and receivers
//! (FlowMeasurementMultiCpupinGenerator).
//!
//! ```text
//!                 +--------+
//!          +------+ switch +-----+
//!          |      +--------+     |
//!       +--+-+                 +-+--+
//!     +-|eth0|-+             +-|eth0|-+
//!     | +----+ |             | +----+ |
//!     | host1  |             | host2  |
//!     +--------+             +--------+
//! ```
//!
//! Upstream assembles the mixins by hand: no `use_vfs`/`vf_trust`, no `dev_intr_cpu` (per-device
//! `multi_dev_interrupt_config` instead), no qdisc mixin, and `perf_tool_generator_cpu` /
//! `perf_tool_receiver_cpu` instead of `perf_tool_cpu`.

use super::common::config::{nth_address, Configured, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::nic_tunables::NicTunableParams;
use super::enrt::params::{
    offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams, CpuPolicy, DeviceReqParams,
    EnrtBase, MAX_CPU_INDEX, O5, O5_KEYS,
};
use super::enrt::{self, cpupin_by_policy, ip_endpoint_pairs, EndpointPair, EnrtRecipe};
use super::enrt::{HwConfig, NicTunables, PingEndpoints, SubConfigs};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::schema::{ParamType, TWO_HOSTS};

crate::group_variant! {
    /// BaremetalEnrtRecipe's parameters without UseVfsMixin's and FlowMeasurementGenerator's
    /// (the recipe lists BaremetalEnrtCommonMixins and FlowMeasurementMultiCpupinGenerator).
    pub struct TunableEnrtParams(BaremetalEnrtParams) {
        without: ["use_vfs", "vf_trust", "perf_tool_cpu", "perf_tool_cpu_policy"],
        adjust: |_| {},
    }
}

crate::group_variant! {
    /// CommonHWSubConfigMixin's parameters without DevInterruptHWConfigMixin's `dev_intr_cpu`
    /// (the recipe has MultiDevInterruptHWConfigMixin instead).
    pub struct TunableHwParams(CommonHwParams) {
        without: ["dev_intr_cpu"],
        adjust: |_| {},
    }
}

fn cpu_list() -> ParamType {
    ParamType::List(Some(Box::new(ParamType::Int)))
}

crate::param_set! {
    /// FlowMeasurementMultiCpupinGenerator: the perf tools' generators and receivers pinned
    /// separately.
    pub struct MultiCpupinParams {
        param perf_tool_generator_cpu: Option<Vec<u32>> = opt(
            cpu_list(),
            "CPUs the perf tool's generator (client) is pinned to",
        )
        .range(0.0, MAX_CPU_INDEX),
        param perf_tool_generator_cpu_policy: Option<CpuPolicy> = opt(
            CpuPolicy::param_type(),
            "how perf_tool_generator_cpu is applied (unset acts like 'all')",
        ),
        param perf_tool_receiver_cpu: Option<Vec<u32>> = opt(
            cpu_list(),
            "CPUs the perf tool's receiver (server) is pinned to",
        )
        .range(0.0, MAX_CPU_INDEX),
        param perf_tool_receiver_cpu_policy: Option<CpuPolicy> = opt(
            CpuPolicy::param_type(),
            "how perf_tool_receiver_cpu is applied (unset acts like 'all')",
        ),
    }
}

crate::param_set! {
    /// SimpleNetworkTunableRecipe's parameters: the network, BaremetalEnrtRecipe's
    /// without VFs and `perf_tool_cpu`, the generator/receiver pinning, the device
    /// requirements, the offload combinations, the hardware settings without
    /// `dev_intr_cpu`, the per-device IRQ pinning and the NIC tunables.
    pub struct SimpleNetworkTunableRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            super::simple_network::DEFAULT_NET_IPV4,
            "IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            super::simple_network::DEFAULT_NET_IPV6,
            "IPv6 network; host1.eth0 gets ::1, host2.eth0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: TunableEnrtParams,
        group cpupin: MultiCpupinParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O5_KEYS, &O5),
            "offload settings (gro/gso/tso/tx/rx); one sub-configuration per dict",
        ),
        group hw: TunableHwParams,
        group irqs: super::enrt::devparams::MultiDevInterruptParams,
        group nic: NicTunableParams,
    }
}

impl SimpleNetworkTunableRecipe {
    /// host1.eth0 and host2.eth0.
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl Recipe for SimpleNetworkTunableRecipe {
    const NAME: &'static str = "SimpleNetworkTunableRecipe";
    const DOC: &'static str = "SimpleNetworkRecipe with NIC tuning: channels, rx-flow-hash, RSS hash function, coalescing, per-device IRQ and generator/receiver CPU pinning";

    fn requirements(&self) -> crate::requirements::Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> crate::requirements::Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for SimpleNetworkTunableRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.0.view()
    }

    /// As SimpleNetworkRecipe: .1/::1 and .2/::2, up, wait for the IPv6 addresses.
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for (n, dev) in (1..).zip(&self.nics()) {
            tw.address(dev, nth_address(self.net_ipv4.into(), n)?)
                .address(dev, nth_address(self.net_ipv6.into(), n)?)
                .up_and_wait(dev);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        let [a, b] = self.nics();
        vec![PingEndpoints::new(&a, &b)]
    }

    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        let [a, b] = self.nics();
        vec![ip_endpoint_pairs(config, &a, &b)]
    }

    /// Offloads, MTU and pause frames on the eth0 pair; no dev_intr_cpu devices and no
    /// qdisc (the recipe lacks those mixins).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        let mut hw = HwConfig::on(&self.hw.0, &nics);
        hw.dev_interrupt_devs = Vec::new();
        hw.parallel_stream_qdisc_devs = Vec::new();
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics.to_vec())),
            hw: Some(hw),
        }
    }

    fn nic_tunables(&self) -> Option<NicTunables<'_>> {
        Some(self.nic.view())
    }

    /// FlowMeasurementMultiCpupinGenerator: generator and receiver each by their own list and
    /// policy.
    fn perf_cpupin(&self, i: usize) -> (Option<Vec<u32>>, Option<Vec<u32>>) {
        let c = &self.cpupin;
        (
            cpupin_by_policy(
                c.perf_tool_generator_cpu.as_deref(),
                c.perf_tool_generator_cpu_policy,
                i,
            ),
            cpupin_by_policy(
                c.perf_tool_receiver_cpu.as_deref(),
                c.perf_tool_receiver_cpu_policy,
                i,
            ),
        )
    }

    fn multi_dev_interrupt_config(
        &self,
    ) -> Option<&super::enrt::devparams::MultiDevInterruptConfig> {
        Some(self.irqs.config())
    }
}
