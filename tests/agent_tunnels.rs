//! The real agent (over stdio, in a fresh network namespace of the host kernel) creating
//! tunnel links and capturing on an underlay: a VXLAN device is created with its VNI,
//! remote, local, underlay device and port, its encapsulated traffic is seen by a Capture job
//! (tcpdump) on the underlay, and it is deleted when the recipe ends. Tunnel kinds this kernel
//! lacks fail with `Unsupported` naming the feature, checked against what `ip link add` says
//! on the same kernel (the VM agents' kernels have them all: tests/e2e_tunnels.rs).

mod common;

use common::agent_ns::Netns;
use common::{have, is_root, require};
use lnst_runner::protocol::{
    CaptureFilter, ErrorKind, GeneveOptions, GreOptions, IpTunMode, IpTunOptions, JobSpec,
    LinkSpec, VxlanOptions,
};
use lnst_runner::session::SessionError;
use std::time::Duration;

fn ok<T>(r: Result<T, SessionError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_is_created_captured_on_its_underlay_and_removed() {
    if !require(is_root(), "needs root for network namespaces")
        || !require(have("ip"), "needs iproute2 (ip)")
        || !require(have("ping"), "needs ping")
        || !require(have("tcpdump"), "needs tcpdump")
    {
        return;
    }
    let ns = Netns::new(format!("lnsttest-tun-{}", std::process::id()));
    // The underlay: p0 (198.18.131.1/24) with the remote's MAC known, so that the
    // encapsulated packets leave p0 without ARP.
    ns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p0x"])
        .unwrap();
    ns.ip(&["link", "set", "p0x", "up"]).unwrap();
    ns.ip(&["link", "set", "p0", "up"]).unwrap();
    ns.ip(&["addr", "add", "198.18.131.1/24", "dev", "p0"])
        .unwrap();
    ns.ip(&[
        "neigh",
        "add",
        "198.18.131.2",
        "lladdr",
        "02:00:00:00:01:31",
        "dev",
        "p0",
        "nud",
        "permanent",
    ])
    .unwrap();

    let (mut child, c) = ns
        .agent_with_stderr("host1", std::process::Stdio::inherit())
        .await;
    ok(c.start_recipe(&["p0".to_string()]).await, "start recipe");

    let vx = LinkSpec::Vxlan(VxlanOptions {
        id: 4242,
        remote: Some("198.18.131.2".parse().unwrap()),
        local: Some("198.18.131.1".parse().unwrap()),
        parent: Some("p0".into()),
        dstport: Some(4789),
        ttl: Some(64),
        group: None,
        ..VxlanOptions::default()
    });
    let info = ok(
        c.create_link_with("vx0", vx, None, None, true).await,
        "vxlan",
    );
    assert_eq!(info[0].kind.as_deref(), Some("vxlan"), "{info:?}");
    let shown = ns.ip(&["-d", "link", "show", "vx0"]).unwrap();
    for want in [
        "vxlan id 4242 remote 198.18.131.2 local 198.18.131.1 dev p0",
        "dstport 4789",
        "ttl 64",
    ] {
        assert!(shown.contains(want), "{want:?} not in {shown}");
    }
    ok(c.add_address("vx0", "198.18.132.1/24").await, "address");

    // Pings into the VXLAN (nobody answers: the ARP requests are encapsulated) while a
    // capture on the underlay watches for VXLAN to the remote.
    let cap = ok(
        c.start_job(JobSpec::Capture {
            device: "p0".into(),
            filter: CaptureFilter {
                proto: Some(17),
                src: Some("198.18.131.1".parse().unwrap()),
                dst: Some("198.18.131.2".parse().unwrap()),
                udp_dport: Some(4789),
            },
        })
        .await,
        "capture",
    );
    // StartJob answers once tcpdump listens: its packet socket exists at once.
    let sockets = ns.exec(&["ss", "-0", "-p"]);
    let sockets = String::from_utf8_lossy(&sockets.stdout);
    assert!(
        sockets.contains("\"tcpdump\""),
        "no tcpdump packet socket right after StartJob: {sockets}"
    );
    // A second capture for Geneve's port sees none of it: the filter is applied.
    let other = ok(
        c.start_job(JobSpec::Capture {
            device: "p0".into(),
            filter: CaptureFilter {
                udp_dport: Some(6081),
                ..CaptureFilter::default()
            },
        })
        .await,
        "capture 6081",
    );
    let ping = ok(
        c.start_job(JobSpec::Ping {
            dst: "198.18.132.2".into(),
            src: None,
            count: 3,
            interval_s: 0.5,
            size: None,
            ipv6: false,
        })
        .await,
        "ping",
    );
    let _ = ok(c.wait_job(ping, Duration::from_secs(15)).await, "ping end");
    let res = ok(c.stop_job(cap).await, "stop capture");
    let none = ok(c.stop_job(other).await, "stop capture 6081");
    assert_eq!(none.stdout.trim(), "", "{}", none.stderr);
    assert!(
        none.stderr.contains("0 packets captured"),
        "{}",
        none.stderr
    );
    let vxlan: Vec<&str> = res
        .stdout
        .lines()
        .filter(|l| l.contains("198.18.131.1.") && l.contains("> 198.18.131.2.4789: VXLAN"))
        .collect();
    assert!(
        !vxlan.is_empty(),
        "no VXLAN captured: {} / {}",
        res.stdout,
        res.stderr
    );
    assert!(
        vxlan.iter().all(|l| l.contains("vni 4242")),
        "{}",
        res.stdout
    );
    // tcpdump prints a VXLAN packet's inner packet on the next line, without a timestamp.
    assert!(
        !res.stdout
            .lines()
            .any(|l| l.starts_with(|c: char| c.is_ascii_digit()) && !l.contains("VXLAN")),
        "the filter let other packets through: {}",
        res.stdout
    );

    // A bad spec is refused with its reason.
    let r = c
        .create_link(
            "vx1",
            LinkSpec::Vxlan(VxlanOptions {
                id: 1 << 24,
                ..VxlanOptions::default()
            }),
        )
        .await;
    match r {
        Err(SessionError::Remote { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::BadRequest, "{message}");
            assert!(
                message.contains("id 16777216 is above 16777215"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Tunnel kinds: created when `ip link add` can, Unsupported naming the feature when not.
    let v4 = |s: &str| Some(s.parse().unwrap());
    let cases: Vec<(LinkSpec, &str, &str)> = vec![
        (
            LinkSpec::Gre(GreOptions {
                local: v4("198.18.131.1"),
                remote: v4("198.18.131.2"),
                key: Some(5),
                ..GreOptions::default()
            }),
            "gre",
            "kernel lacks GRE tunnel support (module ip_gre",
        ),
        (
            LinkSpec::Ipip(IpTunOptions {
                local: v4("198.18.131.1"),
                remote: v4("198.18.131.2"),
                mode: Some(IpTunMode::Ipip),
                ..IpTunOptions::default()
            }),
            "ipip",
            "kernel lacks IP-in-IP tunnel support (module ipip",
        ),
        (
            LinkSpec::Sit(IpTunOptions {
                local: v4("198.18.131.1"),
                remote: v4("198.18.131.2"),
                ..IpTunOptions::default()
            }),
            "sit",
            "kernel lacks IPv6-in-IPv4 (SIT) tunnel support (module sit",
        ),
        (
            LinkSpec::Ip6Tnl(IpTunOptions {
                remote: Some("fd00:131::2".parse().unwrap()),
                mode: Some(IpTunMode::Ip6ip6),
                ..IpTunOptions::default()
            }),
            "ip6tnl",
            "kernel lacks IPv6 tunnel support (module ip6_tunnel",
        ),
        (
            LinkSpec::Geneve(GeneveOptions {
                id: 7,
                remote: v4("198.18.131.2"),
                ..GeneveOptions::default()
            }),
            "geneve",
            "kernel lacks Geneve support (module geneve",
        ),
    ];
    for (spec, kind, expect) in cases {
        let mut args = vec!["link", "add", "lnstprobe", "type", kind];
        if kind == "geneve" {
            args.extend_from_slice(&["id", "7", "remote", "198.18.131.2"]);
        }
        let truth = ns.ip(&args);
        let _ = ns.ip(&["link", "del", "lnstprobe"]);
        let r = c.create_link("tun9", spec).await;
        match truth {
            Ok(_) => {
                ok(r, kind);
                ok(c.delete_link("tun9").await, "delete");
            }
            Err(why) => match r {
                Err(SessionError::Remote {
                    kind: k, message, ..
                }) => {
                    assert_eq!(k, ErrorKind::Unsupported, "{kind}: {message} (ip: {why})");
                    assert!(message.starts_with(expect), "{kind}: {message}");
                }
                other => panic!("{kind}: expected Unsupported ({why}), got {other:?}"),
            },
        }
    }

    // The recipe's end deletes the VXLAN device.
    ok(c.end_recipe().await, "end recipe");
    assert!(ns.ip(&["link", "show", "vx0"]).is_err());
    ok(c.bye().await, "bye");
    let _ = child.wait().await;
}
