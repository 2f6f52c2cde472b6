//! Naming rules for the netns provisioner: namespace, bridge and veth peer names, and the
//! validation of ids that end up in file names and interface names.

/// Every namespace the runner creates starts with this prefix; nothing else is ever touched.
pub const NS_PREFIX: &str = "lnst-";

/// Suffix of the switch namespace (`lnst-<runid>-sw`); a host may not use it as its id.
pub const SWITCH_SUFFIX: &str = "sw";

/// Linux `IFNAMSIZ - 1`.
pub const MAX_IFNAME: usize = 15;

/// A run id: 1 to 16 ASCII letters or digits (no `-`, so a namespace name maps back to
/// its run unambiguously).
pub fn validate_run_id(run_id: &str) -> Result<(), String> {
    if run_id.is_empty() || run_id.len() > 16 {
        return Err(format!("run id {run_id:?} must be 1 to 16 characters"));
    }
    if !run_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "run id {run_id:?} may only hold ASCII letters and digits"
        ));
    }
    Ok(())
}

/// A requirement host id becomes part of a namespace name (a file under /run/netns).
pub fn validate_host_id(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > 64 {
        return Err(format!("host id {host:?} must be 1 to 64 characters"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!(
            "host id {host:?} may only hold ASCII letters, digits, '_', '-' and '.'"
        ));
    }
    if host.starts_with('.') || host.starts_with('-') {
        return Err(format!("host id {host:?} must not start with '.' or '-'"));
    }
    if host == SWITCH_SUFFIX {
        return Err(format!(
            "host id {host:?} is reserved for the switch namespace"
        ));
    }
    Ok(())
}

/// A requirement interface id is used verbatim as the interface name in the host namespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(format!(
            "interface id {name:?} must be 1 to {MAX_IFNAME} bytes to be a Linux interface name"
        ));
    }
    if name == "." || name == ".." || name == "lo" {
        return Err(format!(
            "interface id {name:?} is not a usable interface name"
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(format!(
            "interface id {name:?} holds a character Linux refuses in interface names"
        ));
    }
    Ok(())
}

/// `lnst-<runid>-<host>`.
pub fn host_ns_name(run_id: &str, host: &str) -> String {
    format!("{NS_PREFIX}{run_id}-{host}")
}

/// `lnst-<runid>-sw`.
pub fn switch_ns_name(run_id: &str) -> String {
    format!("{NS_PREFIX}{run_id}-{SWITCH_SUFFIX}")
}

/// Prefix shared by every namespace of one run.
pub fn run_prefix(run_id: &str) -> String {
    format!("{NS_PREFIX}{run_id}-")
}

/// The run id a namespace name belongs to, if it follows our naming (`lnst-<runid>-...`).
pub fn run_id_of_namespace(ns: &str) -> Option<&str> {
    let rest = ns.strip_prefix(NS_PREFIX)?;
    let (id, tail) = rest.split_once('-')?;
    if tail.is_empty() || validate_run_id(id).is_err() {
        return None;
    }
    Some(id)
}

/// Bridge of the `idx`-th sorted network label in the switch namespace.
pub fn bridge_name(idx: usize) -> String {
    format!("br{idx}")
}

/// Switch-side veth peer of interface `if_idx` of host `host_idx`.
pub fn peer_name(host_idx: usize, if_idx: usize) -> String {
    format!("h{host_idx}i{if_idx}")
}

/// `aa:bb:cc:dd:ee:ff`, lower-case.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_scheme() {
        assert_eq!(host_ns_name("1a2b3c4d", "host1"), "lnst-1a2b3c4d-host1");
        assert_eq!(switch_ns_name("1a2b3c4d"), "lnst-1a2b3c4d-sw");
        assert_eq!(bridge_name(3), "br3");
        assert_eq!(peer_name(12, 3), "h12i3");
        assert!(peer_name(usize::from(u16::MAX), 999).len() <= MAX_IFNAME);
    }

    #[test]
    fn run_id_round_trips_through_namespace_names() {
        assert_eq!(run_id_of_namespace("lnst-1a2b3c4d-host1"), Some("1a2b3c4d"));
        assert_eq!(run_id_of_namespace("lnst-1a2b3c4d-sw"), Some("1a2b3c4d"));
        assert_eq!(run_id_of_namespace("lnst-1a2b3c4d-"), None);
        assert_eq!(run_id_of_namespace("lnst-foo"), None);
        assert_eq!(run_id_of_namespace("other-1a2b-host1"), None);
        assert_eq!(run_id_of_namespace("lnst-a_b-host1"), None);
    }

    #[test]
    fn validation_rejects_bad_ids() {
        assert!(validate_run_id("1a2b3c4d").is_ok());
        assert!(validate_run_id("").is_err());
        assert!(validate_run_id("1a-2b").is_err());
        assert!(validate_run_id("../x").is_err());
        assert!(validate_run_id("0123456789abcdef0").is_err());

        assert!(validate_host_id("host1").is_ok());
        assert!(validate_host_id("sw").is_err());
        assert!(validate_host_id("a/b").is_err());
        assert!(validate_host_id("..").is_err());
        assert!(validate_host_id("").is_err());

        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a234567890abcde").is_ok());
        assert!(validate_ifname("a234567890abcdef").is_err());
        assert!(validate_ifname("eth 0").is_err());
        assert!(validate_ifname("eth0:1").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("lo").is_err());
        assert!(validate_ifname("").is_err());
    }

    #[test]
    fn mac_is_lower_case_colon_separated() {
        assert_eq!(
            format_mac(&[0x02, 0xAB, 0x0c, 0xff, 0x00, 0x1]),
            "02:ab:0c:ff:00:01"
        );
    }
}
