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
use serde_json::{json, Value};
use std::process::Command;

/// (recipe, smoke parameters, pings, flows, packet asserts).
fn tunnels() -> Vec<(&'static str, Value, usize, usize, usize)> {
    vec![
        (
            "GreTunnelRecipe",
            smoke(json!({
                "net_ipv4": "198.18.128.0/24",
                "tunnel1_ipv4": "198.18.129.0/24", "tunnel2_ipv4": "198.18.130.0/24",
                "tunnel1_ipv6": "fd00:129::/64", "tunnel2_ipv6": "fd00:130::/64",
            })),
            2,
            2,
            2,
        ),
        (
            "IpIpTunnelRecipe",
            smoke_no_offloads(json!({
                "tunnel_mode": "ipip",
                "net_ipv4": "198.18.135.0/24", "tunnel_ipv4": "198.18.136.0/24",
            })),
            1,
            1,
            1,
        ),
        (
            "VxlanRemoteRecipe",
            smoke(json!({
                "net_ipv4": "198.18.133.0/24",
                "vxlan_ipv4": "198.18.134.0/24", "vxlan_ipv6": "fd00:134::/64",
            })),
            2,
            2,
            0,
        ),
        (
            "GeneveTunnelRecipe",
            smoke(json!({
                "carrier_ipversion": "ipv4",
                "net_ipv4": "198.18.137.0/24", "net_ipv6": "fd00:137::/64",
                "tunnel_ipv4": "198.18.138.0/24", "tunnel_ipv6": "fd00:138::/64",
            })),
            2,
            2,
            2,
        ),
        (
            "SitTunnelRecipe",
            smoke_no_offloads(json!({
                "tunnel_mode": "any",
                "net_ipv4": "198.18.139.0/24",
                "tunnel1_ipv4": "198.18.140.0/24", "tunnel2_ipv4": "198.18.141.0/24",
                "tunnel1_ipv6": "fd00:140::/64", "tunnel2_ipv6": "fd00:141::/64",
            })),
            2,
            2,
            2,
        ),
        (
            "Ip6TnlTunnelRecipe",
            smoke_no_offloads(json!({
                "tunnel_mode": "ip6ip6",
                "net_ipv6": "fd00:142::/64", "tunnel_ipv6": "fd00:143::/64",
            })),
            1,
            1,
            1,
        ),
        (
            "Ip6GreTunnelRecipe",
            smoke(json!({
                "net_ipv6": "fd00:142::/64",
                "tunnel1_ipv4": "198.18.140.0/24", "tunnel2_ipv4": "198.18.141.0/24",
                "tunnel1_ipv6": "fd00:140::/64", "tunnel2_ipv6": "fd00:141::/64",
            })),
            2,
            2,
            2,
        ),
    ]
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
    let tests: Vec<(&str, Value)> = all.iter().map(|(r, p, ..)| (*r, p.clone())).collect();
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
    let tests: Vec<(&str, Value)> =
        vec![(all[2].0, all[2].1.clone()), (all[0].0, all[0].1.clone())];
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
