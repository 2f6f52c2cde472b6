//! BondRecipe (upstream `ENRT/BondRecipe.py`): host1 bonds its two NICs; pings and flows
//! between host1's bond and host2's NIC.
//!
//! ```text
//!   host1: eth0 ┐                    host2: eth0 (.2, ::2)
//!          eth1 ┴ bond0 (.1, ::1)  ══ tnet ══
//! ```
//!
//! Deliberate difference: `bonding_mode='1'` is active-backup (upstream's agent refuses the
//! string "1" its StrParam makes of it).

use super::common::config::{nth_address, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, BondingParams};
use super::enrt::params::{CommonHwParams, DeviceReqParams, EnrtBase, PerfReverseParams};
use super::enrt::params::{O4, O4_KEYS};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::bond_or_team_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// BondRecipe's parameters.
    pub struct BondRecipe {
        group bonding: BondingParams,
        group reverse: PerfReverseParams,
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "IPv4 network; host1.bond0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network; host1.bond0 gets ::1, host2.eth0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4),
            "offload settings of host1.bond0 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

impl BondRecipe {
    fn ends() -> (Dev, Dev) {
        (Dev::new("host1", "bond0"), Dev::new("host2", "eth0"))
    }
    fn ports() -> [Dev; 2] {
        [Dev::new("host1", "eth0"), Dev::new("host1", "eth1")]
    }
}

impl Recipe for BondRecipe {
    const NAME: &'static str = "BondRecipe";
    const DOC: &'static str =
        "host1 bonds two NICs; pings and flows between the bond and host2's NIC";

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

impl EnrtRecipe for BondRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let (bond, peer) = Self::ends();
        tw.create(&bond, Link::Bond(self.bonding.options()));
        for port in Self::ports() {
            tw.down(&port).enslave(&port, &bond);
        }
        for (n, dev) in [(1, &bond), (2, &peer)] {
            tw.address(dev, nth_address(self.net_ipv4.into(), n)?)
                .address(dev, nth_address(self.net_ipv6.into(), n)?);
        }
        tw.up_all(&Self::ports())
            .up(&bond)
            .up(&peer)
            .wait_tentative();
        Ok(tw)
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let (a, b) = Self::ends();
        Some((a, b))
    }

    fn perf_reverse(&self) -> bool {
        self.reverse.perf_reverse
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let (bond, peer) = Self::ends();
        let ends = vec![bond, peer.clone()];
        let mut nics = Self::ports().to_vec();
        nics.push(peer);
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = ends.clone();
        SubConfigs {
            offloads: Some((&self.offload_combinations, ends)),
            hw: Some(hw),
        }
    }
}
