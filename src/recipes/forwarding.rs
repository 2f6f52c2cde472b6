//! ForwardingRecipe and XDPForwardingRecipe (upstream `ENRT/ForwardingRecipe.py`,
//! `XDPForwardingRecipe.py`): host1 generates (pktgen out of eth0) and receives (eth1, moved
//! into a namespace, where `xdp-bench drop` counts and drops); host2 forwards from its eth0 to
//! its eth1 — with the kernel's routing (Forwarding) or with `xdp-forward` (XDPForwarding).
//!
//! ```text
//!   host1.eth0 (net .1) ── pktgen ──► host2.eth0 (net .2)   host2 forwards
//!   host1.ns.eth1 (netns .2) ◄── xdp-bench drop ── host2.eth1 (netns .1)
//! ```
//!
//! Where upstream cannot work here: `steer_flows_by` needs ethtool ntuple rules, which
//! lnst-agent does not set (the test FAILs with that reason); `xdp-forward` ships with
//! xdp-tools ≥ 1.5 (Debian 12 has 1.3.1: XDPForwardingRecipe FAILs at its configuration with
//! "xdp-forward: not found in PATH"). `perf_tool_cpu` is required at plan time (upstream raises
//! an AttributeError without it).

use super::common::config::{nth_address, Configured, TestWide};
use super::common::pktrate::PacketMeasurement;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::devparams::{MultiDevInterruptConfig, MultiDevInterruptParams};
use super::enrt::params::{DeviceReqParams, EnrtBase};
use super::enrt::SubConfigs;
use super::enrt::{self, ip_endpoint_pairs, EndpointPair, EnrtRecipe, HwConfig, PingEndpoints};
use super::reqs::device_req_params;
use super::simple_netns_router::SimpleNetnsRouterRecipe;
use super::xdp::require_perf_tool_cpu;
use super::Recipe;
use crate::protocol::{JobSpec, NeighbourSpec, NeighbourState};
use crate::requirements::{HostReq, Requirements};
use crate::schema::SchemaError;

crate::choice_enum! {
    /// `steer_flows_by` (DevFlowsPinningMixin).
    pub enum SteerFlowsBy {
        DstIp = "dst-ip",
        SrcIp = "src-ip",
        DstPort = "dst-port",
        SrcPort = "src-port",
    }
}

/// The receiver's namespace: host1's attribute `ns`.
const NS: &str = "host1.ns";

/// Upstream's inline requirements: eth0 and eth1 on both hosts, all on `net1`, matched by
/// `driver` only.
fn forwarding_req(reqs: &DeviceReqParams) -> Requirements {
    let mut params = device_req_params(reqs);
    params.retain(|k, _| k == "driver");
    let mut r = Requirements::default();
    for h in ["host1", "host2"] {
        r.hosts.insert(
            h.to_string(),
            HostReq::default()
                .with_interface("eth0", "net1", params.clone())
                .with_interface("eth1", "net1", params.clone()),
        );
    }
    r
}

/// Generator, receiver, forwarder ingress and egress.
fn roles() -> [Dev; 4] {
    [
        Dev::new("host1", "eth0"),
        Dev::new(NS, "eth1"),
        Dev::new("host2", "eth0"),
        Dev::new("host2", "eth1"),
    ]
}

macro_rules! forwarding_recipe {
    ($name:ident, $xdp:expr, $doc:literal, $sdoc:literal) => {
        crate::param_set! {
            #[doc = $sdoc]
            pub struct $name {
                group router: SimpleNetnsRouterRecipe,
                param ratep: i64 = dflt(Int, -1i64, "pktgen packets per second per flow; -1: unlimited"),
                param burst: u32 = dflt(Int, 1i64, "pktgen burst (copies of each packet)")
                    .range(1.0, 65_536.0),
                param steer_flows_by: Option<SteerFlowsBy> = opt(
                    SteerFlowsBy::param_type(),
                    "steer each flow to its CPU with an ethtool ntuple rule (not supported by lnst-agent)",
                ),
                group mdi: MultiDevInterruptParams,
            }
        }

        impl Recipe for $name {
            const NAME: &'static str = stringify!($name);
            const DOC: &'static str = $doc;

            fn validate(&self) -> Result<(), SchemaError> {
                require_perf_tool_cpu(Self::NAME, &self.router.base.view())?;
                // host1.eth1 is in host1's namespace while the test runs: upstream's
                // `host1.ns.eth1`, keyed `{'host1.ns': {'eth1': ...}}`.
                self.mdi.check(&roles())
            }

            fn requirements(&self) -> Requirements {
                forwarding_req(&self.router.reqs)
            }

            fn layout() -> Requirements {
                forwarding_req(&DeviceReqParams::NONE)
            }

            async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
                if let Some(s) = self.steer_flows_by {
                    return Err(RecipeError::Unsupported(format!(
                        "steer_flows_by='{s}': flow steering rules (ethtool -N … action <cpu>) are not implemented by lnst-agent"
                    )));
                }
                enrt::run(self, ctx).await
            }

            fn kernel_modules(&self) -> super::HostModules {
                enrt::kernel_modules(self)
            }
        }

        impl EnrtRecipe for $name {
            fn base(&self) -> EnrtBase<'_> {
                self.router.base.view()
            }

            fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
                configuration(&self.router)
            }

            fn test_wide_extra<'a>(
                &'a self,
                ctx: &'a mut RunContext,
                _config: &'a Configured,
            ) -> impl std::future::Future<Output = Result<Vec<String>, RecipeError>> + Send + 'a {
                extra(&self.router, ctx, $xdp)
            }

            fn ping_endpoints(&self, _config: &Configured) -> Vec<PingEndpoints> {
                let [g, r, i, e] = roles();
                vec![
                    PingEndpoints::new(&g, &i),
                    PingEndpoints::new(&e, &r),
                    PingEndpoints::new(&g, &r),
                ]
            }

            fn perf_endpoints(&self, config: &Configured) -> Vec<Vec<EndpointPair>> {
                let [g, r, _, _] = roles();
                vec![ip_endpoint_pairs(config, &g, &r)]
            }

            /// CPU on the generator's host and the forwarder.
            fn cpu_hosts(&self) -> Option<Vec<String>> {
                Some(vec!["host1".into(), "host2".into()])
            }

            fn sub_configurations(&self) -> SubConfigs<'_> {
                let [g, r, i, e] = roles();
                SubConfigs {
                    // The generator NIC is left alone: pktgen runs there.
                    offloads: Some((&self.router.offload_combinations, vec![r, i.clone(), e])),
                    hw: Some(HwConfig::on(&self.router.hw, &[g, i])),
                }
            }

            fn packet_measurement(&self) -> Option<PacketMeasurement> {
                let [_, _, i, e] = roles();
                Some(PacketMeasurement::Forwarding {
                    ratep: self.ratep,
                    burst: self.burst,
                    forwarder_rx: i,
                    forwarder_tx: e,
                })
            }

            fn multi_dev_interrupt_config(&self) -> Option<&MultiDevInterruptConfig> {
                Some(self.mdi.config())
            }
        }
    };
}

/// Upstream's test-wide configuration: SimpleNetworkRecipe's addresses on host1.eth0 and
/// host2.eth0; the receiver namespace on host1 with eth1 moved into it; the netns network on
/// host2.eth1 (.1) and host1.ns.eth1 (.2); routes; forwarding on host2.
fn configuration(p: &SimpleNetnsRouterRecipe) -> Result<TestWide, RecipeError> {
    let [g, r, i, e] = roles();
    let net = |n| -> Result<_, RecipeError> {
        Ok([
            nth_address(p.net_ipv4.into(), n)?,
            nth_address(p.net_ipv6.into(), n)?,
        ])
    };
    let ns = |n| -> Result<_, RecipeError> {
        Ok([
            nth_address(p.netns_ipv4.into(), n)?,
            nth_address(p.netns_ipv6.into(), n)?,
        ])
    };
    let mut tw = TestWide::new();
    tw.addresses(&g, &net(1)?)
        .up_and_wait(&g)
        .addresses(&i, &net(2)?)
        .up_and_wait(&i)
        .wait_tentative();
    tw.netns("host1", "ns", "lnst-receiver_ns")
        .move_to(&Dev::new("host1", "eth1"), NS)
        .addresses(&e, &ns(1)?)
        .addresses(&r, &ns(2)?)
        .up_and_wait(&e)
        .up_and_wait(&r);
    let [gw4, gw6] = ns(1)?.map(|a| a.addr.to_string());
    tw.route(NS, "default".into(), Some(gw4))
        .route(NS, "default".into(), Some(gw6))
        .sysctl("host2", "net.ipv4.ip_forward", "1")
        .sysctl("host2", "net.ipv6.conf.all.forwarding", "1");
    let [dst4, dst6] = ns(2)?.map(|a| a.addr.to_string());
    let [via4, via6] = net(2)?.map(|a| a.addr.to_string());
    tw.route("host1", dst4, Some(via4))
        .route("host1", dst6, Some(via6))
        .wait_tentative();
    Ok(tw)
}

/// Static neighbours of the receiver on host2 (xdp-bench drop on the receiver drops ARP and
/// NDP too), then, for XDPForwarding, `xdp-forward load <ingress> <egress>`.
async fn extra(
    p: &SimpleNetnsRouterRecipe,
    ctx: &mut RunContext,
    xdp_forward: bool,
) -> Result<Vec<String>, RecipeError> {
    let [_, r, i, e] = roles();
    let mac = {
        let name = ctx.ifname(&r)?;
        ctx.client(&r.host)?
            .list_interfaces()
            .await?
            .into_iter()
            .find(|x| x.name == name)
            .map(|x| x.mac)
            .ok_or_else(|| RecipeError::Run(format!("{r} ({name}) not found on its agent")))?
    };
    let egress = ctx.ifname(&e)?;
    let mut lines = Vec::new();
    for net in [
        nth_address(p.netns_ipv4.into(), 2)?,
        nth_address(p.netns_ipv6.into(), 2)?,
    ] {
        let ip = net.addr.to_string();
        ctx.add_neighbour(
            "host2",
            NeighbourSpec {
                ifname: egress.clone(),
                ip: ip.clone(),
                lladdr: Some(mac.clone()),
                state: NeighbourState::Permanent,
            },
        )
        .await?;
        lines.push(format!("host2: neighbour {ip} lladdr {mac} dev {e}"));
    }
    if xdp_forward {
        let (ingress, egress) = (ctx.ifname(&i)?, egress);
        ctx.run_job(
            "host2",
            JobSpec::XdpForward {
                load: true,
                ingress: ingress.clone(),
                egress: egress.clone(),
            },
        )
        .await
        .map_err(|err| RecipeError::Run(format!("Failed to load XDP program: {err}")))?;
        ctx.push_undo_job(
            "host2",
            JobSpec::XdpForward {
                load: false,
                ingress,
                egress,
            },
        );
        lines.push(format!("host2: xdp-forward loaded on {i} and {e}"));
    }
    Ok(lines)
}

forwarding_recipe!(
    ForwardingRecipe,
    false,
    "pktgen on host1 through host2's kernel forwarding back to host1's namespace; generator, forwarder and receiver packet rates",
    "ForwardingRecipe: SimpleNetnsRouterRecipe's parameters, pktgen's rate and burst, flow steering and the IRQ pinning."
);

forwarding_recipe!(
    XDPForwardingRecipe,
    true,
    "ForwardingRecipe with host2 forwarding by xdp-forward (xdp-tools >= 1.5); packet rates",
    "XDPForwardingRecipe: ForwardingRecipe's parameters."
);
