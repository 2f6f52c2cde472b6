//! The real agent creating links, routes, neighbours and namespaces inside a test network
//! namespace, and putting everything back: after an abrupt end of the connection the
//! namespace's `ip -d link`, `ip addr`, `ip route`, `ip neigh`, sysctls and `ip netns` are
//! what they were before. Kernel features this kernel lacks fail with `Unsupported` naming
//! them (checked against what `ip link add` says on the same kernel).

mod common;

use common::{have, is_root, require, sh, Testbed};
use lnst_runner::protocol::{
    BondMode, BondOptions, BridgeOptions, BridgeVlan, ErrorKind, IperfProto, JobSpec, LinkSpec,
    MacvlanMode, NeighbourSpec, NeighbourState, Op, RouteKind, RouteSpec, TeamOptions, TeamRunner,
    VlanProtocol,
};
use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions, SessionError};
use std::process::Command;
use std::time::{Duration, Instant};

fn prerequisites() -> bool {
    require(is_root(), "needs root for network namespaces")
        && require(have("ip"), "needs iproute2 (ip)")
        && require(have("bridge"), "needs iproute2 (bridge)")
        && require(have("ping"), "needs ping")
        && require(have("iperf3"), "needs iperf3")
        && require(have("ethtool"), "needs ethtool")
}

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(20),
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(10),
    }
}

fn ok<T>(r: Result<T, SessionError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The kind and message of a remote error.
fn remote(r: Result<impl std::fmt::Debug, SessionError>) -> (ErrorKind, String) {
    match r {
        Err(SessionError::Remote { kind, message, .. }) => (kind, message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn ip(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    sh(&v)
}

fn ip_ok(ns: &str, args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

fn sorted_lines(s: &str) -> String {
    let mut v: Vec<&str> = s
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort_unstable();
    v.join("\n")
}

fn sysctl(ns: &str, key: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/proc/sys/{}", key.replace('.', "/")))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything the agent may touch in `ns`, as comparable text.
fn state(ns: &str) -> String {
    let mut s = String::new();
    for (title, args) in [
        ("link", &["-d", "-o", "link", "show"][..]),
        ("addr", &["-o", "addr", "show"][..]),
        ("route4", &["-4", "route", "show", "table", "all"][..]),
        ("route6", &["-6", "route", "show", "table", "all"][..]),
        ("neigh", &["neigh", "show"][..]),
    ] {
        s.push_str(&format!("== {title}\n{}\n", sorted_lines(&ip(ns, args))));
    }
    for key in [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.p0.rp_filter",
    ] {
        s.push_str(&format!("{key} = {}\n", sysctl(ns, key)));
    }
    // Named namespaces this test or the agent could have made (other tests add and remove
    // their own concurrently). The agent's namespaces are anonymous: none may appear.
    let named: Vec<String> = sh(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n == ns || ["ns1", "nsA", "ns9"].contains(n))
        .map(String::from)
        .collect();
    s.push_str(&format!("== netns\n{}\n", sorted_lines(&named.join("\n"))));
    s
}

/// Wait until no address of `ns` is tentative (DAD of restored IPv6 addresses).
fn settle_dad(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ip(ns, &["addr"]).contains("tentative") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn diff(a: &str, b: &str) -> String {
    let al: Vec<&str> = a.lines().collect();
    let bl: Vec<&str> = b.lines().collect();
    let mut out = String::new();
    for l in &al {
        if !bl.contains(l) {
            out.push_str(&format!("- {l}\n"));
        }
    }
    for l in &bl {
        if !al.contains(l) {
            out.push_str(&format!("+ {l}\n"));
        }
    }
    out
}

/// A test namespace with "pre-existing" links (veth pairs standing in for a pool machine's
/// NICs): p0, p1, p2 up with addresses; their peers p0x, p1x, p2x up.
fn testbed(tag: &str) -> (Testbed, String) {
    let ns = format!("lnsttest-links-{tag}-{}", std::process::id());
    let mut tb = Testbed::default();
    tb.add_ns(&ns);
    for (i, p) in ["p0", "p1", "p2"].iter().enumerate() {
        let peer = format!("{p}x");
        ip(
            &ns,
            &["link", "add", p, "type", "veth", "peer", "name", &peer],
        );
        ip(&ns, &["link", "set", &peer, "up"]);
        ip(&ns, &["link", "set", p, "up"]);
        ip(
            &ns,
            &["addr", "add", &format!("198.18.{}.1/24", 20 + i), "dev", p],
        );
        ip(
            &ns,
            &["addr", "add", &format!("fd00:{}::1/64", 20 + i), "dev", p],
        );
    }
    settle_dad(&ns);
    (tb, ns)
}

/// A TCP agent inside `ns` on 127.0.0.1; killed on drop.
struct TcpAgent {
    child: std::process::Child,
    ns: String,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Drop for TcpAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TcpAgent {
    fn start(ns: &str) -> TcpAgent {
        TcpAgent::start_with(ns, &[])
    }

    /// The agent started through `wrapper` (a command that execs its arguments).
    fn start_with(ns: &str, wrapper: &[&str]) -> TcpAgent {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(wrapper)
            .arg(env!("CARGO_BIN_EXE_lnst-agent"))
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut a = TcpAgent {
            child,
            ns: ns.to_string(),
            port: 0,
            log,
        };
        for _ in 0..400 {
            let text = a.log_text();
            if let Some(rest) = text.split("listening on 127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                a.port = digits.parse().unwrap_or(0);
                if a.port != 0 {
                    return a;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("agent did not report its port: {}", a.log_text())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A TCP connection made from inside the namespace (the socket keeps its namespace).
    fn socket(&self) -> std::net::TcpStream {
        let path = format!("/run/netns/{}", self.ns);
        let port = self.port;
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Connect, retrying while the agent is still busy cleaning up after the last controller.
    async fn connect(&self) -> AgentClient {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.socket();
            s.set_nonblocking(true).unwrap();
            let s = tokio::net::TcpStream::from_std(s).unwrap();
            let (r, w) = s.into_split();
            let t = Transport {
                reader: Box::new(r),
                writer: Box::new(w),
            };
            match AgentClient::connect("host1", t, None, opts()).await {
                Ok(c) => return c,
                Err(SessionError::Busy { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("connect: {e}\n{}", self.log_text()),
            }
        }
    }

    /// Network namespaces the agent process holds (threads and open descriptors).
    /// [`TcpAgent::held_namespaces_now`] once it has `n` entries (threads exit shortly after
    /// their namespace is deleted), at most 3 s.
    fn held_namespaces(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let v = self.held_namespaces_now();
            if v.len() == n || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn held_namespaces_now(&self) -> Vec<String> {
        // `ip netns exec` execs the agent: the child pid is the agent.
        let pid = self.child.id();
        let mut v = Vec::new();
        for dir in ["task", "fd"] {
            for e in std::fs::read_dir(format!("/proc/{pid}/{dir}"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = if dir == "task" {
                    e.path().join("ns/net")
                } else {
                    e.path()
                };
                if let Ok(t) = std::fs::read_link(&p) {
                    let t = t.to_string_lossy().into_owned();
                    if t.starts_with("net:") && !v.contains(&t) {
                        v.push(t);
                    }
                }
            }
        }
        v.sort();
        v
    }
}

fn route(dst: &str) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        via: None,
        dev: None,
        src: None,
        metric: None,
        table: None,
        kind: RouteKind::Unicast,
        onlink: false,
        ipv6: false,
        encap: None,
    }
}

fn neigh(ifname: &str, ip: &str, mac: &str) -> NeighbourSpec {
    NeighbourSpec {
        ifname: ifname.into(),
        ip: ip.into(),
        lladdr: Some(mac.into()),
        state: NeighbourState::Permanent,
    }
}

fn has_line(text: &str, words: &[&str]) -> bool {
    text.lines().any(|l| words.iter().all(|w| l.contains(w)))
}

/// Bridge, veth, macvlan, an agent namespace with a moved pre-existing link, routes,
/// neighbours, sysctls, jobs in the namespace; then the controller vanishes without Bye. The
/// agent (still running) puts the namespace back exactly, and holds no namespace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_drop_restores_everything() {
    if !prerequisites() {
        return;
    }
    let (_tb, ns) = testbed("drop");
    let agent = TcpAgent::start(&ns);
    let idle_ns = agent.held_namespaces(1);
    assert_eq!(idle_ns.len(), 1, "{idle_ns:?}");
    let before = state(&ns);

    let c = agent.connect().await;
    // Like the runner: a snapshot of the matched device the recipe sets down. p1 (moved into
    // a namespace) and p2 (a macvlan's parent, loses an address) are left to the journal.
    ok(c.start_recipe(&["p0".to_string()]).await, "start recipe");
    // Bridge with a pre-existing port (p0, down first like upstream) and a created veth end.
    let br = ok(
        c.create_link(
            "br0",
            LinkSpec::Bridge(BridgeOptions {
                stp: Some(false),
                ..BridgeOptions::default()
            }),
        )
        .await,
        "bridge",
    );
    assert_eq!(br.len(), 1);
    assert_eq!(br[0].kind.as_deref(), Some("bridge"));
    assert!(!br[0].up, "created down");
    ok(c.set_link("p0", false).await, "p0 down");
    ok(c.enslave("p0", "br0").await, "enslave p0");
    let pair = ok(
        c.create_link(
            "va",
            LinkSpec::Veth {
                peer: "vb".into(),
                peer_netns: None,
            },
        )
        .await,
        "veth",
    );
    let mut names: Vec<&str> = pair.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["va", "vb"]);
    ok(c.enslave("va", "br0").await, "enslave va");
    ok(c.set_link("va", true).await, "va up");
    ok(c.set_link("br0", true).await, "br0 up");
    ok(c.add_address("br0", "198.18.23.1/24").await, "br0 addr");
    // macvlan on a pre-existing link.
    ok(
        c.create_link_with(
            "mv0",
            LinkSpec::Macvlan {
                parent: "p2".into(),
                mode: MacvlanMode::Bridge,
            },
            None,
            Some(1400),
            true,
        )
        .await,
        "macvlan",
    );
    ok(c.add_address("mv0", "198.18.22.5/24").await, "mv0 addr");

    // An agent namespace: the created veth end and a pre-existing link (p1) move in.
    ok(c.create_netns("ns1").await, "netns");
    let ns1 = c.in_netns("ns1");
    ok(c.move_link("vb", Some("ns1")).await, "move vb");
    ok(c.move_link("p1", Some("ns1")).await, "move p1");
    let inside = ok(ns1.list_interfaces().await, "list in ns1");
    let mut inside_names: Vec<&str> = inside.iter().map(|i| i.name.as_str()).collect();
    inside_names.sort_unstable();
    assert_eq!(inside_names, ["lo", "p1", "vb"]);
    assert!(
        !ip(&ns, &["link"]).contains(" p1@"),
        "p1 left the namespace"
    );
    ok(ns1.add_address("vb", "198.18.23.2/24").await, "vb addr");
    ok(ns1.set_link("vb", true).await, "vb up");
    ok(
        ns1.add_address("p1", "198.18.24.1/24").await,
        "p1 addr in ns1",
    );
    ok(ns1.set_link("p1", true).await, "p1 up in ns1");
    ok(
        ns1.add_route(RouteSpec {
            via: Some("198.18.23.1".into()),
            ..route("default")
        })
        .await,
        "default route in ns1",
    );
    ok(
        ns1.add_neighbour(neigh("vb", "198.18.23.9", "02:00:00:00:23:09"))
            .await,
        "neighbour in ns1",
    );
    // A new namespace takes its IPv4 settings from the initial namespace (devconf inheritance):
    // the old value is the root namespace's, which Podman's networks may have set to 1.
    let root_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(
        ok(
            ns1.sysctl_write("net.ipv4.ip_forward", "1").await,
            "ns1 fwd"
        ),
        root_fwd
    );
    // Routes, neighbours and sysctls in the agent's namespace.
    ok(
        c.add_route(RouteSpec {
            via: Some("198.18.23.2".into()),
            ..route("198.18.30.0/24")
        })
        .await,
        "route via ns1",
    );
    ok(
        c.add_route(RouteSpec {
            dev: Some("br0".into()),
            metric: Some(77),
            ..route("fd00:30::/64")
        })
        .await,
        "v6 route",
    );
    ok(
        c.add_route(RouteSpec {
            kind: RouteKind::Blackhole,
            table: Some(1234),
            ..route("198.18.31.0/24")
        })
        .await,
        "blackhole in table 1234",
    );
    ok(
        c.add_neighbour(neigh("br0", "198.18.23.7", "02:00:00:00:23:07"))
            .await,
        "neighbour",
    );
    ok(
        c.add_neighbour(neigh("br0", "fd00:23::7", "02:00:00:00:23:17"))
            .await,
        "v6 neighbour",
    );
    ok(c.sysctl_write("net.ipv4.ip_forward", "1").await, "fwd");
    ok(
        c.sysctl_write("net.ipv4.conf.br0.rp_filter", "2").await,
        "rp_filter of a created link",
    );
    ok(
        c.sysctl_write("net.ipv4.conf.p0.rp_filter", "1").await,
        "rp_filter p0",
    );
    // A pre-existing address removed by the recipe comes back too.
    ok(c.del_address("p2", "198.18.22.1/24").await, "del p2 addr");

    // It is all there.
    let links = ip(&ns, &["-d", "-o", "link"]);
    assert!(has_line(&links, &["p0", "master br0"]), "{links}");
    assert!(has_line(&links, &["va@", "master br0"]), "{links}");
    assert!(
        has_line(&links, &["mv0@p2", "mtu 1400", "macvlan mode bridge"]),
        "{links}"
    );
    assert!(
        has_line(&links, &["br0:", "bridge", "stp_state 0"]),
        "{links}"
    );
    let r4 = ip(&ns, &["-4", "route", "show", "table", "all"]);
    assert!(
        has_line(
            &r4,
            &["198.18.30.0/24 via 198.18.23.2 dev br0", "proto static"]
        ),
        "{r4}"
    );
    assert!(
        has_line(&r4, &["blackhole 198.18.31.0/24", "table 1234"]),
        "{r4}"
    );
    let r6 = ip(&ns, &["-6", "route"]);
    assert!(
        has_line(&r6, &["fd00:30::/64 dev br0", "metric 77"]),
        "{r6}"
    );
    let n = ip(&ns, &["neigh"]);
    assert!(
        has_line(
            &n,
            &["198.18.23.7 dev br0 lladdr 02:00:00:00:23:07 PERMANENT"]
        ),
        "{n}"
    );
    assert!(
        has_line(
            &n,
            &["fd00:23::7 dev br0 lladdr 02:00:00:00:23:17 PERMANENT"]
        ),
        "{n}"
    );
    assert!(!ip(&ns, &["addr", "show", "p2"]).contains("198.18.22.1/24"));
    assert_eq!(sysctl(&ns, "net.ipv4.ip_forward"), "1");
    assert_eq!(agent.held_namespaces(2).len(), 2, "agent namespace + ns1");

    // Traffic: ns1 → bridge address (a ping job inside the namespace), and an iperf3 server
    // inside the namespace reached from the agent's namespace through bridge and veth.
    let id = ok(
        ns1.start_job(JobSpec::Ping {
            dst: "198.18.23.1".into(),
            src: None,
            count: 2,
            interval_s: 0.2,
            size: None,
            ipv6: false,
        })
        .await,
        "ping job in ns1",
    );
    let r = ok(ns1.wait_job(id, Duration::from_secs(20)).await, "ping");
    assert!(r.passed, "ping from ns1: {}{}", r.stdout, r.stderr);
    let srv = ok(
        ns1.start_job(JobSpec::IperfServer {
            bind: "198.18.23.2".into(),
            port: 12601,
            cpus: None,
            oneoff: true,
        })
        .await,
        "iperf3 server in ns1",
    );
    let cli = ok(
        c.start_job(JobSpec::IperfClient {
            server: "198.18.23.2".into(),
            port: 12601,
            cport: None,
            duration_s: 1,
            proto: IperfProto::Tcp,
            blksize: None,
            parallel: None,
            cpus: None,
        })
        .await,
        "iperf3 client",
    );
    let cr = ok(c.wait_job(cli, Duration::from_secs(30)).await, "client");
    assert!(cr.passed, "iperf3 client: {}", cr.stderr);
    let sr = ok(ns1.wait_job(srv, Duration::from_secs(10)).await, "server");
    assert!(sr.passed, "iperf3 server in ns1: {}", sr.stderr);
    // A job left running inside the namespace dies with the session.
    let long = ok(
        ns1.start_job(JobSpec::Ping {
            dst: "198.18.23.1".into(),
            src: None,
            count: 1000,
            interval_s: 0.2,
            size: None,
            ipv6: false,
        })
        .await,
        "long ping",
    );
    assert!(long > 0);

    // The controller vanishes (no Bye, no EndRecipe).
    drop(ns1);
    drop(c);
    // The agent serves the next controller only after its cleanup.
    let c2 = agent.connect().await;
    settle_dad(&ns);
    let after = state(&ns);
    assert!(
        before == after,
        "state differs after the drop:\n{}",
        diff(&before, &after)
    );
    assert_eq!(agent.held_namespaces(1), idle_ns, "ns1 is gone");
    assert!(
        Command::new("pgrep")
            .args(["-f", "198.18.23.1 -c 1000"])
            .output()
            .map(|o| o.stdout.is_empty())
            .unwrap_or(true),
        "the ping job inside ns1 was killed"
    );
    ok(c2.bye().await, "bye");
}

/// Kinds this kernel lacks fail with Unsupported naming the feature; kinds it has work. The
/// truth comes from `ip link add` on the same kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kernel_features_are_named() {
    if !prerequisites() {
        return;
    }
    let (_tb, ns) = testbed("feat");
    let agent = TcpAgent::start(&ns);
    let before = state(&ns);
    let c = agent.connect().await;
    ok(c.start_recipe(&["p1".to_string()]).await, "start recipe");

    let team = TeamOptions {
        runner: TeamRunner::Activebackup,
        link_watch: None,
        tx_hash: None,
        hwaddr_policy: None,
        active: None,
        fast_rate: None,
        min_ports: None,
    };
    let cases: Vec<(LinkSpec, Vec<&str>, &str)> = vec![
        (
            LinkSpec::Vlan {
                parent: "p0".into(),
                id: 10,
                protocol: VlanProtocol::Dot1Q,
            },
            vec!["link", "p0", "type", "vlan", "id", "10"],
            "kernel lacks 802.1Q VLAN support (module 8021q",
        ),
        (
            LinkSpec::Bond(Box::new(BondOptions {
                mode: Some(BondMode::ActiveBackup),
                miimon: Some(100),
                ..BondOptions::default()
            })),
            vec!["type", "bond", "mode", "active-backup", "miimon", "100"],
            "kernel lacks bonding support (module bonding",
        ),
        (
            LinkSpec::Team(team),
            vec!["type", "team"],
            "kernel lacks team support (module team",
        ),
        (
            LinkSpec::Bridge(BridgeOptions {
                vlan_filtering: Some(true),
                ..BridgeOptions::default()
            }),
            vec!["type", "bridge", "vlan_filtering", "1"],
            "kernel lacks bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING",
        ),
    ];
    let mut lacking = Vec::new();
    for (spec, ip_args, expect) in cases {
        let kind = spec.kind_name();
        let mut args = vec!["link", "add"];
        let probe = format!("lnstprobe{}", lacking.len());
        if ip_args[0] == "link" {
            args.extend_from_slice(&ip_args[..2]);
            args.extend_from_slice(&["name", &probe]);
            args.extend_from_slice(&ip_args[2..]);
        } else {
            args.push(&probe);
            args.extend_from_slice(&ip_args);
        }
        let truth = ip_ok(&ns, &args);
        let _ = ip_ok(&ns, &["link", "del", &probe]);
        let r = c.create_link("x0", spec).await;
        match truth {
            Err(why) => {
                let (k, m) = remote(r);
                assert_eq!(k, ErrorKind::Unsupported, "{kind}: {m} (ip said: {why})");
                assert!(m.starts_with(expect), "{kind}: {m}");
                lacking.push(kind);
            }
            Ok(()) => {
                if kind == "team" && !have("teamd") {
                    // teamd is part of the CI package set; without it the error says so.
                    let (_, m) = remote(r);
                    assert!(m.contains("libteam-utils"), "{m}");
                } else {
                    ok(r, kind);
                    ok(c.delete_link("x0").await, "delete");
                }
            }
        }
    }
    eprintln!("this kernel lacks: {lacking:?}");

    // Bridge VLAN entries on a port of a plain bridge.
    ok(
        c.create_link("br9", LinkSpec::Bridge(BridgeOptions::default()))
            .await,
        "bridge",
    );
    ok(c.set_link("p1", false).await, "p1 down");
    ok(c.enslave("p1", "br9").await, "enslave");
    let vlan = BridgeVlan {
        ifname: "p1".into(),
        vid: 10,
        pvid: false,
        untagged: false,
        bridge_self: false,
    };
    let r = c.bridge_vlan_add(vlan.clone()).await;
    let probe = Command::new("bridge")
        .args(["-n", &ns, "vlan", "add", "dev", "p1", "vid", "11"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if probe {
        ok(r, "bridge vlan add");
        let shown = sh(&["bridge", "-n", &ns, "vlan", "show", "dev", "p1"]);
        assert!(shown.contains("10"), "{shown}");
        let _ = Command::new("bridge")
            .args(["-n", &ns, "vlan", "del", "dev", "p1", "vid", "11"])
            .output();
    } else {
        let (k, m) = remote(r);
        assert_eq!(k, ErrorKind::Unsupported, "{m}");
        assert!(m.contains("bridge VLAN filtering"), "{m}");
    }
    ok(c.end_recipe().await, "end recipe");
    settle_dad(&ns);
    let after = state(&ns);
    assert!(before == after, "{}", diff(&before, &after));
    ok(c.bye().await, "bye");
}

/// Bad input is refused with one clear message; only links made by the session can be
/// deleted; DeleteNetns mid-session brings a pre-existing link back and deletes created ones;
/// EndRecipe restores and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_ownership_and_explicit_teardown() {
    if !prerequisites() {
        return;
    }
    let (_tb, ns) = testbed("own");
    let agent = TcpAgent::start(&ns);
    let before = state(&ns);
    let c = agent.connect().await;
    ok(c.start_recipe(&["p0".to_string()]).await, "start recipe");

    let dummy = || LinkSpec::Bridge(BridgeOptions::default());
    for (name, why) in [
        ("a/b", "invalid interface name"),
        ("-x", "no leading '-'"),
        ("1234567890123456", "invalid interface name"),
        ("..", "invalid interface name"),
        ("a b", "invalid interface name"),
    ] {
        let (k, m) = remote(c.create_link(name, dummy()).await);
        assert_eq!(k, ErrorKind::BadRequest, "{name}: {m}");
        assert!(m.contains(why), "{name}: {m}");
    }
    let (k, m) = remote(
        c.create_link(
            "v0",
            LinkSpec::Vlan {
                parent: "p0".into(),
                id: 4095,
                protocol: VlanProtocol::Dot1Q,
            },
        )
        .await,
    );
    assert_eq!(k, ErrorKind::BadRequest);
    assert!(m.contains("VLAN id 4095 out of range 1–4094"), "{m}");
    let (k, m) = remote(c.create_link("p0", dummy()).await);
    assert_eq!(k, ErrorKind::Failed);
    assert!(m.contains("p0 already exists"), "{m}");
    let (k, m) = remote(c.delete_link("p0").await);
    assert_eq!(k, ErrorKind::NotAllowed, "{m}");
    assert!(m.contains("not created by this session"), "{m}");
    let (k, m) = remote(c.create_netns("../x").await);
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    let (k, _) = remote(c.in_netns("nope").list_interfaces().await);
    assert_eq!(k, ErrorKind::NotFound);
    let (k, m) = remote(c.in_netns("nope").create_netns("x").await);
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    let nested = Op::InNetns {
        netns: "a".into(),
        inner: Box::new(Op::InNetns {
            netns: "b".into(),
            inner: Box::new(Op::ListInterfaces),
        }),
    };
    let (k, m) = remote(c.call(nested, Duration::from_secs(10)).await);
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    assert!(m.contains("cannot run inside a namespace"), "{m}");
    let (k, m) = remote(
        c.add_route(RouteSpec {
            via: Some("fd00::1".into()),
            ..route("198.18.40.0/24")
        })
        .await,
    );
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    let (k, m) = remote(
        c.add_neighbour(neigh("p0", "198.18.20.9", "02:00:00:00:00"))
            .await,
    );
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    assert!(m.contains("invalid MAC address"), "{m}");
    let (k, m) = remote(c.del_route(route("198.18.99.0/24")).await);
    assert_eq!(k, ErrorKind::NotFound, "{m}");
    // DelRoute by destination alone, of a route the recipe added (upstream's deconfig form).
    ok(
        c.add_route(RouteSpec {
            via: Some("198.18.20.254".into()),
            ..route("198.18.99.0/24")
        })
        .await,
        "route",
    );
    ok(
        c.del_route(route("198.18.99.0/24")).await,
        "del route by dst",
    );
    assert!(!ip(&ns, &["route"]).contains("198.18.99.0"));

    // Explicit DeleteNetns: p1 comes back with its addresses, the created veth end in the
    // namespace and its peer are deleted.
    ok(c.create_netns("nsA").await, "netns");
    let (k, _) = remote(c.create_netns("nsA").await);
    assert_eq!(k, ErrorKind::Failed);
    ok(
        c.create_link(
            "wa",
            LinkSpec::Veth {
                peer: "wb".into(),
                peer_netns: Some("nsA".into()),
            },
        )
        .await,
        "veth with the peer in nsA",
    );
    assert!(ip(&ns, &["link"]).contains("wa@"));
    let in_a = ok(c.in_netns("nsA").list_interfaces().await, "list");
    assert!(in_a.iter().any(|i| i.name == "wb"), "{in_a:?}");
    ok(c.move_link("p1", Some("nsA")).await, "move p1");
    ok(c.in_netns("nsA").set_mtu("p1", 1300).await, "mtu in nsA");
    ok(c.delete_netns("nsA").await, "delete nsA");
    let links = ip(&ns, &["-o", "link"]);
    assert!(!links.contains("wa@"), "{links}");
    assert!(has_line(&links, &["p1@p1x", "state UP"]), "{links}");
    let a = ip(&ns, &["-o", "addr", "show", "p1"]);
    assert!(
        a.contains("198.18.21.1/24") && a.contains("fd00:21::1/64"),
        "{a}"
    );

    // Deleting a created link is allowed (once).
    ok(c.create_link("brx", dummy()).await, "bridge");
    ok(c.delete_link("brx").await, "delete");
    let (k, _) = remote(c.delete_link("brx").await);
    assert_eq!(k, ErrorKind::NotAllowed);

    // EndRecipe restores; the session then goes on with a fresh journal.
    ok(c.create_link("brz", dummy()).await, "bridge");
    ok(c.set_link("p0", false).await, "p0 down");
    ok(c.enslave("p0", "brz").await, "enslave");
    ok(c.release("p0").await, "release");
    ok(c.enslave("p0", "brz").await, "enslave again");
    ok(c.end_recipe().await, "end recipe");
    settle_dad(&ns);
    let mid = state(&ns);
    assert!(before == mid, "{}", diff(&before, &mid));
    ok(
        c.create_link("brz", dummy()).await,
        "the name is free again",
    );
    ok(c.bye().await, "bye");
    let after = state(&ns);
    assert!(before == after, "{}", diff(&before, &after));
}

/// An agent without CAP_SYS_ADMIN (like a Podman agent) cannot make namespaces, and says so;
/// its other link operations still work and are still undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_need_cap_sys_admin() {
    if !prerequisites() || !require(have("setpriv"), "needs setpriv (util-linux)") {
        return;
    }
    let (_tb, ns) = testbed("caps");
    let agent = TcpAgent::start_with(&ns, &["setpriv", "--bounding-set=-sys_admin", "--"]);
    let before = state(&ns);
    let c = agent.connect().await;
    let (k, m) = remote(c.create_netns("ns9").await);
    assert_eq!(k, ErrorKind::NotAllowed, "{m}");
    assert!(m.contains("CAP_SYS_ADMIN"), "{m}");
    ok(
        c.create_link("br7", LinkSpec::Bridge(BridgeOptions::default()))
            .await,
        "bridge without CAP_SYS_ADMIN",
    );
    assert!(ip(&ns, &["link"]).contains("br7"));
    drop(c);
    let c2 = agent.connect().await;
    let after = state(&ns);
    assert!(before == after, "{}", diff(&before, &after));
    ok(c2.bye().await, "bye");
}
