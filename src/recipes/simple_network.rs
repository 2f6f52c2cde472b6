//! SimpleNetworkRecipe (upstream `ENRT/SimpleNetworkRecipe.py`): one NIC on each of two hosts
//! on one network; an IPv4 and an IPv6 address on each; ping and perf between them, for every
//! offload combination.
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
//! Type choices where upstream is untyped or a class object: `perf_msg_sizes`,
//! `perf_tool_cpu` and `dev_intr_cpu` are lists of ints; `cpu_perf_tool` is a class name;
//! `perf_tool_cpu_policy` is a choice {all, round-robin}.

use super::common::config::{nth_address, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, O5, O5_KEYS};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::params::Value;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

/// Upstream default of `net_ipv4`. Note: outside 198.18.0.0/15, the range our tests may use.
pub const DEFAULT_NET_IPV4: &str = "192.168.101.0/24";
/// Upstream default of `net_ipv6`. Note: outside fd00::/8, the range our tests may use.
pub const DEFAULT_NET_IPV6: &str = "fc00::/64";

/// The five default offload combinations, as upstream declares them (O5).
pub fn default_offload_combinations() -> Value {
    offload_sets(&O5_KEYS, &O5)
}

param_set! {
    /// SimpleNetworkRecipe's 38 parameters, in upstream's order (BaseSimpleNetworkRecipe,
    /// BaseEnrtRecipe, the measurement generators, the perf tweaks, Baremetal, the device
    /// requirements, OffloadSubConfigMixin, CommonHWSubConfigMixin).
    pub struct SimpleNetworkRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            DEFAULT_NET_IPV4,
            "IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            DEFAULT_NET_IPV6,
            "IPv6 network; host1.eth0 gets ::1, host2.eth0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            default_offload_combinations(),
            "offload settings (gro/gso/tso/tx/rx); one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

impl SimpleNetworkRecipe {
    /// host1.eth0 and host2.eth0.
    pub fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl Recipe for SimpleNetworkRecipe {
    const NAME: &'static str = "SimpleNetworkRecipe";
    const DOC: &'static str = "IP ping and iperf/neper flows between one NIC on each of two hosts";

    fn requirements(&self) -> Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for SimpleNetworkRecipe {
    fn base(&self) -> super::enrt::params::EnrtBase<'_> {
        self.base.view()
    }

    /// host1.eth0 = .1 and ::1, host2.eth0 = .2 and ::2; up; wait for the IPv6 addresses.
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

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = self.nics();
        Some((a, b))
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics.to_vec())),
            hw: Some(HwConfig::on(&self.hw, &nics)),
        }
    }
}
