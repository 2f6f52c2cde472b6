//! Ip6GreNetnsTunnelRecipe (upstream `ENRT/Ip6GreNetnsTunnelRecipe.py`): on each host a
//! namespace behind a veth pair bridged with eth0; an ip6gre tunnel between the two
//! namespaces over their veth1 (IPv6); IPv4 and IPv6 ping and flows between the tunnel
//! devices, each ping watched in host2's namespace on veth1 (GRE over IPv6 from host1's
//! veth1 address to host2's, maybe after the kernel's destination options).
//!
//! ```text
//!   hostN: eth0 ─ bridge ─ veth0 ┄ newns: veth1 (net_ipv6 ::N)
//!                                        └ gre6_tunnel: tunnelN_ipv4 .2, tunnelN_ipv6 ::2,
//!                                          routes to the other host's tunnel networks
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses (as GreTunnelRecipe); here
//! they are the parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6`.
//! Upstream's capture keeps every IPv6 packet; ours only those from host1's to host2's
//! veth1 address, and the matching is the same.

use super::common::config::{Configured, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::RecipeError;
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::enrt::SubConfigs;
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, GreKeyParams, MtuPauseParams, TunnelNetsParams};
use super::tunnel::{TunnelPair, TunnelRecipe};
use super::typed::OffloadCombination;
use crate::param_set;
use crate::schema::TWO_HOSTS;

param_set! {
    /// Ip6GreNetnsTunnelRecipe's parameters.
    pub struct Ip6GreNetnsTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "underlay IPv6 network; host1.newns.veth1 gets ::1, host2.newns.veth1 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
    }
}

impl TunnelRecipe for Ip6GreNetnsTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: tunnel::netns_tunnels("veth1"),
            tunnels: tunnel::netns_tunnels("gre6_tunnel"),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        tunnel::gre_encap(true)
    }
}

/// No key: upstream's block (the key parameters belong to the IPv4 GRE recipes).
const NO_KEY: GreKeyParams = GreKeyParams {
    gre_key: None,
    gre_key_host2: None,
};

super::tunnel::tunnel_recipe!(
    Ip6GreNetnsTunnelRecipe,
    "ping and flows through a GRE-over-IPv6 tunnel between namespaces of two hosts",
    |r| simple_network_req(r).0,
    TunnelRecipe,
    {
        fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
            let mut tw = TestWide::new();
            let net = self.net_ipv6.into();
            tunnel::netns_underlay(&mut tw, net)?;
            let tunnels = TunnelRecipe::pair(self).tunnels;
            NO_KEY.configure(&mut tw, net, &tunnels, &self.tunnel, false)?;
            tw.wait_tentative();
            Ok(tw)
        }

        fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            tunnel::encap_assert(self, config, ping, true)
        }

        fn sub_configurations(&self) -> SubConfigs<'_> {
            let eth0s = simple_network_req(&self.reqs).1;
            let tunnels = TunnelRecipe::pair(self).tunnels;
            SubConfigs {
                offloads: Some((&self.offload_combinations, eth0s.to_vec())),
                hw: Some(self.hw.hw_config(&tunnels, &eth0s)),
            }
        }
    }
);
