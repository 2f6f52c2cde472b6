//! End-to-end tests of the Podman provisioner against the real API service
//! (`.ci/podman-setup.sh` starts it, `container_files/build-images.sh` builds `lnst-agent`).
//! Without the service or the image they skip, unless `CI` is set: then they fail.

use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use bollard::Docker;
use lnst_runner::provision::podman::{
    cleanup_leftovers, OwnerInfo, PodmanError, PodmanOptions, PodmanProvisioner, LABEL_RUN,
};
use lnst_runner::provision::{AgentEndpoint, Provisioner};
use lnst_runner::requirements::{HostReq, Requirements};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "lnst-agent";

mod common;
use common::require;

fn uri() -> String {
    std::env::var("PODMAN_URI").unwrap_or_else(|_| "unix:///run/podman/podman.sock".into())
}

fn socket_path() -> String {
    let u = uri();
    let p = u.trim_start_matches("unix:").trim_start_matches('/');
    format!("/{p}")
}

async fn docker() -> Option<Docker> {
    let path = socket_path();
    if !std::path::Path::new(&path).exists() {
        return None;
    }
    let d = Docker::connect_with_unix(&path, 60, bollard::API_DEFAULT_VERSION).ok()?;
    let d = d.negotiate_version().await.ok()?;
    d.ping().await.ok()?;
    Some(d)
}

/// The API answers and the agent image exists (or the test is skipped / fails in CI).
async fn engine_ready() -> Option<Docker> {
    let d = docker().await;
    if !require(
        d.is_some(),
        &format!(
            "Podman API not answering at {} (run .ci/podman-setup.sh)",
            uri()
        ),
    ) {
        return None;
    }
    let d = d?;
    let has_image = d.inspect_image(IMAGE).await.is_ok();
    if !require(
        has_image,
        "image lnst-agent missing (run container_files/build-images.sh)",
    ) {
        return None;
    }
    Some(d)
}

fn run_id(tag: &str) -> String {
    format!("t{}-{tag}-{}", std::process::id(), rand::random::<u32>())
}

fn label_filter(run: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run}")])])
}

async fn list_run(d: &Docker, run: &str) -> (Vec<String>, Vec<String>) {
    let cs = d
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(run)),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let ns = d
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(run)),
        }))
        .await
        .expect("list networks");
    let mut c: Vec<String> = cs
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let mut n: Vec<String> = ns.into_iter().filter_map(|n| n.name).collect();
    c.sort();
    n.sort();
    (c, n)
}

/// Removes everything labelled with a run id when dropped (also when the test panics).
struct RunGuard(Vec<String>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let runs = std::mem::take(&mut self.0);
        // A fresh runtime on another thread: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Some(d) = docker().await else { return };
                for run in &runs {
                    let (cs, ns) = list_run(&d, run).await;
                    for c in cs {
                        let _ = d
                            .remove_container(
                                &c,
                                Some(RemoveContainerOptions {
                                    force: true,
                                    ..Default::default()
                                }),
                            )
                            .await;
                    }
                    for n in ns {
                        let _ = d.remove_network(&n).await;
                    }
                }
            });
        })
        .join();
    }
}

fn reqs(hosts: &[(&str, &[(&str, &str)])]) -> Requirements {
    let mut r = Requirements::default();
    for (h, ifs) in hosts {
        let mut hr = HostReq::default();
        for (id, label) in *ifs {
            hr = hr.with_interface(id, label, BTreeMap::new());
        }
        r.hosts.insert(h.to_string(), hr);
    }
    r
}

fn opts(run: &str, agent_cmd: &[&str]) -> PodmanOptions {
    let mut o = PodmanOptions::new(uri(), IMAGE, run);
    o.agent_cmd = agent_cmd.iter().map(|s| s.to_string()).collect();
    o
}

#[tokio::test]
async fn preflight_wrong_socket_is_one_clear_line() {
    let o = PodmanOptions::new("unix:///nonexistent/lnst/podman.sock", IMAGE, "r1");
    let p = PodmanProvisioner::connect(o).expect("options are valid");
    let err = p.preflight().await.expect_err("no such socket");
    assert!(matches!(err, PodmanError::SocketMissing { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "PODMAN_URI unix:///nonexistent/lnst/podman.sock: socket does not exist — start the API \
         with 'podman system service --time=0 unix:///nonexistent/lnst/podman.sock'"
    );
    // A closed TCP port: the engine does not answer.
    let o = PodmanOptions::new("tcp://127.0.0.1:1", IMAGE, "r1");
    let err = PodmanProvisioner::connect(o)
        .unwrap()
        .preflight()
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, PodmanError::NotAnswering { .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'));
}

#[tokio::test]
async fn preflight_detects_engine_and_missing_image() {
    let Some(_) = engine_ready().await else {
        return;
    };
    let p = PodmanProvisioner::connect(opts("pf", &["cat"])).unwrap();
    let info = p.preflight().await.expect("engine and image are there");
    assert_eq!(
        info.kind,
        lnst_runner::provision::podman::EngineKind::Podman
    );
    assert!(!info.version.is_empty() && !info.api_version.is_empty());
    assert!(
        ["netavark", "cni"].contains(&info.network_backend.as_str()),
        "{info:?}"
    );

    let mut o = opts("pf", &["cat"]);
    o.image = "lnst-no-such-image-4711".into();
    let err = PodmanProvisioner::connect(o)
        .unwrap()
        .preflight()
        .await
        .expect_err("image does not exist");
    assert_eq!(
        err.to_string(),
        "image 'lnst-no-such-image-4711' not found in the engine — build it with \
         container_files/build-images.sh"
    );
}

/// The interface name inside `container` whose MAC is `mac`.
async fn ifname_by_mac(p: &PodmanProvisioner, container: &str, mac: &str) -> String {
    let out = p
        .exec(container, &["ip", "-o", "link", "show"])
        .await
        .expect("ip link");
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    for line in out.stdout.lines() {
        if line.contains(&format!("link/ether {mac} ")) {
            // "3: eth0@if12: <...> ..."
            let name = line.split(':').nth(1).unwrap().trim();
            return name.split('@').next().unwrap().to_string();
        }
    }
    panic!("no interface with MAC {mac} in {container}: {}", out.stdout);
}

async fn ok_exec(p: &PodmanProvisioner, container: &str, cmd: &[&str]) -> String {
    let out = p.exec(container, cmd).await.expect("exec");
    assert_eq!(out.exit_code, Some(0), "{cmd:?} in {container}: {out:?}");
    out.stdout
}

async fn echo_roundtrip(ep: &mut AgentEndpoint) {
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let w = &mut ep.transport.writer;
    let r = &mut ep.transport.reader;
    let (wr, rd) = tokio::join!(
        async {
            w.write_all(&payload).await?;
            w.flush().await
        },
        async {
            let mut back = vec![0u8; payload.len()];
            tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut back))
                .await
                .expect("echo timed out")
                .map(|_| back)
        }
    );
    wr.expect("write to exec stdin");
    assert!(rd.expect("read exec stdout") == payload, "bytes changed");
}

#[tokio::test]
async fn provision_two_hosts_on_one_segment_and_teardown() {
    let Some(d) = engine_ready().await else {
        return;
    };
    let run = run_id("l2");
    let _guard = RunGuard(vec![run.clone()]);
    let mut p = PodmanProvisioner::connect(opts(&run, &["cat"])).unwrap();
    p.preflight().await.unwrap();
    let r = reqs(&[
        ("host1", &[("eth0", "net1")]),
        ("host2", &[("eth0", "net1")]),
    ]);
    let mut eps = p.provision(&r).await.expect("provision");
    assert_eq!(
        eps.iter().map(|e| e.host_id.as_str()).collect::<Vec<_>>(),
        ["host1", "host2"]
    );

    // Names and labels carry the run id; one network for the label.
    let (cs, ns) = list_run(&d, &run).await;
    assert_eq!(
        cs,
        [format!("lnst-{run}-host1"), format!("lnst-{run}-host2")]
    );
    assert_eq!(ns, [format!("lnst-{run}-net1")]);

    // The exec transport carries arbitrary bytes both ways unchanged (`cat` echoes).
    for ep in eps.iter_mut() {
        echo_roundtrip(ep).await;
    }

    // MACs match what the engine reports; the NIC has no engine-assigned IPv4 address.
    let mut ifnames = Vec::new();
    for ep in &eps {
        let b = ep.interfaces.get("eth0").expect("eth0 bound");
        let inspect = d.inspect_container(&ep.target, None).await.unwrap();
        let mac = inspect
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|n| n.get(&format!("lnst-{run}-net1")).cloned())
            .and_then(|e| e.mac_address)
            .expect("engine reports a MAC");
        assert_eq!(b.hwaddr, mac.to_lowercase());
        let ifname = ifname_by_mac(&p, &ep.target, &b.hwaddr).await;
        let addrs = ok_exec(
            &p,
            &ep.target,
            &["ip", "-o", "-4", "addr", "show", "dev", &ifname],
        )
        .await;
        assert!(addrs.trim().is_empty(), "engine gave an address: {addrs}");
        // The agent may set net.* sysctls of its own namespace (/proc/sys is unmasked).
        let knob = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
        ok_exec(&p, &ep.target, &["sh", "-c", &format!("echo 1 > {knob}")]).await;
        assert_eq!(ok_exec(&p, &ep.target, &["cat", &knob]).await.trim(), "1");
        ifnames.push(ifname);
    }

    // Same L2 segment: addresses we pick, then ping.
    for (i, (ep, ifname)) in eps.iter().zip(&ifnames).enumerate() {
        let addr = format!("198.18.40.{}/24", i + 1);
        ok_exec(&p, &ep.target, &["ip", "addr", "add", &addr, "dev", ifname]).await;
        ok_exec(&p, &ep.target, &["ip", "link", "set", ifname, "up"]).await;
    }
    let ping = p
        .exec(
            &eps[0].target,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.40.2"],
        )
        .await
        .unwrap();
    assert_eq!(ping.exit_code, Some(0), "ping failed: {ping:?}");

    drop(eps);
    p.teardown().await.expect("teardown");
    assert_eq!(list_run(&d, &run).await, (vec![], vec![]));
    p.teardown().await.expect("second teardown is a no-op");
}

#[tokio::test]
async fn second_nic_on_one_label_is_a_veth_on_the_same_segment() {
    let Some(d) = engine_ready().await else {
        return;
    };
    let run = run_id("veth");
    let _guard = RunGuard(vec![run.clone()]);
    let mut p = PodmanProvisioner::connect(opts(&run, &["cat"])).unwrap();
    let r = reqs(&[
        ("host1", &[("eth0", "net1"), ("eth1", "net1")]),
        ("host2", &[("eth0", "net1")]),
    ]);
    let eps = p.provision(&r).await.expect("provision with a veth");
    let (_, ns) = list_run(&d, &run).await;
    assert_eq!(ns, [format!("lnst-{run}-net1")], "one segment only");
    let h1 = &eps[0];
    let b0 = h1.interfaces.get("eth0").unwrap();
    let b1 = h1.interfaces.get("eth1").unwrap();
    assert_ne!(b0.hwaddr, b1.hwaddr);
    let veth_name = b1.ifname.clone().expect("veth name is known");
    assert_eq!(ifname_by_mac(&p, &h1.target, &b1.hwaddr).await, veth_name);

    let h2 = &eps[1];
    let if2 = ifname_by_mac(&p, &h2.target, &h2.interfaces["eth0"].hwaddr).await;
    ok_exec(
        &p,
        &h1.target,
        &["ip", "addr", "add", "198.18.41.3/24", "dev", &veth_name],
    )
    .await;
    ok_exec(&p, &h1.target, &["ip", "link", "set", &veth_name, "up"]).await;
    ok_exec(
        &p,
        &h2.target,
        &["ip", "addr", "add", "198.18.41.2/24", "dev", &if2],
    )
    .await;
    ok_exec(&p, &h2.target, &["ip", "link", "set", &if2, "up"]).await;
    let ping = p
        .exec(
            &h1.target,
            &[
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "-I",
                &veth_name,
                "198.18.41.2",
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        ping.exit_code,
        Some(0),
        "ping over the veth failed: {ping:?}"
    );

    // The network's bridge in this namespace (netavark's podmanN): it must not outlive the
    // network, though this run's veth was one of its ports.
    let bridge = std::process::Command::new("podman")
        .args(["network", "inspect", "--format", "{{.NetworkInterface}}"])
        .arg(format!("lnst-{run}-net1"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(!bridge.is_empty(), "no bridge name for lnst-{run}-net1");
    assert!(std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .exists());

    drop(eps);
    p.teardown().await.expect("teardown");
    assert_eq!(list_run(&d, &run).await, (vec![], vec![]));
    assert_eq!(p.resources(), (vec![], vec![]));
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "bridge {bridge} left behind"
    );
}

#[tokio::test]
async fn cleanup_removes_dead_runs_only() {
    let Some(d) = engine_ready().await else {
        return;
    };
    let dead_run = run_id("dead");
    let live_run = run_id("live");
    let _guard = RunGuard(vec![dead_run.clone(), live_run.clone()]);
    let r = reqs(&[("host1", &[("eth0", "net1")])]);

    // A "killed" run: its owner label names our pid with another start time (pid reused).
    let mut dead_owner = OwnerInfo::current();
    dead_owner.start_time = dead_owner.start_time.wrapping_add(12345);
    dead_owner.container = None;
    let mut dead = PodmanProvisioner::connect(opts(&dead_run, &["cat"]))
        .unwrap()
        .with_owner(dead_owner);
    let eps = dead.provision(&r).await.expect("provision dead run");
    drop(eps);
    drop(dead); // forgotten without teardown

    let mut live = PodmanProvisioner::connect(opts(&live_run, &["cat"])).unwrap();
    let eps = live.provision(&r).await.expect("provision live run");

    let removed = cleanup_leftovers(&uri()).await.expect("cleanup");
    assert!(
        removed.contains(&format!("lnst-{dead_run}-host1"))
            && removed.contains(&format!("lnst-{dead_run}-net1")),
        "{removed:?}"
    );
    assert!(
        !removed.iter().any(|n| n.contains(&live_run)),
        "{removed:?}"
    );
    assert_eq!(list_run(&d, &dead_run).await, (vec![], vec![]));
    let (cs, ns) = list_run(&d, &live_run).await;
    assert_eq!((cs.len(), ns.len()), (1, 1));

    drop(eps);
    live.teardown().await.expect("teardown live run");
    assert_eq!(list_run(&d, &live_run).await, (vec![], vec![]));
}
