//! PingFloodRecipe end to end on namespace agents: real namespaces, agents and ping. Needs
//! root; under CI a missing prerequisite fails instead of skipping.

mod common;
use common::*;

/// The run's namespace prefix (`lnst-<runid>-`), read from the match description of the
/// human summary: the test then looks only at what its own run made.
fn run_prefix(text: &str) -> String {
    let at = text
        .find("-host1")
        .and_then(|i| text.get(..i)?.rfind("lnst-"))
        .unwrap_or_else(|| panic!("no namespace in the summary:\n{text}"));
    text.get(at..at + 14).unwrap_or_default().to_string()
}

fn ping_flood(params: &str) -> (std::process::Output, serde_json::Value, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let out = runner(
        home.path(),
        &[("RECIPE", "PingFloodRecipe"), ("RECIPE_PARAMS", params)],
    )
    .output()
    .unwrap();
    let data_file = home
        .path()
        .join("results/0_PingFloodRecipe/run-data-0.json");
    let data = if data_file.exists() {
        read_json(&data_file)
    } else {
        serde_json::Value::Null
    };
    (out, data, home)
}

#[test]
fn ping_flood_passes_on_namespace_agents() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let (out, data, _home) = ping_flood(
        "src_addr='198.18.40.1/24';dst_addr='198.18.40.2/24';count=10;interval=0.05;size=1000;mtu=1400",
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Overall result: PASS"), "{text}");
    let results = data.as_array().expect("run-data is a list");
    let pings: Vec<_> = results
        .iter()
        .filter(|r| r["measurement_type"] == "ping")
        .collect();
    assert_eq!(pings.len(), 1, "{data:#}");
    assert_eq!(pings[0]["data"]["trans_pkts"], 10);
    assert!(
        pings[0]["data"]["rate"].as_u64().unwrap_or(0) >= 50,
        "{data:#}"
    );
    assert!(results.iter().any(|r| r["result"] == "PASS"
        && r["description"]
            .as_str()
            .unwrap_or("")
            .contains("min_rate(50)")));
    // The job ran with the recipe's parameters.
    assert!(
        results
            .iter()
            .any(|r| r["job"]["command"]
                == "ping 198.18.40.2 -c 10 -i 0.050000 -I 198.18.40.1 -s 1000"),
        "{data:#}"
    );
    let mtus = results
        .iter()
        .filter(|r| {
            r["action"] == "attr_set" && r["attr"]["name"] == "mtu" && r["attr"]["value"] == "1400"
        })
        .count();
    assert_eq!(mtus, 2, "{data:#}");
    let prefix = run_prefix(&text);
    assert!(
        netns_with_prefix(&prefix).is_empty(),
        "{prefix}* left behind"
    );
}

#[test]
fn ping_flood_fails_when_the_destination_is_unreachable() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    // Two different subnets and no route: no ping is answered (ping waits its 10 s for the
    // last reply), the rate evaluator fails the test.
    let (out, data, _home) =
        ping_flood("src_addr='198.18.41.1/24';dst_addr='198.18.42.2/24';count=2;interval=0.05");
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Overall result: FAIL"), "{text}");
    let results = data.as_array().expect("run-data is a list");
    assert!(results
        .iter()
        .any(|r| r["measurement_type"] == "ping" && r["data"]["rate"] == 0));
    assert!(results.iter().any(|r| r["result"] == "FAIL"
        && r["description"] == "measured rate 0 is lower than min_rate(50)"));
    let prefix = run_prefix(&text);
    assert!(
        netns_with_prefix(&prefix).is_empty(),
        "{prefix}* left behind"
    );
}
