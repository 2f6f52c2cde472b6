//! LinuxBridgeOverBondRecipe (upstream `ENRT/LinuxBridgeOverBondRecipe.py`): on each host
//! the two NICs are bonded and the bond is the port of a Linux bridge `br0`; the addresses are
//! on the bridges.
//!
//! ```text
//!   host1: eth0 ┐                                            ┌ eth0 :host2
//!          eth1 ┴ bond0 ─ br0 (.1, ::1) ══ tnet ══ br0 (.2, ::2) ─ bond0 ┴ eth1
//! ```
//!
//! Deliberate difference: `bonding_mode='1'` is active-backup (upstream's agent refuses the
//! string "1" its StrParam makes of it).

use super::common::config::{nth_address, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, BondParams};
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
    /// LinuxBridgeOverBondRecipe's parameters.
    pub struct LinuxBridgeOverBondRecipe {
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
        group bond: BondParams,
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O4_KEYS, &O4[..1]),
            "offload settings of both bonds; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];

impl LinuxBridgeOverBondRecipe {
    fn bonds() -> [Dev; 2] {
        HOSTS.map(|h| Dev::new(h, "bond0"))
    }
    fn bridges() -> [Dev; 2] {
        HOSTS.map(|h| Dev::new(h, "br0"))
    }
    fn ports(host: &str) -> [Dev; 2] {
        [Dev::new(host, "eth0"), Dev::new(host, "eth1")]
    }
}

impl Recipe for LinuxBridgeOverBondRecipe {
    const NAME: &'static str = "LinuxBridgeOverBondRecipe";
    const DOC: &'static str =
        "on each host a bond of two NICs in a Linux bridge; pings and flows between the bridges";

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

impl EnrtRecipe for LinuxBridgeOverBondRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for ((n, bond), br) in (1..).zip(Self::bonds()).zip(Self::bridges()) {
            let ports = Self::ports(&bond.host);
            tw.create(&bond, Link::Bond(self.bond.options()));
            for port in &ports {
                tw.down(port).enslave(port, &bond);
            }
            tw.create(&br, Link::Bridge)
                .down(&bond)
                .enslave(&bond, &br)
                .up_and_wait_all(&ports)
                .up_and_wait(&bond)
                .up_and_wait(&br)
                .address(&br, nth_address(self.net_ipv4.into(), n)?)
                .address(&br, nth_address(self.net_ipv6.into(), n)?)
                .track(&bond);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = Self::bridges();
        Some((a, b))
    }

    /// Pause frames: host1.eth0 and host2.eth0 only (upstream's list).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let bonds = Self::bonds().to_vec();
        let nics: Vec<Dev> = HOSTS.iter().flat_map(|h| Self::ports(h)).collect();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.mtu_devs = bonds.clone();
        hw.pause_frames_devs = HOSTS.iter().map(|h| Dev::new(h, "eth0")).collect();
        SubConfigs {
            offloads: Some((&self.offload_combinations, bonds)),
            hw: Some(hw),
        }
    }
}
