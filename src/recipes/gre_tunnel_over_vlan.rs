//! GreTunnelOverVlanRecipe (upstream `ENRT/GreTunnelOverVlanRecipe.py`): a GRE tunnel between
//! host1 and host2 over a VLAN on their eth0; ping and flows between the tunnel devices, each
//! ping watched on host2.vlan0 (GRE, IP protocol 47, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 ─ vlan0 (.1) ═══ vlan_id, net_ipv4 ═══ (.2) vlan0 ─ eth0 :host2
//!       └ gre_tunnel: tunnel1_ipv4 .2, tunnel1_ipv6 ::2   └ gre_tunnel: tunnel2_* ::2
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses; here they are the
//! parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6` (upstream's
//! values as defaults). `gre_key`/`gre_key_host2` (upstream: no key) set GRE keys.

use super::common::config::{Link, TestWide};
use super::context::{Dev, RecipeError};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::simple_network_req;
use super::tunnel::{self, GreKeyParams, GreOver, MtuPauseParams, TunnelNetsParams};
use super::typed::OffloadCombination;
use crate::param_set;
use crate::schema::TWO_HOSTS;

param_set! {
    /// GreTunnelOverVlanRecipe's parameters.
    pub struct GreTunnelOverVlanRecipe {
        param vlan_id: u16 = dflt(Int, 10i64, "id of the VLAN on host1.eth0 and host2.eth0")
            .range(1.0, 4094.0),
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.vlan0 gets .1, host2.vlan0 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreOver for GreTunnelOverVlanRecipe {
    const UNDERLAY: &'static str = "vlan0";

    fn configure_underlay(
        &self,
        tw: &mut TestWide,
        underlay: &[Dev; 2],
        net: ipnet::IpNet,
    ) -> Result<(), RecipeError> {
        tunnel::stacked_underlay(tw, &self.nics(), underlay, net, |_, nic| Link::Vlan {
            parent: nic.clone(),
            id: self.vlan_id,
        })
    }

    fn describe_underlay(&self, h: &str) -> Vec<String> {
        vec![
            format!("Configured {h}.vlan0.vlan_id = {}", self.vlan_id),
            format!("Configured {h}.vlan0.realdev = {h}.eth0"),
        ]
    }
}

super::tunnel::gre_over_recipe!(
    GreTunnelOverVlanRecipe,
    "ping and flows through a GRE tunnel over a VLAN between two hosts, GRE checked on the VLAN",
    |r| simple_network_req(r).0
);
