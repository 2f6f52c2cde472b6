//! VxlanGpeTunnelRecipe (upstream `ENRT/VxlanGpeTunnelRecipe.py`): VxlanLwtTunnelRecipe with
//! VXLAN Generic Protocol Extension devices (`external gpe nolearning`, the kernel's port
//! 4790): the inner packets are IP without an Ethernet header. Ping and flows between the
//! `lo` addresses; each ping watched on host2.eth0, where host2's echo replies must leave as
//! `VXLAN-GPE` with the VNI `tunnel_id`.
//!
//! Deliberate differences: as VxlanLwtTunnelRecipe's (parameters for the dummy addresses and
//! the id, the dummy addresses pinged rather than `lo`'s first live pair, `lo` cleaned up).
//! Upstream's capture keeps every packet from host2's to host1's carrier and its regex does
//! not look at the VNI; ours keeps UDP to port 4790 and requires `vni ID`.

use super::enrt::params::{offload_sets, offload_type, DeviceReqParams};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::lwt::{LwtEnrtParams, LwtKind, LwtV4Params, PauseParams};
use super::typed::OffloadCombination;
use crate::param_set;

param_set! {
    /// VxlanGpeTunnelRecipe's parameters.
    pub struct VxlanGpeTunnelRecipe {
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
    VxlanGpeTunnelRecipe,
    "ping and flows through VXLAN-GPE routes (lightweight tunnel), replies checked on the underlay",
    LwtKind::VxlanGpe,
    { gpe: true, learning: Some(false), }
);
