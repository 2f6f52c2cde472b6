//! The lightweight-tunnel (LWT) family (upstream `GreLwtTunnelRecipe`,
//! `GeneveLwtTunnelRecipe`, `VxlanLwtTunnelRecipe`, `VxlanGpeTunnelRecipe`): a
//! metadata-collecting (`external`) tunnel device per host, addresses of the tunnelled
//! networks ("dummy" addresses) on `lo` or on the tunnel device, and per peer address a route
//! through the tunnel whose encapsulation the route itself carries
//! (`ip route add PEER encap ip|ip6 id ID dst PEER_CARRIER dev TUN`).
//!
//! ```text
//!   host1.eth0 (.1 | ::1) ════ net_ipv4 | net_ipv6 ════ (.2 | ::2) host2.eth0
//!   host1.lo / tunnel: dummy1_ipv4 .N/32,             host2.lo / tunnel: dummy2_ipv4 .N/32,
//!                      dummy1_ipv6 ::N/128                               dummy2_ipv6 ::N/128
//!   host1: route dummy2 encap id tunnel_id dst .2     host2: route dummy1 encap id
//!                                                     tunnel_id_host2 dst .1
//! ```
//!
//! Upstream hard-codes the dummy addresses (172.16.10.N/32 and fc00:a::N/128 on host1,
//! 172.16.20.N/32 and fc00:b::N/128 on host2) and the tunnel id (1234; GeneveLwt: the flow
//! number); here they are the parameters `dummy1_ipv4`, `dummy2_ipv4`, `dummy1_ipv6`,
//! `dummy2_ipv6` (networks; flow N gets host N of each) and `tunnel_id` with
//! `tunnel_id_host2` (host2's routes; default: `tunnel_id`), upstream's values as defaults.
//! Addresses added to `lo` are deleted again when the configuration is taken down (upstream
//! leaves them on the machine).

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError};
use super::enrt::params::{BaremetalEnrtParams, DeviceReqParams};
use super::enrt::SubConfigs;
use super::reqs::simple_network_req;
use super::tunnel::MtuPauseParams;
use super::typed::{str_tuple, IfAddr, IpVersion, OffloadCombination};
use crate::protocol::{CaptureFilter, GeneveOpt, RouteEncap, RouteSpec};
use crate::schema::{ParamType, TWO_HOSTS};
use std::net::IpAddr;

/// Upstream's MTU of the LWT tunnel devices.
pub const TUNNEL_MTU: u32 = 1400;
/// Largest tunnel id: the 24-bit VNI of VXLAN and Geneve (also the bound for GRE's key).
pub const MAX_TUNNEL_ID: u32 = (1 << 24) - 1;

crate::group_variant! {
    /// BaremetalEnrtRecipe's parameters as the LWT recipes declare them: `ip_versions`
    /// defaults to ("ipv4",) (upstream: "ping over IPv6 does not work yet").
    pub struct LwtEnrtParams(BaremetalEnrtParams) {
        without: [],
        adjust: |s| {
            if s.name == "ip_versions" {
                s.default = Some(str_tuple(&["ipv4"]));
            }
        },
    }
}

crate::group_variant! {
    /// PauseFramesHWConfigMixin alone (GreLwt, VxlanLwt, VxlanGpe, L2TP): `rx_pause_frames`
    /// and `tx_pause_frames`.
    pub struct PauseParams(MtuPauseParams) {
        without: ["mtu"],
        adjust: |_| {},
    }
}

crate::param_set! {
    /// The LWT recipes' underlay, dummy addresses and tunnel ids.
    pub struct LwtParams {
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
        param dummy1_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "172.16.10.0/24",
            "host1's tunnelled IPv4 addresses: flow N gets host N of it as a /32",
        ),
        param dummy2_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "172.16.20.0/24",
            "host2's tunnelled IPv4 addresses: flow N gets host N of it as a /32",
        ),
        param dummy1_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:a::/64",
            "host1's tunnelled IPv6 addresses: flow N gets host N of it as a /128",
        ),
        param dummy2_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:b::/64",
            "host2's tunnelled IPv6 addresses: flow N gets host N of it as a /128",
        ),
        param tunnel_id: u32 = dflt(
            Int,
            1234i64,
            "tunnel id of host1's encap routes (VNI, GRE key); packet asserts expect it",
        )
        .range(0.0, MAX_TUNNEL_ID as f64),
        param tunnel_id_host2: Option<u32> = opt(
            Int,
            "tunnel id of host2's encap routes (default: tunnel_id; another value breaks the tunnel on purpose)",
        )
        .range(0.0, MAX_TUNNEL_ID as f64),
    }
}

/// The names of the [`LwtParams`] upstream does not have.
pub const ADDED: [&str; 6] = [
    "dummy1_ipv4",
    "dummy2_ipv4",
    "dummy1_ipv6",
    "dummy2_ipv6",
    "tunnel_id",
    "tunnel_id_host2",
];

crate::group_variant! {
    /// [`LwtParams`] of the VXLAN recipes: upstream allows only an IPv4 carrier.
    pub struct LwtV4Params(LwtParams) {
        without: [],
        adjust: |s| {
            if s.name == "carrier_ipversion" {
                s.ty = ParamType::Choice(vec!["ipv4"]);
                s.doc = "family of the underlay (required: ipv4 only)";
            }
        },
    }
}

crate::group_variant! {
    /// [`LwtParams`] of GeneveLwt: flow N (from 0) uses tunnel id `tunnel_id + N`, so
    /// upstream's ids (the flow numbers) are the default 0's.
    pub struct LwtFlowParams(LwtParams) {
        without: [],
        adjust: |s| match s.name {
            "tunnel_id" => {
                s.default = Some(crate::params::Value::Int(0));
                s.doc = "tunnel id (VNI) of host1's first flow; flow N uses tunnel_id + N";
            }
            "tunnel_id_host2" => {
                s.doc = "tunnel id of host2's first flow (default: tunnel_id)";
            }
            _ => {}
        },
    }
}

/// Where the dummy addresses go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DummiesOn {
    /// Each host's `lo`, per host before its tunnel is brought up (GreLwt, VxlanLwt,
    /// VxlanGpe); deleted again at the end.
    Lo,
    /// The tunnel devices, all at once after the routes (GeneveLwt).
    Tunnel,
}

/// One LWT set-up: the devices, and what its encap routes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lwt {
    /// host1.eth0, host2.eth0.
    pub underlay: [Dev; 2],
    /// The tunnel devices.
    pub tunnels: [Dev; 2],
    pub on: DummiesOn,
    /// Encap routes per host (flows): 1, or GeneveLwt's `flow_count`.
    pub flows: u32,
    /// GeneveLwt's `geneve_opts`: each route carries option class 0x102, type 0x80, data
    /// `XXXXYYYY` with both halves the flow number.
    pub geneve_opts: bool,
}

impl Lwt {
    /// The devices the dummy addresses are on (ping and perf endpoints).
    pub fn endpoints(&self) -> [Dev; 2] {
        match self.on {
            DummiesOn::Lo => ["host1", "host2"].map(|h| Dev::new(h, super::context::LOOPBACK)),
            DummiesOn::Tunnel => self.tunnels.clone(),
        }
    }
}

impl LwtParams {
    /// [`super::tunnel::require_carrier`] of `carrier_ipversion`.
    pub fn require_carrier(&self) -> Result<IpVersion, RecipeError> {
        super::tunnel::require_carrier(self.carrier_ipversion)
    }

    fn carrier_v6(&self) -> bool {
        self.carrier_ipversion == Some(IpVersion::Ipv6)
    }

    fn underlay_net(&self) -> ipnet::IpNet {
        if self.carrier_v6() {
            self.net_ipv6.into()
        } else {
            self.net_ipv4.into()
        }
    }

    /// The carrier addresses of host1 and host2.
    pub fn carriers(&self) -> Result<[IpAddr; 2], RecipeError> {
        let net = self.underlay_net();
        Ok([nth_address(net, 1)?.addr, nth_address(net, 2)?.addr])
    }

    /// The tunnel id of host `i`'s (0: host1) routes of flow `flow`.
    pub fn id(&self, i: usize, flow: u32) -> Result<u32, RecipeError> {
        let base = if i == 0 {
            self.tunnel_id
        } else {
            self.tunnel_id_host2.unwrap_or(self.tunnel_id)
        };
        base.checked_add(flow)
            .filter(|id| *id <= MAX_TUNNEL_ID)
            .ok_or_else(|| {
                RecipeError::Param(format!(
                    "tunnel id {base} + flow {flow} is above {MAX_TUNNEL_ID}"
                ))
            })
    }

    /// Host `i`'s dummy addresses of flow `flow` (IPv4 /32, IPv6 /128).
    pub fn dummies(&self, i: usize, flow: u32) -> Result<[IfAddr; 2], RecipeError> {
        let (n4, n6): (ipnet::IpNet, ipnet::IpNet) = if i == 0 {
            (self.dummy1_ipv4.into(), self.dummy1_ipv6.into())
        } else {
            (self.dummy2_ipv4.into(), self.dummy2_ipv6.into())
        };
        let n = u128::from(flow) + 1;
        let host = |net: ipnet::IpNet, prefix| {
            nth_address(net, n).map(|a| IfAddr {
                addr: a.addr,
                prefix,
            })
        };
        Ok([host(n4, 32)?, host(n6, 128)?])
    }

    /// The encap route of host `i` to the peer's address `peer` of flow `flow`.
    fn encap_route(
        &self,
        lwt: &Lwt,
        i: usize,
        flow: u32,
        peer: IfAddr,
    ) -> Result<RouteSpec, RecipeError> {
        let carriers = self.carriers()?;
        let geneve_opt = lwt.geneve_opts.then(|| {
            let half = (flow & 0xffff) as u16;
            let mut data = half.to_be_bytes().to_vec();
            data.extend(half.to_be_bytes());
            GeneveOpt {
                class: 0x102,
                kind: 0x80,
                data,
            }
        });
        Ok(RouteSpec {
            dst: peer.addr.to_string(),
            encap: Some(Box::new(RouteEncap {
                id: u64::from(self.id(i, flow)?),
                dst: carriers[1 - i],
                src: None,
                ttl: None,
                tos: None,
                geneve_opt,
            })),
            ..RouteSpec::default()
        })
    }

    /// The whole test-wide configuration: the underlay (one address of the carrier family
    /// per eth0, up), the tunnels (`links`, MTU 1400, up), the dummy addresses and the encap
    /// routes in upstream's order, then the tentative-address wait.
    pub fn configure(&self, lwt: &Lwt, links: [Link; 2]) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let net = self.underlay_net();
        super::tunnel::configure_underlay(&mut tw, &lwt.underlay, &[net], false)?;
        let ends = lwt.endpoints();
        for (i, (tun, link)) in lwt.tunnels.iter().zip(links).enumerate() {
            tw.create(tun, link);
            if lwt.on == DummiesOn::Lo {
                for a in self.dummies(i, 0)? {
                    tw.address_undone(&ends[i], a);
                }
            }
            tw.mtu(tun, TUNNEL_MTU).up(tun);
        }
        for flow in 0..lwt.flows {
            let d = [self.dummies(0, flow)?, self.dummies(1, flow)?];
            // Upstream's order: host1's IPv4 route, host2's, host1's IPv6 route, host2's.
            for fam in [0, 1] {
                for i in 0..2 {
                    let r = self.encap_route(lwt, i, flow, d[1 - i][fam])?;
                    tw.route_spec(&lwt.tunnels[i].host, r, Some(&lwt.tunnels[i]));
                }
            }
        }
        if lwt.on == DummiesOn::Tunnel {
            for (i, tun) in lwt.tunnels.iter().enumerate() {
                let mut all = Vec::new();
                for fam in [0, 1] {
                    for flow in 0..lwt.flows {
                        all.push(self.dummies(i, flow)?[fam]);
                    }
                }
                tw.addresses(tun, &all);
            }
        }
        tw.wait_tentative();
        Ok(tw)
    }

    /// The flow of a ping between dummy addresses (GeneveLwt's tunnel-id map).
    fn flow_of(&self, lwt: &Lwt, src: IpAddr) -> Option<(usize, u32)> {
        (0..lwt.flows).find_map(|f| {
            (0..2).find_map(|i| {
                self.dummies(i, f)
                    .ok()
                    .filter(|d| d.iter().any(|a| a.addr == src))
                    .map(|_| (i, f))
            })
        })
    }

    /// The packet assert of one ping through an LWT: on the ping destination's eth0.
    ///
    /// * GRE: the echo requests from the client's carrier in `GREv0` (the route's id is no
    ///   GRE key: upstream's routes set no `key` flag);
    /// * Geneve: the echo requests over UDP 6081 with `vni 0xID` (and an option with
    ///   `geneve_opts`);
    /// * VXLAN and VXLAN-GPE: the destination's echo replies to the client's carrier (UDP 8472,
    ///   which tcpdump shows as OTV, `instance ID`; GPE: 4790, `VXLAN-GPE`, `vni ID`).
    ///
    /// ID is the id the flow's packets must carry: `tunnel_id` (+ the flow number).
    pub fn packet_assert(
        &self,
        lwt: &Lwt,
        kind: LwtKind,
        config: &Configured,
        ping: &PingConf,
    ) -> Option<PacketAssertConf> {
        let v6 = self.carrier_v6();
        let fam = Some(if v6 { IpVersion::Ipv6 } else { IpVersion::Ipv4 });
        let first = |d: &Dev| config.ips(d, fam).first().map(|a| a.addr);
        let (from, to) = if ping.client == lwt.underlay[1].host {
            (&lwt.underlay[1], &lwt.underlay[0])
        } else {
            (&lwt.underlay[0], &lwt.underlay[1])
        };
        let (c_from, c_to) = (first(from)?, first(to)?);
        let (_, flow) = self.flow_of(lwt, ping.src.addr)?;
        let id = self.id(0, flow).ok()?;
        let (i1, i2) = (ping.src.addr, ping.dst.addr);
        let inner6 = i2.is_ipv6();
        let request = if inner6 {
            format!("IP6 {i1} > {i2}: ICMP6, echo request")
        } else {
            format!("IP {i1} > {i2}: ICMP echo request")
        };
        let reply = if inner6 {
            format!("IP6 {i2} > {i1}: ICMP6, echo reply")
        } else {
            format!("IP {i2} > {i1}: ICMP echo reply")
        };
        let (filter, grep_for) = match kind {
            LwtKind::Gre => (
                CaptureFilter {
                    proto: Some(47),
                    src: Some(c_from),
                    dst: Some(c_to),
                    udp_dport: None,
                },
                // `id` sets no GRE key (the route has no `key` flag, as upstream's).
                vec![format!("{c_from} > {c_to}: GREv0"), request],
            ),
            LwtKind::Geneve => {
                let vni = if lwt.geneve_opts {
                    format!("vni {id:#x}, options [")
                } else {
                    format!("vni {id:#x}: ")
                };
                let inner = if inner6 {
                    format!("IP6 {i1} > {i2}: ICMP6")
                } else {
                    format!("IP {i1} > {i2}: ICMP")
                };
                (
                    udp(c_from, c_to, GENEVE_PORT),
                    vec![
                        format!("{c_from}."),
                        format!(" > {c_to}.{GENEVE_PORT}: Geneve"),
                        vni,
                        inner,
                    ],
                )
            }
            LwtKind::Vxlan => (
                udp(c_to, c_from, VXLAN_PORT),
                vec![
                    format!("{c_to}."),
                    format!(" > {c_from}.{VXLAN_PORT}: OTV"),
                    format!("instance {id} "),
                    reply,
                ],
            ),
            LwtKind::VxlanGpe => (
                udp(c_to, c_from, VXLAN_GPE_PORT),
                vec![
                    format!("{c_to}."),
                    format!(" > {c_from}.{VXLAN_GPE_PORT}: VXLAN-GPE"),
                    format!("vni {id}: "),
                    reply,
                ],
            ),
        };
        Some(PacketAssertConf {
            dev: to.clone(),
            filter,
            grep_for,
            p_min: u64::from(ping.count),
            p_max: None,
        })
    }
}

/// The kernel's default UDP ports (upstream sets none).
pub const GENEVE_PORT: u16 = 6081;
pub const VXLAN_PORT: u16 = 8472;
pub const VXLAN_GPE_PORT: u16 = 4790;

fn udp(src: IpAddr, dst: IpAddr, port: u16) -> CaptureFilter {
    CaptureFilter {
        proto: Some(17),
        src: Some(src),
        dst: Some(dst),
        udp_dport: Some(port),
    }
}

/// The encapsulation of an LWT recipe, for its packet assert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LwtKind {
    Gre,
    Geneve,
    Vxlan,
    VxlanGpe,
}

/// The devices of a VXLAN LWT recipe (VxlanLwt, VxlanGpe): `vxlan_tunnel`, dummies on `lo`.
pub fn vxlan_lwt(reqs: &DeviceReqParams) -> Lwt {
    Lwt {
        underlay: simple_network_req(reqs).1,
        tunnels: ["host1", "host2"].map(|h| Dev::new(h, "vxlan_tunnel")),
        on: DummiesOn::Lo,
        flows: 1,
        geneve_opts: false,
    }
}

/// The sub-configurations of PauseFramesHWConfigMixin + OffloadSubConfigMixin (GreLwt,
/// VxlanLwt, VxlanGpe): offloads and pause frames on the eth0 pair.
pub fn pause_offload_subconfigs<'a>(
    lwt: &Lwt,
    offloads: &'a [OffloadCombination],
    pause: &'a PauseParams,
) -> SubConfigs<'a> {
    SubConfigs {
        offloads: Some((offloads, lwt.underlay.to_vec())),
        hw: Some(pause.0.hw_config(&[], &lwt.underlay)),
    }
}

impl AsRef<LwtParams> for LwtParams {
    fn as_ref(&self) -> &LwtParams {
        self
    }
}

impl AsRef<LwtParams> for LwtV4Params {
    fn as_ref(&self) -> &LwtParams {
        &self.0
    }
}

impl AsRef<LwtParams> for LwtFlowParams {
    fn as_ref(&self) -> &LwtParams {
        &self.0
    }
}

impl LwtEnrtParams {
    /// The base's view of the parameters.
    pub fn view(&self) -> super::enrt::params::EnrtBase<'_> {
        self.0.view()
    }
}

/// The `Recipe` and `EnrtRecipe` glue every LWT recipe shares (`tunnel_recipe!`
/// with the LWT parts). `$name` has the groups `lwt` ([`LwtParams`] or a variant of it),
/// `base` ([`LwtEnrtParams`]) and `reqs`, and an inherent `fn lwt(&self) -> Lwt`; its tunnel
/// devices are `$link` (the same on both hosts), its packet asserts those of `$kind`; the
/// test fails before any configuration without `carrier_ipversion`. The recipe's own
/// `EnrtRecipe` methods follow in braces.
macro_rules! lwt_recipe {
    ($name:ident, $doc:literal, $kind:expr, $link:expr, { $($enrt:tt)* }) => {
        impl $name {
            fn check(&self) -> Result<(), $crate::recipes::context::RecipeError> {
                AsRef::<$crate::recipes::lwt::LwtParams>::as_ref(&self.lwt)
                    .require_carrier()
                    .map(drop)
            }
        }

        $crate::recipes::tunnel::tunnel_recipe!(
            $name,
            $doc,
            |r| $crate::recipes::reqs::simple_network_req(r).0,
            check,
            {
                fn test_wide_configuration(
                    &self,
                ) -> Result<
                    $crate::recipes::common::config::TestWide,
                    $crate::recipes::context::RecipeError,
                > {
                    let link: $crate::recipes::common::config::Link = $link;
                    AsRef::<$crate::recipes::lwt::LwtParams>::as_ref(&self.lwt)
                        .configure(&self.lwt(), [link.clone(), link])
                }

                fn pair(
                    &self,
                ) -> Option<($crate::recipes::context::Dev, $crate::recipes::context::Dev)> {
                    let [a, b] = self.lwt().endpoints();
                    Some((a, b))
                }

                fn packet_assert(
                    &self,
                    config: &$crate::recipes::common::config::Configured,
                    ping: &$crate::recipes::common::ping::PingConf,
                ) -> Option<$crate::recipes::common::packet_assert::PacketAssertConf> {
                    AsRef::<$crate::recipes::lwt::LwtParams>::as_ref(&self.lwt)
                        .packet_assert(&self.lwt(), $kind, config, ping)
                }

                $($enrt)*
            }
        );
    };
}
pub(crate) use lwt_recipe;

/// `lwt_recipe!` of the VXLAN LWT recipes (VxlanLwt, VxlanGpe): [`vxlan_lwt`]'s devices,
/// VXLAN devices `external` with `$opts` (further [`crate::protocol::VxlanOptions`]), and
/// PauseFramesHWConfigMixin + OffloadSubConfigMixin's sub-configurations.
macro_rules! vxlan_lwt_recipe {
    ($name:ident, $doc:literal, $kind:expr, { $($opts:tt)* }) => {
        impl $name {
            fn lwt(&self) -> $crate::recipes::lwt::Lwt {
                $crate::recipes::lwt::vxlan_lwt(&self.reqs)
            }
        }

        $crate::recipes::lwt::lwt_recipe!(
            $name,
            $doc,
            $kind,
            $crate::recipes::common::config::Link::Vxlan {
                parent: None,
                opts: $crate::protocol::VxlanOptions {
                    external: true,
                    $($opts)*
                    ..$crate::protocol::VxlanOptions::default()
                },
            },
            {
                fn sub_configurations(&self) -> $crate::recipes::enrt::SubConfigs<'_> {
                    $crate::recipes::lwt::pause_offload_subconfigs(
                        &self.lwt(),
                        &self.offload_combinations,
                        &self.hw,
                    )
                }
            }
        );
    };
}
pub(crate) use vxlan_lwt_recipe;
