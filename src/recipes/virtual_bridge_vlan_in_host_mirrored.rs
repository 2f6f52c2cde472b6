//! VirtualBridgeVlanInHostMirroredRecipe (upstream
//! `ENRT/VirtualBridgeVlanInHostMirroredRecipe.py`): two hypervisors, each with a guest behind
//! a bridge whose other port is the host's VLAN. Pings and flows between the two guests.
//!
//! ```text
//!   guest1: eth0 (.3, ::3)                           guest2: eth0 (.4, ::4)
//!            │ to_guest1                                      │ to_guest2
//!   host1:  tap0 ─ br0 (.1) ─ vlan0 (id 10) ─ eth0   host2:  tap0 ─ br0 (.2) ─ vlan0 (id 10) ─ eth0
//!                                              ╚═════════════ to_switch ══════════════════════╝
//! ```
//!
//! The devices are created before the base's configuration, as upstream; the bridges get
//! IPv4 addresses only. CPU is measured on the hypervisors host1 and host2.
//!
//! Deliberate differences:
//! * `perf_tool_cpu` is logged and ignored (the perf tools are not pinned), as upstream
//!   means to: it sets the parameter to None, but its log line formats the list with `%d`,
//!   a TypeError that ends upstream's test-wide configuration whenever the parameter is set.
//! * IPv6 addresses start at host 3 of `net_ipv6` whatever the network (upstream starts
//!   there only with its default `fc00:0:0:1::/64`, from host 1 otherwise), so the IPv6 host
//!   parts equal the IPv4 last octets with any network; networks too small for the four
//!   addresses are refused at plan time (upstream stops with StopIteration).

use super::common::addrs::{InterfaceAddresses, FOUR_HOSTS};
use super::common::config::{Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, CommonHwParams, DeviceReqParams};
use super::enrt::params::{EnrtBase, VirtualEnrtParams, O5, O5_KEYS};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::virtual_bridge_mirrored_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;

param_set! {
    /// VirtualBridgeVlanInHostMirroredRecipe's parameters.
    pub struct VirtualBridgeVlanInHostMirroredRecipe {
        param vlan_id: u16 = dflt(Int, 10i64, "id of the VLAN on host1.eth0 and host2.eth0")
            .range(1.0, 4094.0),
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O5_KEYS, &O5),
            "offload settings of host1.eth0, host2.eth0, guest1.eth0 and guest2.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.10.0/24",
            "IPv4 network; host1.br0 gets .1, host2.br0 .2, guest1.eth0 .3, guest2.eth0 .4",
        )
        .check(FOUR_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:0:0:1::/64",
            "IPv6 network; guest1.eth0 gets ::3, guest2.eth0 ::4",
        )
        .check(FOUR_HOSTS),
        group base: VirtualEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

const HOSTS: [&str; 2] = ["host1", "host2"];
const GUESTS: [&str; 2] = ["guest1", "guest2"];

fn dev(host: &str, id: &str) -> Dev {
    Dev::new(host, id)
}

impl VirtualBridgeVlanInHostMirroredRecipe {
    /// The ping and perf endpoints: the guests' eth0.
    fn ends() -> (Dev, Dev) {
        (dev("guest1", "eth0"), dev("guest2", "eth0"))
    }
    /// The NICs towards the switch.
    fn uplinks() -> Vec<Dev> {
        HOSTS.map(|h| dev(h, "eth0")).to_vec()
    }
}

impl Recipe for VirtualBridgeVlanInHostMirroredRecipe {
    const NAME: &'static str = "VirtualBridgeVlanInHostMirroredRecipe";
    const DOC: &'static str =
        "two guests behind hypervisor bridges whose VLANs are the hosts': pings and flows between the guests";

    fn requirements(&self) -> Requirements {
        virtual_bridge_mirrored_req(&self.reqs)
    }

    fn layout() -> Requirements {
        virtual_bridge_mirrored_req(&DeviceReqParams::NONE)
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        let mut r = self.clone();
        if let Some(cpus) = r.base.flows.perf_tool_cpu.take() {
            tracing::info!("'perf_tool_cpu' param ({cpus:?}) to be set to None");
        }
        enrt::run(&r, ctx).await
    }
}

impl EnrtRecipe for VirtualBridgeVlanInHostMirroredRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for h in HOSTS {
            let (eth0, tap0, br0) = (dev(h, "eth0"), dev(h, "tap0"), dev(h, "br0"));
            tw.down(&eth0)
                .down(&tap0)
                .create(&br0, Link::Bridge)
                .enslave(&tap0, &br0);
        }
        for g in GUESTS {
            tw.down(&dev(g, "eth0"));
        }
        for h in HOSTS {
            let link = Link::Vlan {
                parent: dev(h, "eth0"),
                id: self.vlan_id,
            };
            tw.create_in(&dev(h, "vlan0"), link, &dev(h, "br0"));
        }
        let mut v4 = InterfaceAddresses::new(self.net_ipv4);
        let mut v6 = InterfaceAddresses::starting_at(self.net_ipv6, 3, 1);
        for h in HOSTS {
            tw.address(&dev(h, "br0"), v4.alloc()?);
        }
        for g in GUESTS {
            let eth0 = dev(g, "eth0");
            tw.address(&eth0, v4.alloc()?).address(&eth0, v6.alloc()?);
        }
        for h in HOSTS {
            tw.up_all(&["eth0", "tap0", "vlan0", "br0"].map(|d| dev(h, d)));
        }
        tw.up_all(&GUESTS.map(|g| dev(g, "eth0"))).wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        for h in HOSTS {
            desc.push(format!("Configured {h}.vlan0.vlan_id = {}", self.vlan_id));
        }
        for h in HOSTS {
            desc.push(format!("Configured {h}.vlan0.realdev = {h}.eth0"));
        }
        for h in HOSTS {
            desc.push(format!(
                "Configured {h}.br0.slaves = ['{h}.tap0', '{h}.vlan0']"
            ));
        }
        desc
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let (a, b) = Self::ends();
        Some((a, b))
    }

    /// Pause frames: none (upstream's list is empty).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let mut offload_nics = Self::uplinks();
        offload_nics.extend(GUESTS.map(|g| dev(g, "eth0")));
        let mut mtu_devs: Vec<Dev> = HOSTS
            .iter()
            .flat_map(|h| ["eth0", "tap0", "br0", "vlan0"].map(|d| dev(h, d)))
            .collect();
        mtu_devs.extend(GUESTS.map(|g| dev(g, "eth0")));
        let hw = HwConfig {
            params: &self.hw,
            mtu_devs,
            pause_frames_devs: Vec::new(),
            dev_interrupt_devs: Self::uplinks(),
            parallel_stream_qdisc_devs: Self::uplinks(),
        };
        SubConfigs {
            offloads: Some((&self.offload_combinations, offload_nics)),
            hw: Some(hw),
        }
    }
}
