//! Pool XML reader: `pool::parse_machine_xml`, the pure part of `load_machine` (no file is
//! opened; a relative `<auth_password_file>` is only resolved, never read).
//!
//! Invariants checked besides "no panic, no hang, no stack overflow": an accepted machine
//! has the id and source of its file, a non-empty hostname that is an IP address or a
//! DNS-like name (no port, no URL, no whitespace), a valid rpc_port, at most
//! `MAX_INTERFACES` interfaces keyed by their non-empty id with a non-empty label and a
//! unique, normalised, unicast MAC, at most `MAX_PARAMS` params per machine and interface, no
//! U+FFFD in any value unless the text has one (a character reference to a surrogate or past
//! U+10FFFF must be an error, not a replacement character), no declared encoding other than
//! UTF-8 (or ASCII for ASCII text), and a non-empty secret; an error is located in the file
//! at line, column ≥ 1.
//!
//! Checks run on a 512 KiB stack (common.rs) so that deep recursion shows up as a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lnst_runner::pool::{
    normalize_hwaddr, parse_machine_xml, PoolError, Security, MAX_INTERFACES, MAX_PARAMS,
};
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
            let bare = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            // An IPv6 address may carry a zone (`fe80::1%eth0`).
            let addr = bare.split('%').next().unwrap_or(bare);
            assert!(
                addr.parse::<std::net::IpAddr>().is_ok()
                    || host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
                "hostname {host:?} is neither an address nor a name"
            );
            let replacement = text.contains('\u{FFFD}');
            assert!(m.params.len() <= MAX_PARAMS);
            assert!(m.interfaces.len() <= MAX_INTERFACES);
            for v in m.params.values() {
                assert!(replacement || !v.contains('\u{FFFD}'), "U+FFFD in {v:?}");
            }
            if let Some(enc) = declared_encoding(&text) {
                let e = enc.to_ascii_lowercase();
                assert!(
                    e == "utf-8"
                        || e == "utf8"
                        || ((e == "ascii" || e == "us-ascii") && text.is_ascii()),
                    "declared encoding {enc:?} accepted"
                );
            }
            if let Err(e) = m.rpc_port() {
                panic!("accepted machine with a bad port: {e}");
            }
            let mut macs: Vec<&str> = Vec::new();
            for (key, i) in &m.interfaces {
                assert_eq!(key, &i.id);
                assert!(!i.id.is_empty() && !i.label.is_empty());
                let mac = i.hwaddr();
                assert_eq!(normalize_hwaddr(mac).as_deref(), Some(mac));
                let first = u8::from_str_radix(&mac[..2], 16).unwrap_or(1);
                assert!(first & 1 == 0, "multicast MAC {mac} accepted");
                assert_ne!(mac, "00:00:00:00:00:00", "all-zero MAC accepted");
                assert!(i.params.len() <= MAX_PARAMS);
                for v in i.params.values() {
                    assert!(replacement || !v.contains('\u{FFFD}'), "U+FFFD in {v:?}");
                }
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

/// The `encoding` value of an XML declaration at the start of `text`, if any.
fn declared_encoding(text: &str) -> Option<&str> {
    let t = text.strip_prefix('\u{feff}').unwrap_or(text);
    let decl = t.strip_prefix("<?xml")?;
    let decl = &decl[..decl.find("?>")?];
    let rest = decl[decl.find("encoding")? + 8..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    rest[1..].split(q).next()
}
