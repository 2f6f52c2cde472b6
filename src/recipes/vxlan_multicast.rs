//! VxlanMulticastRecipe (upstream `ENRT/VxlanMulticastRecipe.py`): host1 is a hypervisor whose
//! guest1 reaches the switch through host1's bridge; host1 (over the bridge), guest1 and host2
//! (over their eth0) join one multicast VXLAN (VNI `vxlan_id`, group `vxlan_group_ip`). Pings
//! between every ordered pair of the three VXLAN devices over IPv4 and IPv6; flows between
//! host1's and host2's. Not a tunnel-base recipe upstream: no packet assert.
//!
//! ```text
//!   guest1: eth0 (.3 tracked, .4) ─ vxlan0 (vxlan .2, ::2)
//!            │ to_guest
//!   host1:  tap0 ─ br0 (.1 tracked, .2) ─ eth0 ══ to_switch ══ eth0 (.5 tracked, .6) :host2
//!                   └ vxlan0 (vxlan .1, ::1)                   └ vxlan0 (vxlan .3, ::3)
//! ```
//!
//! As upstream, each underlay device gets one tracked and one untracked (`ip_add`) address of
//! `net_ipv4`, and the devices are created before the base's configuration. CPU is measured on
//! the hypervisors host1 and host2.
//!
//! Deliberate differences: upstream hard-codes the VXLAN addresses (192.168.100.1-3/24,
//! fc00::1-3/64) and the VNI 1; here they are the parameters `vxlan_ipv4`, `vxlan_ipv6` and
//! `vxlan_id` with those as defaults. The underlay device is given when the VXLAN is created
//! (upstream sets `realdev` again after the addresses, to the same device).

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{CommonHwParams, DeviceReqParams, EnrtBase, VirtualEnrtParams};
use super::enrt::{self, EnrtRecipe, PingEndpoints};
use super::enrt::{HwConfig, SubConfigs};
use super::reqs::virtual_bridge_req;
use super::tunnel::{self, MULTICAST_V4};
use super::Recipe;
use crate::param_set;
use crate::protocol::VxlanOptions;
use crate::requirements::Requirements;

/// Six host addresses: a tracked and an untracked one per underlay device.
const SIX_HOSTS: crate::schema::Check = crate::schema::Check {
    what: "six host addresses",
    check: |v| match v.as_str().and_then(|s| s.parse::<ipnet::Ipv4Net>().ok()) {
        Some(n) if n.prefix_len() > 29 => Err(format!("{n} has fewer than 6 host addresses")),
        _ => Ok(()),
    },
};

param_set! {
    /// VxlanMulticastRecipe's parameters.
    pub struct VxlanMulticastRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.0.0/24",
            "underlay IPv4 network; host1.br0 gets .1 (and .2 untracked), guest1.eth0 .3 (.4), host2.eth0 .5 (.6)",
        )
        .check(SIX_HOSTS),
        param vxlan_group_ip: String = dflt(
            Str,
            "239.1.1.1",
            "IPv4 multicast group of the VXLAN devices",
        )
        .check(MULTICAST_V4),
        group base: VirtualEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
        param vxlan_id: u32 = dflt(Int, 1i64, "VNI of the three VXLAN devices")
            .range(0.0, 16_777_215.0),
        param vxlan_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.100.0/24",
            "IPv4 network inside the VXLAN; host1.vxlan0 gets .1, guest1.vxlan0 .2, host2.vxlan0 .3",
        )
        .check(super::common::addrs::THREE_HOSTS),
        param vxlan_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network inside the VXLAN; host1.vxlan0 gets ::1, guest1.vxlan0 ::2, host2.vxlan0 ::3",
        )
        .check(super::common::addrs::THREE_HOSTS),
    }
}

/// The names of the parameters upstream does not have.
pub const ADDED: [&str; 3] = ["vxlan_id", "vxlan_ipv4", "vxlan_ipv6"];

fn dev(host: &str, id: &str) -> Dev {
    Dev::new(host, id)
}

/// The machines in addressing order with their underlay devices.
const UNDERLAY: [(&str, &str); 3] = [("host1", "br0"), ("guest1", "eth0"), ("host2", "eth0")];

impl VxlanMulticastRecipe {
    /// The VXLAN devices in upstream's ping order: host1, host2, guest1.
    fn vxlans() -> [Dev; 3] {
        ["host1", "host2", "guest1"].map(|h| dev(h, "vxlan0"))
    }
    fn uplinks() -> Vec<Dev> {
        vec![dev("host1", "eth0"), dev("host2", "eth0")]
    }
}

impl Recipe for VxlanMulticastRecipe {
    const NAME: &'static str = "VxlanMulticastRecipe";
    const DOC: &'static str =
        "multicast VXLAN between two hosts and a guest behind host1's bridge: pings between all three";

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

impl EnrtRecipe for VxlanMulticastRecipe {
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
        let (h2_eth0, g1_eth0) = (dev("host2", "eth0"), dev("guest1", "eth0"));
        for d in [&h1_eth0, &h2_eth0, &g1_eth0, &h1_tap0] {
            tw.down(d);
        }
        tw.create(&h1_br0, Link::Bridge)
            .enslave(&h1_eth0, &h1_br0)
            .enslave(&h1_tap0, &h1_br0);
        let group = tunnel::group_addr(&self.vxlan_group_ip)?;
        for (host, under) in [("host1", "br0"), ("guest1", "eth0"), ("host2", "eth0")] {
            let link = Link::Vxlan {
                parent: Some(dev(host, under)),
                opts: VxlanOptions {
                    id: self.vxlan_id,
                    group: Some(group),
                    ..VxlanOptions::default()
                },
            };
            tw.create(&dev(host, "vxlan0"), link);
        }
        let net = self.net_ipv4.into();
        for (i, (host, under)) in (1..).zip(UNDERLAY) {
            let under = dev(host, under);
            let vx = dev(host, "vxlan0");
            tw.address(&under, nth_address(net, 2 * i - 1)?)
                .address_untracked(&under, nth_address(net, 2 * i)?)
                .address(&vx, nth_address(self.vxlan_ipv4.into(), i)?)
                .address(&vx, nth_address(self.vxlan_ipv6.into(), i)?);
        }
        let [h1_vx, h2_vx, g1_vx] = Self::vxlans();
        tw.up_all(&[
            h1_eth0, h2_eth0, g1_eth0, h1_tap0, h1_br0, h1_vx, h2_vx, g1_vx,
        ])
        .wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        let vxlans = Self::vxlans();
        for vx in &vxlans {
            desc.push(format!("Configured {vx}.vxlan_id = {}", self.vxlan_id));
        }
        for vx in &vxlans {
            desc.push(format!("Configured {vx}.group = {}", self.vxlan_group_ip));
        }
        for vx in &vxlans {
            let under = UNDERLAY
                .iter()
                .find(|(h, _)| *h == vx.host)
                .map_or("eth0", |(_, d)| d);
            desc.push(format!("Configured {vx}.realdev = {}.{under}", vx.host));
        }
        desc
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [h1, h2, _] = Self::vxlans();
        Some((h1, h2))
    }

    /// Every ordered pair of the three VXLAN devices (upstream `permutations(devs, 2)`).
    fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
        let v = Self::vxlans();
        let mut out = Vec::new();
        for a in &v {
            for b in v.iter().filter(|b| *b != a) {
                out.push(PingEndpoints::new(a, b));
            }
        }
        out
    }

    /// No offloads; pause frames: none (upstream's list is empty).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let hw = HwConfig {
            params: &self.hw,
            mtu_devs: Self::vxlans().to_vec(),
            pause_frames_devs: Vec::new(),
            dev_interrupt_devs: Self::uplinks(),
            parallel_stream_qdisc_devs: Self::uplinks(),
        };
        SubConfigs {
            offloads: None,
            hw: Some(hw),
        }
    }
}
