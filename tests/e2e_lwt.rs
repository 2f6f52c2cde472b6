//! The lightweight-tunnel and L2TP recipes end to end on VM agents (Debian's kernel has gre,
//! geneve, vxlan, the IP lightweight tunnels and L2TPv3): GreLwt, GeneveLwt (two flows, Geneve
//! options, IPv6 carrier), VxlanLwt, VxlanGpe and L2TP (udp over IPv4, ip over IPv6) with
//! smoke parameters in one TEST_DB run, each PASSing with every
//! expected ping, flow and packet assert present (the captures saw the encapsulated packets
//! with the expected tunnel id), and nothing left behind; and VxlanLwt with
//! `tunnel_id_host2` differing from `tunnel_id` FAILs (exit code 1), its packet assert naming
//! why. Under CI a missing prerequisite fails instead of skipping.

mod common;
use common::catalogue::*;
use common::vm::*;
use common::*;
use serde_json::{json, Value};

/// VxlanLwtTunnelRecipe's smoke parameters (addresses in this file's range).
fn vxlan_lwt(extra: Value) -> Value {
    let mut p = smoke(json!({
        "carrier_ipversion": "ipv4",
        "net_ipv4": "198.18.176.0/24",
        "dummy1_ipv4": "198.18.177.0/24", "dummy2_ipv4": "198.18.178.0/24",
        "dummy1_ipv6": "fd00:177::/64", "dummy2_ipv6": "fd00:178::/64",
    }));
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

/// (recipe, smoke parameters, pings, flows, packet asserts). The LWT recipes ping and
/// measure over IPv4 only by default (upstream's `ip_versions`).
fn lwt_recipes() -> Vec<Smoke<&'static str>> {
    vec![
        (
            "GreLwtTunnelRecipe",
            smoke(json!({
                "carrier_ipversion": "ipv4",
                "net_ipv4": "198.18.170.0/24",
                "dummy1_ipv4": "198.18.171.0/24", "dummy2_ipv4": "198.18.172.0/24",
                "dummy1_ipv6": "fd00:171::/64", "dummy2_ipv6": "fd00:172::/64",
            })),
            1,
            1,
            1,
        ),
        (
            "GeneveLwtTunnelRecipe",
            smoke(json!({
                "carrier_ipversion": "ipv6",
                "net_ipv6": "fd00:173::/64",
                "dummy1_ipv4": "198.18.174.0/24", "dummy2_ipv4": "198.18.175.0/24",
                "dummy1_ipv6": "fd00:174::/64", "dummy2_ipv6": "fd00:175::/64",
                "flow_count": 2, "geneve_opts": true, "tunnel_id": 100,
            })),
            1,
            // Two flows measured in parallel: one result per flow and their aggregate.
            3,
            1,
        ),
        ("VxlanLwtTunnelRecipe", vxlan_lwt(json!({})), 1, 1, 1),
        (
            "VxlanGpeTunnelRecipe",
            smoke(json!({
                "carrier_ipversion": "ipv4",
                "net_ipv4": "198.18.179.0/24",
                "dummy1_ipv4": "198.18.180.0/24", "dummy2_ipv4": "198.18.181.0/24",
                "dummy1_ipv6": "fd00:180::/64", "dummy2_ipv6": "fd00:181::/64",
                "ip_versions": ["ipv4", "ipv6"],
            })),
            2,
            2,
            2,
        ),
        (
            "L2TPTunnelRecipe",
            smoke_no_offloads(json!({
                "carrier_ipversion": "ipv4", "l2tp_encapsulation": "udp",
                "net_ipv4": "198.18.186.0/24", "l2tp_ipv4": "198.18.187.0/24",
            })),
            // No IPv6 address on the session devices (as upstream): one ping, one flow.
            1,
            1,
            1,
        ),
        (
            "L2TPTunnelRecipe",
            smoke_no_offloads(json!({
                "carrier_ipversion": "ipv6", "l2tp_encapsulation": "ip",
                "net_ipv6": "fd00:186::/64", "l2tp_ipv4": "198.18.188.0/24",
            })),
            1,
            1,
            1,
        ),
    ]
}

#[test]
fn vm_lwt_recipes_pass_and_their_packet_asserts_hold() {
    let Some(k) = require_vm_tcpdump() else {
        return;
    };
    let _g = serial();
    let all = lwt_recipes();
    let run = run_test_db(&vm_vars(&k), &smoke_tests(&all));
    run.assert_exit(0);
    let res = &run.res;
    assert_smoke_passed(res, &all);
    for (i, (recipe, ..)) in all.iter().enumerate() {
        let data =
            std::fs::read_to_string(res.join(format!("{i}_{recipe}/run-data-0.json"))).unwrap();
        if recipe.starts_with("L2TP") {
            assert!(
                data.contains("ip l2tp add session name t_l2tp_session1"),
                "{data}"
            );
            continue;
        }
        // The encap routes as upstream writes them, and lo's addresses taken away again.
        assert!(
            data.contains(" encap ip"),
            "{recipe}: no encap route: {data}"
        );
        if recipe.contains("Geneve") {
            assert!(
                data.contains("encap ip6 id 101 dst fd00:173::1 geneve_opts 0x102:0x80:00010001"),
                "{recipe}: second flow's route: {data}"
            );
        } else {
            assert!(
                data.contains("ip_del"),
                "{recipe}: lo addresses kept: {data}"
            );
        }
    }
    run.assert_no_vm_leftovers(&k);
}

/// The negative test: host2's encap routes carry another VNI than host1's. An external VXLAN
/// device takes any VNI, so the ping itself gets its replies; the packet assert, which
/// expects host2's replies to carry `tunnel_id`, sees none and the test FAILs with that reason.
#[test]
fn vm_vxlan_lwt_with_a_mismatched_tunnel_id_fails_naming_the_packet_assert() {
    let Some(k) = require_vm_tcpdump() else {
        return;
    };
    let _g = serial();
    let params = vxlan_lwt(json!({"tunnel_id": 4660, "tunnel_id_host2": 4661, "perf_tests": []}));
    let run = run_test_db(&vm_vars(&k), &[("VxlanLwtTunnelRecipe", params)]);
    run.assert_exit(1);
    let res = &run.res;
    let summary = read_json(&res.join("summary.json"));
    assert_eq!(summary["tests"][0]["result"], "FAIL", "{summary:#}");
    let failed = failed_descriptions(res, 0, "VxlanLwtTunnelRecipe");
    assert!(
        failed.iter().any(
            |d| d.starts_with("PacketAssert on host2.eth0: 0 packets matched")
                && d.contains("instance 4660")
        ),
        "the failure names the packet assert: {failed:#?}"
    );
    // host2 really sent its replies with its own VNI (the routes show both ids).
    let data = read_json(&res.join("0_VxlanLwtTunnelRecipe/run-data-0.json"));
    let all = serde_json::to_string(&data.as_array().cloned().unwrap_or_default()).unwrap();
    assert!(all.contains("encap ip id 4661 dst 198.18.176.1"), "{all}");
    run.assert_no_vm_leftovers(&k);
}
