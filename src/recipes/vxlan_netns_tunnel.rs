//! VxlanNetnsTunnelRecipe (upstream `ENRT/VxlanNetnsTunnelRecipe.py`): on each host a
//! namespace behind a veth pair bridged with eth0; a multicast VXLAN (VNI `vxlan_id`, group
//! `vxlan_group_ip`, underlay veth1) between the two namespaces; ping and flows between the
//! VXLAN devices. Each ping is watched in host2's namespace on veth1: the VXLAN packets host2
//! sends back to host1 (UDP to the kernel's port 8472, tcpdump's `instance VNI`) carrying the
//! echo replies.
//!
//! ```text
//!   hostN: eth0 ─ bridge ─ veth0 ┄ newns: veth1 (net_ipv4 .N)
//!                                        └ vxlan_tunnel: tunnelN_ipv4 .2, tunnelN_ipv6 ::2,
//!                                          routes to the other host's tunnel networks
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses (as GreTunnelRecipe), the
//! VNI 1234 and the group 239.1.1.1; here they are the parameters `tunnel1_ipv4`,
//! `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6`, `vxlan_id` (`vxlan_id_host2` gives host2
//! another VNI) and `vxlan_group_ip`, upstream's values as defaults. Upstream's capture filter
//! checks the VXLAN flags and VNI in the UDP payload; ours takes UDP to port 8472 from host2's
//! veth1 address to host1's and requires `instance VNI` in tcpdump's line.

use super::common::config::{Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::enrt::SubConfigs;
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::simple_network_req;
use super::tunnel::{self, PauseParams, TunnelNetsParams, MULTICAST_V4};
use super::typed::{IpVersion, OffloadCombination};
use crate::param_set;
use crate::protocol::{CaptureFilter, VxlanOptions};
use crate::schema::TWO_HOSTS;

/// The kernel's VXLAN port (no `dstport` given, as upstream).
const VXLAN_PORT: u16 = 8472;

param_set! {
    /// VxlanNetnsTunnelRecipe's parameters.
    pub struct VxlanNetnsTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.newns.veth1 gets .1, host2.newns.veth1 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: PauseParams,
        group tunnel: TunnelNetsParams,
        param vxlan_id: u32 = dflt(Int, 1234i64, "VNI of both VXLAN devices")
            .range(0.0, 16_777_215.0),
        param vxlan_id_host2: Option<u32> = opt(
            Int,
            "VNI of host2's VXLAN device; unset: the same as vxlan_id",
        )
        .range(0.0, 16_777_215.0),
        param vxlan_group_ip: String = dflt(
            Str,
            "239.1.1.1",
            "IPv4 multicast group of the VXLAN devices",
        )
        .check(MULTICAST_V4),
    }
}

impl VxlanNetnsTunnelRecipe {
    fn vnis(&self) -> [u32; 2] {
        [self.vxlan_id, self.vxlan_id_host2.unwrap_or(self.vxlan_id)]
    }
    fn tunnels() -> [Dev; 2] {
        tunnel::netns_tunnels("vxlan_tunnel")
    }
}

super::tunnel::tunnel_recipe!(
    VxlanNetnsTunnelRecipe,
    "ping and flows through a multicast VXLAN between namespaces of two hosts",
    |r| simple_network_req(r).0,
    {
        fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
            let mut tw = TestWide::new();
            let ends = tunnel::netns_underlay(&mut tw, self.net_ipv4.into())?;
            let group = tunnel::group_addr(&self.vxlan_group_ip)?;
            let links = [0, 1].map(|i| Link::Vxlan {
                parent: Some(ends[i].clone()),
                opts: VxlanOptions {
                    id: self.vnis()[i],
                    group: Some(group),
                    ..VxlanOptions::default()
                },
            });
            self.tunnel
                .configure(&mut tw, &Self::tunnels(), links, false)?;
            tw.wait_tentative();
            Ok(tw)
        }

        fn pair(&self) -> Option<(Dev, Dev)> {
            let [a, b] = Self::tunnels();
            Some((a, b))
        }

        /// Upstream's assert: in the destination's namespace on veth1, the VXLAN packets it sends
        /// back to the client's veth1 with the destination's VNI, carrying the echo replies.
        fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            let ends = tunnel::netns_tunnels("veth1");
            let d = usize::from(ping.dst_host.split('.').next() == Some("host2"));
            let (dst, client) = (&ends[d], &ends[1 - d]);
            let ip = |dev: &Dev| {
                config
                    .ips(dev, Some(IpVersion::Ipv4))
                    .first()
                    .map(|a| a.addr)
            };
            let (c_dst, c_client) = (ip(dst)?, ip(client)?);
            let (i_dst, i_client) = (ping.dst.addr, ping.src.addr);
            let inner = if i_dst.is_ipv6() {
                format!("IP6 {i_dst} > {i_client}: ICMP6, echo reply")
            } else {
                format!("IP {i_dst} > {i_client}: ICMP echo reply")
            };
            Some(PacketAssertConf {
                dev: dst.clone(),
                filter: CaptureFilter {
                    proto: None,
                    src: Some(c_dst),
                    dst: Some(c_client),
                    udp_dport: Some(VXLAN_PORT),
                },
                grep_for: vec![
                    format!("{c_dst}."),
                    format!(" > {c_client}.{VXLAN_PORT}: "),
                    // tcpdump prints the inner packet on the next line (joined with ` | `).
                    format!("instance {} ", self.vnis()[d]),
                    inner,
                ],
                p_min: u64::from(ping.count),
                p_max: None,
            })
        }

        fn sub_configurations(&self) -> SubConfigs<'_> {
            let eth0s = simple_network_req(&self.reqs).1;
            SubConfigs {
                offloads: Some((&self.offload_combinations, eth0s.to_vec())),
                hw: Some(self.hw.hw_config(&eth0s)),
            }
        }
    }
);
