//! Request/response perf tests and NIC tunables end to end: tcp_rr, tcp_crr and udp_rr through
//! lnst-agent's generator on namespace agents (SimpleNetworkRecipe and
//! ShortLivedConnectionsRecipe), and SimpleNetworkTunableRecipe on VM agents with 4 vCPUs
//! (multi-queue virtio-net with RSS): channels and rx-flow-hash applied, restored and found
//! restored by the agent in the next sub-configuration, and a hash function the NIC lacks
//! FAILing with the reason. Under CI a missing prerequisite fails instead of skipping.

mod common;
use common::catalogue::test_db;
use common::vm::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// The results of test `idx` (`<idx>_<recipe>`).
fn run_data(results: &Path, idx: usize, recipe: &str) -> Vec<Value> {
    read_json(&results.join(format!("{idx}_{recipe}/run-data-0.json")))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn flows(data: &[Value]) -> Vec<&Value> {
    data.iter()
        .filter(|r| r["measurement_type"] == "flow")
        .collect()
}

fn fails(data: &[Value]) -> Vec<String> {
    data.iter()
        .filter(|r| r["result"] == "FAIL")
        .map(|r| r.to_string())
        .collect()
}

/// Every flow is a request/response flow with transactions on both sides, and its client's
/// and server's reports are under raw/ and name the flow's workload.
fn assert_rr_flows(dir: &Path, data: &[Value], want: usize) {
    let f = flows(data);
    assert_eq!(f.len(), want, "{data:#?}");
    for r in &f {
        assert_eq!(r["result"], "PASS", "{r:#}");
        for side in ["generator_results", "receiver_results"] {
            let tps = r["data"][side].as_f64().unwrap_or(0.0);
            assert!(tps > 0.0, "{side}: {r:#}");
        }
        let kind = r["details"]["flow"]["kind"].as_str().unwrap_or_default();
        assert!(["tcp_rr", "tcp_crr", "udp_rr"].contains(&kind), "{r:#}");
        let lat = &r["details"]["rr"][0]["generator"]["latency_s"];
        assert!(lat["mean"].as_f64().unwrap_or(0.0) > 0.0, "{r:#}");
        assert!(lat["p99"].as_f64() >= lat["p50"].as_f64(), "{r:#}");
    }
    let raw = dir.join("raw");
    let names: Vec<String> = std::fs::read_dir(&raw)
        .unwrap_or_else(|e| panic!("{}: {e}", raw.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("_flow1_"))
        .collect();
    assert_eq!(names.len(), 2 * want, "{names:?}");
    for n in &names {
        let doc = read_json(&raw.join(n));
        let role = if n.ends_with("_client.json") {
            "client"
        } else {
            "server"
        };
        assert_eq!(doc["role"], role, "{n}");
        assert!(n.contains(doc["workload"].as_str().unwrap_or("?")), "{n}");
        assert!(
            doc["summary"]["num_transactions"].as_u64().unwrap_or(0) > 0,
            "{n}"
        );
        assert_eq!(doc["error"], Value::Null, "{n}");
    }
}

#[test]
fn simple_network_rr_tests_on_namespace_agents() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let tests = [
        (
            "SimpleNetworkRecipe",
            json!({
                "net_perf_tool": "neper",
                "perf_tests": ["tcp_rr", "tcp_crr", "udp_rr"],
                "perf_iterations": 1, "perf_duration": 1, "perf_msg_sizes": [64],
                "offload_combinations": [], "ping_count": 3, "ping_interval": 0.2,
                "net_ipv4": "198.18.90.0/24", "net_ipv6": "fd00:90::/64",
            }),
        ),
        // iperf cannot run a request/response test: a FAIL with the reason, before anything.
        (
            "SimpleNetworkRecipe",
            json!({"perf_tests": ["tcp_rr"], "net_ipv4": "198.18.90.0/24", "net_ipv6": "fd00:90::/64"}),
        ),
    ];
    let db = test_db(home.path(), &tests);
    let out = runner(home.path(), &[("TEST_DB", &db)]).output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let res = home.path().join("results");
    let data = run_data(&res, 0, "SimpleNetworkRecipe");
    assert!(fails(&data).is_empty(), "{:#?}", fails(&data));
    // Three tests for IPv4 and IPv6 each.
    assert_rr_flows(&res.join("0_SimpleNetworkRecipe"), &data, 6);
    let data = run_data(&res, 1, "SimpleNetworkRecipe");
    let f = fails(&data);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].contains("unsupported test 'tcp_rr' with net_perf_tool='iperf'"),
        "{f:#?}"
    );
    assert!(flows(&data).is_empty());
    let summary = read_json(&res.join("summary.json"));
    assert_eq!(summary["tests"][0]["result"], "PASS", "{summary:#}");
    assert_eq!(summary["tests"][1]["result"], "FAIL", "{summary:#}");
    assert_nothing_to_clean_up(home.path(), &[]);
}

#[test]
fn short_lived_connections_on_namespace_agents() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let out = runner(
        home.path(),
        &[
            ("RECIPE", "ShortLivedConnectionsRecipe"),
            (
                "RECIPE_PARAMS",
                "perf_iterations=1;perf_duration=1;perf_msg_sizes=[1000,12000];net_ipv4='198.18.91.0/24'",
            ),
        ],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let res = home.path().join("results");
    let data = run_data(&res, 0, "ShortLivedConnectionsRecipe");
    // Three workloads × two sizes, IPv4 only; no pings.
    assert_rr_flows(&res.join("0_ShortLivedConnectionsRecipe"), &data, 6);
    assert!(!data.iter().any(|r| r["measurement_type"] == "ping"));
    let servers: Vec<&str> = flows(&data)
        .iter()
        .filter_map(|r| r["details"]["flow"]["receiver_bind"].as_str())
        .collect();
    assert_eq!(servers, ["198.18.91.11"; 6]);
    assert_nothing_to_clean_up(home.path(), &[]);
}

/// The `kwargs` of every `method` call on `host`'s eth0, in order.
fn kwargs(data: &[Value], host: &str, method: &str) -> Vec<Value> {
    data.iter()
        .filter(|r| {
            r["type"] == "device_config"
                && r["host"] == host
                && r["method"]["name"] == method
                && r["result"] == "PASS"
        })
        .map(|r| r["method"]["kwargs"].clone())
        .collect()
}

#[test]
fn simple_network_tunable_on_vm_agents_with_four_queue_pairs() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let base = json!({
        "perf_iterations": 1, "perf_duration": 1, "perf_tests": ["tcp_stream"],
        "ip_versions": ["ipv4"], "ping_count": 3, "ping_interval": 0.2,
        "net_ipv4": "198.18.93.0/24", "net_ipv6": "fd00:93::/64",
    });
    let with = |extra: Value| {
        let mut p = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let tests = [
        (
            "SimpleNetworkTunableRecipe",
            with(json!({
                // Two sub-configurations: the second finds what the first restored.
                "offload_combinations": [{"gro": "on"}, {"gro": "off"}],
                "dev_queues": {"host1": {"eth0": {"combined": 2}}, "host2": {"eth0": {"combined": 3}}},
                "dev_nfc_rx_flow_hash_config": {"host2": {"eth0": {"udp4": "sd"}}},
                "dev_rx_hash_functions": {"host2": {"eth0": "toeplitz"}},
            })),
        ),
        // virtio-net hashes with Toeplitz only (ethtool still lists xor): xor FAILs with the
        // agent's reason.
        (
            "SimpleNetworkTunableRecipe",
            with(json!({
                "offload_combinations": [],
                "dev_rx_hash_functions": {"host1": {"eth0": "xor"}},
            })),
        ),
    ];
    let db = test_db(home.path(), &tests);
    let mut vars = vm_vars(&k);
    vars.push(("LNST_VM_CPUS", "4"));
    vars.push(("TEST_DB", &db));
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let res = home.path().join("results");
    let data = run_data(&res, 0, "SimpleNetworkTunableRecipe");
    assert!(fails(&data).is_empty(), "{:#?}", fails(&data));
    // Per sub-configuration: ping and flow, non-zero.
    let f = flows(&data);
    assert_eq!(f.len(), 2, "{data:#?}");
    for r in &f {
        assert!(r["data"]["generator_results"].as_f64().unwrap_or(0.0) > 0.0);
    }
    // Both sub-configurations found the guests' 4 queue pairs (the first: as booted; the
    // second: as the first's restore left them) and udp4 hashed on addresses and ports.
    let prev = |p: &str| json!([format!("previous='{p}'")]);
    for (host, set) in [("host1", "combined 2"), ("host2", "combined 3")] {
        assert_eq!(
            kwargs(&data, host, "set_channels"),
            [prev("combined 4"), prev("combined 4")],
            "{host}"
        );
        assert_eq!(
            kwargs(&data, host, "restore_channels"),
            [prev(set), prev(set)],
            "{host}"
        );
    }
    assert_eq!(
        kwargs(&data, "host2", "set_rx_flow_hash"),
        [prev("dfns"), prev("dfns")]
    );
    assert_eq!(
        kwargs(&data, "host2", "restore_rx_flow_hash"),
        [prev("ds"), prev("ds")]
    );
    let unchanged = json!(["unchanged=True"]);
    assert_eq!(
        kwargs(&data, "host2", "set_rx_hash_function"),
        [unchanged.clone(), unchanged]
    );
    let desc = data
        .iter()
        .filter_map(|r| r["description"].as_str())
        .find(|d| d.starts_with("Sub configuration description:"))
        .unwrap_or_default();
    for line in [
        "host1 device eth0 queues configured: combined 2",
        "host2 device eth0 queues configured: combined 3",
        "host2 device eth0 nfc rx-flow-hash udp4 configured: ds",
        "host2 device eth0 rx hash function configured: toeplitz",
    ] {
        assert!(desc.contains(line), "{line:?} not in {desc}");
    }
    // The second test: FAIL before traffic, naming the device's hash functions.
    let data = run_data(&res, 1, "SimpleNetworkTunableRecipe");
    let f = fails(&data).join("\n");
    assert!(
        f.contains("eth0 (driver virtio_net) has no RSS setting 'hfunc xor'"),
        "{f}"
    );
    assert!(flows(&data).is_empty(), "{data:#?}");
    let summary = read_json(&res.join("summary.json"));
    let release = guest_release(&k.1);
    for t in summary["tests"].as_array().unwrap() {
        for (h, a) in t["runs"][0]["agents"].as_object().unwrap() {
            assert_eq!(a["kernel_release"], release.as_str(), "{h}: {t:#}");
        }
    }
    for id in run_ids_in_results(&res) {
        assert_no_vm_leftovers(&id, &text);
    }
    assert_nothing_to_clean_up(home.path(), &vm_vars(&k));
}
