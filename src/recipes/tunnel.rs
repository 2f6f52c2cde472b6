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

/// The specs of CommonHwParams named in `names`.
fn hw_specs(names: &[&str]) -> Vec<crate::schema::ParamSpec> {
    CommonHwParams::specs()
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .map(|mut s| {
            if s.name == "mtu" {
                s.doc = "MTU set on the tunnel devices";
            }
            s
        })
        .collect()
}

/// CommonHwParams with only `mtu` (when `with_mtu`) and the pause frames read from `p`.
fn hw_subset(
    p: &crate::schema::ResolvedParams,
    with_mtu: bool,
) -> Result<CommonHwParams, crate::schema::SchemaError> {
    use super::typed::FromParam;
    let get = |name: &str| p.get(name);
    fn ty(name: &'static str) -> impl Fn(String) -> crate::schema::SchemaError {
        move |message| crate::schema::SchemaError::Type {
            name: name.to_string(),
            message,
        }
    }
    Ok(CommonHwParams {
        mtu: if with_mtu {
            FromParam::from_param(get("mtu")).map_err(ty("mtu"))?
        } else {
            None
        },
        rx_pause_frames: FromParam::from_param(get("rx_pause_frames"))
            .map_err(ty("rx_pause_frames"))?,
        tx_pause_frames: FromParam::from_param(get("tx_pause_frames"))
            .map_err(ty("tx_pause_frames"))?,
        dev_intr_cpu: None,
        coalescing_settings: Default::default(),
    })
}

impl ParamSet for MtuPauseParams {
    fn specs() -> Vec<crate::schema::ParamSpec> {
        hw_specs(&MTU_PAUSE)
    }
    fn from_resolved(
        p: &crate::schema::ResolvedParams,
    ) -> Result<Self, crate::schema::SchemaError> {
        Ok(MtuPauseParams(hw_subset(p, true)?))
    }
}

/// PauseFramesHWConfigMixin alone (VxlanNetnsTunnelRecipe): `rx_pause_frames` and
/// `tx_pause_frames`, no MTU.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseParams(pub CommonHwParams);

impl ParamSet for PauseParams {
    fn specs() -> Vec<crate::schema::ParamSpec> {
        hw_specs(&MTU_PAUSE[1..])
    }
    fn from_resolved(
        p: &crate::schema::ResolvedParams,
    ) -> Result<Self, crate::schema::SchemaError> {
        Ok(PauseParams(hw_subset(p, false)?))
    }
}

impl PauseParams {
    /// Pause frames on `pause_devs`, nothing else.
    pub fn hw_config(&self, pause_devs: &[Dev]) -> HwConfig<'_> {
        HwConfig {
            params: &self.0,
            mtu_devs: Vec::new(),
            pause_frames_devs: pause_devs.to_vec(),
            dev_interrupt_devs: Vec::new(),
            parallel_stream_qdisc_devs: Vec::new(),
        }
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

crate::param_set! {
    /// The GRE key of the GRE tunnel recipes (upstream sets none): with `gre_key` set, each
    /// tunnel gets it as input and output key (`ikey`/`okey`); `gre_key_host2` gives host2's
    /// tunnel another one (interop or mismatch tests: different keys must lose every ping).
    pub struct GreKeyParams {
        param gre_key: Option<u32> = opt(
            Int,
            "GRE key (ikey and okey) of both tunnels; unset: no key, as upstream",
        )
        .range(0.0, 4_294_967_295.0),
        param gre_key_host2: Option<u32> = opt(
            Int,
            "GRE key (ikey and okey) of host2's tunnel; unset: the same as gre_key",
        )
        .range(0.0, 4_294_967_295.0),
    }
}

/// The names of [`GreKeyParams`] (parameters upstream does not have).
pub const GRE_KEY_PARAMS: [&str; 2] = ["gre_key", "gre_key_host2"];

/// The encapsulation of the GRE tunnel recipes: GRE (IP protocol 47) over IPv4; over IPv6 the
/// kernel may put a destination-options header first, so no protocol filter.
pub fn gre_encap(underlay_v6: bool) -> Encap {
    Encap {
        proto: (!underlay_v6).then_some(47),
        udp_dport: None,
        outer: "GREv0",
        then: None,
    }
}

impl GreKeyParams {
    /// The keys of host1's and host2's tunnel.
    pub fn keys(&self) -> [Option<u32>; 2] {
        [self.gre_key, self.gre_key_host2.or(self.gre_key)]
    }

    /// Upstream's GRE tunnel block (GreDevice(local, remote) on each host between the
    /// underlay's `.1` and `.2` of `net`, up, then [`TunnelNetsParams::configure`]), with
    /// this key on each end; `v6`: ip6gre.
    pub fn configure(
        &self,
        tw: &mut TestWide,
        net: ipnet::IpNet,
        tunnels: &[Dev; 2],
        nets: &TunnelNetsParams,
        wait: bool,
    ) -> Result<(), RecipeError> {
        let ip = |n| nth_address(net, n).map(|a| a.addr);
        let [k1, k2] = self.keys();
        let gre = |l, r, key| {
            let o = crate::protocol::GreOptions {
                local: Some(l),
                remote: Some(r),
                key,
                ..Default::default()
            };
            Link::Tunnel(match net {
                ipnet::IpNet::V4(_) => crate::protocol::LinkSpec::Gre(o),
                ipnet::IpNet::V6(_) => crate::protocol::LinkSpec::Ip6Gre(o),
            })
        };
        let links = [gre(ip(1)?, ip(2)?, k1), gre(ip(2)?, ip(1)?, k2)];
        nets.configure(tw, tunnels, links, wait)
    }

    /// [`encap_assert`] of a GRE recipe, requiring the key the destination's tunnel accepts
    /// (`key=0x..` after `GREv0`) when it has one: with mismatched keys nothing matches.
    pub fn packet_assert<R: TunnelRecipe + ?Sized>(
        &self,
        r: &R,
        config: &Configured,
        ping: &PingConf,
        underlay_v6: bool,
    ) -> Option<PacketAssertConf> {
        let mut conf = encap_assert(r, config, ping, underlay_v6)?;
        let dst_host = conf.dev.host.split('.').next().unwrap_or_default();
        let key = self.keys()[usize::from(dst_host == "host2")];
        if let Some(k) = key {
            let at = conf.grep_for.len().saturating_sub(1);
            conf.grep_for.insert(at, format!("key=0x{k:x},"));
        }
        Some(conf)
    }
}

/// The underlay of the netns tunnel recipes (upstream VxlanNetnsTunnelRecipe and
/// Ip6GreNetnsTunnelRecipe): per host a namespace `hostN.newns` (agent name `hostN-net1`), a
/// veth pair whose `veth1` moves into it, a bridge `bridge` with ports `veth0` and `eth0`; up
/// and tracked without addresses: both veth0, both bridges, both eth0; then each `veth1` gets
/// `.1`/`.2` (`::1`/`::2`) of `net` and goes up. Returns the two `veth1` in their namespaces.
pub fn netns_underlay(tw: &mut TestWide, net: ipnet::IpNet) -> Result<[Dev; 2], RecipeError> {
    let hosts = ["host1", "host2"];
    let dev = |h: &str, id: &str| Dev::new(h, id);
    for h in hosts {
        let (veth0, veth1, bridge) = (dev(h, "veth0"), dev(h, "veth1"), dev(h, "bridge"));
        tw.netns(h, "newns", &format!("{h}-net1"))
            .create(
                &veth0,
                Link::Veth {
                    peer: veth1.clone(),
                },
            )
            .move_to(&veth1, &format!("{h}.newns"))
            .create(&bridge, Link::Bridge)
            .enslave(&veth0, &bridge)
            .enslave(&dev(h, "eth0"), &bridge);
    }
    for id in ["veth0", "bridge", "eth0"] {
        for h in hosts {
            let d = dev(h, id);
            tw.up(&d).track(&d);
        }
    }
    let ends = hosts.map(|h| dev(&format!("{h}.newns"), "veth1"));
    for (n, end) in (1..).zip(&ends) {
        tw.address(end, nth_address(net, n)?).up(end);
    }
    for h in hosts {
        tw.up(&dev(h, "veth0"));
    }
    Ok(ends)
}

/// The tunnel devices `id` in the two namespaces of [`netns_underlay`].
pub fn netns_tunnels(id: &str) -> [Dev; 2] {
    ["host1", "host2"].map(|h| Dev::new(&format!("{h}.newns"), id))
}

/// The VXLAN multicast group parameters hold an IPv4 multicast address (upstream `IpParam`
/// with `multicast=True, family=AF_INET`).
pub const MULTICAST_V4: crate::schema::Check = crate::schema::Check {
    what: "an IPv4 multicast address",
    check: |v| match v.as_str().map(str::parse::<std::net::Ipv4Addr>) {
        Some(Ok(a)) if a.is_multicast() => Ok(()),
        Some(Ok(a)) => Err(format!("{a} is not a multicast address (224.0.0.0/4)")),
        _ => Err(format!("{v} is not an IPv4 address")),
    },
};

/// `carrier_ipversion` has no default (GeneveTunnel, L2TPTunnel, the LWT recipes): upstream declares it so and
/// fails when it is read; here the test FAILs before any configuration, naming it.
pub fn require_carrier(carrier: Option<IpVersion>) -> Result<IpVersion, RecipeError> {
    carrier.ok_or_else(|| {
        RecipeError::Param("carrier_ipversion is not set: give 'ipv4' or 'ipv6'".into())
    })
}

/// A group parameter checked by [`MULTICAST_V4`] as an address.
pub fn group_addr(s: &str) -> Result<IpAddr, RecipeError> {
    s.parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|e| RecipeError::Param(format!("vxlan_group_ip {s}: {e}")))
}

/// The `Recipe` and `EnrtRecipe` glue the tunnel recipes (and the LWT and IPsec ones) share:
/// `NAME` (the type's name), `DOC`, the requirements `$req` makes of the `reqs` group (a
/// `fn(&DeviceReqParams) -> Requirements`), `enrt::run` (with `check`, after the type's
/// inherent `fn check(&self) -> Result<(), RecipeError>`), and `base` from the `base` group.
/// With `TunnelRecipe` (or `TunnelRecipe + check`), the ping pair is [`TunnelRecipe::pair`]'s
/// tunnels. The recipe's own
/// `EnrtRecipe` methods follow in braces.
macro_rules! tunnel_recipe {
    ($name:ident, $doc:literal, $req:expr, TunnelRecipe $(+ $check:ident)?, { $($enrt:tt)* }) => {
        $crate::recipes::tunnel::tunnel_recipe!(@glue $name, $doc, $req, [$($check)?], {
            fn pair(
                &self,
            ) -> Option<($crate::recipes::context::Dev, $crate::recipes::context::Dev)> {
                let [a, b] = $crate::recipes::tunnel::TunnelRecipe::pair(self).tunnels;
                Some((a, b))
            }

            $($enrt)*
        });
    };
    ($name:ident, $doc:literal, $req:expr, check, { $($enrt:tt)* }) => {
        $crate::recipes::tunnel::tunnel_recipe!(@glue $name, $doc, $req, [check], { $($enrt)* });
    };
    ($name:ident, $doc:literal, $req:expr, { $($enrt:tt)* }) => {
        $crate::recipes::tunnel::tunnel_recipe!(@glue $name, $doc, $req, [], { $($enrt)* });
    };
    (@glue $name:ident, $doc:literal, $req:expr, [$($check:ident)?], { $($enrt:tt)* }) => {
        impl $crate::recipes::Recipe for $name {
            const NAME: &'static str = stringify!($name);
            const DOC: &'static str = $doc;

            fn requirements(&self) -> $crate::requirements::Requirements {
                let req: fn(
                    &$crate::recipes::enrt::params::DeviceReqParams,
                ) -> $crate::requirements::Requirements = $req;
                req(&self.reqs)
            }

            fn layout() -> $crate::requirements::Requirements {
                let req: fn(
                    &$crate::recipes::enrt::params::DeviceReqParams,
                ) -> $crate::requirements::Requirements = $req;
                req(&$crate::recipes::enrt::params::DeviceReqParams::NONE)
            }

            async fn run(
                &self,
                ctx: &mut $crate::recipes::context::RunContext,
            ) -> Result<(), $crate::recipes::context::RecipeError> {
                $(self.$check()?;)?
                $crate::recipes::enrt::run(self, ctx).await
            }

            fn kernel_modules(&self) -> $crate::recipes::HostModules {
                $crate::recipes::enrt::kernel_modules(self)
            }
        }

        impl $crate::recipes::enrt::EnrtRecipe for $name {
            fn base(&self) -> $crate::recipes::enrt::params::EnrtBase<'_> {
                self.base.view()
            }

            $($enrt)*
        }
    };
}
pub(crate) use tunnel_recipe;

/// A GRE tunnel (`gre_tunnel`, keys from [`GreKeyParams`]) over underlay devices of its own
/// on host1 and host2 (GreTunnelOverVlan, GreTunnelOverMacvlan, GreTunnelOverBond): what
/// differs between them; `gre_over_recipe!` makes the recipe of it.
pub trait GreOver {
    /// The underlay devices' name (on both hosts).
    const UNDERLAY: &'static str;
    /// host1.eth0 and host2.eth0 (the NICs of the requirements): the pause frames' devices.
    fn nics(&self) -> [Dev; 2] {
        ["host1", "host2"].map(|h| Dev::new(h, "eth0"))
    }
    /// The devices of the offload sub-configurations.
    fn offload_devs(&self) -> [Dev; 2] {
        self.nics()
    }
    /// Create the underlay devices `underlay`, address them from `net` (host1 `.1`, host2
    /// `.2`) and bring them (and what they sit on) up, in upstream's order.
    fn configure_underlay(
        &self,
        tw: &mut TestWide,
        underlay: &[Dev; 2],
        net: ipnet::IpNet,
    ) -> Result<(), RecipeError>;
    /// Upstream's description lines of host `host`'s underlay device.
    fn describe_underlay(&self, host: &str) -> Vec<String>;
}

/// [`GreOver::configure_underlay`] of a device stacked on each eth0 (VLAN, macvlan): per
/// host, `link(tw, nic)` (which may configure the host first) created as the underlay
/// device; then per host its address from `net` (host1 `.1`, host2 `.2`), eth0 and it up.
pub fn stacked_underlay(
    tw: &mut TestWide,
    nics: &[Dev; 2],
    underlay: &[Dev; 2],
    net: ipnet::IpNet,
    link: impl Fn(&mut TestWide, &Dev) -> Link,
) -> Result<(), RecipeError> {
    for (nic, dev) in nics.iter().zip(underlay) {
        let l = link(tw, nic);
        tw.create(dev, l);
    }
    for (n, (nic, dev)) in (1..).zip(nics.iter().zip(underlay)) {
        tw.address(dev, nth_address(net, n)?);
        tw.up(nic).up(dev);
    }
    Ok(())
}

/// The whole recipe of a [`GreOver`] type `$name` with groups `base`, `reqs`, `hw`
/// (`MtuPauseParams`), `tunnel`, `gre` and the parameters `net_ipv4` and
/// `offload_combinations`: the underlay, then upstream's GRE block (no wait) and the
/// tentative-address wait; GRE checked on the destination's underlay device; offloads on
/// [`GreOver::offload_devs`], MTU on the tunnels, pause frames on [`GreOver::nics`].
macro_rules! gre_over_recipe {
    ($name:ident, $doc:literal, $req:expr) => {
        impl $crate::recipes::tunnel::TunnelRecipe for $name {
            fn pair(&self) -> $crate::recipes::tunnel::TunnelPair {
                use $crate::recipes::context::Dev;
                use $crate::recipes::tunnel::GreOver;
                $crate::recipes::tunnel::TunnelPair {
                    underlay: ["host1", "host2"].map(|h| Dev::new(h, <$name as GreOver>::UNDERLAY)),
                    tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre_tunnel")),
                }
            }
            fn encap(&self, _inner_v6: bool) -> $crate::recipes::tunnel::Encap {
                $crate::recipes::tunnel::gre_encap(false)
            }
        }

        $crate::recipes::tunnel::tunnel_recipe!($name, $doc, $req, TunnelRecipe, {
            fn test_wide_configuration(
                &self,
            ) -> Result<
                $crate::recipes::common::config::TestWide,
                $crate::recipes::context::RecipeError,
            > {
                let mut tw = $crate::recipes::common::config::TestWide::new();
                let $crate::recipes::tunnel::TunnelPair { underlay, tunnels } =
                    $crate::recipes::tunnel::TunnelRecipe::pair(self);
                let net: ipnet::IpNet = self.net_ipv4.into();
                $crate::recipes::tunnel::GreOver::configure_underlay(
                    self, &mut tw, &underlay, net,
                )?;
                self.gre
                    .configure(&mut tw, net, &tunnels, &self.tunnel, false)?;
                tw.wait_tentative();
                Ok(tw)
            }

            fn test_wide_description(
                &self,
                config: &$crate::recipes::common::config::Configured,
            ) -> Vec<String> {
                let mut desc = config.describe();
                for h in ["host1", "host2"] {
                    desc.extend($crate::recipes::tunnel::GreOver::describe_underlay(self, h));
                }
                desc
            }

            fn packet_assert(
                &self,
                config: &$crate::recipes::common::config::Configured,
                ping: &$crate::recipes::common::ping::PingConf,
            ) -> Option<$crate::recipes::common::packet_assert::PacketAssertConf> {
                self.gre.packet_assert(self, config, ping, false)
            }

            fn sub_configurations(&self) -> $crate::recipes::enrt::SubConfigs<'_> {
                use $crate::recipes::tunnel::GreOver;
                let tunnels = $crate::recipes::tunnel::TunnelRecipe::pair(self).tunnels;
                $crate::recipes::enrt::SubConfigs {
                    offloads: Some((&self.offload_combinations, self.offload_devs().to_vec())),
                    hw: Some(self.hw.hw_config(&tunnels, &self.nics())),
                }
            }
        });
    };
}
pub(crate) use gre_over_recipe;
