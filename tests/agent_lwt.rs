//! The real agent (over stdio, one per fresh network namespace of the host kernel) doing the
//! lightweight-tunnel operations: external (metadata-collecting) VXLAN and VXLAN-GPE devices,
//! routes whose encapsulation they carry (`encap ip|ip6 id … dst … [src] [ttl]`, read back
//! with `ip route`), pings between `lo` addresses across two namespaces through them, the
//! route's id on the wire (tcpdump), and the routes and devices gone when the recipe ends.
//! External GRE and Geneve need kernel features this host may lack: they are created where
//! `ip link add … external` can, and fail with `Unsupported` naming the feature where not
//! (the VM agents' kernels have them: tests/e2e_lwt.rs). Bad specs are refused, naming why.

mod common;

use common::agent_ns::Netns;
use common::{have, is_root, require};
use lnst_runner::protocol::{
    ErrorKind, GeneveOpt, GeneveOptions, GreOptions, LinkSpec, RouteEncap, RouteSpec, VxlanOptions,
};
use lnst_runner::session::{AgentClient, SessionError};
use std::process::Command;
use std::time::Duration;

/// The agent in `ns` as `host`, its log on the test's stderr.
async fn agent(ns: &Netns, host: &str) -> (tokio::process::Child, AgentClient) {
    ns.agent_with_stderr(host, std::process::Stdio::inherit())
        .await
}

fn ok<T>(r: Result<T, SessionError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn refused<T: std::fmt::Debug>(r: Result<T, SessionError>, kind: ErrorKind, text: &str) {
    match r {
        Err(SessionError::Remote {
            kind: k, message, ..
        }) => {
            assert_eq!(k, kind, "{message}");
            assert!(message.contains(text), "{message}");
        }
        other => panic!("expected {kind:?} containing {text:?}, got {other:?}"),
    }
}

fn encap(id: u64, dst: &str) -> RouteEncap {
    RouteEncap {
        id,
        dst: dst.parse().unwrap(),
        src: None,
        ttl: None,
        tos: None,
        geneve_opt: None,
    }
}

fn route(dst: &str, e: RouteEncap) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        dev: Some("vx".into()),
        encap: Some(Box::new(e)),
        ..RouteSpec::default()
    }
}

fn prerequisites() -> bool {
    require(is_root(), "needs root for network namespaces")
        && require(have("ip"), "needs iproute2 (ip)")
        && require(have("ping"), "needs ping")
        && require(have("tcpdump"), "needs tcpdump")
}

/// Two namespaces joined by a veth pair: a (198.18.182.1, fd00:182::1), b (.2, ::2).
fn underlay(tag: &str) -> (Netns, Netns) {
    let pid = std::process::id();
    let a = Netns::new(format!("lnsttest-lwt{tag}a-{pid}"));
    let b = Netns::new(format!("lnsttest-lwt{tag}b-{pid}"));
    a.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"])
        .unwrap();
    a.ip(&["link", "set", "u1", "netns", &b.0]).unwrap();
    for (ns, dev, n) in [(&a, "u0", 1), (&b, "u1", 2)] {
        ns.ip(&["addr", "add", &format!("198.18.182.{n}/24"), "dev", dev])
            .unwrap();
        ns.ip(&[
            "addr",
            "add",
            &format!("fd00:182::{n}/64"),
            "dev",
            dev,
            "nodad",
        ])
        .unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
        ns.ip(&["link", "set", "lo", "up"]).unwrap();
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_vxlan_with_encap_routes_carries_pings_between_lo_addresses() {
    if !prerequisites() {
        return;
    }
    let (a, b) = underlay("v");
    let (mut ca, c1) = agent(&a, "host1").await;
    let (mut cb, c2) = agent(&b, "host2").await;
    let ext = LinkSpec::Vxlan(VxlanOptions {
        external: true,
        ..VxlanOptions::default()
    });
    // host1's routes carry id 1234 (one with an outer source and TTL), host2's 1235: an
    // external device takes any VNI, so the pings work and each direction shows its own id.
    for (c, n, peer, id) in [(&c1, 1, 2, 1234u64), (&c2, 2, 1, 1235)] {
        ok(c.create_link("vx", ext.clone()).await, "create vx");
        ok(c.set_mtu("vx", 1400).await, "mtu");
        ok(c.set_link("vx", true).await, "up");
        ok(
            c.add_address("lo", &format!("198.18.18{}.1/32", 2 + n))
                .await,
            "lo v4",
        );
        ok(
            c.add_address("lo", &format!("fd00:18{}::1/128", 2 + n))
                .await,
            "lo v6",
        );
        let mut v4 = encap(id, &format!("198.18.182.{peer}"));
        if n == 1 {
            v4.src = Some("198.18.182.1".parse().unwrap());
            v4.ttl = Some(64);
        }
        let dst4 = format!("198.18.18{}.1", 2 + peer);
        ok(c.add_route(route(&dst4, v4)).await, "v4 encap route");
        // The IPv6 dummy over the IPv6 carrier (`encap ip6`), read back below. Not pinged:
        // IPv6 inner traffic needs neighbour discovery, which the kernel does not send
        // through an encap route (upstream: "ping over IPv6 does not work yet"), and VXLAN
        // LWT takes an IPv4 carrier only upstream (GeneveLwt over IPv6 runs in e2e_lwt).
        let dst6 = format!("fd00:18{}::1", 2 + peer);
        let v6 = encap(id, &format!("fd00:182::{peer}"));
        ok(c.add_route(route(&dst6, v6)).await, "v6 encap route");
    }
    let shown = a.ip(&["route", "show", "198.18.184.1"]).unwrap();
    assert!(
        shown.contains("encap ip id 1234 src 198.18.182.1 dst 198.18.182.2 ttl 64")
            && shown.contains("dev vx"),
        "{shown}"
    );
    let shown = b.ip(&["-6", "route", "show", "fd00:183::1"]).unwrap();
    assert!(
        shown.contains("encap ip6 id 1235") && shown.contains("dst fd00:182::1"),
        "{shown}"
    );

    // The ids on the wire: capture on b's underlay while a pings.
    let cap = Command::new("ip")
        .args([
            "netns", "exec", &b.0, "timeout", "5", "tcpdump", "-n", "-l", "-p",
        ])
        .args(["-i", "u1", "udp", "port", "8472"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p4 = a.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-I",
        "198.18.183.1",
        "198.18.184.1",
    ]);
    assert!(p4.status.success(), "{p4:?}");
    let out = cap.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("IP 198.18.182.1.") && l.contains("instance 1234")),
        "{text}"
    );
    assert!(text.contains("instance 1235"), "host2's replies: {text}");

    // The lo addresses are taken away on request (the controller does it at the end).
    ok(c1.del_address("lo", "198.18.183.1/32").await, "del lo v4");
    assert!(!a
        .ip(&["addr", "show", "lo"])
        .unwrap()
        .contains("198.18.183.1"));
    // The end of the recipe removes the routes and the device.
    for (c, ns) in [(&c1, &a), (&c2, &b)] {
        ok(c.end_recipe().await, "end recipe");
        assert!(ns.ip(&["link", "show", "vx"]).is_err());
        let routes = ns.ip(&["route", "show"]).unwrap() + &ns.ip(&["-6", "route"]).unwrap();
        assert!(!routes.contains("encap"), "{routes}");
        ok(c.bye().await, "bye");
    }
    let _ = ca.wait().await;
    let _ = cb.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpe_gre_and_geneve_external_and_bad_encap_specs() {
    if !prerequisites() {
        return;
    }
    let (a, _b) = underlay("g");
    let (mut ca, c) = agent(&a, "host1").await;
    // VXLAN-GPE: external, gpe, learning off, read back by iproute2.
    let gpe = VxlanOptions {
        external: true,
        gpe: true,
        learning: Some(false),
        ..VxlanOptions::default()
    };
    ok(
        c.create_link("vx", LinkSpec::Vxlan(gpe.clone())).await,
        "gpe",
    );
    let d = a.ip(&["-d", "link", "show", "vx"]).unwrap();
    assert!(
        d.contains("external") && d.contains("gpe") && d.contains("nolearning"),
        "{d}"
    );
    assert!(d.contains("dstport 4790"), "{d}");
    ok(c.delete_link("vx").await, "delete gpe");
    // Refused combinations, each naming why.
    let learning = VxlanOptions {
        learning: None,
        ..gpe.clone()
    };
    refused(
        c.create_link("vx", LinkSpec::Vxlan(learning)).await,
        ErrorKind::BadRequest,
        "gpe needs external and learning off",
    );
    let with_id = VxlanOptions {
        id: 5,
        gpe: false,
        learning: None,
        ..gpe
    };
    refused(
        c.create_link("vx", LinkSpec::Vxlan(with_id)).await,
        ErrorKind::BadRequest,
        "external takes no id",
    );
    refused(
        c.create_link(
            "g0",
            LinkSpec::Gre(GreOptions {
                external: true,
                remote: Some("198.18.182.2".parse().unwrap()),
                ..GreOptions::default()
            }),
        )
        .await,
        ErrorKind::BadRequest,
        "external takes no local, remote or key",
    );
    // External GRE and Geneve: created where this kernel can, else Unsupported naming the
    // feature (the truth from `ip link add` on the same kernel).
    let cases = [
        (
            LinkSpec::Gre(GreOptions {
                external: true,
                ..GreOptions::default()
            }),
            "gre",
            "kernel lacks GRE tunnel support (module ip_gre",
        ),
        (
            LinkSpec::Geneve(GeneveOptions {
                external: true,
                ..GeneveOptions::default()
            }),
            "geneve",
            "kernel lacks Geneve support (module geneve",
        ),
    ];
    for (spec, kind, expect) in cases {
        let truth = a.ip(&["link", "add", "lnstprobe", "type", kind, "external"]);
        let _ = a.ip(&["link", "del", "lnstprobe"]);
        let r = c.create_link("tun9", spec).await;
        match truth {
            Ok(_) => {
                ok(r, kind);
                let d = a.ip(&["-d", "link", "show", "tun9"]).unwrap();
                assert!(d.contains("external"), "{kind}: {d}");
                ok(c.delete_link("tun9").await, "delete");
            }
            Err(why) => {
                eprintln!("{kind} external not on this kernel: {why}");
                refused(r, ErrorKind::Unsupported, expect);
            }
        }
    }
    // Bad encap routes.
    ok(
        c.create_link(
            "vx",
            LinkSpec::Vxlan(VxlanOptions {
                external: true,
                ..VxlanOptions::default()
            }),
        )
        .await,
        "vx",
    );
    let mut e = encap(1, "198.18.182.2");
    e.src = Some("fd00:182::1".parse().unwrap());
    refused(
        c.add_route(route("198.18.185.1", e)).await,
        ErrorKind::BadRequest,
        "differ in family",
    );
    let mut e = encap(1, "198.18.182.2");
    e.geneve_opt = Some(GeneveOpt {
        class: 0x102,
        kind: 0x80,
        data: vec![1, 2, 3],
    });
    refused(
        c.add_route(route("198.18.185.1", e)).await,
        ErrorKind::BadRequest,
        "geneve option data is 3 bytes",
    );
    refused(
        c.add_route(RouteSpec {
            dev: None,
            ..route("198.18.185.1", encap(1, "198.18.182.2"))
        })
        .await,
        ErrorKind::BadRequest,
        "give a gateway (via) or a device (dev)",
    );
    ok(c.end_recipe().await, "end recipe");
    assert!(a.ip(&["link", "show", "vx"]).is_err());
    ok(c.bye().await, "bye");
    let _ = ca.wait().await;
}

/// L2TP tunnels and sessions: bad specs refused naming why; created and removed at the end
/// where the kernel has L2TPv3, else `Unsupported` naming the feature (the truth from
/// `ip l2tp` on the same kernel; the VM agents have it: tests/e2e_lwt.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2tp_tunnel_and_session_or_the_missing_feature() {
    use lnst_runner::protocol::{L2tpEncap, L2tpSessionSpec, L2tpTunnelSpec};
    if !prerequisites() {
        return;
    }
    let (a, _b) = underlay("l");
    let (mut ca, c) = agent(&a, "host1").await;
    let tunnel = L2tpTunnelSpec {
        tunnel_id: 1000,
        peer_tunnel_id: 1000,
        encap: L2tpEncap::Udp,
        local: "198.18.182.1".parse().unwrap(),
        remote: "198.18.182.2".parse().unwrap(),
        udp_sport: Some(5000),
        udp_dport: Some(5000),
    };
    refused(
        c.add_l2tp_tunnel(L2tpTunnelSpec {
            remote: "fd00:182::2".parse().unwrap(),
            ..tunnel.clone()
        })
        .await,
        ErrorKind::BadRequest,
        "differ in family",
    );
    refused(
        c.add_l2tp_tunnel(L2tpTunnelSpec {
            encap: L2tpEncap::Ip,
            ..tunnel.clone()
        })
        .await,
        ErrorKind::BadRequest,
        "UDP ports need encap udp",
    );
    let session = L2tpSessionSpec {
        ifname: "l2tpeth9".into(),
        tunnel_id: 1000,
        session_id: 2000,
        peer_session_id: 2000,
    };
    refused(
        c.add_l2tp_session(L2tpSessionSpec {
            session_id: 0,
            ..session.clone()
        })
        .await,
        ErrorKind::BadRequest,
        "ids must be above 0",
    );
    let truth = a.ip(&["l2tp", "show", "tunnel"]);
    let r = c.add_l2tp_tunnel(tunnel).await;
    match truth {
        Ok(_) => {
            ok(r, "l2tp tunnel");
            ok(c.add_l2tp_session(session).await, "l2tp session");
            assert!(a.ip(&["link", "show", "l2tpeth9"]).is_ok());
            ok(c.end_recipe().await, "end recipe");
            assert!(a.ip(&["link", "show", "l2tpeth9"]).is_err());
            assert!(!a.ip(&["l2tp", "show", "tunnel"]).unwrap().contains("1000"));
        }
        Err(why) => {
            eprintln!("L2TP not on this kernel: {why}");
            refused(r, ErrorKind::Unsupported, "kernel lacks L2TPv3 support");
            ok(c.end_recipe().await, "end recipe");
        }
    }
    ok(c.bye().await, "bye");
    let _ = ca.wait().await;
}
