//! DoubleBondRecipe (upstream `ENRT/DoubleBondRecipe.py`): each host bonds its two NICs;
//! pings and flows between the two bonds.
//!
//! ```text
//!   host1: eth0 ┐                     ┌ eth0 :host2
//!          eth1 ┴ bond0 (.1, ::1) ══ tnet ══ bond0 (.2, ::2) ┴ eth1
//! ```
//!
//! Deliberate difference: `bonding_mode='1'` is active-backup (upstream's agent refuses the
//! string "1" its StrParam makes of it).

use super::common::config::{nth_address, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, BondingParams};
use super::enrt::params::{CommonHwParams, DeviceReqParams, EnrtBase, O4, O4_KEYS};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::double_team_or_bond_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// DoubleBondRecipe's parameters.
    pub struct DoubleBondRecipe {
        group bonding: BondingParams,
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "IPv4 network; host1.bond0 gets .1, host2.bond0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network; host1.bond0 gets ::1, host2.bond0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4),
            "offload settings of both bonds; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl DoubleBondRecipe {
    fn bonds() -> [Dev; 2] {
        HOSTS.map(|h| Dev::new(h, "bond0"))
    }
    fn ports(host: &str) -> [Dev; 2] {
        [Dev::new(host, "eth0"), Dev::new(host, "eth1")]
    }
}

impl Recipe for DoubleBondRecipe {
    const NAME: &'static str = "DoubleBondRecipe";
    const DOC: &'static str = "each host bonds two NICs; pings and flows between the two bonds";

    fn requirements(&self) -> Requirements {
        double_team_or_bond_req(&self.reqs)
    }

    fn layout() -> Requirements {
        double_team_or_bond_req(&DeviceReqParams::NONE)
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for DoubleBondRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for bond in Self::bonds() {
            tw.create(&bond, Link::Bond(self.bonding.options()));
            for port in Self::ports(&bond.host) {
                tw.down(&port).enslave(&port, &bond);
            }
        }
        for (n, bond) in (1..).zip(Self::bonds()) {
            tw.address(&bond, nth_address(self.net_ipv4.into(), n)?)
                .address(&bond, nth_address(self.net_ipv6.into(), n)?)
                .up_and_wait_all(&Self::ports(&bond.host))
                .up_and_wait(&bond);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = Self::bonds();
        Some((a, b))
    }

    /// Pause frames: none (upstream does not list any device).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let bonds = Self::bonds().to_vec();
        let nics: Vec<Dev> = HOSTS.iter().flat_map(|h| Self::ports(h)).collect();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = bonds.clone();
        hw.pause_frames_devs = Vec::new();
        SubConfigs {
            offloads: Some((&self.offload_combinations, bonds)),
            hw: Some(hw),
        }
    }
}
