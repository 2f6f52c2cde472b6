//! GeneveTunnelRecipe (upstream `ENRT/GeneveTunnelRecipe.py`): a Geneve tunnel (VNI 1234,
//! MTU 1400, the kernel's UDP port 6081) between host1 and host2 over their eth0, the
//! underlay of the family `carrier_ipversion`; IPv4 and IPv6 ping and flows between the tunnel
//! devices, each ping watched on host2.eth0 (UDP to port 6081, Geneve with VNI 0x4d2 carrying
//! the echo requests).
//!
//! ```text
//!   host1.eth0 (.1 | ::1) ═══ net_ipv4 | net_ipv6 ═══ (.2 | ::2) host2.eth0
//!       └ gnv_tunnel (tunnel_ipv4 .10, tunnel_ipv6 ::10)   └ gnv_tunnel (.20, ::20)
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses (20.0.0.10/8, 20.0.0.20/8,
//! fee0::10/64, fee0::20/64); here they come from the parameters `tunnel_ipv4` and
//! `tunnel_ipv6` (defaults 20.0.0.0/8 and fee0::/64, hosts .10/.20 and ::10/::20). Without
//! `carrier_ipversion` upstream fails with an AttributeError when the configuration starts;
//! here the test FAILs before any configuration with a line naming the parameter.
//! Upstream's capture keeps every packet from or to host1's underlay address (IPv4) or every
//! IPv6 packet; ours keeps UDP to port 6081 from host1's to host2's underlay address, and the
//! matching is the same.

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError};
use super::enrt::params::DeviceReqParams;
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::{HwConfig, SubConfigs};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, TunnelPair, TunnelRecipe};
use super::typed::{IpVersion, OffloadCombination};
use crate::param_set;
use crate::protocol::{GeneveOptions, LinkSpec};
use crate::schema::TWO_HOSTS;

/// Upstream's VNI.
const VNI: u32 = 1234;
/// The kernel's Geneve port (upstream sets none).
const GENEVE_PORT: u16 = 6081;
/// Upstream's MTU of the tunnel devices.
const TUNNEL_MTU: u32 = 1400;

param_set! {
    /// GeneveTunnelRecipe's parameters.
    pub struct GeneveTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param carrier_ipversion: Option<IpVersion> = opt(
            IpVersion::param_type(),
            "family of the underlay (required: ipv4 or ipv6)",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network (carrier_ipversion ipv4); host1.eth0 .1, host2.eth0 .2",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "underlay IPv6 network (carrier_ipversion ipv6); host1.eth0 ::1, host2.eth0 ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
        param tunnel_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "20.0.0.0/8",
            "IPv4 network of the tunnel; host1's gets .10, host2's .20",
        ),
        param tunnel_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fee0::/64",
            "IPv6 network of the tunnel; host1's gets ::10, host2's ::20",
        ),
    }
}

impl GeneveTunnelRecipe {
    fn underlay_net(&self) -> ipnet::IpNet {
        match self.carrier_ipversion {
            Some(IpVersion::Ipv6) => self.net_ipv6.into(),
            _ => self.net_ipv4.into(),
        }
    }
}

impl TunnelRecipe for GeneveTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gnv_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        Encap {
            proto: Some(17),
            udp_dport: Some(GENEVE_PORT),
            outer: "Geneve",
            then: Some(format!("vni {VNI:#x}")),
        }
    }
}

impl GeneveTunnelRecipe {
    /// [`tunnel::require_carrier`].
    fn check(&self) -> Result<(), RecipeError> {
        tunnel::require_carrier(self.carrier_ipversion).map(|_| ())
    }
}

super::tunnel::tunnel_recipe!(
    GeneveTunnelRecipe,
    "ping and flows through a Geneve tunnel between two hosts, Geneve checked on the underlay",
    |r| simple_network_req(r).0,
    TunnelRecipe + check,
    {
        fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
            let mut tw = TestWide::new();
            let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
            let net = self.underlay_net();
            tunnel::configure_underlay(&mut tw, &underlay, &[net], true)?;
            let remotes = [nth_address(net, 2)?.addr, nth_address(net, 1)?.addr];
            // 20.0.0.10 and fee0::10: the same digits, decimal for IPv4 and hexadecimal for IPv6.
            let hosts = [(10, 0x10), (20, 0x20)];
            for ((tun, remote), (n4, n6)) in tunnels.iter().zip(remotes).zip(hosts) {
                tw.create(
                    tun,
                    Link::Tunnel(LinkSpec::Geneve(GeneveOptions {
                        id: VNI,
                        remote: Some(remote),
                        dstport: None,
                        ttl: None,
                        external: false,
                    })),
                )
                .mtu(tun, TUNNEL_MTU)
                .up_and_wait(tun)
                .address(tun, nth_address(self.tunnel_ipv4.into(), n4)?)
                .address(tun, nth_address(self.tunnel_ipv6.into(), n6)?);
            }
            tw.wait_tentative();
            Ok(tw)
        }

        fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            let v6 = self.carrier_ipversion == Some(IpVersion::Ipv6);
            tunnel::encap_assert(self, config, ping, v6)
        }

        fn sub_configurations(&self) -> SubConfigs<'_> {
            let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
            SubConfigs {
                offloads: Some((&self.offload_combinations, underlay.to_vec())),
                hw: Some(HwConfig {
                    mtu_devs: tunnels.to_vec(),
                    ..HwConfig::on(&self.hw, &underlay)
                }),
            }
        }
    }
);
