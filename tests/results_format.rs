//! Golden-file tests of the run summary formatters (upstream `RunSummaryFormatters/`).
//!
//! `upstream_*` goldens are the reference's verified upstream outputs, typed in by hand.
//! `synthetic_*` goldens cover the rest (measurements, multi-line descriptions, nested data,
//! exceptions, netns); regenerate them with `UPDATE_GOLDEN=1` and review the diff.

use lnst_runner::results::format::{human_summary, json_summary};
use lnst_runner::results::{
    DeviceAction, InterfaceMatch, JobAction, MachineMatch, MatchDescription, RecipeRun,
    ResultEntry, ResultKind, ResultLevel, ResultType,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

fn check_golden(name: &str, got: &str, may_update: bool) {
    let path = golden_path(name);
    if may_update && std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if want != got {
        for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
            if w != g {
                panic!(
                    "{name} differs at line {}:\nwant {w:?}\n got {g:?}\n--- full output:\n{got}",
                    i + 1
                );
            }
        }
        panic!("{name} differs (length/trailing):\nwant {want:?}\n got {got:?}");
    }
}

fn two_host_match() -> MatchDescription {
    let mut machines = BTreeMap::new();
    for (h, lab) in [("host1", "lab1"), ("host2", "lab2")] {
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            "eth0".to_string(),
            InterfaceMatch {
                target: "eth1".into(),
                hwaddr: "52:54:00:aa:bb:01".into(),
            },
        );
        machines.insert(
            h.to_string(),
            MachineMatch {
                target: lab.into(),
                hostname: format!("{lab}.example"),
                interfaces,
            },
        );
    }
    MatchDescription {
        machines,
        networks: [("net1".to_string(), "net1".to_string())].into(),
        is_virtual: false,
        pool_name: "default".into(),
    }
}

fn job(r: ResultType, host: &str, id: u64, a: JobAction, cmd: &str) -> ResultEntry {
    ResultEntry::job(r, host, None, id, a, cmd, ResultLevel::Important)
}

/// The run of the examples of upstream's formatters.
fn upstream_run() -> RecipeRun {
    let mut run = RecipeRun::new("SimpleNetworkRecipe", two_host_match());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    run.add(ResultEntry::device(
        ResultType::Pass,
        "host1",
        "eth0",
        DeviceAction::MethodCall {
            name: "ip_add".into(),
            args: s(&["'192.168.1.1/24'"]),
            kwargs: vec![],
        },
    ));
    run.add(ResultEntry::device(
        ResultType::Pass,
        "host1",
        "eth0",
        DeviceAction::AttrSet {
            name: "mtu".into(),
            value: "9000".into(),
            old_value: "1500".into(),
        },
    ));
    run.add(ResultEntry::device(
        ResultType::Pass,
        "host1",
        "vlan10",
        DeviceAction::Create {
            cls_name: "VlanDevice".into(),
            args: vec![],
            kwargs: s(&["realdev='eth0'", "vlan_id=10"]),
        },
    ));
    let ping = "ping 192.168.1.2 -c 3";
    run.add(job(ResultType::Pass, "host1", 0, JobAction::Start, ping));
    run.add(
        job(ResultType::Pass, "host1", 0, JobAction::End, ping)
            .with_data(json!({"stdout": "3 packets transmitted, 3 received", "stderr": ""})),
    );
    run.add(job(ResultType::Pass, "host2", 0, JobAction::Start, "false"));
    run.add(
        job(ResultType::Fail, "host2", 0, JobAction::End, "false")
            .with_data(json!({"stdout": "", "stderr": ""})),
    );
    run.add(
        ResultEntry::generic(ResultType::Warning, "Throughput below baseline")
            .with_data(json!({"rate_gbps": 9.4, "samples": [9.3, 9.5]})),
    );
    run
}

#[test]
fn upstream_human_example_normal_level() {
    check_golden(
        "upstream_human_normal.txt",
        &human_summary(&upstream_run(), ResultLevel::Normal),
        false,
    );
}

#[test]
fn upstream_human_example_important_level() {
    // As the reference says: device lines and job stdout/stderr disappear at IMPORTANT;
    // so does the generic result's data (its data_level is NORMAL too).
    let out = human_summary(&upstream_run(), ResultLevel::Important);
    let want = "RUN SUMMARY\nDescription:\nPool match description:\n  host \"host1\" uses \"lab1\"\n    interface \"eth0\" matched to \"eth1\"\n  host \"host2\" uses \"lab2\"\n    interface \"eth0\" matched to \"eth1\"\n\
PASS 4_Host host1 job 0\tJob finished: type(shell), host(host1), netns(None), 'ping 192.168.1.2 -c 3'\n\
FAIL 6_Host host2 job 0\tJob finished: type(shell), host(host2), netns(None), 'false'\n\
WARNING 7_TestResult:\tThroughput below baseline\n\
Overall result of this Run: FAIL";
    assert_eq!(out, want);
}

#[test]
fn upstream_json_example_with_exception() {
    let mut run = upstream_run();
    run.exception = Some("boom".into());
    check_golden(
        "upstream_json_compact.json",
        &json_summary(&run, false),
        false,
    );
}

#[test]
fn json_pretty_is_the_same_document() {
    let mut run = upstream_run();
    run.exception = Some("boom".into());
    let pretty = json_summary(&run, true);
    assert!(
        pretty.starts_with(
            "[\n    {\n        \"result\": \"PASS\",\n        \"type\": \"device_config\","
        ),
        "{pretty}"
    );
    let a: serde_json::Value = serde_json::from_str(&pretty).expect("valid JSON");
    let b: serde_json::Value =
        serde_json::from_str(&json_summary(&run, false)).expect("valid JSON");
    assert_eq!(a, b);
}

/// Everything else: netns, failed job start, unfolded starts, measurements, multi-line
/// description, nested data, debug-level results, a description, an exception.
fn synthetic_run() -> RecipeRun {
    let mut run = RecipeRun::new("BondRecipe", two_host_match());
    run.description = Some("Synthetic run\nfor golden files".into());
    let mut dev = ResultEntry::device(
        ResultType::Fail,
        "host1",
        "bond0",
        DeviceAction::MethodCall {
            name: "slave_add".into(),
            args: vec!["'eth0'".into()],
            kwargs: vec!["primary=True".into()],
        },
    );
    if let ResultKind::DeviceConfig { netns, .. } = &mut dev.kind {
        *netns = "ns1".into();
    }
    run.add(dev);
    // A failed start is never folded; a start not followed by its end is not folded.
    run.add(job(
        ResultType::Fail,
        "host1",
        1,
        JobAction::Start,
        "iperf3 -s",
    ));
    run.add(job(
        ResultType::Pass,
        "host2",
        2,
        JobAction::Start,
        "sleep 1",
    ));
    run.add(job(ResultType::Pass, "host1", 3, JobAction::Start, "true"));
    run.add(job(ResultType::Pass, "host1", 3, JobAction::End, "true"));
    run.add(
        job(ResultType::Pass, "host2", 2, JobAction::End, "sleep 1").with_data(json!("Job killed")),
    );
    run.add(ResultEntry::measurement(
        "flow",
        ResultType::Pass,
        "tcp_stream: 9.41 +-0.02 Gbits/sec",
        json!({"generator_results": 9.41, "generator_cpu_stats": 12.5, "receiver_results": 9.4, "receiver_cpu_stats": 30.25}),
        Some(json!({"intervals": [{"start": 0.0, "end": 1.0, "bytes": 1176250000}]})),
    ));
    run.add(ResultEntry::measurement(
        "cpu",
        ResultType::Pass,
        "cpu host1",
        json!({"utilization": 1e-05}),
        None,
    ));
    run.add(
        ResultEntry::generic(
            ResultType::Pass,
            "Evaluation of 2 flows:\n\n  flow 0 ok\nflow 1 ok",
        )
        .with_data(json!({
            "flows": [{"name": "f0", "tags": [], "opts": {}}, {"name": "f1\nsecond line", "rate": 1e16}],
            "ok": true,
            "none": null,
            "nested": {"a": {"b": [1, [2, 3]]}},
            "unicode": "é"
        })),
    );
    run.add(
        ResultEntry::generic(ResultType::Pass, "debug only")
            .with_level(ResultLevel::Debug)
            .with_data(json!({"x": 1})),
    );
    run.add(
        ResultEntry::generic(ResultType::Fail, "debug-level failure is always shown")
            .with_level(ResultLevel::Debug)
            .with_data_level(ResultLevel::Debug)
            .with_data(json!({"hidden_unless_debug": 1})),
    );
    run.exception = Some("agent host2 disconnected\nwhile waiting for job 2".into());
    run
}

#[test]
fn synthetic_human_all_levels() {
    let run = synthetic_run();
    check_golden(
        "synthetic_human_important.txt",
        &human_summary(&run, ResultLevel::Important),
        true,
    );
    check_golden(
        "synthetic_human_debug.txt",
        &human_summary(&run, ResultLevel::Debug),
        true,
    );
}

#[test]
fn synthetic_json() {
    let run = synthetic_run();
    check_golden(
        "synthetic_json_compact.json",
        &json_summary(&run, false),
        true,
    );
    check_golden(
        "synthetic_json_pretty.json",
        &json_summary(&run, true),
        true,
    );
}

#[test]
fn structural_properties() {
    let run = synthetic_run();
    let h = human_summary(&run, ResultLevel::Important);
    assert!(!h.ends_with('\n'));
    assert!(h.ends_with("Overall result of this Run: FAIL"));
    assert!(
        h.contains(
            "\nFAIL 11_Exception:\n    agent host2 disconnected\n    while waiting for job 2\n"
        ),
        "{h}"
    );
    // Failed start at 1 is shown, folded start 3 is not, unfolded start 2 is.
    assert!(h.contains("\nFAIL 1_Host host1 job 1\tJob started:"), "{h}");
    assert!(h.contains("\nPASS 2_Host host2 job 2\tJob started:"), "{h}");
    assert!(!h.contains("\nPASS 3_"), "{h}");
    assert!(
        h.contains("\nPASS 4_Host host1 job 3\tJob finished:"),
        "{h}"
    );
    // DEBUG-level PASS hidden at IMPORTANT, DEBUG-level FAIL shown without its data.
    assert!(!h.contains("debug only"));
    assert!(h.contains("debug-level failure is always shown"));
    assert!(!h.contains("hidden_unless_debug"));
    let d = human_summary(&run, ResultLevel::Debug);
    assert!(d.contains("hidden_unless_debug: 1"));
    assert!(d.contains("\nFAIL 0_DeviceMethodCallResult\tCalling Device method host1.bond0.slave_add('eth0', primary=True)"), "{d}");

    let j: serde_json::Value = serde_json::from_str(&json_summary(&run, false)).expect("json");
    let list = j.as_array().expect("list");
    assert_eq!(list.len(), run.results.len() + 1);
    assert_eq!(list[0]["netns"], "ns1");
    assert_eq!(list[6]["type"], "measurement");
    assert_eq!(list[6]["data"]["receiver_results"], 9.4);
    assert!(
        list[6].get("details").is_none(),
        "details only in run-data files"
    );
    assert_eq!(
        list[8],
        json!({"result": "PASS", "type": "unknown", "description": "Evaluation of 2 flows:\n\n  flow 0 ok\nflow 1 ok"})
    );
    assert_eq!(list[11]["type"], "exception");
}
