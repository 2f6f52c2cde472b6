//! The tunnel variants end to end. On VM agents (Debian's kernel has GRE, ip6gre, VXLAN,
//! bonding, macvlan, bridges, veths and namespaces): GreTunnelOverVlan, GreTunnelOverMacvlan,
//! GreTunnelOverBond, VxlanMulticast (two hosts and a guest), VxlanNetnsTunnel and
//! Ip6GreNetnsTunnel with smoke parameters in one TEST_DB run, each PASSing with every
//! expected ping, flow and packet assert present (the captures really saw the encapsulated
//! packets), plus, in the same run, GreTunnelRecipe with mismatched GRE keys, which must FAIL
//! (exit code 1) with lost pings and packet asserts that matched nothing; nothing is left
//! behind. On namespace agents (the host kernel has VXLAN, bridges, veths and namespaces but
//! no GRE): VxlanNetnsTunnel and VxlanMulticast pass. Under CI a missing prerequisite fails
//! instead of skipping.

mod common;
use common::catalogue::*;
use common::vm::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// The inner tunnel networks of the GRE-style recipes (their tunnel1_*/tunnel2_* parameters).
fn tunnel_nets(extra: Value) -> Value {
    let mut p = json!({
        "tunnel1_ipv4": "198.18.161.0/24", "tunnel2_ipv4": "198.18.162.0/24",
        "tunnel1_ipv6": "fd00:161::/64", "tunnel2_ipv6": "fd00:162::/64",
    });
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    smoke(p)
}

fn vxlan_multicast() -> Value {
    let mut p = smoke(json!({
        "net_ipv4": "198.18.163.0/24",
        "vxlan_ipv4": "198.18.164.0/24", "vxlan_ipv6": "fd00:164::/64",
        "vxlan_group_ip": "239.1.1.1",
    }));
    // No OffloadSubConfigMixin upstream: no offload_combinations parameter.
    if let Some(o) = p.as_object_mut() {
        o.remove("offload_combinations");
    }
    p
}

fn vxlan_netns() -> Value {
    tunnel_nets(json!({"net_ipv4": "198.18.165.0/24", "vxlan_group_ip": "239.1.1.1"}))
}

/// (recipe, smoke parameters, pings, flows, packet asserts).
fn variants() -> Vec<Smoke<&'static str>> {
    vec![
        (
            "GreTunnelOverVlanRecipe",
            tunnel_nets(json!({"net_ipv4": "198.18.150.0/24", "vlan_id": 10})),
            2,
            2,
            2,
        ),
        (
            "GreTunnelOverMacvlanRecipe",
            tunnel_nets(json!({"net_ipv4": "198.18.153.0/24"})),
            2,
            2,
            2,
        ),
        (
            "GreTunnelOverBondRecipe",
            tunnel_nets(json!({
                "net_ipv4": "198.18.154.0/24",
                "bonding_mode": "active-backup", "miimon_value": 100,
            })),
            2,
            2,
            2,
        ),
        // Six ordered pairs over IPv4 and IPv6; flows host1 <-> host2 only; no assert.
        ("VxlanMulticastRecipe", vxlan_multicast(), 12, 2, 0),
        ("VxlanNetnsTunnelRecipe", vxlan_netns(), 2, 2, 2),
        (
            "Ip6GreNetnsTunnelRecipe",
            tunnel_nets(json!({"net_ipv6": "fd00:158::/64"})),
            2,
            2,
            2,
        ),
    ]
}

/// The mismatched-key GreTunnelRecipe: host1's tunnel keys 1, host2's 2; no perf tests (a
/// flow through a dead tunnel only waits for iperf3's timeout).
fn mismatched_keys() -> Value {
    tunnel_nets(json!({
        "net_ipv4": "198.18.166.0/24", "gre_key": 1, "gre_key_host2": 2, "perf_tests": [],
    }))
}

/// Test `idx` FAILed because the tunnel carried nothing, and only for that: every ping lost
/// and every packet assert matched 0 packets with host2's key, no other FAIL, and the summary
/// says FAIL.
fn assert_failed_for_the_keys(results: &Path, idx: usize, recipe: &str) {
    let data = read_json(&results.join(format!("{idx}_{recipe}/run-data-0.json")));
    let list = data.as_array().cloned().unwrap_or_default();
    let failed: Vec<String> = list
        .iter()
        .filter(|r| r["result"] == "FAIL")
        .filter_map(|r| r["description"].as_str().map(str::to_string))
        .collect();
    // The rate evaluator's two ways of saying nothing came back.
    let lost = failed
        .iter()
        .filter(|d| {
            d.starts_with("measured rate 0 is lower than min_rate")
                || d.starts_with("RatePingEvaluator: no measured rate")
        })
        .count();
    let unmatched = failed
        .iter()
        .filter(|d| {
            d.starts_with("PacketAssert on host2.eth0: 0 packets matched") && d.contains("key=0x2,")
        })
        .count();
    assert_eq!(
        (lost, unmatched, failed.len()),
        (2, 2, 4),
        "{recipe}: {failed:#?}"
    );
    let pings: Vec<&Value> = list
        .iter()
        .filter(|r| r["measurement_type"] == "ping")
        .collect();
    assert_eq!(pings.len(), 2, "{recipe}");
    for p in pings {
        assert_eq!(p["data"]["recv_pkts"].as_u64(), Some(0), "{recipe}: {p:#}");
    }
    let flows = list
        .iter()
        .filter(|r| r["measurement_type"] == "flow")
        .count();
    assert_eq!(flows, 0, "{recipe}: perf_tests=[] runs no flow");
    let summary = read_json(&results.join("summary.json"));
    assert_eq!(summary["tests"][idx]["result"], "FAIL", "{summary:#}");
}

#[test]
fn vm_tunnel_variants_pass_and_mismatched_gre_keys_fail() {
    let Some(k) = require_vm_tcpdump() else {
        return;
    };
    let _g = serial();
    let all = variants();
    let mut tests = smoke_tests(&all);
    tests.push(("GreTunnelRecipe", mismatched_keys()));
    let started = std::time::Instant::now();
    let run = run_test_db(&vm_vars(&k), &tests);
    eprintln!("VM run of {} tests: {:?}", tests.len(), started.elapsed());
    // The mismatched keys fail the run; everything else passes.
    run.assert_exit(1);
    assert_smoke_passed(&run.res, &all);
    assert_failed_for_the_keys(&run.res, all.len(), "GreTunnelRecipe");
    run.assert_guest_kernel(&k);
    run.assert_no_vm_leftovers(&k);
}

#[test]
fn netns_vxlan_netns_tunnel_and_vxlan_multicast_pass_on_the_host_kernel() {
    if !require_netns_e2e() || !require(have("tcpdump"), "tcpdump is not installed") {
        return;
    }
    let _g = serial();
    let tests = vec![
        ("VxlanNetnsTunnelRecipe", vxlan_netns()),
        ("VxlanMulticastRecipe", vxlan_multicast()),
    ];
    let run = run_test_db(&[("LNST_AGENTS", "netns")], &tests);
    run.assert_exit(0);
    assert_passed(&run.res, 0, "VxlanNetnsTunnelRecipe", 2, 2);
    assert_eq!(packet_asserts(&run.res, 0, "VxlanNetnsTunnelRecipe", 5), 2);
    assert_passed(&run.res, 1, "VxlanMulticastRecipe", 12, 2);
    assert_nothing_to_clean_up(run.home.path(), &[("LNST_AGENTS", "netns")]);
}
