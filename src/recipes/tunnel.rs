//! The tunnel base (upstream `ENRT/BaseTunnelRecipe.py`): a recipe configures an underlay
//! network (`configure_underlying_network`), creates one tunnel device per host between the
//! two underlay endpoints (`create_tunnel`) and waits for tentative addresses; ping and perf
//! run between the tunnel devices, and every ping is watched by a packet assert on the
//! destination's underlay device ([`TunnelRecipe::encap`]): the echo requests must really
//! cross the underlay encapsulated, at least once per ping sent.
//!
//! Every address a tunnel recipe configures is a parameter (upstream hard-codes the inner
//! ones; its defaults are ours).

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError};
use super::enrt::params::CommonHwParams;
use super::enrt::HwConfig;
use super::typed::{IfAddr, IpVersion, ParamSet};
use crate::protocol::CaptureFilter;
use std::net::IpAddr;

/// How a recipe's encapsulation looks on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encap {
    /// The outer IP protocol (47 GRE, 4 IPIP, 41 IPv6, 17 UDP); None over IPv6 where the
    /// kernel puts a destination-options header (the encapsulation limit) first.
    pub proto: Option<u8>,
    /// UDP destination port of a UDP encapsulation.
    pub udp_dport: Option<u16>,
    /// tcpdump's text after `OUTER_SRC > OUTER_DST: ` (`GREv0`, maybe after ` DSTOPT`; empty:
    /// anything); for a UDP encapsulation, right after `OUTER_SRC.PORT > OUTER_DST.DPORT: `
    /// (`Geneve`).
    pub outer: &'static str,
    /// Text between the outer header and the inner packet (`vni 0x4d2`).
    pub then: Option<String>,
}

/// The two hosts' underlay devices and tunnels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPair {
    /// `tunnel_endpoints`: the underlay devices (host1's, host2's).
    pub underlay: [Dev; 2],
    /// `tunnel_devices`.
    pub tunnels: [Dev; 2],
}

/// The shared steps and evaluations of a tunnel recipe.
pub trait TunnelRecipe {
    fn pair(&self) -> TunnelPair;
    /// The encapsulation of inner IPv6 (`inner_v6`) or IPv4 packets.
    fn encap(&self, inner_v6: bool) -> Encap;
}

/// Address the underlay devices: host1 gets `.1`, host2 `.2` of each network, then up
/// (`up_and_wait` or plain `up`, as the recipe does upstream).
pub fn configure_underlay(
    tw: &mut TestWide,
    devs: &[Dev; 2],
    nets: &[ipnet::IpNet],
    wait: bool,
) -> Result<(), RecipeError> {
    for (n, dev) in (1..).zip(devs) {
        for net in nets {
            tw.address(dev, nth_address(*net, n)?);
        }
        if wait {
            tw.up_and_wait(dev);
        } else {
            tw.up(dev);
        }
    }
    Ok(())
}

/// Create a tunnel device, bring it up and give it its addresses (upstream: create, up, then
/// `configure_and_track_ip`).
pub fn create_tunnel(tw: &mut TestWide, dev: &Dev, link: Link, addrs: &[IfAddr], wait: bool) {
    tw.create(dev, link);
    if wait {
        tw.up_and_wait(dev);
    } else {
        tw.up(dev);
    }
    tw.addresses(dev, addrs);
}

/// The first address of `dev` of the family of `v6`.
fn first_ip(config: &Configured, dev: &Dev, v6: bool) -> Option<IpAddr> {
    let v = if v6 { IpVersion::Ipv6 } else { IpVersion::Ipv4 };
    config.ips(dev, Some(v)).first().map(|a| a.addr)
}

/// The packet assert of one ping through the tunnel (upstream `get_packet_assert_config`):
/// on the destination's underlay device, packets of the encapsulation from the client's
/// underlay address to the destination's, whose inner packet is the ping's echo request
/// (`SRC > DST: ICMP echo request`, `ICMP6, echo request`), at least `count` of them.
pub fn encap_assert<R: TunnelRecipe + ?Sized>(
    r: &R,
    config: &Configured,
    ping: &PingConf,
    underlay_v6: bool,
) -> Option<PacketAssertConf> {
    let TunnelPair { underlay, .. } = r.pair();
    let (from, to) = if ping.client == underlay[1].host {
        (&underlay[1], &underlay[0])
    } else {
        (&underlay[0], &underlay[1])
    };
    let outer_src = first_ip(config, from, underlay_v6)?;
    let outer_dst = first_ip(config, to, underlay_v6)?;
    let e = r.encap(ping.dst.addr.is_ipv6());
    let inner = if ping.dst.addr.is_ipv6() {
        format!("{} > {}: ICMP6, echo request", ping.src.addr, ping.dst.addr)
    } else {
        format!("{} > {}: ICMP echo request", ping.src.addr, ping.dst.addr)
    };
    Some(PacketAssertConf {
        dev: to.clone(),
        filter: CaptureFilter {
            proto: e.proto,
            src: Some(outer_src),
            dst: Some(outer_dst),
            udp_dport: e.udp_dport,
        },
        grep_for: {
            let mut g = match e.udp_dport {
                Some(port) => vec![
                    format!("{outer_src}."),
                    format!(" > {outer_dst}.{port}: {}", e.outer),
                ],
                None => vec![format!("{outer_src} > {outer_dst}:"), e.outer.to_string()],
            };
            g.retain(|t| !t.is_empty());
            g.extend(e.then);
            g.push(inner);
            g
        },
        p_min: u64::from(ping.count),
        p_max: None,
    })
}

/// The route to the peer's tunnel network through the tunnel (`ip route add NET dev TUN`).
pub fn route_through(tw: &mut TestWide, host: &str, net: ipnet::IpNet, tunnel: &Dev) {
    tw.route_dev(host, net.trunc().to_string(), tunnel);
}

/// MTUHWConfigMixin + PauseFramesHWConfigMixin without the rest of CommonHWSubConfigMixin
/// (IpIp, Sit, Ip6Tnl and Ip6Gre tunnel recipes): CommonHwParams' `mtu`, `rx_pause_frames`
/// and `tx_pause_frames` only; no IRQ pinning, no coalescing.
#[derive(Debug, Clone, PartialEq)]
pub struct MtuPauseParams(pub CommonHwParams);

/// The parameters of CommonHwParams these mixins have.
const MTU_PAUSE: [&str; 3] = ["mtu", "rx_pause_frames", "tx_pause_frames"];

impl ParamSet for MtuPauseParams {
    fn specs() -> Vec<crate::schema::ParamSpec> {
        CommonHwParams::specs()
            .into_iter()
            .filter(|s| MTU_PAUSE.contains(&s.name))
            .map(|mut s| {
                if s.name == "mtu" {
                    s.doc = "MTU set on the tunnel devices";
                }
                s
            })
            .collect()
    }
    fn from_resolved(
        p: &crate::schema::ResolvedParams,
    ) -> Result<Self, crate::schema::SchemaError> {
        use super::typed::FromParam;
        let get = |name: &str| p.get(name);
        fn ty(name: &'static str) -> impl Fn(String) -> crate::schema::SchemaError {
            move |message| crate::schema::SchemaError::Type {
                name: name.to_string(),
                message,
            }
        }
        Ok(MtuPauseParams(CommonHwParams {
            mtu: FromParam::from_param(get("mtu")).map_err(ty("mtu"))?,
            rx_pause_frames: FromParam::from_param(get("rx_pause_frames"))
                .map_err(ty("rx_pause_frames"))?,
            tx_pause_frames: FromParam::from_param(get("tx_pause_frames"))
                .map_err(ty("tx_pause_frames"))?,
            dev_intr_cpu: None,
            coalescing_settings: Default::default(),
        }))
    }
}

impl MtuPauseParams {
    /// The hardware sub-configuration of these two mixins: MTU on `mtu_devs`, pause frames
    /// on `pause_devs`, nothing else.
    pub fn hw_config(&self, mtu_devs: &[Dev], pause_devs: &[Dev]) -> HwConfig<'_> {
        HwConfig {
            params: &self.0,
            mtu_devs: mtu_devs.to_vec(),
            pause_frames_devs: pause_devs.to_vec(),
            dev_interrupt_devs: Vec::new(),
            parallel_stream_qdisc_devs: Vec::new(),
        }
    }
}

/// Upstream's `interface_addresses(net, default_start)`: the `n`-th host address counted
/// from `default_start` when the network contains it, from the network's first host when not.
pub fn nth_from(net: ipnet::IpNet, default_start: IpAddr, n: u128) -> Result<IfAddr, RecipeError> {
    if !net.contains(&default_start) {
        return nth_address(net, n);
    }
    let offset = match (net, default_start) {
        (ipnet::IpNet::V4(v), IpAddr::V4(s)) => u128::from(u32::from(s) - u32::from(v.network())),
        (ipnet::IpNet::V6(v), IpAddr::V6(s)) => u128::from(s) - u128::from(v.network()),
        _ => 1,
    };
    nth_address(net, offset + n - 1)
}

crate::param_set! {
    /// The tunnel networks of upstream's GRE-style tunnel recipes (Gre, Sit, Ip6Gre), which
    /// upstream hard-codes: each tunnel gets `.2`/`::2` of its own network, and each host
    /// routes the other's networks through its tunnel.
    pub struct TunnelNetsParams {
        param tunnel1_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.6.0/24",
            "IPv4 network of host1's tunnel (it gets .2; host2 routes it through its tunnel)",
        )
        .check(crate::schema::TWO_HOSTS),
        param tunnel2_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.7.0/24",
            "IPv4 network of host2's tunnel (it gets .2; host1 routes it through its tunnel)",
        )
        .check(crate::schema::TWO_HOSTS),
        param tunnel1_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "6001:db8:ac10:fe01::/64",
            "IPv6 network of host1's tunnel (it gets ::2)",
        )
        .check(crate::schema::TWO_HOSTS),
        param tunnel2_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "7001:db8:ac10:fe01::/64",
            "IPv6 network of host2's tunnel (it gets ::2)",
        )
        .check(crate::schema::TWO_HOSTS),
    }
}

/// The names of [`TunnelNetsParams`] (parameters upstream does not have).
pub const TUNNEL_NETS: [&str; 4] = [
    "tunnel1_ipv4",
    "tunnel2_ipv4",
    "tunnel1_ipv6",
    "tunnel2_ipv6",
];

impl TunnelNetsParams {
    /// Upstream's tunnel block of Gre, Sit and Ip6Gre: per host, the tunnel `links[i]`,
    /// up (and wait), its IPv4 and IPv6 address, the routes to the peer's networks through it.
    pub fn configure(
        &self,
        tw: &mut TestWide,
        tunnels: &[Dev; 2],
        links: [Link; 2],
        wait: bool,
    ) -> Result<(), RecipeError> {
        let nets: [(ipnet::IpNet, ipnet::IpNet); 2] = [
            (self.tunnel1_ipv4.into(), self.tunnel1_ipv6.into()),
            (self.tunnel2_ipv4.into(), self.tunnel2_ipv6.into()),
        ];
        for (i, (tun, link)) in tunnels.iter().zip(links).enumerate() {
            let (n4, n6) = nets[i];
            let addrs = [nth_address(n4, 2)?, nth_address(n6, 2)?];
            create_tunnel(tw, tun, link, &addrs, wait);
            let (p4, p6) = nets[1 - i];
            route_through(tw, &tun.host, p4, tun);
            route_through(tw, &tun.host, p6, tun);
        }
        Ok(())
    }
}
