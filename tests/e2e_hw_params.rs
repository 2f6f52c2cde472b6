//! The hardware and host-tuning parameters end to end: upstream's own
//! `container_files/controller/test_db.json` on VM agents with 8 vCPUs (IRQs pinned to CPU 0,
//! iperf3 on CPU 6, pause frames off), pause frames and coalescing on e1000e VM NICs with
//! every change taken back, and on namespace agents (veth) pause frames "on" failing before
//! any traffic while "off" passes, with a `perf record` of every host kept under raw/.
//! Under CI a missing prerequisite fails instead of skipping.

mod common;
use common::catalogue::*;
use common::vm::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// Every result of a test's run data.
fn results_of(res: &Path, dir: &str) -> Vec<Value> {
    read_json(&res.join(dir).join("run-data-0.json"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn failures(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter(|r| r["result"] == "FAIL")
        .map(|r| r.to_string())
        .collect()
}

/// The sub-configuration descriptions, in order.
fn sub_descriptions(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter_map(|r| r["description"].as_str())
        .filter(|d| d.starts_with("Sub configuration description:"))
        .map(str::to_string)
        .collect()
}

/// `(host, method, args)` of the device method calls named `name`, with their result.
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

/// `(host, name, value, old_value)` of the device attribute settings.
fn attr_sets(list: &[Value]) -> Vec<(String, String, String, String)> {
    list.iter()
        .filter(|r| r["type"] == "device_config" && r["action"] == "attr_set")
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&r["host"]),
                s(&r["attr"]["name"]),
                s(&r["attr"]["value"]),
                s(&r["attr"]["old_value"]),
            )
        })
        .collect()
}

fn count<T>(list: &[Value], ty: &str, f: impl Fn(&Value) -> T) -> Vec<T> {
    list.iter()
        .filter(|r| r["measurement_type"] == ty)
        .map(f)
        .collect()
}

/// Per `pin_dev_interrupts` call of `host` in the human summary log, the IRQs' lists before
/// (`previous:` lines of the call's data).
fn pinned_previous(log: &str, host: &str) -> Vec<Vec<String>> {
    let head = format!("Calling Device method {host}.eth0.pin_dev_interrupts(");
    let mut out = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(l) = lines.next() {
        if !l.contains(&head) {
            continue;
        }
        let mut prev = Vec::new();
        while let Some(n) = lines.peek() {
            if !n.starts_with("    ") {
                break;
            }
            if let Some(v) = n.trim().strip_prefix("previous: ") {
                prev.push(v.to_string());
            }
            lines.next();
        }
        out.push(prev);
    }
    out
}

/// Upstream's test_db.json, changed only where our rules require: `perf_duration` (60 → 2)
/// and the networks (upstream's 192.168.220.0/24 and fd00:0:b100::/64, and the defaults of
/// the one it leaves out) moved into our ranges.
fn upstream_test_db(home: &Path) -> (String, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream-test_db.json");
    let mut db = read_json(&path);
    let entries = db.as_array_mut().unwrap();
    assert_eq!(entries.len(), 2);
    let mut uuids = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        let p = e["params"].as_object_mut().unwrap();
        // What upstream asks, unchanged.
        assert_eq!(p["perf_tool_cpu"], json!([6]));
        assert_eq!(p["dev_intr_cpu"], json!([0]));
        assert_eq!(p["rx_pause_frames"], json!(false));
        assert_eq!(p["tx_pause_frames"], json!(false));
        assert_eq!(p["perf_msg_sizes"], json!([131072]));
        assert_eq!(p["perf_duration"], json!(60));
        p.insert("perf_duration".into(), json!(2));
        p.insert("net_ipv4".into(), json!(format!("198.18.{}.0/24", 88 + i)));
        p.insert("net_ipv6".into(), json!(format!("fd00:{}::/64", 88 + i)));
        uuids.push(e["uuid"].as_str().unwrap().to_string());
    }
    let out = home.join("upstream_test_db.json");
    std::fs::write(&out, serde_json::to_string_pretty(&db).unwrap()).unwrap();
    (out.to_string_lossy().into_owned(), uuids)
}

/// Upstream's own test_db.json (two SimpleNetworkRecipe tests: IPv4, IPv6) passes on VM
/// agents with 8 vCPUs: the virtio NICs' IRQs pinned to CPU 0 and put back, iperf3 on CPU 6 at
/// both ends, pause frames off left alone (virtio-net has none).
#[test]
fn vm_upstream_test_db_passes_with_8_vcpus() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let (db, uuids) = upstream_test_db(home.path());
    let mut vars = vm_vars(&k);
    vars.push(("LNST_VM_CPUS", "8"));
    vars.push(("TEST_DB", &db));
    let t0 = std::time::Instant::now();
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    eprintln!(
        "upstream test_db on 8-vCPU VMs: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let res = home.path().join("results");
    for (uuid, bind) in uuids
        .iter()
        .zip(["generator_bind=198.18.88.1,", "generator_bind=fd00:89::1,"])
    {
        let list = results_of(&res, uuid);
        assert_eq!(failures(&list), Vec::<String>::new(), "{uuid}\n{text}");
        // One ping and one flow, non-zero, pinned to CPU 6.
        let flows = count(&list, "flow", |f| f["data"].clone());
        assert_eq!(flows.len(), 1, "{uuid}");
        for side in ["generator_results", "receiver_results"] {
            assert!(
                flows[0][side].as_f64().unwrap_or(0.0) > 0.0,
                "{uuid}: {side}"
            );
        }
        assert_eq!(count(&list, "ping", |_| ()).len(), 1, "{uuid}");
        let all = serde_json::to_string(&list).unwrap();
        assert!(all.contains("cpupin=[6]") && all.contains(bind), "{uuid}");
        // The sub-configuration as upstream describes it, with what the agents found.
        let d = sub_descriptions(&list);
        assert_eq!(d.len(), 1);
        for line in [
            "host1.eth0 irqs bound to cpu [0]",
            "host2.eth0 irqs bound to cpu [0]",
            "host1.eth0.rx_pause_frames left alone: False asked and the device has no such setting",
            "host2.eth0.tx_pause_frames left alone: False asked",
        ] {
            assert!(d[0].contains(line), "{uuid}: {line:?} not in\n{}", d[0]);
        }
        // Pinned and put back on both hosts (virtio-net has a config IRQ on every CPU and
        // one per queue on its own CPU: 17 IRQs with 8 queue pairs).
        let pins = calls(&list, "pin_dev_interrupts");
        let restores = calls(&list, "restore_irq_affinity");
        assert_eq!(pins.len(), 2, "{uuid}: {pins:?}");
        assert_eq!(restores.len(), 2, "{uuid}: {restores:?}");
        for (host, args, result) in &restores {
            assert_eq!(result, "PASS", "{host}");
            assert!(args.contains(":0-7"), "{host}: {args}");
        }
        let log = std::fs::read_to_string(res.join(uuid).join("logs/result_summary.log")).unwrap();
        for host in ["host1", "host2"] {
            let prev = pinned_previous(&log, host);
            assert_eq!(prev.len(), 1, "{host}");
            assert_eq!(prev[0].len(), 17, "{host}: {prev:?}");
        }
    }
    assert_eq!(out.status.code(), Some(0), "{text}");
    let summary = read_json(&res.join("summary.json"));
    let release = guest_release(&k.1);
    for t in summary["tests"].as_array().unwrap() {
        assert_eq!(t["result"], "PASS", "{t:#}");
        for (h, a) in t["runs"][0]["agents"].as_object().unwrap() {
            assert_eq!(a["kernel_release"], release.as_str(), "{h}: {t:#}");
        }
    }
    for id in run_ids_in_results(&res) {
        assert_no_vm_leftovers(&id, &text);
    }
}

/// Pause frames and interrupt coalescing on e1000e NICs (and their IRQs pinned), over two
/// sub-configurations: each change recorded and taken back — the second sub-configuration
/// finds every original value again (pause frames on, rx-usecs 3, the IRQs' lists), and every
/// restore call PASSed. e1000e applies rx/tx only with pause autonegotiation off: the runner
/// turns it off, says so, and turns it back on.
#[test]
fn vm_e1000e_pause_frames_and_coalescing_restored() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let db = test_db(
        home.path(),
        &[(
            "SimpleNetworkRecipe",
            smoke(json!({
                "driver": "e1000e",
                "ip_versions": ["ipv4"],
                "net_ipv4": "198.18.86.0/24", "net_ipv6": "fd00:86::/64",
                "offload_combinations": [{"gro": "on"}, {"gro": "off"}],
                "rx_pause_frames": false, "tx_pause_frames": false,
                "coalescing_settings": {
                    "host1": {"eth0": {"adaptive-rx": "off", "rx-usecs": 16}},
                    "host2": {"eth0": {"rx-usecs": 100}},
                },
                "dev_intr_cpu": [1],
            })),
        )],
    );
    let mut vars = vm_vars(&k);
    // The IRQs are pinned to CPU 1: two vCPUs, whatever the host's cores would choose.
    vars.push(("LNST_VM_CPUS", "2"));
    vars.push(("TEST_DB", &db));
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    let res = home.path().join("results");
    assert_passed(&res, 0, "SimpleNetworkRecipe", 2, 2);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let list = results_of(&res, "0_SimpleNetworkRecipe");
    let d = sub_descriptions(&list);
    assert_eq!(d.len(), 2, "{d:#?}");
    for (i, desc) in d.iter().enumerate() {
        for line in [
            "host1.eth0 irqs bound to cpu [1]",
            "host1.eth0.coalescing_rx_usecs configured to 16, original value 3",
            "host2.eth0.coalescing_rx_usecs configured to 100, original value 3",
            // e1000e has no adaptive mode: "off" is no failure.
            "host1.eth0.adaptive_rx_coalescing left alone: False asked",
            "host1.eth0.rx_pause_frames configured to False, original value True (pause autonegotiation turned off",
            "host2.eth0.tx_pause_frames configured to False, original value True",
        ] {
            assert!(desc.contains(line), "sub {}: {line:?} not in\n{desc}", i + 1);
        }
    }
    // Every change and its restore, on both hosts, in both sub-configurations.
    let sets = attr_sets(&list);
    for host in ["host1", "host2"] {
        let h = |name: &str, v: &str, old: &str| {
            sets.iter()
                .filter(|(hh, n, vv, o)| hh == host && n == name && vv == v && o == old)
                .count()
        };
        for name in ["rx_pause_frames", "tx_pause_frames"] {
            assert_eq!(h(name, "False", "True"), 2, "{host} {name}: {sets:?}");
            assert_eq!(
                h(name, "True", "False"),
                2,
                "{host} {name} restored: {sets:?}"
            );
        }
        let set_to = if host == "host1" { "16" } else { "100" };
        assert_eq!(h("coalescing_rx_usecs", set_to, "3"), 2, "{host}: {sets:?}");
        assert_eq!(h("coalescing_rx_usecs", "3", set_to), 2, "{host}: {sets:?}");
    }
    let restores = calls(&list, "restore_irq_affinity");
    assert_eq!(restores.len(), 4, "{restores:?}");
    assert!(restores.iter().all(|(_, _, r)| r == "PASS"), "{restores:?}");
    // The second pinning found the lists the first had found.
    let log =
        std::fs::read_to_string(res.join("0_SimpleNetworkRecipe/logs/result_summary.log")).unwrap();
    for host in ["host1", "host2"] {
        let prev = pinned_previous(&log, host);
        assert_eq!(prev.len(), 2, "{host}");
        assert!(!prev[0].is_empty(), "{host}");
        assert_eq!(prev[0], prev[1], "{host}: IRQ affinity not restored");
    }
    for id in run_ids_in_results(&res) {
        assert_no_vm_leftovers(&id, &text);
    }
}

/// Namespace agents (veth): pause frames "on" FAIL before any traffic, naming the device and
/// its pause-frame settings; a perf tool CPU the host lacks FAILs the same way; "off" passes,
/// with a `perf record` of both hosts per iteration kept under raw/.
#[test]
fn netns_veth_pause_on_fails_before_traffic_and_off_passes() {
    if !require_netns_e2e() || !require(have("perf"), "perf is not installed (Debian: linux-perf)")
    {
        return;
    }
    let _g = serial();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let missing = lnst_runner::agent::tunables::parse_cpu_list(&online)
        .and_then(|v| v.last().copied())
        .unwrap()
        + 1;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let net = |n: u32| json!({"net_ipv4": format!("198.18.{n}.0/24"), "net_ipv6": format!("fd00:{n}::/64")});
    let with = |n: u32, extra: Value| {
        let mut p = smoke(net(n));
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let db = test_db(
        home.path(),
        &[
            (
                "SimpleNetworkRecipe",
                with(80, json!({"rx_pause_frames": true})),
            ),
            (
                "SimpleNetworkRecipe",
                with(81, json!({"perf_tool_cpu": [0, missing]})),
            ),
            (
                "SimpleNetworkRecipe",
                with(
                    82,
                    json!({"rx_pause_frames": false, "tx_pause_frames": false,
                           "coalescing_settings": {"host2": {"eth0": {"adaptive-rx": "off"}}},
                           "do_linuxperf_measurement": true}),
                ),
            ),
        ],
    );
    let out = runner(home.path(), &[("LNST_AGENTS", "netns"), ("TEST_DB", &db)])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let res = home.path().join("results");
    for (i, want) in [
        (
            0,
            vec![
                "rx_pause_frames=True: host1.eth0",
                "(driver veth) has no pause-frame settings",
            ],
        ),
        (
            1,
            vec![&*format!(
                "perf_tool_cpu: host1 has no CPU {missing} (online CPUs: "
            )],
        ),
    ] {
        let list = results_of(&res, &format!("{i}_SimpleNetworkRecipe"));
        let exc: Vec<&Value> = list.iter().filter(|r| r["type"] == "exception").collect();
        assert_eq!(exc.len(), 1, "{i}: {list:#?}");
        let msg = exc[0]["message"].as_str().unwrap_or_default();
        for w in want {
            assert!(msg.contains(w), "{i}: {w:?} not in {msg:?}");
        }
        // Before any traffic: no ping, no flow, no job at all.
        assert!(
            !list
                .iter()
                .any(|r| r["type"] == "measurement" || r["type"] == "job"),
            "{i}: traffic before the failure: {list:#?}"
        );
    }
    assert_passed(&res, 2, "SimpleNetworkRecipe", 2, 2);
    let list = results_of(&res, "2_SimpleNetworkRecipe");
    let d = sub_descriptions(&list);
    assert!(
        d[0].contains(
            ".rx_pause_frames left alone: False asked and the device has no such setting"
        ) && d[0].contains(".adaptive_rx_coalescing left alone: False asked"),
        "{d:#?}"
    );
    // perf record: one result per host naming its files, which are perf.data files.
    let perf = count(&list, "linuxperf", |r| r["data"].clone());
    assert_eq!(perf.len(), 4, "{perf:#?}"); // 2 perf configurations (IPv4, IPv6) x 2 hosts
    for p in &perf {
        let files = p["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{p}");
        let f = res
            .join("2_SimpleNetworkRecipe")
            .join(files[0].as_str().unwrap());
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            bytes.starts_with(b"PERFILE2"),
            "{}: not a perf.data",
            f.display()
        );
    }
    assert!(
        list.iter()
            .filter(|r| r["measurement_type"] == "linuxperf")
            .all(|r| r["result"] == "PASS"),
        "{list:#?}"
    );
}
