//! Request/response perf tests (tcp_rr, tcp_crr, udp_rr through lnst-agent's generator),
//! ShortLivedConnectionsRecipe and SimpleNetworkTunableRecipe against scripted in-memory
//! agents: the jobs started, the results and raw files, the tunables applied and restored in
//! upstream's order, and evaluators and refusals that FAIL. The kernel's part runs on real
//! agents in tests/e2e_rr_tunable.rs.

use super::test_support::*;
use crate::protocol::{FlowType, JobSpec, Op, RrWorkload};
use crate::results::{DeviceAction, ResultKind, ResultType};
use crate::scripted::{JobOutput, Script, ScriptedRun};
use std::sync::Arc;

fn run(recipe: &str, params: &str, script: Script) -> ScriptedRun {
    run_on(recipe, params, script, TWO)
}

/// The generic results (descriptions, evaluations, failures), without the agent lines.
fn texts(r: &ScriptedRun) -> Vec<(ResultType, String)> {
    r.run
        .results
        .iter()
        .filter(|e| {
            matches!(e.kind, ResultKind::Generic) && !e.description.starts_with("Agent host")
        })
        .map(|e| (e.result, e.description.clone()))
        .collect()
}

/// The flow measurements: (result, description, summary, details).
fn flows(r: &ScriptedRun) -> Vec<(ResultType, String, serde_json::Value, serde_json::Value)> {
    r.run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::Measurement {
                measurement_type,
                summary,
            } if measurement_type == "flow" => Some((
                e.result,
                e.description.clone(),
                summary.clone(),
                e.data.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

/// The NIC tunable calls of `host` (device method calls `set_*`, `restore_*`) as
/// `name(args)`, in order.
fn calls(r: &ScriptedRun, host: &str) -> Vec<String> {
    r.run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::DeviceConfig {
                host: h,
                action: DeviceAction::MethodCall { name, args, .. },
                ..
            } if h == host && (name.starts_with("set_") || name.starts_with("restore_")) => {
                Some(format!("{name}({})", args.join(", ")))
            }
            _ => None,
        })
        .collect()
}

fn failures(r: &ScriptedRun) -> String {
    let mut all: Vec<String> = texts(r)
        .into_iter()
        .filter(|(t, _)| *t == ResultType::Fail)
        .map(|(_, s)| s)
        .collect();
    all.extend(r.run.exception.iter().map(|e| format!("exception: {e:?}")));
    all.join("\n")
}

const RR: &str = "perf_duration=2;perf_warmup_duration=1;ip_versions=('ipv4',);offload_combinations=[];ping_count=4;net_ipv4='198.18.90.0/24';net_ipv6='fd00:90::/64'";

#[test]
fn rr_tests_run_the_built_in_generator_and_report_transactions_and_latency() {
    let r = run(
        "SimpleNetworkRecipe",
        &format!("{RR};perf_iterations=2;net_perf_tool='neper';perf_tests=['tcp_rr','tcp_crr','udp_rr'];perf_msg_sizes=[64]"),
        Script::default().rr_rate(2500.0),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{}", failures(&r));
    // One server on host2 and one client on host1 per test and iteration; the size is the
    // request and the response; the run is the duration plus the warm-up at both ends.
    let jobs = r.journal.jobs();
    let mut seen = Vec::new();
    for (host, spec) in &jobs {
        match spec {
            JobSpec::RrServer {
                workload,
                bind,
                port,
                request_size,
                response_size,
                duration_ms,
                cpus,
                ..
            } => {
                assert_eq!(host, "host2");
                assert_eq!(
                    (bind.as_str(), *port, *request_size, *response_size),
                    ("198.18.90.2", 12000, 64, 64)
                );
                assert_eq!((*duration_ms, cpus), (4000, &None));
                seen.push(format!("server {}", workload.name()));
            }
            JobSpec::RrClient {
                workload,
                server,
                port,
                request_size,
                response_size,
                duration_ms,
                ..
            } => {
                assert_eq!(host, "host1");
                assert_eq!(
                    (
                        server.as_str(),
                        *port,
                        *request_size,
                        *response_size,
                        *duration_ms
                    ),
                    ("198.18.90.2", 12000, 64, 64, 4000)
                );
                seen.push(format!("client {}", workload.name()));
            }
            JobSpec::IperfClient { .. } | JobSpec::IperfServer { .. } => {
                panic!("iperf3 started for a neper test: {spec:?}")
            }
            _ => {}
        }
    }
    let want: Vec<String> = ["tcp_rr", "tcp_crr", "udp_rr"]
        .iter()
        .flat_map(|w| {
            let one = [format!("server {w}"), format!("client {w}")];
            one.clone().into_iter().chain(one)
        })
        .collect();
    assert_eq!(seen, want);
    // Transactions per second, as upstream's NeperFlowMeasurement shapes them; latency on top.
    let f = flows(&r);
    assert_eq!(f.len(), 3);
    for (res, desc, summary, details) in &f {
        assert_eq!(*res, ResultType::Pass);
        for side in ["generator_results", "receiver_results"] {
            let v = summary[side].as_f64().unwrap_or_default();
            assert!((v - 2500.0).abs() < 1e-6, "{side} {v}: {summary}");
        }
        assert!(
            desc.contains("(generator_results): 2500.00 +-0.00(0.00%) transactions per second."),
            "{desc}"
        );
        assert!(
            desc.contains("Generator measured latency (iteration 2): mean 400.00 µs"),
            "{desc}"
        );
        let rr = details["rr"].as_array().cloned().unwrap_or_default();
        assert_eq!(rr.len(), 2, "{details}");
        assert_eq!(rr[0]["generator"]["latency_s"]["mean"], 0.0004);
        assert_eq!(rr[0]["receiver"]["role"], "server");
        assert_eq!(details["iterations"].as_array().map(Vec::len), Some(2));
    }
    assert!(f[1].1.contains("type=tcp_crr,"), "{}", f[1].1);
    // NonzeroFlowEvaluator per flow.
    let evals: Vec<(ResultType, String)> = texts(&r)
        .into_iter()
        .filter(|(_, s)| s.starts_with("Nonzero evaluation"))
        .collect();
    assert_eq!(evals.len(), 3);
    assert!(evals.iter().all(|(t, _)| *t == ResultType::Pass));
    // The generator's own reports are the raw files, one per side and iteration.
    let raw: Vec<&str> = r.raw.iter().map(|(n, _)| n.as_str()).collect();
    for w in ["tcp_rr", "tcp_crr", "udp_rr"] {
        for it in [1, 2] {
            for side in ["client", "server"] {
                let name = format!("sub1_{w}_ipv4_64_iter{it}_flow1_{side}.json");
                let (_, bytes) = r
                    .raw
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("{name} missing from {raw:?}"));
                let doc: serde_json::Value =
                    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(doc["workload"], w);
                assert_eq!(doc["role"], side);
            }
        }
    }
}

#[test]
fn a_client_without_transactions_fails_the_nonzero_evaluator() {
    let r = run(
        "SimpleNetworkRecipe",
        &format!("{RR};perf_iterations=1;net_perf_tool='neper';perf_tests=['tcp_rr']"),
        Script::default().rr_rate(0.0),
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let t = texts(&r);
    let eval = t
        .iter()
        .find(|(_, s)| s.starts_with("Nonzero evaluation"))
        .unwrap_or_else(|| panic!("no evaluation: {t:?}"));
    assert_eq!(eval.0, ResultType::Fail);
    assert!(
        eval.1
            .contains("generator_results reported zero throughput"),
        "{}",
        eval.1
    );
    // Nothing else failed: the jobs ran and their reports parsed.
    assert_eq!(
        t.iter().filter(|(r, _)| *r == ResultType::Fail).count(),
        1,
        "{t:?}"
    );
    let f = flows(&r);
    assert_eq!(f[0].2["generator_results"], 0.0);
    assert!(f[0].1.contains("latency (iteration 1): none"), "{}", f[0].1);
}

#[test]
fn a_failed_client_fails_with_its_reason() {
    let script = Script {
        jobs: Some(Arc::new(|call: &crate::scripted::JobCall| {
            match &call.spec {
            JobSpec::RrClient { .. } => JobOutput {
                exit_code: 1,
                stdout: r#"{"tool":"lnst-agent rr","role":"client","error":"flow 0: connecting to 198.18.90.2:12000: Connection refused"}"#.into(),
                stderr: "flow 0: connecting to 198.18.90.2:12000: Connection refused".into(),
                duration: 1.0,
                data: None,
            },
            _ => Script::default().rr_rate(100.0).answer(call),
        }
        })),
        ..Script::default()
    };
    let r = run(
        "SimpleNetworkRecipe",
        &format!("{RR};perf_iterations=1;net_perf_tool='neper';perf_tests=['udp_rr']"),
        script,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let f = failures(&r);
    assert!(
        f.contains("request/response client on host1 failed: rr generator reported an error: flow 0: connecting to 198.18.90.2:12000: Connection refused"),
        "{f}"
    );
    // The flow result fails (its job did), the server side parsed.
    let fl = flows(&r);
    assert_eq!(fl[0].0, ResultType::Fail);
    assert!(fl[0].2["receiver_results"].as_f64().unwrap_or_default() > 0.0);
}

#[test]
fn tests_the_tool_cannot_run_fail_before_anything_is_configured() {
    for (params, want) in [
        (
            "perf_tests=['tcp_rr']",
            "perf_tests: unsupported test 'tcp_rr' with net_perf_tool='iperf': tcp_rr is a request/response test, which iperf cannot run",
        ),
        (
            "net_perf_tool='neper';perf_tests=['tcp_crr','tcp_stream']",
            "perf_tests: unsupported test 'tcp_stream' with net_perf_tool='neper': tcp_stream is a stream test, which neper does not run",
        ),
        (
            "perf_tests=['mptcp_stream']",
            "unsupported test 'mptcp_stream' with net_perf_tool='iperf': iperf3 here runs tcp_stream, udp_stream and sctp_stream",
        ),
    ] {
        let r = run(
            "SimpleNetworkRecipe",
            &format!("{RR};perf_iterations=1;{params}"),
            Script::default(),
        );
        assert_eq!(r.run.overall_result(), ResultType::Fail, "{params}");
        let f = failures(&r);
        assert!(f.contains(want), "{params}: {f}");
        let configured = r
            .journal
            .ops()
            .into_iter()
            .filter(|o| !o.ends_with(":StartRecipe") && !o.ends_with(":EndRecipe") && !o.ends_with(":Bye") && !o.ends_with(":KillAllJobs"))
            .collect::<Vec<_>>();
        assert_eq!(configured, Vec::<String>::new(), "{params}");
    }
}

#[test]
fn simulated_rr_flows_count_zero_transactions() {
    let r = run(
        "SimpleNetworkRecipe",
        &format!("{RR};perf_iterations=1;net_perf_tool='neper';perf_tests=['tcp_rr'];perf_test_simulation=True"),
        Script::default(),
    );
    assert!(!r
        .journal
        .jobs()
        .iter()
        .any(|(_, j)| matches!(j, JobSpec::RrClient { .. } | JobSpec::RrServer { .. })));
    let f = flows(&r);
    assert!(
        f[0].1
            .contains("0.00 +-0.00(0.00%) transactions per second."),
        "{}",
        f[0].1
    );
    // Upstream: zeros fail the evaluator in simulation mode.
    assert_eq!(r.run.overall_result(), ResultType::Fail);
}

const SHORT_SMOKE: &str = "perf_iterations=1;perf_duration=1";
const SHORT: &str = "perf_iterations=1;perf_duration=1;net_ipv4='198.18.91.0/24'";

#[test]
fn short_lived_connections_run_three_workloads_for_five_sizes_without_pings() {
    let r = run("ShortLivedConnectionsRecipe", SHORT, Script::default());
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{}", failures(&r));
    let jobs = r.journal.jobs();
    assert!(!jobs.iter().any(|(_, j)| matches!(j, JobSpec::Ping { .. })));
    let clients: Vec<(RrWorkload, u32, String)> = jobs
        .iter()
        .filter_map(|(_, j)| match j {
            JobSpec::RrClient {
                workload,
                request_size,
                server,
                ..
            } => Some((*workload, *request_size, server.clone())),
            _ => None,
        })
        .collect();
    let mut want = Vec::new();
    for w in [RrWorkload::TcpRr, RrWorkload::TcpCrr, RrWorkload::UdpRr] {
        for s in [1000, 5000, 7000, 10000, 12000] {
            want.push((w, s, "198.18.91.11".to_string()));
        }
    }
    assert_eq!(clients, want);
    assert_eq!(flows(&r).len(), 15);
    // eth0 down, its address (host 10 and 11 of the network), up; IPv4 only.
    let ops: Vec<String> = r
        .journal
        .entries()
        .into_iter()
        .filter(|e| e.host == "host1")
        .filter_map(|e| match e.op {
            Op::SetLink { up, .. } => Some(format!("SetLink({up})")),
            Op::AddAddress { addr, .. } => Some(format!("AddAddress({addr})")),
            _ => None,
        })
        .collect();
    assert_eq!(
        ops,
        [
            "SetLink(false)",
            "AddAddress(198.18.91.10/24)",
            "SetLink(true)"
        ]
    );
    let desc = texts(&r);
    assert!(
        desc.iter()
            .any(|(_, s)| s.contains("Configured host2.eth0.ips = ['198.18.91.11/24']")),
        "{desc:?}"
    );
}

#[test]
fn short_lived_connections_parameters_are_checked_at_plan_time() {
    for (params, want) in [
        ("net_perf_tool='iperf'", "net_perf_tool"),
        ("net_ipv4='198.18.91.0/29'", "too small"),
        (
            "offload_combinations=[]",
            "'offload_combinations' is not a parameter",
        ),
        ("net_ipv6='fd00:91::/64'", "unknown parameter 'net_ipv6'"),
    ] {
        let e = plan(
            "ShortLivedConnectionsRecipe",
            &format!("{SHORT_SMOKE};{params}"),
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains(want), "{params}: {e}");
    }
    // Upstream's choices: neper only, and its defaults.
    let p = plan("ShortLivedConnectionsRecipe", SHORT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.params.str("net_perf_tool"), Some("neper"));
    assert_eq!(
        p.params.get("ip_versions").map(|v| v.to_string()),
        Some("('ipv4',)".to_string())
    );
}

const TUNABLE: &str = "perf_iterations=1;perf_duration=1;offload_combinations=[];ip_versions=('ipv4',);ping_count=4;net_ipv4='198.18.92.0/24';net_ipv6='fd00:92::/64'";

#[test]
fn nic_tunables_are_applied_in_upstreams_order_and_restored_in_reverse() {
    let params = format!(
        "{TUNABLE};perf_tests=['tcp_stream'];dev_queues={{'host1': {{'eth0': {{'combined': 2}}}}, 'host2': {{'eth0': {{'combined': 3}}}}}};\
         dev_nfc_rx_flow_hash_config={{'host2': {{'eth0': {{'udp4': 'sd', 'tcp4': 'd'}}}}}};\
         dev_rx_hash_functions={{'host2': {{'eth0': 'xor'}}}}"
    );
    let r = run(
        "SimpleNetworkTunableRecipe",
        &params,
        Script::default().multiqueue(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{}", failures(&r));
    assert_eq!(
        calls(&r, "host2"),
        [
            "set_channels('combined 3')",
            "set_rx_flow_hash('rx-flow-hash udp4 ds')",
            // tcp4 'd' is not symmetric: the input transformations go off first.
            "set_rxfh_xfrm('xfrm none')",
            "set_rx_flow_hash('rx-flow-hash tcp4 d')",
            "set_rx_hash_function('hfunc xor')",
            // remove_sub_configuration: the hash function, the flow hashes, then the
            // transformations, then the queues.
            "restore_rx_hash_function('hfunc toeplitz')",
            "restore_rx_flow_hash('rx-flow-hash udp4 dfns')",
            "restore_rx_flow_hash('rx-flow-hash tcp4 dfns')",
            "restore_rxfh_xfrm('xfrm none xfrm symmetric-xor')",
            "restore_channels('combined 4')",
        ]
    );
    assert_eq!(
        calls(&r, "host1"),
        [
            "set_channels('combined 2')",
            "restore_channels('combined 4')"
        ]
    );
    // The traffic ran between the apply and the restore.
    let ops = r.journal.ops();
    let pos = |name: &str| ops.iter().position(|o| o == name);
    let (Some(set), Some(job), Some(restore)) = (
        pos("host2:SetRss"),
        pos("host1:StartJob"),
        ops.iter().rposition(|o| o == "host2:SetChannels"),
    ) else {
        panic!("{ops:?}")
    };
    assert!(set < job && job < restore, "{ops:?}");
    let desc = texts(&r)
        .into_iter()
        .find(|(_, s)| s.starts_with("Sub configuration description:"))
        .map(|(_, s)| s)
        .unwrap_or_default();
    for line in [
        "host1 device veth-a queues configured: combined 2",
        "host2 device veth-b queues configured: combined 3",
        "host2 device veth-b nfc rx-flow-hash udp4 configured: ds",
        "host2 device veth-b nfc rx-flow-hash tcp4 configured: d",
        "host2 device veth-b rx hash function configured: xor",
    ] {
        assert!(desc.contains(line), "{line:?} missing from {desc}");
    }
    // Requests with the agent's own vocabulary.
    let fh: Vec<(FlowType, String)> = r
        .journal
        .entries()
        .into_iter()
        .filter_map(|e| match e.op {
            Op::SetRxFlowHash {
                flow_type, fields, ..
            } => Some((flow_type, fields)),
            _ => None,
        })
        .collect();
    assert_eq!(fh[0], (FlowType::Udp4, "ds".to_string()));
}

#[test]
fn unset_nic_tunables_are_skipped_and_described() {
    let r = run(
        "SimpleNetworkTunableRecipe",
        &format!("{TUNABLE};perf_tests=['tcp_stream']"),
        Script::default(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{}", failures(&r));
    assert_eq!(calls(&r, "host1"), Vec::<String>::new());
    let desc = texts(&r)
        .into_iter()
        .find(|(_, s)| s.starts_with("Sub configuration description:"))
        .map(|(_, s)| s)
        .unwrap_or_default();
    assert!(
        desc.ends_with("device queues configuration skipped\nnfc rx-flow-hash not configured\nrx hash function configuration skipped"),
        "{desc}"
    );
}

#[test]
fn a_nic_without_the_tunable_fails_before_traffic_and_restores_what_was_set() {
    // host1 has channels (set, then restored); host2's NIC has no RSS.
    let params = format!(
        "{TUNABLE};perf_tests=['tcp_stream'];dev_queues={{'host1': {{'eth0': {{'combined': 2}}}}}};dev_rx_hash_functions={{'host2': {{'eth0': 'toeplitz'}}}}"
    );
    let script = Script::default().multiqueue();
    let spec = plan("SimpleNetworkTunableRecipe", &params).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Only host1 has the multi-queue model: host2's agent is a veth one.
    let r = rt.block_on(async {
        let agents1 = crate::scripted::ScriptedAgent::new(script.clone());
        let mut agents2 = crate::scripted::ScriptedAgent::new(Script::default());
        agents2.journal = agents1.journal.clone();
        let eps = vec![
            agents1.endpoint("host1", &[("eth0", "veth-a")]),
            agents2.endpoint("host2", &[("eth0", "veth-b")]),
        ];
        let (run, raw, _) = crate::runner::run_on_endpoints(
            &spec,
            eps,
            crate::results::MatchDescription::default(),
            std::time::Duration::ZERO,
            None,
            ("scripted", None),
        )
        .await;
        ScriptedRun {
            run,
            raw,
            journal: agents1.journal,
        }
    });
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let f = failures(&r);
    assert!(
        f.contains("veth-b (driver veth) has no RSS settings"),
        "{f}"
    );
    assert!(
        !r.journal
            .jobs()
            .iter()
            .any(|(_, j)| matches!(j, JobSpec::Ping { .. } | JobSpec::IperfClient { .. })),
        "traffic after a failed sub-configuration"
    );
    assert_eq!(
        calls(&r, "host1"),
        [
            "set_channels('combined 2')",
            "restore_channels('combined 4')"
        ]
    );
    assert_eq!(
        calls(&r, "host2"),
        ["set_rx_hash_function('hfunc toeplitz')"]
    );
}

#[test]
fn generator_and_receiver_are_pinned_each_by_their_own_policy() {
    let r = run(
        "SimpleNetworkTunableRecipe",
        &format!("{TUNABLE};net_perf_tool='neper';perf_tests=['tcp_rr'];perf_parallel_processes=3;perf_tool_generator_cpu=[0,1];perf_tool_generator_cpu_policy='round-robin';perf_tool_receiver_cpu=[1,2]"),
        Script::default(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{}", failures(&r));
    let mut gen = Vec::new();
    let mut recv = Vec::new();
    for (_, j) in r.journal.jobs() {
        match j {
            JobSpec::RrClient { cpus, port, .. } => gen.push((port, cpus)),
            JobSpec::RrServer { cpus, port, .. } => recv.push((port, cpus)),
            _ => {}
        }
    }
    assert_eq!(
        gen,
        [
            (12000, Some(vec![0])),
            (12001, Some(vec![1])),
            (12002, Some(vec![0]))
        ]
    );
    assert_eq!(
        recv,
        [
            (12000, Some(vec![1, 2])),
            (12001, Some(vec![1, 2])),
            (12002, Some(vec![1, 2]))
        ]
    );
    let f = flows(&r);
    assert!(
        f[1].1
            .contains("generator_cpupin=[1],\n    receiver_cpupin=[1, 2],"),
        "{}",
        f[1].1
    );
    // Only the receiver pinned: the generator shows None, and the other way round.
    let r = run(
        "SimpleNetworkTunableRecipe",
        &format!("{TUNABLE};perf_tests=['tcp_stream'];perf_tool_receiver_cpu=[1]"),
        Script::default(),
    );
    let pins: Vec<(bool, Option<Vec<u32>>)> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(_, j)| match j {
            JobSpec::IperfClient { cpus, .. } => Some((true, cpus)),
            JobSpec::IperfServer { cpus, .. } => Some((false, cpus)),
            _ => None,
        })
        .collect();
    assert_eq!(pins, [(false, Some(vec![1])), (true, None)]);
}

#[test]
fn tunable_recipe_parameters() {
    for (params, want) in [
        ("perf_tool_cpu=[0]", "'perf_tool_cpu' is not a parameter"),
        ("dev_intr_cpu=[0]", "'dev_intr_cpu' is not a parameter"),
        ("use_vfs=True", "'use_vfs' is not a parameter"),
        (
            "dev_queues={'host1': {'eth0': {'queues': 2}}}",
            "dev_queues: host1.eth0: unknown queue kind 'queues'",
        ),
        (
            "dev_nfc_rx_flow_hash_config={'host1': {'eth0': {'tcp4': 'sq'}}}",
            "dev_nfc_rx_flow_hash_config: host1.eth0: tcp4: invalid rx-flow-hash fields",
        ),
        (
            "perf_tool_receiver_cpu_policy='rr'",
            "perf_tool_receiver_cpu_policy",
        ),
    ] {
        let e = plan(
            "SimpleNetworkTunableRecipe",
            &format!("{TUNABLE};perf_tests=['tcp_stream'];{params}"),
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains(want), "{params}: {e}");
    }
    // Per-device IRQ pinning through the base: the scripted NICs are veth-like (no IRQs), so
    // the test FAILs before traffic naming the device.
    let r = run(
        "SimpleNetworkTunableRecipe",
        &format!("{TUNABLE};perf_tests=['tcp_stream'];multi_dev_interrupt_config={{'host1': {{'eth0': {{'cpus': [0]}}}}}}"),
        Script::default(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(
        failures(&r).contains("IRQ") && r.journal.jobs().is_empty(),
        "{}",
        failures(&r)
    );
    // A device the recipe does not have: the test FAILs naming it.
    let r = run(
        "SimpleNetworkTunableRecipe",
        &format!("{TUNABLE};perf_tests=['tcp_stream'];dev_queues={{'host1': {{'eth7': {{'combined': 1}}}}}}"),
        Script::default().multiqueue(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(
        failures(&r).contains("dev_queues: host1.eth7: not a device of this recipe"),
        "{}",
        failures(&r)
    );
}

/// The kwargs recorded with every `method` call of `host`.
fn kwargs_of(r: &ScriptedRun, host: &str, method: &str) -> Vec<Vec<String>> {
    r.run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::DeviceConfig {
                host: h,
                action: DeviceAction::MethodCall { name, kwargs, .. },
                ..
            } if h == host && name == method => Some(kwargs.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_sub_configuration_finds_the_original_settings_again() {
    // Two offload combinations: the second sub-configuration sets the queues and the flow
    // hash again, and the agent reports what it found before: the originals, so the first
    // sub-configuration's restore took effect.
    let params = format!(
        "{TUNABLE};perf_tests=['tcp_stream'];offload_combinations=[{{'gro':'on'}},{{'gro':'off'}}];\
         dev_queues={{'host1': {{'eth0': {{'combined': 2}}}}}};\
         dev_nfc_rx_flow_hash_config={{'host1': {{'eth0': {{'udp4': 'sd'}}}}}};\
         dev_rx_hash_functions={{'host1': {{'eth0': 'toeplitz'}}}}"
    )
    .replace("offload_combinations=[];", "");
    let r = run(
        "SimpleNetworkTunableRecipe",
        &params,
        Script::default().multiqueue(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{}", failures(&r));
    assert_eq!(
        kwargs_of(&r, "host1", "set_channels"),
        [["previous='combined 4'"], ["previous='combined 4'"]]
    );
    assert_eq!(
        kwargs_of(&r, "host1", "restore_channels"),
        [["previous='combined 2'"], ["previous='combined 2'"]]
    );
    assert_eq!(
        kwargs_of(&r, "host1", "set_rx_flow_hash"),
        [["previous='dfns'"], ["previous='dfns'"]]
    );
    // Already the active hash function: nothing changed, nothing to restore.
    assert_eq!(
        kwargs_of(&r, "host1", "set_rx_hash_function"),
        [["unchanged=True"], ["unchanged=True"]]
    );
    assert!(kwargs_of(&r, "host1", "restore_rx_hash_function").is_empty());
}
