//! The soft-device catalogue end to end on VM agents (LNST_AGENTS=vm): every recipe of the
//! catalogue's first part with smoke parameters, in one TEST_DB run (each test boots its own
//! VMs from Debian's kernel; the host kernel lacks 802.1Q, bonding and team). Each test must
//! PASS with every expected ping and flow present and non-zero, and nothing may be left.
//! Under CI a missing prerequisite fails instead of skipping.

mod common;
use common::catalogue::*;
use common::vm::*;
use common::*;
use serde_json::{json, Value};

/// (recipe, its smoke parameters, ping results, flow measurements).
fn catalogue() -> Vec<(&'static str, Value, usize, usize)> {
    let net = |n: u8| {
        json!({"net_ipv4": format!("198.18.{n}.0/24"), "net_ipv6": format!("fd00:{n}::/64")})
    };
    let vlans3 = |n: u8| {
        json!({
            "vlan0_ipv4": format!("198.18.{n}.0/24"),
            "vlan1_ipv4": format!("198.18.{}.0/24", n + 1),
            "vlan2_ipv4": format!("198.18.{}.0/24", n + 2),
            "vlan0_ipv6": format!("fd00:{n}::/64"),
            "vlan1_ipv6": format!("fd00:{}::/64", n + 1),
            "vlan2_ipv6": format!("fd00:{}::/64", n + 2),
        })
    };
    let merge = |mut a: Value, b: Value| {
        if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
            a.extend(b.clone());
        }
        a
    };
    let bond = json!({"bonding_mode": "active-backup", "miimon_value": 100});
    let team = json!({"runner_name": "activebackup"});
    vec![
        ("VlansRecipe", vlans3(100), 6, 2),
        ("LinuxBridgeRecipe", net(103), 2, 2),
        ("BondRecipe", merge(net(104), bond.clone()), 2, 2),
        ("TeamRecipe", merge(net(105), team.clone()), 4, 2),
        (
            "SimpleNetnsRouterRecipe",
            merge(
                net(106),
                json!({"netns_ipv4": "198.18.107.0/24", "netns_ipv6": "fd00:107::/64"}),
            ),
            2,
            2,
        ),
    ]
}

#[test]
fn vm_catalogue_recipes_pass_with_smoke_parameters() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let all = catalogue();
    let tests: Vec<(&str, Value)> = all.iter().map(|(r, p, _, _)| (*r, smoke(p.clone()))).collect();
    let db = test_db(home.path(), &tests);
    let mut vars = vm_vars(&k);
    vars.push(("TEST_DB", &db));
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    let res = home.path().join("results");
    for (i, (recipe, _, pings, flows)) in all.iter().enumerate() {
        assert_passed(&res, i, recipe, *pings, *flows);
    }
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Every agent ran the guest kernel.
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
