//! VirtualBridgeVlanInHostRecipe (upstream `ENRT/VirtualBridgeVlanInHostRecipe.py`): host1 is
//! a hypervisor whose guest reaches the switch through a bridge; the VLAN is host1's, its
//! port of the bridge. Pings and flows between guest1 and host2's VLAN.
//!
//! ```text
//!   guest1: eth0 (.3, ::3)
//!            │ to_guest
//!   host1:  tap0 ─ br0 (.1) ─ vlan0 (id 10) ─ eth0 ══ to_switch ══ eth0 ─ vlan0 (.2, ::2)  :host2
//! ```
//!
//! The devices are created before the base's configuration, as upstream; the bridge gets an
//! IPv4 address only. CPU is measured on the hypervisors host1 and host2.
//!
//! Deliberate differences:
//! * IPv6 addresses start at host 2 of `net_ipv6` whatever the network (upstream starts
//!   there only with its default `fc00:0:0:1::/64`, from host 1 otherwise), so the IPv6 host
//!   parts equal the IPv4 last octets with any network; networks too small for the three
//!   addresses are refused at plan time (upstream stops with StopIteration).

use super::common::addrs::{InterfaceAddresses, THREE_HOSTS};
use super::common::config::{Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, CommonHwParams, DeviceReqParams};
use super::enrt::params::{EnrtBase, VirtualEnrtParams, O5, O5_KEYS};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::virtual_bridge_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;

param_set! {
    /// VirtualBridgeVlanInHostRecipe's parameters.
    pub struct VirtualBridgeVlanInHostRecipe {
        param vlan_id: u16 = dflt(Int, 10i64, "id of the VLAN on host1.eth0 and host2.eth0")
            .range(1.0, 4094.0),
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&O5_KEYS, &O5),
            "offload settings of host1.eth0, host2.eth0 and guest1.eth0; one sub-configuration per dict",
        ),
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.10.0/24",
            "IPv4 network; host1.br0 gets .1, host2.vlan0 .2, guest1.eth0 .3",
        )
        .check(THREE_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:0:0:1::/64",
            "IPv6 network; host2.vlan0 gets ::2, guest1.eth0 ::3",
        )
        .check(THREE_HOSTS),
        group base: VirtualEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

fn dev(host: &str, id: &str) -> Dev {
    Dev::new(host, id)
}

impl VirtualBridgeVlanInHostRecipe {
    /// The ping and perf endpoints: guest1.eth0 and host2.vlan0.
    fn ends() -> (Dev, Dev) {
        (dev("guest1", "eth0"), dev("host2", "vlan0"))
    }
    /// The NICs towards the switch.
    fn uplinks() -> Vec<Dev> {
        vec![dev("host1", "eth0"), dev("host2", "eth0")]
    }
}

impl Recipe for VirtualBridgeVlanInHostRecipe {
    const NAME: &'static str = "VirtualBridgeVlanInHostRecipe";
    const DOC: &'static str =
        "guest behind a hypervisor bridge whose VLAN is the host's: pings and flows to host2's VLAN";

    fn requirements(&self) -> Requirements {
        virtual_bridge_req(&self.reqs)
    }

    fn layout() -> Requirements {
        virtual_bridge_req(&DeviceReqParams::NONE)
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for VirtualBridgeVlanInHostRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let (h1_eth0, h1_tap0, h1_br0) = (
            dev("host1", "eth0"),
            dev("host1", "tap0"),
            dev("host1", "br0"),
        );
        let (h1_vlan0, h2_eth0, h2_vlan0) = (
            dev("host1", "vlan0"),
            dev("host2", "eth0"),
            dev("host2", "vlan0"),
        );
        let g1_eth0 = dev("guest1", "eth0");
        tw.down(&h1_eth0)
            .down(&h1_tap0)
            .create(&h1_br0, Link::Bridge)
            .enslave(&h1_tap0, &h1_br0)
            .down(&h2_eth0)
            .down(&g1_eth0)
            .create_in(
                &h1_vlan0,
                Link::Vlan {
                    parent: h1_eth0.clone(),
                    id: self.vlan_id,
                },
                &h1_br0,
            )
            .create(
                &h2_vlan0,
                Link::Vlan {
                    parent: h2_eth0.clone(),
                    id: self.vlan_id,
                },
            );
        let mut v4 = InterfaceAddresses::new(self.net_ipv4);
        let mut v6 = InterfaceAddresses::starting_at(self.net_ipv6, 2, 1);
        tw.address(&h1_br0, v4.alloc()?);
        for d in [&h2_vlan0, &g1_eth0] {
            tw.address(d, v4.alloc()?).address(d, v6.alloc()?);
        }
        tw.up_all(&[
            h1_eth0, h1_tap0, h1_vlan0, h1_br0, h2_eth0, h2_vlan0, g1_eth0,
        ])
        .wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        let vlans = [("host1", "vlan0"), ("host2", "vlan0")];
        for (h, v) in vlans {
            desc.push(format!("Configured {h}.{v}.vlan_id = {}", self.vlan_id));
        }
        for (h, v) in vlans {
            desc.push(format!("Configured {h}.{v}.realdev = {h}.eth0"));
        }
        desc.push("Configured host1.br0.slaves = ['host1.tap0', 'host1.vlan0']".into());
        desc
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let (a, b) = Self::ends();
        Some((a, b))
    }

    /// Pause frames: none (upstream's list is empty).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let mut offload_nics = Self::uplinks();
        offload_nics.push(dev("guest1", "eth0"));
        let mtu_devs = [
            ("host1", "eth0"),
            ("host1", "tap0"),
            ("host1", "br0"),
            ("host2", "eth0"),
            ("guest1", "eth0"),
            ("host1", "vlan0"),
            ("host2", "vlan0"),
        ]
        .map(|(h, d)| dev(h, d))
        .to_vec();
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
