//! GreTunnelOverMacvlanRecipe (upstream `ENRT/GreTunnelOverMacvlanRecipe.py`): a GRE tunnel
//! between host1 and host2 over a macvlan on their eth0; ping and
//! flows between the tunnel devices, each ping watched on host2.macvlan10 (GRE, IP protocol
//! 47, carrying the echo requests).
//!
//! ```text
//!   host1.eth0 ─ macvlan10 (.1) ═══ net_ipv4 ═══ (.2) macvlan10 ─ eth0 :host2
//!       └ gre_tunnel: tunnel1_ipv4 .2, tunnel1_ipv6 ::2   └ gre_tunnel: tunnel2_* ::2
//! ```
//!
//! Deliberate differences: upstream hard-codes the tunnel addresses; here they are the
//! parameters `tunnel1_ipv4`, `tunnel2_ipv4`, `tunnel1_ipv6`, `tunnel2_ipv6` (upstream's
//! values as defaults). `gre_key`/`gre_key_host2` (upstream: no key) set GRE keys. The
//! macvlans are created in mode `bridge` (upstream sets no mode: the kernel's `vepa`); traffic
//! between the two hosts leaves through eth0 in both modes. Each host answers ARP only on
//! the device that has the asked address (`net.ipv4.conf.all.arp_ignore = 1`, the old value
//! written back at the end): with the kernel's default, host2's eth0 (the macvlan's lower
//! device) answers host1's ARP for the macvlan's address first, with its own MAC, host1's
//! GRE packets then arrive on host2.eth0 instead of host2.macvlan10, and the packet assert on
//! the macvlan (upstream's too) sees none of them.

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
    /// GreTunnelOverMacvlanRecipe's parameters.
    pub struct GreTunnelOverMacvlanRecipe {
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &GRE_OFFLOADS),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "underlay IPv4 network; host1.macvlan10 gets .1, host2.macvlan10 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: MtuPauseParams,
        group tunnel: TunnelNetsParams,
        group gre: GreKeyParams,
    }
}

impl GreTunnelOverMacvlanRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl TunnelRecipe for GreTunnelOverMacvlanRecipe {
    fn pair(&self) -> TunnelPair {
        TunnelPair {
            underlay: ["host1", "host2"].map(|h| Dev::new(h, "macvlan10")),
            tunnels: ["host1", "host2"].map(|h| Dev::new(h, "gre_tunnel")),
        }
    }
    fn encap(&self, _inner_v6: bool) -> Encap {
        tunnel::gre_encap(false)
    }
}

impl Recipe for GreTunnelOverMacvlanRecipe {
    const NAME: &'static str = "GreTunnelOverMacvlanRecipe";
    const DOC: &'static str =
        "ping and flows through a GRE tunnel over a macvlan between two hosts, GRE checked on the macvlan";

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

impl EnrtRecipe for GreTunnelOverMacvlanRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let TunnelPair { underlay, tunnels } = TunnelRecipe::pair(self);
        for (nic, mv) in self.nics().iter().zip(&underlay) {
            let link = Link::Macvlan {
                parent: nic.clone(),
            };
            tw.sysctl(&nic.host, "net.ipv4.conf.all.arp_ignore", "1")
                .create(mv, link);
        }
        let net = self.net_ipv4.into();
        for (n, (nic, mv)) in (1..).zip(self.nics().iter().zip(&underlay)) {
            tw.address(mv, super::common::config::nth_address(net, n)?);
            tw.up(nic).up(mv);
        }
        self.gre
            .configure(&mut tw, net, &tunnels, &self.tunnel, false)?;
        tw.wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        for h in ["host1", "host2"] {
            desc.push(format!("Configured {h}.macvlan10.realdev = {h}.eth0"));
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
