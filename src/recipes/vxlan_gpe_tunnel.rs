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

use super::common::config::{Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe, SubConfigs};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::lwt::{self, Lwt, LwtEnrtParams, LwtKind, LwtV4Params, PauseParams};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::protocol::VxlanOptions;
use crate::requirements::Requirements;

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

impl VxlanGpeTunnelRecipe {
    fn lwt(&self) -> Lwt {
        lwt::vxlan_lwt(&self.reqs)
    }
}

impl Recipe for VxlanGpeTunnelRecipe {
    const NAME: &'static str = "VxlanGpeTunnelRecipe";
    const DOC: &'static str =
        "ping and flows through VXLAN-GPE routes (lightweight tunnel), replies checked on the underlay";

    fn requirements(&self) -> Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        self.lwt.0.require_carrier()?;
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for VxlanGpeTunnelRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.0.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let link = Link::Vxlan {
            parent: None,
            opts: VxlanOptions {
                external: true,
                gpe: true,
                learning: Some(false),
                ..VxlanOptions::default()
            },
        };
        self.lwt.0.configure(&self.lwt(), [link.clone(), link])
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = self.lwt().endpoints();
        Some((a, b))
    }

    fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
        self.lwt
            .0
            .packet_assert(&self.lwt(), LwtKind::VxlanGpe, config, ping)
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        lwt::pause_offload_subconfigs(&self.lwt(), &self.offload_combinations, &self.hw)
    }
}
