//! The hardware and host-tuning parameters of the ENRT recipes (pause frames, coalescing, IRQ
//! pinning, perf tool pinning, turbo boost, idle states, linuxperf) against scripted agents:
//! the operations sent, in which order they are taken back, the failures before any traffic,
//! and an explicit "off" on a device without the setting passing. The kernel's part is tested
//! on real agents (tests/agent_tunables.rs, tests/e2e_hw_params.rs).

use super::context::{Dev, RecipeError, RunContext};
use super::enrt::devparams::MultiDevInterruptParams;
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams};
use super::enrt::{self, EnrtRecipe, HwConfig, PingEndpoints, SubConfigs};
use super::find;
use super::test_support::*;
use super::Recipe;
use crate::params::parse_params;
use crate::plan::TestSpec;
use crate::protocol::{IrqPolicy, JobSpec, Op};
use crate::recipes::common::config::{Configured, TestWide};
use crate::requirements::Requirements;
use crate::results::{DeviceAction, ResultKind, ResultType};
use crate::schema::resolve;
use crate::scripted::{run_test, HwScript, Script, ScriptedRun};

/// One iteration of a 1 s tcp_stream over IPv4, one offload combination, four pings.
const SMOKE: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];ip_versions=['ipv4'];offload_combinations=[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'}];ping_count=4;net_ipv4='198.18.80.0/24';net_ipv6='fd00:80::/64'";

fn snr(params: &str, hw: HwScript) -> ScriptedRun {
    block_on(run_test(
        &spec("SimpleNetworkRecipe", &format!("{SMOKE};{params}")),
        Script::default().hw(hw),
        TWO,
    ))
}

/// NICs with pause frames, coalescing and IRQs on hosts with `cpus` CPUs.
fn nic_hw(cpus: u32) -> HwScript {
    HwScript {
        nic_hw: true,
        cpus,
        ..HwScript::default()
    }
}

fn on_off(b: Option<bool>) -> String {
    match b {
        Some(true) => "on".into(),
        Some(false) => "off".into(),
        None => "-".into(),
    }
}

/// The configuration requests of `host` (every host when empty) and the jobs they surround,
/// in order: `SetPause(veth-a rx off)`, `SetCoalesce(veth-a rx-usecs=16)`, `Job(Ping)`, …
fn tuning(r: &ScriptedRun, host: &str) -> Vec<String> {
    r.journal
        .entries()
        .into_iter()
        .filter(|e| host.is_empty() || e.host == host)
        .filter_map(|e| {
            let h = &e.host;
            let op = match e.op {
                Op::InNetns { inner, .. } => *inner,
                op => op,
            };
            Some(match op {
                Op::SetOffloads { ifname, .. } => format!("SetOffloads({ifname})"),
                Op::SetMtu { ifname, mtu } => format!("SetMtu({ifname} {mtu})"),
                Op::SetPause {
                    ifname,
                    autoneg,
                    rx,
                    tx,
                } => {
                    let mut s = format!("SetPause({ifname}");
                    if autoneg.is_some() {
                        s.push_str(&format!(" autoneg {}", on_off(autoneg)));
                    }
                    if rx.is_some() {
                        s.push_str(&format!(" rx {}", on_off(rx)));
                    }
                    if tx.is_some() {
                        s.push_str(&format!(" tx {}", on_off(tx)));
                    }
                    s + ")"
                }
                Op::SetCoalesce { ifname, settings } => {
                    let mut kv: Vec<String> = settings
                        .flags()
                        .iter()
                        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", on_off(Some(v)))))
                        .collect();
                    kv.extend(
                        settings
                            .numbers()
                            .iter()
                            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))),
                    );
                    format!("SetCoalesce({ifname} {})", kv.join(" "))
                }
                Op::SetIrqAffinity {
                    ifname,
                    cpus,
                    policy,
                    stop_irqbalance,
                } => format!(
                    "SetIrqAffinity({ifname} {cpus:?} {}{})",
                    match policy {
                        IrqPolicy::RoundRobin => "round-robin",
                        IrqPolicy::All => "all",
                    },
                    if stop_irqbalance {
                        " stop-irqbalance"
                    } else {
                        ""
                    }
                ),
                Op::RestoreIrqAffinity { ifname, irqs } => format!(
                    "RestoreIrqAffinity({ifname} {})",
                    irqs.iter()
                        .map(|i| format!("{}:{}", i.irq, i.affinity))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                Op::SetTurboBoost { enabled } => format!("{h}:SetTurboBoost({enabled})"),
                Op::DisableIdleStates { min_latency_us } => {
                    format!("{h}:DisableIdleStates({min_latency_us})")
                }
                Op::EnableIdleStates { states } => format!(
                    "{h}:EnableIdleStates({})",
                    states
                        .iter()
                        .map(|s| format!("{}/{}", s.cpu, s.state))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                Op::GetCpus => format!("{h}:GetCpus"),
                Op::StartJob { spec } => format!(
                    "Job({})",
                    serde_json::to_value(&spec)
                        .ok()
                        .and_then(|v| v["kind"].as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                _ => return None,
            })
        })
        .collect()
}

/// [`tuning`] with every run of jobs shown as one `traffic` step.
fn steps(r: &ScriptedRun, host: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in tuning(r, host) {
        if s.starts_with("Job(") {
            if out.last().map(String::as_str) != Some("traffic") {
                out.push("traffic".into());
            }
        } else {
            out.push(s);
        }
    }
    out
}

/// The sub-configuration description.
fn sub_description(r: &ScriptedRun) -> Vec<String> {
    generic(r)
        .into_iter()
        .find(|(_, d)| d.starts_with("Sub configuration description:"))
        .map(|(_, d)| d.lines().skip(1).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `(host.dev.attr, value, previous)` of every DeviceAttrSetResult, in order.
fn attr_sets(r: &ScriptedRun) -> Vec<(String, String, String)> {
    r.run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::DeviceConfig {
                host,
                dev_id,
                action:
                    DeviceAction::AttrSet {
                        name,
                        value,
                        old_value,
                    },
                ..
            } => Some((
                format!("{host}.{dev_id}.{name}"),
                value.clone(),
                old_value.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn exception(r: &ScriptedRun) -> String {
    r.run.exception.clone().unwrap_or_default()
}

fn no_traffic(r: &ScriptedRun) {
    let jobs = r.journal.jobs();
    assert!(jobs.is_empty(), "jobs started: {jobs:?}");
}

/// Upstream's own test_db.json entry (ours: networks in our range, 1 s): pause frames off,
/// IRQs on CPU 0, the perf tools on CPU 6 of an 8-CPU host. Applied in upstream's order
/// (offloads, IRQs, pause rx on both devices, then tx) before any traffic, and taken back in
/// the reverse order after it.
#[test]
fn upstream_test_db_entry_applies_and_restores_in_order() {
    let r = snr(
        "perf_tool_cpu=[6];dev_intr_cpu=[0];perf_parallel_processes=1;perf_msg_sizes=[131072];rx_pause_frames=False;tx_pause_frames=False",
        nic_hw(8),
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}\n{:#?}",
        exception(&r),
        generic(&r)
    );
    assert_eq!(
        steps(&r, "host1"),
        [
            "host1:GetCpus",
            "SetOffloads(veth-a)",
            "SetIrqAffinity(veth-a [0] round-robin stop-irqbalance)",
            "SetPause(veth-a rx off)",
            "SetPause(veth-a tx off)",
            "traffic",
            "SetPause(veth-a rx on)",
            "SetPause(veth-a tx on)",
            "RestoreIrqAffinity(veth-a 24:0-7 25:0-7 26:0-7)",
            "SetOffloads(veth-a)",
        ]
    );
    // Pause frames: rx on both devices, then tx; restored in the same order.
    let pause: Vec<String> = steps(&r, "")
        .into_iter()
        .filter(|s| s.starts_with("SetPause"))
        .collect();
    assert_eq!(
        pause,
        [
            "SetPause(veth-a rx off)",
            "SetPause(veth-b rx off)",
            "SetPause(veth-a tx off)",
            "SetPause(veth-b tx off)",
            "SetPause(veth-a rx on)",
            "SetPause(veth-b rx on)",
            "SetPause(veth-a tx on)",
            "SetPause(veth-b tx on)",
        ]
    );
    // Both iperf3 ends pinned to CPU 6.
    let pins: Vec<Option<Vec<u32>>> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(_, s)| match s {
            JobSpec::IperfServer { cpus, .. } | JobSpec::IperfClient { cpus, .. } => Some(cpus),
            _ => None,
        })
        .collect();
    assert_eq!(pins, vec![Some(vec![6]); 2]);
    assert_eq!(
        sub_description(&r),
        [
            "Currently configured offload combination: gro=on gso=on tso=on tx=on rx=on",
            "mtu configuration skipped.",
            "host1 irqbalance not running",
            "host2 irqbalance not running",
            "host1.eth0 irqs bound to cpu [0]",
            "host2.eth0 irqs bound to cpu [0]",
            "Device coalescing configuration skipped.",
            "host1.veth-a.rx_pause_frames configured to False, original value True",
            "host2.veth-b.rx_pause_frames configured to False, original value True",
            "host1.veth-a.tx_pause_frames configured to False, original value True",
            "host2.veth-b.tx_pause_frames configured to False, original value True",
        ]
    );
    // Every change and every restore is recorded.
    let sets = attr_sets(&r);
    assert!(sets.contains(&(
        "host1.eth0.rx_pause_frames".into(),
        "False".into(),
        "True".into()
    )));
    assert!(sets.contains(&(
        "host1.eth0.rx_pause_frames".into(),
        "True".into(),
        "False".into()
    )));
}

/// irqbalance, when it runs, is stopped (the agent starts it again when the test ends) and
/// said so; a second sub-configuration pins again and restores again.
#[test]
fn irq_pinning_per_sub_configuration_and_irqbalance() {
    let r = block_on(run_test(
        &spec(
            "SimpleNetworkRecipe",
            "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];ip_versions=['ipv4'];ping_count=4;net_ipv4='198.18.81.0/24';offload_combinations=[{'gro':'on'},{'gro':'off'}];dev_intr_cpu=[1,0]",
        ),
        Script::default().hw(HwScript {
            irqbalance: true,
            ..nic_hw(4)
        }),
        TWO,
    ));
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    assert_eq!(
        steps(&r, "host2"),
        [
            "SetOffloads(veth-b)",
            "SetIrqAffinity(veth-b [1, 0] round-robin stop-irqbalance)",
            "traffic",
            "RestoreIrqAffinity(veth-b 24:0-3 25:0-3 26:0-3)",
            "SetOffloads(veth-b)",
            "SetOffloads(veth-b)",
            "SetIrqAffinity(veth-b [1, 0] round-robin stop-irqbalance)",
            "traffic",
            "RestoreIrqAffinity(veth-b 24:0-3 25:0-3 26:0-3)",
            "SetOffloads(veth-b)",
        ]
    );
    let descs: Vec<String> = generic(&r)
        .into_iter()
        .filter(|(_, d)| d.starts_with("Sub configuration description:"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(descs.len(), 2);
    assert!(descs[0].contains("\nhost1 irqbalance stopped\nhost2 irqbalance stopped\nhost1.eth0 irqs bound to cpu [1, 0]\n"), "{}", descs[0]);
    // Stopped by the first sub-configuration, it does not run in the second.
    assert!(
        descs[1].contains("\nhost1 irqbalance not running\n"),
        "{}",
        descs[1]
    );
    // Each pinning's result keeps every IRQ's list before and after: the second found what
    // the first had found (the first was put back).
    let pinned: Vec<serde_json::Value> = r
        .run
        .results
        .iter()
        .filter(|e| {
            matches!(&e.kind, ResultKind::DeviceConfig { host, action: DeviceAction::MethodCall { name, .. }, .. }
                if host == "host2" && name == "pin_dev_interrupts")
        })
        .filter_map(|e| e.data.clone())
        .collect();
    assert_eq!(pinned.len(), 2);
    let lists = |v: &serde_json::Value, k: &str| -> Vec<String> {
        v["irqs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i[k].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(lists(&pinned[0], "previous"), ["0-3", "0-3", "0-3"]);
    assert_eq!(lists(&pinned[0], "now"), ["1", "0", "1"]);
    assert_eq!(lists(&pinned[1], "previous"), lists(&pinned[0], "previous"));
}

/// A NIC that ignores rx/tx while pause autonegotiation is on (e1000e): the value is set
/// again with autonegotiation off, said so, and autonegotiation comes back on with the old
/// value.
#[test]
fn pause_frames_forced_when_autonegotiation_ignores_them() {
    let r = snr(
        "rx_pause_frames=False;tx_pause_frames=False",
        HwScript {
            pause_autoneg_sticky: true,
            ..nic_hw(2)
        },
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    assert_eq!(
        steps(&r, "host1"),
        [
            "SetOffloads(veth-a)",
            "SetPause(veth-a rx off)",
            "SetPause(veth-a autoneg off rx off)",
            "SetPause(veth-a tx off)",
            "traffic",
            "SetPause(veth-a autoneg on rx on)",
            "SetPause(veth-a tx on)",
            "SetOffloads(veth-a)",
        ]
    );
    let d = sub_description(&r);
    assert!(d.contains(&"host1.veth-a.rx_pause_frames configured to False, original value True (pause autonegotiation turned off: the driver ignored the value while it was on)".to_string()), "{d:#?}");
    assert!(
        d.contains(
            &"host1.veth-a.tx_pause_frames configured to False, original value True".to_string()
        ),
        "{d:#?}"
    );
}

/// Coalescing: the adaptive modes first (tx, rx), then the numbers in the order given;
/// restored numbers first, then the adaptive modes, after the MTU is set and before it is put
/// back (CoalescingHWConfigMixin sits between MTU and the IRQs).
#[test]
fn coalescing_order_and_restore() {
    let r = snr(
        "mtu=1400;coalescing_settings={'host1': {'eth0': {'rx-usecs': 16, 'adaptive-rx': 'off', 'tx-frames': 0, 'adaptive-tx': 'off', 'rx-frames': 32}}}",
        nic_hw(2),
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    assert_eq!(
        steps(&r, "host1"),
        [
            "SetOffloads(veth-a)",
            "SetMtu(veth-a 1400)",
            "SetCoalesce(veth-a adaptive-tx=off)",
            "SetCoalesce(veth-a adaptive-rx=off)",
            "SetCoalesce(veth-a rx-usecs=16)",
            "SetCoalesce(veth-a tx-frames=0)",
            "SetCoalesce(veth-a rx-frames=32)",
            "traffic",
            "SetCoalesce(veth-a rx-usecs=3)",
            "SetCoalesce(veth-a rx-frames=0)",
            "SetCoalesce(veth-a adaptive-rx=on)",
            "SetCoalesce(veth-a adaptive-tx=on)",
            "SetMtu(veth-a 1500)",
            "SetOffloads(veth-a)",
        ]
    );
    // host2 has no coalescing settings.
    assert!(!steps(&r, "host2")
        .iter()
        .any(|s| s.starts_with("SetCoalesce")));
    assert_eq!(
        sub_description(&r),
        [
            "Currently configured offload combination: gro=on gso=on tso=on tx=on rx=on",
            "Configured mtu 1400 on host1.eth0 and host2.eth0",
            "Device irq configuration skipped.",
            "host1.veth-a.adaptive_rx_coalescing configured to False, original value True",
            "host1.veth-a.adaptive_tx_coalescing configured to False, original value True",
            "host1.veth-a.coalescing_rx_frames configured to 32, original value 0",
            "host1.veth-a.coalescing_rx_usecs configured to 16, original value 3",
            "host1.veth-a.coalescing_tx_frames configured to 0, original value 0",
            "Pause frames configuration skipped.",
        ]
    );
    let sets = attr_sets(&r);
    assert!(
        sets.contains(&(
            "host1.eth0.coalescing_rx_usecs".into(),
            "3".into(),
            "16".into()
        )),
        "{sets:?}"
    );
}

/// Every mixin at once: idle states, turbo boost, offloads, MTU, coalescing, IRQs, pause
/// frames, in upstream's apply order, and every one taken back in the reverse order.
#[test]
fn every_setting_restored_in_reverse_mixin_order() {
    let r = snr(
        "minimal_idlestates_latency=5;disable_turboboost=True;mtu=1400;coalescing_settings={'host1': {'eth0': {'adaptive-rx': 'off', 'rx-usecs': 8}}};dev_intr_cpu=[1];rx_pause_frames=False",
        HwScript {
            turbo: true,
            idle_states: true,
            ..nic_hw(2)
        },
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    assert_eq!(
        steps(&r, "host1"),
        [
            "host1:DisableIdleStates(5)",
            "host1:SetTurboBoost(false)",
            "SetOffloads(veth-a)",
            "SetMtu(veth-a 1400)",
            "SetCoalesce(veth-a adaptive-rx=off)",
            "SetCoalesce(veth-a rx-usecs=8)",
            "SetIrqAffinity(veth-a [1] round-robin stop-irqbalance)",
            "SetPause(veth-a rx off)",
            "traffic",
            "SetPause(veth-a rx on)",
            "RestoreIrqAffinity(veth-a 24:0-1 25:0-1 26:0-1)",
            "SetCoalesce(veth-a rx-usecs=3)",
            "SetCoalesce(veth-a adaptive-rx=on)",
            "SetMtu(veth-a 1500)",
            "SetOffloads(veth-a)",
            "host1:SetTurboBoost(true)",
            "host1:EnableIdleStates(0/1 1/1)",
        ]
    );
    let d = sub_description(&r);
    assert_eq!(
        &d[..3],
        [
            "disabled idle states with latency higher than 5 on host host1",
            "disabled idle states with latency higher than 5 on host host2",
            "turboboost disabled on host1",
        ]
    );
    assert!(generic(&r).contains(&(ResultType::Pass, "turboboost enabled again on host2".into())));
    assert!(generic(&r).contains(&(
        ResultType::Pass,
        "2 CPU idle states enabled again on host1".into()
    )));
}

/// A setting a device or host does not have FAILs the test with the reason before any
/// traffic; what was applied before it is taken back.
#[test]
fn impossible_settings_fail_before_traffic() {
    let veth = HwScript::default();
    for (params, hw, want) in [
        // veth: no pause frames; "on" fails naming the device and the setting.
        (
            "rx_pause_frames=True",
            veth.clone(),
            vec!["rx_pause_frames=True", "host1.eth0 (veth-a)", "pause-frame"],
        ),
        (
            "tx_pause_frames=True",
            veth.clone(),
            vec!["tx_pause_frames=True", "host1.eth0", "pause"],
        ),
        // veth: no IRQs.
        (
            "dev_intr_cpu=[0]",
            veth.clone(),
            vec!["dev_intr_cpu", "host1.eth0", "no IRQs"],
        ),
        // A CPU the host lacks: IRQs and perf tools.
        (
            "dev_intr_cpu=[6]",
            nic_hw(2),
            vec!["dev_intr_cpu", "host1.eth0", "no CPU 6"],
        ),
        (
            "perf_tool_cpu=[0,6]",
            nic_hw(2),
            vec!["perf_tool_cpu: host1 has no CPU 6 (online CPUs: 0-1)"],
        ),
        // Coalescing on a device without it, or a parameter it lacks (n/a).
        (
            "coalescing_settings={'host2': {'eth0': {'rx-usecs': 16}}}",
            veth.clone(),
            vec!["coalescing_settings", "host2.eth0", "rx-usecs"],
        ),
        (
            "coalescing_settings={'host1': {'eth0': {'rx-usecs-high': 16}}}",
            nic_hw(2),
            vec!["coalescing_settings", "host1.eth0", "rx-usecs-high"],
        ),
        // A device or host the recipe does not have.
        (
            "coalescing_settings={'host3': {'eth0': {'rx-usecs': 16}}}",
            nic_hw(2),
            vec!["coalescing_settings: host3.eth0: not a device of this recipe"],
        ),
        (
            "coalescing_settings={'host1': {'eth7': {'rx-usecs': 16}}}",
            nic_hw(2),
            vec!["coalescing_settings: host1.eth7: not a device of this recipe"],
        ),
        // Host tuning the host does not expose.
        (
            "disable_turboboost=True",
            veth.clone(),
            vec!["disable_turboboost=True: host1", "turbo boost"],
        ),
        (
            "minimal_idlestates_latency=0",
            veth.clone(),
            vec!["minimal_idlestates_latency=0: host1", "idle states"],
        ),
    ] {
        let r = snr(params, hw);
        assert_eq!(r.run.overall_result(), ResultType::Fail, "{params}");
        let e = exception(&r);
        for w in want {
            assert!(e.contains(w), "{params}: {w:?} not in {e:?}");
        }
        no_traffic(&r);
    }
    // What came before the failing mixin is taken back: the MTU and the offloads.
    let r = snr("mtu=1400;rx_pause_frames=True", HwScript::default());
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert_eq!(
        steps(&r, "host1"),
        [
            "SetOffloads(veth-a)",
            "SetMtu(veth-a 1400)",
            "SetPause(veth-a rx on)",
            "SetMtu(veth-a 1500)",
            "SetOffloads(veth-a)",
        ]
    );
}

/// "Off" on a device that has no such setting is not a failure: pause frames off and the
/// adaptive coalescing modes off on veth pass, and the description says why nothing changed.
#[test]
fn off_on_a_device_without_the_setting_passes() {
    let r = snr(
        "rx_pause_frames=False;tx_pause_frames=False;coalescing_settings={'host1': {'eth0': {'adaptive-rx': 'off', 'adaptive-tx': False}}}",
        HwScript::default(),
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}\n{:#?}",
        exception(&r),
        generic(&r)
    );
    let d = sub_description(&r);
    assert!(
        d.contains(&"host1.veth-a.rx_pause_frames left alone: False asked and the device has no such setting (veth-a (driver veth) has no pause-frame settings)".to_string()),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|l| l.starts_with("host1.veth-a.adaptive_tx_coalescing left alone: False asked")),
        "{d:#?}"
    );
    // Nothing changed, so nothing is restored.
    let after: Vec<String> = steps(&r, "host1")
        .into_iter()
        .skip_while(|s| s != "traffic")
        .collect();
    assert_eq!(after, ["traffic", "SetOffloads(veth-a)"]);
}

/// do_linuxperf_measurement: `perf record` on every host during every iteration, its data
/// kept under raw/ and named in one result per host, between the CPU and the flow results.
#[test]
fn linuxperf_on_every_host_kept_under_raw() {
    let r = block_on(run_test(
        &spec(
            "SimpleNetworkRecipe",
            &SMOKE.replace(
                "perf_iterations=1",
                "perf_iterations=2;do_linuxperf_measurement=True",
            ),
        ),
        Script::default(),
        TWO,
    ));
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    let perf_hosts: Vec<String> = r
        .journal
        .jobs()
        .into_iter()
        .filter(|(_, s)| matches!(s, JobSpec::LinuxPerf { .. }))
        .map(|(h, _)| h)
        .collect();
    assert_eq!(perf_hosts, ["host1", "host2", "host1", "host2"]);
    let mut raw: Vec<&str> = r
        .raw
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.contains("linuxperf"))
        .collect();
    raw.sort();
    assert_eq!(
        raw,
        [
            "sub1_tcp_stream_ipv4_123_iter1_linuxperf_host1.data",
            "sub1_tcp_stream_ipv4_123_iter1_linuxperf_host2.data",
            "sub1_tcp_stream_ipv4_123_iter2_linuxperf_host1.data",
            "sub1_tcp_stream_ipv4_123_iter2_linuxperf_host2.data",
        ]
    );
    let bytes = r
        .raw
        .iter()
        .find(|(n, _)| n == "sub1_tcp_stream_ipv4_123_iter1_linuxperf_host2.data")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    assert!(bytes.starts_with("PERFILE2 host2"), "{bytes}");
    let kinds: Vec<(String, String)> = r
        .run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::Measurement {
                measurement_type, ..
            } => Some((measurement_type.clone(), e.description.clone())),
            _ => None,
        })
        .filter(|(t, _)| t != "ping")
        .collect();
    let types: Vec<&str> = kinds.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["cpu", "cpu", "linuxperf", "linuxperf", "flow"]);
    assert_eq!(
        kinds[2].1,
        "perf-record recorded all CPUs on host1 to files:\n    raw/sub1_tcp_stream_ipv4_123_iter1_linuxperf_host1.data\n    raw/sub1_tcp_stream_ipv4_123_iter2_linuxperf_host1.data"
    );
    // The recorder runs around the flows: started before the iperf3 server, stopped after.
    let order: Vec<String> = tuning(&r, "host1")
        .into_iter()
        .filter(|s| s.starts_with("Job("))
        .collect();
    let first = |k: &str| order.iter().position(|s| s == k);
    assert!(first("Job(CpuStat)") < first("Job(LinuxPerf)"));
    assert!(first("Job(LinuxPerf)") < first("Job(IperfClient)"));
}

crate::param_set! {
    /// A recipe with MultiDevInterruptHWConfigMixin (as the XDP recipes have it).
    struct MultiIrqRecipe {
        group base: BaremetalEnrtParams,
        group hw: CommonHwParams,
        group multi: MultiDevInterruptParams,
    }
}

impl Recipe for MultiIrqRecipe {
    const NAME: &'static str = "MultiIrqRecipe";
    const DOC: &'static str = "test only";
    fn requirements(&self) -> Requirements {
        super::reqs::two_hosts_one_nic(&Default::default()).0
    }
    fn layout() -> Requirements {
        super::reqs::two_hosts_one_nic(&Default::default()).0
    }
    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for MultiIrqRecipe {
    fn base(&self) -> super::enrt::params::EnrtBase<'_> {
        self.base.view()
    }
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for (dev, a) in [("host1", "198.18.82.1/24"), ("host2", "198.18.82.2/24")] {
            let d = Dev::new(dev, "eth0");
            tw.address(&d, a.parse().map_err(RecipeError::Param)?)
                .up(&d);
        }
        Ok(tw)
    }
    fn ping_endpoints(&self, _c: &Configured) -> Vec<PingEndpoints> {
        vec![PingEndpoints::new(
            &Dev::new("host1", "eth0"),
            &Dev::new("host2", "eth0"),
        )]
    }
    fn sub_configurations(&self) -> SubConfigs<'_> {
        let devs = [Dev::new("host1", "eth0"), Dev::new("host2", "eth0")];
        SubConfigs {
            offloads: None,
            hw: Some(HwConfig::on(&self.hw, &devs)),
        }
    }
    fn multi_dev_interrupt_config(
        &self,
    ) -> Option<&super::enrt::devparams::MultiDevInterruptConfig> {
        Some(self.multi.config())
    }
}

fn run_multi(params: &str, hw: HwScript) -> ScriptedRun {
    use super::typed::ParamSet;
    let given = parse_params(params).unwrap_or_else(|e| panic!("{e}"));
    let params = resolve("MultiIrqRecipe", &MultiIrqRecipe::specs(), given)
        .unwrap_or_else(|e| panic!("{e}"));
    let planned = super::Planned(std::sync::Arc::new(
        MultiIrqRecipe::from_resolved(&params).unwrap_or_else(|e| panic!("{e}")),
    ));
    let spec = TestSpec {
        id: "t".into(),
        recipe: "MultiIrqRecipe".into(),
        params,
        planned,
    };
    block_on(run_test(&spec, Script::default().hw(hw), TWO))
}

/// multi_dev_interrupt_config: each device pinned as asked (its own CPUs and policy, after
/// the pause frames: the mixin is first in the MRO), restored first; the documented
/// spelling `policy` works as upstream's `cpu_policy`.
#[test]
fn multi_dev_interrupt_config_pins_each_device_as_asked() {
    let r = run_multi(
        "ping_count=4;multi_dev_interrupt_config={'host1': {'eth0': {'cpus': [2, 3], 'cpu_policy': 'all'}}, 'host2': {'eth0': {'cpus': [0], 'policy': 'round-robin'}}};rx_pause_frames=False",
        nic_hw(4),
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    assert_eq!(
        steps(&r, "host1"),
        [
            "SetPause(veth-a rx off)",
            "SetIrqAffinity(veth-a [2, 3] all stop-irqbalance)",
            "traffic",
            "RestoreIrqAffinity(veth-a 24:0-3 25:0-3 26:0-3)",
            "SetPause(veth-a rx on)",
        ]
    );
    assert!(steps(&r, "host2")
        .contains(&"SetIrqAffinity(veth-b [0] round-robin stop-irqbalance)".to_string()));
    let d = sub_description(&r);
    assert_eq!(
        &d[d.len() - 4..],
        [
            "host1 irqbalance not running",
            "host2 irqbalance not running",
            "host1.eth0 irqs bound to cpu [2, 3] with policy:all",
            "host2.eth0 irqs bound to cpu [0] with policy:round-robin",
        ]
    );
    // Unset: skipped (twice, as upstream: DevInterrupt's and MultiDevInterrupt's).
    let r = run_multi("ping_count=4", nic_hw(4));
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{}",
        exception(&r)
    );
    assert_eq!(
        sub_description(&r)
            .iter()
            .filter(|l| *l == "Device irq configuration skipped.")
            .count(),
        2
    );
    // A device without IRQs FAILs before traffic, naming the parameter and the device.
    let r = run_multi(
        "ping_count=4;multi_dev_interrupt_config={'host2': {'eth0': {'cpus': [0]}}}",
        HwScript::default(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(
        exception(&r).contains("multi_dev_interrupt_config: host2.eth0 (veth-b)"),
        "{}",
        exception(&r)
    );
    no_traffic(&r);
}

/// Bad shapes of the keyed parameters are bad input when the plan is made.
#[test]
fn bad_keyed_parameters_are_plan_errors() {
    let def = find("SimpleNetworkRecipe").unwrap_or_else(|e| panic!("{e}"));
    let given = parse_params("coalescing_settings={'host1': {'eth0': {'rx-usec': 1}}}")
        .unwrap_or_else(|e| panic!("{e}"));
    let params = resolve(def.name, &(def.params)(), given).unwrap_or_else(|e| panic!("{e}"));
    let e = (def.plan)(&params)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("coalescing_settings") && e.contains("unknown coalescing parameter \"rx-usec\""),
        "{e}"
    );
}
