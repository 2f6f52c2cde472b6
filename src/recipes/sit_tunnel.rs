//! SitTunnelRecipe (upstream `ENRT/SitTunnelRecipe.py`): a SIT tunnel (mode `tunnel_mode`)
//! between host1 and host2 over their eth0 (IPv4); IPv4 and IPv6 ping and flows between the
//! tunnel devices, each ping watched on host2.eth0 (IP protocol 4 for inner IPv4, 41 for inner
//! IPv6, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 (.1) ════════ net_ipv4 ════════ (.2) host2.eth0
//!       └ sit_tunnel: tunnel1_ipv4 .2,             └ sit_tunnel: tunnel2_ipv4 .2,
//!         tunnel1_ipv6 ::2; routes to tunnel2_*       tunnel2_ipv6 ::2; routes to tunnel1_*
//! ```
//!
//! A mode carries only its inner family (`ip6ip`: IPv6, `ipip`: IPv4, `any`: both), as
//! upstream: the pings of the other family fail. Deliberate differences: upstream hard-codes
//! the tunnel addresses (as GreTunnelRecipe); here they are the parameters `tunnel1_ipv4`,
//! `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6`. Upstream's capture keeps every packet from
//! or to host1's underlay address (`ip host`); ours keeps the tunnel's protocol from host1's
//! to host2's, and the matching is the same.

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe, SubConfigs};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, MtuPauseParams, TunnelNetsParams, TunnelPair, TunnelRecipe};
use super::Recipe;
use crate::param_set;
use crate::protocol::{IpTunMode, IpTunOptions, LinkSpec};
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

crate::choice_enum! {
    /// `tunnel_mode` of SitTunnelRecipe.
    pub enum SitMode { Any = "any", Ip6ip = "ip6ip", Ipip = "ipip", Mplsip = "mplsip" }
}

impl SitMode {
    fn mode(self) -> IpTunMode {
        match self {
            SitMode::Any => IpTunMode::Any,
            SitMode::Ip6ip => IpTunMode::Ip6ip,
            SitMode::Ipip => IpTunMode::Ipip,
            SitMode::Mplsip => IpTunMode::Mplsip,
        }
    }
}

param_set! {
    /// SitTunnelRecipe's parameters.
    pub struct SitTunnelRecipe {
        param tunnel_mode: SitMode = mandatory(SitMode::param_type(), "sit tunnel mode"),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
    }
}

impl TunnelRecipe for SitTunnelRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "sit_tunnel")),
        }
    }
    fn encap(&self, inner_v6: bool) -> Encap {
        Encap {
            proto: Some(if inner_v6 { 41 } else { 4 }),
            udp_dport: None,
            outer: "",
            then: None,
        }
    }
}

impl Recipe for SitTunnelRecipe {
    const NAME: &'static str = "SitTunnelRecipe";
    const DOC: &'static str =
        "ping and flows through a SIT tunnel between two hosts, the encapsulation checked on the underlay";

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

impl EnrtRecipe for SitTunnelRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        tunnel::configure_underlay(&mut tw, &underlay, &[self.net_ipv4.into()], false)?;
        let local = |n| nth_address(self.net_ipv4.into(), n).map(|a| a.addr);
        let sit = |l, r| {
            Link::Tunnel(LinkSpec::Sit(IpTunOptions {
                local: Some(l),
                remote: Some(r),
                mode: Some(self.tunnel_mode.mode()),
                ..IpTunOptions::default()
            }))
        };
        let links = [sit(local(1)?, local(2)?), sit(local(2)?, local(1)?)];
        self.tunnel.configure(&mut tw, &tunnels, links, false)?;
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
