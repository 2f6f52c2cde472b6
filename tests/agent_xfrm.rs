//! The real agent (over stdio, in a fresh network namespace of the host kernel) adding and
//! removing IPsec policies and states with `XfrmAdd`/`XfrmDel`: what it adds shows in `ip
//! xfrm`, is deleted by selector (a policy it did not add stays), and whatever is left goes
//! at EndRecipe. A state whose protocol or algorithm the kernel lacks (this host has xfrm but
//! no ESP/AH modules) fails with `Unsupported` naming the host and the feature, checked
//! against what `ip xfrm state add` says on the same kernel, and leaves nothing behind; where
//! the kernel has it, the state is added and deleted. No key appears in the agent's log or
//! its error messages. MACsec links fail the same way without the macsec module. The VM
//! agents' kernels have it all: tests/e2e_ipsec.rs.

mod common;

use common::agent_ns::Netns;
use common::{have, is_root, require};
use lnst_runner::protocol::{
    ErrorKind, LinkSpec, MacsecKey, MacsecSas, Secret, XfrmAlgo, XfrmDir, XfrmMode, XfrmPolicy,
    XfrmProto, XfrmState, XfrmTmpl,
};
use lnst_runner::session::SessionError;
use std::net::IpAddr;
use tokio::io::AsyncReadExt;

const KEY: &str = "0x5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

fn policy(src: &str, dst: &str, dir: XfrmDir) -> XfrmPolicy {
    let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    XfrmPolicy {
        src: s,
        dst: d,
        dir,
        tmpls: vec![XfrmTmpl {
            src: s,
            dst: d,
            proto: XfrmProto::Esp,
            spi: None,
            mode: XfrmMode::Transport,
            optional: false,
        }],
    }
}

fn esp_state(src: &str, dst: &str, spi: u32) -> XfrmState {
    let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    XfrmState {
        src: s,
        dst: d,
        proto: XfrmProto::Esp,
        spi,
        mode: XfrmMode::Transport,
        algo: XfrmAlgo::Aead {
            name: "rfc4106(gcm(aes))".into(),
            key: Secret(KEY.into()),
            icv_bits: 96,
        },
        sel: Some((s, d)),
    }
}

fn ok<T>(r: Result<T, SessionError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfrm_policies_and_states_are_added_and_only_ours_removed() {
    if !require(is_root(), "needs root for network namespaces")
        || !require(have("ip"), "needs iproute2 (ip)")
    {
        return;
    }
    let ns = Netns::new(format!("lnsttest-xfrm-{}", std::process::id()));
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    // The machine's own IPsec configuration, which the agent must leave alone.
    ns.ip(&[
        "xfrm",
        "policy",
        "add",
        "src",
        "198.18.209.1",
        "dst",
        "198.18.209.2",
        "dir",
        "out",
        "tmpl",
        "src",
        "198.18.209.1",
        "dst",
        "198.18.209.2",
        "proto",
        "esp",
        "mode",
        "transport",
    ])
    .unwrap();
    let (mut child, c) = ns.agent("host1").await;
    ok(c.start_recipe(&[]).await, "start recipe");

    // Policies (the host kernel has xfrm): added, shown, deleted by selector.
    let p1 = policy("198.18.190.1", "198.18.191.1", XfrmDir::Out);
    let p2 = policy("fd00:191::1", "fd00:190::1", XfrmDir::In);
    ok(
        c.xfrm_add(vec![], vec![p1.clone(), p2.clone()]).await,
        "add policies",
    );
    let shown = ns.ip(&["xfrm", "policy"]).unwrap();
    for want in [
        "src 198.18.190.1/32 dst 198.18.191.1/32",
        "dir out",
        "src fd00:191::1/128 dst fd00:190::1/128",
        "dir in",
        "src 198.18.209.1/32",
    ] {
        assert!(shown.contains(want), "{want:?} not in {shown}");
    }
    ok(c.xfrm_del(vec![], vec![p1.id()]).await, "delete one policy");
    let shown = ns.ip(&["xfrm", "policy"]).unwrap();
    assert!(!shown.contains("198.18.191.1/32"), "{shown}");
    assert!(shown.contains("fd00:190::1/128"), "{shown}");
    // Not ours: refused, and the machine's policy stays.
    let foreign = policy("198.18.209.1", "198.18.209.2", XfrmDir::Out).id();
    match c.xfrm_del(vec![], vec![foreign]).await {
        Err(SessionError::Remote { kind, message, .. }) => {
            assert_eq!(kind, ErrorKind::NotAllowed, "{message}")
        }
        other => panic!("deleting a policy we did not add: {other:?}"),
    }

    // An ESP state: added where the kernel can, Unsupported naming the feature where not.
    let probe = ns.ip(&esp_state("198.18.192.1", "198.18.192.2", 0x77)
        .argv(false)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let _ = ns.ip(&["xfrm", "state", "flush"]);
    let s = esp_state("198.18.190.1", "198.18.191.1", 0x1001);
    let p3 = policy("198.18.190.1", "198.18.191.1", XfrmDir::Out);
    let r = c.xfrm_add(vec![s.clone()], vec![p3.clone()]).await;
    match (&probe, r) {
        (Ok(_), r) => {
            ok(r, "ESP state where the kernel has ESP");
            let st = ns.ip(&["xfrm", "state"]).unwrap();
            assert!(st.contains("spi 0x00001001"), "{st}");
            ok(
                c.xfrm_del(vec![s.id()], vec![p3.id()]).await,
                "delete state",
            );
            assert!(!ns.ip(&["xfrm", "state"]).unwrap().contains("0x00001001"));
        }
        (Err(why), Err(SessionError::Remote { kind, message, .. })) => {
            assert_eq!(kind, ErrorKind::Unsupported, "{message} (ip: {why})");
            assert!(
                message.contains("the kernel lacks IPsec ESP (modules esp4/esp6)")
                    && message.contains("rfc4106(gcm(aes))"),
                "{message}"
            );
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
            assert!(
                message.starts_with(host.trim()),
                "names the host: {message}"
            );
            assert!(!message.contains(&KEY[2..]), "{message}");
            // All or nothing: the policy of the failed request is not there.
            let shown = ns.ip(&["xfrm", "policy"]).unwrap();
            assert!(!shown.contains("198.18.191.1/32"), "{shown}");
            assert_eq!(ns.ip(&["xfrm", "state"]).unwrap().trim(), "");
        }
        (Err(why), Ok(())) => panic!("ip says {why}, the agent added the state"),
        (_, Err(e)) => panic!("{e}"),
    }

    // MACsec: a link where the kernel has the module, Unsupported naming it where not.
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .unwrap();
    let probe = ns.ip(&["link", "add", "link", "d0", "mprobe", "type", "macsec"]);
    let _ = ns.ip(&["link", "del", "mprobe"]);
    let r = c
        .create_link_with(
            "t_msec0",
            LinkSpec::Macsec {
                parent: "d0".into(),
                encrypt: true,
            },
            None,
            None,
            false,
        )
        .await;
    match (probe, r) {
        (Ok(_), r) => {
            ok(r, "macsec");
            let sas = MacsecSas {
                peer_mac: "02:00:00:00:02:09".into(),
                port: 1,
                an: 0,
                pn: 1,
                tx: MacsecKey {
                    id: "00".into(),
                    key: Secret("5ec2e75ec2e75ec2e75ec2e75ec2e75e".into()),
                },
                rx: MacsecKey {
                    id: "01".into(),
                    key: Secret("5ec2e75ec2e75ec2e75ec2e75ec2e75f".into()),
                },
            };
            ok(c.macsec_configure("t_msec0", sas).await, "macsec SAs");
            let shown = ns.ip(&["macsec", "show", "t_msec0"]).unwrap();
            assert!(shown.contains("02:00:00:00:02:09"), "{shown}");
        }
        (Err(why), Err(SessionError::Remote { kind, message, .. })) => {
            assert_eq!(kind, ErrorKind::Unsupported, "{message} (ip: {why})");
            assert!(
                message.contains("MACsec support") && message.contains("module macsec"),
                "{message}"
            );
        }
        (Err(why), Ok(_)) => panic!("ip says {why}, the agent made the macsec link"),
        (Err(_), Err(e)) => panic!("{e}"),
    }

    // EndRecipe removes what is left (p2), nothing else.
    ok(c.end_recipe().await, "end recipe");
    let shown = ns.ip(&["xfrm", "policy"]).unwrap();
    assert!(!shown.contains("fd00:190::1/128"), "{shown}");
    assert!(
        shown.contains("src 198.18.209.1/32"),
        "the machine's own policy stays: {shown}"
    );
    assert!(!ns.ip(&["link"]).unwrap().contains("t_msec0"));
    let _ = c.bye().await;
    let _ = child.wait().await;
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log).await;
    }
    assert!(!log.contains(&KEY[2..]), "a key in the agent's log");
    assert!(
        !log.contains("5ec2e75ec2e75ec2e75e"),
        "a key in the agent's log"
    );
}
