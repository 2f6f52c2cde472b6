//! Pool XML reader: valid fixtures, one failing fixture per validation rule, hostile XML.

use lnst_runner::pool::{self, PoolError, Security};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pool")
}

#[test]
fn valid_pool_parses_to_expected_structures() {
    let dir = fixtures().join("valid");
    assert!(pool::has_pool_xml(&dir));
    let p = pool::load_pool_dir(&dir).expect("valid pool");
    assert_eq!(p.name, "default");
    // README.txt is ignored; lab2.XML counts (case-insensitive extension).
    assert_eq!(
        p.machines.keys().cloned().collect::<Vec<_>>(),
        vec!["lab1", "lab2", "lab3"]
    );

    let lab1 = &p.machines["lab1"];
    assert_eq!(lab1.id, "lab1");
    assert_eq!(lab1.hostname(), "198.18.0.11"); // value stripped
    assert_eq!(lab1.rpc_port().expect("port"), 9998);
    assert_eq!(lab1.params.get("arch").map(String::as_str), Some("x86_64"));
    assert_eq!(lab1.params.len(), 3);
    assert_eq!(lab1.source, dir.join("lab1.xml"));
    assert_eq!(
        lab1.security,
        Security::Password {
            secret: b"s3cret".to_vec()
        }
    );
    let eth1 = &lab1.interfaces["eth1"];
    assert_eq!(eth1.id, "eth1");
    assert_eq!(eth1.label, "net1");
    assert_eq!(eth1.hwaddr(), "52:54:00:aa:bb:01"); // upper-case input normalised
    assert_eq!(eth1.params.get("driver").map(String::as_str), Some("ice"));
    assert_eq!(eth1.params.get("speed").map(String::as_str), Some("100G"));
    assert_eq!(lab1.interfaces["eth2"].label, "net2");

    let lab2 = &p.machines["lab2"];
    assert_eq!(lab2.hostname(), "198.18.0.12"); // text-form param
    assert_eq!(lab2.rpc_port().expect("default port"), 9999);
    assert_eq!(lab2.interfaces["1"].hwaddr(), "52:54:00:12:34:57");
    assert_eq!(
        lab2.security,
        Security::PasswordFile {
            path: dir.join("secrets/lab2.key")
        }
    );

    let lab3 = &p.machines["lab3"];
    assert!(lab3.interfaces.is_empty());
    assert_eq!(lab3.security, Security::None);
}

#[test]
fn secrets_are_not_debug_printed() {
    let p = pool::load_pool_dir(&fixtures().join("valid")).expect("valid pool");
    let dbg = format!("{:?}", p.machines["lab1"]);
    assert!(!dbg.contains("s3cret"), "{dbg}");
}

#[test]
fn check_report_lists_everything() {
    let r = pool::check_report(&fixtures().join("valid")).expect("report");
    for want in [
        "machine lab1",
        "address: 198.18.0.11:9998",
        "security: password",
        "params: arch=x86_64",
        "interface eth1: label net1, hwaddr 52:54:00:aa:bb:01, driver=ice, speed=100G",
        "interface eth2: label net2, hwaddr 52:54:00:aa:bb:02",
        "address: 198.18.0.12:9999",
        "machine lab3",
        "security: none",
    ] {
        assert!(r.contains(want), "missing {want:?} in\n{r}");
    }
}

/// Load a bad fixture; return (file name, line, message).
fn bad(case: &str) -> (String, u32, String) {
    let dir = fixtures().join("bad").join(case);
    match pool::load_pool_dir(&dir) {
        Ok(p) => panic!("{case}: expected an error, got {p:?}"),
        Err(e @ PoolError::Xml { .. }) => {
            let s = e.to_string();
            let PoolError::Xml {
                file,
                line,
                message,
                ..
            } = e
            else {
                unreachable!()
            };
            assert!(
                s.starts_with(&format!("pool XML {}:{line}:", file.display())),
                "{s}"
            );
            assert!(!s.contains('\n'), "one line: {s:?}");
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, line, message)
        }
        Err(other) => panic!("{case}: expected a located XML error, got {other}"),
    }
}

#[test]
fn each_rule_has_a_located_error() {
    let cases: &[(&str, &str, u32, &str)] = &[
        (
            "missing_hostname",
            "m.xml",
            1,
            "mandatory parameter 'hostname' missing",
        ),
        (
            "missing_hwaddr",
            "m.xml",
            6,
            "mandatory parameter 'hwaddr' missing for interface eth0",
        ),
        ("bad_mac", "m.xml", 8, "is not a MAC address"),
        (
            "duplicate_eth_id",
            "m.xml",
            9,
            "duplicate interface id 'eth0'",
        ),
        (
            "duplicate_hwaddr",
            "m.xml",
            9,
            "duplicate hwaddr 52:54:00:aa:bb:01",
        ),
        (
            "duplicate_hostname",
            "b.xml",
            3,
            "already used by machine 'a'",
        ),
        ("pubkey", "m.xml", 6, "not supported"),
        ("password_missing", "m.xml", 6, "needs <auth_password>"),
        ("bad_rpc_port", "m.xml", 4, "not a TCP port"),
        (
            "unknown_element",
            "m.xml",
            5,
            "unexpected element <network>",
        ),
        ("malformed", "m.xml", 4, ""),
        ("undeclared_entity", "m.xml", 3, "host"),
    ];
    for (case, file, line, msg) in cases {
        let (f, l, m) = bad(case);
        assert_eq!(&f, file, "{case}: {m}");
        assert_eq!(l, *line, "{case}: {m}");
        assert!(m.contains(msg), "{case}: {m:?} lacks {msg:?}");
        assert!(
            !m.contains(&format!(" at {line}:")),
            "position not repeated: {m}"
        );
    }
}

#[test]
fn pubkey_error_suggests_password() {
    let (_, _, m) = bad("pubkey");
    assert!(m.contains("use auth_type password"), "{m}");
}

#[test]
fn dtd_and_entities_are_rejected_fast() {
    for case in ["billion_laughs", "external_entity"] {
        let t = Instant::now();
        let (_, line, m) = bad(case);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{case} took {:?}",
            t.elapsed()
        );
        assert_eq!(line, 1, "{case}");
        assert!(m.contains("DTD"), "{case}: {m}");
    }
}

#[test]
fn oversized_file_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = String::from(
        "<agentmachine><params><param name=\"hostname\" value=\"198.18.0.1\"/></params>",
    );
    s.push_str(&"<!-- padding -->".repeat(70_000));
    s.push_str("</agentmachine>");
    std::fs::write(dir.path().join("big.xml"), s).expect("write");
    let e = pool::load_pool_dir(dir.path()).expect_err("too big");
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn empty_or_missing_dirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!pool::has_pool_xml(dir.path()));
    let p = pool::load_pool_dir(dir.path()).expect("empty pool");
    assert!(p.machines.is_empty());
    let missing = dir.path().join("nope");
    assert!(!pool::has_pool_xml(&missing));
    assert!(matches!(
        pool::load_pool_dir(&missing),
        Err(PoolError::Io { .. })
    ));
}

#[test]
fn mac_normalisation_is_lower_case() {
    assert_eq!(
        pool::normalize_hwaddr("AA:BB:CC:DD:EE:FF").as_deref(),
        Some("aa:bb:cc:dd:ee:ff")
    );
    assert_eq!(pool::normalize_hwaddr("aa:bb:cc:dd:ee:fg"), None);
}

#[test]
fn example_pool_dir_is_valid() {
    // The examples read their secret from a `secret` file the user creates next to them (it is
    // not in the repository, and a pool naming a missing secret file is refused): check a copy
    // with one.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("pool");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for f in ["host1.xml", "host2.xml"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy example");
    }
    std::fs::write(dir.join("secret"), "example secret\n").expect("secret");
    let p = pool::load_pool_dir(dir).expect("pool/ examples");
    assert_eq!(p.machines.len(), 2);
    for m in p.machines.values() {
        assert!(m.hostname().starts_with("198.18.0."), "{}", m.hostname());
        assert_eq!(m.rpc_port().expect("port"), 9999);
        assert_eq!(m.interfaces.len(), 1);
        assert!(m.interfaces.values().all(|i| i.label == "net1"));
    }
}
