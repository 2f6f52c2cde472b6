//! L2TPTunnelRecipe (upstream `ENRT/L2TPTunnelRecipe.py`): a static L2TPv3 tunnel (ids 1000,
//! encapsulation `l2tp_encapsulation` ip or udp with ports 5000, over the carrier family
//! `carrier_ipversion`) between host1.eth0 and host2.eth0, one session (ids 2000) with its
//! Ethernet device `l2tp_session1` per host, and a point-to-point IPv4 address on each
//! session device (upstream 10.42.1.1/8 peer 10.42.1.2 and the mirror). Ping and flows
//! between the session devices; each ping watched on host2.eth0: L2TP over IP (protocol 115)
//! or over UDP (port 5000) from host1's carrier.
//!
//! ```text
//!   host1.eth0 (.1 | ::1) ═══ net_ipv4 | net_ipv6 ═══ (.2 | ::2) host2.eth0
//!      tunnel 1000 ⇄ 1000, session 2000 ⇄ 2000 (encap ip | udp 5000 → 5000)
//!   host1.l2tp_session1 l2tp_ipv4+1 peer +2  ⇄  host2.l2tp_session1 l2tp_ipv4+2 peer +1
//! ```
//!
//! Deliberate differences: the session addresses are the parameter `l2tp_ipv4` (default
//! 10.42.1.0/8: host1 gets its address + 1, host2 + 2, with its prefix length, as upstream's
//! 10.42.1.1/8 and 10.42.1.2/8). Upstream tracks them as strings, so `ip_endpoint_pairs`
//! finds no perf endpoints and the recipe measures no flows (a bug, catalogue §2.35); here
//! they are addresses and the flows run between the session devices, as upstream means. The
//! tunnels are made by the agent (`ip l2tp`, deleted with their sessions when the recipe ends,
//! also after a failure; upstream's L2TPManager deletes them in test_wide_deconfiguration).

use super::common::config::{Configured, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError};
use super::enrt::params::{BaremetalEnrtParams, DeviceReqParams};
use super::enrt::SubConfigs;
use super::lwt::PauseParams;
use super::reqs::simple_network_req;
use super::typed::{IfAddr, IpVersion};
use crate::param_set;
use crate::protocol::{CaptureFilter, L2tpEncap, L2tpTunnelSpec};
use crate::schema::TWO_HOSTS;
use std::net::{IpAddr, Ipv4Addr};

/// Upstream's tunnel and session ids and UDP ports.
const TUNNEL_ID: u32 = 1000;
const SESSION_ID: u32 = 2000;
const UDP_PORT: u16 = 5000;

crate::choice_enum! {
    /// `l2tp_encapsulation`.
    pub enum L2tpEncapsulation { Ip = "ip", Udp = "udp" }
}

param_set! {
    /// L2TPTunnelRecipe's parameters.
    pub struct L2TPTunnelRecipe {
        param carrier_ipversion: Option<IpVersion> = opt(
            IpVersion::param_type(),
            "family of the underlay (required: ipv4 or ipv6)",
        ),
        param l2tp_encapsulation: L2tpEncapsulation = mandatory(
            L2tpEncapsulation::param_type(),
            "L2TPv3 encapsulation: ip (protocol 115) or udp (ports 5000)",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.200.0/24",
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
        group hw: PauseParams,
        param l2tp_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "10.42.1.0/8",
            "session addresses: host1 gets this address + 1, host2 + 2, with this prefix length, each the other's peer",
        ),
    }
}

impl L2TPTunnelRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
    fn sessions(&self) -> [Dev; 2] {
        ["host1", "host2"].map(|h| Dev::new(h, "l2tp_session1"))
    }
    fn v6(&self) -> bool {
        self.carrier_ipversion == Some(IpVersion::Ipv6)
    }
    fn carriers(&self) -> Result<[IpAddr; 2], RecipeError> {
        let net: ipnet::IpNet = if self.v6() {
            self.net_ipv6.into()
        } else {
            self.net_ipv4.into()
        };
        let n = |k| super::common::config::nth_address(net, k).map(|a| a.addr);
        Ok([n(1)?, n(2)?])
    }
    /// Session address `k` (1: host1, 2: host2).
    fn session_addr(&self, k: u32) -> Result<IfAddr, RecipeError> {
        let base = u32::from(self.l2tp_ipv4.addr());
        let a = base
            .checked_add(k)
            .map(Ipv4Addr::from)
            .filter(|a| self.l2tp_ipv4.contains(a))
            .ok_or_else(|| {
                RecipeError::Param(format!("l2tp_ipv4 {} has no room for +{k}", self.l2tp_ipv4))
            })?;
        Ok(IfAddr {
            addr: IpAddr::V4(a),
            prefix: self.l2tp_ipv4.prefix_len(),
        })
    }
    fn encap(&self) -> L2tpEncap {
        match self.l2tp_encapsulation {
            L2tpEncapsulation::Ip => L2tpEncap::Ip,
            L2tpEncapsulation::Udp => L2tpEncap::Udp,
        }
    }
}

impl L2TPTunnelRecipe {
    /// [`super::tunnel::require_carrier`].
    fn check(&self) -> Result<(), RecipeError> {
        super::tunnel::require_carrier(self.carrier_ipversion).map(|_| ())
    }
}

super::tunnel::tunnel_recipe!(
    L2TPTunnelRecipe,
    "ping and flows through a static L2TPv3 tunnel (ip or udp), L2TP checked on the underlay",
    |r| simple_network_req(r).0,
    check,
    {
        fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
            let mut tw = TestWide::new();
            let nics = self.nics();
            let c = self.carriers()?;
            for (nic, addr) in nics.iter().zip(c) {
                let prefix = if self.v6() {
                    self.net_ipv6.prefix_len()
                } else {
                    self.net_ipv4.prefix_len()
                };
                tw.address(nic, IfAddr { addr, prefix }).up(nic);
            }
            // Upstream waits for the carriers' tentative addresses before the tunnels.
            tw.wait_tentative();
            let udp = self.encap() == L2tpEncap::Udp;
            for (i, nic) in nics.iter().enumerate() {
                tw.l2tp_tunnel(
                    &nic.host,
                    L2tpTunnelSpec {
                        tunnel_id: TUNNEL_ID,
                        peer_tunnel_id: TUNNEL_ID,
                        encap: self.encap(),
                        local: c[i],
                        remote: c[1 - i],
                        udp_sport: udp.then_some(UDP_PORT),
                        udp_dport: udp.then_some(UDP_PORT),
                    },
                );
            }
            let sessions = self.sessions();
            for s in &sessions {
                tw.l2tp_session(s, TUNNEL_ID, SESSION_ID, SESSION_ID);
            }
            for s in &sessions {
                tw.up(s);
            }
            let (a1, a2) = (self.session_addr(1)?, self.session_addr(2)?);
            tw.peer_address(&sessions[0], a1, a2.addr)
                .peer_address(&sessions[1], a2, a1.addr);
            tw.wait_tentative();
            Ok(tw)
        }

        fn pair(&self) -> Option<(Dev, Dev)> {
            let [a, b] = self.sessions();
            Some((a, b))
        }

        /// Upstream: on the destination's eth0, `ip proto 115` (`ip6 proto 115`) with
        /// `IP c1 > c2: ip-proto-115`, or `udp` with `IP c1.N > c2.N: UDP`.
        fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            let nics = self.nics();
            let fam = Some(if self.v6() {
                IpVersion::Ipv6
            } else {
                IpVersion::Ipv4
            });
            let (from, to) = if ping.client == nics[1].host {
                (&nics[1], &nics[0])
            } else {
                (&nics[0], &nics[1])
            };
            let first = |d: &Dev| config.ips(d, fam).first().map(|a| a.addr);
            let (c1, c2) = (first(from)?, first(to)?);
            let (filter, grep_for) = match self.encap() {
                L2tpEncap::Ip => (
                    CaptureFilter {
                        proto: Some(115),
                        src: Some(c1),
                        dst: Some(c2),
                        udp_dport: None,
                    },
                    vec![format!("{c1} > {c2}:"), "ip-proto-115".to_string()],
                ),
                L2tpEncap::Udp => (
                    CaptureFilter {
                        proto: Some(17),
                        src: Some(c1),
                        dst: Some(c2),
                        udp_dport: Some(UDP_PORT),
                    },
                    vec![
                        format!("{c1}.{UDP_PORT} > {c2}.{UDP_PORT}:"),
                        "UDP".to_string(),
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

        fn sub_configurations(&self) -> SubConfigs<'_> {
            SubConfigs {
                offloads: None,
                hw: Some(self.hw.0.hw_config(&[], &self.nics())),
            }
        }
    }
);
