//! VxlanLwtTunnelRecipe (upstream `ENRT/VxlanLwtTunnelRecipe.py`): a metadata-collecting
//! (`external`) VXLAN device per host, MTU 1400; host1's and host2's tunnelled addresses on
//! `lo`, reached through routes that carry the encapsulation (`encap ip id ID dst PEER`, see
//! [`super::lwt`]); IPv4 carrier only. Ping and flows between the `lo` addresses; each ping
//! watched on host2.eth0, where host2's echo replies must leave VXLAN-encapsulated with the
//! VNI `tunnel_id` (the kernel's port 8472, which tcpdump decodes as OTV).
//!
//! Deliberate differences: the dummy addresses and the id are parameters (see
//! [`super::lwt`]); upstream pings the first pair of `lo`'s live addresses, which may be
//! 127.0.0.1 and the peer's 127.0.0.1 (the ping never crosses the tunnel): we ping the dummy
//! addresses, which is what upstream means; the `lo` addresses are deleted at the end.
//! Upstream filters the capture on the VNI (`udp[11:4] = 1234`); we filter on the UDP port and
//! match tcpdump's `instance ID`.

use super::enrt::params::{offload_sets, offload_type, DeviceReqParams};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::lwt::{LwtEnrtParams, LwtKind, LwtV4Params, PauseParams};
use super::typed::OffloadCombination;
use crate::param_set;

param_set! {
    /// VxlanLwtTunnelRecipe's parameters.
    pub struct VxlanLwtTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        group lwt: LwtV4Params,
        group base: LwtEnrtParams,
        group reqs: DeviceReqParams,
        group hw: PauseParams,
    }
}

super::lwt::vxlan_lwt_recipe!(
    VxlanLwtTunnelRecipe,
    "ping and flows through VXLAN routes (lightweight tunnel), replies checked on the underlay",
    LwtKind::Vxlan,
    {}
);
