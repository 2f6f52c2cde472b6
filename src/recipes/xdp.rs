//! XDPDropRecipe, XDPTxRecipe and XDPRedirectCPURecipe (upstream `ENRT/XDPDropRecipe.py`,
//! `XDPTxRecipe.py`, `XDPRedirectCPURecipe.py`): SimpleNetworkRecipe's network and pings, and
//! a packet-rate perf phase: pktgen on host1 sends UDP to host2.eth0, where `xdp-bench`
//! (xdp-tools) drops the packets, sends them back out (tx) or spreads them over CPUs
//! (redirect-cpu). `perf_tests` selects only the perf tweaks (pktgen always sends UDP).
//!
//! ```text
//!   host1.eth0 ── pktgen, one device per CPU ──► host2.eth0 ── xdp-bench drop|tx|redirect-cpu
//! ```
//!
//! Choices where upstream crashes or cannot work here:
//! * `perf_tool_cpu` unset: upstream raises a TypeError when pktgen's configuration iterates
//!   the missing pinning; here the plan refuses it (exit 2) for XDPDrop and XDPTx (it is
//!   mandatory in XDPRedirectCPU's own declaration).
//! * `multi_dev_interrupt_config` unset: upstream raises an AttributeError; here it means no
//!   pinning. When set it is parsed and applied as every MultiDevInterruptHWConfigMixin
//!   recipe's ([`super::enrt::devparams::MultiDevInterruptParams`]); its devices must be the
//!   recipe's own (checked when the plan is made).
//! * `xdp_redirect_program`: upstream's measurement takes only `l4-dport` (default) and
//!   `l4-sport`, which need xdp-tools ≥ 1.5; Debian 12 ships 1.3.1, so `round-robin` (the
//!   program upstream's own docstring describes) is accepted too.

use super::common::config::{Configured, TestWide};
use super::common::pktrate::PacketMeasurement;
use super::context::{RecipeError, RunContext};
use super::enrt::devparams::{MultiDevInterruptConfig, MultiDevInterruptParams};
use super::enrt::params::EnrtBase;
use super::enrt::{self, EndpointPair, EnrtRecipe, PingEndpoints, SubConfigs};
use super::simple_network::SimpleNetworkRecipe;
use super::typed::ParamSet;
use super::Recipe;
use crate::protocol::{
    XdpBenchCommand, XdpLoadMode, XdpMode, XdpPacketOperation, XdpRedirectProgram, XdpRemoteAction,
};
use crate::requirements::Requirements;
use crate::schema::{ParamSpec, ResolvedParams, SchemaError};

crate::choice_enum! {
    /// `xdp_mode`.
    pub enum XdpModeParam { Native = "native", Skb = "skb" }
}
crate::choice_enum! {
    /// `xdp_load_mode` ("": xdp-bench's default).
    pub enum XdpLoadModeParam { Default = "", Dpa = "dpa", LoadBytes = "load-bytes" }
}
crate::choice_enum! {
    /// `xdp_packet_operation` ("": xdp-bench's default).
    pub enum XdpPacketOperationParam {
        Default = "",
        NoTouch = "no-touch",
        ReadData = "read-data",
        ParseIp = "parse-ip",
        SwapMacs = "swap-macs",
    }
}
crate::choice_enum! {
    /// `xdp_remote_action` ("": none given).
    pub enum XdpRemoteActionParam {
        Default = "",
        Disabled = "disabled",
        Drop = "drop",
        Pass = "pass",
        Redirect = "redirect",
    }
}
crate::choice_enum! {
    /// XDPDropRecipe's `xdp_command` (a ConstParam upstream).
    pub enum DropCommand { Drop = "drop" }
}
crate::choice_enum! {
    /// XDPTxRecipe's `xdp_command` (a ConstParam upstream).
    pub enum TxCommand { Tx = "tx" }
}
crate::choice_enum! {
    /// `xdp_redirect_program` (upstream: l4-dport, l4-sport; round-robin for xdp-tools 1.3).
    pub enum RedirectProgram {
        L4Dport = "l4-dport",
        L4Sport = "l4-sport",
        RoundRobin = "round-robin",
    }
}
crate::choice_enum! {
    /// `xdp_redirect_remote_action`.
    pub enum RedirectRemoteAction {
        Disabled = "disabled",
        Drop = "drop",
        Pass = "pass",
        Redirect = "redirect",
    }
}

crate::param_set! {
    /// XDPFlowMeasurementGenerator: how xdp-bench runs on the receiver.
    pub struct XdpFlowParams {
        param xdp_mode: XdpModeParam = dflt(
            XdpModeParam::param_type(),
            "native",
            "XDP in the driver (native) or the generic hook (skb)",
        ),
        param xdp_load_mode: XdpLoadModeParam = dflt(
            XdpLoadModeParam::param_type(),
            "",
            "xdp-bench --load-mode (xdp-tools >= 1.4)",
        ),
        param xdp_packet_operation: XdpPacketOperationParam = dflt(
            XdpPacketOperationParam::param_type(),
            "",
            "what the program does to a packet (xdp-bench --program-mode)",
        ),
        param xdp_remote_action: XdpRemoteActionParam = dflt(
            XdpRemoteActionParam::param_type(),
            "",
            "xdp-bench --remote-action",
        ),
    }
}

impl XdpFlowParams {
    fn measurement(&self, command: XdpBenchCommand) -> PacketMeasurement {
        PacketMeasurement::XdpBench {
            command,
            xdp_mode: match self.xdp_mode {
                XdpModeParam::Native => XdpMode::Native,
                XdpModeParam::Skb => XdpMode::Skb,
            },
            load_mode: XdpLoadMode::parse(self.xdp_load_mode.as_str()),
            packet_operation: XdpPacketOperation::parse(self.xdp_packet_operation.as_str()),
            remote_action: XdpRemoteAction::parse(self.xdp_remote_action.as_str()),
        }
    }
}

/// The plan-time refusal of an unset `perf_tool_cpu` (upstream crashes on it).
pub fn require_perf_tool_cpu(recipe: &str, base: &EnrtBase<'_>) -> Result<(), SchemaError> {
    match &base.flows.perf_tool_cpu {
        Some(c) if !c.is_empty() => Ok(()),
        _ => Err(SchemaError::Type {
            name: "perf_tool_cpu".into(),
            message: format!(
                "{recipe} needs the CPUs pktgen's threads run on (upstream crashes without them), e.g. perf_tool_cpu=[0]"
            ),
        }),
    }
}

macro_rules! xdp_bench_recipe {
    ($name:ident, $cmd:ident, $cmd_str:literal, $command:expr, $doc:literal, $sdoc:literal) => {
        crate::param_set! {
            #[doc = $sdoc]
            pub struct $name {
                group sn: SimpleNetworkRecipe,
                param xdp_command: $cmd = dflt(
                    <$cmd>::param_type(),
                    $cmd_str,
                    "the xdp-bench command (constant)",
                ),
                group xdp: XdpFlowParams,
                group mdi: MultiDevInterruptParams,
            }
        }

        impl Recipe for $name {
            const NAME: &'static str = stringify!($name);
            const DOC: &'static str = $doc;

            fn validate(&self) -> Result<(), SchemaError> {
                require_perf_tool_cpu(Self::NAME, &self.sn.base())?;
                self.mdi.check(&self.sn.nics())
            }

            fn requirements(&self) -> Requirements {
                Recipe::requirements(&self.sn)
            }

            fn layout() -> Requirements {
                SimpleNetworkRecipe::layout()
            }

            async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
                enrt::run(self, ctx).await
            }

            fn kernel_modules(&self) -> super::HostModules {
                enrt::kernel_modules(self)
            }
        }

        impl EnrtRecipe for $name {
            fn base(&self) -> EnrtBase<'_> {
                self.sn.base()
            }
            fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
                self.sn.test_wide_configuration()
            }
            fn ping_endpoints(&self, c: &Configured) -> Vec<PingEndpoints> {
                self.sn.ping_endpoints(c)
            }
            fn perf_endpoints(&self, c: &Configured) -> Vec<Vec<EndpointPair>> {
                self.sn.perf_endpoints(c)
            }
            fn sub_configurations(&self) -> SubConfigs<'_> {
                self.sn.sub_configurations()
            }
            fn packet_measurement(&self) -> Option<PacketMeasurement> {
                Some(self.xdp.measurement($command))
            }
            fn multi_dev_interrupt_config(&self) -> Option<&MultiDevInterruptConfig> {
                Some(self.mdi.config())
            }
        }
    };
}

xdp_bench_recipe!(
    XDPDropRecipe,
    DropCommand,
    "drop",
    XdpBenchCommand::Drop,
    "pktgen from host1 to host2.eth0, where xdp-bench drops every packet; packet rates",
    "XDPDropRecipe: SimpleNetworkRecipe's parameters, the xdp-bench settings and the IRQ pinning."
);

xdp_bench_recipe!(
    XDPTxRecipe,
    TxCommand,
    "tx",
    XdpBenchCommand::Tx,
    "pktgen from host1 to host2.eth0, where xdp-bench sends every packet back out (XDP_TX); packet rates",
    "XDPTxRecipe: SimpleNetworkRecipe's parameters, the xdp-bench settings and the IRQ pinning."
);

crate::param_set! {
    /// XDPRedirectCPURecipe's parameters (`perf_tool_cpu` is made mandatory by
    /// [`XDPRedirectCPURecipe`]'s schema).
    pub struct XdpRedirectCpuParams {
        group sn: SimpleNetworkRecipe,
        group mdi: MultiDevInterruptParams,
        param ratep: i64 = dflt(Int, -1i64, "pktgen packets per second per flow; -1: unlimited"),
        param burst: u32 = dflt(Int, 1i64, "pktgen burst (copies of each packet)")
            .range(1.0, 65_536.0),
        param backlog_size: u32 = dflt(Int, 512i64, "cpumap queue size per CPU (xdp-bench -q)")
            .range(1.0, 16_384.0),
        param xdp_redirect_program: RedirectProgram = dflt(
            RedirectProgram::param_type(),
            "l4-dport",
            "how xdp-bench spreads packets over the CPUs (-p; l4-dport/l4-sport need xdp-tools >= 1.5)",
        ),
        param xdp_redirect_remote_action: RedirectRemoteAction = dflt(
            RedirectRemoteAction::param_type(),
            "drop",
            "what the target CPUs do with the packets (xdp-bench -r)",
        ),
    }
}

/// XDPRedirectCPURecipe: host2 zeroes its RSS hash key and turns rxhash off, so one queue (one
/// IRQ CPU) takes every packet; `xdp-bench redirect-cpu` spreads them over `perf_tool_cpu`.
#[derive(Debug, Clone, PartialEq)]
pub struct XDPRedirectCPURecipe(pub XdpRedirectCpuParams);

impl ParamSet for XDPRedirectCPURecipe {
    fn specs() -> Vec<ParamSpec> {
        XdpRedirectCpuParams::specs()
            .into_iter()
            .map(|mut s| {
                if s.name == "perf_tool_cpu" {
                    s.mandatory = true;
                    s.doc = "target CPUs on host2 (xdp-bench -c); pktgen on host1 uses them round-robin";
                }
                s
            })
            .collect()
    }
    fn from_resolved(p: &ResolvedParams) -> Result<Self, SchemaError> {
        XdpRedirectCpuParams::from_resolved(p).map(XDPRedirectCPURecipe)
    }
}

impl Recipe for XDPRedirectCPURecipe {
    const NAME: &'static str = "XDPRedirectCPURecipe";
    const DOC: &'static str =
        "pktgen from host1 to host2.eth0, where xdp-bench redirect-cpu spreads the packets over CPUs; per-CPU packet rates";

    fn validate(&self) -> Result<(), SchemaError> {
        require_perf_tool_cpu(Self::NAME, &self.0.sn.base())?;
        self.0.mdi.check(&self.0.sn.nics())
    }

    fn requirements(&self) -> Requirements {
        Recipe::requirements(&self.0.sn)
    }

    fn layout() -> Requirements {
        SimpleNetworkRecipe::layout()
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for XDPRedirectCPURecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.0.sn.base()
    }
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        self.0.sn.test_wide_configuration()
    }

    /// host2.eth0: the RSS hash key zeroed (when the device reports one; upstream only warns
    /// otherwise) and rxhash off (an explicit off where the device has no such setting is not
    /// a failure). The key comes back from the agent's journal when the recipe ends (upstream
    /// writes it back in `test_wide_deconfiguration`, the step before), rxhash with the
    /// test-wide scope.
    async fn test_wide_extra(
        &self,
        ctx: &mut RunContext,
        _config: &Configured,
    ) -> Result<Vec<String>, RecipeError> {
        {
            let dev = self.0.sn.nics()[1].clone();
            let ifname = ctx.ifname(&dev)?;
            let client = ctx.client(&dev.host)?;
            let mut lines = Vec::new();
            match client.get_rss(&ifname).await {
                Ok(rss) if rss.key.as_deref().is_some_and(|k| !k.is_empty()) => {
                    let key = rss.key.unwrap_or_default();
                    let zero = vec!["00"; key.split(':').count()].join(":");
                    client
                        .set_rss(&ifname, None, Some(&zero), None)
                        .await
                        .map_err(|e| {
                            RecipeError::Run(format!("{dev}: zeroing the RSS hash key: {e}"))
                        })?;
                    lines.push(format!(
                        "{dev}: RSS hash key zeroed (original length: {} bytes)",
                        key.split(':').count()
                    ));
                }
                Ok(_) => lines.push(format!(
                    "{dev}: the device reports no RSS hash key; left as it is"
                )),
                Err(e) => {
                    tracing::warn!("{dev}: reading the RSS hash key: {e}");
                    lines.push(format!(
                        "{dev}: RSS hash key not readable ({e}); left as it is"
                    ));
                }
            }
            ctx.set_offloads(&dev, &[("rxhash".to_string(), false)], "rxhash=off")
                .await?;
            lines.push(format!("{dev}: rxhash off"));
            Ok(lines)
        }
    }

    fn ping_endpoints(&self, c: &Configured) -> Vec<PingEndpoints> {
        self.0.sn.ping_endpoints(c)
    }
    fn perf_endpoints(&self, c: &Configured) -> Vec<Vec<EndpointPair>> {
        self.0.sn.perf_endpoints(c)
    }
    fn sub_configurations(&self) -> SubConfigs<'_> {
        self.0.sn.sub_configurations()
    }
    fn packet_measurement(&self) -> Option<PacketMeasurement> {
        let p = &self.0;
        Some(PacketMeasurement::XdpRedirectCpu {
            cpus: p.sn.base.flows.perf_tool_cpu.clone().unwrap_or_default(),
            program: match p.xdp_redirect_program {
                RedirectProgram::L4Dport => XdpRedirectProgram::L4Dport,
                RedirectProgram::L4Sport => XdpRedirectProgram::L4Sport,
                RedirectProgram::RoundRobin => XdpRedirectProgram::RoundRobin,
            },
            remote_action: match p.xdp_redirect_remote_action {
                RedirectRemoteAction::Disabled => XdpRemoteAction::Disabled,
                RedirectRemoteAction::Drop => XdpRemoteAction::Drop,
                RedirectRemoteAction::Pass => XdpRemoteAction::Pass,
                RedirectRemoteAction::Redirect => XdpRemoteAction::Redirect,
            },
            backlog_size: p.backlog_size,
            ratep: p.ratep,
            burst: p.burst,
        })
    }
    fn multi_dev_interrupt_config(&self) -> Option<&MultiDevInterruptConfig> {
        Some(self.0.mdi.config())
    }
}
