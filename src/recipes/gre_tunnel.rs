//! GreTunnelRecipe (upstream `ENRT/GreTunnelRecipe.py`): a GRE tunnel between host1 and
//! host2 over their eth0; ping and flows between the tunnel devices, each ping watched on
//! host2.eth0 (GRE, IP protocol 47, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 (.1) ════════ net_ipv4 ════════ (.2) host2.eth0
//!       └ gre_tunnel: tunnel1_ipv4 .2,             └ gre_tunnel: tunnel2_ipv4 .2,
//!         tunnel1_ipv6 ::2; routes to tunnel2_*       tunnel2_ipv6 ::2; routes to tunnel1_*
//! ```
//!
//! Deliberate difference: upstream hard-codes the tunnel addresses (192.168.6.2/24,
//! 192.168.7.2/24, 6001:db8:ac10:fe01::2/64, 7001:db8:ac10:fe01::2/64); here they are the
//! parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6` (networks, each
//! tunnel gets `.2`/`::2` of its own), with upstream's values as defaults. `gre_key` and
//! `gre_key_host2` (upstream has no key) set a GRE key on the tunnels; the packet assert then
//! requires the destination's key.

use super::common::config::{Configured, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError};
use super::enrt::params::DeviceReqParams;
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, GreKeyParams, TunnelNetsParams, TunnelPair, TunnelRecipe};
use super::typed::OffloadCombination;
use crate::param_set;
use crate::schema::TWO_HOSTS;

/// The offload keys and combinations of the GRE tunnel recipes.
pub const GRE_OFFLOAD_KEYS: [&str; 3] = ["gro", "gso", "tso"];
pub const GRE_OFFLOADS: [&[&str]; 4] = [
    &["on", "on", "on"],
    &["off", "on", "on"],
    &["on", "off", "off"],
    &["on", "on", "off"],
];

param_set! {
    /// GreTunnelRecipe's parameters.
    pub struct GreTunnelRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreTunnelRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl TunnelRecipe for GreTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: self.nics(),
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        tunnel::gre_encap(false)
    }
}

super::tunnel::tunnel_recipe!(
    GreTunnelRecipe,
    "ping and flows through a GRE tunnel between two hosts, GRE checked on the underlay",
    |r| simple_network_req(r).0,
    TunnelRecipe,
    {
        fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
            let mut tw = TestWide::new();
            let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
            tunnel::configure_underlay(&mut tw, &underlay, &[self.net_ipv4.into()], true)?;
            self.gre
                .configure(&mut tw, self.net_ipv4.into(), &tunnels, &self.tunnel, true)?;
            tw.wait_tentative();
            Ok(tw)
        }

        fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            self.gre.packet_assert(self, config, ping, false)
        }

        fn sub_configurations(&self) -> SubConfigs<'_> {
            let nics = self.nics();
            let tunnels = TunnelRecipe::pair(self).tunnels;
            SubConfigs {
                offloads: Some((&self.offload_combinations, nics.to_vec())),
                hw: Some(HwConfig {
                    mtu_devs: tunnels.to_vec(),
                    ..HwConfig::on(&self.hw, &nics)
                }),
            }
        }
    }
);
