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
fn tunnels() -> Vec<(String, Value, usize, usize, usize)> {
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
    let Some(k) = require_vm_e2e() else { return };
    if !require(
        have("tcpdump"),
        "tcpdump is not installed (.ci/run installs it)",
    ) {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let all = tunnels();
    let tests: Vec<(&str, Value)> = all
        .iter()
        .map(|(r, p, ..)| (r.as_str(), p.clone()))
        .collect();
    let db = test_db(home.path(), &tests);
    let mut vars = vm_vars(&k);
    vars.push(("TEST_DB", &db));
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let res = home.path().join("results");
    for (i, (recipe, _, pings, flows, asserts)) in all.iter().enumerate() {
        assert_passed(&res, i, recipe, *pings, *flows);
        // At least one captured packet per ping sent (ping_count 5).
        assert_eq!(
            packet_asserts(&res, i, recipe, 5),
            *asserts,
            "{recipe}: packet asserts"
        );
    }
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
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
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
    let db = test_db(home.path(), &tests);
    let out = runner(home.path(), &[("LNST_AGENTS", "netns"), ("TEST_DB", &db)])
        .output()
        .unwrap();
    let text = output_text(&out);
    let res = home.path().join("results");
    assert_passed(&res, 0, "VxlanRemoteRecipe", 2, 2);
    if host_has_gre() {
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert_passed(&res, 1, "GreTunnelRecipe", 2, 2);
        assert_eq!(packet_asserts(&res, 1, "GreTunnelRecipe", 5), 2);
    } else {
        assert_eq!(out.status.code(), Some(1), "{text}");
        let data = std::fs::read_to_string(res.join("1_GreTunnelRecipe/run-data-0.json")).unwrap();
        assert!(
            data.contains("kernel lacks GRE tunnel support (module ip_gre"),
            "{data}"
        );
    }
    assert_nothing_to_clean_up(home.path(), &[("LNST_AGENTS", "netns")]);
}
