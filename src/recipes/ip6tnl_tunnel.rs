//! Ip6TnlTunnelRecipe (upstream `ENRT/Ip6TnlTunnelRecipe.py`): an ip6tnl tunnel (mode
//! `tunnel_mode`, ttl 64) between host1 and host2 over their eth0 (IPv6); IPv6 ping and flows
//! between the tunnel devices, each ping watched on host2.eth0 (IPv6 from host1's underlay
//! address to host2's carrying the echo requests, after the kernel's destination options).
//!
//! ```text
//!   host1.eth0 (::1) ════════ net_ipv6 ════════ (::2) host2.eth0
//!       └ ip6tnl (tunnel_ipv6 ::2)                  └ ip6tnl (tunnel_ipv6 ::3)
//! ```
//!
//! The inner addresses are IPv6 only, as upstream: mode `ipip6` carries only IPv4, so only
//! `ip6ip6` and `any` pass (upstream's CI uses `ip6ip6`). Deliberate differences: upstream
//! hard-codes the tunnel addresses 3001:db8:ac10:fe01::2/64 and ::3; here they come from the
//! parameter `tunnel_ipv6` (default 3001:db8:ac10:fe01::/64). Upstream's capture keeps every
//! IPv6 packet; ours only those from host1's to host2's underlay address, and the matching is
//! the same.

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe, SubConfigs};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, MtuPauseParams, TunnelPair, TunnelRecipe};
use super::Recipe;
use crate::param_set;
use crate::protocol::{IpTunMode, IpTunOptions, LinkSpec};
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

crate::choice_enum! {
    /// `tunnel_mode` of Ip6TnlTunnelRecipe.
    pub enum Ip6TnlMode { Any = "any", Ipip6 = "ipip6", Ip6ip6 = "ip6ip6" }
}

impl Ip6TnlMode {
    fn mode(self) -> IpTunMode {
        match self {
            Ip6TnlMode::Any => IpTunMode::Any,
            Ip6TnlMode::Ipip6 => IpTunMode::Ipip6,
            Ip6TnlMode::Ip6ip6 => IpTunMode::Ip6ip6,
        }
    }
}

param_set! {
    /// Ip6TnlTunnelRecipe's parameters.
    pub struct Ip6TnlTunnelRecipe {
        param tunnel_mode: Ip6TnlMode = mandatory(Ip6TnlMode::param_type(), "ip6tnl tunnel mode"),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "underlay IPv6 network; host1.eth0 gets ::1, host2.eth0 gets ::2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        param tunnel_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "3001:db8:ac10:fe01::/64",
            "IPv6 network of the tunnel; host1's gets ::2, host2's ::3",
        ),
    }
}

impl TunnelRecipe for Ip6TnlTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "ip6tnl")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        Encap {
            proto: None,
            udp_dport: None,
            outer: "",
            then: None,
        }
    }
}

impl Recipe for Ip6TnlTunnelRecipe {
    const NAME: &'static str = "Ip6TnlTunnelRecipe";
    const DOC: &'static str =
        "IPv6 ping and flows through an ip6tnl tunnel between two hosts, checked on the underlay";

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

impl EnrtRecipe for Ip6TnlTunnelRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        let net: ipnet::IpNet = self.net_ipv6.into();
        tunnel::configure_underlay(&mut tw, &underlay, &[net], false)?;
        let local = |n| nth_address(net, n).map(|a| a.addr);
        let ends = [(local(1)?, local(2)?), (local(2)?, local(1)?)];
        for ((tun, (l, r)), n) in tunnels.iter().zip(ends).zip([2, 3]) {
            let link = Link::Tunnel(LinkSpec::Ip6Tnl(IpTunOptions {
                local: Some(l),
                remote: Some(r),
                ttl: Some(64),
                tos: None,
                mode: Some(self.tunnel_mode.mode()),
            }));
            let addr = nth_address(self.tunnel_ipv6.into(), n)?;
            tunnel::create_tunnel(&mut tw, tun, link, &[addr], false);
        }
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
            offloads: None,
            hw: Some(self.hw.hw_config(&tunnels, &underlay)),
        }
    }
}
