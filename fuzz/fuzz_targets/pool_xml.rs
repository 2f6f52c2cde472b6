//! Pool XML reader: `pool::parse_machine_xml`, the pure part of `load_machine` (no file is
//! opened; a relative `<auth_password_file>` is only resolved, never read).
//!
//! Invariants checked besides "no panic, no hang, no stack overflow": an accepted machine
//! has the id and source of its file, a non-empty hostname, a valid rpc_port, interfaces
//! keyed by their non-empty id with a non-empty label and a unique, normalised MAC, and a
//! non-empty secret; an error is located in the file at line, column ≥ 1.
//!
//! Checks run on a 512 KiB stack (common.rs) so that deep recursion shows up as a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lnst_runner::pool::{normalize_hwaddr, parse_machine_xml, PoolError, Security};
use std::path::Path;

mod common;

fuzz_target!(|data: &[u8]| common::on_small_stack(data, check));

fn check(data: &[u8]) {
    // The real reader refuses non-UTF-8 before parsing; a lossy conversion keeps every input
    // useful.
    let text = String::from_utf8_lossy(data);
    let file = Path::new("/pool/fuzz.xml");
    match parse_machine_xml(&text, file) {
        Ok(m) => {
            assert_eq!(m.id, "fuzz");
            assert_eq!(m.source, file);
            let host = m.hostname();
            assert!(!host.is_empty() && host.trim() == host, "hostname {host:?}");
            if let Err(e) = m.rpc_port() {
                panic!("accepted machine with a bad port: {e}");
            }
            let mut macs: Vec<&str> = Vec::new();
            for (key, i) in &m.interfaces {
                assert_eq!(key, &i.id);
                assert!(!i.id.is_empty() && !i.label.is_empty());
                let mac = i.hwaddr();
                assert_eq!(normalize_hwaddr(mac).as_deref(), Some(mac));
                assert!(!macs.contains(&mac), "duplicate MAC {mac}");
                macs.push(mac);
            }
            match &m.security {
                Security::None => {}
                Security::Password { secret } => assert!(!secret.is_empty()),
                Security::PasswordFile { path } => {
                    assert!(path.is_absolute(), "{}", path.display())
                }
            }
            let _ = format!("{m:?} {}", m.security.kind());
        }
        Err(e @ PoolError::Xml { .. }) => {
            let shown = e.to_string();
            if let PoolError::Xml {
                file: f, line, col, ..
            } = e
            {
                assert_eq!(f, file);
                assert!(line >= 1 && col >= 1, "position {line}:{col}: {shown}");
            }
        }
        Err(e) => panic!("parsing text gave a non-XML error: {e}"),
    }
}
