//! GeneveLwtTunnelRecipe (upstream `ENRT/GeneveLwtTunnelRecipe.py`): a metadata-collecting
//! (`external`) Geneve device per host, MTU 1400; `flow_count` flows, flow N with host N of
//! each dummy network on the Geneve devices themselves and its own encap routes with tunnel
//! id (VNI) `tunnel_id + N` (see [`super::lwt`]), optionally with a Geneve option
//! (`geneve_opts`: class 0x102, type 0x80, data NNNNNNNN). Ping between the first flow's
//! addresses; flows between flow N's addresses on both hosts (upstream's `zip`), flow N's
//! processes pinned to the next CPUs of `perf_tool_cpu`. Each ping watched on host2.eth0:
//! Geneve from host1's carrier with `vni 0xID` (and its option) carrying the echo requests.
//!
//! Deliberate differences: the dummy addresses are parameters, and so is the first VNI
//! (`tunnel_id`, default 0 as upstream's flow numbers, and `tunnel_id_host2`). Upstream's
//! capture keeps every packet from or to host1's carrier (every IPv6 packet over IPv6); ours
//! keeps UDP to port 6081 from host1's to host2's carrier, with the same matching.

use super::common::config::{Configured, Link};
use super::context::Dev;
use super::enrt::params::{offload_sets, offload_type, CommonHwParams, DeviceReqParams};
use super::enrt::{EndpointPair, HwConfig, IpEndpoint, SubConfigs};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::lwt::{DummiesOn, Lwt, LwtEnrtParams, LwtFlowParams, LwtKind};
use super::reqs::simple_network_req;
use super::typed::{IpVersion, OffloadCombination};
use crate::param_set;
use crate::protocol::{GeneveOptions, LinkSpec};

param_set! {
    /// GeneveLwtTunnelRecipe's parameters.
    pub struct GeneveLwtTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param geneve_opts: bool = dflt(
            Bool,
            false,
            "encap routes carry a Geneve option (class 0x102, type 0x80, data: the flow number twice)",
        ),
        param flow_count: u32 = dflt(
            Int,
            1i64,
            "flows (encap routes and address pairs per host), measured in parallel",
        )
        .range(1.0, 254.0),
        group lwt: LwtFlowParams,
        group base: LwtEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

impl GeneveLwtTunnelRecipe {
    fn lwt(&self) -> Lwt {
        Lwt {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gnv_tunnel")),
            on: DummiesOn::Tunnel,
            flows: self.flow_count,
            geneve_opts: self.geneve_opts,
        }
    }
}

super::lwt::lwt_recipe!(
    GeneveLwtTunnelRecipe,
    "ping and flows through Geneve routes (lightweight tunnel), Geneve checked on the underlay",
    LwtKind::Geneve,
    Link::Tunnel(LinkSpec::Geneve(GeneveOptions {
        external: true,
        ..GeneveOptions::default()
    })),
    {
        /// Upstream's `ip_endpoint_pairs(..., combination_func=zip)`: address N of host1's
        /// tunnel with address N of host2's, IPv4 first.
        fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
            let [a, b] = self.lwt().endpoints();
            let mut pairs = Vec::new();
            for v in [IpVersion::Ipv4, IpVersion::Ipv6] {
                for (x, y) in config
                    .ips(&a, Some(v))
                    .into_iter()
                    .zip(config.ips(&b, Some(v)))
                {
                    let end = |dev: &Dev, addr| IpEndpoint {
                        dev: dev.clone(),
                        addr,
                    };
                    pairs.push((end(&a, x), end(&b, y)));
                }
            }
            vec![pairs]
        }

        fn perf_cpupin_across_pairs(&self) -> bool {
            true
        }

        fn sub_configurations(&self) -> SubConfigs<'_> {
            let underlay = self.lwt().underlay;
            SubConfigs {
                offloads: Some((&self.offload_combinations, underlay.to_vec())),
                hw: Some(HwConfig {
                    parallel_stream_qdisc_devs: Vec::new(),
                    ..HwConfig::on(&self.hw, &underlay)
                }),
            }
        }
    }
);
