//! Mapper: requirement hosts/interfaces onto pool machines, label bijection, diagnosis.

use lnst_runner::mapper::{self, MapperError};
use lnst_runner::pool::{Pool, PoolInterface, PoolMachine, Security};
use lnst_runner::requirements::{HostReq, Requirements};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Interface spec: (if id, label, extra params).
type IfSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Machine `id` (hostname 198.18.0.n) with interfaces; MACs derive from n and the position.
fn machine(id: &str, n: u8, params: &[(&str, &str)], ifs: &[IfSpec]) -> PoolMachine {
    let mut p = kv(params);
    p.insert("hostname".into(), format!("198.18.0.{n}"));
    let mut interfaces = BTreeMap::new();
    for (i, (iid, label, extra)) in ifs.iter().enumerate() {
        let mut ip = kv(extra);
        ip.insert("hwaddr".into(), format!("52:54:00:00:{n:02x}:{i:02x}"));
        interfaces.insert(
            iid.to_string(),
            PoolInterface {
                id: iid.to_string(),
                label: label.to_string(),
                params: ip,
            },
        );
    }
    PoolMachine {
        id: id.to_string(),
        params: p,
        interfaces,
        security: Security::None,
        source: PathBuf::from(format!("{id}.xml")),
    }
}

fn pool(machines: Vec<PoolMachine>) -> Pool {
    Pool {
        name: "default".into(),
        machines: machines.into_iter().map(|m| (m.id.clone(), m)).collect(),
    }
}

fn host(ifs: &[(&str, &str)]) -> HostReq {
    ifs.iter().fold(HostReq::default(), |h, (id, label)| {
        h.with_interface(id, label, BTreeMap::new())
    })
}

fn reqs(hosts: Vec<(&str, HostReq)>) -> Requirements {
    Requirements {
        hosts: hosts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Requirements::default()
    }
}

fn two_host_one_label() -> Requirements {
    reqs(vec![
        ("host1", host(&[("eth0", "net1")])),
        ("host2", host(&[("eth0", "net1")])),
    ])
}

#[test]
fn two_hosts_one_label() {
    let p = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "A", &[])]),
    ]);
    let m = mapper::map(&two_host_one_label(), &p, false).expect("match");
    assert_eq!(m.len(), 1);
    let m = &m[0];
    assert_eq!(m.pool_name, "default");
    assert!(!m.is_virtual);
    assert_eq!(m.machines["host1"].target, "lab1");
    assert_eq!(m.machines["host1"].hostname, "198.18.0.1");
    assert_eq!(m.machines["host1"].interfaces["eth0"].target, "eth1");
    assert_eq!(
        m.machines["host1"].interfaces["eth0"].hwaddr,
        "52:54:00:00:01:00"
    );
    assert_eq!(m.machines["host2"].target, "lab2");
    assert_eq!(m.networks, kv(&[("net1", "A")]));
    assert_eq!(
        mapper::describe_match(m),
        vec![
            "Pool match description:",
            "  host \"host1\" uses \"lab1\"",
            "    interface \"eth0\" matched to \"eth1\"",
            "  host \"host2\" uses \"lab2\"",
            "    interface \"eth0\" matched to \"eth1\"",
        ]
    );
}

#[test]
fn one_label_cannot_span_two_pool_labels() {
    // host1 can only reach A, host2 only B: net1 would need both.
    let p = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "B", &[])]),
    ]);
    let e = mapper::map(&two_host_one_label(), &p, false).expect_err("no match");
    let s = e.to_string();
    assert!(matches!(e, MapperError::Unsatisfiable(_)), "{s}");
    assert!(s.contains("host2"), "{s}");
    assert!(s.contains("net1 is mapped to A (by host1.eth0)"), "{s}");
}

#[test]
fn two_req_labels_cannot_share_one_pool_label() {
    let r = reqs(vec![
        ("host1", host(&[("eth0", "net1"), ("eth1", "net2")])),
        ("host2", host(&[("eth0", "net1"), ("eth1", "net2")])),
    ]);
    // Every NIC on segment A: net1 and net2 would both map to A.
    let same = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "A", &[]), ("eth2", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "A", &[]), ("eth2", "A", &[])]),
    ]);
    let e = mapper::map(&r, &same, false).expect_err("bijection");
    assert!(e.to_string().contains("network"), "{e}");

    let split = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "B", &[]), ("eth2", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "A", &[]), ("eth2", "B", &[])]),
    ]);
    let m = mapper::map(&r, &split, false).expect("match");
    let m = &m[0];
    assert_eq!(m.networks, kv(&[("net1", "B"), ("net2", "A")]));
    assert_eq!(m.machines["host1"].interfaces["eth0"].target, "eth1");
    assert_eq!(m.machines["host1"].interfaces["eth1"].target, "eth2");
    // host2's net1 NIC must be lab2.eth2 (label B), not the first-sorted eth1.
    assert_eq!(m.machines["host2"].interfaces["eth0"].target, "eth2");
    assert_eq!(m.machines["host2"].interfaces["eth1"].target, "eth1");
}

#[test]
fn host_and_interface_param_filters() {
    let p = pool(vec![
        machine(
            "lab1",
            1,
            &[("arch", "aarch64")],
            &[("eth1", "A", &[("driver", "ice")])],
        ),
        machine(
            "lab2",
            2,
            &[("arch", "x86_64")],
            &[("eth1", "A", &[("driver", "ixgbe")])],
        ),
        machine(
            "lab3",
            3,
            &[("arch", "x86_64")],
            &[("eth1", "A", &[("driver", "ice")])],
        ),
    ]);
    let mut h = HostReq::default().with_interface("eth0", "net1", kv(&[("driver", "ice")]));
    h.params = kv(&[("arch", "x86_64")]);
    let r = reqs(vec![("host1", h.clone())]);
    let m = mapper::map(&r, &p, true).expect("match");
    assert_eq!(m.len(), 1, "only lab3 has x86_64 + ice");
    assert_eq!(m[0].machines["host1"].target, "lab3");

    // An empty requirement value is no constraint.
    let mut loose = h.clone();
    loose.params = kv(&[("arch", "")]);
    let m = mapper::map(&reqs(vec![("host1", loose)]), &p, true).expect("match");
    assert_eq!(m.len(), 2, "lab1 and lab3 have ice");

    // hwaddr is compared case-insensitively.
    let by_mac = HostReq::default().with_interface(
        "eth0",
        "net1",
        kv(&[("hwaddr", "52:54:00:00:02:00".to_uppercase().as_str())]),
    );
    let m = mapper::map(&reqs(vec![("host1", by_mac)]), &p, false).expect("match");
    assert_eq!(m[0].machines["host1"].target, "lab2");

    // A driver nobody has: the error names the interface requirement.
    let nope = HostReq::default().with_interface("eth0", "net1", kv(&[("driver", "mlx5")]));
    let e = mapper::map(&reqs(vec![("host1", nope)]), &p, false).expect_err("no mlx5");
    let s = e.to_string();
    assert!(s.contains("host1.eth0") && s.contains("driver=mlx5"), "{s}");

    // A host param nobody has: the error names the host requirement.
    let arm = HostReq {
        params: kv(&[("arch", "riscv64")]),
        ..Default::default()
    };
    let e = mapper::map(&reqs(vec![("host1", arm)]), &p, false).expect_err("no riscv");
    let s = e.to_string();
    assert!(
        s.contains("no pool machine satisfies host1") && s.contains("arch=riscv64"),
        "{s}"
    );
}

#[test]
fn sorted_id_determinism() {
    // Insertion order of the pool must not matter: lowest ids win.
    let a = pool(vec![
        machine("zeta", 3, &[], &[("eth9", "A", &[]), ("eth1", "A", &[])]),
        machine("alpha", 1, &[], &[("eth2", "A", &[]), ("eth1", "A", &[])]),
        machine("mid", 2, &[], &[("eth1", "A", &[])]),
    ]);
    let first = mapper::map(&two_host_one_label(), &a, false).expect("match");
    let m = &first[0];
    assert_eq!(m.machines["host1"].target, "alpha");
    assert_eq!(m.machines["host1"].interfaces["eth0"].target, "eth1");
    assert_eq!(m.machines["host2"].target, "mid");
    for _ in 0..5 {
        assert_eq!(
            mapper::map(&two_host_one_label(), &a, false).expect("match"),
            first
        );
    }
}

#[test]
fn multimatch_yields_every_match() {
    let p = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "A", &[])]),
        machine("lab3", 3, &[], &[("eth1", "A", &[])]),
    ]);
    let all = mapper::map(&two_host_one_label(), &p, true).expect("matches");
    // Ordered pairs of distinct machines: 3 * 2.
    assert_eq!(all.len(), 6);
    let pairs: Vec<(String, String)> = all
        .iter()
        .map(|m| {
            (
                m.machines["host1"].target.clone(),
                m.machines["host2"].target.clone(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("lab1", "lab2"),
        ("lab1", "lab3"),
        ("lab2", "lab1"),
        ("lab2", "lab3"),
        ("lab3", "lab1"),
        ("lab3", "lab2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, want, "DFS order over sorted ids");
    // Without multimatch only the first.
    let one = mapper::map(&two_host_one_label(), &p, false).expect("match");
    assert_eq!(one, all[..1].to_vec());

    // Two NICs per machine on one label, one req interface per host: 3*2 machines * 2*2 NICs.
    let p2 = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "A", &[]), ("eth2", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "A", &[]), ("eth2", "A", &[])]),
        machine("lab3", 3, &[], &[("eth1", "A", &[]), ("eth2", "A", &[])]),
    ]);
    assert_eq!(
        mapper::map(&two_host_one_label(), &p2, true)
            .expect("m")
            .len(),
        24
    );
}

#[test]
fn host_without_interfaces() {
    let p = pool(vec![
        machine("lab1", 1, &[], &[]),
        machine("lab2", 2, &[], &[("eth1", "A", &[])]),
    ]);
    let r = reqs(vec![
        ("host1", HostReq::default()),
        ("host2", host(&[("eth0", "net1")])),
    ]);
    let m = mapper::map(&r, &p, true).expect("match");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].machines["host1"].target, "lab1");
    assert!(m[0].machines["host1"].interfaces.is_empty());
    assert_eq!(m[0].machines["host2"].target, "lab2");
    assert_eq!(
        mapper::describe_match(&m[0]),
        vec![
            "Pool match description:",
            "  host \"host1\" uses \"lab1\"",
            "  host \"host2\" uses \"lab2\"",
            "    interface \"eth0\" matched to \"eth1\"",
        ]
    );
}

#[test]
fn clear_errors() {
    let empty = pool(vec![]);
    let e = mapper::map(&two_host_one_label(), &empty, false).expect_err("empty pool");
    assert_eq!(e, MapperError::EmptyPool("default".into()));
    assert!(e.to_string().contains("no machines"), "{e}");

    let one = pool(vec![machine("lab1", 1, &[], &[("eth1", "A", &[])])]);
    let e = mapper::map(&two_host_one_label(), &one, false).expect_err("too few");
    assert!(e.to_string().contains("needs 2 hosts"), "{e}");

    let e = mapper::map(&Requirements::default(), &one, false).expect_err("no reqs");
    assert_eq!(e, MapperError::NoRequirements);

    // Enough machines, but host1 needs 2 NICs and every machine has one.
    let p = pool(vec![
        machine("lab1", 1, &[], &[("eth1", "A", &[])]),
        machine("lab2", 2, &[], &[("eth1", "A", &[])]),
    ]);
    let r = reqs(vec![("host1", host(&[("eth0", "net1"), ("eth1", "net1")]))]);
    let e = mapper::map(&r, &p, false).expect_err("too few NICs");
    assert!(
        e.to_string().contains("host1") && e.to_string().contains("2 interfaces"),
        "{e}"
    );

    // The only machine with the needed param is taken by host1: host2 is named.
    let mut h1 = host(&[("eth0", "net1")]);
    h1.params = kv(&[("role", "dut")]);
    let mut h2 = host(&[("eth0", "net1")]);
    h2.params = kv(&[("role", "dut")]);
    let p = pool(vec![
        machine("lab1", 1, &[("role", "dut")], &[("eth1", "A", &[])]),
        machine("lab2", 2, &[("role", "gen")], &[("eth1", "A", &[])]),
    ]);
    let e = mapper::map(&reqs(vec![("host1", h1), ("host2", h2)]), &p, false).expect_err("taken");
    let s = e.to_string();
    assert!(
        s.contains("host2") && s.contains("lab1 is used by host1"),
        "{s}"
    );
}
