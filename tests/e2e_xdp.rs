//! The XDP and forwarding recipes end to end on VM agents (LNST_AGENTS=vm, Debian's 6.1 guest
//! kernel: pktgen, native XDP on virtio-net, IRQs to pin). The host's xdp-tools (xdp-bench)
//! is the guests' too. Under CI a missing prerequisite fails instead of skipping.
//!
//! * The containerized controller's documented command, `RECIPE=XDPDropRecipe
//!   RECIPE_PARAMS="perf_iterations=1;perf_tool_cpu=[0,1];multi_dev_interrupt_config={'host1':{'eth0':{'cpus':[0],'policy':'round-robin'}}}"`,
//!   with `perf_duration` shortened, the networks moved into this test's range, and e1000e
//!   NICs with generic XDP (`driver='e1000e';xdp_mode='skb'`): upstream's fifth default
//!   offload combination turns rx checksumming off, which Linux's virtio_net never allows
//!   (6.1, and 6.12 tried by hand; no QEMU option changes it); e1000e allows it but has no
//!   native XDP, and Debian 12's QEMU 7.2 has no igb. All five combinations run.
//! * Every other recipe once with smoke parameters, XDPForwarding FAILing without
//!   xdp-forward, and XDPDrop on virtio-net in native mode with the first combination
//!   measured and the fifth FAILing with its reason, in one TEST_DB run.

mod common;
use common::vm::*;
use common::*;
use serde_json::Value;
use std::path::Path;

fn results_of(res: &Path, idx: usize, recipe: &str) -> Vec<Value> {
    read_json(&res.join(format!("{idx}_{recipe}/run-data-0.json")))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn measured<'a>(list: &'a [Value], kind: &str) -> Vec<&'a Value> {
    list.iter()
        .filter(|r| r["measurement_type"] == kind)
        .collect()
}

fn fails(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter(|r| r["result"] == "FAIL")
        .map(|r| format!("{} {}", r["description"], r["message"]))
        .collect()
}

fn test_result(res: &Path, idx: usize) -> Value {
    read_json(&res.join("summary.json"))["tests"]
        .as_array()
        .and_then(|a| a.get(idx))
        .cloned()
        .unwrap_or_default()
}

/// Every packet measurement of `kind` PASSed with every `metrics` average above zero.
fn assert_rates(list: &[Value], kind: &str, n: usize, metrics: &[&str]) {
    let m = measured(list, kind);
    assert_eq!(m.len(), n, "{kind} results: {m:#?}");
    for r in m {
        assert_eq!(r["result"], "PASS", "{r:#}");
        for k in metrics {
            let v = r["data"][k].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{kind}: {k} = {v}: {r:#}");
        }
    }
}

/// `(host, args, result)` of every device method call `name`.
fn calls(list: &[Value], name: &str) -> Vec<(String, String, String)> {
    list.iter()
        .filter(|r| r["type"] == "device_config" && r["method"]["name"] == name)
        .map(|r| {
            (
                r["host"].as_str().unwrap_or_default().to_string(),
                r["method"]["args"].to_string(),
                r["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Per `pin_dev_interrupts` call of `host`.eth0 in the human summary log, each IRQ's
/// `(now, skipped)` (the call's data).
fn pinned_now(log: &str, host: &str) -> Vec<Vec<(String, String)>> {
    let head = format!("Calling Device method {host}.eth0.pin_dev_interrupts(");
    let mut out = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(l) = lines.next() {
        if !l.contains(&head) {
            continue;
        }
        let mut irqs: Vec<(String, String)> = Vec::new();
        while let Some(n) = lines.peek() {
            if !n.starts_with("    ") {
                break;
            }
            let t = n.trim();
            if let Some(v) = t.strip_prefix("now: ") {
                irqs.push((v.to_string(), String::new()));
            } else if let Some(v) = t.strip_prefix("skipped: ") {
                if let Some(last) = irqs.last_mut() {
                    last.1 = v.to_string();
                }
            }
            lines.next();
        }
        out.push(irqs);
    }
    out
}

/// `host`.eth0's IRQs pinned to `cpu` round-robin in each of `subs` sub-configurations
/// (described as upstream, every IRQ now on `cpu` unless the kernel manages it) and put back
/// after each.
fn assert_pinned(res: &Path, dir: &str, list: &[Value], host: &str, cpu: u32, subs: usize) {
    let line = format!("{host}.eth0 irqs bound to cpu [{cpu}] with policy:round-robin");
    let described = list
        .iter()
        .filter_map(|r| r["description"].as_str())
        .filter(|d| d.starts_with("Sub configuration description:") && d.contains(&line))
        .count();
    assert_eq!(described, subs, "{line:?} per sub-configuration");
    let pins: Vec<_> = calls(list, "pin_dev_interrupts")
        .into_iter()
        .filter(|(h, _, _)| h == host)
        .collect();
    assert_eq!(pins.len(), subs, "{pins:?}");
    for (_, args, result) in &pins {
        assert_eq!(result, "PASS", "{args}");
        assert!(args.contains(&format!("[{cpu}]")), "{args}");
    }
    let restores: Vec<_> = calls(list, "restore_irq_affinity")
        .into_iter()
        .filter(|(h, _, _)| h == host)
        .collect();
    assert_eq!(restores.len(), subs, "{restores:?}");
    assert!(restores.iter().all(|(_, _, r)| r == "PASS"), "{restores:?}");
    let log = std::fs::read_to_string(res.join(dir).join("logs/result_summary.log")).unwrap();
    let now = pinned_now(&log, host);
    assert_eq!(now.len(), subs);
    for irqs in now {
        assert!(!irqs.is_empty(), "no IRQ of {host}.eth0 listed");
        for (n, skipped) in irqs {
            assert!(
                n == cpu.to_string() || skipped != "None",
                "not pinned to CPU {cpu}: now {n}, skipped {skipped}"
            );
        }
    }
}

fn check_guest_kernel(res: &Path, k: &(String, String)) {
    let release = guest_release(&k.1);
    for t in read_json(&res.join("summary.json"))["tests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        for (h, a) in t["runs"][0]["agents"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            assert_eq!(a["kernel_release"], release.as_str(), "{h}: {t:#}");
        }
    }
}

#[test]
fn vm_documented_xdp_drop_command_reports_packet_rates_with_irqs_pinned() {
    let Some(k) = require_vm_e2e() else { return };
    if !require(
        have("xdp-bench"),
        "xdp-bench (Debian's xdp-tools) is not installed",
    ) {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    // Upstream's five default offload combinations; the fifth turns rx checksumming off,
    // which only the e1000e NIC can (virtio-net keeps it fixed on), and e1000e has generic
    // XDP only.
    let params = "perf_iterations=1;perf_tool_cpu=[0,1];multi_dev_interrupt_config={'host1':{'eth0':{'cpus':[0],'policy':'round-robin'}}};\
perf_duration=2;net_ipv4='198.18.96.0/24';net_ipv6='fd00:96::/64';driver='e1000e';xdp_mode='skb'";
    let mut vars = vm_vars(&k);
    vars.extend([
        ("RECIPE", "XDPDropRecipe"),
        ("RECIPE_PARAMS", params),
        ("LNST_VM_CPUS", "2"),
    ]);
    let t0 = std::time::Instant::now();
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    let res = home.path().join("results");
    let list = results_of(&res, 0, "XDPDropRecipe");
    assert_eq!(fails(&list), Vec::<String>::new(), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Every default combination applied, rx off included.
    let subs: Vec<&str> = list
        .iter()
        .filter_map(|r| r["description"].as_str())
        .filter(|d| d.starts_with("Sub configuration description:"))
        .collect();
    assert_eq!(subs.len(), 5, "{subs:#?}");
    assert!(
        subs[4].contains(
            "Currently configured offload combination: gro=on gso=on tso=on tx=on rx=off"
        ),
        "{}",
        subs[4]
    );
    // 5 sub-configurations × (tcp, udp, sctp) × (ipv4, ipv6), sctp skipped where a disabled
    // offload meets gso on (combinations 2, 4 and 5): 6 + 4 + 6 + 4 + 4 = 24.
    assert_rates(
        &list,
        "xdp-bench",
        24,
        &["generator_results", "receiver_results"],
    );
    let all = serde_json::to_string(&list).unwrap();
    assert!(
        all.contains("xdp-bench drop ") && all.contains("--xdp-mode skb"),
        "no xdp-bench drop job in generic mode: {all}"
    );
    // The generator's IRQs pinned as the command asks, in every sub-configuration.
    assert_pinned(&res, "0_XDPDropRecipe", &list, "host1", 0, 5);
    assert_eq!(test_result(&res, 0)["result"], "PASS");
    check_guest_kernel(&res, &k);
    eprintln!(
        "documented XDPDropRecipe command: {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    for id in run_ids_in_results(&res) {
        assert_no_vm_leftovers(&id, &text);
    }
    assert_nothing_to_clean_up(home.path(), &vm_vars(&k));
}

#[test]
fn vm_packet_recipes_with_smoke_parameters() {
    let Some(k) = require_vm_e2e() else { return };
    if !require(
        have("xdp-bench"),
        "xdp-bench (Debian's xdp-tools) is not installed",
    ) {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let smoke = |extra: Value| {
        let mut p = serde_json::json!({
            "perf_iterations": 1,
            "perf_duration": 2,
            "perf_tests": ["udp_stream"],
            "offload_combinations": [],
            "ping_count": 5,
            "ping_interval": 0.2,
            "net_ipv4": "198.18.98.0/24",
            "net_ipv6": "fd00:98::/64",
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            p[k] = v;
        }
        p
    };
    let routed = serde_json::json!({
        "netns_ipv4": "198.18.99.0/24", "netns_ipv6": "fd00:99::/64", "perf_tool_cpu": [1],
        "ip_versions": ["ipv4"],
    });
    let tests = vec![
        (
            "XDPTxRecipe",
            smoke(
                serde_json::json!({"perf_tool_cpu": [1], "xdp_mode": "skb", "ip_versions": ["ipv6"]}),
            ),
        ),
        (
            "XDPRedirectCPURecipe",
            smoke(serde_json::json!({
                "perf_tool_cpu": [1], "xdp_redirect_program": "round-robin", "ip_versions": ["ipv4"],
                "multi_dev_interrupt_config": {"host2": {"eth0": {"cpus": [0], "policy": "round-robin"}}},
            })),
        ),
        ("ForwardingRecipe", smoke(routed.clone())),
        ("XDPForwardingRecipe", smoke(routed)),
        // virtio-net and native XDP with upstream's first and fifth default offload
        // combinations: the fifth (rx off) cannot be set on virtio-net.
        (
            "XDPDropRecipe",
            smoke(serde_json::json!({
                "perf_tool_cpu": [1], "ip_versions": ["ipv4"],
                "offload_combinations": [
                    {"gro": "on", "gso": "on", "tso": "on", "tx": "on", "rx": "on"},
                    {"gro": "on", "gso": "on", "tso": "on", "tx": "on", "rx": "off"},
                ],
            })),
        ),
    ];
    let tests: Vec<(&str, Value)> = tests.into_iter().collect();
    let db = common::catalogue::test_db(home.path(), &tests);
    let mut vars = vm_vars(&k);
    // perf_tool_cpu [1]: two vCPUs, whatever the host's cores would choose.
    vars.push(("LNST_VM_CPUS", "2"));
    vars.push(("TEST_DB", &db));
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    let res = home.path().join("results");

    // XDPTx, generic (skb) mode over IPv6.
    let tx = results_of(&res, 0, "XDPTxRecipe");
    assert_eq!(fails(&tx), Vec::<String>::new(), "{text}");
    assert_rates(
        &tx,
        "xdp-bench",
        1,
        &["generator_results", "receiver_results"],
    );
    let jobs = serde_json::to_string(&tx).unwrap();
    assert!(
        jobs.contains("xdp-bench tx ") && jobs.contains("--xdp-mode skb"),
        "no xdp-bench tx job in generic mode: {jobs}"
    );

    // XDPRedirectCPU: per-CPU rates, host2's IRQs on CPU 0.
    let rc = results_of(&res, 1, "XDPRedirectCPURecipe");
    assert_eq!(fails(&rc), Vec::<String>::new(), "{text}");
    assert_rates(
        &rc,
        "xdp-redirect-cpu",
        1,
        &["generator_results", "receiver_results", "forwarded_results"],
    );
    assert_pinned(&res, "1_XDPRedirectCPURecipe", &rc, "host2", 0, 1);

    // Forwarding through host2's kernel.
    let fw = results_of(&res, 2, "ForwardingRecipe");
    assert_eq!(fails(&fw), Vec::<String>::new(), "{text}");
    assert_rates(
        &fw,
        "forwarding",
        1,
        &[
            "generator_results",
            "receiver_results",
            "forwarder_rx_results",
            "forwarder_tx_results",
        ],
    );
    for i in 0..3 {
        assert_eq!(test_result(&res, i)["result"], "PASS", "test {i}");
    }

    // XDPForwarding needs xdp-forward (xdp-tools >= 1.5): PASS where it exists, else a FAIL
    // naming it, before any traffic.
    let xf = test_result(&res, 3);
    if have("xdp-forward") {
        assert_eq!(xf["result"], "PASS", "{text}");
        assert_eq!(out.status.code(), Some(0), "{text}");
    } else {
        assert_eq!(xf["result"], "FAIL", "{xf:#}");
        let list = results_of(&res, 3, "XDPForwardingRecipe");
        let all = serde_json::to_string(&list).unwrap();
        assert!(
            all.contains("Failed to load XDP program")
                && all.contains("xdp-forward: not found in PATH"),
            "{all}"
        );
        assert!(measured(&list, "forwarding").is_empty());
        assert_eq!(out.status.code(), Some(1), "{text}");
    }
    // XDPDrop on virtio-net in native mode: measured in the first sub-configuration; the
    // second (rx off) FAILs with the driver's reason before its pings and packets
    // (docs/UPSTREAM-DIFFERENCES.md).
    assert_eq!(test_result(&res, 4)["result"], "FAIL");
    let rx = results_of(&res, 4, "XDPDropRecipe");
    assert_rates(
        &rx,
        "xdp-bench",
        1,
        &["generator_results", "receiver_results"],
    );
    assert_eq!(measured(&rx, "ping").len(), 1);
    let all = serde_json::to_string(&rx).unwrap();
    assert!(
        all.contains("--xdp-mode native") && all.contains("rx is still on [fixed]"),
        "{all}"
    );
    check_guest_kernel(&res, &k);
    for id in run_ids_in_results(&res) {
        assert_no_vm_leftovers(&id, &text);
    }
    assert_nothing_to_clean_up(home.path(), &vm_vars(&k));
}
