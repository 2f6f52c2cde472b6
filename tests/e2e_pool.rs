//! End to end through pool XMLs: two namespaces play lab machines, joined by a veth test
//! link, reachable from the root namespace over control links in 198.18.0.0/24, each running
//! `lnst-agent --port` with a shared secret. The runner PASSes through them over TCP.

mod common;
use common::lab::*;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn pool_agents_over_tcp_pass() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    let secret = home.path().join("secret");
    std::fs::write(&secret, "pool-e2e-secret\n").unwrap();
    let lab = build_lab(&format!("{}", std::process::id() % 10000), &secret);
    write_pool(
        &home.path().join("pool"),
        &lab,
        &password_file_security(&secret),
    );

    let check = runner(home.path(), &[])
        .args(["pool", "check"])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));

    let params = "perf_iterations=1;perf_duration=2;perf_tests=['tcp_stream'];offload_combinations=();net_ipv4='198.18.23.0/24';net_ipv6='fd00:23::/64';ping_count=3;ping_interval=0.2;driver='veth'";
    let out = runner(
        home.path(),
        &[("RECIPE", "SimpleNetworkRecipe"), ("RECIPE_PARAMS", params)],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("uses \"machine1\"") || text.contains("machine1"),
        "{text}"
    );
    let summary = read_json(&home.path().join("results/summary.json"));
    assert_eq!(summary["overall"], "PASS");
    // Device state is restored on the lab machines: the test address is gone again.
    let addrs = sh(&["ip", "-n", &lab.bed.namespaces[0], "addr", "show", "test0"]);
    assert!(
        !addrs.contains("198.18.23."),
        "address not removed: {addrs}"
    );

    // A wrong secret is refused with a clear error.
    let bad = home.path().join("bad-secret");
    std::fs::write(&bad, "wrong").unwrap();
    write_pool(
        &home.path().join("pool"),
        &lab,
        &password_file_security(&bad),
    );
    let out = runner(
        home.path(),
        &[("RECIPE", "SimpleNetworkRecipe"), ("RECIPE_PARAMS", params)],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.to_lowercase().contains("auth"), "{text}");
}

#[test]
fn pool_host_that_does_not_answer_is_a_clear_error() {
    if !require_netns_e2e() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    let secret = home.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let lab = build_lab(&format!("{}", (std::process::id() + 1) % 10000), &secret);
    write_pool(
        &home.path().join("pool"),
        &lab,
        &password_file_security(&secret),
    );
    // machine2 now points at an address on our control bridge where nothing listens.
    let p = home.path().join("pool/machine2.xml");
    let xml = std::fs::read_to_string(&p)
        .unwrap()
        .replace("198.18.0.2", "198.18.0.77");
    std::fs::write(&p, xml).unwrap();
    let t0 = Instant::now();
    let out = runner(
        home.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            (
                "RECIPE_PARAMS",
                "perf_iterations=1;perf_duration=1;ping_count=1",
            ),
        ],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{text}");
    assert!(
        text.contains("198.18.0.77")
            && (text.contains("did not answer") || text.contains("not reachable")),
        "{text}"
    );
    drop(lab);
}
