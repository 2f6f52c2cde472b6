//! LinuxBridgeRecipe (upstream `ENRT/LinuxBridgeRecipe.py`): on each host a Linux bridge
//! `br0` with the NIC as its port; the addresses are on the bridges.
//!
//! ```text
//!   host1: eth0 ─ br0 (.1, ::1)  ══ net1 ══  host2: eth0 ─ br0 (.2, ::2)
//! ```

use super::common::config::{nth_address, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::params::{DeviceReqParams, EnrtBase, O5_KEYS};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// LinuxBridgeRecipe's parameters.
    pub struct LinuxBridgeRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "IPv4 network; host1.br0 gets .1, host2.br0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network; host1.br0 gets ::1, host2.br0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O5_KEYS, &[&["on", "on", "on", "on", "on"]]),
            "offload settings of the bridge ports; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl LinuxBridgeRecipe {
    fn ports(&self) -> Vec<Dev> {
        HOSTS.iter().map(|h| Dev::new(h, "eth0")).collect()
    }
    fn bridges(&self) -> [Dev; 2] {
        HOSTS.map(|h| Dev::new(h, "br0"))
    }
}

impl Recipe for LinuxBridgeRecipe {
    const NAME: &'static str = "LinuxBridgeRecipe";
    const DOC: &'static str = "ping and flows between Linux bridges, each with one NIC as its port";

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

impl EnrtRecipe for LinuxBridgeRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for ((n, port), br) in (1..).zip(self.ports()).zip(self.bridges()) {
            tw.create(&br, Link::Bridge)
                .down(&port)
                .enslave(&port, &br)
                .up_and_wait(&port)
                .up_and_wait(&br)
                .address(&br, nth_address(self.net_ipv4.into(), n)?)
                .address(&br, nth_address(self.net_ipv6.into(), n)?);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = self.bridges();
        Some((a, b))
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        SubConfigs {
            offloads: Some((&self.offload_combinations, self.ports())),
            hw: Some(HwConfig::on(&self.hw, &self.ports())),
        }
    }
}
