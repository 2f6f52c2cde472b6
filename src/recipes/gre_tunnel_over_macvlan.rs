//! GreTunnelOverMacvlanRecipe (upstream `ENRT/GreTunnelOverMacvlanRecipe.py`): a GRE tunnel
//! between host1 and host2 over a macvlan on their eth0; ping and
//! flows between the tunnel devices, each ping watched on host2.macvlan10 (GRE, IP protocol
//! 47, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 ─ macvlan10 (.1) ═══ net_ipv4 ═══ (.2) macvlan10 ─ eth0 :host2
//!       └ gre_tunnel: tunnel1_ipv4 .2, tunnel1_ipv6 ::2   └ gre_tunnel: tunnel2_* ::2
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses; here they are the
//! parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6` (upstream's
//! values as defaults). `gre_key`/`gre_key_host2` (upstream: no key) set GRE keys. The
//! macvlans are created in mode `bridge` (upstream sets no mode: the kernel's `vepa`); traffic
//! between the two hosts leaves through eth0 in both modes. Each host answers ARP only on
//! the device that has the asked address (`net.ipv4.conf.all.arp_ignore = 1`, the old value
//! written back at the end): with the kernel's default, host2's eth0 (the macvlan's lower
//! device) answers host1's ARP for the macvlan's address first, with its own MAC, host1's
//! GRE packets then arrive on host2.eth0 instead of host2.macvlan10, and the packet assert on
//! the macvlan (upstream's too) sees none of them.

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
    /// GreTunnelOverMacvlanRecipe's parameters.
    pub struct GreTunnelOverMacvlanRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.macvlan10 gets .1, host2.macvlan10 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreOver for GreTunnelOverMacvlanRecipe {
    const UNDERLAY: &'static str = "macvlan10";

    fn configure_underlay(
        &self,
        tw: &mut TestWide,
        underlay: &[Dev; 2],
        net: ipnet::IpNet,
    ) -> Result<(), RecipeError> {
        tunnel::stacked_underlay(tw, &self.nics(), underlay, net, |tw, nic| {
            tw.sysctl(&nic.host, "net.ipv4.conf.all.arp_ignore", "1");
            Link::Macvlan {
                parent: nic.clone(),
            }
        })
    }

    fn describe_underlay(&self, h: &str) -> Vec<String> {
        vec![format!("Configured {h}.macvlan10.realdev = {h}.eth0")]
    }
}

super::tunnel::gre_over_recipe!(
    GreTunnelOverMacvlanRecipe,
    "ping and flows through a GRE tunnel over a macvlan between two hosts, GRE checked on the macvlan",
    |r| simple_network_req(r).0
);
