//! GreTunnelOverVlanRecipe (upstream `ENRT/GreTunnelOverVlanRecipe.py`): a GRE tunnel between
//! host1 and host2 over a VLAN on their eth0; ping and flows between the tunnel devices, each
//! ping watched on host2.vlan0 (GRE, IP protocol 47, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 ─ vlan0 (.1) ═══ vlan_id, net_ipv4 ═══ (.2) vlan0 ─ eth0 :host2
//!       └ gre_tunnel: tunnel1_ipv4 .2, tunnel1_ipv6 ::2   └ gre_tunnel: tunnel2_* ::2
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses; here they are the
//! parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6` (upstream's
//! values as defaults). `gre_key`/`gre_key_host2` (upstream: no key) set GRE keys.

use super::common::config::{Configured, Link, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::EnrtBase;
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::enrt::{self, EnrtRecipe, SubConfigs};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::simple_network_req;
use super::tunnel::{self, Encap, GreKeyParams, MtuPauseParams, TunnelNetsParams};
use super::tunnel::{TunnelPair, TunnelRecipe};
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// GreTunnelOverVlanRecipe's parameters.
    pub struct GreTunnelOverVlanRecipe {
        param vlan_id: u16 = dflt(Int, 10i64, "id of the VLAN on host1.eth0 and host2.eth0")
            .range(1.0, 4094.0),
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.vlan0 gets .1, host2.vlan0 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreTunnelOverVlanRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl TunnelRecipe for GreTunnelOverVlanRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: ["host1", "host2"].map(|h| Dev::new(h, "vlan0")),
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        tunnel::gre_encap(false)
    }
}

impl Recipe for GreTunnelOverVlanRecipe {
    const NAME: &'static str = "GreTunnelOverVlanRecipe";
    const DOC: &'static str =
        "ping and flows through a GRE tunnel over a VLAN between two hosts, GRE checked on the VLAN";

    fn requirements(&self) -> Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for GreTunnelOverVlanRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        for (nic, vlan) in self.nics().iter().zip(&underlay) {
            let link = Link::Vlan {
                parent: nic.clone(),
                id: self.vlan_id,
            };
            tw.create(vlan, link);
        }
        let net = self.net_ipv4.into();
        for (n, (nic, vlan)) in (1..).zip(self.nics().iter().zip(&underlay)) {
            tw.address(vlan, super::common::config::nth_address(net, n)?);
            tw.up(nic).up(vlan);
        }
        self.gre
            .configure(&mut tw, net, &tunnels, &self.tunnel, false)?;
        tw.wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        for h in ["host1", "host2"] {
            desc.push(format!("Configured {h}.vlan0.vlan_id = {}", self.vlan_id));
            desc.push(format!("Configured {h}.vlan0.realdev = {h}.eth0"));
        }
        desc
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = TunnelRecipe::pair(self).tunnels;
        Some((a, b))
    }

    fn packet_assert(&self, config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
        self.gre.packet_assert(self, config, ping, false)
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        let tunnels = TunnelRecipe::pair(self).tunnels;
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics.to_vec())),
            hw: Some(self.hw.hw_config(&tunnels, &nics)),
        }
    }
}
