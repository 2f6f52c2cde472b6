//! Tunnel recipes' logic against scripted in-memory agents: the tunnels each creates (kind,
//! endpoints, options), the routes, where the packet asserts capture and with which filter,
//! and packet asserts that FAIL when the underlay does not show the encapsulation. The
//! kernel's part is tested on real agents (tests/e2e_tunnels.rs).

use super::test_support::*;
use crate::protocol::{CaptureFilter, GreOptions, JobSpec, LinkSpec, Op, VxlanOptions};
use crate::results::ResultType;
use crate::scripted::{Script, ScriptedRun};

const GRE: &str = "net_ipv4='198.18.128.0/24';tunnel1_ipv4='198.18.129.0/24';tunnel2_ipv4='198.18.130.0/24';tunnel1_ipv6='fd00:129::/64';tunnel2_ipv6='fd00:130::/64'";

fn routes(r: &ScriptedRun, host: &str) -> Vec<String> {
    ops(r, host, |op| match op {
        Op::AddRoute { route } => Some(format!(
            "{} dev {}",
            route.dst,
            route.dev.unwrap_or_default()
        )),
        _ => None,
    })
}

fn gre_capture(n: u32) -> Script {
    Script::default().capture(move |dev| {
        assert_eq!(dev, "veth-b", "captures run on host2's underlay device");
        tcpdump_lines(
            ("198.18.128.1", "198.18.128.2"),
            "GREv0",
            &[
                ("198.18.129.2", "198.18.130.2", false),
                ("fd00:129::2", "fd00:130::2", true),
            ],
            n,
        )
    })
}

#[test]
fn gre_tunnel_is_created_routed_and_its_pings_seen_as_gre() {
    let r = run_passing(
        "GreTunnelRecipe",
        &format!("{SMOKE};{GRE}"),
        gre_capture(4),
        TWO,
    );
    let gre = |l: &str, rm: &str| {
        LinkSpec::Gre(GreOptions {
            local: Some(l.parse().unwrap()),
            remote: Some(rm.parse().unwrap()),
            ..GreOptions::default()
        })
    };
    assert_eq!(
        created(&r, "host1"),
        [(
            "t_gre_tunnel".to_string(),
            gre("198.18.128.1", "198.18.128.2")
        )]
    );
    assert_eq!(
        created(&r, "host2"),
        [(
            "t_gre_tunnel".to_string(),
            gre("198.18.128.2", "198.18.128.1")
        )]
    );
    assert_eq!(
        routes(&r, "host1"),
        [
            "198.18.130.0/24 dev t_gre_tunnel",
            "fd00:130::/64 dev t_gre_tunnel"
        ]
    );
    assert_eq!(
        routes(&r, "host2"),
        [
            "198.18.129.0/24 dev t_gre_tunnel",
            "fd00:129::/64 dev t_gre_tunnel"
        ]
    );
    // One capture per ping, on host2's underlay, for GRE from host1's underlay address.
    let captures: Vec<(String, JobSpec)> = r
        .journal
        .jobs()
        .into_iter()
        .filter(|(_, j)| matches!(j, JobSpec::Capture { .. }))
        .collect();
    let want = JobSpec::Capture {
        device: "veth-b".into(),
        filter: CaptureFilter {
            proto: Some(47),
            src: Some("198.18.128.1".parse().unwrap()),
            dst: Some("198.18.128.2".parse().unwrap()),
            udp_dport: None,
        },
    };
    assert_eq!(
        captures,
        [
            ("host2".to_string(), want.clone()),
            ("host2".to_string(), want)
        ]
    );
    let asserts: Vec<_> = generic(&r)
        .into_iter()
        .filter(|(_, t)| t.starts_with("PacketAssert"))
        .collect();
    assert_eq!(asserts.len(), 2, "{asserts:?}");
    assert!(asserts.iter().all(|(ok, t)| *ok == ResultType::Pass
        && t.contains(": 4 packets matched")
        && t.contains("expected at least 4")));
    // Pings and flows between the tunnel addresses.
    let pings: Vec<String> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(h, j)| match j {
            JobSpec::Ping { dst, src, .. } => Some(format!("{h}: {} -> {dst}", src.unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        pings,
        [
            "host1: 198.18.129.2 -> 198.18.130.2",
            "host1: fd00:129::2 -> fd00:130::2"
        ]
    );
}

#[test]
fn gre_packet_assert_fails_when_the_underlay_shows_no_gre() {
    // Nothing captured (as with a tunnel that does not encapsulate): FAIL, though every
    // ping was answered.
    let r = run_on(
        "GreTunnelRecipe",
        &format!("{SMOKE};{GRE}"),
        Script::default(),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let t = generic(&r);
    assert!(
        t.iter().any(|(ok, s)| *ok == ResultType::Fail
            && s.starts_with("PacketAssert on host2.eth0: 0 packets matched")),
        "{t:?}"
    );
    // Fewer than the pings sent also fails.
    let r = run_on(
        "GreTunnelRecipe",
        &format!("{SMOKE};{GRE}"),
        gre_capture(3),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    // Everything came down.
    let deleted = r
        .journal
        .entries()
        .into_iter()
        .filter(|e| matches!(&e.op, Op::DeleteLink { .. }))
        .count();
    assert_eq!(deleted, 2);
}

const VXLAN: &str =
    "net_ipv4='198.18.133.0/24';vxlan_ipv4='198.18.134.0/24';vxlan_ipv6='fd00:134::/64'";

#[test]
fn vxlan_remote_points_each_host_at_the_other_over_eth0() {
    let r = run_passing(
        "VxlanRemoteRecipe",
        &format!("{SMOKE};{VXLAN}"),
        Script::default(),
        TWO,
    );
    let vx = |remote: &str, parent: &str| {
        LinkSpec::Vxlan(VxlanOptions {
            id: 1,
            remote: Some(remote.parse().unwrap()),
            parent: Some(parent.into()),
            ..VxlanOptions::default()
        })
    };
    assert_eq!(
        created(&r, "host1"),
        [("t_vxlan0".to_string(), vx("198.18.133.2", "veth-a"))]
    );
    assert_eq!(
        created(&r, "host2"),
        [("t_vxlan0".to_string(), vx("198.18.133.1", "veth-b"))]
    );
    let pings: Vec<String> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(h, j)| match j {
            JobSpec::Ping { dst, src, .. } => Some(format!("{h}: {} -> {dst}", src.unwrap())),
            JobSpec::Capture { .. } => panic!("VxlanRemoteRecipe has no packet assert"),
            _ => None,
        })
        .collect();
    assert_eq!(
        pings,
        [
            "host1: 198.18.134.1 -> 198.18.134.2",
            "host1: fd00:134::1 -> fd00:134::2"
        ]
    );
    // The description names VNI, remote and underlay as upstream's does.
    let desc: Vec<&str> = r
        .run
        .results
        .iter()
        .map(|e| e.description.as_str())
        .filter(|d| d.contains("vxlan0.remote"))
        .collect();
    assert!(
        desc.iter()
            .any(|d| d.contains("Configured host1.vxlan0.remote = 198.18.133.2")),
        "{desc:?}"
    );
}

const IPIP: &str = "tunnel_mode='ipip';net_ipv4='198.18.135.0/24';tunnel_ipv4='198.18.136.0/24'";

#[test]
fn ipip_tunnel_has_mode_ttl_and_ipv4_only_and_asserts_ipip() {
    let script = Script::default().capture(|_| {
        tcpdump_lines(
            ("198.18.135.1", "198.18.135.2"),
            "",
            &[("198.18.136.1", "198.18.136.2", false)],
            4,
        )
    });
    let r = run_passing(
        "IpIpTunnelRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{IPIP}"),
        script,
        TWO,
    );
    let ipip = |l: &str, rm: &str| {
        LinkSpec::Ipip(crate::protocol::IpTunOptions {
            local: Some(l.parse().unwrap()),
            remote: Some(rm.parse().unwrap()),
            ttl: Some(64),
            tos: None,
            mode: Some(crate::protocol::IpTunMode::Ipip),
        })
    };
    assert_eq!(
        created(&r, "host1"),
        [(
            "t_ipip_tunnel".to_string(),
            ipip("198.18.135.1", "198.18.135.2")
        )]
    );
    assert_eq!(
        created(&r, "host2"),
        [(
            "t_ipip_tunnel".to_string(),
            ipip("198.18.135.2", "198.18.135.1")
        )]
    );
    assert!(routes(&r, "host1").is_empty());
    let jobs = r.journal.jobs();
    let pings: Vec<_> = jobs
        .iter()
        .filter(|(_, j)| matches!(j, JobSpec::Ping { .. }))
        .collect();
    assert_eq!(pings.len(), 1, "IPv4 only: {pings:?}");
    assert!(jobs.iter().any(|(h, j)| h == "host2"
        && matches!(j, JobSpec::Capture { filter, .. } if filter.proto == Some(4))));
    // Without IPIP on the underlay the packet assert fails.
    let r = run_on(
        "IpIpTunnelRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{IPIP}"),
        Script::default(),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    // tunnel_mode is mandatory and checked.
    assert!(plan("IpIpTunnelRecipe", SMOKE_NO_OFFLOADS).is_err());
    assert!(plan(
        "IpIpTunnelRecipe",
        &format!("{SMOKE_NO_OFFLOADS};tunnel_mode='gre'")
    )
    .is_err());
}

#[test]
fn ipip_underlay_starts_at_upstreams_default_start() {
    use super::tunnel::nth_from;
    let start: std::net::IpAddr = "172.16.200.1".parse().unwrap();
    let a = |net: &str, n| {
        nth_from(net.parse().unwrap(), start, n)
            .unwrap()
            .to_string()
    };
    assert_eq!(a("172.16.0.0/16", 1), "172.16.200.1/16");
    assert_eq!(a("172.16.0.0/16", 2), "172.16.200.2/16");
    assert_eq!(a("198.18.135.0/24", 2), "198.18.135.2/24");
}

const GENEVE: &str = "carrier_ipversion='ipv6';net_ipv6='fd00:137::/64';tunnel_ipv4='198.18.138.0/24';tunnel_ipv6='fd00:138::/64'";

/// tcpdump's lines of Geneve over IPv6 (the inner packet on the next line).
fn geneve_lines(vni: &str, n: u32) -> String {
    let mut out = String::new();
    for (src, dst, icmp) in [
        ("198.18.138.10", "198.18.138.20", "ICMP echo request"),
        ("fd00:138::10", "fd00:138::20", "ICMP6, echo request"),
        // (hexadecimal 0x10 and 0x20, as upstream's fee0::10 and fee0::20)
    ] {
        for seq in 1..=n {
            out.push_str(&format!(
                "12:00:00.{seq:06} IP6 fd00:137::1.4{seq:04} > fd00:137::2.6081: Geneve, Flags [none], vni {vni}, proto TEB (0x6558)\nIP {src} > {dst}: {icmp}, id 1, seq {seq}, length 64\n"
            ));
        }
    }
    out
}

#[test]
fn geneve_over_ipv6_is_created_with_mtu_1400_and_asserts_its_vni() {
    let script = Script::default().capture(|_| geneve_lines("0x4d2", 4));
    let r = run_passing(
        "GeneveTunnelRecipe",
        &format!("{SMOKE};{GENEVE}"),
        script,
        TWO,
    );
    let gnv = |rm: &str| {
        LinkSpec::Geneve(crate::protocol::GeneveOptions {
            id: 1234,
            remote: Some(rm.parse().unwrap()),
            dstport: None,
            ttl: None,
            external: false,
        })
    };
    assert_eq!(
        created(&r, "host1"),
        [("t_gnv_tunnel".to_string(), gnv("fd00:137::2"))]
    );
    assert_eq!(
        created(&r, "host2"),
        [("t_gnv_tunnel".to_string(), gnv("fd00:137::1"))]
    );
    let mtus: Vec<(String, u32)> = r
        .journal
        .entries()
        .into_iter()
        .filter_map(|e| match e.op {
            Op::SetMtu { ifname, mtu } => Some((e.host, ifname, mtu)),
            _ => None,
        })
        .filter(|(_, i, _)| i == "t_gnv_tunnel")
        .map(|(h, _, m)| (h, m))
        .collect();
    assert_eq!(mtus, [("host1".into(), 1400), ("host2".into(), 1400)]);
    let want = CaptureFilter {
        proto: Some(17),
        src: Some("fd00:137::1".parse().unwrap()),
        dst: Some("fd00:137::2".parse().unwrap()),
        udp_dport: Some(6081),
    };
    assert!(r
        .journal
        .jobs()
        .iter()
        .any(|(h, j)| h == "host2"
            && matches!(j, JobSpec::Capture { filter, .. } if *filter == want)));
    // Another VNI on the underlay is not this tunnel's traffic.
    let r = run_on(
        "GeneveTunnelRecipe",
        &format!("{SMOKE};{GENEVE}"),
        Script::default().capture(|_| geneve_lines("0x4d3", 4)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    // Without carrier_ipversion the test FAILs before configuring anything, naming it.
    let r = run_on("GeneveTunnelRecipe", SMOKE, Script::default(), TWO);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let text = r.run.exception.clone().unwrap_or_default();
    assert!(text.contains("carrier_ipversion is not set"), "{text}");
    assert!(created(&r, "host1").is_empty());
}

const SIT: &str = "tunnel_mode='any';net_ipv4='198.18.139.0/24';tunnel1_ipv4='198.18.140.0/24';tunnel2_ipv4='198.18.141.0/24';tunnel1_ipv6='fd00:140::/64';tunnel2_ipv6='fd00:141::/64'";

#[test]
fn sit_tunnel_asserts_protocol_4_for_ipv4_and_41_for_ipv6() {
    let script = Script::default().capture(|_| {
        tcpdump_lines(
            ("198.18.139.1", "198.18.139.2"),
            "",
            &[
                ("198.18.140.2", "198.18.141.2", false),
                ("fd00:140::2", "fd00:141::2", true),
            ],
            4,
        )
    });
    let r = run_passing(
        "SitTunnelRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{SIT}"),
        script,
        TWO,
    );
    let sit = |l: &str, rm: &str| {
        LinkSpec::Sit(crate::protocol::IpTunOptions {
            local: Some(l.parse().unwrap()),
            remote: Some(rm.parse().unwrap()),
            mode: Some(crate::protocol::IpTunMode::Any),
            ..Default::default()
        })
    };
    assert_eq!(
        created(&r, "host2"),
        [(
            "t_sit_tunnel".to_string(),
            sit("198.18.139.2", "198.18.139.1")
        )]
    );
    assert_eq!(
        routes(&r, "host2"),
        [
            "198.18.140.0/24 dev t_sit_tunnel",
            "fd00:140::/64 dev t_sit_tunnel"
        ]
    );
    let protos: Vec<Option<u8>> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(_, j)| match j {
            JobSpec::Capture { filter, .. } => Some(filter.proto),
            _ => None,
        })
        .collect();
    assert_eq!(protos, [Some(4), Some(41)]);
}

/// tcpdump's lines of an IPv6 underlay with the kernel's destination options first.
fn ip6_dstopt_lines(encap: &str, inner: &[(&str, &str, bool)], n: u32) -> String {
    let mut out = String::new();
    for (src, dst, v6) in inner {
        let (ip, icmp) = if *v6 {
            ("IP6", "ICMP6, echo request")
        } else {
            ("IP", "ICMP echo request")
        };
        for seq in 1..=n {
            out.push_str(&format!(
                "12:00:00.{seq:06} IP6 fd00:142::1 > fd00:142::2: DSTOPT {encap}{ip} {src} > {dst}: {icmp}, id 1, seq {seq}, length 64\n"
            ));
        }
    }
    out
}

const IP6TNL: &str = "tunnel_mode='ip6ip6';net_ipv6='fd00:142::/64';tunnel_ipv6='fd00:143::/64'";

#[test]
fn ip6tnl_is_ipv6_only_and_asserts_without_a_protocol_filter() {
    let script = Script::default()
        .capture(|_| ip6_dstopt_lines("", &[("fd00:143::2", "fd00:143::3", true)], 4));
    let r = run_passing(
        "Ip6TnlTunnelRecipe",
        &format!("{SMOKE_NO_OFFLOADS};{IP6TNL}"),
        script,
        TWO,
    );
    assert_eq!(
        created(&r, "host1"),
        [(
            "t_ip6tnl".to_string(),
            LinkSpec::Ip6Tnl(crate::protocol::IpTunOptions {
                local: Some("fd00:142::1".parse().unwrap()),
                remote: Some("fd00:142::2".parse().unwrap()),
                ttl: Some(64),
                tos: None,
                mode: Some(crate::protocol::IpTunMode::Ip6ip6),
            })
        )]
    );
    let jobs = r.journal.jobs();
    let filters: Vec<&CaptureFilter> = jobs
        .iter()
        .filter_map(|(_, j)| match j {
            JobSpec::Capture { filter, .. } => Some(filter),
            _ => None,
        })
        .collect();
    // One IPv6 ping; the filter has no protocol (a destination-options header comes first).
    assert_eq!(
        filters,
        [&CaptureFilter {
            proto: None,
            src: Some("fd00:142::1".parse().unwrap()),
            dst: Some("fd00:142::2".parse().unwrap()),
            udp_dport: None,
        }]
    );
}

const IP6GRE: &str = "net_ipv6='fd00:142::/64';tunnel1_ipv4='198.18.140.0/24';tunnel2_ipv4='198.18.141.0/24';tunnel1_ipv6='fd00:140::/64';tunnel2_ipv6='fd00:141::/64'";

#[test]
fn ip6gre_carries_both_families_and_its_assert_wants_gre() {
    let inner = [
        ("198.18.140.2", "198.18.141.2", false),
        ("fd00:140::2", "fd00:141::2", true),
    ];
    let script =
        Script::default().capture(move |_| ip6_dstopt_lines("GREv0, length 88: ", &inner, 4));
    let r = run_passing(
        "Ip6GreTunnelRecipe",
        &format!("{SMOKE};{IP6GRE}"),
        script,
        TWO,
    );
    assert_eq!(
        created(&r, "host2"),
        [(
            "t_gre6_tunnel".to_string(),
            LinkSpec::Ip6Gre(GreOptions {
                local: Some("fd00:142::2".parse().unwrap()),
                remote: Some("fd00:142::1".parse().unwrap()),
                ..GreOptions::default()
            })
        )]
    );
    assert_eq!(
        routes(&r, "host1"),
        [
            "198.18.141.0/24 dev t_gre6_tunnel",
            "fd00:141::/64 dev t_gre6_tunnel"
        ]
    );
    // The same packets without GRE (an ip6tnl) do not pass.
    let script = Script::default().capture(move |_| ip6_dstopt_lines("", &inner, 4));
    let r = run_on(
        "Ip6GreTunnelRecipe",
        &format!("{SMOKE};{IP6GRE}"),
        script,
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
}
