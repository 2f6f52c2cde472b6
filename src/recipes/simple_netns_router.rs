//! SimpleNetnsRouterRecipe (upstream `ENRT/SimpleNetnsRouterRecipe.py`): SimpleNetworkRecipe's
//! network, plus a namespace on host2 behind a veth pair; host2 routes between host1 and the
//! namespace.
//!
//! ```text
//!   host1.eth0 (.1) ══ net1 ══ (.2) host2.eth0   host2: pn0 (netns .1) ── np0 (netns .2) in host2.ns
//! ```
//!
//! Deliberate difference: upstream writes 0 to both forwarding sysctls at the end; we write
//! back the values they had (a lab machine that forwarded before still forwards after).

use super::common::config::{nth_address, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_type, O5, O5_KEYS};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

param_set! {
    /// SimpleNetworkRecipe's parameters plus the namespace's networks.
    pub struct SimpleNetnsRouterRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.101.0/24",
            "IPv4 network between host1.eth0 (.1) and host2.eth0 (.2)",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network between host1.eth0 (::1) and host2.eth0 (::2)",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            super::enrt::params::offload_sets(&O5_KEYS, &O5),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
        param netns_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.102.0/24",
            "IPv4 network between host2.pn0 (.1) and host2.ns.np0 (.2)",
        )
        .check(TWO_HOSTS),
        param netns_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:1::/64",
            "IPv6 network between host2.pn0 (::1) and host2.ns.np0 (::2)",
        )
        .check(TWO_HOSTS),
    }
}

/// The namespace's path: host2's attribute `ns`.
const NS: &str = "host2.ns";

impl SimpleNetnsRouterRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
    /// `generator_nic` and `receiver_nic`.
    fn endpoints(&self) -> (Dev, Dev) {
        (Dev::new("host1", "eth0"), Dev::new(NS, "np0"))
    }
}

impl Recipe for SimpleNetnsRouterRecipe {
    const NAME: &'static str = "SimpleNetnsRouterRecipe";
    const DOC: &'static str = "ping and flows from host1 to a namespace on host2, routed by host2";

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

impl EnrtRecipe for SimpleNetnsRouterRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let net = |n| -> Result<_, RecipeError> {
            Ok([
                nth_address(self.net_ipv4.into(), n)?,
                nth_address(self.net_ipv6.into(), n)?,
            ])
        };
        let ns = |n| -> Result<_, RecipeError> {
            Ok([
                nth_address(self.netns_ipv4.into(), n)?,
                nth_address(self.netns_ipv6.into(), n)?,
            ])
        };
        // SimpleNetworkRecipe's configuration.
        for (n, dev) in (1..).zip(&self.nics()) {
            tw.addresses(dev, &net(n)?).up_and_wait(dev);
        }
        tw.wait_tentative();
        // The namespace behind a veth pair.
        let (pn0, np0_root) = (Dev::new("host2", "pn0"), Dev::new("host2", "np0"));
        let np0 = self.endpoints().1;
        tw.netns("host2", "ns", "host2ns")
            .create(
                &pn0,
                Link::Veth {
                    peer: np0_root.clone(),
                },
            )
            .move_to(&np0_root, NS)
            .addresses(&pn0, &ns(1)?)
            .addresses(&np0, &ns(2)?)
            .up_and_wait(&pn0)
            .up_and_wait(&np0);
        let [gw4, gw6] = ns(1)?.map(|a| a.addr.to_string());
        tw.route(NS, "default".into(), Some(gw4))
            .route(NS, "default".into(), Some(gw6))
            .sysctl("host2", "net.ipv4.ip_forward", "1")
            .sysctl("host2", "net.ipv6.conf.all.forwarding", "1");
        let [dst4, dst6] = ns(2)?.map(|a| a.addr.to_string());
        let [via4, via6] = net(2)?.map(|a| a.addr.to_string());
        tw.route("host1", dst4, Some(via4))
            .route("host1", dst6, Some(via6));
        Ok(tw)
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let (a, b) = self.endpoints();
        Some((a, b))
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics.to_vec())),
            hw: Some(HwConfig::on(&self.hw, &nics)),
        }
    }
}
