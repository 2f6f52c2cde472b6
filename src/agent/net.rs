//! Interface operations: rtnetlink for links and addresses, the `ethtool` binary for drivers
//! and offloads.

use super::OpError;
use crate::protocol::{ErrorKind, InterfaceInfo, Offload};
use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlag, AddressHeaderFlag, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkInfo, LinkMessage};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Longest wait an operation honours (a larger timeout is clamped to it).
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A netlink handle plus the task driving its socket (aborted on drop).
pub struct Netlink {
    handle: rtnetlink::Handle,
    conn: tokio::task::JoinHandle<()>,
    /// Held for every dump request: the kernel runs one dump per netlink socket at a time and
    /// answers a second one, started while the first is running, with EBUSY — which two
    /// concurrent requests of one controller (waiting for DAD on two devices) hit.
    dumping: tokio::sync::Mutex<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub ip: IpAddr,
    pub prefix: u8,
    pub tentative: bool,
}

impl Addr {
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }
    pub fn is_link_local(&self) -> bool {
        match self.ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        }
    }
}

/// Link data from a dump.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<String>,
}

fn nl_err(what: &str, e: rtnetlink::Error) -> OpError {
    OpError::new(ErrorKind::Failed, format!("{what}: {e}"))
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        name: String::new(),
        ifindex: msg.header.index,
        mac: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(&LinkFlag::Up),
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = format_mac(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_addr(msg: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut tentative = msg.header.flags.contains(&AddressHeaderFlag::Tentative);
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => tentative |= f.contains(&AddressFlag::Tentative),
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's address (IFA_ADDRESS is the peer on p2p links).
    let ip = local.or(address)?;
    Some(Addr {
        ip,
        prefix: msg.header.prefix_len,
        tentative,
    })
}

impl Netlink {
    pub fn new() -> Result<Netlink, OpError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| OpError::new(ErrorKind::Internal, format!("netlink socket: {e}")))?;
        let conn = tokio::spawn(conn);
        Ok(Netlink {
            handle,
            conn,
            dumping: tokio::sync::Mutex::new(()),
        })
    }

    /// Hold this while a dump request (`get()` without a name or index) is sent and read:
    /// one dump at a time per socket (see `dumping`).
    pub async fn dump_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.dumping.lock().await
    }

    /// The rtnetlink handle (for the requests of [`super::links`]).
    pub fn handle(&self) -> rtnetlink::Handle {
        self.handle.clone()
    }

    pub async fn links(&self) -> Result<Vec<Link>, OpError> {
        let _turn = self.dump_turn().await;
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("link dump", e))?;
        Ok(msgs.iter().map(parse_link).collect())
    }

    pub async fn link(&self, ifname: &str) -> Result<Link, OpError> {
        check_ifname(ifname)?;
        let res = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_string())
            .execute()
            .try_next()
            .await;
        match res {
            Ok(Some(msg)) => Ok(parse_link(&msg)),
            Ok(None) => Err(no_such(ifname)),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
            {
                Err(no_such(ifname))
            }
            Err(e) => Err(nl_err(&format!("looking up {ifname}"), e)),
        }
    }

    /// Addresses of every interface, keyed by ifindex.
    pub async fn all_addresses(&self) -> Result<BTreeMap<u32, Vec<Addr>>, OpError> {
        let _turn = self.dump_turn().await;
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("address dump", e))?;
        let mut out: BTreeMap<u32, Vec<Addr>> = BTreeMap::new();
        for m in &msgs {
            if let Some(a) = parse_addr(m) {
                out.entry(m.header.index).or_default().push(a);
            }
        }
        Ok(out)
    }

    /// The raw address messages of one interface (a dump, filtered to it).
    pub async fn address_messages(&self, ifindex: u32) -> Result<Vec<AddressMessage>, OpError> {
        let _turn = self.dump_turn().await;
        self.handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("address dump", e))
    }

    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<Addr>, OpError> {
        Ok(self
            .address_messages(ifindex)
            .await?
            .iter()
            .filter_map(parse_addr)
            .collect())
    }

    pub async fn list_interfaces(&self) -> Result<Vec<InterfaceInfo>, OpError> {
        let links = self.links().await?;
        self.describe(links).await
    }

    /// What [`Netlink::list_interfaces`] says of the interfaces `names` only (a creation's
    /// reply): one lookup each instead of a dump, and no driver lookup for the others — in a
    /// TCG guest every interface's driver query is a millisecond or more.
    pub async fn interfaces_named(&self, names: &[&str]) -> Result<Vec<InterfaceInfo>, OpError> {
        let mut links = Vec::with_capacity(names.len());
        for n in names {
            links.push(self.link(n).await?);
        }
        self.describe(links).await
    }

    /// `links` with their addresses and drivers.
    async fn describe(&self, links: Vec<Link>) -> Result<Vec<InterfaceInfo>, OpError> {
        let mut addrs = self.all_addresses().await?;
        let drivers =
            futures::future::join_all(links.iter().map(|l| driver_of(l.name.clone()))).await;
        Ok(links
            .into_iter()
            .zip(drivers)
            .map(|(l, driver)| InterfaceInfo {
                addresses: addrs
                    .remove(&l.ifindex)
                    .unwrap_or_default()
                    .iter()
                    .map(Addr::cidr)
                    .collect(),
                name: l.name,
                ifindex: l.ifindex,
                mac: l.mac,
                mtu: l.mtu,
                up: l.up,
                driver,
                kind: l.kind,
            })
            .collect())
    }

    pub async fn set_link(&self, ifname: &str, up: bool) -> Result<(), OpError> {
        let l = self.link(ifname).await?;
        let req = self.handle.link().set(l.ifindex);
        let req = if up { req.up() } else { req.down() };
        req.execute().await.map_err(|e| {
            nl_err(
                &format!("setting {ifname} {}", if up { "up" } else { "down" }),
                e,
            )
        })
    }

    pub async fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), OpError> {
        let l = self.link(ifname).await?;
        self.handle
            .link()
            .set(l.ifindex)
            .mtu(mtu)
            .execute()
            .await
            .map_err(|e| nl_err(&format!("setting MTU {mtu} on {ifname}"), e))
    }

    pub async fn add_address(&self, ifname: &str, addr: &str) -> Result<(), OpError> {
        // `ADDRESS/PREFIX`, or `ADDRESS/PREFIX peer PEER` (a point-to-point address).
        let (own, peer) = match addr.split_once(" peer ") {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (addr, None),
        };
        let net: ipnet::IpNet = own.parse().map_err(|_| {
            OpError::new(
                ErrorKind::BadRequest,
                format!("invalid address {addr:?}: expected ADDRESS/PREFIX [peer ADDRESS]"),
            )
        })?;
        let peer: Option<std::net::IpAddr> = match peer {
            Some(p) => match p.parse::<std::net::IpAddr>() {
                Ok(p) if p.is_ipv6() == net.addr().is_ipv6() => Some(p),
                _ => {
                    return Err(OpError::new(
                        ErrorKind::BadRequest,
                        format!(
                            "invalid peer in {addr:?}: an address of {}'s family",
                            net.addr()
                        ),
                    ))
                }
            },
            None => None,
        };
        let l = self.link(ifname).await?;
        let mut req = self
            .handle
            .address()
            .add(l.ifindex, net.addr(), net.prefix_len());
        if let Some(p) = peer {
            use netlink_packet_route::address::AddressAttribute;
            let m = req.message_mut();
            m.attributes.retain(|a| {
                !matches!(a, AddressAttribute::Address(_) | AddressAttribute::Local(_))
            });
            m.attributes.push(AddressAttribute::Local(net.addr()));
            m.attributes.push(AddressAttribute::Address(p));
        }
        let res = req.execute().await;
        match res {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| c.get()) == Some(-libc::EEXIST) =>
            {
                tracing::debug!("{addr} already on {ifname}");
                Ok(())
            }
            Err(e) => Err(nl_err(&format!("adding {addr} to {ifname}"), e)),
        }
    }

    /// Delete one address (by value) from an interface.
    pub async fn del_address(&self, ifindex: u32, addr: &Addr) -> Result<(), OpError> {
        for m in self.address_messages(ifindex).await? {
            if parse_addr(&m).is_some_and(|a| a.ip == addr.ip && a.prefix == addr.prefix) {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("deleting {}", addr.cidr()), e))?;
            }
        }
        Ok(())
    }

    /// Remove every non-link-local address.
    pub async fn flush_addresses(&self, ifname: &str) -> Result<(), OpError> {
        let l = self.link(ifname).await?;
        for m in self.address_messages(l.ifindex).await? {
            let Some(a) = parse_addr(&m) else { continue };
            if a.is_link_local() {
                continue;
            }
            match self.handle.address().del(m).execute().await {
                Ok(()) => {}
                // Deleting a primary IPv4 address also removes its secondaries.
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.code.map(|c| c.get()) == Some(-libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(nl_err(&format!("deleting {} from {ifname}", a.cidr()), e)),
            }
        }
        Ok(())
    }

    /// Poll until no IPv6 address of the interface is tentative.
    pub async fn wait_dad(&self, ifname: &str, timeout: Duration) -> Result<(), OpError> {
        let l = self.link(ifname).await?;
        // A controller may ask for u64::MAX ms: `now + timeout` would overflow (a panic).
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout.min(MAX_WAIT))
            .unwrap_or_else(tokio::time::Instant::now);
        loop {
            // An address stays tentative until its device's operational state is up, which
            // the kernel's link watch sets up to a second after the carrier came (it runs its
            // events at most once a second): asking each device for its link state runs its
            // pending event now. A read-only question, as `ethtool DEV` asks it.
            for link in self.links().await? {
                if link.up {
                    super::ethtool_ioctl::link_detected(&link.name);
                }
            }
            let tentative: Vec<String> = self
                .addresses(l.ifindex)
                .await?
                .iter()
                .filter(|a| a.tentative)
                .map(Addr::cidr)
                .collect();
            if tentative.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OpError::new(
                    ErrorKind::Timeout,
                    format!(
                        "DAD on {ifname} not finished after {} ms: still tentative: {}",
                        timeout.as_millis(),
                        tentative.join(", ")
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Check an interface name as the kernel's `dev_valid_name` does: 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:`, whitespace or NUL; and, stricter than the kernel, no leading `-` (the
/// name becomes an `ethtool` argument, where it would be an option) and no control characters
/// (it ends up in logs). Every name-based operation goes through [`Netlink::link`], which
/// checks first: a controller-supplied name of 100 000 bytes made netlink-packet-route panic
/// while encoding the request, and the netlink connection task died with it (every later
/// netlink request of the session failed).
pub fn check_ifname(name: &str) -> Result<(), OpError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        return Ok(());
    }
    let shown = crate::text::clip(name, 32);
    Err(OpError::new(
        ErrorKind::BadRequest,
        format!(
            "invalid interface name {shown:?} ({} bytes; 1 to 15, no leading '-', no '/', ':', \
             whitespace or control characters)",
            name.len()
        ),
    ))
}

fn no_such(ifname: &str) -> OpError {
    OpError::new(ErrorKind::NotFound, format!("no such interface: {ifname}"))
}

/// Driver name (what `ethtool -i` reports), asked of the kernel in the calling thread's
/// network namespace; the sysfs link when the interface answers no driver information.
async fn driver_of(ifname: String) -> Option<String> {
    super::ethtool_ioctl::driver(&ifname).or_else(|| {
        std::fs::read_link(format!("/sys/class/net/{ifname}/device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    })
}

pub fn parse_ethtool_driver(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("driver:"))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
}

/// Parse `ethtool -k` output: `name: on|off [fixed]` lines (indented sub-features included).
pub fn parse_ethtool_features(text: &str) -> Vec<Offload> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((name, rest)) = line.split_once(": ") else {
            continue;
        };
        if name.is_empty() || name.contains(' ') {
            continue;
        }
        let mut words = rest.split_whitespace();
        let enabled = match words.next() {
            Some("on") => true,
            Some("off") => false,
            _ => continue,
        };
        let fixed = words.any(|w| w == "[fixed]");
        out.push(Offload {
            name: name.to_string(),
            enabled,
            fixed,
        });
    }
    out
}

async fn run_ethtool(args: &[&str]) -> Result<String, OpError> {
    let out = tokio::process::Command::new("ethtool")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OpError::new(ErrorKind::Failed, "ethtool: not found in PATH")
            } else {
                OpError::new(ErrorKind::Failed, format!("running ethtool: {e}"))
            }
        })?;
    if !out.status.success() {
        return Err(OpError::new(
            ErrorKind::Failed,
            format!(
                "ethtool {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An ethtool feature name as `ethtool -k` prints them or `-K` takes them (`gro`,
/// `tx-udp_tnl-segmentation`): 1 to 64 ASCII letters, digits, `-` and `_`, not starting with
/// `-` (it is an argument of `ethtool -K`).
pub fn check_feature_name(name: &str) -> Result<(), OpError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    let mut shown: String = name.chars().take(64).collect();
    if name.chars().nth(64).is_some() {
        shown.push('…');
    }
    Err(OpError::new(
        ErrorKind::BadRequest,
        format!(
            "invalid feature name {shown:?} (1 to 64 letters, digits, '-' or '_', no leading '-')"
        ),
    ))
}

pub async fn get_offloads(ifname: &str) -> Result<Vec<Offload>, OpError> {
    check_ifname(ifname)?;
    let text = run_ethtool(&["-k", ifname]).await?;
    Ok(parse_ethtool_features(&text))
}

pub async fn set_offloads(ifname: &str, features: &[(String, bool)]) -> Result<(), OpError> {
    if features.is_empty() {
        return Ok(());
    }
    check_ifname(ifname)?;
    let mut args: Vec<&str> = vec!["-K", ifname];
    for (name, on) in features {
        check_feature_name(name)?;
        args.push(name);
        args.push(if *on { "on" } else { "off" });
    }
    run_ethtool(&args).await?;
    // ethtool may exit 0 while the driver refused a change: check.
    let now = get_offloads(ifname).await?;
    let mut refused = Vec::new();
    for (name, on) in features {
        let long = crate::protocol::offload_long_name(name);
        if let Some(f) = now.iter().find(|f| f.name == long || f.name == *name) {
            if f.enabled != *on {
                refused.push(format!(
                    "{name} is still {}{}",
                    if f.enabled { "on" } else { "off" },
                    if f.fixed { " [fixed]" } else { "" }
                ));
            }
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(OpError::new(
            ErrorKind::Failed,
            format!("{ifname}: {}", refused.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Features for d0:\nrx-checksumming: on\ntx-checksumming: on\n\ttx-checksum-ipv4: off [fixed]\n\ttx-checksum-sctp: on\nscatter-gather: on\ngeneric-receive-offload: off\nlarge-receive-offload: off [fixed]\nhsr-fwd-offload: off [fixed]\nweird line\nloopback: off [fixed]\n";

    #[test]
    fn parses_ethtool_k() {
        let f = parse_ethtool_features(SAMPLE);
        let names: Vec<&str> = f.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rx-checksumming",
                "tx-checksumming",
                "tx-checksum-ipv4",
                "tx-checksum-sctp",
                "scatter-gather",
                "generic-receive-offload",
                "large-receive-offload",
                "hsr-fwd-offload",
                "loopback"
            ]
        );
        let lro = f.iter().find(|o| o.name == "large-receive-offload");
        assert_eq!(
            lro,
            Some(&Offload {
                name: "large-receive-offload".into(),
                enabled: false,
                fixed: true
            })
        );
        assert!(f
            .iter()
            .any(|o| o.name == "rx-checksumming" && o.enabled && !o.fixed));
    }

    #[test]
    fn parses_driver() {
        assert_eq!(
            parse_ethtool_driver("driver: veth\nversion: 1.0\n"),
            Some("veth".into())
        );
        assert_eq!(parse_ethtool_driver("driver: \n"), None);
        assert_eq!(parse_ethtool_driver("nothing"), None);
    }

    #[test]
    fn interface_names() {
        for ok in ["lo", "eth0", "veth-a.100", "x", "123456789012345"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "eth0:1",
            "a b",
            "lo\0x",
            "tab\t",
            "-s",
            "--help",
            "a\x1bb",
            "x\x7f",
            "nbsp\u{a0}",
        ] {
            let e = check_ifname(bad).err();
            assert_eq!(
                e.as_ref().map(|e| e.kind),
                Some(ErrorKind::BadRequest),
                "{bad:?}"
            );
        }
        let e = check_ifname(&"x".repeat(100_000))
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(e.len() < 150 && e.contains("100000 bytes"), "{e}");
    }

    #[test]
    fn feature_names() {
        for ok in [
            "gro",
            "tx-checksum-ipv4",
            "tx-udp_tnl-segmentation",
            "rx-gro-hw",
        ] {
            assert!(check_feature_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-s",
            "--set-priv-flags",
            "a b",
            "gro\non",
            "x;y",
            "é",
            &"x".repeat(65),
        ] {
            assert_eq!(
                check_feature_name(bad).err().map(|e| e.kind),
                Some(ErrorKind::BadRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn link_local_detection() {
        let a = |s: &str| Addr {
            ip: s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            prefix: 64,
            tentative: false,
        };
        assert!(a("fe80::1").is_link_local());
        assert!(a("febf::1").is_link_local());
        assert!(!a("fec0::1").is_link_local());
        assert!(!a("fd00::1").is_link_local());
        assert!(a("169.254.1.1").is_link_local());
        assert!(!a("198.18.0.1").is_link_local());
    }
}
