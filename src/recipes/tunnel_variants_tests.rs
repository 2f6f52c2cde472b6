//! The tunnel variants' logic against scripted in-memory agents: GRE over a VLAN, a macvlan
//! and a bond (the shared GRE block, the GRE keys), the netns tunnels (VXLAN and ip6gre
//! inside namespaces, captures inside host2's namespace) and the multicast VXLAN between two
//! hosts and a guest. Packet asserts and pings are shown to FAIL when the underlay does not
//! show the encapsulation or the peers do not answer. The kernel's part is tested on real
//! agents (tests/e2e_tunnel_variants.rs).

use super::test_support::*;
use crate::protocol::{BondMode, CaptureFilter, GreOptions, JobSpec, LinkSpec, Op, VxlanOptions};
use crate::results::ResultType;
use crate::scripted::{Script, ScriptedRun};

const NETS: &str = "net_ipv4='198.18.150.0/24';tunnel1_ipv4='198.18.151.0/24';tunnel2_ipv4='198.18.152.0/24';tunnel1_ipv6='fd00:151::/64';tunnel2_ipv6='fd00:152::/64'";

const BONDED: Devices = &[
    ("host1", &[("eth0", "veth-a"), ("eth1", "veth-c")]),
    ("host2", &[("eth0", "veth-b"), ("eth1", "veth-d")]),
];

const VIRT: Devices = &[
    ("host1", &[("eth0", "veth-a"), ("tap0", "veth-t")]),
    ("host2", &[("eth0", "veth-b")]),
    ("guest1", &[("eth0", "veth-g")]),
];

/// The links created on `host`: (namespace, name, spec).
fn created(r: &ScriptedRun, host: &str) -> Vec<(Option<String>, String, LinkSpec)> {
    ops(r, host, |op| match out_of_netns(op) {
        (ns, Op::CreateLink { ifname, link, .. }) => Some((ns, ifname, link)),
        _ => None,
    })
}

/// The captures started: (host, namespace, device, filter).
fn captures(r: &ScriptedRun) -> Vec<(String, Option<String>, String, CaptureFilter)> {
    host_ops(r, |host, op| match out_of_netns(op) {
        (
            ns,
            Op::StartJob {
                spec: JobSpec::Capture { device, filter },
            },
        ) => Some((host, ns, device, filter)),
        _ => None,
    })
}

/// The pings started: `host[@ns]: src -> dst`.
fn pings(r: &ScriptedRun) -> Vec<String> {
    host_ops(r, |host, op| match out_of_netns(op) {
        (
            ns,
            Op::StartJob {
                spec: JobSpec::Ping { dst, src, .. },
            },
        ) => Some(format!(
            "{}{}: {} -> {dst}",
            host,
            ns.map(|n| format!("@{n}")).unwrap_or_default(),
            src.unwrap_or_default()
        )),
        _ => None,
    })
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// tcpdump's lines of `n` GRE packets from host1's underlay to host2's with `key` (tcpdump's
/// `, key=0x..`), carrying host1's echo requests over IPv4 and IPv6.
fn gre_lines(key: Option<u32>, n: u32) -> String {
    let key = key.map(|k| format!(", key={k:#x}")).unwrap_or_default();
    tcpdump_lines(
        ("198.18.150.1", "198.18.150.2"),
        &format!("GREv0{key}"),
        &[
            ("198.18.151.2", "198.18.152.2", false),
            ("fd00:151::2", "fd00:152::2", true),
        ],
        n,
    )
}

fn gre(local: &str, remote: &str, key: Option<u32>) -> LinkSpec {
    LinkSpec::Gre(GreOptions {
        local: Some(ip(local)),
        remote: Some(ip(remote)),
        key,
        ..GreOptions::default()
    })
}

/// Run a GRE variant; check the carrier and the GRE block on both hosts and that the captures
/// run on host2's carrier (`carrier_if`) for GRE from host1's carrier address.
fn check_gre_variant(
    recipe: &str,
    params: &str,
    devices: Devices,
    carrier_if: &str,
) -> ScriptedRun {
    let want_dev = carrier_if.to_string();
    let script = Script::default().capture(move |dev| {
        assert_eq!(dev, want_dev, "captures run on host2's carrier");
        gre_lines(None, 4)
    });
    let r = run_on(recipe, params, script, devices);
    assert_eq!(
        r.run.overall_result(),
        ResultType::Pass,
        "{recipe}: {:?}",
        generic(&r)
    );
    for (host, l, rm) in [
        ("host1", "198.18.150.1", "198.18.150.2"),
        ("host2", "198.18.150.2", "198.18.150.1"),
    ] {
        let links = created(&r, host);
        assert_eq!(
            links
                .last()
                .map(|(ns, n, s)| (ns.clone(), n.as_str(), s.clone())),
            Some((None, "t_gre_tunnel", gre(l, rm, None))),
            "{recipe} {host}: {links:?}"
        );
    }
    let want = CaptureFilter {
        proto: Some(47),
        src: Some(ip("198.18.150.1")),
        dst: Some(ip("198.18.150.2")),
        udp_dport: None,
    };
    let caps = captures(&r);
    assert_eq!(caps.len(), 2, "{recipe}");
    assert!(
        caps.iter()
            .all(|c| *c == ("host2".into(), None, carrier_if.into(), want.clone())),
        "{recipe}: {caps:?}"
    );
    let asserts = packet_asserts(&r);
    assert_eq!(asserts.len(), 2);
    assert!(asserts
        .iter()
        .all(|(ok, t)| *ok == ResultType::Pass && t.contains(": 4 packets matched")));
    assert_eq!(
        pings(&r),
        [
            "host1: 198.18.151.2 -> 198.18.152.2",
            "host1: fd00:151::2 -> fd00:152::2"
        ]
    );
    r
}

#[test]
fn gre_over_vlan_tunnels_between_the_vlans_and_watches_host2_vlan() {
    let r = check_gre_variant(
        "GreTunnelOverVlanRecipe",
        &format!("{SMOKE};{NETS};vlan_id=21"),
        TWO,
        "t_vlan0",
    );
    let links = created(&r, "host1");
    assert_eq!(
        links[0].2,
        LinkSpec::Vlan {
            parent: "veth-a".into(),
            id: 21,
            protocol: Default::default()
        }
    );
    // The VLAN is the underlay: it has the address.
    let addrs: Vec<(String, String)> = ops(&r, "host1", |op| match op {
        Op::AddAddress { ifname, addr } => Some((ifname, addr)),
        _ => None,
    });
    assert_eq!(
        addrs[0],
        ("t_vlan0".to_string(), "198.18.150.1/24".to_string())
    );
}

#[test]
fn gre_over_macvlan_tunnels_between_the_macvlans() {
    let r = check_gre_variant(
        "GreTunnelOverMacvlanRecipe",
        &format!("{SMOKE};{NETS}"),
        TWO,
        "t_macvlan10",
    );
    assert!(matches!(
        &created(&r, "host2")[0].2,
        LinkSpec::Macvlan { parent, .. } if parent == "veth-b"
    ));
    // Only the macvlan answers ARP for its address (eth0 would steal host1's GRE packets);
    // the old value comes back at the end.
    for host in ["host1", "host2"] {
        let writes: Vec<String> = ops(&r, host, |op| match op {
            Op::SysctlWrite { path, value } => Some(format!("{path}={value}")),
            _ => None,
        });
        assert_eq!(
            writes,
            [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_ignore=0"
            ],
            "{host}"
        );
    }
}

#[test]
fn gre_over_bond_bonds_both_nics_and_watches_host2_bond() {
    let r = check_gre_variant(
        "GreTunnelOverBondRecipe",
        &format!("{SMOKE};{NETS};bonding_mode='balance-rr';miimon_value=100"),
        BONDED,
        "t_bond",
    );
    for host in ["host1", "host2"] {
        match &created(&r, host)[0].2 {
            LinkSpec::Bond(o) => {
                assert_eq!(o.mode, Some(BondMode::BalanceRr));
                assert_eq!(o.miimon, Some(100));
            }
            other => panic!("{host}: {other:?}"),
        }
        let ports: Vec<String> = ops(&r, host, |op| match op {
            Op::Enslave { ifname, master, .. } => Some(format!("{ifname}>{master}")),
            _ => None,
        });
        let (a, b) = if host == "host1" {
            ("veth-a", "veth-c")
        } else {
            ("veth-b", "veth-d")
        };
        assert_eq!(ports, [format!("{a}>t_bond"), format!("{b}>t_bond")]);
    }
    // The bond parameters are mandatory, as upstream.
    let e = plan("GreTunnelOverBondRecipe", NETS).unwrap_err();
    assert!(e.contains("bonding_mode"), "{e}");
}

#[test]
fn gre_keys_default_to_none_and_gre_key_host2_defaults_to_gre_key() {
    for recipe in [
        "GreTunnelRecipe",
        "GreTunnelOverVlanRecipe",
        "GreTunnelOverMacvlanRecipe",
    ] {
        let s = spec(recipe, "");
        for name in ["gre_key", "gre_key_host2"] {
            let v = s.params.get(name);
            assert!(
                v.is_none_or(|v| *v == crate::params::Value::None),
                "{recipe}.{name}: {v:?}"
            );
        }
    }
    let r = run_passing(
        "GreTunnelRecipe",
        &format!("{SMOKE};{NETS};gre_key=7"),
        Script::default().capture(|_| gre_lines(Some(7), 4)),
        TWO,
    );
    assert_eq!(
        created(&r, "host1")[0].2,
        gre("198.18.150.1", "198.18.150.2", Some(7))
    );
    assert_eq!(
        created(&r, "host2")[0].2,
        gre("198.18.150.2", "198.18.150.1", Some(7))
    );
    // With a key, the assert wants the key: unkeyed GRE on the wire does not count.
    let r = run_on(
        "GreTunnelRecipe",
        &format!("{SMOKE};{NETS};gre_key=7"),
        Script::default().capture(|_| gre_lines(None, 4)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(e_has(&packet_asserts(&r), "0 packets matched"));
    // Out of range: refused at plan time naming the parameter.
    let e = plan("GreTunnelRecipe", "gre_key=-1").unwrap_err();
    assert!(e.contains("gre_key"), "{e}");
}

fn e_has(results: &[(ResultType, String)], text: &str) -> bool {
    results
        .iter()
        .any(|(ok, t)| *ok == ResultType::Fail && t.contains(text))
}

#[test]
fn mismatched_gre_keys_fail_with_lost_pings_and_unmatched_packet_asserts() {
    // What the kernel does with mismatched keys: host1 sends key 1, host2 accepts only key 2
    // and drops them, so no echo reply comes back.
    let script = Script::default()
        .capture(|_| gre_lines(Some(1), 4))
        .ping_received_to("198.18.152.2", 0)
        .ping_received_to("fd00:152::2", 0);
    let r = run_on(
        "GreTunnelOverVlanRecipe",
        &format!("{SMOKE};{NETS};gre_key=1;gre_key_host2=2"),
        script,
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert_eq!(
        created(&r, "host1")[1].2,
        gre("198.18.150.1", "198.18.150.2", Some(1))
    );
    assert_eq!(
        created(&r, "host2")[1].2,
        gre("198.18.150.2", "198.18.150.1", Some(2))
    );
    let asserts = packet_asserts(&r);
    assert_eq!(asserts.len(), 2);
    assert!(
        asserts.iter().all(|(ok, t)| *ok == ResultType::Fail
            && t.contains(": 0 packets matched")
            && t.contains("key=0x2,")),
        "{asserts:?}"
    );
    let failed_pings = r
        .run
        .results
        .iter()
        .filter(|e| e.result == ResultType::Fail && e.description.contains("measured rate 0"))
        .count();
    assert!(failed_pings >= 2, "{:?}", generic(&r));
}

/// tcpdump's lines in host2's namespace for VXLAN (port 8472, tcpdump's OTV decoding) from
/// `outer` with VNI `vni`, carrying echo replies from host2's tunnel to host1's.
fn vxlan_reply_lines(outer: (&str, &str), vni: u32, n: u32) -> String {
    let mut out = String::new();
    for icmp in [
        "IP 198.18.152.2 > 198.18.151.2: ICMP echo reply",
        "IP6 fd00:152::2 > fd00:151::2: ICMP6, echo reply",
    ] {
        for seq in 1..=n {
            out.push_str(&format!(
                "12:00:00.{seq:06} IP {}.45398 > {}.8472: OTV, flags [I] (0x08), overlay 0, instance {vni}\n{icmp}, id 1, seq {seq}, length 64\n",
                outer.0, outer.1
            ));
        }
    }
    out
}

const NETNS_V4: &str = "net_ipv4='198.18.153.0/24';tunnel1_ipv4='198.18.151.0/24';tunnel2_ipv4='198.18.152.0/24';tunnel1_ipv6='fd00:151::/64';tunnel2_ipv6='fd00:152::/64'";

#[test]
fn vxlan_netns_tunnel_lives_in_the_namespaces_and_asserts_host2_replies() {
    let script = Script::default().capture(|dev| {
        assert_eq!(dev, "t_veth1");
        vxlan_reply_lines(("198.18.153.2", "198.18.153.1"), 1234, 4)
    });
    let r = run_passing(
        "VxlanNetnsTunnelRecipe",
        &format!("{SMOKE};{NETNS_V4};vxlan_group_ip='239.1.1.9'"),
        script,
        TWO,
    );
    for (host, ns) in [("host1", "host1-net1"), ("host2", "host2-net1")] {
        let links = created(&r, host);
        assert_eq!(
            links
                .iter()
                .map(|(n, i, _)| (n.as_deref(), i.as_str()))
                .collect::<Vec<_>>(),
            [
                (None, "t_veth0"),
                (None, "t_bridge"),
                (Some(ns), "t_vxlan_tunnel")
            ],
            "{host}"
        );
        assert_eq!(
            links[2].2,
            LinkSpec::Vxlan(VxlanOptions {
                id: 1234,
                group: Some(ip("239.1.1.9")),
                parent: Some("t_veth1".into()),
                ..VxlanOptions::default()
            })
        );
        // The routes to the peer's tunnel networks are added inside the namespace.
        let routes: Vec<Option<String>> = ops(&r, host, |op| match out_of_netns(op) {
            (ns, Op::AddRoute { .. }) => Some(ns),
            _ => None,
        });
        assert_eq!(routes, [Some(ns.to_string()), Some(ns.to_string())]);
    }
    let caps = captures(&r);
    let want = CaptureFilter {
        proto: None,
        src: Some(ip("198.18.153.2")),
        dst: Some(ip("198.18.153.1")),
        udp_dport: Some(8472),
    };
    assert_eq!(caps.len(), 2);
    assert!(caps.iter().all(|c| *c
        == (
            "host2".into(),
            Some("host2-net1".into()),
            "t_veth1".into(),
            want.clone()
        )));
    assert_eq!(
        pings(&r),
        [
            "host1@host1-net1: 198.18.151.2 -> 198.18.152.2",
            "host1@host1-net1: fd00:151::2 -> fd00:152::2"
        ]
    );
    // Another VNI on the wire than host2's: the assert FAILs.
    let script =
        Script::default().capture(|_| vxlan_reply_lines(("198.18.153.2", "198.18.153.1"), 1234, 4));
    let r = run_on(
        "VxlanNetnsTunnelRecipe",
        &format!("{SMOKE};{NETNS_V4};vxlan_id_host2=99"),
        script,
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(e_has(&packet_asserts(&r), "0 packets matched"));
    assert!(matches!(&created(&r, "host2")[2].2, LinkSpec::Vxlan(o) if o.id == 99));
    // Defaults are upstream's.
    let s = spec("VxlanNetnsTunnelRecipe", "");
    assert_eq!(
        s.params.get("vxlan_id").map(|v| v.to_string()).as_deref(),
        Some("1234")
    );
    assert_eq!(
        s.params
            .get("vxlan_group_ip")
            .and_then(|v| v.as_str().map(str::to_string))
            .as_deref(),
        Some("239.1.1.1")
    );
    // A group that is not multicast is refused at plan time, naming the parameter.
    let e = plan("VxlanNetnsTunnelRecipe", "vxlan_group_ip='198.18.153.7'").unwrap_err();
    assert!(
        e.contains("vxlan_group_ip") && e.contains("multicast"),
        "{e}"
    );
}

#[test]
fn ip6gre_netns_tunnel_lives_in_the_namespaces_and_asserts_in_host2_namespace() {
    const P: &str = "net_ipv6='fd00:153::/64';tunnel1_ipv4='198.18.151.0/24';tunnel2_ipv4='198.18.152.0/24';tunnel1_ipv6='fd00:151::/64';tunnel2_ipv6='fd00:152::/64'";
    let lines = |n: u32| {
        let mut out = String::new();
        for icmp in [
            "IP 198.18.151.2 > 198.18.152.2: ICMP echo request",
            "IP6 fd00:151::2 > fd00:152::2: ICMP6, echo request",
        ] {
            for seq in 1..=n {
                out.push_str(&format!(
                    "12:00:00.{seq:06} IP6 fd00:153::1 > fd00:153::2: DSTOPT GREv0, length 100: {icmp}, id 1, seq {seq}, length 64\n"
                ));
            }
        }
        out
    };
    let r = run_passing(
        "Ip6GreNetnsTunnelRecipe",
        &format!("{SMOKE};{P}"),
        Script::default().capture(move |_| lines(4)),
        TWO,
    );
    let links = created(&r, "host2");
    assert_eq!(
        links[2],
        (
            Some("host2-net1".into()),
            "t_gre6_tunnel".into(),
            LinkSpec::Ip6Gre(GreOptions {
                local: Some(ip("fd00:153::2")),
                remote: Some(ip("fd00:153::1")),
                ..GreOptions::default()
            })
        )
    );
    let caps = captures(&r);
    assert_eq!(caps.len(), 2);
    assert!(caps.iter().all(|(h, ns, d, f)| h == "host2"
        && ns.as_deref() == Some("host2-net1")
        && d == "t_veth1"
        && f.src == Some(ip("fd00:153::1"))
        && f.dst == Some(ip("fd00:153::2"))));
    // Fewer packets than pings sent: FAIL.
    let r = run_on(
        "Ip6GreNetnsTunnelRecipe",
        &format!("{SMOKE};{P}"),
        Script::default().capture(move |_| lines(2)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
}

const MCAST: &str = "net_ipv4='198.18.154.0/24';vxlan_ipv4='198.18.155.0/24';vxlan_ipv6='fd00:155::/64';vxlan_group_ip='239.1.1.2'";

#[test]
fn vxlan_multicast_joins_three_machines_and_pings_every_ordered_pair() {
    let r = run_passing(
        "VxlanMulticastRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{MCAST}"),
        Script::default(),
        VIRT,
    );
    for (host, parent) in [
        ("host1", "t_br0"),
        ("host2", "veth-b"),
        ("guest1", "veth-g"),
    ] {
        let links = created(&r, host);
        let vx = links
            .iter()
            .find(|(_, n, _)| n == "t_vxlan0")
            .map(|l| l.2.clone());
        assert_eq!(
            vx,
            Some(LinkSpec::Vxlan(VxlanOptions {
                id: 1,
                group: Some(ip("239.1.1.2")),
                parent: Some(parent.into()),
                ..VxlanOptions::default()
            })),
            "{host}"
        );
    }
    // Tracked and untracked underlay addresses, as upstream: .1/.2 on br0, .3/.4 guest1, .5/.6 host2.
    let addrs: Vec<String> = host_ops(&r, |host, op| match op {
        Op::AddAddress { ifname, addr } if addr.starts_with("198.18.154.") => {
            Some(format!("{}.{ifname} {addr}", host))
        }
        _ => None,
    });
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "guest1.veth-g 198.18.154.3/24",
            "guest1.veth-g 198.18.154.4/24",
            "host1.t_br0 198.18.154.1/24",
            "host1.t_br0 198.18.154.2/24",
            "host2.veth-b 198.18.154.5/24",
            "host2.veth-b 198.18.154.6/24",
        ]
    );
    // Only the tracked ones are described.
    let desc = generic(&r);
    assert!(
        desc.iter()
            .any(|(_, d)| d.contains("Configured host1.br0.ips = ['198.18.154.1/24']")),
        "{desc:?}"
    );
    assert!(desc
        .iter()
        .any(|(_, d)| d.contains("Configured guest1.vxlan0.group = 239.1.1.2")));
    // Six ordered pairs, IPv4 and IPv6 each: 12 pings.
    let p = pings(&r);
    assert_eq!(p.len(), 12, "{p:?}");
    for want in [
        "host1: 198.18.155.1 -> 198.18.155.3",
        "host1: 198.18.155.1 -> 198.18.155.2",
        "host2: 198.18.155.3 -> 198.18.155.1",
        "host2: fd00:155::3 -> fd00:155::2",
        "guest1: 198.18.155.2 -> 198.18.155.1",
        "guest1: fd00:155::2 -> fd00:155::3",
    ] {
        assert!(p.iter().any(|x| x == want), "{want}: {p:?}");
    }
    // No capture: not a tunnel-base recipe.
    assert!(captures(&r).is_empty());
    // The guest not answering over the VXLAN fails the run.
    let r = run_on(
        "VxlanMulticastRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{MCAST}"),
        Script::default().ping_received_to("198.18.155.2", 0),
        VIRT,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    // Networks too small for six addresses and non-multicast groups are refused.
    let e = plan("VxlanMulticastRecipe", "net_ipv4='198.18.154.0/30'").unwrap_err();
    assert!(e.contains("net_ipv4"), "{e}");
    let e = plan("VxlanMulticastRecipe", "vxlan_group_ip='fd00::1'").unwrap_err();
    assert!(e.contains("vxlan_group_ip"), "{e}");
}
