//! The lightweight-tunnel recipes' logic against scripted in-memory agents: the external
//! tunnels each creates, the dummy addresses (on `lo`, deleted again at the end, or on the
//! tunnel), the encap routes with their ids, destinations and Geneve options, GeneveLwt's
//! zipped flows and CPU pinning, the captures' filters, and packet asserts that FAIL when the
//! underlay shows another tunnel id (the negative test's case) or no encapsulation. The
//! kernel's part is tested on real agents (tests/agent_lwt.rs, tests/e2e_lwt.rs).

use super::test_support::*;
use crate::protocol::{
    CaptureFilter, GeneveOpt, GeneveOptions, GreOptions, JobSpec, LinkSpec, Op, RouteEncap,
    RouteSpec, VxlanOptions,
};
use crate::results::ResultType;
use crate::scripted::{Script, ScriptedRun};

const DUMMIES: &str = "dummy1_ipv4='198.18.171.0/24';dummy2_ipv4='198.18.172.0/24';dummy1_ipv6='fd00:171::/64';dummy2_ipv6='fd00:172::/64'";
const V4: &str = "carrier_ipversion='ipv4';net_ipv4='198.18.170.0/24'";

fn params(extra: &str) -> String {
    format!("{SMOKE};{DUMMIES};{extra}")
}

fn routes(r: &ScriptedRun, host: &str) -> Vec<RouteSpec> {
    ops(r, host, |op| match op {
        Op::AddRoute { route } => Some(route),
        _ => None,
    })
}

fn addresses(r: &ScriptedRun, host: &str, add: bool) -> Vec<String> {
    ops(r, host, |op| match op {
        Op::AddAddress { ifname, addr } if add => Some(format!("{addr} {ifname}")),
        Op::DelAddress { ifname, addr } if !add => Some(format!("{addr} {ifname}")),
        _ => None,
    })
}

fn captures(r: &ScriptedRun) -> Vec<(String, String, CaptureFilter)> {
    r.journal
        .jobs()
        .into_iter()
        .filter_map(|(h, j)| match j {
            JobSpec::Capture { device, filter } => Some((h, device, filter)),
            _ => None,
        })
        .collect()
}

fn encap(id: u64, dst: &str) -> Option<Box<RouteEncap>> {
    Some(Box::new(RouteEncap {
        id,
        dst: dst.parse().unwrap(),
        src: None,
        ttl: None,
        tos: None,
        geneve_opt: None,
    }))
}

fn route(dst: &str, dev: &str, e: Option<Box<RouteEncap>>) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        dev: Some(dev.into()),
        encap: e,
        ..RouteSpec::default()
    }
}

/// tcpdump's lines of VXLAN on port 8472 (OTV to tcpdump): `n` echo replies from host2.
fn otv_replies(vni: u32, n: u32) -> String {
    let mut out = String::new();
    for seq in 1..=n {
        out.push_str(&format!(
            "12:00:00.{seq:06} IP 198.18.170.2.40000 > 198.18.170.1.8472: OTV, flags [I] (0x08), overlay 0, instance {vni}\n\
             IP 198.18.172.1 > 198.18.171.1: ICMP echo reply, id 1, seq {seq}, length 64\n"
        ));
    }
    out
}

#[test]
fn vxlan_lwt_routes_carry_each_hosts_id_and_lo_is_left_as_found() {
    let r = run_passing(
        "VxlanLwtTunnelRecipe",
        &params(V4),
        Script::default().capture(|dev| {
            assert_eq!(dev, "veth-b", "captures run on host2's underlay device");
            otv_replies(1234, 4)
        }),
        TWO,
    );
    let vx = LinkSpec::Vxlan(VxlanOptions {
        external: true,
        ..VxlanOptions::default()
    });
    for h in ["host1", "host2"] {
        assert_eq!(created(&r, h), [("t_vxlan_tunnel".to_string(), vx.clone())]);
    }
    // Upstream's order: host1 v4, host2 v4, host1 v6, host2 v6; the v6 ones also over IPv4.
    assert_eq!(
        routes(&r, "host1"),
        [
            route(
                "198.18.172.1",
                "t_vxlan_tunnel",
                encap(1234, "198.18.170.2")
            ),
            route("fd00:172::1", "t_vxlan_tunnel", encap(1234, "198.18.170.2")),
        ]
    );
    assert_eq!(
        routes(&r, "host2"),
        [
            route(
                "198.18.171.1",
                "t_vxlan_tunnel",
                encap(1234, "198.18.170.1")
            ),
            route("fd00:171::1", "t_vxlan_tunnel", encap(1234, "198.18.170.1")),
        ]
    );
    // The dummies on lo, taken away again.
    assert!(addresses(&r, "host1", true)
        .iter()
        .any(|a| a == "198.18.171.1/32 lo"));
    assert_eq!(
        addresses(&r, "host1", false),
        ["fd00:171::1/128 lo", "198.18.171.1/32 lo"]
    );
    assert_eq!(
        addresses(&r, "host2", false),
        ["fd00:172::1/128 lo", "198.18.172.1/32 lo"]
    );
    // IPv4 only by default: one ping between the dummies, its replies watched on host2.
    let want = CaptureFilter {
        proto: Some(17),
        src: Some("198.18.170.2".parse().unwrap()),
        dst: Some("198.18.170.1".parse().unwrap()),
        udp_dport: Some(8472),
    };
    assert_eq!(
        captures(&r),
        [("host2".to_string(), "veth-b".to_string(), want)]
    );
    let a = packet_asserts(&r);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, ResultType::Pass, "{a:?}");
}

#[test]
fn vxlan_lwt_fails_when_host2_sends_another_vni() {
    // tunnel_id_host2 differs: host2's routes carry it, and its replies (which an external
    // device on host1 still takes) are not the tunnel's: the packet assert FAILs naming it.
    let r = run_on(
        "VxlanLwtTunnelRecipe",
        &params(&format!("{V4};tunnel_id=4660;tunnel_id_host2=4661")),
        Script::default().capture(|_| otv_replies(4661, 4)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert_eq!(routes(&r, "host1")[0].encap, encap(4660, "198.18.170.2"));
    assert_eq!(routes(&r, "host2")[0].encap, encap(4661, "198.18.170.1"));
    let a = packet_asserts(&r);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, ResultType::Fail);
    assert!(
        a[0].1.contains(": 0 packets matched") && a[0].1.contains("instance 4660"),
        "{a:?}"
    );
    // The same lines with the expected VNI pass: the assert tells them apart.
    run_passing(
        "VxlanLwtTunnelRecipe",
        &params(&format!("{V4};tunnel_id=4661")),
        Script::default().capture(|_| otv_replies(4661, 4)),
        TWO,
    );
    // Too few packets fail too.
    let r = run_on(
        "VxlanLwtTunnelRecipe",
        &params(V4),
        Script::default().capture(|_| otv_replies(1234, 3)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
}

#[test]
fn vxlan_lwt_needs_carrier_ipversion_and_takes_ipv4_only() {
    let r = run_on(
        "VxlanLwtTunnelRecipe",
        &params("net_ipv4='198.18.170.0/24'"),
        Script::default(),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let text = r.run.exception.clone().unwrap_or_default();
    assert!(text.contains("carrier_ipversion is not set"), "{text}");
    assert!(created(&r, "host1").is_empty());
    let e = plan("VxlanLwtTunnelRecipe", &params("carrier_ipversion='ipv6'")).unwrap_err();
    assert!(e.contains("carrier_ipversion"), "{e}");
    let e = plan(
        "VxlanLwtTunnelRecipe",
        &params(&format!("{V4};tunnel_id=16777216")),
    )
    .unwrap_err();
    assert!(e.contains("tunnel_id"), "{e}");
}

#[test]
fn vxlan_gpe_is_external_without_learning_and_asserts_vxlan_gpe() {
    let lines = |vni: u32| {
        (1..=4)
            .map(|seq| format!("12:00:00.{seq:06} IP 198.18.170.2.40000 > 198.18.170.1.4790: VXLAN-GPE, flags [IP], vni {vni}: IP 198.18.172.1 > 198.18.171.1: ICMP echo reply, id 1, seq {seq}, length 64\n"))
            .collect::<String>()
    };
    let r = run_passing(
        "VxlanGpeTunnelRecipe",
        &params(V4),
        Script::default().capture(move |_| lines(1234)),
        TWO,
    );
    let gpe = LinkSpec::Vxlan(VxlanOptions {
        external: true,
        gpe: true,
        learning: Some(false),
        ..VxlanOptions::default()
    });
    assert_eq!(created(&r, "host1"), [("t_vxlan_tunnel".to_string(), gpe)]);
    assert_eq!(captures(&r)[0].2.udp_dport, Some(4790));
    // Plain VXLAN lines are not VXLAN-GPE.
    let r = run_on(
        "VxlanGpeTunnelRecipe",
        &params(V4),
        Script::default().capture(|_| otv_replies(1234, 4)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
}

#[test]
fn gre_lwt_over_ipv6_uses_ip6_encap_and_asserts_gre_requests() {
    let v6 = "carrier_ipversion='ipv6';net_ipv6='fd00:170::/64'";
    let lines: String = (1..=4)
        .map(|seq| format!("12:00:00.{seq:06} IP6 fd00:170::1 > fd00:170::2: GREv0, length 88: IP 198.18.171.1 > 198.18.172.1: ICMP echo request, id 1, seq {seq}, length 64\n"))
        .collect::<String>();
    let r = run_passing(
        "GreLwtTunnelRecipe",
        &params(v6),
        Script::default().capture(move |_| lines.clone()),
        TWO,
    );
    let gre = LinkSpec::Gre(GreOptions {
        external: true,
        ..GreOptions::default()
    });
    assert_eq!(created(&r, "host2"), [("t_gre_tunnel".to_string(), gre)]);
    assert_eq!(
        routes(&r, "host1")[0],
        route("198.18.172.1", "t_gre_tunnel", encap(1234, "fd00:170::2"))
    );
    let c = captures(&r);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].2.proto, Some(47));
    assert_eq!(c[0].2.src, Some("fd00:170::1".parse().unwrap()));
    // Nothing on the underlay: FAIL although the ping was answered.
    let r = run_on("GreLwtTunnelRecipe", &params(v6), Script::default(), TWO);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert_eq!(packet_asserts(&r)[0].0, ResultType::Fail);
}

#[test]
fn geneve_lwt_flows_have_their_own_vni_option_addresses_and_cpu() {
    let lines = |opts: bool| {
        (1..=4)
            .map(|seq| format!("12:00:00.{seq:06} IP 198.18.170.1.40000 > 198.18.170.2.6081: Geneve, Flags [none], vni 0x64{}: IP 198.18.171.1 > 198.18.172.1: ICMP echo request, id 1, seq {seq}, length 64\n", if opts { ", options [8 bytes]" } else { "" }))
            .collect::<String>()
    };
    let p = params(&format!(
        "{V4};flow_count=2;geneve_opts=True;tunnel_id=100;perf_tool_cpu=[0,1];perf_tool_cpu_policy='round-robin'"
    ));
    let r = run_passing(
        "GeneveLwtTunnelRecipe",
        &p,
        Script::default().capture(move |_| lines(true)),
        TWO,
    );
    let gnv = LinkSpec::Geneve(GeneveOptions {
        external: true,
        ..GeneveOptions::default()
    });
    assert_eq!(created(&r, "host1"), [("t_gnv_tunnel".to_string(), gnv)]);
    let opt = |n: u8| {
        Some(GeneveOpt {
            class: 0x102,
            kind: 0x80,
            data: vec![0, n, 0, n],
        })
    };
    let with = |id, n, dst: &str| {
        encap(id, "198.18.170.2").map(|e| {
            (
                dst.to_string(),
                RouteEncap {
                    geneve_opt: opt(n),
                    ..*e
                },
            )
        })
    };
    let got: Vec<_> = routes(&r, "host1")
        .into_iter()
        .map(|r| (r.dst, *r.encap.unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            with(100, 0, "198.18.172.1").unwrap(),
            with(100, 0, "fd00:172::1").unwrap(),
            with(101, 1, "198.18.172.2").unwrap(),
            with(101, 1, "fd00:172::2").unwrap(),
        ]
    );
    // All dummies on the Geneve device, none on lo.
    assert_eq!(
        addresses(&r, "host2", true)
            .into_iter()
            .filter(|a| a.ends_with("t_gnv_tunnel"))
            .count(),
        4
    );
    assert!(!addresses(&r, "host1", true)
        .iter()
        .any(|a| a.ends_with(" lo")));
    // Flows zipped (10.N with 20.N), each on the next CPU (round-robin over all pairs).
    let flows: Vec<(String, Option<Vec<u32>>)> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(_, j)| match j {
            JobSpec::IperfClient { server, cpus, .. } => Some((server, cpus)),
            _ => None,
        })
        .collect();
    assert_eq!(
        flows,
        [
            ("198.18.172.1".to_string(), Some(vec![0])),
            ("198.18.172.2".to_string(), Some(vec![1])),
        ]
    );
    // The option is required with geneve_opts.
    let r = run_on(
        "GeneveLwtTunnelRecipe",
        &p,
        Script::default().capture(move |_| lines(false)),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
}

const L2TP: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];ping_count=4;ping_interval=0.2;net_ipv4='198.18.188.0/24';net_ipv6='fd00:188::/64';l2tp_ipv4='198.18.189.0/24'";

#[test]
fn l2tp_tunnels_sessions_peer_addresses_flows_and_asserts() {
    let udp_lines: String = (1..=4)
        .map(|seq| {
            format!("12:00:00.{seq:06} IP 198.18.188.1.5000 > 198.18.188.2.5000: UDP, length 110\n")
        })
        .collect();
    let r = run_passing(
        "L2TPTunnelRecipe",
        &format!("{L2TP};carrier_ipversion='ipv4';l2tp_encapsulation='udp'"),
        Script::default().capture(move |_| udp_lines.clone()),
        TWO,
    );
    let tunnels = ops(&r, "host2", |op| match op {
        Op::AddL2tpTunnel { tunnel } => Some(tunnel),
        _ => None,
    });
    assert_eq!(
        tunnels,
        [crate::protocol::L2tpTunnelSpec {
            tunnel_id: 1000,
            peer_tunnel_id: 1000,
            encap: crate::protocol::L2tpEncap::Udp,
            local: "198.18.188.2".parse().unwrap(),
            remote: "198.18.188.1".parse().unwrap(),
            udp_sport: Some(5000),
            udp_dport: Some(5000),
        }]
    );
    let sessions = ops(&r, "host1", |op| match op {
        Op::AddL2tpSession { session } => Some(session),
        _ => None,
    });
    assert_eq!(
        sessions,
        [crate::protocol::L2tpSessionSpec {
            ifname: "t_l2tp_session1".into(),
            tunnel_id: 1000,
            session_id: 2000,
            peer_session_id: 2000,
        }]
    );
    // Point-to-point addresses, each with the other as peer.
    assert!(addresses(&r, "host1", true)
        .iter()
        .any(|a| a == "198.18.189.1/24 peer 198.18.189.2 t_l2tp_session1"));
    assert!(addresses(&r, "host2", true)
        .iter()
        .any(|a| a == "198.18.189.2/24 peer 198.18.189.1 t_l2tp_session1"));
    // Flows between the session addresses (upstream builds none: its IPs are strings).
    let flows: Vec<String> = r
        .journal
        .jobs()
        .into_iter()
        .filter_map(|(h, j)| match j {
            JobSpec::IperfClient { server, .. } => Some(format!("{h} -> {server}")),
            _ => None,
        })
        .collect();
    assert_eq!(flows, ["host1 -> 198.18.189.2"]);
    let c = captures(&r);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].2.proto, c[0].2.udp_dport), (Some(17), Some(5000)));
    // Over IP on an IPv6 carrier: protocol 115; UDP lines do not match it.
    let r = run_on(
        "L2TPTunnelRecipe",
        &format!("{L2TP};carrier_ipversion='ipv6';l2tp_encapsulation='ip'"),
        Script::default().capture(|_| {
            (1..=4)
                .map(|s| format!("12:00:00.{s:06} IP 198.18.188.1.5000 > 198.18.188.2.5000: UDP, length 110\n"))
                .collect()
        }),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let c = captures(&r);
    assert_eq!(c[0].2.proto, Some(115));
    assert_eq!(c[0].2.src, Some("fd00:188::1".parse().unwrap()));
    let a = packet_asserts(&r);
    assert!(
        a[0].1.contains("ip-proto-115") && a[0].1.contains(": 0 packets"),
        "{a:?}"
    );
    // l2tp_encapsulation is mandatory.
    let e = plan(
        "L2TPTunnelRecipe",
        &format!("{L2TP};carrier_ipversion='ipv4'"),
    )
    .unwrap_err();
    assert!(e.contains("l2tp_encapsulation"), "{e}");
}
