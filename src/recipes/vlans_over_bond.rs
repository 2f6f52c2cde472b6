//! VlansOverBondRecipe (upstream `ENRT/VlansOverBondRecipe.py`): host1 bonds its two NICs
//! and puts three 802.1Q VLANs on the bond, host2 puts the same VLANs on its NIC; an IPv4 and
//! an IPv6 network per VLAN; pings over every VLAN, flows over vlan0.
//!
//! ```text
//!   host1: eth0 ┐       ┌ vlan0 (id 10)          host2: eth0 ─┬ vlan0
//!          eth1 ┴ bond0 ┼ vlan1 (id 20)  ══ tnet ══          ├ vlan1
//!                       └ vlan2 (id 30)                       └ vlan2
//! ```
//!
//! Deliberate differences:
//! * `bonding_mode='1'` is active-backup (upstream's agent refuses the string "1" its
//!   StrParam makes of it).
//! * The MTU sub-configuration sets the lower devices (host1.bond0, host2.eth0) before the
//!   VLANs; upstream sets the VLANs first, which the kernel refuses for an MTU above the lower
//!   device's (a VLAN's MTU cannot exceed its lower device's), so an `mtu` larger than the
//!   current one failed there.

use super::common::config::{Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, BondingParams};
use super::enrt::params::{CommonHwParams, DeviceReqParams, EnrtBase, PerfReverseParams};
use super::enrt::params::{ThreeVlansParams, O4, O4_KEYS};
use super::enrt::{self, ip_endpoint_pairs, reversible, EndpointPair, EnrtRecipe};
use super::enrt::{HwConfig, PingEndpoints, SubConfigs};
use super::reqs::bond_or_team_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;

param_set! {
    /// VlansOverBondRecipe's parameters.
    pub struct VlansOverBondRecipe {
        group bonding: BondingParams,
        group reverse: PerfReverseParams,
        group vlans: ThreeVlansParams,
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4),
            "offload settings of host1.eth0, host1.eth1 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl VlansOverBondRecipe {
    /// The VLANs' lower devices: host1.bond0 and host2.eth0.
    fn lowers() -> [Dev; 2] {
        [Dev::new("host1", "bond0"), Dev::new("host2", "eth0")]
    }
    /// host1.eth0, host1.eth1 and host2.eth0.
    fn nics() -> Vec<Dev> {
        vec![
            Dev::new("host1", "eth0"),
            Dev::new("host1", "eth1"),
            Dev::new("host2", "eth0"),
        ]
    }
}

impl Recipe for VlansOverBondRecipe {
    const NAME: &'static str = "VlansOverBondRecipe";
    const DOC: &'static str =
        "three VLANs on host1's bond and on host2's NIC: pings over each, flows over vlan0";

    fn requirements(&self) -> Requirements {
        bond_or_team_req(&self.reqs)
    }

    fn layout() -> Requirements {
        bond_or_team_req(&DeviceReqParams::NONE)
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for VlansOverBondRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let [bond, peer] = Self::lowers();
        let ports = [Dev::new("host1", "eth0"), Dev::new("host1", "eth1")];
        tw.create(&bond, Link::Bond(self.bonding.options()));
        for port in &ports {
            tw.down(port).enslave(port, &bond);
        }
        for lower in [&bond, &peer] {
            self.vlans.create(&mut tw, lower);
        }
        tw.track(&bond);
        for (n, host) in (1..).zip(HOSTS) {
            self.vlans.addresses(&mut tw, host, n)?;
        }
        tw.up_all(&ports)
            .up(&bond)
            .up_all(&ThreeVlansParams::devs("host1"))
            .up(&peer)
            .up_all(&ThreeVlansParams::devs("host2"))
            .wait_tentative();
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
        vec![reversible(
            ip_endpoint_pairs(config, &a, &b),
            self.reverse.perf_reverse,
        )]
    }

    /// MTU: the lower devices, then the VLANs (see the module doc).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = Self::nics();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = Self::lowers()
            .into_iter()
            .chain(HOSTS.iter().flat_map(|h| ThreeVlansParams::devs(h)))
            .collect();
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics)),
            hw: Some(hw),
        }
    }
}
