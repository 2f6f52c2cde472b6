//! Sub-configurations (upstream `ConfigMixins/`): which apply on which devices is the
//! recipe's choice ([`SubConfigs`], upstream's mixins and dev-list properties); generating,
//! applying, describing and removing them is the base's. Every change is pushed on the
//! context's undo stack, so the base removes them in reverse order, also after a failure.
//!
//! Order (upstream's cooperative `apply_sub_configuration`, super() first): idle states,
//! turbo boost, offloads, then the `hw_config` bodies in reverse MRO — MTU, coalescing, IRQ
//! pinning (`dev_intr_cpu`), pause frames, per-device IRQ pinning
//! (`multi_dev_interrupt_config`). Each is one undo group, so `remove_sub_configuration` runs
//! in the reverse order (`hw_deconfig` in MRO), and inside a group in upstream's order: pause
//! frames rx on every device then tx; coalescing per device the numbers, then the adaptive
//! modes. A device or host that cannot do what is asked fails the sub-configuration before any
//! traffic, with the reason; an explicit "off" where the setting does not exist is not a
//! failure (the description says so).

use super::devparams::{coalesce_attribute, is_adaptive, CoalesceValue, MultiDevInterruptConfig};
use super::params::{CommonHwParams, EnrtBase};
use crate::protocol::IrqPolicy;
use crate::recipes::context::{Dev, RecipeError, RunContext, Tuned, Undo};
use crate::recipes::typed::OffloadCombination;
use crate::results::{ResultEntry, ResultType};

/// CommonHWSubConfigMixin: the hardware settings and the devices each applies on.
#[derive(Debug, Clone, PartialEq)]
pub struct HwConfig<'a> {
    pub params: &'a CommonHwParams,
    /// `mtu_hw_config_dev_list`.
    pub mtu_devs: Vec<Dev>,
    /// `pause_frames_dev_list`.
    pub pause_frames_devs: Vec<Dev>,
    /// `dev_interrupt_hw_config_dev_list`.
    pub dev_interrupt_devs: Vec<Dev>,
    /// `parallel_stream_qdisc_hw_config_dev_list`.
    pub parallel_stream_qdisc_devs: Vec<Dev>,
}

impl HwConfig<'_> {
    /// All four lists on the same devices (most recipes).
    pub fn on<'a>(params: &'a CommonHwParams, devs: &[Dev]) -> HwConfig<'a> {
        HwConfig {
            params,
            mtu_devs: devs.to_vec(),
            pause_frames_devs: devs.to_vec(),
            dev_interrupt_devs: devs.to_vec(),
            parallel_stream_qdisc_devs: devs.to_vec(),
        }
    }
}

/// The sub-configurations of a recipe: which mixins it has, on which devices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubConfigs<'a> {
    /// OffloadSubConfigMixin: one sub-configuration per combination, set on these devices
    /// (`offload_nics`).
    pub offloads: Option<(&'a [OffloadCombination], Vec<Dev>)>,
    /// CommonHWSubConfigMixin.
    pub hw: Option<HwConfig<'a>>,
}

/// One generated sub-configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubConfig {
    /// The offload combination (None or empty: the offloads are left as they are).
    pub offloads: Option<OffloadCombination>,
}

impl SubConfig {
    /// `gro=on gso=off ...`, empty without offloads.
    pub fn describe_offloads(&self) -> String {
        self.offloads
            .as_ref()
            .map(OffloadCombination::describe)
            .unwrap_or_default()
    }

    /// Upstream's SCTP/offload conflict (OffloadSubConfigMixin.generate_flow_combinations):
    /// no sctp flows when any feature is off while gso is on (an unset gso counts as on).
    pub fn sctp_conflict(&self) -> bool {
        let Some(c) = self.offloads.as_ref().filter(|c| !c.0.is_empty()) else {
            return false;
        };
        let any_off = c.0.iter().any(|(_, v)| !v);
        any_off && c.get("gso").unwrap_or(true)
    }
}

/// `host1.eth0` as upstream's `_describe_dev_attribute` names a device: the host id and the
/// device's name on the machine.
fn attr_dev(ctx: &RunContext, dev: &Dev) -> String {
    let name = ctx.ifname(dev).unwrap_or_else(|_| dev.id.clone());
    format!("{}.{name}", ctx.root_host(&dev.host))
}

/// One described attribute setting: `host1.eth0.rx_pause_frames configured to False,
/// original value True`.
fn attr_line<T: std::fmt::Display>(
    ctx: &RunContext,
    dev: &Dev,
    attr: &str,
    value: &str,
    out: &Tuned<T>,
) -> String {
    let who = attr_dev(ctx, dev);
    match out {
        Tuned::Changed { old } => {
            format!("{who}.{attr} configured to {value}, original value {old}")
        }
        Tuned::Unchanged => format!("{who}.{attr} configured to {value}, original value {value}"),
        Tuned::NotApplicable { reason } => {
            format!("{who}.{attr} left alone: {value} asked and the device has no such setting ({reason})")
        }
    }
}

/// Python's `True`/`False`.
fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// Python's list repr of CPU ids: `[0, 1]`.
fn py_list(cpus: &[u32]) -> String {
    format!(
        "[{}]",
        cpus.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The distinct hosts of `devs` (root hosts, first-seen order).
fn hosts_of(ctx: &RunContext, devs: &[&Dev]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in devs {
        let h = ctx.root_host(&d.host).to_string();
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Pin the IRQs of each `(device, cpus, policy)`; the description lines (irqbalance per host,
/// then one line per device via `line`).
async fn pin_all(
    ctx: &mut RunContext,
    devs: &[(&Dev, &[u32], IrqPolicy)],
    param: &str,
    line: impl Fn(&str, &[u32], IrqPolicy) -> String,
) -> Result<Vec<String>, RecipeError> {
    let all: Vec<&Dev> = devs.iter().map(|(d, _, _)| *d).collect();
    let hosts = hosts_of(ctx, &all);
    let mut stopped: Vec<String> = Vec::new();
    let mut running: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for (dev, cpus, policy) in devs {
        let p = ctx.pin_irqs(dev, cpus, *policy, param).await?;
        let host = ctx.root_host(&dev.host).to_string();
        if p.irqbalance_stopped && !stopped.contains(&host) {
            stopped.push(host.clone());
        }
        if p.irqbalance_running && !running.contains(&host) {
            running.push(host);
        }
        let mut l = line(
            &format!("{}.{}", ctx.root_host(&dev.host), dev.id),
            cpus,
            *policy,
        );
        let kept = p.irqs.iter().filter(|i| i.skipped.is_some()).count();
        if kept > 0 {
            l.push_str(&format!(
                " ({kept} of {} IRQs are kernel-managed and kept their affinity)",
                p.irqs.len()
            ));
        }
        lines.push(l);
    }
    let mut desc = Vec::new();
    for h in hosts {
        if stopped.contains(&h) {
            desc.push(format!("{h} irqbalance stopped"));
        } else if running.contains(&h) {
            desc.push(format!("{h} irqbalance still running (it was not stopped)"));
        } else {
            desc.push(format!("{h} irqbalance not running"));
        }
    }
    desc.extend(lines);
    Ok(desc)
}

/// MultiDevInterruptHWConfigMixin: each device's IRQs pinned to its own CPUs by its own
/// policy (a device with no CPUs is skipped, as upstream).
async fn apply_multi_dev_interrupt(
    ctx: &mut RunContext,
    m: &MultiDevInterruptConfig,
) -> Result<Vec<String>, RecipeError> {
    let devs: Vec<(&Dev, &[u32], IrqPolicy)> =
        m.0.iter()
            .filter(|(_, c)| !c.cpus.is_empty())
            .map(|(d, c)| (d, c.cpus.as_slice(), c.policy))
            .collect();
    if devs.is_empty() {
        return Ok(vec!["Device irq configuration skipped.".into()]);
    }
    ctx.begin_undo_group();
    pin_all(ctx, &devs, "multi_dev_interrupt_config", |d, c, policy| {
        let name = match policy {
            IrqPolicy::RoundRobin => "round-robin",
            IrqPolicy::All => "all",
        };
        format!("{d} irqs bound to cpu {} with policy:{name}", py_list(c))
    })
    .await
}

impl SubConfigs<'_> {
    /// Upstream `generate_sub_configurations`: one per offload combination, or one.
    pub fn generate(&self) -> Vec<SubConfig> {
        match &self.offloads {
            Some((combos, _)) if !combos.is_empty() => combos
                .iter()
                .map(|c| SubConfig {
                    offloads: Some(c.clone()),
                })
                .collect(),
            _ => vec![SubConfig::default()],
        }
    }

    /// Upstream `apply_sub_configuration` and `describe_sub_configuration`. `tuning_hosts`:
    /// where idle states and turbo boost are set (every matched host, or the hypervisors);
    /// `multi_dev_interrupt`: the recipe's MultiDevInterruptHWConfigMixin configuration, when
    /// it has the mixin ([`super::EnrtRecipe::multi_dev_interrupt_config`]).
    /// Upstream `apply_sub_configuration` and `describe_sub_configuration`. `nic`: the
    /// recipe's per-device NIC tunables, applied (and described) after the rest.
    pub async fn apply(
        &self,
        ctx: &mut RunContext,
        sub: &SubConfig,
        base: EnrtBase<'_>,
        tuning_hosts: &[String],
        multi_dev_interrupt: Option<&MultiDevInterruptConfig>,
        nic: Option<super::NicTunables<'_>>,
    ) -> Result<(), RecipeError> {
        let mut desc = vec!["Sub configuration description:".to_string()];
        // DisableIdleStatesMixin, DisableTurboboostMixin.
        if let Some(latency) = base.baremetal.minimal_idlestates_latency {
            ctx.begin_undo_group();
            for host in tuning_hosts {
                ctx.disable_idle_states(host, u64::from(latency)).await?;
                desc.push(format!(
                    "disabled idle states with latency higher than {latency} on host {host}"
                ));
            }
        }
        if base.baremetal.disable_turboboost {
            ctx.begin_undo_group();
            for host in tuning_hosts {
                ctx.disable_turbo_boost(host).await?;
                desc.push(format!("turboboost disabled on {host}"));
            }
        }
        if let (Some(combo), Some((_, devs))) = (&sub.offloads, &self.offloads) {
            if !combo.0.is_empty() {
                let shown = combo.describe();
                ctx.begin_undo_group();
                for dev in devs {
                    ctx.set_offloads(dev, &combo.0, &shown).await?;
                }
                desc.push(format!("Currently configured offload combination: {shown}"));
            }
        }
        if let Some(hw) = &self.hw {
            desc.extend(hw.apply(ctx, base).await?);
        }
        // MultiDevInterruptHWConfigMixin: first in the MRO, so its hw_config body runs last.
        if let Some(m) = multi_dev_interrupt {
            desc.extend(apply_multi_dev_interrupt(ctx, m).await?);
        }
        if let Some(nic) = nic {
            desc.extend(nic.apply(ctx).await?);
        }
        ctx.add(ResultEntry::generic(ResultType::Pass, desc.join("\n")));
        Ok(())
    }
}

impl HwConfig<'_> {
    /// The `hw_config` chain in reverse MRO; its description lines.
    async fn apply(
        &self,
        ctx: &mut RunContext,
        base: EnrtBase<'_>,
    ) -> Result<Vec<String>, RecipeError> {
        let mut desc = Vec::new();
        let p = self.params;
        // MTUHWConfigMixin.
        match p.mtu {
            Some(mtu) => {
                ctx.begin_undo_group();
                for dev in &self.mtu_devs {
                    ctx.set_mtu(dev, mtu, true).await?;
                }
                let devs: Vec<String> = self.mtu_devs.iter().map(Dev::to_string).collect();
                desc.push(format!("Configured mtu {mtu} on {}", devs.join(" and ")));
            }
            None => desc.push("mtu configuration skipped.".into()),
        }
        // CoalescingHWConfigMixin (applied before the IRQs, described after them).
        let coalescing = self.apply_coalescing(ctx).await?;
        // DevInterruptHWConfigMixin.
        match &p.dev_intr_cpu {
            Some(cpus) if !self.dev_interrupt_devs.is_empty() => {
                ctx.begin_undo_group();
                let devs: Vec<(&Dev, &[u32], IrqPolicy)> = self
                    .dev_interrupt_devs
                    .iter()
                    .map(|d| (d, cpus.as_slice(), IrqPolicy::RoundRobin))
                    .collect();
                desc.extend(
                    pin_all(ctx, &devs, "dev_intr_cpu", |d, c, _| {
                        format!("{d} irqs bound to cpu {}", py_list(c))
                    })
                    .await?,
                );
            }
            _ => desc.push("Device irq configuration skipped.".into()),
        }
        desc.extend(coalescing);
        if base.flows.perf_parallel_streams > 1 && !self.parallel_stream_qdisc_devs.is_empty() {
            desc.push(
                "mq qdisc not applied: lnst-agent has no qdisc operation (streams share the default qdisc)."
                    .into(),
            );
        }
        // PauseFramesHWConfigMixin.
        desc.extend(self.apply_pause(ctx).await?);
        Ok(desc)
    }

    /// CoalescingHWConfigMixin: per device, the adaptive modes first (tx, rx), then every
    /// other setting in the order given; each change's old value is pushed so that the numbers
    /// come back before the adaptive modes. The description lines, by attribute name.
    async fn apply_coalescing(&self, ctx: &mut RunContext) -> Result<Vec<String>, RecipeError> {
        let settings = &self.params.coalescing_settings;
        if settings.is_empty() {
            return Ok(vec!["Device coalescing configuration skipped.".into()]);
        }
        ctx.begin_undo_group();
        let mut lines: Vec<(String, String)> = Vec::new();
        for (dev, items) in &settings.0 {
            // The device must be one of the recipe's (a namespace the recipe created counts).
            ctx.ifname(dev).map_err(|e| {
                RecipeError::Run(format!(
                    "coalescing_settings: {dev}: not a device of this recipe ({e})"
                ))
            })?;
            let mut order: Vec<&(String, CoalesceValue)> = Vec::new();
            for k in ["adaptive-tx", "adaptive-rx"] {
                order.extend(items.iter().filter(|(key, _)| key == k));
            }
            order.extend(items.iter().filter(|(key, _)| !is_adaptive(key)));
            let mut done: Vec<(String, CoalesceValue, CoalesceValue)> = Vec::new();
            let mut result = Ok(());
            for (key, value) in order {
                match ctx.set_coalescing(dev, key, *value).await {
                    Ok(out) => {
                        if let Tuned::Changed { old } = &out {
                            done.push((key.clone(), *old, *value));
                        }
                        let attr = coalesce_attribute(key);
                        let l = attr_line(ctx, dev, &attr, &value.to_string(), &out);
                        lines.push((attr, l));
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            // hw_deconfig: the numbers in the order given, then the adaptive modes.
            let numbers = items.iter().filter(|(k, _)| !is_adaptive(k));
            let adaptive = items.iter().filter(|(k, _)| is_adaptive(k));
            for (key, _) in numbers.chain(adaptive) {
                if let Some((_, old, set)) = done.iter().find(|(k, _, _)| k == key) {
                    ctx.push_undo(Undo::Coalesce {
                        dev: dev.clone(),
                        key: key.clone(),
                        old: *old,
                        set: *set,
                    });
                }
            }
            result?;
        }
        // describe_hw_config: the attributes sorted by name.
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(lines.into_iter().map(|(_, l)| l).collect())
    }

    /// PauseFramesHWConfigMixin: rx on every device, then tx.
    async fn apply_pause(&self, ctx: &mut RunContext) -> Result<Vec<String>, RecipeError> {
        let p = self.params;
        if p.rx_pause_frames.is_none() && p.tx_pause_frames.is_none() {
            return Ok(vec!["Pause frames configuration skipped.".into()]);
        }
        if self.pause_frames_devs.is_empty() {
            // Upstream's list is empty for this recipe (teams, DoubleBond, the virtual
            // recipes): nothing is set, and the description says so instead of nothing.
            return Ok(vec![
                "Pause frames configuration skipped: this recipe has no pause-frame devices (upstream's pause_frames_dev_list is empty)."
                    .into(),
            ]);
        }
        ctx.begin_undo_group();
        let mut desc = Vec::new();
        for (rx, name, value) in [
            (true, "rx_pause_frames", p.rx_pause_frames),
            (false, "tx_pause_frames", p.tx_pause_frames),
        ] {
            let Some(value) = value else {
                desc.push(format!("{name} configuration skipped."));
                continue;
            };
            for dev in &self.pause_frames_devs {
                let (out, forced) = ctx.set_pause_frames(dev, rx, value).await?;
                let out = match out {
                    Tuned::Changed { old } => Tuned::Changed { old: py_bool(old) },
                    Tuned::Unchanged => Tuned::Unchanged,
                    Tuned::NotApplicable { reason } => Tuned::NotApplicable { reason },
                };
                let shown = py_bool(value);
                let mut line = attr_line(ctx, dev, name, shown, &out);
                if forced {
                    line.push_str(
                        " (pause autonegotiation turned off: the driver ignored the value while it was on)",
                    );
                }
                desc.push(line);
            }
        }
        Ok(desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn combo(items: &[(&str, bool)]) -> SubConfig {
        SubConfig {
            offloads: Some(OffloadCombination(
                items.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            )),
        }
    }

    #[test]
    fn sctp_conflict_rule() {
        assert!(!SubConfig::default().sctp_conflict());
        assert!(!combo(&[]).sctp_conflict());
        assert!(!combo(&[("gro", true), ("gso", true)]).sctp_conflict());
        // combination 2 of the defaults: gro off, gso on → skipped
        assert!(combo(&[("gro", false), ("gso", true), ("tso", true)]).sctp_conflict());
        // combination 3: gso off → not skipped
        assert!(!combo(&[("gro", true), ("gso", false), ("tso", false)]).sctp_conflict());
        // gso absent counts as on
        assert!(combo(&[("rx", false)]).sctp_conflict());
    }

    #[test]
    fn one_sub_configuration_per_combination() {
        let combos = vec![
            OffloadCombination(vec![("gro".into(), true)]),
            OffloadCombination(vec![("gro".into(), false)]),
        ];
        let dev = Dev::new("h", "d");
        let s = SubConfigs {
            offloads: Some((&combos, vec![dev])),
            hw: None,
        };
        assert_eq!(s.generate().len(), 2);
        assert_eq!(s.generate()[1].describe_offloads(), "gro=off");
        assert_eq!(SubConfigs::default().generate(), vec![SubConfig::default()]);
    }
}
