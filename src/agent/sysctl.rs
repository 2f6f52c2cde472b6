//! `SysctlWrite`: which keys a controller may write, and writing them without following links.
//!
//! A controller may write only the keys that recipes need (upstream ENRT recipes, their
//! mixins and RecipeCommon, and this runner's recipes): a fixed list of `net.*` keys, the
//! per-device forms `net.ipv{4,6}.conf.<dev>.<key>` and `net.ipv{4,6}.neigh.<dev>.<key>`
//! (`<dev>` is `all`, `default` or a valid interface name), and `vm.drop_caches` with 1, 2 or 3.
//! Everything else (`kernel.core_pattern`, a `..`, a path outside /proc/sys) is refused with
//! `NotAllowed`. An allowed key is opened one component at a time below /proc/sys with
//! `O_NOFOLLOW`, so no component can be a symbolic link, and the file must be a regular file.

use super::net::check_ifname;
use super::OpError;
use crate::protocol::ErrorKind;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Where sysctls live.
pub const SYSCTL_ROOT: &str = "/proc/sys";

/// Longest value accepted (the longest legitimate ones, like `tcp_rmem`, are ~30 bytes).
pub const MAX_VALUE_LEN: usize = 256;

/// `net.ipv4.<key>`.
const IPV4: &[&str] = &[
    "ip_forward",
    "ipfrag_high_thresh",
    "ipfrag_low_thresh",
    "ipfrag_time",
    "fib_multipath_hash_policy",
    "fib_multipath_hash_fields",
    "fib_multipath_use_neigh",
    "tcp_rmem",
    "tcp_wmem",
    "tcp_mem",
    "tcp_window_scaling",
    "tcp_timestamps",
    "tcp_sack",
    "tcp_no_metrics_save",
    "tcp_autocorking",
    "tcp_limit_output_bytes",
    "tcp_min_tso_segs",
    "tcp_ecn",
    "udp_mem",
    "udp_rmem_min",
    "udp_wmem_min",
];

/// `net.ipv6.<key>`.
const IPV6: &[&str] = &[
    "ip6frag_high_thresh",
    "ip6frag_low_thresh",
    "ip6frag_time",
    "fib_multipath_hash_policy",
    "fib_multipath_hash_fields",
];

/// `net.core.<key>`.
const CORE: &[&str] = &[
    "rmem_max",
    "rmem_default",
    "wmem_max",
    "wmem_default",
    "optmem_max",
    "netdev_max_backlog",
    "netdev_budget",
    "netdev_budget_usecs",
    "dev_weight",
    "busy_poll",
    "busy_read",
];

/// `net.mptcp.<key>` (MPTCPRecipe) and `net.netfilter.<key>` (NftablesConntrackMixin).
const MPTCP: &[&str] = &["enabled"];
const NETFILTER: &[&str] = &["nf_conntrack_tcp_timeout_syn_sent"];

/// `net.ipv4.conf.<dev>.<key>`.
const IPV4_CONF: &[&str] = &[
    "forwarding",
    "rp_filter",
    "accept_local",
    "accept_redirects",
    "send_redirects",
    "secure_redirects",
    "accept_source_route",
    "arp_ignore",
    "arp_announce",
    "arp_filter",
    "proxy_arp",
    "log_martians",
];

/// `net.ipv6.conf.<dev>.<key>`.
const IPV6_CONF: &[&str] = &[
    "forwarding",
    "accept_dad",
    "dad_transmits",
    "accept_ra",
    "accept_ra_defrtr",
    "accept_ra_pinfo",
    "autoconf",
    "disable_ipv6",
    "keep_addr_on_down",
    "accept_redirects",
    "router_solicitations",
    "use_tempaddr",
];

/// `net.ipv{4,6}.neigh.<dev>.<key>`.
const NEIGH: &[&str] = &[
    "base_reachable_time_ms",
    "delay_first_probe_time",
    "gc_stale_time",
    "retrans_time_ms",
    "ucast_solicit",
    "mcast_solicit",
    "mcast_resolicit",
    "app_solicit",
    "unres_qlen",
    "unres_qlen_bytes",
    "locktime",
    "proxy_delay",
    "proxy_qlen",
    "anycast_delay",
    "gc_thresh1",
    "gc_thresh2",
    "gc_thresh3",
    "gc_interval",
];

/// A sysctl the agent agreed to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Components below /proc/sys, each checked (no `..`, no `/`).
    comps: Vec<String>,
    /// `vm.drop_caches`: an action, not a setting (it cannot be read, and is not restored).
    pub write_only: bool,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SYSCTL_ROOT}/{}", self.comps.join("/"))
    }
}

/// At most 80 characters of a controller-supplied string, for messages.
fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(80).collect();
    if s.chars().nth(80).is_some() {
        t.push('…');
    }
    t
}

fn not_allowed(p: &str, why: &str) -> OpError {
    OpError::new(
        ErrorKind::NotAllowed,
        format!(
            "sysctl {:?} is not allowed ({why}); the agent writes only the net.* keys that \
             recipes use and vm.drop_caches (see docs/PROTOCOL.md)",
            clip(p)
        ),
    )
}

/// Whether `dev` may stand for a device in a per-device key.
fn device_ok(dev: &str, all: bool) -> bool {
    (all && dev == "all") || dev == "default" || check_ifname(dev).is_ok()
}

impl Key {
    /// Parse a key given as `net.ipv4.ip_forward`, `net/ipv4/ip_forward` or
    /// `/proc/sys/net/ipv4/ip_forward`, and check it against the allow-list. In the dotted form
    /// a device name may contain dots (`net.ipv4.conf.eth0.100.rp_filter`).
    pub fn parse(p: &str) -> Result<Key, OpError> {
        let comps: Vec<&str> = if let Some(rest) = p.strip_prefix("/proc/sys/") {
            rest.split('/').collect()
        } else if p.starts_with('/') {
            return Err(not_allowed(p, "outside /proc/sys"));
        } else if p.contains('/') {
            p.split('/').collect()
        } else {
            let parts: Vec<&str> = p.split('.').collect();
            match parts.as_slice() {
                ["net", fam @ ("ipv4" | "ipv6"), table @ ("conf" | "neigh"), dev @ .., key]
                    if dev.len() > 1 =>
                {
                    // The device is everything between the table and the last component.
                    let dev = dev.join(".");
                    return Key::check(p, vec!["net", fam, table, &dev, key]);
                }
                _ => parts,
            }
        };
        Key::check(p, comps)
    }

    fn check(p: &str, comps: Vec<&str>) -> Result<Key, OpError> {
        let on = |list: &[&str], k: &str| list.contains(&k);
        let allowed = match comps.as_slice() {
            ["vm", "drop_caches"] => {
                return Ok(Key {
                    comps: vec!["vm".into(), "drop_caches".into()],
                    write_only: true,
                })
            }
            ["net", "ipv4", k] => on(IPV4, k),
            ["net", "ipv6", k] => on(IPV6, k),
            ["net", "core", k] => on(CORE, k),
            ["net", "mptcp", k] => on(MPTCP, k),
            ["net", "netfilter", k] => on(NETFILTER, k),
            ["net", "ipv4", "conf", dev, k] => on(IPV4_CONF, k) && device_ok(dev, true),
            ["net", "ipv6", "conf", dev, k] => on(IPV6_CONF, k) && device_ok(dev, true),
            ["net", "ipv4" | "ipv6", "neigh", dev, k] => on(NEIGH, k) && device_ok(dev, false),
            _ => false,
        };
        if !allowed {
            let why = if comps
                .iter()
                .any(|c| *c == ".." || *c == "." || c.is_empty())
            {
                "empty, '.' or '..' component"
            } else {
                "not on the allow-list"
            };
            return Err(not_allowed(p, why));
        }
        Ok(Key {
            comps: comps.into_iter().map(String::from).collect(),
            write_only: false,
        })
    }

    /// Check a value a controller wants to write: numbers and words separated by blanks (one
    /// trailing newline allowed), at most [`MAX_VALUE_LEN`] bytes; 1, 2 or 3 for drop_caches.
    pub fn check_value(&self, value: &str) -> Result<(), OpError> {
        let v = value.strip_suffix('\n').unwrap_or(value);
        let bad = |why: &str| {
            Err(OpError::new(
                ErrorKind::BadRequest,
                format!("invalid value {:?} for {self}: {why}", clip(value)),
            ))
        };
        if self.write_only {
            return if matches!(v, "1" | "2" | "3") {
                Ok(())
            } else {
                bad("expected 1, 2 or 3")
            };
        }
        if v.is_empty() || v.len() > MAX_VALUE_LEN {
            return bad(&format!("expected 1 to {MAX_VALUE_LEN} bytes"));
        }
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '\t' | '-'))
        {
            return bad("expected numbers or words separated by spaces or tabs");
        }
        Ok(())
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)` as a File.
fn open_at(dir: &File, name: &str, flags: nix::fcntl::OFlag) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Open `key` below `root` without following a link in any component; the result must be a
/// regular file.
fn open(root: &Path, key: &Key, write: bool) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let mut dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)?;
    let Some((last, parents)) = key.comps.split_last() else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    for c in parents {
        dir = open_at(&dir, c, dir_flags)?;
    }
    let f = open_at(
        &dir,
        last,
        if write {
            // As `echo v > file` does; procfs ignores the truncation.
            OFlag::O_WRONLY | OFlag::O_TRUNC
        } else {
            OFlag::O_RDONLY
        },
    )?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

fn io_error(what: &str, key: &Key, e: std::io::Error) -> OpError {
    let kind = match e.raw_os_error() {
        _ if e.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        // A component is a symbolic link (ELOOP) or not a directory (ENOTDIR).
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => ErrorKind::NotAllowed,
        _ => ErrorKind::Failed,
    };
    let why = match kind {
        ErrorKind::NotAllowed => "a component is a symbolic link or not a directory".to_string(),
        _ => e.to_string(),
    };
    OpError::new(kind, format!("{what} {key}: {why}"))
}

/// Read a key's current value (without the trailing newline). Blocking; `root` is
/// [`SYSCTL_ROOT`] outside tests.
pub fn read(root: &Path, key: &Key) -> Result<String, OpError> {
    let mut f = open(root, key, false).map_err(|e| io_error("reading", key, e))?;
    // A sysctl value is short; a file that keeps going is not one.
    let mut buf = Vec::new();
    (&mut f)
        .take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(|e| io_error("reading", key, e))?;
    let s = String::from_utf8_lossy(&buf);
    Ok(s.trim_end_matches('\n').to_string())
}

/// Write a value to a key. Blocking.
pub fn write(root: &Path, key: &Key, value: &str) -> Result<(), OpError> {
    let mut f = open(root, key, true).map_err(|e| io_error("writing", key, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| io_error("writing", key, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(p: &str) -> Result<String, ErrorKind> {
        Key::parse(p).map(|k| k.to_string()).map_err(|e| e.kind)
    }

    #[test]
    fn allowed_keys_in_every_spelling() {
        for (given, path) in [
            ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
            ("net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_forward"),
            (
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/net/ipv4/ip_forward",
            ),
            (
                "net.ipv6.conf.all.forwarding",
                "/proc/sys/net/ipv6/conf/all/forwarding",
            ),
            (
                "net.ipv4.conf.eth0.rp_filter",
                "/proc/sys/net/ipv4/conf/eth0/rp_filter",
            ),
            (
                "net.ipv4.conf.eth0.100.rp_filter",
                "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
            ),
            (
                "net/ipv4/conf/eth0.100/rp_filter",
                "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
            ),
            (
                "net.ipv6.conf.default.accept_dad",
                "/proc/sys/net/ipv6/conf/default/accept_dad",
            ),
            (
                "net.ipv6.conf.veth-a.keep_addr_on_down",
                "/proc/sys/net/ipv6/conf/veth-a/keep_addr_on_down",
            ),
            (
                "net.ipv4.neigh.default.gc_thresh3",
                "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
            ),
            ("net.core.busy_poll", "/proc/sys/net/core/busy_poll"),
            ("net.core.rmem_max", "/proc/sys/net/core/rmem_max"),
            (
                "/proc/sys/net/ipv6/ip6frag_high_thresh",
                "/proc/sys/net/ipv6/ip6frag_high_thresh",
            ),
            ("net.mptcp.enabled", "/proc/sys/net/mptcp/enabled"),
            (
                "net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
                "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_syn_sent",
            ),
            (
                "net.ipv6.fib_multipath_hash_policy",
                "/proc/sys/net/ipv6/fib_multipath_hash_policy",
            ),
            ("/proc/sys/vm/drop_caches", "/proc/sys/vm/drop_caches"),
        ] {
            assert_eq!(path_of(given), Ok(path.to_string()), "{given}");
        }
        assert!(Key::parse("vm.drop_caches").is_ok_and(|k| k.write_only));
        assert!(Key::parse("net.ipv4.ip_forward").is_ok_and(|k| !k.write_only));
    }

    #[test]
    fn everything_else_is_not_allowed() {
        for bad in [
            "",
            "/",
            "net",
            "net.ipv4",
            "kernel.core_pattern",
            "kernel/core_pattern",
            "/proc/sys/kernel/core_pattern",
            "/proc/sys/../../etc/passwd",
            "/proc/sys/net/../kernel/core_pattern",
            "net/ipv4/../../kernel/core_pattern",
            "net/ipv4/conf/../../../kernel/core_pattern",
            "net/ipv4/conf/eth0/../../../../kernel/core_pattern",
            "net.ipv4.conf.eth0/../../../../kernel.core_pattern",
            "/proc/self/root/proc/sys/kernel/core_pattern",
            "/etc/passwd",
            "net//ipv4/ip_forward",
            "./net/ipv4/ip_forward",
            "net/ipv4/ip_forward/",
            "/proc/sys/net/ipv4/ip_forward/",
            "net.ipv4.ip_forward.",
            "net.ipv4.conf..rp_filter",
            "net.ipv4.conf...rp_filter",
            "net.ipv4.conf.a:b.rp_filter",
            "net.ipv4.conf.-x.rp_filter",
            "net.ipv4.conf.0123456789abcdef.rp_filter",
            "net/ipv4/conf/../rp_filter",
            "net/ipv4/conf/./rp_filter",
            "net.ipv4.conf.all.rp_filter.x",
            "net.ipv4.neigh.lo.foo",
            "net.ipv4.tcp_congestion_control",
            "net.core.somaxconn",
            "net.core.bpf_jit_enable",
            "vm.overcommit_memory",
            "vm/drop_caches/x",
            "kernel.modprobe",
            "fs.suid_dumpable",
            "net.ipv4.ip_forward\0",
        ] {
            assert_eq!(path_of(bad), Err(ErrorKind::NotAllowed), "{bad:?} accepted");
        }
        let long = Key::parse(&format!("kernel.{}", "x".repeat(100_000)))
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(long.len() < 400, "{long}");
    }

    #[test]
    fn values() {
        let k = Key::parse("net.ipv4.tcp_rmem").unwrap_or_else(|e| panic!("{e}"));
        for ok in [
            "1",
            "0\n",
            "4096 87380 6291456",
            "4096\t131072\t6291456",
            "-1",
        ] {
            assert!(k.check_value(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "\n",
            "1\n\n",
            "1\n2",
            "1;reboot",
            "|/tmp/x",
            "\0",
            "a/b",
            &"1".repeat(MAX_VALUE_LEN + 1),
        ] {
            assert_eq!(
                k.check_value(bad).err().map(|e| e.kind),
                Some(ErrorKind::BadRequest),
                "{bad:?}"
            );
        }
        let d = Key::parse("vm.drop_caches").unwrap_or_else(|e| panic!("{e}"));
        for ok in ["1", "2", "3", "3\n"] {
            assert!(d.check_value(ok).is_ok(), "{ok:?}");
        }
        for bad in ["0", "4", "11", ""] {
            assert!(d.check_value(bad).is_err(), "{bad:?}");
        }
    }

    /// Links planted in a real directory tree (procfs has none to plant): no component may be
    /// one.
    #[test]
    fn links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().join("sys");
        let outside = dir.path().join("outside");
        let mk = |p: &Path| std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{e}"));
        mk(&root.join("net/ipv4/conf/eth0"));
        mk(&outside);
        let victim = outside.join("victim");
        std::fs::write(&victim, "precious\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap_or_else(|e| panic!("{e}"));
        let link = |target: &Path, at: &Path| {
            std::os::unix::fs::symlink(target, at).unwrap_or_else(|e| panic!("{e}"))
        };
        // The file itself is a link; a device directory is a link; a middle directory is one.
        link(&victim, &root.join("net/ipv4/ipfrag_time"));
        link(&outside, &root.join("net/ipv4/conf/eth1"));
        mk(&outside.join("core"));
        std::fs::write(outside.join("core/rmem_max"), "1\n").unwrap_or_else(|e| panic!("{e}"));
        link(&outside.join("core"), &root.join("net/core"));
        std::fs::write(outside.join("rp_filter"), "1\n").unwrap_or_else(|e| panic!("{e}"));

        let key = |p: &str| Key::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(
            read(&root, &key("net.ipv4.ip_forward")).ok(),
            Some("0".into())
        );
        assert!(write(&root, &key("net.ipv4.ip_forward"), "1").is_ok());
        assert_eq!(
            std::fs::read_to_string(root.join("net/ipv4/ip_forward")).ok(),
            Some("1".into())
        );
        for p in [
            "net.ipv4.ipfrag_time",
            "net.ipv4.conf.eth1.rp_filter",
            "net.core.rmem_max",
        ] {
            let k = key(p);
            assert_eq!(
                read(&root, &k).err().map(|e| e.kind),
                Some(ErrorKind::NotAllowed),
                "read {p}"
            );
            assert_eq!(
                write(&root, &k, "7").err().map(|e| e.kind),
                Some(ErrorKind::NotAllowed),
                "write {p}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&victim).ok(),
            Some("precious\n".into())
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("core/rmem_max")).ok(),
            Some("1\n".into())
        );
        // A directory where the value should be; a missing key.
        mk(&root.join("net/ipv4/conf/eth0/rp_filter"));
        assert!(read(&root, &key("net.ipv4.conf.eth0.rp_filter")).is_err());
        assert_eq!(
            read(&root, &key("net.ipv4.conf.eth9.rp_filter"))
                .err()
                .map(|e| e.kind),
            Some(ErrorKind::NotFound)
        );
        // The root itself may not be a link either.
        let root_link = dir.path().join("sys-link");
        link(&root, &root_link);
        assert!(read(&root_link, &key("net.ipv4.ip_forward")).is_err());
    }
}
