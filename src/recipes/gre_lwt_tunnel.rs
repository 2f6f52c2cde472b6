//! GreLwtTunnelRecipe (upstream `ENRT/GreLwtTunnelRecipe.py`): a metadata-collecting
//! (`external`) GRE device per host (kind `gre`, also over an IPv6 carrier, as upstream),
//! MTU 1400; the tunnelled addresses on `lo`, reached through routes that carry the
//! encapsulation (`encap ip|ip6 id ID dst PEER`, see [`super::lwt`]). Ping and flows between
//! the `lo` addresses; each ping watched on host2.eth0: GRE from host1's carrier carrying the
//! echo requests. As upstream's, the routes' `id` puts no key in the GRE header (no `key`
//! flag), so `tunnel_id` changes nothing on the wire here.
//!
//! Deliberate differences: the dummy addresses and the id are parameters (see
//! [`super::lwt`]). Upstream pings the first pair of `lo`'s live addresses, which may be
//! 127.0.0.1 and the peer's 127.0.0.1 (that ping never crosses the tunnel, catalogue §6): we
//! ping the dummy addresses, which is what upstream means; the `lo` addresses are deleted at
//! the end.

use super::common::config::Link;
use super::context::Dev;
use super::enrt::params::{offload_sets, offload_type, DeviceReqParams};
use super::enrt::SubConfigs;
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::lwt::{self, DummiesOn, Lwt, LwtEnrtParams, LwtKind, LwtParams, PauseParams};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use crate::param_set;
use crate::protocol::{GreOptions, LinkSpec};

param_set! {
    /// GreLwtTunnelRecipe's parameters.
    pub struct GreLwtTunnelRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        group lwt: LwtParams,
        group base: LwtEnrtParams,
        group reqs: DeviceReqParams,
        group hw: PauseParams,
    }
}

impl GreLwtTunnelRecipe {
    fn lwt(&self) -> Lwt {
        Lwt {
            underlay: simple_network_req(&self.reqs).1,
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre_tunnel")),
            on: DummiesOn::Lo,
            flows: 1,
            geneve_opts: false,
        }
    }
}

super::lwt::lwt_recipe!(
    GreLwtTunnelRecipe,
    "ping and flows through GRE routes (lightweight tunnel), GRE checked on the underlay",
    LwtKind::Gre,
    Link::Tunnel(LinkSpec::Gre(GreOptions {
        external: true,
        ..GreOptions::default()
    })),
    {
        fn sub_configurations(&self) -> SubConfigs<'_> {
            lwt::pause_offload_subconfigs(&self.lwt(), &self.offload_combinations, &self.hw)
        }
    }
);
