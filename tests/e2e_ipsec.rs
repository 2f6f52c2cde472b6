//! The IPsec and MACsec recipes end to end on VM agents (Debian's kernel has ESP, AH,
//! IPComp and MACsec; the host kernel has none of them: tests/agent_xfrm.rs). One TEST_DB
//! run with smoke parameters: IpsecEspAeadRecipe (both IP versions), IpsecEspAhCompRecipe in
//! tunnel mode (AH/ESP and IPComp asserts, the size-1500 ping) and SimpleMacsecRecipe
//! (encryption on and off) each PASS with every expected ping, flow and packet assert, no key
//! in any result, nothing left behind. A second run breaks the SAs on purpose through the
//! documented parameters — host2's SPIs (`spi_values_host2`) and host2's MACsec keys
//! (`macsec_keys_host2`) — and both tests FAIL (exit 1) naming why: no replies, and no ESP
//! packets with host2's SPI. Under CI a missing prerequisite fails instead of skipping.

mod common;
use common::catalogue::*;
use common::vm::*;
use common::*;
use serde_json::json;
use std::path::Path;

/// (recipe, smoke parameters, pings, flows, packet asserts).
fn recipes() -> Vec<Smoke<&'static str>> {
    vec![
        (
            "IpsecEspAeadRecipe",
            smoke_no_offloads(json!({
                "net1_ipv4": "198.18.190.0/24", "net2_ipv4": "198.18.191.0/24",
                "net1_ipv6": "fd00:190::/64", "net2_ipv6": "fd00:191::/64",
            })),
            2,
            2,
            2,
        ),
        (
            "IpsecEspAhCompRecipe",
            smoke_no_offloads(json!({
                "ipsec_mode": "tunnel",
                "ciphers": [["aes", 128]],
                "hashes": [["sha256", 256]],
                "net1_ipv4": "198.18.193.0/24", "net2_ipv4": "198.18.194.0/24",
                "net1_ipv6": "fd00:193::/64", "net2_ipv6": "fd00:194::/64",
            })),
            // Per IP version the ping and the size-1500 ping, each with its assert.
            4,
            2,
            4,
        ),
        (
            "SimpleMacsecRecipe",
            smoke_no_offloads(json!({
                "ip_versions": ["ipv4"],
                "net_ipv4": "198.18.192.0/24", "net_ipv6": "fd00:192::/64",
            })),
            2,
            2,
            0,
        ),
    ]
}

/// No key the runs used shows in any file of the results.
fn assert_no_keys(results: &Path) {
    let zip = std::fs::read(results.join("results.zip")).unwrap_or_default();
    assert!(!zip.is_empty(), "results.zip written");
    let mut texts = Vec::new();
    let mut stack = vec![results.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|x| x != "zip") {
                texts.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    for (p, t) in &texts {
        // MACsec: upstream's two keys; IPsec: any random key would appear as `0x` and 40,
        // 32 or 64 hexadecimal digits after `aead`/`enc`/`auth` NAME.
        for k in [
            "7a16780284000775d4f0a3c0f0e092c0",
            "3212ef5c4cc5d0e4210b17208e88779e",
        ] {
            assert!(!t.contains(k), "MACsec key in {}", p.display());
        }
        for word in ["rfc4106(gcm(aes)) 0x", "enc aes 0x", "auth sha256 0x"] {
            assert!(!t.contains(word), "IPsec key in {}", p.display());
        }
    }
    assert!(
        texts.iter().any(|(_, t)| t.contains("<redacted>")),
        "the recorded commands show the keys redacted"
    );
}

#[test]
fn vm_ipsec_and_macsec_recipes_pass_and_their_packet_asserts_hold() {
    let Some(k) = require_vm_tcpdump() else {
        return;
    };
    let _g = serial();
    let all = recipes();
    let run = run_test_db(&vm_vars(&k), &smoke_tests(&all));
    run.assert_exit(0);
    let res = &run.res;
    assert_smoke_passed(res, &all);
    let aead = std::fs::read_to_string(res.join("0_IpsecEspAeadRecipe/run-data-0.json")).unwrap();
    assert!(aead.contains("matched [ESP(spi=0x00001001]"), "{aead}");
    let ah = std::fs::read_to_string(res.join("1_IpsecEspAhCompRecipe/run-data-0.json")).unwrap();
    assert!(
        ah.contains("matched [IPComp]") && ah.contains("-s 1500"),
        "{ah}"
    );
    // Only what the recipe added was deleted (by selector and SPI).
    assert!(ah.contains("proto comp spi 0x00000004"), "{ah}");
    assert_no_keys(res);
    run.assert_no_vm_leftovers(&k);
}

#[test]
fn vm_mismatched_spis_and_macsec_keys_fail_with_the_reason() {
    let Some(k) = require_vm_tcpdump() else {
        return;
    };
    let _g = serial();
    let other = "00112233445566778899aabbccddeeff";
    // No flows: they could only time out; the pings and asserts tell why.
    let tests = vec![
        (
            "IpsecEspAeadRecipe",
            smoke_no_offloads(json!({
                "ip_versions": ["ipv4"], "perf_tests": [],
                "spi_values_host2": ["0x00002000", "0x00002001"],
                "net1_ipv4": "198.18.195.0/24", "net2_ipv4": "198.18.196.0/24",
                "net1_ipv6": "fd00:195::/64", "net2_ipv6": "fd00:196::/64",
            })),
        ),
        (
            "SimpleMacsecRecipe",
            smoke_no_offloads(json!({
                "ip_versions": ["ipv4"], "perf_tests": [], "macsec_encryption": ["on"],
                "macsec_keys_host2": [["00", other], ["01", other]],
                "net_ipv4": "198.18.197.0/24", "net_ipv6": "fd00:197::/64",
            })),
        ),
    ];
    let run = run_test_db(&vm_vars(&k), &tests);
    run.assert_exit(1);
    let res = &run.res;
    let summary = read_json(&res.join("summary.json"));
    for t in summary["tests"].as_array().unwrap() {
        assert_eq!(t["result"], "FAIL", "{t:#}");
    }
    let aead = failed_descriptions(res, 0, "IpsecEspAeadRecipe");
    assert!(
        aead.iter()
            .any(|d| d.contains("measured rate 0 is lower than min_rate")),
        "{aead:#?}"
    );
    assert!(
        aead.iter()
            .any(|d| d
                .starts_with("PacketAssert on host2.eth0: 0 packets matched [ESP(spi=0x00002001]")),
        "{aead:#?}"
    );
    let macsec = failed_descriptions(res, 1, "SimpleMacsecRecipe");
    assert!(
        macsec
            .iter()
            .any(|d| d.contains("measured rate 0 is lower than min_rate")),
        "{macsec:#?}"
    );
    assert_no_keys(res);
    let all = std::fs::read_to_string(res.join("1_SimpleMacsecRecipe/run-data-0.json")).unwrap();
    assert!(!all.contains(other), "host2's key recorded");
    run.assert_no_vm_leftovers(&k);
}
