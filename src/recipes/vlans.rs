//! VlansRecipe (upstream `ENRT/VlansRecipe.py`): three 802.1Q VLANs on one NIC of each host,
//! an IPv4 and an IPv6 network per VLAN; pings over every VLAN, flows over vlan0.
//!
//! ```text
//!   host1: eth0 ─┬ vlan0 (id 10)      host2: eth0 ─┬ vlan0
//!                ├ vlan1 (id 20)  ══ net1 ══        ├ vlan1
//!                └ vlan2 (id 30)                    └ vlan2
//! ```

use super::common::config::{Configured, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::params::{DeviceReqParams, EnrtBase, ThreeVlansParams, O5, O5_KEYS};
use super::enrt::{self, ip_endpoint_pairs, EndpointPair, EnrtRecipe};
use super::enrt::{HwConfig, PingEndpoints, SubConfigs};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;

param_set! {
    /// VlansRecipe's parameters.
    pub struct VlansRecipe {
        group vlans: ThreeVlansParams,
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O5_KEYS, &O5),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl VlansRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl Recipe for VlansRecipe {
    const NAME: &'static str = "VlansRecipe";
    const DOC: &'static str =
        "three VLANs on one NIC of each host: pings over each, flows over vlan0";

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

impl EnrtRecipe for VlansRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let nics = self.nics();
        for nic in &nics {
            tw.down(nic);
        }
        for nic in &nics {
            self.vlans.create(&mut tw, nic);
        }
        for (n, host) in (1..).zip(HOSTS) {
            self.vlans.addresses(&mut tw, host, n)?;
        }
        for (nic, host) in nics.iter().zip(HOSTS) {
            tw.up_and_wait(nic)
                .up_and_wait_all(&ThreeVlansParams::devs(host));
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        let [a, b] = HOSTS.map(ThreeVlansParams::devs);
        a.iter()
            .zip(&b)
            .map(|(x, y)| PingEndpoints::new(x, y))
            .collect()
    }

    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        let [a, b] = HOSTS.map(|h| Dev::new(h, "vlan0"));
        vec![ip_endpoint_pairs(config, &a, &b)]
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics().to_vec();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = HOSTS
            .iter()
            .flat_map(|h| std::iter::once(Dev::new(h, "eth0")).chain(ThreeVlansParams::devs(h)))
            .collect();
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics)),
            hw: Some(hw),
        }
    }
}
