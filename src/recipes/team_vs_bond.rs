//! TeamVsBondRecipe (upstream `ENRT/TeamVsBondRecipe.py`): host1 teams its two NICs with
//! teamd, host2 bonds its two NICs; pings in both directions and flows between the team and
//! the bond.
//!
//! ```text
//!   host1: eth0 ┐                     ┌ eth0 :host2
//!          eth1 ┴ team0 (.1, ::1) ══ tnet ══ bond0 (.2, ::2) ┴ eth1
//! ```
//!
//! Deliberate difference: `bonding_mode='1'` is active-backup (upstream's agent refuses the
//! string "1" its StrParam makes of it).

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, BondParams};
use super::enrt::params::{CommonHwParams, DeviceReqParams, EnrtBase, PerfReverseParams};
use super::enrt::params::{TeamParams, O4, O4_KEYS};
use super::enrt::{self, ip_endpoint_pairs, reversible, EndpointPair, EnrtRecipe};
use super::enrt::{HwConfig, PingEndpoints, SubConfigs};
use super::reqs::double_team_or_bond_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// TeamVsBondRecipe's parameters.
    pub struct TeamVsBondRecipe {
        group team: TeamParams,
        group bond: BondParams,
        group reverse: PerfReverseParams,
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.10.0/24",
            "IPv4 network; host1.team0 gets .1, host2.bond0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:0:0:1::/64",
            "IPv6 network; host1.team0 gets ::1, host2.bond0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4),
            "offload settings of host1.team0 and host2.bond0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl TeamVsBondRecipe {
    /// host1.team0 and host2.bond0.
    fn masters() -> [Dev; 2] {
        [Dev::new("host1", "team0"), Dev::new("host2", "bond0")]
    }
    fn ports(host: &str) -> [Dev; 2] {
        [Dev::new(host, "eth0"), Dev::new(host, "eth1")]
    }
}

impl Recipe for TeamVsBondRecipe {
    const NAME: &'static str = "TeamVsBondRecipe";
    const DOC: &'static str =
        "host1 teams two NICs (teamd), host2 bonds two; pings both ways and flows between them";

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

impl EnrtRecipe for TeamVsBondRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let [team, bond] = Self::masters();
        tw.create(&team, Link::Team(self.team.runner_name))
            .create(&bond, Link::Bond(self.bond.options()));
        for (n, master) in (1..).zip(Self::masters()) {
            let ports = Self::ports(&master.host);
            for port in &ports {
                tw.down(port);
            }
            for port in &ports {
                tw.enslave(port, &master);
            }
            tw.address(&master, nth_address(self.net_ipv4.into(), n)?)
                .address(&master, nth_address(self.net_ipv6.into(), n)?);
        }
        for master in Self::masters() {
            tw.up_all(&Self::ports(&master.host)).up(&master);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    /// Both directions: host1.team0 → host2.bond0 and back.
    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        let [a, b] = Self::masters();
        vec![PingEndpoints::new(&a, &b), PingEndpoints::new(&b, &a)]
    }

    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        let [a, b] = Self::masters();
        vec![reversible(
            ip_endpoint_pairs(config, &a, &b),
            self.reverse.perf_reverse,
        )]
    }

    /// Pause frames: none (upstream's list is empty).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let masters = Self::masters().to_vec();
        let nics: Vec<Dev> = HOSTS.iter().flat_map(|h| Self::ports(h)).collect();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = masters.clone();
        hw.pause_frames_devs = Vec::new();
        SubConfigs {
            offloads: Some((&self.offload_combinations, masters)),
            hw: Some(hw),
        }
    }
}
