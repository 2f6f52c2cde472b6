//! ShortLivedConnectionsRecipe (upstream `ENRT/ShortLivedConnectionsRecipe.py`): one NIC on
//! each of two hosts, an IPv4 address each, and request/response perf tests between them:
//! `tcp_rr`, `tcp_crr` and `udp_rr` for five message sizes, run by lnst-agent's built-in
//! generator where upstream runs neper (`net_perf_tool` has the one choice 'neper'). No
//! pings, no offload sub-configurations; the common hardware settings (MTU, IRQ pinning,
//! coalescing; pause frames on no device) as CommonHWSubConfigMixin.
//!
//! ```text
//!                 +--------+
//!          +------+ switch +-----+
//!          |      +--------+     |
//!       +--+-+                 +-+--+
//!     +-|eth0|-+             +-|eth0|-+
//!     | +----+ |             | +----+ |
//!     | host1  |             | host2  |
//!     +--------+             +--------+
//! ```
//!
//! Addresses: host 10 of `net_ipv4` on host1.eth0 and host 11 on host2.eth0 (upstream starts
//! at 192.168.101.10 with its default network; here the host index is kept with any network,
//! as for the other recipes with a `default_start`). Upstream's neper server reports no
//! tcp_crr transactions, so upstream's NonzeroFlowEvaluator FAILs every tcp_crr receiver; the
//! built-in generator's server counts them, so they pass here.

use super::common::addrs::{InterfaceAddresses, ELEVEN_HOSTS};
use super::common::config::{Configured, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams, EnrtBase};
use super::enrt::{self, ip_endpoint_pairs, EndpointPair, EnrtRecipe, HwConfig, SubConfigs};
use super::reqs::simple_network_req;
use super::typed::str_tuple;
use super::Recipe;
use crate::params::Value;
use crate::requirements::Requirements;
use crate::schema::ParamType;

/// Upstream default of `net_ipv4`. Note: outside 198.18.0.0/15, the range our tests may use.
pub const DEFAULT_NET_IPV4: &str = "192.168.101.0/24";

crate::group_variant! {
    /// BaremetalEnrtRecipe's parameters with the recipe's own declarations: neper only,
    /// tcp_rr/tcp_crr/udp_rr, IPv4 only, five message sizes.
    pub struct ShortLivedEnrtParams(BaremetalEnrtParams) {
        without: [],
        adjust: |s| match s.name {
            "net_perf_tool" => {
                s.ty = ParamType::Choice(vec!["neper"]);
                s.default = Some(Value::from("neper"));
                s.doc = "flow measurement tool: neper only (lnst-agent's request/response generator)";
            }
            "perf_tests" => s.default = Some(str_tuple(&["tcp_rr", "tcp_crr", "udp_rr"])),
            "ip_versions" => s.default = Some(str_tuple(&["ipv4"])),
            "perf_msg_sizes" => {
                s.default = Some(Value::List(
                    [1000, 5000, 7000, 10000, 12000].into_iter().map(Value::Int).collect(),
                ));
                s.doc = "request and response size (neper -Q/-R); one perf configuration per size";
            }
            _ => {}
        },
    }
}

crate::param_set! {
    /// ShortLivedConnectionsRecipe's parameters: `net_ipv4`, BaremetalEnrtRecipe's (with the
    /// recipe's defaults), the device requirements and CommonHWSubConfigMixin.
    pub struct ShortLivedConnectionsRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            DEFAULT_NET_IPV4,
            "IPv4 network; host1.eth0 gets host 10 of it, host2.eth0 host 11",
        )
        .check(ELEVEN_HOSTS),
        group base: ShortLivedEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

impl ShortLivedConnectionsRecipe {
    /// host1.eth0 and host2.eth0.
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }
}

impl Recipe for ShortLivedConnectionsRecipe {
    const NAME: &'static str = "ShortLivedConnectionsRecipe";
    const DOC: &'static str =
        "tcp_rr, tcp_crr and udp_rr transaction rates between one NIC on each of two hosts (no pings)";

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

impl EnrtRecipe for ShortLivedConnectionsRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.0.view()
    }

    /// Per host: eth0 down, its address (hosts 10 and 11), eth0 up; then the wait for
    /// tentative addresses.
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let mut v4 = InterfaceAddresses::starting_at(self.net_ipv4, 10, 1);
        for dev in &self.nics() {
            tw.down(dev).address(dev, v4.alloc()?).up(dev);
        }
        tw.wait_tentative();
        Ok(tw)
    }

    fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
        let [a, b] = self.nics();
        vec![ip_endpoint_pairs(config, &a, &b)]
    }

    /// CommonHWSubConfigMixin on the eth0 pair, pause frames on no device (the recipe does
    /// not list any).
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        let mut hw = HwConfig::on(&self.hw, &nics);
        hw.pause_frames_devs = Vec::new();
        SubConfigs {
            offloads: None,
            hw: Some(hw),
        }
    }
}
