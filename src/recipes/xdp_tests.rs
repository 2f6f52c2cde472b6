//! The XDP and forwarding recipes' logic against scripted agents (where pktgen, xdp-bench and
//! the counters run, with which settings, what is reported, evaluators that FAIL, plan-time
//! refusals) and the packet measurements' arithmetic against hand computations. The kernel's
//! part runs on VM agents in tests/e2e_xdp.rs.

use super::test_support::*;
use crate::measure::cpu::CpuStat;
use crate::measure::flow::CpuIteration;
use crate::measure::perf::PerfResult;
use crate::measure::pktrate::{
    align_packet_iteration, AggregatedPackets, PacketIteration, PacketKind,
};
use crate::protocol::{JobSpec, Op, XdpBenchCommand, XdpMode, XdpRedirectProgram};
use crate::results::{ResultKind, ResultType};
use crate::scripted::{Script, ScriptedRun};

/// host1 and host2 with eth0 and eth1 each (the forwarding recipes).
const FOUR: Devices = &[
    ("host1", &[("eth0", "veth-a"), ("eth1", "veth-c")]),
    ("host2", &[("eth0", "veth-b"), ("eth1", "veth-d")]),
];

const SMOKE: &str = "perf_iterations=1;perf_duration=2;perf_tests=['udp_stream'];offload_combinations=();ping_count=4;ip_versions=('ipv4',);net_ipv4='198.18.96.0/24';net_ipv6='fd00:96::/64'";
const ROUTED: &str = "netns_ipv4='198.18.97.0/24';netns_ipv6='fd00:97::/64'";

/// Every job started, with its host (`host1`, or `host1 in <ns>` for namespace jobs).
fn jobs(r: &ScriptedRun) -> Vec<(String, JobSpec)> {
    r.journal
        .entries()
        .into_iter()
        .filter_map(|e| match e.op {
            Op::StartJob { spec } => Some((e.host, spec)),
            Op::InNetns { netns, inner } => match *inner {
                Op::StartJob { spec } => Some((format!("{} in {netns}", e.host), spec)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn measurements(r: &ScriptedRun, kind: &str) -> Vec<(ResultType, String, serde_json::Value)> {
    r.run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::Measurement {
                measurement_type,
                summary,
            } if measurement_type == kind => {
                Some((e.result, e.description.clone(), summary.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn xdp_drop_runs_pktgen_per_cpu_and_xdp_bench_on_the_receiver() {
    let r = run_on(
        "XDPDropRecipe",
        &format!("{SMOKE};perf_tool_cpu=[0,1]"),
        Script::default().packet_rate(1000.0),
        TWO,
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{:#?}",
        generic(&r)
    );
    let jobs = jobs(&r);
    let bench: Vec<&JobSpec> = jobs
        .iter()
        .filter(|(h, s)| h == "host2" && matches!(s, JobSpec::XdpBench { .. }))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(bench.len(), 1, "{jobs:#?}");
    match bench[0] {
        JobSpec::XdpBench {
            command,
            interface,
            xdp_mode,
            load_mode,
            duration_s,
            ..
        } => {
            assert_eq!(*command, XdpBenchCommand::Drop);
            assert_eq!(interface, "veth-b");
            assert_eq!(*xdp_mode, XdpMode::Native);
            assert_eq!(*load_mode, None);
            // perf_duration + the receiver's margin.
            assert_eq!(*duration_s, 4);
        }
        other => panic!("{other:?}"),
    }
    let gens: Vec<&JobSpec> = jobs
        .iter()
        .filter(|(h, s)| h == "host1" && matches!(s, JobSpec::Pktgen { .. }))
        .map(|(_, s)| s)
        .collect();
    let JobSpec::Pktgen {
        devices,
        duration_s,
    } = gens[0]
    else {
        panic!("{gens:?}")
    };
    assert_eq!(*duration_s, 2);
    // One pktgen device per CPU of perf_tool_cpu (policy unset = all), towards host2.eth0's MAC.
    let names: Vec<String> = devices.iter().map(|d| d.name()).collect();
    assert_eq!(names, ["veth-a@0", "veth-a@1"]);
    for d in devices {
        assert_eq!(d.src_mac, "02:00:00:00:01:01");
        assert_eq!(d.dst_mac, "02:00:00:00:02:01");
        assert_eq!(
            (d.src_ip.as_str(), d.dst_ip.as_str()),
            ("198.18.96.1", "198.18.96.2")
        );
        assert_eq!(
            (d.src_port, d.dst_port, d.pkt_size, d.burst),
            (9, 9, 123, 8)
        );
    }
    let m = measurements(&r, "xdp-bench");
    assert_eq!(m.len(), 1);
    let (res, desc, data) = &m[0];
    assert_eq!(*res, ResultType::Pass);
    // Two pktgen devices of 1000 packets/s each; xdp-bench reports 1000 rx/s.
    assert_eq!(data["generator_results"].as_f64(), Some(2000.0), "{desc}");
    assert_eq!(data["receiver_results"].as_f64(), Some(1000.0), "{desc}");
    assert!(
        desc.contains("Generator generated (generator_results): 2,000.000000 +-0.000000(0.00%) packets per second."),
        "{desc}"
    );
    assert!(generic(&r).iter().any(|(t, d)| *t == ResultType::Pass
        && d.contains("PASS: receiver_results reported non-zero throughput")));
}

#[test]
fn zero_packets_fail_the_nonzero_evaluation() {
    let r = run_on(
        "XDPTxRecipe",
        &format!("{SMOKE};perf_tool_cpu=[0]"),
        Script::default().packet_rate(0.0),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let g = generic(&r);
    assert!(
        g.iter().any(|(t, d)| *t == ResultType::Fail
            && d.contains("FAIL: generator_results reported zero throughput")
            && d.contains("FAIL: receiver_results reported zero throughput")),
        "{g:#?}"
    );
    let tx = jobs(&r).into_iter().find_map(|(_, s)| match s {
        JobSpec::XdpBench { command, .. } => Some(command),
        _ => None,
    });
    assert_eq!(tx, Some(XdpBenchCommand::Tx));
}

#[test]
fn a_failed_receiver_job_fails_the_measurement_with_its_reason() {
    let script = Script {
        jobs: Some(std::sync::Arc::new(|call: &crate::scripted::JobCall| {
            let builtin = Script::default().packet_rate(500.0);
            match &call.spec {
                JobSpec::XdpBench { .. } => crate::scripted::JobOutput {
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: "Failed to attach XDP program: Operation not supported\n".into(),
                    duration: 0.1,
                    data: Some(serde_json::json!([])),
                },
                _ => builtin.builtin_answer(call),
            }
        })),
        ..Script::default()
    };
    let r = run_on(
        "XDPDropRecipe",
        &format!("{SMOKE};perf_tool_cpu=[0]"),
        script,
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let g = generic(&r);
    assert!(
        g.iter().any(|(t, d)| *t == ResultType::Fail
            && d.contains("xdp-bench on host2 failed")
            && d.contains("Operation not supported")),
        "{g:#?}"
    );
    let m = measurements(&r, "xdp-bench");
    assert_eq!(m[0].0, ResultType::Fail, "measurement_success is false");
}

#[test]
fn redirect_cpu_spreads_over_perf_tool_cpu_and_reports_per_cpu_rates() {
    let r = run_on(
        "XDPRedirectCPURecipe",
        &format!("{SMOKE};perf_tool_cpu=[2,3];perf_parallel_processes=2;xdp_redirect_program='round-robin';ratep=1000;burst=4"),
        // CPUs 2 and 3 must exist on both hosts (checked before any traffic).
        Script::default()
            .packet_rate(800.0)
            .hw(crate::scripted::HwScript {
                cpus: 4,
                ..Default::default()
            }),
        TWO,
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{:?} {:#?}",
        r.run.exception,
        generic(&r)
    );
    let jobs = jobs(&r);
    let (cpus, program, qsize) = jobs
        .iter()
        .find_map(|(_, s)| match s {
            JobSpec::XdpBenchRedirectCpu {
                cpus,
                program,
                qsize,
                ..
            } => Some((cpus.clone(), *program, *qsize)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{jobs:#?}"));
    assert_eq!(
        (cpus, program, qsize),
        (vec![2, 3], XdpRedirectProgram::RoundRobin, 512)
    );
    // One pktgen device per flow, round-robin over perf_tool_cpu, the flows' ports, the rate
    // divided by the burst.
    let devices = jobs
        .iter()
        .find_map(|(_, s)| match s {
            JobSpec::Pktgen { devices, .. } => Some(devices.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let got: Vec<(u32, u16, u16, u32, Option<u64>)> = devices
        .iter()
        .map(|d| (d.cpu, d.src_port, d.dst_port, d.burst, d.ratep))
        .collect();
    assert_eq!(
        got,
        [
            (2, 12000, 12000, 4, Some(250)),
            (3, 12001, 12001, 4, Some(250))
        ]
    );
    let m = measurements(&r, "xdp-redirect-cpu");
    assert_eq!(m.len(), 1, "one result for all flows");
    let (res, desc, data) = &m[0];
    assert_eq!(*res, ResultType::Pass, "{desc}");
    // 2 devices × 800; the scripted xdp-bench: 800 rx/s, 400 per target CPU.
    assert_eq!(data["generator_results"].as_f64(), Some(1600.0));
    assert_eq!(data["forwarded_results"].as_f64(), Some(800.0));
    assert_eq!(data["receiver_results"].as_f64(), Some(800.0));
    assert!(desc.contains("parallel_streams=2"), "{desc}");
    assert!(desc.contains("cpupin=[2, 3]"), "{desc}");
    assert!(
        desc.contains("Per-CPU received (receiver_results): 800.000000"),
        "{desc}"
    );
    // rxhash off on host2.eth0, put back with the test-wide scope.
    let offs: Vec<Vec<(String, bool)>> = r
        .journal
        .entries()
        .into_iter()
        .filter(|e| e.host == "host2")
        .filter_map(|e| match e.op {
            Op::SetOffloads { features, .. } => Some(features),
            _ => None,
        })
        .collect();
    assert_eq!(
        offs.first(),
        Some(&vec![("rxhash".to_string(), false)]),
        "{offs:?}"
    );
    assert_eq!(offs.len(), 2, "rxhash restored: {offs:?}");
}

#[test]
fn forwarding_generates_on_host1_forwards_on_host2_and_drops_in_the_namespace() {
    let r = run_on(
        "ForwardingRecipe",
        &format!("{SMOKE};{ROUTED};perf_tool_cpu=[1]"),
        Script::default().packet_rate(1000.0),
        FOUR,
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{:?}",
        r.run.exception
    );
    let jobs = jobs(&r);
    let dropper = jobs
        .iter()
        .find(|(_, s)| matches!(s, JobSpec::XdpBench { .. }))
        .unwrap_or_else(|| panic!("{jobs:#?}"));
    assert!(dropper.0.starts_with("host1 in "), "{dropper:?}");
    let JobSpec::XdpBench {
        command,
        interface,
        xdp_mode,
        ..
    } = &dropper.1
    else {
        unreachable!()
    };
    assert_eq!(
        (*command, interface.as_str(), *xdp_mode),
        (XdpBenchCommand::Drop, "veth-c", XdpMode::Native)
    );
    let stats: Vec<(String, Vec<String>)> = jobs
        .iter()
        .filter_map(|(h, s)| match s {
            JobSpec::IfStats { interfaces, .. } => Some((h.clone(), interfaces.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        stats,
        [
            ("host2".to_string(), vec!["veth-b".to_string()]),
            ("host2".to_string(), vec!["veth-d".to_string()])
        ]
    );
    let pktgen = jobs
        .iter()
        .find_map(|(h, s)| match s {
            JobSpec::Pktgen { devices, .. } => Some((h.clone(), devices.clone())),
            _ => None,
        })
        .unwrap_or_default();
    assert_eq!(pktgen.0, "host1");
    let d = &pktgen.1[0];
    // Towards the forwarder's ingress MAC, addressed to the receiver.
    assert_eq!(
        (
            d.ifname.as_str(),
            d.dst_mac.as_str(),
            d.dst_ip.as_str(),
            d.cpu
        ),
        ("veth-a", "02:00:00:00:02:01", "198.18.97.2", 1)
    );
    // Static neighbours of the receiver on host2's egress, deleted at the end.
    let neigh: Vec<String> = r
        .journal
        .entries()
        .into_iter()
        .filter_map(|e| match e.op {
            Op::AddNeighbour { neighbour } => Some(format!(
                "add {} {:?} {}",
                neighbour.ip, neighbour.lladdr, neighbour.ifname
            )),
            Op::DelNeighbour { neighbour } => {
                Some(format!("del {} {}", neighbour.ip, neighbour.ifname))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        neigh,
        [
            "add 198.18.97.2 Some(\"02:00:00:00:01:02\") veth-d",
            "add fd00:97::2 Some(\"02:00:00:00:01:02\") veth-d",
            // Upstream's deconfiguration order: IPv4, then IPv6.
            "del 198.18.97.2 veth-d",
            "del fd00:97::2 veth-d",
        ]
    );
    let m = measurements(&r, "forwarding");
    assert_eq!(m.len(), 1);
    let (res, desc, data) = &m[0];
    assert_eq!(*res, ResultType::Pass, "{desc}");
    for k in [
        "generator_results",
        "receiver_results",
        "forwarder_rx_results",
        "forwarder_tx_results",
    ] {
        assert_eq!(data[k].as_f64(), Some(1000.0), "{k}: {desc}");
    }
    assert!(
        desc.contains(
            "Forwarder RX (forwarder_rx_results): 1 000.00 +-0.00(0.00%) packets per second."
        ),
        "{desc}"
    );
    // Three ping pairs, as upstream.
    assert_eq!(
        r.run.results.iter().filter(|e| matches!(&e.kind, ResultKind::Measurement { measurement_type, .. } if measurement_type == "ping")).count(),
        3
    );
}

/// XDPForwardingRecipe without a working `xdp-forward` (Debian 12's xdp-tools 1.3.1 has
/// none): the test FAILs at its test-wide configuration naming the tool and the reason, before
/// any ping or packet, and the static neighbours are taken back.
#[test]
fn xdp_forwarding_without_xdp_forward_fails_before_traffic() {
    let script = Script {
        jobs: Some(std::sync::Arc::new(
            |call: &crate::scripted::JobCall| match &call.spec {
                JobSpec::XdpForward { .. } => crate::scripted::JobOutput {
                    exit_code: 127,
                    stdout: String::new(),
                    stderr: "xdp-forward: not found in PATH\n".into(),
                    duration: 0.0,
                    data: None,
                },
                _ => Script::default().builtin_answer(call),
            },
        )),
        ..Script::default()
    };
    let r = run_on(
        "XDPForwardingRecipe",
        &format!("{SMOKE};{ROUTED};perf_tool_cpu=[1]"),
        script,
        FOUR,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let e = r.run.exception.clone().unwrap_or_default();
    assert!(
        e.contains("Failed to load XDP program")
            && e.contains("xdp-forward load veth-b veth-d")
            && e.contains("xdp-forward: not found in PATH"),
        "{e}"
    );
    let started: Vec<String> = jobs(&r)
        .into_iter()
        .map(|(h, s)| format!("{h} {}", s.argv().map(|a| a.join(" ")).unwrap_or_default()))
        .collect();
    assert_eq!(
        started,
        ["host2 xdp-forward load veth-b veth-d"],
        "{started:?}"
    );
    assert!(!r.run.results.iter().any(|e| matches!(
        &e.kind,
        ResultKind::Measurement { measurement_type, .. } if measurement_type == "ping" || measurement_type == "forwarding"
    )));
    let neigh: Vec<&str> = r
        .journal
        .entries()
        .iter()
        .filter_map(|e| match e.op {
            Op::AddNeighbour { .. } => Some("add"),
            Op::DelNeighbour { .. } => Some("del"),
            _ => None,
        })
        .collect();
    assert_eq!(neigh, ["add", "add", "del", "del"]);
}

#[test]
fn plan_time_refusals_name_the_culprit() {
    for recipe in [
        "XDPDropRecipe",
        "XDPTxRecipe",
        "ForwardingRecipe",
        "XDPForwardingRecipe",
    ] {
        let e = plan(recipe, SMOKE).map(|_| ()).unwrap_err();
        assert!(e.contains("perf_tool_cpu"), "{recipe}: {e}");
    }
    let e = plan("XDPRedirectCPURecipe", SMOKE).map(|_| ()).unwrap_err();
    assert!(
        e.contains("'perf_tool_cpu'") && e.contains("mandatory"),
        "{e}"
    );
    for (mdi, want) in [
        (
            "{'host3':{'eth0':{'cpus':[0],'policy':'all'}}}",
            "host3.eth0 is not a device of this recipe",
        ),
        (
            "{'host1':{'eth0':{'cpus':[0],'policy':'sideways'}}}",
            "expected 'round-robin' or 'all'",
        ),
        (
            "{'host1':{'eth0':{'cpus':['a'],'policy':'all'}}}",
            "is not a CPU id",
        ),
        (
            "{'host1':{'eth0':{'cpus':[0],'policy':'all','extra':1}}}",
            "unknown key",
        ),
        ("[0]", "expected"),
    ] {
        let e = plan(
            "XDPDropRecipe",
            &format!("{SMOKE};perf_tool_cpu=[0];multi_dev_interrupt_config={mdi}"),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            e.contains("multi_dev_interrupt_config") && e.contains(want),
            "{mdi}: {e}"
        );
    }
    // The documented shape, upstream's cpu_policy key, and no policy (round-robin).
    for mdi in [
        "{'host1':{'eth0':{'cpus':[0],'policy':'round-robin'}}}",
        "{'host2':{'eth0':{'cpus':[0,1],'cpu_policy':'all'}}}",
        "{'host1':{'eth0':{'cpus':[0]}}}",
    ] {
        plan(
            "XDPDropRecipe",
            &format!("{SMOKE};perf_tool_cpu=[0];multi_dev_interrupt_config={mdi}"),
        )
        .unwrap_or_else(|e| panic!("{mdi}: {e}"));
    }
    let e = plan(
        "XDPDropRecipe",
        &format!("{SMOKE};perf_tool_cpu=[0];xdp_command='tx'"),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.contains("xdp_command"), "{e}");
    let e = plan(
        "XDPRedirectCPURecipe",
        &format!("{SMOKE};perf_tool_cpu=[0];xdp_redirect_program='l4-hash'"),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.contains("xdp_redirect_program"), "{e}");
}

/// The forwarding recipes' receiver is in host1's namespace while the test runs: its IRQs are
/// keyed `host1.ns` (upstream's `host1.ns.eth1`); `host1.eth1` is refused naming it.
#[test]
fn forwarding_irq_pinning_names_the_receiver_in_its_namespace() {
    let e = plan(
        "ForwardingRecipe",
        &format!("{SMOKE};{ROUTED};perf_tool_cpu=[0];multi_dev_interrupt_config={{'host1':{{'eth1':{{'cpus':[0]}}}}}}"),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        e.contains("multi_dev_interrupt_config")
            && e.contains("host1.eth1 is not a device of this recipe")
            && e.contains("host1.ns.eth1"),
        "{e}"
    );
    plan(
        "ForwardingRecipe",
        &format!("{SMOKE};{ROUTED};perf_tool_cpu=[0];multi_dev_interrupt_config={{'host1.ns':{{'eth1':{{'cpus':[0]}}}},'host2':{{'eth0':{{'cpus':[1]}}}}}}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The documented command's IRQ pinning goes through the ENRT base's one
/// MultiDevInterruptHWConfigMixin path: pinned before the traffic of the sub-configuration,
/// described as upstream, and every changed list put back after it.
#[test]
fn xdp_irq_pinning_is_the_base_sub_configuration_step() {
    let r = run_on(
        "XDPDropRecipe",
        &format!("{SMOKE};perf_tool_cpu=[0,1];multi_dev_interrupt_config={{'host1':{{'eth0':{{'cpus':[0],'policy':'round-robin'}}}}}}"),
        Script::default()
            .packet_rate(1000.0)
            .hw(crate::scripted::HwScript {
                nic_hw: true,
                ..Default::default()
            }),
        TWO,
    );
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{:#?}",
        generic(&r)
    );
    let host1: Vec<String> = r
        .journal
        .entries()
        .into_iter()
        .filter(|e| e.host == "host1")
        .filter_map(|e| match e.op {
            Op::SetIrqAffinity { .. } | Op::RestoreIrqAffinity { .. } => {
                Some(e.op.name().to_string())
            }
            Op::StartJob {
                spec: JobSpec::Pktgen { .. },
            } => Some("Pktgen".into()),
            _ => None,
        })
        .collect();
    assert_eq!(
        host1,
        ["SetIrqAffinity", "Pktgen", "RestoreIrqAffinity"],
        "{host1:?}"
    );
    assert!(!r
        .journal
        .entries()
        .iter()
        .any(|e| e.host == "host2" && matches!(e.op, Op::SetIrqAffinity { .. })));
    let (_, sub) = generic(&r)
        .into_iter()
        .find(|(_, d)| d.starts_with("Sub configuration description:"))
        .unwrap_or_else(|| panic!("no sub-configuration description"));
    assert!(
        sub.contains("host1.eth0 irqs bound to cpu [0] with policy:round-robin"),
        "{sub}"
    );
}

#[test]
fn steering_flows_is_refused_with_the_reason() {
    let r = run_on(
        "ForwardingRecipe",
        &format!("{SMOKE};{ROUTED};perf_tool_cpu=[1];steer_flows_by='dst-port'"),
        Script::default(),
        FOUR,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let exc = r.run.exception.clone().unwrap_or_default();
    assert!(
        exc.contains("steer_flows_by='dst-port'") && exc.contains("not implemented"),
        "{exc}"
    );
    assert!(jobs(&r).is_empty(), "nothing ran");
}

fn iv(v: f64, d: f64, t: f64) -> PerfResult {
    PerfResult::interval(v, d, "packets", t)
}

fn cpu(host: &str, start: f64, end: f64) -> CpuIteration {
    CpuIteration {
        host: host.into(),
        stats: vec![CpuStat {
            cpu: "cpu".into(),
            utilization: PerfResult::interval(
                50.0 * (end - start),
                end - start,
                "cpu_percent",
                start,
            ),
        }],
    }
}

/// The aggregation maths against a hand computation: the window is [latest start, earliest
/// end] over the packet result (its metrics' span) and the CPU samplers, with no warm-up
/// trim; intervals cut by the window keep their share of packets; the aggregate averages are
/// Σ packets / Σ seconds over the iterations and the deviation is the sample deviation of the
/// per-iteration averages.
#[test]
fn aggregation_matches_a_hand_computation() {
    // Iteration 1: pktgen 100 then 300 packets in [10, 12]; xdp-bench 50 in [10.5, 11.5] and
    // 150 in [11.5, 12.5]; CPU sampled over [9.8, 12.2].
    let mut it1 = vec![PacketIteration {
        metrics: vec![
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![
                iv(100.0, 1.0, 10.0),
                iv(300.0, 1.0, 11.0),
            ])]),
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![
                iv(50.0, 1.0, 10.5),
                iv(150.0, 1.0, 11.5),
            ])]),
        ],
        success: true,
    }];
    let mut c1 = vec![cpu("host1", 9.8, 12.2)];
    let w = align_packet_iteration(&mut it1, &mut c1).unwrap_or_else(|e| panic!("{e}"));
    // Latest start: max(min(10, 10.5), 9.8) = 10; earliest end: min(max(12, 12.5), 12.2) = 12.2.
    assert_eq!(w, (10.0, 12.2));
    let gen1 = &it1[0].metrics[0];
    let rec1 = &it1[0].metrics[1];
    assert_eq!((gen1.value(), gen1.duration()), (400.0, 2.0));
    // 50 whole, then 150 × 0.7 of [11.5, 12.5] kept.
    assert!((rec1.value() - 155.0).abs() < 1e-9, "{rec1:?}");
    assert!((rec1.duration() - 1.7).abs() < 1e-9);
    assert!((c1[0].stats[0].utilization.duration() - 2.2).abs() < 1e-9);
    // Iteration 2: pktgen 500 in [20, 21]; xdp-bench 200 in [20, 21]; CPU over [19, 22].
    let mut it2 = vec![PacketIteration {
        metrics: vec![
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(500.0, 1.0, 20.0)])]),
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(200.0, 1.0, 20.0)])]),
        ],
        success: true,
    }];
    let mut c2 = vec![cpu("host1", 19.0, 22.0)];
    assert_eq!(align_packet_iteration(&mut it2, &mut c2), Ok((20.0, 21.0)));
    let agg = AggregatedPackets {
        kind: PacketKind::XdpBench,
        flow_desc: "Flow(...)".into(),
        iterations: vec![it1.remove(0), it2.remove(0)],
    };
    // Generator: (400 + 500) / (2 + 1) = 300; iterations 200 and 500 → stdev 212.132…
    let g = agg.metric(0);
    assert!((g.average() - 300.0).abs() < 1e-9);
    assert!((g.std_deviation() - 212.132_034_355_964_25).abs() < 1e-6);
    // Receiver: (155 + 200) / (1.7 + 1) = 131.481…
    let rec = agg.metric(1);
    assert!((rec.average() - 355.0 / 2.7).abs() < 1e-9);
    assert!(agg.passed());
    let lines = agg.report_lines();
    assert_eq!(
        lines[1],
        "Generator generated (generator_results): 300.000000 +-212.132034(70.71%) packets per second."
    );
    assert_eq!(
        agg.summary_json()["receiver_results"]
            .as_f64()
            .map(|v| (v * 1000.0).round()),
        Some((355.0 / 2.7 * 1000.0_f64).round())
    );
    let (ok, _) = agg.nonzero_evaluation();
    assert!(ok);
    // An iteration that measured nothing at the receiver fails the evaluation.
    let mut zero = agg.clone();
    zero.iterations[1].metrics[1] =
        PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(0.0, 1.0, 20.0)])]);
    let (ok, text) = zero.nonzero_evaluation();
    assert!(!ok);
    assert!(
        text.contains("FAIL: receiver_results reported zero throughput"),
        "{text}"
    );
    // Windows that do not overlap leave nothing to align.
    let mut far = vec![PacketIteration {
        metrics: vec![PerfResult::Sequential(vec![iv(1.0, 1.0, 100.0)])],
        success: true,
    }];
    assert!(align_packet_iteration(&mut far, &mut [cpu("h", 0.0, 5.0)]).is_err());
    assert_eq!(
        far[0].metrics[0].value(),
        1.0,
        "unchanged after a failed alignment"
    );
}

/// Redirect-cpu and forwarding results are PASS only with valid durations; a failed job's
/// empty metric makes the result FAIL.
#[test]
fn invalid_durations_fail_redirect_and_forwarding_results() {
    let ok = PacketIteration {
        metrics: vec![
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(10.0, 1.0, 0.0)])]),
            PerfResult::Parallel(vec![]),
            PerfResult::Parallel(vec![PerfResult::Sequential(vec![iv(10.0, 1.0, 0.0)])]),
        ],
        success: false,
    };
    let agg = AggregatedPackets {
        kind: PacketKind::XdpRedirectCpu,
        flow_desc: String::new(),
        iterations: vec![ok],
    };
    assert_eq!(agg.invalid_durations(), ["Receiver"]);
    assert!(!agg.passed());
    assert!(agg
        .report_lines()
        .contains(&"Receiver has invalid duration!".to_string()));
}
