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

impl VxlanLwtTunnelRecipe {
    fn lwt(&self) -> Lwt {
        lwt::vxlan_lwt(&self.reqs)
    }
}

impl Recipe for VxlanLwtTunnelRecipe {
    const NAME: &'static str = "VxlanLwtTunnelRecipe";
    const DOC: &'static str =
        "ping and flows through VXLAN routes (lightweight tunnel), replies checked on the underlay";

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

impl EnrtRecipe for VxlanLwtTunnelRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.0.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let link = Link::Vxlan {
            parent: None,
            opts: VxlanOptions {
                external: true,
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
            .packet_assert(&self.lwt(), LwtKind::Vxlan, config, ping)
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        lwt::pause_offload_subconfigs(&self.lwt(), &self.offload_combinations, &self.hw)
    }
}
