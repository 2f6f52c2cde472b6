//! GreTunnelOverBondRecipe (upstream `ENRT/GreTunnelOverBondRecipe.py`): a GRE tunnel between
//! host1 and host2 over a bond of their eth0 and eth1; ping and flows between the tunnel
//! devices, each ping watched on host2.bond (GRE, IP protocol 47, carrying the echo requests).
//!
//! ```text
//!   host1: eth0, eth1 ─ bond (.1) ═══ net_ipv4 ═══ (.2) bond ─ eth0, eth1 :host2
//!       └ gre_tunnel: tunnel1_ipv4 .2, tunnel1_ipv6 ::2   └ gre_tunnel: tunnel2_* ::2
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses; here they are the
//! parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6` (upstream's
//! values as defaults). `gre_key`/`gre_key_host2` (upstream: no key) set GRE keys.

use super::common::config::{nth_address, Link, TestWide};
use super::context::{Dev, RecipeError};
use super::enrt::params::BondParams;
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::double_team_or_bond_req;
use super::tunnel::TunnelRecipe;
use super::tunnel::{GreKeyParams, GreOver, MtuPauseParams, TunnelNetsParams};
use super::typed::OffloadCombination;
use crate::param_set;
use crate::schema::TWO_HOSTS;

param_set! {
    /// GreTunnelOverBondRecipe's parameters.
    pub struct GreTunnelOverBondRecipe {
        group bonding: BondParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.bond and host2.bond; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.bond gets .1, host2.bond gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreTunnelOverBondRecipe {
    fn ports(host: &str) -> [Dev; 2] {
        [Dev::new(host, "eth0"), Dev::new(host, "eth1")]
    }
}

impl GreOver for GreTunnelOverBondRecipe {
    const UNDERLAY: &'static str = "bond";

    fn offload_devs(&self) -> [Dev; 2] {
        TunnelRecipe::pair(self).underlay
    }

    fn configure_underlay(
        &self,
        tw: &mut TestWide,
        underlay: &[Dev; 2],
        net: ipnet::IpNet,
    ) -> Result<(), RecipeError> {
        for bond in underlay {
            tw.create(bond, Link::Bond(self.bonding.options()));
            for port in Self::ports(&bond.host) {
                tw.down(&port).enslave(&port, bond);
            }
        }
        for (n, bond) in (1..).zip(underlay) {
            tw.address(bond, nth_address(net, n)?);
        }
        // Upstream sets host2.eth0 up twice and never host2.eth1 (the bond opens its ports).
        for bond in underlay {
            tw.up_all(&Self::ports(&bond.host)).up(bond);
        }
        Ok(())
    }

    fn describe_underlay(&self, h: &str) -> Vec<String> {
        vec![format!(
            "Configured {h}.bond.slaves = ['{h}.eth0', '{h}.eth1']"
        )]
    }
}

super::tunnel::gre_over_recipe!(
    GreTunnelOverBondRecipe,
    "ping and flows through a GRE tunnel over a bond between two hosts, GRE checked on the bond",
    double_team_or_bond_req
);
