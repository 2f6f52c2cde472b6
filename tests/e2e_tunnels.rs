//! The tunnel recipes end to end. On VM agents (Debian's kernel has every tunnel kind): every
//! finished tunnel recipe with smoke parameters in one TEST_DB run, each PASSing with every
//! expected ping, flow and packet assert present (the captures really saw the encapsulated
//! echo requests on host2's underlay), and nothing left behind. On namespace agents (the host
//! kernel): VxlanRemoteRecipe passes, and GreTunnelRecipe passes too where the kernel has GRE
//! or FAILs naming the missing feature where it does not. Under CI a missing prerequisite
//! fails instead of skipping.

mod common;
use common::catalogue::*;
use common::vm::*;
use common::*;
use serde_json::Value;
use std::process::Command;

/// (recipe, smoke parameters, pings, flows, packet asserts), from
/// tests/data/tunnels-smoke.json (`bench/catalogue.sh 1 tests/data/tunnels-smoke.json` runs
/// the same list).
fn tunnels() -> Vec<Smoke<String>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tunnels-smoke.json");
    read_json(&path)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let n = |k: &str| t["expect"][k].as_u64().unwrap_or(0) as usize;
            (
                t["recipe_name"].as_str().unwrap().to_string(),
                t["params"].clone(),
                n("pings"),
                n("flows"),
                n("packet_asserts"),
            )
        })
        .collect()
}

#[test]
fn vm_tunnel_recipes_pass_and_their_packet_asserts_hold() {
    let Some(k) = require_vm_tcpdump() else {
        return;
    };
    let _g = serial();
    let all = tunnels();
    let run = run_test_db(&vm_vars(&k), &smoke_tests(&all));
    run.assert_exit(0);
    assert_smoke_passed(&run.res, &all);
    run.assert_guest_kernel(&k);
    run.assert_no_vm_leftovers(&k);
}

/// Whether this kernel can create a GRE device (probed in a namespace of our own).
fn host_has_gre() -> bool {
    let ns = format!("lnsttest-gre-probe-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "add", &ns]).status();
    let ok = Command::new("ip")
        .args(["-n", &ns, "link", "add", "g0", "type", "gre"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    ok
}

#[test]
fn netns_vxlan_remote_passes_and_gre_needs_the_kernel_feature() {
    if !require_netns_e2e() || !require(have("tcpdump"), "tcpdump is not installed") {
        return;
    }
    let _g = serial();
    let all = tunnels();
    let params = |name: &str| {
        all.iter()
            .find(|t| t.0 == name)
            .map(|t| t.1.clone())
            .unwrap_or_else(|| panic!("{name} is not in tests/data/tunnels-smoke.json"))
    };
    let tests: Vec<(&str, Value)> = vec![
        ("VxlanRemoteRecipe", params("VxlanRemoteRecipe")),
        ("GreTunnelRecipe", params("GreTunnelRecipe")),
    ];
    let run = run_test_db(&[("LNST_AGENTS", "netns")], &tests);
    let res = &run.res;
    assert_passed(res, 0, "VxlanRemoteRecipe", 2, 2);
    if host_has_gre() {
        run.assert_exit(0);
        assert_passed(res, 1, "GreTunnelRecipe", 2, 2);
        assert_eq!(packet_asserts(res, 1, "GreTunnelRecipe", 5), 2);
    } else {
        run.assert_exit(1);
        let data = std::fs::read_to_string(res.join("1_GreTunnelRecipe/run-data-0.json")).unwrap();
        assert!(
            data.contains("kernel lacks GRE tunnel support (module ip_gre"),
            "{data}"
        );
    }
    assert_nothing_to_clean_up(run.home.path(), &[("LNST_AGENTS", "netns")]);
}
