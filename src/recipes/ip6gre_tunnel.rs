//! Ip6GreTunnelRecipe (upstream `ENRT/Ip6GreTunnelRecipe.py`): an ip6gre tunnel between host1
//! and host2 over their eth0 (IPv6); IPv4 and IPv6 ping and flows between the tunnel devices,
//! each ping watched on host2.eth0 (GRE over IPv6 from host1's underlay address to host2's,
//! maybe after the kernel's destination options, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 (::1) ═══════ net_ipv6 ═══════ (::2) host2.eth0
//!       └ gre6_tunnel: tunnel1_ipv4 .2,            └ gre6_tunnel: tunnel2_ipv4 .2,
//!         tunnel1_ipv6 ::2; routes to tunnel2_*       tunnel2_ipv6 ::2; routes to tunnel1_*
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses (as GreTunnelRecipe); here
//! they are the parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6`.
//! Upstream's capture keeps every IPv6 packet; ours only those from host1's to host2's
//! underlay address, and the matching is the same.

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::EnrtBase;
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::enrt::{self, EnrtRecipe, SubConfigs};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, MtuPauseParams, TunnelNetsParams, TunnelPair, TunnelRecipe};
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::protocol::{GreOptions, LinkSpec};
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// Ip6GreTunnelRecipe's parameters.
    pub struct Ip6GreTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "underlay IPv6 network; host1.eth0 gets ::1, host2.eth0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
    }
}

impl TunnelRecipe for Ip6GreTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre6_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        Encap {
            proto: None,
            udp_dport: None,
            outer: "GREv0",
            then: None,
        }
    }
}

impl Recipe for Ip6GreTunnelRecipe {
    const NAME: &'static str = "Ip6GreTunnelRecipe";
    const DOC: &'static str =
        "ping and flows through a GRE-over-IPv6 tunnel between two hosts, GRE checked on the underlay";

    fn requirements(&self) -> Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for Ip6GreTunnelRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        let net: ipnet::IpNet = self.net_ipv6.into();
        tunnel::configure_underlay(&mut tw, &underlay, &[net], false)?;
        let local = |n| nth_address(net, n).map(|a| a.addr);
        let gre = |l, r| {
            Link::Tunnel(LinkSpec::Ip6Gre(GreOptions {
                local: Some(l),
                remote: Some(r),
                ..GreOptions::default()
            }))
        };
        let links = [gre(local(1)?, local(2)?), gre(local(2)?, local(1)?)];
        self.tunnel.configure(&mut tw, &tunnels, links, false)?;
        tw.wait_tentative();
        Ok(tw)
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = TunnelRecipe::pair(self).tunnels;
        Some((a, b))
    }

    fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
        tunnel::encap_assert(self, config, ping, true)
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        SubConfigs {
            offloads: Some((&self.offload_combinations, underlay.to_vec())),
            hw: Some(self.hw.hw_config(&tunnels, &underlay)),
        }
    }
}
