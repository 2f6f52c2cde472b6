//! Sub-configurations (upstream `ConfigMixins/`): which apply on which devices is the
//! recipe's choice ([`SubConfigs`], upstream's mixins and dev-list properties); generating,
//! applying, describing and removing them is the base's. Every change is pushed on the
//! context's undo stack, so the base removes them in reverse order, also after a failure.

use super::params::{CommonHwParams, EnrtBase};
use crate::recipes::context::{Dev, RecipeError, RunContext};
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

    /// Settings the agent cannot apply (the test FAILs with these reasons).
    pub(super) fn unsupported(&self) -> Vec<String> {
        let p = self.params;
        let mut out = Vec::new();
        let pause = "pause frame configuration (ethtool -A) is not implemented by lnst-agent and veth devices have no pause frames";
        if p.rx_pause_frames.is_some() {
            out.push(format!("rx_pause_frames: {pause}"));
        }
        if p.tx_pause_frames.is_some() {
            out.push(format!("tx_pause_frames: {pause}"));
        }
        if p.dev_intr_cpu.is_some() {
            out.push("dev_intr_cpu: IRQ pinning is not implemented by lnst-agent (veth and container NICs have no IRQs)".into());
        }
        out
    }

    pub(super) fn unsupported_coalescing(&self) -> Vec<String> {
        match self.params.coalescing_settings.as_dict() {
            Some(d) if !d.is_empty() => vec!["coalescing_settings: interrupt coalescing (ethtool -C) is not implemented by lnst-agent".into()],
            _ => Vec::new(),
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

    /// Upstream `apply_sub_configuration` and `describe_sub_configuration`. `nic`: the
    /// recipe's per-device NIC tunables, applied (and described) after the rest.
    pub async fn apply(
        &self,
        ctx: &mut RunContext,
        sub: &SubConfig,
        base: EnrtBase<'_>,
        nic: Option<super::NicTunables<'_>>,
    ) -> Result<(), RecipeError> {
        let mut desc = vec!["Sub configuration description:".to_string()];
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
            match hw.params.mtu {
                Some(mtu) => {
                    ctx.begin_undo_group();
                    for dev in &hw.mtu_devs {
                        ctx.set_mtu(dev, mtu, true).await?;
                    }
                    let devs: Vec<String> = hw.mtu_devs.iter().map(Dev::to_string).collect();
                    desc.push(format!("Configured mtu {mtu} on {}", devs.join(" and ")));
                }
                None => desc.push("mtu configuration skipped.".into()),
            }
            desc.push("Device irq configuration skipped.".into());
            desc.push("Device coalescing configuration skipped.".into());
            if base.flows.perf_parallel_streams > 1 && !hw.parallel_stream_qdisc_devs.is_empty() {
                desc.push(
                    "mq qdisc not applied: lnst-agent has no qdisc operation (streams share the default qdisc)."
                        .into(),
                );
            }
            desc.push("Pause frames configuration skipped.".into());
        }
        if let Some(nic) = nic {
            desc.extend(nic.apply(ctx).await?);
        }
        ctx.add(ResultEntry::generic(ResultType::Pass, desc.join("\n")));
        Ok(())
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
