//! Tunnel links (gre, gretap, ip6gre, ip6gretap, ipip, sit, ip6tnl, vxlan, geneve): their
//! checks, the kernel feature each needs, and their `IFLA_INFO_DATA`. The data is built as raw
//! netlink attributes from the kernel's uapi numbers (`if_tunnel.h`, `if_link.h`):
//! netlink-packet-route 0.19 has no typed attributes for most of these kinds.

use super::OpError;
use crate::protocol::{
    ErrorKind, GeneveOptions, GreOptions, IpTunMode, IpTunOptions, LinkSpec, VxlanOptions,
};
use netlink_packet_route::link::{InfoData, InfoKind};
use std::net::IpAddr;

// if_tunnel.h: IFLA_GRE_*
const GRE_IFLAGS: u16 = 2;
const GRE_OFLAGS: u16 = 3;
const GRE_IKEY: u16 = 4;
const GRE_OKEY: u16 = 5;
const GRE_LOCAL: u16 = 6;
const GRE_REMOTE: u16 = 7;
const GRE_TTL: u16 = 8;
const GRE_TOS: u16 = 9;
const GRE_COLLECT_METADATA: u16 = 18;
/// `GRE_KEY` of the GRE flags (network order on the wire).
const GRE_KEY: u16 = 0x2000;
// if_tunnel.h: IFLA_IPTUN_*
const IPTUN_LOCAL: u16 = 2;
const IPTUN_REMOTE: u16 = 3;
const IPTUN_TTL: u16 = 4;
const IPTUN_TOS: u16 = 5;
const IPTUN_PROTO: u16 = 9;
// if_link.h: IFLA_VXLAN_*
const VXLAN_ID: u16 = 1;
const VXLAN_GROUP: u16 = 2;
const VXLAN_LINK: u16 = 3;
const VXLAN_LOCAL: u16 = 4;
const VXLAN_TTL: u16 = 5;
const VXLAN_LEARNING: u16 = 7;
const VXLAN_PORT: u16 = 15;
const VXLAN_GROUP6: u16 = 16;
const VXLAN_LOCAL6: u16 = 17;
const VXLAN_COLLECT_METADATA: u16 = 25;
const VXLAN_GPE: u16 = 27;
// if_link.h: IFLA_GENEVE_*
const GENEVE_ID: u16 = 1;
const GENEVE_REMOTE: u16 = 2;
const GENEVE_TTL: u16 = 3;
const GENEVE_PORT: u16 = 5;
const GENEVE_COLLECT_METADATA: u16 = 6;
const GENEVE_REMOTE6: u16 = 7;

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

fn bad(m: String) -> OpError {
    OpError::new(ErrorKind::BadRequest, m)
}

/// Netlink attributes, each padded to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self
    }
    fn ip(&mut self, kind: u16, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.put(kind, &a.octets()),
            IpAddr::V6(a) => self.put(kind, &a.octets()),
        }
    }
}

/// Whether the kind is a tunnel this module handles.
pub fn is_tunnel(spec: &LinkSpec) -> bool {
    feature(spec).is_some()
}

/// What a tunnel kind needs from the kernel: (feature, module).
pub fn feature(spec: &LinkSpec) -> Option<(&'static str, &'static str)> {
    Some(match spec {
        LinkSpec::Gre(_) => ("GRE tunnel support", "module ip_gre"),
        LinkSpec::GreTap(_) => ("GRE tunnel support", "module ip_gre"),
        LinkSpec::Ip6Gre(_) | LinkSpec::Ip6GreTap(_) => {
            ("IPv6 GRE tunnel support", "module ip6_gre")
        }
        LinkSpec::Ipip(_) => ("IP-in-IP tunnel support", "module ipip"),
        LinkSpec::Sit(_) => ("IPv6-in-IPv4 (SIT) tunnel support", "module sit"),
        LinkSpec::Ip6Tnl(_) => ("IPv6 tunnel support", "module ip6_tunnel"),
        LinkSpec::Vxlan(_) => ("VXLAN support", "module vxlan"),
        LinkSpec::Geneve(_) => ("Geneve support", "module geneve"),
        _ => return None,
    })
}

/// The family a kind's underlay addresses must have (None: either, but all the same).
fn family(spec: &LinkSpec) -> Option<bool> {
    match spec {
        LinkSpec::Gre(_) | LinkSpec::GreTap(_) | LinkSpec::Ipip(_) | LinkSpec::Sit(_) => {
            Some(false)
        }
        LinkSpec::Ip6Gre(_) | LinkSpec::Ip6GreTap(_) | LinkSpec::Ip6Tnl(_) => Some(true),
        _ => None,
    }
}

/// The modes a kind accepts.
fn modes(spec: &LinkSpec) -> &'static [IpTunMode] {
    match spec {
        LinkSpec::Ipip(_) => &[IpTunMode::Any, IpTunMode::Ipip, IpTunMode::Mplsip],
        LinkSpec::Sit(_) => &[
            IpTunMode::Any,
            IpTunMode::Ip6ip,
            IpTunMode::Ipip,
            IpTunMode::Mplsip,
        ],
        LinkSpec::Ip6Tnl(_) => &[IpTunMode::Any, IpTunMode::Ip6ip6, IpTunMode::Ipip6],
        _ => &[],
    }
}

/// Check a tunnel spec's fields (addresses of the kind's family, one family throughout,
/// modes the kind has, VNIs in range); not a tunnel: Ok.
pub fn check(ifname: &str, spec: &LinkSpec) -> Result<(), OpError> {
    let kind = spec.kind_name();
    let mut addrs: Vec<(&str, IpAddr)> = Vec::new();
    let mut push = |what: &'static str, a: &Option<IpAddr>| {
        if let Some(a) = a {
            addrs.push((what, *a));
        }
    };
    match spec {
        LinkSpec::Gre(o) | LinkSpec::GreTap(o) | LinkSpec::Ip6Gre(o) | LinkSpec::Ip6GreTap(o) => {
            if o.external && (o.local.is_some() || o.remote.is_some() || o.key.is_some()) {
                return Err(bad(format!(
                    "{kind} {ifname}: external takes no local, remote or key (routes give them)"
                )));
            }
            push("local", &o.local);
            push("remote", &o.remote);
        }
        LinkSpec::Ipip(o) | LinkSpec::Sit(o) | LinkSpec::Ip6Tnl(o) => {
            push("local", &o.local);
            push("remote", &o.remote);
            if let Some(m) = o.mode {
                if !modes(spec).contains(&m) {
                    let ok: Vec<&str> = modes(spec).iter().map(|m| m.name()).collect();
                    return Err(bad(format!(
                        "{kind} {ifname}: mode {} is not one of {}",
                        m.name(),
                        ok.join(", ")
                    )));
                }
            }
            if matches!(spec, LinkSpec::Ip6Tnl(_)) && o.tos.is_some() {
                return Err(bad(format!("{kind} {ifname}: ip6tnl has no tos option")));
            }
        }
        LinkSpec::Vxlan(o) => {
            if o.id > MAX_VNI {
                return Err(bad(format!(
                    "{kind} {ifname}: id {} is above {MAX_VNI}",
                    o.id
                )));
            }
            if o.external && (o.id != 0 || o.remote.is_some() || o.group.is_some()) {
                return Err(bad(format!(
                    "{kind} {ifname}: external takes no id, remote or group (routes give them)"
                )));
            }
            if o.gpe && (!o.external || o.learning != Some(false)) {
                return Err(bad(format!(
                    "{kind} {ifname}: gpe needs external and learning off"
                )));
            }
            if o.remote.is_some() && o.group.is_some() {
                return Err(bad(format!(
                    "{kind} {ifname}: remote and group exclude each other"
                )));
            }
            if let Some(g) = o.group {
                if !g.is_multicast() {
                    return Err(bad(format!(
                        "{kind} {ifname}: group {g} is not a multicast address"
                    )));
                }
            }
            if let Some(r) = o.remote {
                if r.is_multicast() {
                    return Err(bad(format!(
                        "{kind} {ifname}: remote {r} is a multicast address (use group)"
                    )));
                }
            }
            if let Some(p) = &o.parent {
                super::net::check_ifname(p)?;
            }
            push("remote", &o.remote);
            push("group", &o.group);
            push("local", &o.local);
        }
        LinkSpec::Geneve(o) => {
            if o.id > MAX_VNI {
                return Err(bad(format!(
                    "{kind} {ifname}: id {} is above {MAX_VNI}",
                    o.id
                )));
            }
            if o.external && (o.id != 0 || o.remote.is_some()) {
                return Err(bad(format!(
                    "{kind} {ifname}: external takes no id or remote (routes give them)"
                )));
            }
            if o.remote.is_none() && !o.external {
                return Err(bad(format!(
                    "{kind} {ifname}: remote is required (or external)"
                )));
            }
            push("remote", &o.remote);
        }
        _ => return Ok(()),
    }
    let want = family(spec).or_else(|| addrs.first().map(|(_, a)| a.is_ipv6()));
    for (what, a) in &addrs {
        if Some(a.is_ipv6()) != want {
            let fam = if want == Some(true) { "IPv6" } else { "IPv4" };
            return Err(bad(format!(
                "{kind} {ifname}: {what} {a} is not an {fam} address"
            )));
        }
    }
    Ok(())
}

fn gre(o: &GreOptions) -> Vec<u8> {
    let mut a = Attrs::default();
    if let Some(k) = o.key {
        a.put(GRE_IFLAGS, &GRE_KEY.to_be_bytes())
            .put(GRE_OFLAGS, &GRE_KEY.to_be_bytes())
            .put(GRE_IKEY, &k.to_be_bytes())
            .put(GRE_OKEY, &k.to_be_bytes());
    }
    if let Some(l) = o.local {
        a.ip(GRE_LOCAL, l);
    }
    if let Some(r) = o.remote {
        a.ip(GRE_REMOTE, r);
    }
    if let Some(t) = o.ttl {
        a.put(GRE_TTL, &[t]);
    }
    if let Some(t) = o.tos {
        a.put(GRE_TOS, &[t]);
    }
    if o.external {
        a.put(GRE_COLLECT_METADATA, &[]);
    }
    a.0
}

fn iptun(o: &IpTunOptions) -> Vec<u8> {
    let mut a = Attrs::default();
    if let Some(l) = o.local {
        a.ip(IPTUN_LOCAL, l);
    }
    if let Some(r) = o.remote {
        a.ip(IPTUN_REMOTE, r);
    }
    if let Some(t) = o.ttl {
        a.put(IPTUN_TTL, &[t]);
    }
    if let Some(t) = o.tos {
        a.put(IPTUN_TOS, &[t]);
    }
    if let Some(m) = o.mode {
        a.put(IPTUN_PROTO, &[m.proto()]);
    }
    a.0
}

fn vxlan(o: &VxlanOptions, parent: Option<u32>) -> Vec<u8> {
    let mut a = Attrs::default();
    if o.external {
        a.put(VXLAN_COLLECT_METADATA, &[1]);
    } else {
        a.put(VXLAN_ID, &o.id.to_ne_bytes());
    }
    if o.gpe {
        a.put(VXLAN_GPE, &[]);
    }
    if let Some(l) = o.learning {
        a.put(VXLAN_LEARNING, &[u8::from(l)]);
    }
    if let Some(g) = o.remote.or(o.group) {
        a.ip(
            if g.is_ipv6() {
                VXLAN_GROUP6
            } else {
                VXLAN_GROUP
            },
            g,
        );
    }
    if let Some(l) = o.local {
        a.ip(
            if l.is_ipv6() {
                VXLAN_LOCAL6
            } else {
                VXLAN_LOCAL
            },
            l,
        );
    }
    if let Some(i) = parent {
        a.put(VXLAN_LINK, &i.to_ne_bytes());
    }
    if let Some(t) = o.ttl {
        a.put(VXLAN_TTL, &[t]);
    }
    if let Some(p) = o.dstport {
        a.put(VXLAN_PORT, &p.to_be_bytes());
    }
    a.0
}

fn geneve(o: &GeneveOptions) -> Vec<u8> {
    let mut a = Attrs::default();
    if o.external {
        a.put(GENEVE_COLLECT_METADATA, &[]);
    } else {
        a.put(GENEVE_ID, &o.id.to_ne_bytes());
    }
    if let Some(r) = o.remote {
        a.ip(
            if r.is_ipv6() {
                GENEVE_REMOTE6
            } else {
                GENEVE_REMOTE
            },
            r,
        );
    }
    if let Some(t) = o.ttl {
        a.put(GENEVE_TTL, &[t]);
    }
    if let Some(p) = o.dstport {
        a.put(GENEVE_PORT, &p.to_be_bytes());
    }
    a.0
}

/// The link kind and `IFLA_INFO_DATA` of a tunnel (None: not a tunnel). `parent` is the
/// resolved underlay device of a vxlan.
pub fn info(spec: &LinkSpec, parent: Option<u32>) -> Option<(InfoKind, InfoData)> {
    let data = match spec {
        LinkSpec::Gre(o) | LinkSpec::GreTap(o) | LinkSpec::Ip6Gre(o) | LinkSpec::Ip6GreTap(o) => {
            gre(o)
        }
        LinkSpec::Ipip(o) | LinkSpec::Sit(o) | LinkSpec::Ip6Tnl(o) => iptun(o),
        LinkSpec::Vxlan(o) => vxlan(o, parent),
        LinkSpec::Geneve(o) => geneve(o),
        _ => return None,
    };
    Some((
        InfoKind::Other(spec.kind_name().into()),
        InfoData::Other(data),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(spec: &LinkSpec, parent: Option<u32>) -> Vec<u8> {
        match info(spec, parent) {
            Some((InfoKind::Other(k), InfoData::Other(d))) => {
                assert_eq!(k, spec.kind_name());
                d
            }
            other => panic!("{other:?}"),
        }
    }

    /// (type, value) pairs of a raw attribute buffer.
    fn attrs(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let kind = u16::from_ne_bytes([b[2], b[3]]);
            out.push((kind, b[4..len].to_vec()));
            b = &b[(len + 3) & !3..];
        }
        out
    }

    fn v4(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn gre_with_key_sets_flags_and_both_keys() {
        let o = GreOptions {
            local: v4("198.18.128.1"),
            remote: v4("198.18.128.2"),
            key: Some(0x01020304),
            ttl: Some(64),
            tos: None,
            external: false,
        };
        let a = attrs(&data(&LinkSpec::Gre(o), None));
        assert_eq!(
            a,
            vec![
                (GRE_IFLAGS, vec![0x20, 0]),
                (GRE_OFLAGS, vec![0x20, 0]),
                (GRE_IKEY, vec![1, 2, 3, 4]),
                (GRE_OKEY, vec![1, 2, 3, 4]),
                (GRE_LOCAL, vec![198, 18, 128, 1]),
                (GRE_REMOTE, vec![198, 18, 128, 2]),
                (GRE_TTL, vec![64]),
            ]
        );
    }

    #[test]
    fn ip6gre_carries_16_byte_addresses() {
        let o = GreOptions {
            remote: Some("fd00:128::2".parse().unwrap()),
            ..Default::default()
        };
        let a = attrs(&data(&LinkSpec::Ip6Gre(o), None));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, GRE_REMOTE);
        assert_eq!(a[0].1.len(), 16);
        assert_eq!(&a[0].1[..4], &[0xfd, 0, 0x01, 0x28]);
    }

    #[test]
    fn iptun_modes_become_protocol_numbers() {
        let o = |m| IpTunOptions {
            local: v4("198.18.128.1"),
            remote: v4("198.18.128.2"),
            ttl: Some(64),
            tos: None,
            mode: Some(m),
        };
        let a = attrs(&data(&LinkSpec::Ipip(o(IpTunMode::Ipip)), None));
        assert_eq!(a.last(), Some(&(IPTUN_PROTO, vec![4])));
        assert!(a.contains(&(IPTUN_TTL, vec![64])));
        let a = attrs(&data(&LinkSpec::Sit(o(IpTunMode::Ip6ip)), None));
        assert_eq!(a.last(), Some(&(IPTUN_PROTO, vec![41])));
        let a = attrs(&data(&LinkSpec::Ipip(o(IpTunMode::Mplsip)), None));
        assert_eq!(a.last(), Some(&(IPTUN_PROTO, vec![137])));
        // A mode the kind lacks, and the wrong family, are refused.
        assert!(check("t0", &LinkSpec::Ipip(o(IpTunMode::Ip6ip6))).is_err());
        let e = check("t0", &LinkSpec::Ip6Tnl(o(IpTunMode::Ip6ip6))).unwrap_err();
        assert!(e.message.contains("not an IPv6 address"), "{}", e.message);
        assert!(check("t0", &LinkSpec::Ipip(o(IpTunMode::Any))).is_ok());
    }

    #[test]
    fn vxlan_and_geneve_data() {
        let o = VxlanOptions {
            id: 1,
            remote: v4("198.18.128.2"),
            parent: Some("eth0".into()),
            dstport: Some(4789),
            ..Default::default()
        };
        let spec = LinkSpec::Vxlan(o.clone());
        check("vx0", &spec).unwrap();
        let a = attrs(&data(&spec, Some(7)));
        assert_eq!(
            a,
            vec![
                (VXLAN_ID, 1u32.to_ne_bytes().to_vec()),
                (VXLAN_GROUP, vec![198, 18, 128, 2]),
                (VXLAN_LINK, 7u32.to_ne_bytes().to_vec()),
                (VXLAN_PORT, vec![0x12, 0xb5]),
            ]
        );
        let both = VxlanOptions {
            group: v4("239.1.1.1"),
            ..o.clone()
        };
        assert!(check("vx0", &LinkSpec::Vxlan(both)).is_err());
        let mixed = VxlanOptions {
            local: Some("fd00:128::1".parse().unwrap()),
            ..o.clone()
        };
        assert!(check("vx0", &LinkSpec::Vxlan(mixed)).is_err());
        let big = VxlanOptions {
            id: MAX_VNI + 1,
            ..o
        };
        assert!(check("vx0", &LinkSpec::Vxlan(big)).is_err());
        let g = GeneveOptions {
            id: 5,
            remote: Some("fd00:128::2".parse().unwrap()),
            dstport: None,
            ttl: None,
            external: false,
        };
        let a = attrs(&data(&LinkSpec::Geneve(g.clone()), None));
        assert_eq!(a[0], (GENEVE_ID, 5u32.to_ne_bytes().to_vec()));
        assert_eq!(a[1].0, GENEVE_REMOTE6);
        assert!(check(
            "gn0",
            &LinkSpec::Geneve(GeneveOptions { remote: None, ..g })
        )
        .is_err());
    }

    #[test]
    fn capture_jobs_are_validated() {
        use crate::protocol::{CaptureFilter, JobSpec};
        let job = |device: &str, filter: CaptureFilter| JobSpec::Capture {
            device: device.into(),
            filter,
        };
        let v4 = CaptureFilter {
            proto: Some(47),
            src: v4("198.18.128.1"),
            dst: v4("198.18.128.2"),
            udp_dport: None,
        };
        assert!(super::super::jobs::validate(&job("eth0", v4.clone())).is_ok());
        // An option-like or over-long device name, and mixed families, are refused.
        assert!(super::super::jobs::validate(&job("-w/tmp/x", v4.clone())).is_err());
        assert!(super::super::jobs::validate(&job(&"e".repeat(16), v4.clone())).is_err());
        let mixed = CaptureFilter {
            dst: Some("fd00:128::2".parse().unwrap()),
            ..v4
        };
        let e = super::super::jobs::validate(&job("eth0", mixed)).unwrap_err();
        assert!(e.message.contains("differ in family"), "{}", e.message);
    }

    #[test]
    fn spec_json_round_trips() {
        let s = LinkSpec::Ip6Tnl(IpTunOptions {
            mode: Some(IpTunMode::Ip6ip6),
            remote: Some("fd00:128::2".parse().unwrap()),
            ..Default::default()
        });
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"kind":"ip6tnl","local":null,"remote":"fd00:128::2","ttl":null,"tos":null,"mode":"ip6ip6"}"#
        );
        assert_eq!(serde_json::from_str::<LinkSpec>(&j).unwrap(), s);
        let g: LinkSpec = serde_json::from_str(r#"{"kind":"gretap","key":7}"#).unwrap();
        assert_eq!(
            g,
            LinkSpec::GreTap(GreOptions {
                key: Some(7),
                ..Default::default()
            })
        );
    }
}
