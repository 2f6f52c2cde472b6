//! DoubleTeamRecipe (upstream `ENRT/DoubleTeamRecipe.py`): each host teams its two NICs with
//! teamd; pings in both directions and flows between the two teams.
//!
//! ```text
//!   host1: eth0 ┐                     ┌ eth0 :host2
//!          eth1 ┴ team0 (.1, ::1) ══ tnet ══ team0 (.2, ::2) ┴ eth1
//! ```

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::params::{DeviceReqParams, EnrtBase, TeamParams, O4, O4_KEYS};
use super::enrt::{self, ip_endpoint_pairs, EndpointPair, EnrtRecipe};
use super::enrt::{HwConfig, PingEndpoints, SubConfigs};
use super::reqs::double_team_or_bond_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// DoubleTeamRecipe's parameters.
    pub struct DoubleTeamRecipe {
        group team: TeamParams,
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.10.0/24",
            "IPv4 network; host1.team0 gets .1, host2.team0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:0:0:1::/64",
            "IPv6 network; host1.team0 gets ::1, host2.team0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4),
            "offload settings of both teams; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl DoubleTeamRecipe {
    fn teams() -> [Dev; 2] {
        HOSTS.map(|h| Dev::new(h, "team0"))
    }
    fn ports(host: &str) -> [Dev; 2] {
        [Dev::new(host, "eth0"), Dev::new(host, "eth1")]
    }
}

impl Recipe for DoubleTeamRecipe {
    const NAME: &'static str = "DoubleTeamRecipe";
    const DOC: &'static str =
        "each host teams two NICs (teamd); pings both ways and flows between the teams";

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

impl EnrtRecipe for DoubleTeamRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for (n, team) in (1..).zip(Self::teams()) {
            let ports = Self::ports(&team.host);
            tw.create(&team, Link::Team(self.team.runner_name));
            for port in &ports {
                tw.down(port).enslave(port, &team);
            }
            tw.address(&team, nth_address(self.net_ipv4.into(), n)?)
                .address(&team, nth_address(self.net_ipv6.into(), n)?)
                .up_all(&ports)
                .up(&team);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    /// Both directions: host1.team0 → host2.team0 and back.
    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        let [a, b] = Self::teams();
        vec![PingEndpoints::new(&a, &b), PingEndpoints::new(&b, &a)]
    }

    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        let [a, b] = Self::teams();
        vec![ip_endpoint_pairs(config, &a, &b)]
    }

    /// Pause frames: none (upstream's list is empty).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let teams = Self::teams().to_vec();
        let nics: Vec<Dev> = HOSTS.iter().flat_map(|h| Self::ports(h)).collect();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = teams.clone();
        hw.pause_frames_devs = Vec::new();
        SubConfigs {
            offloads: Some((&self.offload_combinations, teams)),
            hw: Some(hw),
        }
    }
}
