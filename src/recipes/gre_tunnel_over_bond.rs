//! GreTunnelOverBondRecipe (upstream `ENRT/GreTunnelOverBondRecipe.py`): a GRE tunnel between
//! host1 and host2 over a bond of their eth0 and eth1; ping and flows between the tunnel
//! devices, each ping watched on host2.bond (GRE, IP protocol 47, carrying the echo requests).
//!
//! ```text
//!   host1: eth0, eth1 ─ bond (.1) ═══ net_ipv4 ═══ (.2) bond ─ eth0, eth1 :host2
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
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, DeviceReqParams};
use super::enrt::params::{BondParams, EnrtBase};
use super::enrt::{self, EnrtRecipe, SubConfigs};
use super::gre_tunnel::{GRE_OFFLOADS, GRE_OFFLOAD_KEYS};
use super::reqs::double_team_or_bond_req;
use super::tunnel::{self, Encap, GreKeyParams, MtuPauseParams, TunnelNetsParams};
use super::tunnel::{TunnelPair, TunnelRecipe};
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// GreTunnelOverBondRecipe's parameters.
    pub struct GreTunnelOverBondRecipe {
        group bonding: BondParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.bond and host2.bond; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.bond gets .1, host2.bond gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreTunnelOverBondRecipe {
    fn ports(host: &str) -> [Dev; 2] {
        [Dev::new(host, "eth0"), Dev::new(host, "eth1")]
    }
}

impl TunnelRecipe for GreTunnelOverBondRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: ["host1", "host2"].map(|h| Dev::new(h, "bond")),
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        tunnel::gre_encap(false)
    }
}

impl Recipe for GreTunnelOverBondRecipe {
    const NAME: &'static str = "GreTunnelOverBondRecipe";
    const DOC: &'static str =
        "ping and flows through a GRE tunnel over a bond between two hosts, GRE checked on the bond";

    fn requirements(&self) -> Requirements {
        double_team_or_bond_req(&self.reqs)
    }

    fn layout() -> Requirements {
        double_team_or_bond_req(&DeviceReqParams::NONE)
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for GreTunnelOverBondRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        for bond in &underlay {
            tw.create(bond, Link::Bond(self.bonding.options()));
            for port in Self::ports(&bond.host) {
                tw.down(&port).enslave(&port, bond);
            }
        }
        let net = self.net_ipv4.into();
        for (n, bond) in (1..).zip(&underlay) {
            tw.address(bond, super::common::config::nth_address(net, n)?);
        }
        // Upstream sets host2.eth0 up twice and never host2.eth1 (the bond opens its ports).
        for bond in &underlay {
            tw.up_all(&Self::ports(&bond.host)).up(bond);
        }
        self.gre
            .configure(&mut tw, net, &tunnels, &self.tunnel, false)?;
        tw.wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        for h in ["host1", "host2"] {
            desc.push(format!(
                "Configured {h}.bond.slaves = ['{h}.eth0', '{h}.eth1']"
            ));
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
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        let eth0s = ["host1", "host2"].map(|h| Dev::new(h, "eth0"));
        SubConfigs {
            offloads: Some((&self.offload_combinations, underlay.to_vec())),
            hw: Some(self.hw.hw_config(&tunnels, &eth0s)),
        }
    }
}
