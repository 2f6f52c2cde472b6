//! TeamRecipe (upstream `ENRT/TeamRecipe.py`): host1 teams its two NICs with teamd; pings in
//! both directions and flows between host1's team and host2's NIC.
//!
//! ```text
//!   host1: eth0 ┐                    host2: eth0 (.2, ::2)
//!          eth1 ┴ team0 (.1, ::1)  ══ tnet ══
//! ```

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::params::{DeviceReqParams, EnrtBase, PerfReverseParams, TeamParams};
use super::enrt::params::{O4, O4_KEYS};
use super::enrt::{self, ip_endpoint_pairs, reversible, EndpointPair, EnrtRecipe};
use super::enrt::{HwConfig, PingEndpoints, SubConfigs};
use super::reqs::bond_or_team_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// TeamRecipe's parameters.
    pub struct TeamRecipe {
        group team: TeamParams,
        group reverse: PerfReverseParams,
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.10.0/24",
            "IPv4 network; host1.team0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:0:0:1::/64",
            "IPv6 network; host1.team0 gets ::1, host2.eth0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4),
            "offload settings of host1.team0 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

impl TeamRecipe {
    fn ends() -> (Dev, Dev) {
        (Dev::new("host1", "team0"), Dev::new("host2", "eth0"))
    }
    fn ports() -> [Dev; 2] {
        [Dev::new("host1", "eth0"), Dev::new("host1", "eth1")]
    }
}

impl Recipe for TeamRecipe {
    const NAME: &'static str = "TeamRecipe";
    const DOC: &'static str =
        "host1 teams two NICs (teamd); pings both ways and flows between the team and host2's NIC";

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

impl EnrtRecipe for TeamRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let (team, peer) = Self::ends();
        tw.create(&team, Link::Team(self.team.runner_name));
        for port in Self::ports() {
            tw.down(&port).enslave(&port, &team);
        }
        for (n, dev) in [(1, &team), (2, &peer)] {
            tw.address(dev, nth_address(self.net_ipv4.into(), n)?)
                .address(dev, nth_address(self.net_ipv6.into(), n)?);
        }
        tw.up_all(&Self::ports())
            .up(&team)
            .up(&peer)
            .wait_tentative();
        Ok(tw)
    }

    /// Both directions: team0 → eth0 and eth0 → team0.
    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        let (a, b) = Self::ends();
        vec![PingEndpoints::new(&a, &b), PingEndpoints::new(&b, &a)]
    }

    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        let (a, b) = Self::ends();
        vec![reversible(
            ip_endpoint_pairs(config, &a, &b),
            self.reverse.perf_reverse,
        )]
    }

    /// Pause frames: none (upstream's list is empty).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let (team, peer) = Self::ends();
        let ends = vec![team, peer.clone()];
        let mut nics = Self::ports().to_vec();
        nics.push(peer);
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = ends.clone();
        hw.pause_frames_devs = Vec::new();
        SubConfigs {
            offloads: Some((&self.offload_combinations, ends)),
            hw: Some(hw),
        }
    }
}
