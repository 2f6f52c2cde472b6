//! The IPsec and MACsec recipes' logic against scripted in-memory agents: the states,
//! policies and MACsec SAs each host gets (upstream's XfrmTools and SimpleMacsec layout),
//! that exactly those are deleted again, that no key appears in any recorded text, and that
//! the evaluators FAIL when the peer answers nothing or the capture shows no IPsec packets.
//! The kernel's part runs on real agents (tests/agent_xfrm.rs, tests/e2e_ipsec.rs).

use super::test_support::*;
use crate::protocol::{
    LinkSpec, MacsecSas, Op, XfrmAlgo, XfrmDir, XfrmPolicy, XfrmPolicyId, XfrmProto, XfrmState,
    XfrmStateId,
};
use crate::results::ResultType;
use crate::scripted::{Script, ScriptedRun};

const NETS: &str = "net1_ipv4='198.18.190.0/24';net2_ipv4='198.18.191.0/24';net1_ipv6='fd00:190::/64';net2_ipv6='fd00:191::/64'";

type Added = Vec<(Vec<XfrmState>, Vec<XfrmPolicy>)>;

fn added(r: &ScriptedRun, host: &str) -> Added {
    ops(r, host, |op| match op {
        Op::XfrmAdd { states, policies } => Some((states, policies)),
        _ => None,
    })
}

fn deleted(r: &ScriptedRun, host: &str) -> Vec<(Vec<XfrmStateId>, Vec<XfrmPolicyId>)> {
    ops(r, host, |op| match op {
        Op::XfrmDel { states, policies } => Some((states, policies)),
        _ => None,
    })
}

/// Every key the run's states carried.
fn keys(r: &ScriptedRun) -> Vec<String> {
    ["host1", "host2"]
        .iter()
        .flat_map(|h| added(r, h))
        .flat_map(|(s, _)| s)
        .filter_map(|s| match s.algo {
            XfrmAlgo::Aead { key, .. } | XfrmAlgo::Enc { key, .. } | XfrmAlgo::Auth { key, .. } => {
                Some(key.0)
            }
            XfrmAlgo::Comp { .. } => None,
        })
        .collect()
}

/// Every text the run recorded: result descriptions, their data, raw files.
fn recorded(r: &ScriptedRun) -> String {
    let mut t = serde_json::to_string(&r.run).unwrap_or_default();
    for (name, bytes) in &r.raw {
        t.push_str(name);
        t.push_str(&String::from_utf8_lossy(bytes));
    }
    t
}

fn assert_no_key_recorded(r: &ScriptedRun, keys: &[String]) {
    let text = recorded(r);
    assert!(!keys.is_empty());
    for k in keys {
        let bare = k.trim_start_matches("0x");
        assert!(
            !text.contains(bare),
            "key {k} recorded somewhere in the results"
        );
    }
    assert!(text.contains("<redacted>"), "the commands are recorded");
}

/// tcpdump's ESP lines of host2's replies (spi `spi`), `n` of each.
fn esp_capture(spi: u32, n: u32) -> Script {
    Script::default().capture(move |dev| {
        assert_eq!(dev, "veth-b", "captures run on host2.eth0");
        (1..=n)
            .map(|i| {
                format!(
                    "12:00:00.{i:06} IP 198.18.191.1 > 198.18.190.1: ESP(spi={spi:#010x},seq={i:#x}), length 120\n"
                )
            })
            .collect()
    })
}

#[test]
fn esp_aead_adds_upstreams_states_and_policies_and_deletes_only_them() {
    let params = format!("{SMOKE_NO_OFFLOADS};{NETS};ip_versions=['ipv4']");
    let r = run_passing("IpsecEspAeadRecipe", &params, esp_capture(0x1001, 4), TWO);
    let (ip1, ip2) = (
        "198.18.190.1".parse().unwrap(),
        "198.18.191.1".parse().unwrap(),
    );
    let [a1, a2] = ["host1", "host2"].map(|h| added(&r, h));
    assert_eq!((a1.len(), a2.len()), (1, 1), "one sub-configuration");
    let (s1, p1) = &a1[0];
    let (s2, p2) = &a2[0];
    // The same two SAs on both hosts, as XfrmTools adds them.
    let sa = |s: &XfrmState| (s.src, s.dst, s.proto, s.spi, s.sel);
    assert_eq!(
        s1.iter().map(sa).collect::<Vec<_>>(),
        [
            (ip2, ip1, XfrmProto::Esp, 0x1001, Some((ip2, ip1))),
            (ip1, ip2, XfrmProto::Esp, 0x1000, Some((ip1, ip2))),
        ]
    );
    assert_eq!(s1, s2, "identical states, one key for both hosts");
    let XfrmAlgo::Aead {
        name,
        key,
        icv_bits,
    } = &s1[0].algo
    else {
        panic!("{:?}", s1[0].algo)
    };
    assert_eq!((name.as_str(), *icv_bits), ("rfc4106(gcm(aes))", 96));
    assert_eq!(key.0.len(), 2 + 40, "160 bits");
    assert_ne!(
        key.0,
        format!("0x{}", "0b".repeat(20)),
        "not upstream's constant"
    );
    // host1 sends ip1→ip2 out and takes ip2→ip1 in; host2 the reverse.
    let pol = |p: &XfrmPolicy| (p.src, p.dst, p.dir, p.tmpls[0].proto);
    assert_eq!(
        p1.iter().map(pol).collect::<Vec<_>>(),
        [
            (ip2, ip1, XfrmDir::In, XfrmProto::Esp),
            (ip1, ip2, XfrmDir::Out, XfrmProto::Esp)
        ]
    );
    assert_eq!(
        p2.iter().map(pol).collect::<Vec<_>>(),
        [
            (ip1, ip2, XfrmDir::In, XfrmProto::Esp),
            (ip2, ip1, XfrmDir::Out, XfrmProto::Esp)
        ]
    );
    // Exactly what was added is deleted, by selector and SPI (no flush op exists).
    for (h, (s, p)) in [("host1", (s1, p1)), ("host2", (s2, p2))] {
        let d = deleted(&r, h);
        assert_eq!(
            d,
            [(
                s.iter().map(|x| x.id()).collect::<Vec<_>>(),
                p.iter().map(|x| x.id()).collect::<Vec<_>>()
            )]
        );
    }
    assert_no_key_recorded(&r, &keys(&r));
    // A fresh key per run (from the OS generator).
    let again = run_on("IpsecEspAeadRecipe", &params, esp_capture(0x1001, 4), TWO);
    assert_ne!(keys(&again)[0], keys(&r)[0]);
}

#[test]
fn esp_aead_fails_when_pings_die_or_no_esp_is_seen() {
    let params = format!("{SMOKE_NO_OFFLOADS};{NETS};ip_versions=['ipv4']");
    // The replies carry another SPI than host2's: the packet assert FAILs.
    let r = run_on("IpsecEspAeadRecipe", &params, esp_capture(0x2001, 4), TWO);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(
        generic(&r).iter().any(|(ok, s)| *ok == ResultType::Fail
            && s.starts_with("PacketAssert on host2.eth0: 0 packets matched [ESP(spi=0x00001001")),
        "{:?}",
        generic(&r)
    );
    // Nothing answered (a broken SA drops everything): the standard ping evaluator FAILs.
    let script = esp_capture(0x1001, 4).ping_received_to("198.18.191.1", 0);
    let r = run_on("IpsecEspAeadRecipe", &params, script, TWO);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(
        generic(&r)
            .iter()
            .any(|(ok, s)| *ok == ResultType::Fail && s.contains("measured rate 0")),
        "{:?}",
        generic(&r)
    );
    // Everything still came down.
    assert_eq!(deleted(&r, "host1").len(), 1);
    assert_eq!(deleted(&r, "host2").len(), 1);
}

#[test]
fn spi_values_host2_gives_host2_other_spis_and_bad_spis_are_refused() {
    let params = format!(
        "{SMOKE_NO_OFFLOADS};{NETS};ip_versions=['ipv6'];spi_values_host2=['0x2000','0x2001']"
    );
    let r = run_on("IpsecEspAeadRecipe", &params, esp_capture(0x2001, 4), TWO);
    let spis = |h| {
        added(&r, h)[0]
            .0
            .iter()
            .map(|s| (s.spi, s.src.is_ipv6()))
            .collect::<Vec<_>>()
    };
    assert_eq!(spis("host1"), [(0x1001, true), (0x1000, true)]);
    assert_eq!(spis("host2"), [(0x2001, true), (0x2000, true)]);
    for bad in [
        "spi_values=['0x1000']",
        "spi_values=['0x1000','zz']",
        "spi_values_host2=['0','1']",
    ] {
        let e = plan("IpsecEspAeadRecipe", bad).err().unwrap_or_default();
        assert!(e.contains("spi"), "{bad}: {e}");
    }
    // ipsec_offload_modprobe cannot be honoured: the test FAILs with the reason.
    let r = run_on(
        "IpsecEspAeadRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{NETS};ipsec_offload_modprobe=True"),
        esp_capture(0x1001, 4),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(recorded(&r).contains("ipsec_offload_modprobe"));
}

/// tcpdump's AH+ESP lines (requests and replies: `2n`) and `n` IPComp lines.
fn ah_capture(n: u32, ipcomp: bool) -> Script {
    Script::default().capture(move |_| {
        let mut out = String::new();
        for i in 1..=2 * n {
            out.push_str(&format!(
                "12:00:00.{i:06} IP 198.18.190.1 > 198.18.191.1: AH(spi=0x00000003,seq={i:#x}): ESP(spi=0x00000002,seq={i:#x}), length 88\n"
            ));
        }
        if ipcomp {
            for i in 1..=n {
                out.push_str(&format!(
                    "12:00:01.{i:06} IP 198.18.190.1 > 198.18.191.1: IPComp(cpi=0x0004)\n"
                ));
            }
        }
        out
    })
}

#[test]
fn esp_ah_comp_configures_every_cipher_and_hash_and_pings_twice() {
    let params = format!(
        "{SMOKE_NO_OFFLOADS};{NETS};ip_versions=['ipv4'];ciphers=[('aes',128)];hashes=[('hmac(md5)',128),('sha256',256)];ipsec_mode='tunnel'"
    );
    let r = run_passing("IpsecEspAhCompRecipe", &params, ah_capture(4, true), TWO);
    let a1 = added(&r, "host1");
    assert_eq!(a1.len(), 2, "one sub-configuration per hash");
    let (states, policies) = &a1[0];
    let kinds: Vec<(XfrmProto, u32)> = states.iter().map(|s| (s.proto, s.spi)).collect();
    assert_eq!(
        kinds,
        [
            (XfrmProto::Comp, 4),
            (XfrmProto::Comp, 1),
            (XfrmProto::Esp, 2),
            (XfrmProto::Esp, 2),
            (XfrmProto::Ah, 3),
            (XfrmProto::Ah, 3)
        ]
    );
    let auth = |s: &XfrmState| match &s.algo {
        XfrmAlgo::Auth { name, key } => Some((name.clone(), key.0.len())),
        _ => None,
    };
    assert_eq!(auth(&states[4]), Some(("hmac(md5)".into(), 2 + 32)));
    assert_eq!(
        auth(&added(&r, "host1")[1].0[4]),
        Some(("sha256".into(), 2 + 64))
    );
    // Templates comp (optional where packets come in), esp, ah; tunnel mode.
    let t: Vec<_> = policies[1]
        .tmpls
        .iter()
        .map(|t| (t.proto, t.spi, t.optional, t.mode.as_str()))
        .collect();
    assert_eq!(policies[1].dir, XfrmDir::In);
    assert_eq!(
        t,
        [
            (XfrmProto::Comp, Some(1), true, "tunnel"),
            (XfrmProto::Esp, Some(2), false, "tunnel"),
            (XfrmProto::Ah, Some(3), false, "tunnel")
        ]
    );
    // Per sub-configuration: the ping, then the size-1500 one.
    let sizes: Vec<Option<u32>> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(_, j)| match j {
            crate::protocol::JobSpec::Ping { size, .. } => Some(size),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [Some(56), Some(1500), Some(56), Some(1500)]);
    let texts: Vec<String> = generic(&r).into_iter().map(|(_, s)| s).collect();
    assert!(
        texts.iter().any(|s| s.contains(
            "8 packets matched [AH(spi=0x00000003 … ESP(spi=0x00000002], expected at least 8"
        )),
        "{texts:?}"
    );
    assert!(texts
        .iter()
        .any(|s| s.contains("matched [IPComp], expected at least 4")));
    assert_no_key_recorded(&r, &keys(&r));

    // Requests only (not 2×count): FAIL; tunnel mode without IPComp: FAIL.
    let r = run_on("IpsecEspAhCompRecipe", &params, ah_capture(2, true), TWO);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let r = run_on("IpsecEspAhCompRecipe", &params, ah_capture(4, false), TWO);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(generic(&r)
        .iter()
        .any(|(ok, s)| *ok == ResultType::Fail && s.contains("0 packets matched [IPComp]")));
}

fn macsec(r: &ScriptedRun, host: &str) -> (Vec<LinkSpec>, Vec<MacsecSas>) {
    let mut links = Vec::new();
    let mut sas = Vec::new();
    for e in r.journal.entries().into_iter().filter(|e| e.host == host) {
        match e.op {
            Op::CreateLink { link, .. } => links.push(link),
            Op::MacsecConfigure { sas: s, .. } => sas.push(s),
            _ => {}
        }
    }
    (links, sas)
}

const MACSEC: &str = "net_ipv4='198.18.192.0/24';net_ipv6='fd00:192::/64'";

#[test]
fn macsec_gets_a_device_per_encryption_with_upstreams_keys_reversed_on_host2() {
    let r = run_passing(
        "SimpleMacsecRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{MACSEC}"),
        Script::default(),
        TWO,
    );
    let (l1, s1) = macsec(&r, "host1");
    let (l2, s2) = macsec(&r, "host2");
    let on_off = |p: &str| {
        [true, false].map(|encrypt| LinkSpec::Macsec {
            parent: p.into(),
            encrypt,
        })
    };
    assert_eq!(l1, on_off("veth-a"));
    assert_eq!(l2, on_off("veth-b"));
    let ids = |s: &MacsecSas| (s.tx.id.clone(), s.rx.id.clone(), s.port, s.an, s.pn);
    assert_eq!(ids(&s1[0]), ("00".into(), "01".into(), 1, 0, 1));
    assert_eq!(ids(&s2[0]), ("01".into(), "00".into(), 1, 0, 1));
    assert_eq!(s1[0].tx.key, s2[0].rx.key, "host1 sends what host2 takes");
    assert_eq!(s1[0].rx.key, s2[0].tx.key);
    // The peer is the other host's eth0 (its MAC).
    assert_ne!(s1[0].peer_mac, s2[0].peer_mac);
    // Keys only on the wire to the agents: not in results, nor the parameter summary.
    let k = super::simple_macsec::UPSTREAM_KEYS.map(|(_, k)| k.to_string());
    assert_no_key_recorded(&r, &k);
    // Both devices deleted in every sub-configuration.
    let deletes = r
        .journal
        .entries()
        .iter()
        .filter(|e| matches!(e.op, Op::DeleteLink { .. }))
        .count();
    assert_eq!(deletes, 4);
}

#[test]
fn macsec_fails_when_the_link_drops_everything_and_host2_keys_can_differ() {
    // Upstream has no ping evaluators; here a MACsec link answering nothing FAILs.
    let script = Script::default().ping_received_to("198.18.192.2", 0);
    let r = run_on(
        "SimpleMacsecRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{MACSEC};macsec_encryption=['on']"),
        script,
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(generic(&r)
        .iter()
        .any(|(ok, s)| *ok == ResultType::Fail && s.contains("measured rate 0")));
    let other = "00112233445566778899aabbccddeeff";
    let r = run_on(
        "SimpleMacsecRecipe",
        &format!(
            "{SMOKE_NO_OFFLOADS};{MACSEC};macsec_encryption=['off'];macsec_keys_host2=[('00','{other}'),('01','{other}')]"
        ),
        Script::default(),
        TWO,
    );
    let (_, s2) = macsec(&r, "host2");
    assert_eq!(s2[0].tx.key.0, other);
    assert_no_key_recorded(&r, &[other.to_string()]);
    // A malformed key list is refused without quoting the key.
    let e = plan("SimpleMacsecRecipe", "macsec_keys=[('00','abc-secret')]")
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("macsec_keys") && !e.contains("abc-secret"),
        "{e}"
    );
    let e = plan(
        "SimpleMacsecRecipe",
        "macsec_keys=[('00','zz112233445566778899aabbccddeeff'),('01','00112233445566778899aabbccddeeff')]",
    )
    .err()
    .unwrap_or_default();
    assert!(!e.contains("zz1122"), "{e}");
}

#[test]
fn secret_parameters_never_show_in_listings_or_the_plan() {
    let other = "00112233445566778899aabbccddeeff";
    let s = spec(
        "SimpleMacsecRecipe",
        &format!("macsec_keys_host2=[('00','{other}'),('01','{other}')]"),
    );
    let json = s.params.to_json().to_string();
    assert!(!json.contains(other) && !json.contains("7a1678"), "{json}");
    assert!(json.contains("<redacted>"), "{json}");
    let shown: Vec<String> = s.params.shown().map(|(k, v)| format!("{k}={v}")).collect();
    assert!(
        shown.iter().any(|l| l == "macsec_keys='<redacted>'"),
        "{shown:?}"
    );
    // Other parameters are shown as they are.
    assert!(
        shown.iter().any(|l| l == "net_ipv4='192.168.100.0/24'"),
        "{shown:?}"
    );
    let def = super::find("SimpleMacsecRecipe").unwrap_or_else(|e| panic!("{e}"));
    let table = crate::cli::recipe_params_table(&def);
    assert!(
        !table.contains("7a1678") && table.contains("<redacted>"),
        "{table}"
    );
}
