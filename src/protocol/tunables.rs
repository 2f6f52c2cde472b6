//! Wire types of the device and host tunables (`SetPause`, `SetCoalesce`, `SetChannels`,
//! `SetRss`, `SetRxFlowHash`, `SetIrqAffinity`, `SetTurboBoost`, `DisableIdleStates`,
//! `DropCaches`, …; see docs/PROTOCOL.md §6.2) and of the `LinuxPerf` job's result.
//!
//! The agent turns these typed fields into `ethtool` argv elements and sysfs/procfs writes;
//! nothing the controller sends reaches a command line unchecked.

use serde::{Deserialize, Serialize};

/// Pause-frame parameters of a device (`ethtool -a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseParams {
    /// Pause autonegotiation; None when ethtool does not report it.
    #[serde(default)]
    pub autoneg: Option<bool>,
    pub rx: bool,
    pub tx: bool,
}

macro_rules! coalesce_struct {
    ($($(#[$doc:meta])* $field:ident => $name:literal $(| $alias:literal)?),* $(,)?) => {
        /// Interrupt coalescing of a device. On the wire the keys are `ethtool -C`'s names
        /// (`adaptive-rx`, `rx-usecs`, …). Read (`GetCoalesce`): a key is absent when the
        /// device does not support it (ethtool prints `n/a`). Write (`SetCoalesce`): only the
        /// keys present are changed.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Coalesce {
            #[serde(default, rename = "adaptive-rx", skip_serializing_if = "Option::is_none")]
            pub adaptive_rx: Option<bool>,
            #[serde(default, rename = "adaptive-tx", skip_serializing_if = "Option::is_none")]
            pub adaptive_tx: Option<bool>,
            $(
                $(#[$doc])*
                #[serde(default, rename = $name, skip_serializing_if = "Option::is_none")]
                pub $field: Option<u32>,
            )*
        }

        impl Coalesce {
            /// The numeric parameters with their `ethtool -C` names.
            pub fn numbers(&self) -> Vec<(&'static str, Option<u32>)> {
                vec![$(($name, self.$field)),*]
            }

            /// The numeric parameter named `name` as `ethtool -C` or `ethtool -c` spells it
            /// (`-c` prints `rx-frame-low` for `-C`'s `rx-frames-low`).
            pub fn number_mut(&mut self, name: &str) -> Option<&mut Option<u32>> {
                match name {
                    $($name $(| $alias)? => Some(&mut self.$field),)*
                    _ => None,
                }
            }
        }
    };
}

coalesce_struct! {
    stats_block_usecs => "stats-block-usecs",
    sample_interval => "sample-interval",
    pkt_rate_low => "pkt-rate-low",
    pkt_rate_high => "pkt-rate-high",
    rx_usecs => "rx-usecs",
    rx_frames => "rx-frames",
    rx_usecs_irq => "rx-usecs-irq",
    rx_frames_irq => "rx-frames-irq",
    tx_usecs => "tx-usecs",
    tx_frames => "tx-frames",
    tx_usecs_irq => "tx-usecs-irq",
    tx_frames_irq => "tx-frames-irq",
    rx_usecs_low => "rx-usecs-low",
    rx_frames_low => "rx-frames-low" | "rx-frame-low",
    tx_usecs_low => "tx-usecs-low",
    tx_frames_low => "tx-frames-low" | "tx-frame-low",
    rx_usecs_high => "rx-usecs-high",
    rx_frames_high => "rx-frames-high" | "rx-frame-high",
    tx_usecs_high => "tx-usecs-high",
    tx_frames_high => "tx-frames-high" | "tx-frame-high",
}

impl Coalesce {
    /// The boolean parameters with their `ethtool -C` names.
    pub fn flags(&self) -> [(&'static str, Option<bool>); 2] {
        [
            ("adaptive-rx", self.adaptive_rx),
            ("adaptive-tx", self.adaptive_tx),
        ]
    }

    /// Whether no parameter is set.
    pub fn is_empty(&self) -> bool {
        self.flags().iter().all(|(_, v)| v.is_none())
            && self.numbers().iter().all(|(_, v)| v.is_none())
    }
}

/// Channel (queue) counts of a device (`ethtool -l`/`-L`); None: the device has no such
/// channels (`n/a`), or, in `SetChannels`, leave it alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<u32>,
}

impl ChannelCounts {
    /// The counts with their `ethtool -L` names.
    pub fn named(&self) -> [(&'static str, Option<u32>); 4] {
        [
            ("rx", self.rx),
            ("tx", self.tx),
            ("other", self.other),
            ("combined", self.combined),
        ]
    }

    /// The count named `name` (`rx`, `tx`, `other`, `combined`).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Option<u32>> {
        match name {
            "rx" => Some(&mut self.rx),
            "tx" => Some(&mut self.tx),
            "other" => Some(&mut self.other),
            "combined" => Some(&mut self.combined),
            _ => None,
        }
    }
}

/// `GetChannels`: the maxima and the current counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub max: ChannelCounts,
    pub current: ChannelCounts,
}

/// One RSS hash function a device offers, or one RSS input transformation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFlag {
    pub name: String,
    pub on: bool,
}

/// `GetRss`: RSS hash function, key and input transformations (`ethtool -x`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RssInfo {
    /// The hash functions the device lists (`toeplitz`, `xor`, `crc32`), the active one on.
    pub hfuncs: Vec<NamedFlag>,
    /// The hash key as lower-case `aa:bb:…`; None when the device does not report one.
    #[serde(default)]
    pub key: Option<String>,
    /// RSS input transformations (`symmetric-xor`); None when this ethtool or device does not
    /// report them.
    #[serde(default)]
    pub xfrm: Option<Vec<NamedFlag>>,
}

impl RssInfo {
    /// The active hash function.
    pub fn active_hfunc(&self) -> Option<&str> {
        self.hfuncs.iter().find(|f| f.on).map(|f| f.name.as_str())
    }

    /// The input transformations that are on.
    pub fn xfrm_on(&self) -> Option<Vec<String>> {
        self.xfrm
            .as_ref()
            .map(|v| v.iter().filter(|f| f.on).map(|f| f.name.clone()).collect())
    }
}

/// A flow type of `ethtool -n/-N … rx-flow-hash TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowType {
    Tcp4,
    Udp4,
    Sctp4,
    Ah4,
    Esp4,
    Tcp6,
    Udp6,
    Sctp6,
    Ah6,
    Esp6,
}

impl FlowType {
    pub const ALL: [FlowType; 10] = [
        FlowType::Tcp4,
        FlowType::Udp4,
        FlowType::Sctp4,
        FlowType::Ah4,
        FlowType::Esp4,
        FlowType::Tcp6,
        FlowType::Udp6,
        FlowType::Sctp6,
        FlowType::Ah6,
        FlowType::Esp6,
    ];

    /// ethtool's name.
    pub fn name(self) -> &'static str {
        match self {
            FlowType::Tcp4 => "tcp4",
            FlowType::Udp4 => "udp4",
            FlowType::Sctp4 => "sctp4",
            FlowType::Ah4 => "ah4",
            FlowType::Esp4 => "esp4",
            FlowType::Tcp6 => "tcp6",
            FlowType::Udp6 => "udp6",
            FlowType::Sctp6 => "sctp6",
            FlowType::Ah6 => "ah6",
            FlowType::Esp6 => "esp6",
        }
    }

    /// A flow type as a recipe parameter gives it (`tcp4`).
    pub fn parse(s: &str) -> Option<FlowType> {
        FlowType::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// How `SetIrqAffinity` spreads a device's IRQs over the CPUs (upstream's `cpu_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IrqPolicy {
    /// IRQ i goes to `cpus[i % len]` (upstream's default).
    #[default]
    #[serde(rename = "round-robin")]
    RoundRobin,
    /// Every IRQ may go to every CPU of the list.
    #[serde(rename = "all")]
    All,
}

/// One IRQ of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqInfo {
    pub irq: u32,
    /// The handler names from /proc/interrupts (`virtio2-input.0`, `eth0-TxRx-0`).
    pub name: String,
    /// /proc/irq/N/smp_affinity_list (`0-3`).
    pub affinity: String,
}

/// One IRQ `SetIrqAffinity` touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqPin {
    pub irq: u32,
    pub name: String,
    /// The affinity list before.
    pub previous: String,
    /// The list written.
    pub requested: String,
    /// The list the kernel reports afterwards.
    pub now: String,
    /// Why this IRQ kept its affinity (a kernel-managed IRQ refuses writes); None when pinned.
    #[serde(default)]
    pub skipped: Option<String>,
}

/// `SetIrqAffinity`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqPinning {
    pub irqs: Vec<IrqPin>,
    /// irqbalance runs on the agent's host (it may move the IRQs again unless stopped).
    pub irqbalance_running: bool,
    /// The agent stopped irqbalance for this session (started again at the end).
    pub irqbalance_stopped: bool,
}

/// One IRQ and the affinity list to give it (`RestoreIrqAffinity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqAffinity {
    pub irq: u32,
    /// A CPU list as smp_affinity_list prints it (`0-3,6`).
    pub affinity: String,
}

/// One CPU idle state by CPU and state number (`EnableIdleStates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleStateId {
    pub cpu: u32,
    pub state: u32,
}

/// `GetCpus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuInfo {
    /// /sys/devices/system/cpu/online.
    pub online: Vec<u32>,
    /// The agent's own affinity (what jobs may be pinned to).
    pub allowed: Vec<u32>,
}

/// What `DropCaches` drops (the value written to /proc/sys/vm/drop_caches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropCachesWhat {
    /// 1: the page cache (what upstream's DropCachesPerfTestMixin writes).
    Pagecache,
    /// 2: reclaimable slab objects (dentries, inodes).
    Slab,
    /// 3: both.
    #[default]
    All,
}

impl DropCachesWhat {
    pub fn value(self) -> &'static str {
        match self {
            DropCachesWhat::Pagecache => "1",
            DropCachesWhat::Slab => "2",
            DropCachesWhat::All => "3",
        }
    }
}

/// One CPU idle state (`/sys/devices/system/cpu/cpuN/cpuidle/stateM`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleState {
    pub cpu: u32,
    pub state: u32,
    pub name: String,
    pub latency_us: u64,
    pub disabled: bool,
}

/// What a `Set…` operation found before it changed anything (restored at the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Previous {
    Pause(PauseParams),
    /// The changed coalescing parameters' old values.
    Coalesce(Box<Coalesce>),
    /// The changed counts' old values.
    Channels(ChannelCounts),
    Rss(RssInfo),
    FlowHash {
        fields: String,
    },
    TurboBoost {
        enabled: bool,
    },
    /// The idle states this call disabled, as they were.
    IdleStates {
        states: Vec<IdleState>,
    },
}

/// The outcome of a `Set…` tunable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", deny_unknown_fields)]
pub enum SetOutcome {
    /// Changed; the previous state is journaled and restored at EndRecipe and session end.
    Applied { previous: Previous },
    /// Already as requested: nothing changed, nothing journaled.
    Unchanged,
    /// The device has no such setting and every value requested was "off": nothing to do,
    /// which the controller may count as success (an explicit off on a device without the
    /// feature is not a failure). A request for "on" gets `Unsupported` instead.
    NotApplicable { reason: String },
}

/// `JobResult.data` of a `LinuxPerf` job: the `perf record` output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerfData {
    /// `perf.data` bytes, standard base64.
    pub perf_data_b64: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// `perf --version`.
    #[serde(default)]
    pub perf_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{JobSpec, Op, Reply};
    use serde_json::json;

    #[test]
    fn wire_shapes() {
        let o: Op = serde_json::from_value(json!({"op": "SetCoalesce", "ifname": "eth0",
            "settings": {"adaptive-rx": false, "rx-usecs": 16, "rx-frames": 32}}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o,
            Op::SetCoalesce {
                ifname: "eth0".into(),
                settings: Box::new(Coalesce {
                    adaptive_rx: Some(false),
                    rx_usecs: Some(16),
                    rx_frames: Some(32),
                    ..Coalesce::default()
                })
            }
        );
        // Unknown keys are refused, including -c's spelling of the low/high frames.
        for bad in [
            json!({"op": "SetCoalesce", "ifname": "eth0", "settings": {"rx-usec": 1}}),
            json!({"op": "SetCoalesce", "ifname": "eth0", "settings": {"rx-frame-low": 1}}),
            json!({"op": "SetChannels", "ifname": "eth0", "channels": {"queues": 1}}),
            json!({"op": "SetRxFlowHash", "ifname": "eth0", "flow_type": "ip4", "fields": "sd"}),
            json!({"op": "SetIrqAffinity", "ifname": "eth0", "cpus": [0], "policy": "rr"}),
        ] {
            assert!(serde_json::from_value::<Op>(bad.clone()).is_err(), "{bad}");
        }
        let o: Op = serde_json::from_value(
            json!({"op": "SetIrqAffinity", "ifname": "eth0", "cpus": [0, 1], "policy": "all"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o,
            Op::SetIrqAffinity {
                ifname: "eth0".into(),
                cpus: vec![0, 1],
                policy: IrqPolicy::All,
                stop_irqbalance: false
            }
        );
        let o: Op =
            serde_json::from_value(json!({"op": "DropCaches"})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o,
            Op::DropCaches {
                what: DropCachesWhat::All
            }
        );
        let r = Reply::Tuned(SetOutcome::Applied {
            previous: Previous::Pause(PauseParams {
                autoneg: Some(true),
                rx: true,
                tx: false,
            }),
        });
        assert_eq!(
            serde_json::to_value(&r).unwrap_or_default(),
            json!({"reply": "Tuned", "value": {"outcome": "Applied",
                "previous": {"kind": "Pause", "autoneg": true, "rx": true, "tx": false}}})
        );
        let r = Reply::Tuned(SetOutcome::NotApplicable { reason: "x".into() });
        assert_eq!(
            serde_json::to_value(&r).unwrap_or_default(),
            json!({"reply": "Tuned", "value": {"outcome": "NotApplicable", "reason": "x"}})
        );
        // Coalesce replies leave n/a parameters out.
        let r = Reply::Coalesce(Box::new(Coalesce {
            adaptive_rx: Some(false),
            rx_usecs: Some(0),
            ..Coalesce::default()
        }));
        assert_eq!(
            serde_json::to_value(&r).unwrap_or_default(),
            json!({"reply": "Coalesce", "value": {"adaptive-rx": false, "rx-usecs": 0}})
        );
        let j: JobSpec = serde_json::from_value(json!({"kind": "LinuxPerf", "duration_s": 2}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            j,
            JobSpec::LinuxPerf {
                duration_s: Some(2),
                record_cpus: None,
                events: vec![],
                call_graph: false,
                frequency: None
            }
        );
        // The controller cannot name the output file.
        assert!(serde_json::from_value::<JobSpec>(
            json!({"kind": "LinuxPerf", "output_file": "/etc/passwd"})
        )
        .is_err());
    }

    #[test]
    fn coalesce_names() {
        let mut c = Coalesce::default();
        for (name, _) in Coalesce::default().numbers() {
            assert!(c.number_mut(name).is_some(), "{name}");
        }
        // ethtool -c's spelling reaches the same field.
        if let Some(v) = c.number_mut("rx-frame-low") {
            *v = Some(7);
        }
        assert_eq!(c.rx_frames_low, Some(7));
        assert!(c.number_mut("cqe-mode-rx").is_none());
        assert!(!c.is_empty());
        assert!(Coalesce::default().is_empty());
        assert_eq!(Coalesce::default().numbers().len(), 20);
    }
}
