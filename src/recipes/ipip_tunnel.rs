//! IpIpTunnelRecipe (upstream `ENRT/IpIpTunnelRecipe.py`): an IPv4-in-IPv4 tunnel (mode
//! `tunnel_mode`, ttl 64) between host1 and host2 over their eth0; IPv4 ping and flows between
//! the tunnel devices, each ping watched on host2.eth0 (IPIP, IP protocol 4, carrying the echo
//! requests).
//!
//! ```text
//!   host1.eth0 (172.16.200.1) ════ net_ipv4 ════ (172.16.200.2) host2.eth0
//!       └ ipip_tunnel (tunnel_ipv4 .1)              └ ipip_tunnel (tunnel_ipv4 .2)
//! ```
//!
//! The underlay addresses start at 172.16.200.1 when `net_ipv4` contains it (upstream's
//! `default_start`), at the network's first host otherwise. Deliberate difference: upstream
//! hard-codes the tunnel addresses 192.168.200.1/24 and .2; here they come from the parameter
//! `tunnel_ipv4` (default 192.168.200.0/24). Upstream's capture keeps every packet from or to
//! host1's underlay address (`ip host`); ours keeps IPIP from host1's to host2's, and the
//! matching is the same (outer addresses, then the inner echo request).

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
use std::net::{IpAddr, Ipv4Addr};

crate::choice_enum! {
    /// `tunnel_mode` of IpIpTunnelRecipe.
    pub enum IpIpMode { Any = "any", Ipip = "ipip", Mplsip = "mplsip" }
}

impl IpIpMode {
    fn mode(self) -> IpTunMode {
        match self {
            IpIpMode::Any => IpTunMode::Any,
            IpIpMode::Ipip => IpTunMode::Ipip,
            IpIpMode::Mplsip => IpTunMode::Mplsip,
        }
    }
}

/// Upstream's `default_start` of the underlay addresses.
const DEFAULT_START: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 200, 1));

param_set! {
    /// IpIpTunnelRecipe's parameters.
    pub struct IpIpTunnelRecipe {
        param tunnel_mode: IpIpMode = mandatory(IpIpMode::param_type(), "ipip tunnel mode"),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "172.16.0.0/16",
            "underlay IPv4 network; host1.eth0 and host2.eth0 get 172.16.200.1 and .2 when it \
             contains them, its first two hosts otherwise",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        param tunnel_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.200.0/24",
            "IPv4 network of the tunnel; host1's gets .1, host2's .2",
        )
        .check(TWO_HOSTS),
    }
}

impl IpIpTunnelRecipe {
    fn underlay_addr(&self, n: u128) -> Result<IpAddr, RecipeError> {
        tunnel::nth_from(self.net_ipv4.into(), DEFAULT_START, n).map(|a| a.addr)
    }
}

impl TunnelRecipe for IpIpTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "ipip_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        Encap {
            proto: Some(4),
            udp_dport: None,
            then: None,
            outer: "",
        }
    }
}

impl Recipe for IpIpTunnelRecipe {
    const NAME: &'static str = "IpIpTunnelRecipe";
    const DOC: &'static str =
        "IPv4 ping and flows through an IPIP tunnel between two hosts, IPIP checked on the underlay";

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

impl EnrtRecipe for IpIpTunnelRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        let prefix = self.net_ipv4.prefix_len();
        for (n, dev) in (1..).zip(&underlay) {
            let addr = self.underlay_addr(n)?;
            tw.address(dev, super::typed::IfAddr { addr, prefix })
                .up(dev);
        }
        let ends = [
            (self.underlay_addr(1)?, self.underlay_addr(2)?),
            (self.underlay_addr(2)?, self.underlay_addr(1)?),
        ];
        for ((n, tun), (l, r)) in (1..).zip(&tunnels).zip(ends) {
            let link = Link::Tunnel(LinkSpec::Ipip(IpTunOptions {
                local: Some(l),
                remote: Some(r),
                ttl: Some(64),
                tos: None,
                mode: Some(self.tunnel_mode.mode()),
            }));
            let addr = nth_address(self.tunnel_ipv4.into(), n)?;
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
        tunnel::encap_assert(self, config, ping, false)
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        SubConfigs {
            offloads: None,
            hw: Some(self.hw.hw_config(&tunnels, &underlay)),
        }
    }
}
