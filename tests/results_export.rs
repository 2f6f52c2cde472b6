//! Exporter: results layout, summary.json, junit.xml, results.zip, stdout summary, exit code.

use lnst_runner::config::FormatterKind;
use lnst_runner::results::export::{exit_code, stdout_summary, ExportError, Exporter};
use lnst_runner::results::{
    JobAction, MatchDescription, RecipeRun, ResultEntry, ResultLevel, ResultType, TestOutcome,
};
use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;

fn passing() -> TestOutcome {
    let mut run = RecipeRun::new("SimpleNetworkRecipe", MatchDescription::default());
    run.add(ResultEntry::job(
        ResultType::Pass,
        "host1",
        None,
        0,
        JobAction::Start,
        "ping 198.18.0.2 -c 3",
        ResultLevel::Important,
    ));
    run.add(ResultEntry::measurement(
        "flow",
        ResultType::Pass,
        "tcp_stream 9.4 Gbits/sec",
        json!({"generator_results": 9.4}),
        Some(json!({"intervals": [1, 2, 3]})),
    ));
    TestOutcome {
        id: "0_SimpleNetworkRecipe".into(),
        recipe: "SimpleNetworkRecipe".into(),
        params: json!({"perf_iterations": 3}),
        runs: vec![run.clone(), run],
        error: None,
        raw: vec![
            ("iperf3/client-0.json".into(), b"{\"end\": {}}".to_vec()),
            ("ping.txt".into(), b"3 packets transmitted".to_vec()),
        ],
        duration_s: 12.5,
        tool_time_s: 10.0,
        agents_s: 0.0,
        phases: Default::default(),
    }
}

fn crashed() -> TestOutcome {
    let mut run = RecipeRun::new("VlansRecipe", MatchDescription::default());
    run.add(ResultEntry::generic(
        ResultType::Fail,
        "Ping <host1> & \"host2\" failed",
    ));
    run.exception = Some("agent host2 disconnected".into());
    TestOutcome {
        id: "1_VlansRecipe".into(),
        recipe: "VlansRecipe".into(),
        params: json!({}),
        runs: vec![run],
        error: Some("teardown failed: link <vlan10> busy".into()),
        raw: vec![],
        duration_s: 3.25,
        tool_time_s: 0.0,
        agents_s: 0.0,
        phases: Default::default(),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn full_layout_summary_junit_and_zip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("results");
    let ex = Exporter::new(&root).expect("exporter");
    let tests = vec![passing(), crashed()];
    for t in &tests {
        ex.write_test(t).expect("write_test");
    }
    ex.finish(&tests).expect("finish");

    let expected = [
        "0_SimpleNetworkRecipe/run-data-0.json",
        "0_SimpleNetworkRecipe/run-data-1.json",
        "0_SimpleNetworkRecipe/logs/result_summary.log",
        "0_SimpleNetworkRecipe/raw/iperf3/client-0.json",
        "0_SimpleNetworkRecipe/raw/ping.txt",
        "1_VlansRecipe/run-data-0.json",
        "1_VlansRecipe/logs/result_summary.log",
        "1_VlansRecipe/logs/crash.log",
        "junit.xml",
        "summary.json",
    ];
    for f in expected {
        assert!(root.join(f).is_file(), "missing {f}");
    }
    assert!(!root.join("0_SimpleNetworkRecipe/logs/crash.log").exists());

    // run-data: upstream shape plus measurement details.
    let rd: Value =
        serde_json::from_str(&read(&root.join("0_SimpleNetworkRecipe/run-data-0.json")))
            .expect("json");
    assert_eq!(rd[0]["type"], "job");
    assert_eq!(rd[1]["data"], json!({"generator_results": 9.4}));
    assert_eq!(rd[1]["details"], json!({"intervals": [1, 2, 3]}));
    let rd1: Value =
        serde_json::from_str(&read(&root.join("1_VlansRecipe/run-data-0.json"))).expect("json");
    assert_eq!(
        rd1[1],
        json!({"result": "FAIL", "type": "exception", "message": "agent host2 disconnected"})
    );

    // Summary log: one DEBUG-level block per run, each followed by a newline.
    let log = read(&root.join("0_SimpleNetworkRecipe/logs/result_summary.log"));
    assert_eq!(log.matches("RUN SUMMARY").count(), 2);
    assert!(log.ends_with("Overall result of this Run: PASS\n"), "{log}");
    assert!(
        log.contains("    intervals:\n"),
        "DEBUG level shows data: {log}"
    );
    let crash = read(&root.join("1_VlansRecipe/logs/crash.log"));
    assert!(crash.contains("teardown failed") && crash.contains("agent host2 disconnected"));
    assert_eq!(
        read(&root.join("0_SimpleNetworkRecipe/raw/ping.txt")),
        "3 packets transmitted"
    );

    // summary.json
    let s: Value = serde_json::from_str(&read(&root.join("summary.json"))).expect("json");
    assert_eq!(s["overall"], "FAIL");
    assert_eq!(s["tests"][0]["id"], "0_SimpleNetworkRecipe");
    assert_eq!(s["tests"][0]["recipe"], "SimpleNetworkRecipe");
    assert_eq!(s["tests"][0]["result"], "PASS");
    assert_eq!(s["tests"][0]["duration_s"], 12.5);
    assert_eq!(s["tests"][0]["error"], Value::Null);
    assert_eq!(
        s["tests"][0]["runs"],
        json!([{"result": "PASS", "exception": null}, {"result": "PASS", "exception": null}])
    );
    assert_eq!(s["tests"][1]["result"], "FAIL");
    assert_eq!(
        s["tests"][1]["error"],
        "teardown failed: link <vlan10> busy"
    );
    assert_eq!(
        s["tests"][1]["runs"],
        json!([{"result": "FAIL", "exception": "agent host2 disconnected"}])
    );

    // junit.xml: parse it back and check structure and escaping.
    let junit = read(&root.join("junit.xml"));
    let doc = roxmltree::Document::parse(&junit).expect("well-formed junit.xml");
    let suites: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    assert_eq!(suites[0].attribute("name"), Some("lnst-runner"));
    assert_eq!(suites[0].attribute("tests"), Some("2"));
    assert_eq!(suites[0].attribute("failures"), Some("1"));
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].attribute("name"), Some("0_SimpleNetworkRecipe"));
    assert_eq!(cases[0].attribute("classname"), Some("SimpleNetworkRecipe"));
    assert_eq!(cases[0].attribute("time"), Some("12.500"));
    assert!(cases[0].children().all(|c| !c.has_tag_name("failure")));
    let failure = cases[1]
        .children()
        .find(|c| c.has_tag_name("failure"))
        .expect("failure element");
    let msg = failure.attribute("message").expect("message");
    assert!(msg.contains("teardown failed: link <vlan10> busy"), "{msg}");
    assert!(msg.contains("Ping <host1> & \"host2\" failed"), "{msg}");
    assert!(msg.contains("exception: agent host2 disconnected"), "{msg}");
    assert_eq!(cases[1].attribute("time"), Some("3.250"));

    // results.zip: every file, relative paths, not itself.
    let f = std::fs::File::open(root.join("results.zip")).expect("zip exists");
    let mut z = zip::ZipArchive::new(f).expect("valid zip");
    let mut names: Vec<String> = (0..z.len())
        .map(|i| {
            z.by_index(i)
                .expect("entry")
                .name()
                .expect("utf-8 name")
                .to_string()
        })
        .collect();
    names.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    let mut e = z.by_name("summary.json").expect("summary in zip");
    assert_eq!(e.compression(), zip::CompressionMethod::Deflated);
    let mut text = String::new();
    e.read_to_string(&mut text).expect("read");
    assert_eq!(text, read(&root.join("summary.json")));

    assert_eq!(exit_code(&tests), 1);
    assert_eq!(exit_code(&tests[..1]), 0);
}

#[test]
fn zip_written_when_a_test_crashed_before_any_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ex = Exporter::new(tmp.path()).expect("exporter");
    let t = TestOutcome {
        id: "0_BondRecipe".into(),
        recipe: "BondRecipe".into(),
        error: Some("This setup cannot be provisioned with the current pool".into()),
        ..Default::default()
    };
    ex.write_test(&t).expect("write");
    ex.finish(std::slice::from_ref(&t)).expect("finish");
    assert!(tmp.path().join("0_BondRecipe/logs/crash.log").is_file());
    let f = std::fs::File::open(tmp.path().join("results.zip")).expect("zip");
    let z = zip::ZipArchive::new(f).expect("valid zip");
    let names: Vec<String> = z
        .file_names()
        .map(|n| n.expect("utf-8 name").into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "0_BondRecipe/logs/crash.log"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "junit.xml"));
    assert_eq!(exit_code(&[t]), 1);
}

#[test]
fn unsafe_ids_and_raw_names_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ex = Exporter::new(tmp.path()).expect("exporter");
    for id in ["../escape", "a/b", "", ".."] {
        let t = TestOutcome {
            id: id.into(),
            ..passing()
        };
        assert!(
            matches!(ex.write_test(&t), Err(ExportError::UnsafeId(_))),
            "{id:?}"
        );
    }
    for name in ["../../etc/x", "/etc/passwd"] {
        let mut t = passing();
        t.raw = vec![(name.into(), b"x".to_vec())];
        assert!(
            matches!(ex.write_test(&t), Err(ExportError::UnsafeRawName(..))),
            "{name:?}"
        );
    }
    assert!(!tmp
        .path()
        .parent()
        .is_some_and(|p| p.join("escape").exists()));
}

#[test]
fn unwritable_dir_mentions_selinux() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A path below a regular file cannot be created, root or not.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"").expect("write");
    let e = Exporter::new(&file.join("results")).expect_err("not writable");
    let s = e.to_string();
    assert!(
        s.contains(":z") && s.contains("--security-opt label=disable"),
        "{s}"
    );
}

#[test]
fn stdout_summaries() {
    let tests = vec![passing(), crashed()];
    let h = stdout_summary(&tests, &[FormatterKind::Human]);
    assert_eq!(h.matches("RUN SUMMARY").count(), 3);
    assert!(
        h.contains(
            "\n  0_SimpleNetworkRecipe: PASS\n  1_VlansRecipe: FAIL\nOverall result: FAIL\n"
        ),
        "{h}"
    );
    assert!(!h.contains("intervals"), "IMPORTANT level hides data: {h}");

    let j = stdout_summary(&tests, &[FormatterKind::Json]);
    let v: Value = serde_json::from_str(&j).expect("json");
    assert_eq!(v[0]["id"], "0_SimpleNetworkRecipe");
    assert_eq!(v[0]["recipe"], "SimpleNetworkRecipe");
    assert_eq!(v[0]["result"], "PASS");
    assert_eq!(v[0]["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(v[0]["runs"][0][1]["type"], "measurement");
    assert_eq!(v[1]["result"], "FAIL");

    let both = stdout_summary(&tests, &[FormatterKind::Json, FormatterKind::Human]);
    assert!(
        both.starts_with("Test 1_VlansRecipe") || both.starts_with("RUN SUMMARY"),
        "human first"
    );
    assert!(both.trim_end().ends_with(']'), "json last");

    // A WARNING is printed as FAIL.
    let mut warn = passing();
    warn.runs[0].add(ResultEntry::generic(ResultType::Warning, "slow"));
    let h = stdout_summary(std::slice::from_ref(&warn), &[FormatterKind::Human]);
    assert!(
        h.ends_with("  0_SimpleNetworkRecipe: FAIL\nOverall result: FAIL\n"),
        "{h}"
    );
}
