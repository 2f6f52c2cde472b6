//! VxlanRemoteRecipe (upstream `ENRT/VxlanRemoteRecipe.py`): a unicast VXLAN (VNI 1, each
//! host's `remote` the other's eth0 address, eth0 as the underlay device) between host1 and
//! host2; ping and flows between the VXLAN devices. Not a tunnel-base recipe upstream: no
//! packet assert.
//!
//! ```text
//!   host1.eth0 (.1) ═══════ net_ipv4 ═══════ (.2) host2.eth0
//!       └ vxlan0 (vxlan_ipv4 .1, vxlan_ipv6 ::1)   └ vxlan0 (.2, ::2)
//! ```
//!
//! Deliberate differences: upstream hard-codes the VXLAN addresses (192.168.100.1-2/24,
//! fc00::1-2/64); here they are the parameters `vxlan_ipv4` and `vxlan_ipv6` with those
//! networks as defaults. The underlay device is given when the VXLAN is created (upstream
//! sets `realdev` right after); the UDP port is the kernel's default in both.

use super::common::config::{nth_address, Configured, Link, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{offload_sets, offload_type, BaremetalEnrtParams, CommonHwParams};
use super::enrt::params::{DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe};
use super::enrt::{HwConfig, SubConfigs};
use super::gre_tunnel::GRE_OFFLOAD_KEYS;
use super::reqs::simple_network_req;
use super::typed::OffloadCombination;
use super::Recipe;
use crate::param_set;
use crate::protocol::VxlanOptions;
use crate::requirements::Requirements;
use crate::schema::TWO_HOSTS;

/// Upstream's `vxlan_id`.
const VNI: u32 = 1;

param_set! {
    /// VxlanRemoteRecipe's parameters.
    pub struct VxlanRemoteRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.0.0/24",
            "underlay IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        )
        .check(TWO_HOSTS),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            offload_sets(&GRE_OFFLOAD_KEYS, &[]),
            "offload settings of host1.eth0 and host2.eth0; one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
        param vxlan_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.100.0/24",
            "IPv4 network inside the VXLAN; host1.vxlan0 gets .1, host2.vxlan0 gets .2",
        )
        .check(TWO_HOSTS),
        param vxlan_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network inside the VXLAN; host1.vxlan0 gets ::1, host2.vxlan0 gets ::2",
        )
        .check(TWO_HOSTS),
    }
}

impl VxlanRemoteRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
    fn vxlans(&self) -> [Dev; 2] {
        ["host1", "host2"].map(|h| Dev::new(h, "vxlan0"))
    }
}

impl Recipe for VxlanRemoteRecipe {
    const NAME: &'static str = "VxlanRemoteRecipe";
    const DOC: &'static str = "ping and flows through a unicast VXLAN between two hosts";

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

impl EnrtRecipe for VxlanRemoteRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let nics = self.nics();
        let vxlans = self.vxlans();
        for nic in &nics {
            tw.down(nic);
        }
        let under = |n| nth_address(self.net_ipv4.into(), n);
        for (i, (nic, vx)) in nics.iter().zip(&vxlans).enumerate() {
            let n = i as u128 + 1;
            tw.address(nic, under(n)?);
            tw.create(
                vx,
                Link::Vxlan {
                    parent: Some(nic.clone()),
                    opts: VxlanOptions {
                        id: VNI,
                        remote: Some(under(3 - n)?.addr),
                        ..VxlanOptions::default()
                    },
                },
            );
        }
        for (n, vx) in (1..).zip(&vxlans) {
            tw.address(vx, nth_address(self.vxlan_ipv4.into(), n)?)
                .address(vx, nth_address(self.vxlan_ipv6.into(), n)?);
        }
        for (nic, vx) in nics.iter().zip(&vxlans) {
            tw.up_and_wait(nic).up_and_wait(vx);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn test_wide_description(&self, config: &Configured) -> Vec<String> {
        let mut desc = config.describe();
        let remote = |n| {
            nth_address(self.net_ipv4.into(), n)
                .map(|a| a.addr.to_string())
                .unwrap_or_default()
        };
        for (i, vx) in self.vxlans().iter().enumerate() {
            desc.push(format!("Configured {vx}.vxlan_id = {VNI}"));
            desc.push(format!(
                "Configured {vx}.remote = {}",
                remote(2 - i as u128)
            ));
            desc.push(format!("Configured {vx}.realdev = {}.eth0", vx.host));
        }
        desc
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = self.vxlans();
        Some((a, b))
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        SubConfigs {
            offloads: Some((&self.offload_combinations, nics.to_vec())),
            hw: Some(HwConfig {
                mtu_devs: self.vxlans().to_vec(),
                ..HwConfig::on(&self.hw, &nics)
            }),
        }
    }
}
