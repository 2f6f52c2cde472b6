//! SimpleNetworkRecipe: its 38 upstream parameters (reference lnst-recipes.md §1.4) and its
//! requirements (§1.2). The run itself lives in `simple_network.rs`.
//!
//! Type choices where upstream is untyped or a class object:
//! * `perf_msg_sizes`, `perf_tool_cpu`, `dev_intr_cpu` are lists of ints (upstream ListParam
//!   does not check items; every use is numeric).
//! * `cpu_perf_tool` is a choice of class names as strings (upstream takes a class object).
//! * `perf_tool_cpu_policy` is a choice {all, round-robin} (upstream StrParam that raises on
//!   anything else at run time).

use super::context::{RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams};
use super::typed::OffloadCombination;
use crate::param_set;
use crate::params::Value;
use crate::requirements::{HostReq, Requirements};
use crate::schema::ParamType;
use std::collections::BTreeMap;

/// Upstream default of `net_ipv4`. Note: outside 198.18.0.0/15, the range our tests may use.
pub const DEFAULT_NET_IPV4: &str = "192.168.101.0/24";
/// Upstream default of `net_ipv6`. Note: outside fd00::/8, the range our tests may use.
pub const DEFAULT_NET_IPV6: &str = "fc00::/64";

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

/// One offload combination dict in the upstream key order.
fn offloads(gro: &str, gso: &str, tso: &str, tx: &str, rx: &str) -> Value {
    Value::Dict(vec![
        (s("gro"), s(gro)),
        (s("gso"), s(gso)),
        (s("tso"), s(tso)),
        (s("tx"), s(tx)),
        (s("rx"), s(rx)),
    ])
}

/// The five default offload combinations of SimpleNetworkRecipe.
pub fn default_offload_combinations() -> Value {
    Value::Tuple(vec![
        offloads("on", "on", "on", "on", "on"),
        offloads("off", "on", "on", "on", "on"),
        offloads("on", "off", "off", "on", "on"),
        offloads("on", "on", "off", "off", "on"),
        offloads("on", "on", "on", "on", "off"),
    ])
}

fn offload_type() -> ParamType {
    ParamType::Seq(Box::new(ParamType::Map(Box::new(ParamType::Choice(vec![
        "on", "off",
    ])))))
}

param_set! {
    /// SimpleNetworkRecipe's parameters, in the order of reference §1.4.
    pub struct SimpleNetworkRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            DEFAULT_NET_IPV4,
            "IPv4 network; host1.eth0 gets .1, host2.eth0 gets .2",
        ),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            DEFAULT_NET_IPV6,
            "IPv6 network; host1.eth0 gets ::1, host2.eth0 gets ::2",
        ),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        param offload_combinations: Vec<OffloadCombination> = dflt(
            offload_type(),
            default_offload_combinations(),
            "offload settings (gro/gso/tso/tx/rx); one sub-configuration per dict",
        ),
        group hw: CommonHwParams,
    }
}

impl super::Recipe for SimpleNetworkRecipe {
    const NAME: &'static str = "SimpleNetworkRecipe";
    const DOC: &'static str = "IP ping and iperf/neper flows between one NIC on each of two hosts";

    fn requirements(&self) -> Requirements {
        let mut dev = BTreeMap::new();
        for (v, key) in [
            (&self.reqs.driver, "driver"),
            (&self.reqs.nic_speed, "speed"),
            (&self.reqs.nic_model, "model"),
        ] {
            if let Some(v) = v {
                dev.insert(key.to_string(), v.clone());
            }
        }
        let mut r = Requirements::default();
        for host in ["host1", "host2"] {
            r.hosts.insert(
                host.to_string(),
                HostReq::default().with_interface("eth0", "net1", dev.clone()),
            );
        }
        r
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        let params = ctx.params.clone();
        super::simple_network::run(ctx, &params).await
    }
}
