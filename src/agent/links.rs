//! Links, routes, neighbours and bridge VLAN entries, and the journal that undoes them.
//!
//! Every operation here records what it created or changed in a journal, in order; at
//! EndRecipe and when the connection ends (Bye, EOF, idle timeout) the journal is undone in
//! reverse: created links are deleted (a team's teamd is stopped), ports get their old master
//! and state back, links moved between namespaces are moved back with their addresses and
//! state, routes and neighbour entries are removed or put back, and the agent's namespaces are
//! deleted. Operations run as detached tasks under one lock, so a request aborted by the end
//! of the session still finishes and is journaled before the undo starts.
//!
//! A link kind the kernel lacks (no 8021q, bonding or team driver, no bridge VLAN filtering)
//! fails with [`ErrorKind::Unsupported`] and a message naming the feature and kernel module.

use super::netns::{self, Netns};
use super::{net, OpError, Session};
use crate::protocol::{
    BondOptions, BridgeOptions, BridgeVlan, ErrorKind, JobSpec, LinkSpec, MacvlanMode,
    NeighbourSpec, NeighbourState as WireNeighState, Op, Reply, RouteKind, RouteSpec, ShellOutput,
    TeamLinkWatch, TeamOptions, TeamPortConfig, TeamRunner, VlanProtocol,
};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, InfoBond, InfoBridge, InfoData, InfoKind, InfoMacSec,
    InfoMacVlan, InfoVeth, InfoVlan, LinkAttribute, LinkExtentMask, LinkFlag, LinkInfo,
    LinkMessage, VlanProtocol as NlVlanProtocol,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteHeader, RouteLwEnCapType, RouteLwTunnelEncap,
    RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_utils::nla::DefaultNla;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a link lives: `None` is the agent's own namespace, `Some(name)` one of its namespaces.
pub type Loc = Option<String>;

fn loc_name(loc: &Loc) -> String {
    match loc {
        None => "the agent's namespace".to_string(),
        Some(n) => format!("namespace {n}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad(m: impl Into<String>) -> OpError {
    OpError::new(ErrorKind::BadRequest, m)
}

fn failed(m: impl Into<String>) -> OpError {
    OpError::new(ErrorKind::Failed, m)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// A name for a link the agent creates: a valid interface name ([`net::check_ifname`]) that
/// also does not start with `-` (team names and ports go on teamd/teamdctl command lines).
pub fn check_new_ifname(name: &str) -> Result<(), OpError> {
    net::check_ifname(name)?;
    if name.starts_with('-') {
        return Err(bad(format!(
            "invalid interface name {name:?}: must not start with '-'"
        )));
    }
    Ok(())
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], OpError> {
    let err = || {
        bad(format!(
            "invalid MAC address {s:?}: expected aa:bb:cc:dd:ee:ff"
        ))
    };
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next().ok_or_else(err)?;
        if p.len() != 2 {
            return Err(err());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
    }
    if parts.next().is_some() {
        return Err(err());
    }
    Ok(out)
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<(), OpError> {
    match v {
        Some(x) if x < lo || x > hi => Err(bad(format!("{what} {x} out of range {lo}–{hi}"))),
        _ => Ok(()),
    }
}

fn check_vid(vid: u16) -> Result<(), OpError> {
    check_range("VLAN id", Some(vid), 1, 4094)
}

fn check_mtu(mtu: Option<u32>) -> Result<(), OpError> {
    check_range("MTU", mtu, 68, 65536)
}

fn check_bond(o: &BondOptions) -> Result<(), OpError> {
    check_range("ad_actor_sys_prio", o.ad_actor_sys_prio, 1, 65535)?;
    check_range("packets_per_slave", o.packets_per_slave, 0, 65535)?;
    check_range("resend_igmp", o.resend_igmp, 0, 255)?;
    check_range("lp_interval", o.lp_interval, 1, 0x7fff_ffff)?;
    if let Some(t) = &o.arp_ip_target {
        if t.len() > 16 {
            return Err(bad(format!(
                "arp_ip_target has {} addresses; at most 16",
                t.len()
            )));
        }
    }
    if let Some(m) = &o.ad_actor_system {
        let mac = parse_mac(m)?;
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Err(bad(format!(
                "ad_actor_system {m} must be a unicast, non-zero MAC address"
            )));
        }
    }
    if let Some(p) = &o.primary {
        net::check_ifname(p)?;
    }
    Ok(())
}

fn check_team(o: &TeamOptions) -> Result<(), OpError> {
    let runner = o.runner.name();
    let only = |field: &str, set: bool, ok: &[TeamRunner]| {
        if set && !ok.contains(&o.runner) {
            let names: Vec<&str> = ok.iter().map(|r| r.name()).collect();
            Err(bad(format!(
                "team option {field} applies to the {} runner(s), not {runner}",
                names.join("/")
            )))
        } else {
            Ok(())
        }
    };
    only(
        "tx_hash",
        o.tx_hash.is_some(),
        &[TeamRunner::Loadbalance, TeamRunner::Lacp],
    )?;
    only(
        "hwaddr_policy",
        o.hwaddr_policy.is_some(),
        &[TeamRunner::Activebackup],
    )?;
    only("active", o.active.is_some(), &[TeamRunner::Lacp])?;
    only("fast_rate", o.fast_rate.is_some(), &[TeamRunner::Lacp])?;
    only("min_ports", o.min_ports.is_some(), &[TeamRunner::Lacp])?;
    check_range("min_ports", o.min_ports, 1, 255)?;
    if let Some(
        TeamLinkWatch::ArpPing { interval_ms, .. } | TeamLinkWatch::NsnaPing { interval_ms, .. },
    ) = &o.link_watch
    {
        check_range("link_watch interval_ms", *interval_ms, 1, 3_600_000)?;
    }
    Ok(())
}

fn check_spec(ifname: &str, spec: &LinkSpec) -> Result<(), OpError> {
    match spec {
        LinkSpec::Vlan { parent, id, .. } => {
            net::check_ifname(parent)?;
            check_vid(*id)
        }
        LinkSpec::Bridge(o) => {
            check_range("ageing_time", o.ageing_time, 0, 100_000_000)?;
            check_range("forward_delay", o.forward_delay, 0, 3000)?;
            check_range("vlan_default_pvid", o.vlan_default_pvid, 0, 4094)
        }
        LinkSpec::Bond(o) => check_bond(o),
        LinkSpec::Team(o) => check_team(o),
        LinkSpec::Macvlan { parent, .. } | LinkSpec::Macsec { parent, .. } => {
            net::check_ifname(parent)
        }
        LinkSpec::Veth { peer, peer_netns } => {
            check_new_ifname(peer)?;
            if peer_netns.is_none() && peer == ifname {
                return Err(bad(format!("veth {ifname}: the peer needs another name")));
            }
            match peer_netns {
                Some(n) => netns::check_name(n),
                None => Ok(()),
            }
        }
        LinkSpec::Dummy => Ok(()),
        _ => super::tunnels::check(ifname, spec),
    }
}

fn parse_ip(what: &str, s: &str) -> Result<IpAddr, OpError> {
    s.trim().parse().map_err(|_| {
        bad(format!(
            "invalid {what} {s:?}: expected an IPv4 or IPv6 address"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Kernel features
// ---------------------------------------------------------------------------------------------

/// What a link kind needs from the kernel: (feature, module or config option).
pub fn kernel_feature(spec: &LinkSpec) -> (&'static str, &'static str) {
    match spec {
        LinkSpec::Vlan { .. } => ("802.1Q VLAN support", "module 8021q"),
        LinkSpec::Bridge(_) => ("bridge support", "module bridge"),
        LinkSpec::Bond(_) => ("bonding support", "module bonding"),
        LinkSpec::Team(_) => ("team support", "module team"),
        LinkSpec::Macvlan { .. } => ("macvlan support", "module macvlan"),
        LinkSpec::Veth { .. } => ("veth support", "module veth"),
        LinkSpec::Dummy => ("dummy interface support", "module dummy"),
        LinkSpec::Macsec { .. } => ("MACsec support", "module macsec"),
        _ => super::tunnels::feature(spec).unwrap_or(("this link kind", "unknown")),
    }
}

const BRIDGE_VLAN_FEATURE: (&str, &str) = ("bridge VLAN filtering", "CONFIG_BRIDGE_VLAN_FILTERING");

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The error of a missing kernel feature.
pub fn unsupported(feature: (&str, &str)) -> OpError {
    OpError::new(
        ErrorKind::Unsupported,
        format!(
            "kernel lacks {} ({}; kernel {})",
            feature.0,
            feature.1,
            kernel_release()
        ),
    )
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl_failed(what: &str, e: rtnetlink::Error) -> OpError {
    let hint = match errno(&e) {
        Some(libc::EEXIST) => " (it already exists)",
        Some(libc::ENODEV) => " (no such device)",
        Some(libc::EBUSY) => " (busy: a team or bond port may have to be down first)",
        _ => "",
    };
    failed(format!("{what}: {e}{hint}"))
}

// ---------------------------------------------------------------------------------------------
// Link facts and state
// ---------------------------------------------------------------------------------------------

/// What the agent needs to know of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub ifindex: u32,
    pub name: String,
    pub master: Option<u32>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Vec<u8>,
    pub kind: Option<String>,
}

pub fn facts_of(msg: &LinkMessage) -> Facts {
    let mut f = Facts {
        ifindex: msg.header.index,
        name: String::new(),
        master: None,
        mtu: 0,
        up: msg.header.flags.contains(&LinkFlag::Up),
        mac: Vec::new(),
        kind: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => f.name = n.clone(),
            LinkAttribute::Controller(m) if *m != 0 => f.master = Some(*m),
            LinkAttribute::Mtu(m) => f.mtu = *m,
            LinkAttribute::Address(a) => f.mac = a.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        f.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    f
}

async fn find(nl: &net::Netlink, name: &str) -> Result<Option<Facts>, OpError> {
    net::check_ifname(name)?;
    let res = nl
        .handle()
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match res {
        Ok(Some(m)) => Ok(Some(facts_of(&m))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_failed(&format!("looking up {name}"), e)),
    }
}

async fn facts(nl: &net::Netlink, name: &str) -> Result<Facts, OpError> {
    find(nl, name)
        .await?
        .ok_or_else(|| OpError::new(ErrorKind::NotFound, format!("no such interface: {name}")))
}

async fn name_of(nl: &net::Netlink, ifindex: u32) -> Result<Option<String>, OpError> {
    let res = nl
        .handle()
        .link()
        .get()
        .match_index(ifindex)
        .execute()
        .try_next()
        .await;
    match res {
        Ok(Some(m)) => Ok(Some(facts_of(&m).name)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_failed(&format!("looking up ifindex {ifindex}"), e)),
    }
}

/// State of an existing link that an operation is about to disturb (restored on undo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub mtu: u32,
    pub up: bool,
    pub mac: Vec<u8>,
    pub master: Option<String>,
    /// Non-link-local addresses, as the kernel reported them (re-added with the same
    /// broadcast address and label).
    pub addrs: Vec<AddressMessage>,
}

fn addr_of(m: &AddressMessage) -> Option<(IpAddr, u8)> {
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    local.or(address).map(|ip| (ip, m.header.prefix_len))
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Add an address back as it was (header and address, local, broadcast and label only: no
/// lifetimes or kernel flags).
async fn readd_address(
    nl: &net::Netlink,
    ifindex: u32,
    old: &AddressMessage,
) -> Result<(), OpError> {
    let Some((ip, prefix)) = addr_of(old) else {
        return Ok(());
    };
    let mut req = nl.handle().address().add(ifindex, ip, prefix);
    let m = req.message_mut();
    m.header = old.header.clone();
    m.header.index = ifindex;
    m.header.flags = Vec::new();
    m.attributes = old
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                AddressAttribute::Address(_)
                    | AddressAttribute::Local(_)
                    | AddressAttribute::Broadcast(_)
                    | AddressAttribute::Label(_)
            )
        })
        .cloned()
        .collect();
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(nl_failed(&format!("re-adding {ip}/{prefix}"), e)),
    }
}

async fn capture(nl: &net::Netlink, f: &Facts) -> Result<LinkState, OpError> {
    let master = match f.master {
        Some(i) => name_of(nl, i).await?,
        None => None,
    };
    let addrs = nl
        .address_messages(f.ifindex)
        .await?
        .into_iter()
        .filter(|m| addr_of(m).is_some_and(|(ip, _)| !is_link_local(ip)))
        .collect();
    Ok(LinkState {
        mtu: f.mtu,
        up: f.up,
        mac: f.mac.clone(),
        master,
        addrs,
    })
}

async fn set_master(nl: &net::Netlink, port: &Facts, master: Option<u32>) -> Result<(), OpError> {
    let req = nl.handle().link().set(port.ifindex);
    let req = match master {
        Some(m) => req.controller(m),
        None => req.nocontroller(),
    };
    req.execute().await.map_err(|e| {
        nl_failed(
            &match master {
                Some(_) => format!("enslaving {}", port.name),
                None => format!("releasing {} from its master", port.name),
            },
            e,
        )
    })
}

/// Put back what [`capture`] saw: master (when `with_master`), MTU, MAC, missing addresses,
/// link state. Continues past errors and returns the first.
async fn restore(
    nl: &net::Netlink,
    name: &str,
    st: &LinkState,
    with_master: bool,
) -> Result<(), OpError> {
    let mut first: Option<OpError> = None;
    let mut note = |r: Result<(), OpError>| {
        if let Err(e) = r {
            tracing::warn!("restoring {name}: {}", e.message);
            first.get_or_insert(e);
        }
    };
    let f = facts(nl, name).await?;
    if with_master {
        let want = match &st.master {
            Some(m) => Some(facts(nl, m).await?.ifindex),
            None => None,
        };
        if f.master != want {
            note(set_master(nl, &f, want).await);
        }
    }
    if f.mtu != st.mtu && st.mtu != 0 {
        note(nl.set_mtu(name, st.mtu).await);
    }
    if f.mac != st.mac && st.mac.len() == 6 {
        let r = nl
            .handle()
            .link()
            .set(f.ifindex)
            .address(st.mac.clone())
            .execute()
            .await
            .map_err(|e| nl_failed(&format!("restoring the MAC of {name}"), e));
        note(r);
    }
    match nl.addresses(f.ifindex).await {
        Ok(now) => {
            for old in &st.addrs {
                let missing = addr_of(old)
                    .is_some_and(|(ip, p)| !now.iter().any(|n| n.ip == ip && n.prefix == p));
                if missing {
                    note(readd_address(nl, f.ifindex, old).await);
                }
            }
        }
        Err(e) => note(Err(e)),
    }
    if f.up != st.up {
        note(nl.set_link(name, st.up).await);
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn delete_link(nl: &net::Netlink, name: &str) -> Result<(), OpError> {
    let Some(f) = find(nl, name).await? else {
        return Ok(());
    };
    match nl.handle().link().del(f.ifindex).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(nl_failed(&format!("deleting {name}"), e)),
    }
}

async fn move_link(nl: &net::Netlink, f: &Facts, target: RawFd) -> Result<(), OpError> {
    nl.handle()
        .link()
        .set(f.ifindex)
        .setns_by_fd(target)
        .execute()
        .await
        .map_err(|e| nl_failed(&format!("moving {}", f.name), e))
}

// ---------------------------------------------------------------------------------------------
// Link creation
// ---------------------------------------------------------------------------------------------

/// Interface indexes and descriptors a creation message refers to.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub parent: Option<u32>,
    pub master: Option<u32>,
    pub bond_primary: Option<u32>,
    pub peer_netns: Option<RawFd>,
}

fn bond_data(o: &BondOptions, primary: Option<u32>) -> Result<Vec<InfoBond>, OpError> {
    use crate::protocol::{
        AdSelect, ArpAllTargets, ArpValidate, FailOverMac, LacpRate, PrimaryReselect,
        XmitHashPolicy,
    };
    let mut v = Vec::new();
    if let Some(m) = o.mode {
        v.push(InfoBond::Mode(m.number()));
    }
    if let Some(x) = o.miimon {
        v.push(InfoBond::MiiMon(x));
    }
    if let Some(x) = o.updelay {
        v.push(InfoBond::UpDelay(x));
    }
    if let Some(x) = o.downdelay {
        v.push(InfoBond::DownDelay(x));
    }
    if let Some(x) = o.use_carrier {
        v.push(InfoBond::UseCarrier(u8::from(x)));
    }
    if let Some(x) = o.fail_over_mac {
        v.push(InfoBond::FailOverMac(match x {
            FailOverMac::None => 0,
            FailOverMac::Active => 1,
            FailOverMac::Follow => 2,
        }));
    }
    if let Some(x) = o.xmit_hash_policy {
        v.push(InfoBond::XmitHashPolicy(match x {
            XmitHashPolicy::Layer2 => 0,
            XmitHashPolicy::Layer34 => 1,
            XmitHashPolicy::Layer23 => 2,
            XmitHashPolicy::Encap23 => 3,
            XmitHashPolicy::Encap34 => 4,
            XmitHashPolicy::VlanSrcMac => 5,
        }));
    }
    if let Some(x) = o.lacp_rate {
        v.push(InfoBond::AdLacpRate(match x {
            LacpRate::Slow => 0,
            LacpRate::Fast => 1,
        }));
    }
    if let Some(x) = o.ad_select {
        v.push(InfoBond::AdSelect(match x {
            AdSelect::Stable => 0,
            AdSelect::Bandwidth => 1,
            AdSelect::Count => 2,
        }));
    }
    if let Some(x) = o.ad_actor_sys_prio {
        v.push(InfoBond::AdActorSysPrio(x));
    }
    if let Some(x) = o.ad_user_port_key {
        v.push(InfoBond::AdUserPortKey(x));
    }
    if let Some(m) = &o.ad_actor_system {
        v.push(InfoBond::AdActorSystem(parse_mac(m)?));
    }
    if let Some(x) = o.arp_interval {
        v.push(InfoBond::ArpInterval(x));
    }
    if let Some(t) = &o.arp_ip_target {
        v.push(InfoBond::ArpIpTarget(t.clone()));
    }
    if let Some(x) = o.arp_validate {
        v.push(InfoBond::ArpValidate(match x {
            ArpValidate::None => 0,
            ArpValidate::Active => 1,
            ArpValidate::Backup => 2,
            ArpValidate::All => 3,
            ArpValidate::Filter => 4,
            ArpValidate::FilterActive => 5,
            ArpValidate::FilterBackup => 6,
        }));
    }
    if let Some(x) = o.arp_all_targets {
        v.push(InfoBond::ArpAllTargets(match x {
            ArpAllTargets::Any => 0,
            ArpAllTargets::All => 1,
        }));
    }
    if let Some(i) = primary {
        v.push(InfoBond::Primary(i));
    }
    if let Some(x) = o.primary_reselect {
        v.push(InfoBond::PrimaryReselect(match x {
            PrimaryReselect::Always => 0,
            PrimaryReselect::Better => 1,
            PrimaryReselect::Failure => 2,
        }));
    }
    if let Some(x) = o.min_links {
        v.push(InfoBond::MinLinks(x));
    }
    if let Some(x) = o.num_peer_notif {
        v.push(InfoBond::NumPeerNotif(x));
    }
    if let Some(x) = o.all_slaves_active {
        v.push(InfoBond::AllPortsActive(u8::from(x)));
    }
    if let Some(x) = o.packets_per_slave {
        v.push(InfoBond::PacketsPerPort(x));
    }
    if let Some(x) = o.resend_igmp {
        v.push(InfoBond::ResendIgmp(x));
    }
    if let Some(x) = o.lp_interval {
        v.push(InfoBond::LpInterval(x));
    }
    if let Some(x) = o.tlb_dynamic_lb {
        v.push(InfoBond::TlbDynamicLb(u8::from(x)));
    }
    Ok(v)
}

fn nl_vlan_protocol(p: VlanProtocol) -> NlVlanProtocol {
    match p {
        VlanProtocol::Dot1Q => NlVlanProtocol::Ieee8021Q,
        VlanProtocol::Dot1Ad => NlVlanProtocol::Ieee8021Ad,
    }
}

fn bridge_data(o: &BridgeOptions) -> Vec<InfoBridge> {
    let mut v = Vec::new();
    if let Some(x) = o.stp {
        v.push(InfoBridge::StpState(u32::from(x)));
    }
    if let Some(x) = o.ageing_time {
        v.push(InfoBridge::AgeingTime(x));
    }
    if let Some(x) = o.forward_delay {
        v.push(InfoBridge::ForwardDelay(x));
    }
    if let Some(x) = o.vlan_filtering {
        v.push(InfoBridge::VlanFiltering(u8::from(x)));
    }
    if let Some(x) = o.vlan_default_pvid {
        v.push(InfoBridge::VlanDefaultPvid(x));
    }
    if let Some(x) = o.vlan_protocol {
        v.push(InfoBridge::VlanProtocol(u16::from(nl_vlan_protocol(x))));
    }
    if let Some(x) = o.multicast_snooping {
        v.push(InfoBridge::MulticastSnooping(u8::from(x)));
    }
    v
}

fn macvlan_mode(m: MacvlanMode) -> u32 {
    match m {
        MacvlanMode::Private => 1,
        MacvlanMode::Vepa => 2,
        MacvlanMode::Bridge => 4,
        MacvlanMode::Passthru => 8,
        MacvlanMode::Source => 16,
    }
}

/// The RTM_NEWLINK message creating `ifname` (down: no IFF_UP).
pub fn create_message(
    ifname: &str,
    spec: &LinkSpec,
    r: &Resolved,
    mtu: Option<u32>,
) -> Result<LinkMessage, OpError> {
    let need_parent = || {
        r.parent
            .ok_or_else(|| OpError::new(ErrorKind::Internal, "parent not resolved"))
    };
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(ifname.to_string()));
    let (kind, data) = match spec {
        LinkSpec::Vlan { id, protocol, .. } => {
            m.attributes.push(LinkAttribute::Link(need_parent()?));
            (
                InfoKind::Vlan,
                Some(InfoData::Vlan(vec![
                    InfoVlan::Id(*id),
                    InfoVlan::Protocol(nl_vlan_protocol(*protocol)),
                ])),
            )
        }
        LinkSpec::Bridge(o) => {
            let d = bridge_data(o);
            (
                InfoKind::Bridge,
                (!d.is_empty()).then_some(InfoData::Bridge(d)),
            )
        }
        LinkSpec::Bond(o) => {
            let d = bond_data(o, r.bond_primary)?;
            (InfoKind::Bond, (!d.is_empty()).then_some(InfoData::Bond(d)))
        }
        LinkSpec::Team(_) => (InfoKind::Other("team".into()), None),
        LinkSpec::Macvlan { mode, .. } => {
            m.attributes.push(LinkAttribute::Link(need_parent()?));
            (
                InfoKind::MacVlan,
                Some(InfoData::MacVlan(vec![InfoMacVlan::Mode(macvlan_mode(
                    *mode,
                ))])),
            )
        }
        LinkSpec::Veth { peer, .. } => {
            let mut p = LinkMessage::default();
            p.attributes.push(LinkAttribute::IfName(peer.clone()));
            if let Some(fd) = r.peer_netns {
                p.attributes.push(LinkAttribute::NetNsFd(fd));
            }
            (InfoKind::Veth, Some(InfoData::Veth(InfoVeth::Peer(p))))
        }
        LinkSpec::Dummy => (InfoKind::Dummy, None),
        LinkSpec::Macsec { encrypt, .. } => {
            m.attributes.push(LinkAttribute::Link(need_parent()?));
            (
                InfoKind::MacSec,
                // No IFLA_MACSEC_PORT: the kernel reads it big-endian and the crate writes
                // it native-endian; the kernel's default port is 1.
                Some(InfoData::MacSec(vec![InfoMacSec::Encrypt(u8::from(
                    *encrypt,
                ))])),
            )
        }
        _ => {
            let (k, d) = super::tunnels::info(spec, r.parent)
                .ok_or_else(|| OpError::new(ErrorKind::Internal, "unknown link kind"))?;
            (k, Some(d))
        }
    };
    let mut info = vec![LinkInfo::Kind(kind)];
    if let Some(d) = data {
        info.push(LinkInfo::Data(d));
    }
    m.attributes.push(LinkAttribute::LinkInfo(info));
    if let Some(i) = r.master {
        m.attributes.push(LinkAttribute::Controller(i));
    }
    if let Some(x) = mtu {
        m.attributes.push(LinkAttribute::Mtu(x));
    }
    Ok(m)
}

async fn send_create(nl: &net::Netlink, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
    let mut req = nl.handle().link().add();
    *req.message_mut() = msg;
    req.execute().await
}

/// Create the link; an EOPNOTSUPP answer becomes [`ErrorKind::Unsupported`] naming the
/// feature (for a bridge with VLAN options, a second try without them tells whether the
/// bridge or its VLAN filtering is missing).
async fn create_link_nl(
    nl: &net::Netlink,
    ifname: &str,
    spec: &LinkSpec,
    r: &Resolved,
    mtu: Option<u32>,
) -> Result<(), OpError> {
    let msg = create_message(ifname, spec, r, mtu)?;
    let e = match send_create(nl, msg).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if errno(&e) != Some(libc::EOPNOTSUPP) {
        return Err(nl_failed(
            &format!("creating {ifname} ({})", spec.kind_name()),
            e,
        ));
    }
    if let LinkSpec::Bridge(o) = spec {
        if o.uses_vlan_filtering() {
            let plain = LinkSpec::Bridge(BridgeOptions {
                vlan_filtering: None,
                vlan_default_pvid: None,
                vlan_protocol: None,
                ..o.clone()
            });
            if send_create(nl, create_message(ifname, &plain, r, mtu)?)
                .await
                .is_ok()
            {
                let _ = delete_link(nl, ifname).await;
                return Err(unsupported(BRIDGE_VLAN_FEATURE));
            }
        }
    }
    Err(unsupported(kernel_feature(spec)))
}

// ---------------------------------------------------------------------------------------------
// teamd
// ---------------------------------------------------------------------------------------------

/// A teamd the agent started for one team device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamProc {
    pub ifname: String,
    pub pid_file: PathBuf,
}

/// Directory of the teamd pid files.
pub const RUN_DIR: &str = "/run/lnst-agent";

/// teamd's JSON configuration for `ifname`, built from typed options only.
pub fn teamd_config(ifname: &str, o: &TeamOptions) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut runner = Map::new();
    runner.insert("name".into(), json!(o.runner.name()));
    if let Some(h) = &o.tx_hash {
        runner.insert("tx_hash".into(), json!(h));
    }
    if let Some(p) = o.hwaddr_policy {
        runner.insert("hwaddr_policy".into(), json!(p));
    }
    if let Some(x) = o.active {
        runner.insert("active".into(), json!(x));
    }
    if let Some(x) = o.fast_rate {
        runner.insert("fast_rate".into(), json!(x));
    }
    if let Some(x) = o.min_ports {
        runner.insert("min_ports".into(), json!(x));
    }
    let mut cfg = Map::new();
    cfg.insert("device".into(), json!(ifname));
    cfg.insert("runner".into(), Value::Object(runner));
    if let Some(w) = &o.link_watch {
        let mut lw = Map::new();
        let mut opt = |k: &str, v: Option<u32>| {
            if let Some(v) = v {
                lw.insert(k.into(), json!(v));
            }
        };
        match w {
            TeamLinkWatch::Ethtool {
                delay_up_ms,
                delay_down_ms,
            } => {
                opt("delay_up", *delay_up_ms);
                opt("delay_down", *delay_down_ms);
                lw.insert("name".into(), json!("ethtool"));
            }
            TeamLinkWatch::ArpPing {
                source_host,
                target_host,
                interval_ms,
                missed_max,
            } => {
                opt("interval", *interval_ms);
                opt("missed_max", *missed_max);
                lw.insert("name".into(), json!("arp_ping"));
                lw.insert("source_host".into(), json!(source_host.to_string()));
                lw.insert("target_host".into(), json!(target_host.to_string()));
            }
            TeamLinkWatch::NsnaPing {
                target_host,
                interval_ms,
                missed_max,
            } => {
                opt("interval", *interval_ms);
                opt("missed_max", *missed_max);
                lw.insert("name".into(), json!("nsna_ping"));
                lw.insert("target_host".into(), json!(target_host.to_string()));
            }
        }
        cfg.insert("link_watch".into(), Value::Object(lw));
    }
    Value::Object(cfg)
}

/// teamd's per-port JSON.
pub fn team_port_json(p: &TeamPortConfig) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut m = Map::new();
    if let Some(x) = p.prio {
        m.insert("prio".into(), json!(x));
    }
    if let Some(x) = p.sticky {
        m.insert("sticky".into(), json!(x));
    }
    if let Some(x) = p.queue_id {
        m.insert("queue_id".into(), json!(x));
    }
    if let Some(x) = p.lacp_prio {
        m.insert("lacp_prio".into(), json!(x));
    }
    if let Some(x) = p.lacp_key {
        m.insert("lacp_key".into(), json!(x));
    }
    Value::Object(m)
}

/// `teamd` command line: daemonize, take over the device the agent created, no ports from the
/// config, our own pid file; every value is a separate argv element after its option.
pub fn teamd_argv(ifname: &str, pid_file: &std::path::Path, config: &str) -> Vec<String> {
    vec![
        "teamd".into(),
        "-d".into(),
        "-o".into(),
        "-n".into(),
        "-U".into(),
        "-t".into(),
        ifname.into(),
        "-p".into(),
        pid_file.to_string_lossy().into_owned(),
        "-c".into(),
        config.into(),
    ]
}

async fn run_tool(argv: &[String], limit: Duration) -> Result<(), OpError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(OpError::new(ErrorKind::Internal, "empty argv"));
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| {
            failed(format!(
                "{prog} did not finish within {} s",
                limit.as_secs()
            ))
        })?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                failed(format!(
                    "{prog}: not found in PATH (Debian package libteam-utils)"
                ))
            } else {
                failed(format!("{prog}: {e}"))
            }
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let mut err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if err.is_empty() {
            err = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        let err: String = err.chars().take(2000).collect();
        Err(failed(format!(
            "{} failed ({}): {err}",
            argv[..2].join(" "),
            out.status
        )))
    }
}

async fn start_teamd(ifname: &str, o: &TeamOptions, tag: &str) -> Result<TeamProc, OpError> {
    std::fs::create_dir_all(RUN_DIR).map_err(|e| failed(format!("creating {RUN_DIR}: {e}")))?;
    let pid_file =
        PathBuf::from(RUN_DIR).join(format!("teamd-{}-{tag}-{ifname}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let config = teamd_config(ifname, o).to_string();
    tracing::info!("teamd for {ifname}: {config}");
    run_tool(
        &teamd_argv(ifname, &pid_file, &config),
        Duration::from_secs(20),
    )
    .await?;
    Ok(TeamProc {
        ifname: ifname.to_string(),
        pid_file,
    })
}

fn pid_alive_teamd(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "teamd")
        .unwrap_or(false)
}

/// SIGTERM the teamd of `p` (checked by name, so a reused pid is left alone), wait up to 5 s,
/// then SIGKILL.
async fn stop_teamd(p: &TeamProc) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = std::fs::read_to_string(&p.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| *p > 1) {
        if pid_alive_teamd(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while pid_alive_teamd(pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if pid_alive_teamd(pid) {
                tracing::warn!("teamd {pid} for {} ignored SIGTERM; killing", p.ifname);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let _ = std::fs::remove_file(&p.pid_file);
}

// ---------------------------------------------------------------------------------------------
// Bridge VLAN entries
// ---------------------------------------------------------------------------------------------

const BRIDGE_FLAGS_MASTER: u16 = 1;
const BRIDGE_FLAGS_SELF: u16 = 2;
const VLAN_INFO_PVID: u16 = 2;
const VLAN_INFO_UNTAGGED: u16 = 4;

fn vlan_flags(v: &BridgeVlan) -> u16 {
    (if v.pvid { VLAN_INFO_PVID } else { 0 }) | (if v.untagged { VLAN_INFO_UNTAGGED } else { 0 })
}

/// The AF_BRIDGE message adding or deleting one VLAN entry of `ifindex`.
pub fn bridge_vlan_message(ifindex: u32, vid: u16, flags: u16, bridge_self: bool) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.interface_family = AddressFamily::Bridge;
    m.header.index = ifindex;
    let mut info = BridgeVlanInfo::default();
    info.vid = vid;
    info.flags = flags;
    m.attributes.push(LinkAttribute::AfSpecBridge(vec![
        AfSpecBridge::Flags(if bridge_self {
            BRIDGE_FLAGS_SELF
        } else {
            BRIDGE_FLAGS_MASTER
        }),
        AfSpecBridge::VlanInfo(info),
    ]));
    m
}

fn vlan_err(what: String, e: rtnetlink::Error) -> OpError {
    if errno(&e) == Some(libc::EOPNOTSUPP) {
        unsupported(BRIDGE_VLAN_FEATURE)
    } else {
        nl_failed(&what, e)
    }
}

/// Flags (pvid/untagged bits) of `vid` on `ifindex`, None when there is no such entry.
async fn bridge_vlan_get(
    nl: &net::Netlink,
    ifindex: u32,
    vid: u16,
) -> Result<Option<u16>, OpError> {
    let _turn = nl.dump_turn().await;
    let msgs: Vec<LinkMessage> = nl
        .handle()
        .link()
        .get()
        .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
        .execute()
        .try_collect()
        .await
        .map_err(|e| vlan_err("dumping bridge VLANs".into(), e))?;
    for m in msgs.iter().filter(|m| m.header.index == ifindex) {
        for a in &m.attributes {
            if let LinkAttribute::AfSpecBridge(spec) = a {
                for s in spec {
                    if let AfSpecBridge::VlanInfo(i) = s {
                        if i.vid == vid {
                            return Ok(Some(i.flags & (VLAN_INFO_PVID | VLAN_INFO_UNTAGGED)));
                        }
                    }
                }
            }
        }
    }
    Ok(None)
}

async fn bridge_vlan_set(
    nl: &net::Netlink,
    ifindex: u32,
    vid: u16,
    flags: u16,
    bridge_self: bool,
    add: bool,
) -> Result<(), OpError> {
    let msg = bridge_vlan_message(ifindex, vid, flags, bridge_self);
    let r = if add {
        let mut req = nl.handle().link().set(ifindex);
        *req.message_mut() = msg;
        req.execute().await
    } else {
        let mut req = nl.handle().link().del(ifindex);
        *req.message_mut() = msg;
        req.execute().await
    };
    r.map_err(|e| {
        vlan_err(
            format!(
                "{} VLAN {vid} of ifindex {ifindex}",
                if add { "adding" } else { "deleting" }
            ),
            e,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Routes and neighbours
// ---------------------------------------------------------------------------------------------

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// Destination of a route spec: (network, is-default).
fn route_dst(spec: &RouteSpec) -> Result<ipnet::IpNet, OpError> {
    let d = spec.dst.trim();
    if d == "default" {
        let v6 = match &spec.via {
            Some(v) => parse_ip("gateway", v)?.is_ipv6(),
            None => spec.ipv6,
        };
        return Ok(if v6 {
            ipnet::IpNet::V6(ipnet::Ipv6Net::default())
        } else {
            ipnet::IpNet::V4(ipnet::Ipv4Net::default())
        });
    }
    let net: ipnet::IpNet = match d.parse::<ipnet::IpNet>() {
        Ok(n) => n,
        Err(_) => ipnet::IpNet::from(parse_ip("route destination", d)?),
    };
    if net.trunc() != net {
        return Err(bad(format!(
            "route destination {d} has host bits set (the network is {})",
            net.trunc()
        )));
    }
    Ok(net)
}

/// The RTM_NEWROUTE message of a spec (`dev` given as its ifindex). For a deletion
/// (`pattern`) the destination alone may name the route.
pub fn route_message(
    spec: &RouteSpec,
    oif: Option<u32>,
    pattern: bool,
) -> Result<RouteMessage, OpError> {
    let dst = route_dst(spec)?;
    let v6 = matches!(dst, ipnet::IpNet::V6(_));
    let same_family = |what: &str, ip: IpAddr| {
        if ip.is_ipv6() == v6 {
            Ok(ip)
        } else {
            Err(bad(format!(
                "route {}: {what} {ip} is not of the destination's family",
                spec.dst
            )))
        }
    };
    let via = match &spec.via {
        Some(v) => Some(same_family("gateway", parse_ip("gateway", v)?)?),
        None => None,
    };
    let src = match &spec.src {
        Some(s) => Some(same_family("source", parse_ip("source", s)?)?),
        None => None,
    };
    let unicast = spec.kind == RouteKind::Unicast;
    if unicast && via.is_none() && oif.is_none() && !pattern {
        return Err(bad(format!(
            "route {}: give a gateway (via) or a device (dev)",
            spec.dst
        )));
    }
    if !unicast && (via.is_some() || oif.is_some()) {
        return Err(bad(format!(
            "route {}: a {:?} route takes no gateway or device",
            spec.dst, spec.kind
        )));
    }
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.destination_prefix_length = dst.prefix_len();
    let table = spec.table.unwrap_or(u32::from(RouteHeader::RT_TABLE_MAIN));
    if table == 0 {
        return Err(bad("route table 0 is not a table"));
    }
    m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = match spec.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
    };
    m.header.scope = if unicast && via.is_none() && !v6 {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    if spec.onlink {
        m.header.flags.push(RouteFlag::Onlink);
    }
    if dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(route_addr(dst.addr())));
    }
    if let Some(g) = via {
        m.attributes.push(RouteAttribute::Gateway(route_addr(g)));
    }
    if let Some(i) = oif {
        m.attributes.push(RouteAttribute::Oif(i));
    }
    if let Some(s) = src {
        m.attributes.push(RouteAttribute::PrefSource(route_addr(s)));
    }
    if let Some(p) = spec.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m.attributes.push(RouteAttribute::Table(table));
    if let Some(e) = &spec.encap {
        if !pattern && oif.is_none() {
            return Err(bad(format!(
                "route {}: an encap route needs its tunnel device (dev)",
                spec.dst
            )));
        }
        let (kind, nested) = lwt_encap(&spec.dst, e)?;
        m.attributes.push(RouteAttribute::EncapType(kind));
        m.attributes.push(RouteAttribute::Encap(nested));
    }
    Ok(m)
}

// lwtunnel.h: LWTUNNEL_IP_* (the IPv6 ones have the same numbers: ID, DST, SRC, HOPLIMIT, TC,
// FLAGS, PAD, OPTS) and the Geneve option attributes.
const LWT_IP_ID: u16 = 1;
const LWT_IP_DST: u16 = 2;
const LWT_IP_SRC: u16 = 3;
const LWT_IP_TTL: u16 = 4;
const LWT_IP_TOS: u16 = 5;
const LWT_IP_OPTS: u16 = 8;
const LWT_IP_OPTS_GENEVE: u16 = 1;
const LWT_IP_OPT_GENEVE_CLASS: u16 = 1;
const LWT_IP_OPT_GENEVE_TYPE: u16 = 2;
const LWT_IP_OPT_GENEVE_DATA: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;

/// One netlink attribute (header, value, padding to 4 bytes).
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + value.len() + 3);
    v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// `RTA_ENCAP_TYPE` and the attributes of `RTA_ENCAP` of an IP lightweight tunnel (what
/// `ip route add … encap ip|ip6 id ID dst DST [src S] [ttl T] [tos T] [geneve_opts …]`
/// sends); the encapsulation's family is its `dst`'s.
pub fn lwt_encap(
    route: &str,
    e: &crate::protocol::RouteEncap,
) -> Result<(RouteLwEnCapType, Vec<RouteLwTunnelEncap>), OpError> {
    let v6 = e.dst.is_ipv6();
    let addr = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut out = vec![
        DefaultNla::new(LWT_IP_ID, e.id.to_be_bytes().to_vec()),
        DefaultNla::new(LWT_IP_DST, addr(e.dst)),
    ];
    if let Some(s) = e.src {
        if s.is_ipv6() != v6 {
            return Err(bad(format!(
                "route {route}: encap src {s} and dst {} differ in family",
                e.dst
            )));
        }
        out.push(DefaultNla::new(LWT_IP_SRC, addr(s)));
    }
    if let Some(t) = e.ttl {
        out.push(DefaultNla::new(LWT_IP_TTL, vec![t]));
    }
    if let Some(t) = e.tos {
        out.push(DefaultNla::new(LWT_IP_TOS, vec![t]));
    }
    if let Some(g) = &e.geneve_opt {
        if g.data.is_empty() || g.data.len() % 4 != 0 || g.data.len() > 124 {
            return Err(bad(format!(
                "route {route}: geneve option data is {} bytes; give 4 to 124, a multiple of 4",
                g.data.len()
            )));
        }
        let mut opt = nla(LWT_IP_OPT_GENEVE_CLASS, &g.class.to_be_bytes());
        opt.extend(nla(LWT_IP_OPT_GENEVE_TYPE, &[g.kind]));
        opt.extend(nla(LWT_IP_OPT_GENEVE_DATA, &g.data));
        let geneve = nla(LWT_IP_OPTS_GENEVE | NLA_F_NESTED, &opt);
        out.push(DefaultNla::new(LWT_IP_OPTS | NLA_F_NESTED, geneve));
    }
    let kind = if v6 {
        RouteLwEnCapType::Ip6
    } else {
        RouteLwEnCapType::Ip
    };
    Ok((
        kind,
        out.into_iter().map(RouteLwTunnelEncap::Other).collect(),
    ))
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn route_attr<T>(m: &RouteMessage, f: impl Fn(&RouteAttribute) -> Option<T>) -> Option<T> {
    m.attributes.iter().find_map(f)
}

/// Whether a dumped route is the one a DelRoute spec (as a message) names: same family,
/// destination, table and type, and gateway/device/metric where the spec gives them.
pub fn route_matches(want: &RouteMessage, have: &RouteMessage) -> bool {
    let dst = |m: &RouteMessage| {
        route_attr(m, |a| match a {
            RouteAttribute::Destination(d) => Some(d.clone()),
            _ => None,
        })
    };
    let gw = |m: &RouteMessage| {
        route_attr(m, |a| match a {
            RouteAttribute::Gateway(d) => Some(d.clone()),
            _ => None,
        })
    };
    let oif = |m: &RouteMessage| {
        route_attr(m, |a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
    };
    let prio = |m: &RouteMessage| {
        route_attr(m, |a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
    };
    want.header.address_family == have.header.address_family
        && want.header.destination_prefix_length == have.header.destination_prefix_length
        && dst(want) == dst(have)
        && route_table(want) == route_table(have)
        && want.header.kind == have.header.kind
        && (gw(want).is_none() || gw(want) == gw(have))
        && (oif(want).is_none() || oif(want) == oif(have))
        && (prio(want).is_none() || prio(want) == prio(have))
}

/// A dumped route reduced to what RTM_NEWROUTE takes back (no cache info, no dump-only flags).
pub fn route_for_readd(have: &RouteMessage) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = have.header.clone();
    m.header.flags = have
        .header
        .flags
        .iter()
        .filter(|f| **f == RouteFlag::Onlink)
        .cloned()
        .collect();
    m.attributes = have
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Iif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Table(_)
                    | RouteAttribute::Metrics(_)
                    | RouteAttribute::MultiPath(_)
                    | RouteAttribute::Preference(_)
                    | RouteAttribute::EncapType(_)
                    | RouteAttribute::Encap(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Realm(_)
                    | RouteAttribute::Mark(_)
            )
        })
        .cloned()
        .collect();
    m
}

async fn route_add(nl: &net::Netlink, msg: RouteMessage) -> Result<(), rtnetlink::Error> {
    let mut req = nl.handle().route().add();
    *req.message_mut() = msg;
    req.execute().await
}

async fn route_del(nl: &net::Netlink, msg: RouteMessage) -> Result<(), OpError> {
    match nl.handle().route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(()),
        Err(e) => Err(nl_failed("deleting a route", e)),
    }
}

fn neigh_state(s: WireNeighState) -> NeighbourState {
    match s {
        WireNeighState::Permanent => NeighbourState::Permanent,
        WireNeighState::Noarp => NeighbourState::Noarp,
        WireNeighState::Reachable => NeighbourState::Reachable,
        WireNeighState::Stale => NeighbourState::Stale,
    }
}

fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

fn neigh_static(m: &NeighbourMessage) -> bool {
    matches!(
        m.header.state,
        NeighbourState::Permanent | NeighbourState::Noarp
    )
}

/// A neighbour entry as RTM_NEWNEIGH takes it back.
fn neigh_for_readd(have: &NeighbourMessage) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header = have.header.clone();
    m.attributes = have
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                NeighbourAttribute::Destination(_) | NeighbourAttribute::LinkLocalAddress(_)
            )
        })
        .cloned()
        .collect();
    m
}

async fn neigh_find(
    nl: &net::Netlink,
    ifindex: u32,
    ip: IpAddr,
) -> Result<Option<NeighbourMessage>, OpError> {
    let _turn = nl.dump_turn().await;
    let all: Vec<NeighbourMessage> = nl
        .handle()
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_failed("dumping neighbours", e))?;
    Ok(all
        .into_iter()
        .find(|m| m.header.ifindex == ifindex && neigh_dst(m) == Some(ip)))
}

async fn neigh_put(nl: &net::Netlink, msg: NeighbourMessage) -> Result<(), OpError> {
    let dst = neigh_dst(&msg);
    let mut req = nl
        .handle()
        .neighbours()
        .add(
            msg.header.ifindex,
            dst.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        )
        .replace();
    *req.message_mut() = msg;
    req.execute()
        .await
        .map_err(|e| nl_failed("adding a neighbour entry", e))
}

async fn neigh_del(nl: &net::Netlink, msg: NeighbourMessage) -> Result<(), OpError> {
    match nl.handle().neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
        Err(e) => Err(nl_failed("deleting a neighbour entry", e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations executed in one namespace
// ---------------------------------------------------------------------------------------------

/// A validated operation, ready to run on the thread of its namespace.
#[derive(Debug)]
enum Task {
    Create {
        ifname: String,
        spec: LinkSpec,
        master: Option<String>,
        mtu: Option<u32>,
        up: bool,
        peer_fd: Option<RawFd>,
        /// Where a veth's peer ends up.
        peer_loc: Loc,
        /// Tag of the namespace in teamd's pid file name.
        tag: String,
    },
    Delete {
        ifname: String,
        team: Option<TeamProc>,
    },
    Enslave {
        ifname: String,
        master: String,
        team_port: Option<TeamPortConfig>,
    },
    Release {
        ifname: String,
    },
    Vlan {
        vlan: BridgeVlan,
        add: bool,
    },
    RouteAdd(RouteSpec),
    RouteDel(RouteSpec),
    NeighAdd(NeighbourSpec),
    NeighDel(NeighbourSpec),
    AddrDel {
        ifname: String,
        addr: String,
    },
    Move {
        ifname: String,
        target: RawFd,
    },
    /// An `ip l2tp add …` and the argv that takes it back.
    L2tp {
        argv: Vec<String>,
        undo: Vec<String>,
    },
}

/// What a task changed (journaled by the caller).
#[derive(Debug)]
enum Effect {
    None,
    Created {
        ifname: String,
        peer: Option<(Loc, String)>,
        team: Option<TeamProc>,
    },
    Master {
        port: String,
        old_master: Option<String>,
        state: LinkState,
    },
    Moved {
        ifname: String,
        state: LinkState,
    },
    Undo(Step),
}

/// One undo step, run in the namespace of its journal entry.
#[derive(Debug, Clone)]
enum Step {
    /// Put a port back under its old master (and its state when it existed before).
    Master {
        port: String,
        master: Option<String>,
        state: Option<LinkState>,
    },
    Route {
        remove: Option<RouteMessage>,
        restore: Option<RouteMessage>,
    },
    Neigh {
        remove: Option<NeighbourMessage>,
        restore: Option<NeighbourMessage>,
    },
    Vlan {
        ifname: String,
        vid: u16,
        bridge_self: bool,
        remove: bool,
        restore: Option<u16>,
    },
    Addr {
        ifname: String,
        old: AddressMessage,
    },
    /// Delete a created link (stopping its teamd first).
    Delete {
        ifname: String,
        team: Option<TeamProc>,
    },
    /// Move a link to another namespace.
    Move {
        ifname: String,
        target: RawFd,
    },
    /// Restore a link's state (after moving it back).
    Restore {
        ifname: String,
        state: LinkState,
    },
    /// `ip l2tp del …` (a tunnel with its sessions, or one session).
    L2tpDel {
        argv: Vec<String>,
    },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Master { port, master, .. } => match master {
                Some(m) => format!("putting {port} back under {m}"),
                None => format!("releasing {port}"),
            },
            Step::Route { .. } => "restoring a route".into(),
            Step::Neigh { .. } => "restoring a neighbour entry".into(),
            Step::Vlan { ifname, vid, .. } => format!("restoring VLAN {vid} of {ifname}"),
            Step::Addr { ifname, old } => match addr_of(old) {
                Some((ip, p)) => format!("re-adding {ip}/{p} to {ifname}"),
                None => format!("re-adding an address to {ifname}"),
            },
            Step::Delete { ifname, .. } => format!("deleting {ifname}"),
            Step::Move { ifname, .. } => format!("moving {ifname} back"),
            Step::Restore { ifname, .. } => format!("restoring {ifname}"),
            Step::L2tpDel { argv } => format!("running {}", argv.join(" ")),
        }
    }
}

async fn run_task(nl: &net::Netlink, task: Task) -> Result<(Reply, Effect), OpError> {
    match task {
        Task::Create {
            ifname,
            spec,
            master,
            mtu,
            up,
            peer_fd,
            peer_loc,
            tag,
        } => {
            if find(nl, &ifname).await?.is_some() {
                return Err(failed(format!("{ifname} already exists")));
            }
            if let LinkSpec::Veth {
                peer,
                peer_netns: None,
            } = &spec
            {
                if find(nl, peer).await?.is_some() {
                    return Err(failed(format!("{peer} already exists")));
                }
            }
            let mut r = Resolved {
                peer_netns: peer_fd,
                ..Resolved::default()
            };
            match &spec {
                LinkSpec::Vlan { parent, .. }
                | LinkSpec::Macvlan { parent, .. }
                | LinkSpec::Macsec { parent, .. } => {
                    r.parent = Some(facts(nl, parent).await?.ifindex);
                }
                LinkSpec::Vxlan(crate::protocol::VxlanOptions {
                    parent: Some(parent),
                    ..
                }) => {
                    r.parent = Some(facts(nl, parent).await?.ifindex);
                }
                LinkSpec::Bond(o) => {
                    if let Some(p) = &o.primary {
                        r.bond_primary = Some(facts(nl, p).await?.ifindex);
                    }
                }
                _ => {}
            }
            if let Some(m) = &master {
                r.master = Some(facts(nl, m).await?.ifindex);
            }
            super::kmod::ensure_for(&spec).await;
            create_link_nl(nl, &ifname, &spec, &r, mtu).await?;
            let peer = match &spec {
                LinkSpec::Veth { peer, .. } => Some(peer.clone()),
                _ => None,
            };
            let mut team = None;
            let finish = async {
                if let LinkSpec::Team(o) = &spec {
                    team = Some(start_teamd(&ifname, o, &tag).await?);
                }
                if up {
                    nl.set_link(&ifname, true).await?;
                }
                Ok::<(), OpError>(())
            }
            .await;
            if let Err(e) = finish {
                if let Some(t) = &team {
                    stop_teamd(t).await;
                }
                let _ = delete_link(nl, &ifname).await;
                return Err(e);
            }
            let mut names = vec![ifname.as_str()];
            if let (Some(p), None) = (&peer, peer_fd) {
                names.push(p.as_str());
            }
            let info = nl.interfaces_named(&names).await?;
            let peer = peer.map(|p| (peer_loc, p));
            tracing::info!("created {} {ifname}", spec.kind_name());
            Ok((
                Reply::Interfaces(info),
                Effect::Created {
                    ifname: ifname.clone(),
                    peer,
                    team,
                },
            ))
        }
        Task::Delete { ifname, team } => {
            if let Some(t) = &team {
                stop_teamd(t).await;
            }
            delete_link(nl, &ifname).await?;
            tracing::info!("deleted {ifname}");
            Ok((Reply::Ok, Effect::None))
        }
        Task::Enslave {
            ifname,
            master,
            team_port,
        } => {
            if ifname == master {
                return Err(bad(format!("{ifname} cannot be its own master")));
            }
            let port = facts(nl, &ifname).await?;
            let m = facts(nl, &master).await?;
            let mkind = m.kind.clone().unwrap_or_default();
            if !matches!(mkind.as_str(), "bridge" | "bond" | "team") {
                return Err(bad(format!(
                    "{master} is not a bridge, bond or team (kind {})",
                    m.kind.as_deref().unwrap_or("none")
                )));
            }
            if team_port.is_some() && mkind != "team" {
                return Err(bad(format!(
                    "team_port options given but {master} is a {mkind}"
                )));
            }
            let state = capture(nl, &port).await?;
            if let Some(p) = team_port.filter(|p| !p.is_empty()) {
                check_new_ifname(&ifname)?;
                check_new_ifname(&master)?;
                let argv: Vec<String> = ["teamdctl", &master, "port", "config", "update", &ifname]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([team_port_json(&p).to_string()])
                    .collect();
                run_tool(&argv, Duration::from_secs(10)).await?;
            }
            set_master(nl, &port, Some(m.ifindex)).await?;
            tracing::info!("{ifname} enslaved to {master}");
            Ok((
                Reply::Ok,
                Effect::Master {
                    port: ifname,
                    old_master: state.master.clone(),
                    state,
                },
            ))
        }
        Task::Release { ifname } => {
            let port = facts(nl, &ifname).await?;
            if port.master.is_none() {
                return Ok((Reply::Ok, Effect::None));
            }
            let state = capture(nl, &port).await?;
            set_master(nl, &port, None).await?;
            tracing::info!("{ifname} released from {:?}", state.master);
            Ok((
                Reply::Ok,
                Effect::Master {
                    port: ifname,
                    old_master: state.master.clone(),
                    state,
                },
            ))
        }
        Task::Vlan { vlan, add } => {
            let f = facts(nl, &vlan.ifname).await?;
            let before = bridge_vlan_get(nl, f.ifindex, vlan.vid).await?;
            if add {
                bridge_vlan_set(
                    nl,
                    f.ifindex,
                    vlan.vid,
                    vlan_flags(&vlan),
                    vlan.bridge_self,
                    true,
                )
                .await?;
                Ok((
                    Reply::Ok,
                    Effect::Undo(Step::Vlan {
                        ifname: vlan.ifname.clone(),
                        vid: vlan.vid,
                        bridge_self: vlan.bridge_self,
                        remove: true,
                        restore: before,
                    }),
                ))
            } else {
                let Some(flags) = before else {
                    return Err(OpError::new(
                        ErrorKind::NotFound,
                        format!("{} has no VLAN {}", vlan.ifname, vlan.vid),
                    ));
                };
                bridge_vlan_set(nl, f.ifindex, vlan.vid, 0, vlan.bridge_self, false).await?;
                Ok((
                    Reply::Ok,
                    Effect::Undo(Step::Vlan {
                        ifname: vlan.ifname.clone(),
                        vid: vlan.vid,
                        bridge_self: vlan.bridge_self,
                        remove: false,
                        restore: Some(flags),
                    }),
                ))
            }
        }
        Task::L2tp { argv, undo } => {
            super::kmod::ensure_modules(super::l2tp::MODULES.to_vec()).await;
            super::l2tp::run(&argv).await?;
            tracing::info!("{}", argv.join(" "));
            Ok((Reply::Ok, Effect::Undo(Step::L2tpDel { argv: undo })))
        }
        Task::RouteAdd(spec) => {
            let oif = match &spec.dev {
                Some(d) => Some(facts(nl, d).await?.ifindex),
                None => None,
            };
            let msg = route_message(&spec, oif, false)?;
            route_add(nl, msg.clone()).await.map_err(|e| {
                if errno(&e) == Some(libc::EEXIST) {
                    failed(format!("route {} already exists", spec.dst))
                } else {
                    nl_failed(&format!("adding route {}", spec.dst), e)
                }
            })?;
            Ok((
                Reply::Ok,
                Effect::Undo(Step::Route {
                    remove: Some(msg),
                    restore: None,
                }),
            ))
        }
        Task::RouteDel(spec) => {
            let oif = match &spec.dev {
                Some(d) => Some(facts(nl, d).await?.ifindex),
                None => None,
            };
            let want = route_message(&spec, oif, true)?;
            let version = if want.header.address_family == AddressFamily::Inet6 {
                rtnetlink::IpVersion::V6
            } else {
                rtnetlink::IpVersion::V4
            };
            let turn = nl.dump_turn().await;
            let all: Vec<RouteMessage> = nl
                .handle()
                .route()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl_failed("dumping routes", e))?;
            drop(turn);
            let Some(have) = all.iter().find(|h| route_matches(&want, h)) else {
                return Err(OpError::new(
                    ErrorKind::NotFound,
                    format!("no route {} matches", spec.dst),
                ));
            };
            let back = route_for_readd(have);
            route_del(nl, back.clone()).await?;
            Ok((
                Reply::Ok,
                Effect::Undo(Step::Route {
                    remove: None,
                    restore: Some(back),
                }),
            ))
        }
        Task::NeighAdd(spec) => {
            let f = facts(nl, &spec.ifname).await?;
            let ip = parse_ip("neighbour address", &spec.ip)?;
            let Some(ll) = &spec.lladdr else {
                return Err(bad(format!("neighbour {ip}: lladdr is required")));
            };
            let mac = parse_mac(ll)?;
            let old = neigh_find(nl, f.ifindex, ip).await?;
            let mut req = nl.handle().neighbours().add(f.ifindex, ip);
            req = req.link_local_address(&mac).state(neigh_state(spec.state));
            let new = req.message_mut().clone();
            neigh_put(nl, new.clone()).await?;
            Ok((
                Reply::Ok,
                Effect::Undo(Step::Neigh {
                    remove: Some(neigh_for_readd(&new)),
                    restore: old.filter(neigh_static).map(|o| neigh_for_readd(&o)),
                }),
            ))
        }
        Task::NeighDel(spec) => {
            let f = facts(nl, &spec.ifname).await?;
            let ip = parse_ip("neighbour address", &spec.ip)?;
            let Some(old) = neigh_find(nl, f.ifindex, ip).await? else {
                return Err(OpError::new(
                    ErrorKind::NotFound,
                    format!("no neighbour entry {ip} on {}", spec.ifname),
                ));
            };
            neigh_del(nl, neigh_for_readd(&old)).await?;
            Ok((
                Reply::Ok,
                Effect::Undo(Step::Neigh {
                    remove: None,
                    restore: neigh_static(&old).then(|| neigh_for_readd(&old)),
                }),
            ))
        }
        Task::AddrDel { ifname, addr } => {
            let net: ipnet::IpNet = addr
                .parse()
                .map_err(|_| bad(format!("invalid address {addr:?}: expected ADDRESS/PREFIX")))?;
            let f = facts(nl, &ifname).await?;
            let have = nl.address_messages(f.ifindex).await?;
            let Some(old) = have
                .into_iter()
                .find(|m| addr_of(m) == Some((net.addr(), net.prefix_len())))
            else {
                return Err(OpError::new(
                    ErrorKind::NotFound,
                    format!("{ifname} has no address {addr}"),
                ));
            };
            let a = net::Addr {
                ip: net.addr(),
                prefix: net.prefix_len(),
                tentative: false,
            };
            nl.del_address(f.ifindex, &a).await?;
            Ok((Reply::Ok, Effect::Undo(Step::Addr { ifname, old })))
        }
        Task::Move { ifname, target } => {
            let f = facts(nl, &ifname).await?;
            if f.ifindex == 1 || ifname == "lo" {
                return Err(bad("lo cannot be moved"));
            }
            let state = capture(nl, &f).await?;
            move_link(nl, &f, target).await?;
            Ok((Reply::Ok, Effect::Moved { ifname, state }))
        }
    }
}

async fn run_step(nl: &net::Netlink, step: Step) -> Result<(), OpError> {
    match step {
        Step::Master {
            port,
            master,
            state,
        } => {
            let Some(f) = find(nl, &port).await? else {
                return Ok(());
            };
            let want = match &master {
                Some(m) => Some(facts(nl, m).await?.ifindex),
                None => None,
            };
            if f.master != want {
                set_master(nl, &f, want).await?;
            }
            if let Some(st) = state {
                restore(nl, &port, &st, false).await?;
            }
            Ok(())
        }
        Step::L2tpDel { argv } => match super::l2tp::run(&argv).await {
            Ok(()) => Ok(()),
            // Already gone (its tunnel was deleted first, or the kernel removed it).
            Err(e) if e.message.contains("No such file") || e.message.contains("not found") => {
                Ok(())
            }
            Err(e) => Err(e),
        },
        Step::Route { remove, restore } => {
            if let Some(m) = remove {
                route_del(nl, m).await?;
            }
            if let Some(m) = restore {
                match route_add(nl, m).await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(nl_failed("re-adding a route", e)),
                }
            }
            Ok(())
        }
        Step::Neigh { remove, restore } => {
            if let Some(m) = remove {
                neigh_del(nl, m).await?;
            }
            if let Some(m) = restore {
                neigh_put(nl, m).await?;
            }
            Ok(())
        }
        Step::Vlan {
            ifname,
            vid,
            bridge_self,
            remove,
            restore,
        } => {
            let Some(f) = find(nl, &ifname).await? else {
                return Ok(());
            };
            if remove {
                bridge_vlan_set(nl, f.ifindex, vid, 0, bridge_self, false).await?;
            }
            if let Some(flags) = restore {
                bridge_vlan_set(nl, f.ifindex, vid, flags, bridge_self, true).await?;
            }
            Ok(())
        }
        Step::Addr { ifname, old } => match find(nl, &ifname).await? {
            Some(f) => readd_address(nl, f.ifindex, &old).await,
            None => Ok(()),
        },
        Step::Delete { ifname, team } => {
            if let Some(t) = &team {
                stop_teamd(t).await;
            }
            delete_link(nl, &ifname).await
        }
        Step::Move { ifname, target } => {
            let f = facts(nl, &ifname).await?;
            move_link(nl, &f, target).await
        }
        Step::Restore { ifname, state } => restore(nl, &ifname, &state, true).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Journal
// ---------------------------------------------------------------------------------------------

/// A link this session created, and where it is now.
#[derive(Debug, Clone)]
struct Created {
    loc: Loc,
    name: String,
    alive: bool,
    /// Index of a veth's other end.
    peer: Option<usize>,
    team: Option<TeamProc>,
}

#[derive(Debug)]
enum Entry {
    /// Index into the created-link table.
    Created(usize),
    Netns(String),
    /// A link that existed before, moved from `back_to` to `at`.
    Moved {
        ifname: String,
        at: Loc,
        back_to: Loc,
        state: LinkState,
    },
    Step {
        loc: Loc,
        step: Step,
    },
    /// A device or host tunable's previous state (tunables.rs).
    Tunable {
        loc: Loc,
        undo: super::tunables::Undo,
    },
}

/// Namespaces one session may hold (each is a thread of the agent).
pub const MAX_NAMESPACES: usize = 64;

/// The agent's own netlink connection and namespace descriptor.
struct Root {
    nl: net::Netlink,
    fd: std::os::fd::OwnedFd,
}

/// Links, routes, neighbours and namespaces of one session, with the journal that undoes them.
#[derive(Default)]
pub struct Links {
    root: tokio::sync::OnceCell<Root>,
    namespaces: Mutex<BTreeMap<String, Arc<Netns>>>,
    journal: Mutex<Vec<Entry>>,
    created: Mutex<Vec<Created>>,
    /// Journaled operations and the undo run one at a time.
    serial: tokio::sync::Mutex<()>,
}

impl Links {
    async fn root(&self) -> Result<&Root, OpError> {
        self.root
            .get_or_try_init(|| async {
                Ok(Root {
                    nl: net::Netlink::new()?,
                    fd: netns::open_agent_netns()?,
                })
            })
            .await
    }

    fn netns(&self, name: &str) -> Result<Arc<Netns>, OpError> {
        lock(&self.namespaces).get(name).cloned().ok_or_else(|| {
            OpError::new(
                ErrorKind::NotFound,
                format!("no such agent namespace: {name}"),
            )
        })
    }

    /// Descriptor of a location (kept alive by `keep` while it is used).
    async fn fd_of(&self, loc: &Loc, keep: &mut Vec<Arc<Netns>>) -> Result<RawFd, OpError> {
        match loc {
            None => Ok(self.root().await?.fd.as_raw_fd()),
            Some(n) => {
                let ns = self.netns(n)?;
                let fd = ns.fd().as_raw_fd();
                keep.push(ns);
                Ok(fd)
            }
        }
    }

    async fn run_task_at(&self, loc: &Loc, task: Task) -> Result<(Reply, Effect), OpError> {
        match loc {
            None => run_task(&self.root().await?.nl, task).await,
            Some(n) => {
                self.netns(n)?
                    .run(move |ctx| async move { run_task(&ctx.nl, task).await })
                    .await?
            }
        }
    }

    async fn run_step_at(&self, loc: &Loc, step: Step) -> Result<(), OpError> {
        match loc {
            None => run_step(&self.root().await?.nl, step).await,
            Some(n) => {
                self.netns(n)?
                    .run(move |ctx| async move { run_step(&ctx.nl, step).await })
                    .await?
            }
        }
    }

    fn created_at(&self, loc: &Loc, name: &str) -> Option<usize> {
        lock(&self.created)
            .iter()
            .position(|c| c.alive && c.loc == *loc && c.name == name)
    }

    fn mark_dead(&self, idx: usize) {
        let mut c = lock(&self.created);
        let peer = c.get(idx).and_then(|x| x.peer);
        for i in [Some(idx), peer].into_iter().flatten() {
            if let Some(x) = c.get_mut(i) {
                x.alive = false;
            }
        }
    }

    fn push(&self, e: Entry) {
        lock(&self.journal).push(e);
    }

    /// Run one journaled operation at `loc` (under the lock; the caller detaches it).
    async fn exec(&self, loc: Loc, op: Op) -> Result<Reply, OpError> {
        let _g = self.serial.lock().await;
        if let Some(n) = &loc {
            self.netns(n)?;
        }
        let mut keep = Vec::new();
        let task = match op {
            Op::CreateLink {
                ifname,
                link,
                master,
                mtu,
                up,
            } => {
                check_new_ifname(&ifname)?;
                check_spec(&ifname, &link)?;
                check_mtu(mtu)?;
                if let Some(m) = &master {
                    net::check_ifname(m)?;
                }
                let (peer_fd, peer_loc) = match &link {
                    LinkSpec::Veth {
                        peer_netns: Some(n),
                        ..
                    } => {
                        let pl = Some(n.clone());
                        (Some(self.fd_of(&pl, &mut keep).await?), pl)
                    }
                    _ => (None, loc.clone()),
                };
                Task::Create {
                    ifname,
                    spec: link,
                    master,
                    mtu,
                    up,
                    peer_fd,
                    peer_loc,
                    tag: loc.clone().unwrap_or_else(|| "root".into()),
                }
            }
            Op::DeleteLink { ifname } => {
                net::check_ifname(&ifname)?;
                let Some(idx) = self.created_at(&loc, &ifname) else {
                    return Err(OpError::new(
                        ErrorKind::NotAllowed,
                        format!(
                            "{ifname} in {} was not created by this session; only links made \
                             with CreateLink can be deleted",
                            loc_name(&loc)
                        ),
                    ));
                };
                let team = lock(&self.created).get(idx).and_then(|c| c.team.clone());
                let r = self
                    .run_task_at(&loc, Task::Delete { ifname, team })
                    .await?;
                self.mark_dead(idx);
                return Ok(r.0);
            }
            Op::Enslave {
                ifname,
                master,
                team_port,
            } => {
                net::check_ifname(&ifname)?;
                net::check_ifname(&master)?;
                Task::Enslave {
                    ifname,
                    master,
                    team_port,
                }
            }
            Op::Release { ifname } => {
                net::check_ifname(&ifname)?;
                Task::Release { ifname }
            }
            Op::BridgeVlanAdd { vlan } => {
                net::check_ifname(&vlan.ifname)?;
                check_vid(vlan.vid)?;
                Task::Vlan { vlan, add: true }
            }
            Op::BridgeVlanDel { vlan } => {
                net::check_ifname(&vlan.ifname)?;
                check_vid(vlan.vid)?;
                Task::Vlan { vlan, add: false }
            }
            Op::AddRoute { route } => {
                if let Some(d) = &route.dev {
                    net::check_ifname(d)?;
                }
                route_message(&route, route.dev.as_ref().map(|_| 0), false)?;
                Task::RouteAdd(route)
            }
            Op::DelRoute { route } => {
                if let Some(d) = &route.dev {
                    net::check_ifname(d)?;
                }
                route_message(&route, route.dev.as_ref().map(|_| 0), true)?;
                Task::RouteDel(route)
            }
            Op::AddNeighbour { neighbour } => {
                net::check_ifname(&neighbour.ifname)?;
                parse_ip("neighbour address", &neighbour.ip)?;
                match &neighbour.lladdr {
                    Some(m) => {
                        parse_mac(m)?;
                    }
                    None => return Err(bad("AddNeighbour: lladdr is required")),
                }
                Task::NeighAdd(neighbour)
            }
            Op::DelNeighbour { neighbour } => {
                net::check_ifname(&neighbour.ifname)?;
                parse_ip("neighbour address", &neighbour.ip)?;
                Task::NeighDel(neighbour)
            }
            Op::DelAddress { ifname, addr } => {
                net::check_ifname(&ifname)?;
                Task::AddrDel { ifname, addr }
            }
            Op::AddL2tpTunnel { tunnel } => {
                super::l2tp::check_tunnel(&tunnel)?;
                Task::L2tp {
                    argv: tunnel.argv(),
                    undo: super::l2tp::del_tunnel_argv(tunnel.tunnel_id),
                }
            }
            Op::AddL2tpSession { session } => {
                super::l2tp::check_session(&session)?;
                Task::L2tp {
                    argv: session.argv(),
                    undo: super::l2tp::del_session_argv(&session),
                }
            }
            Op::MoveLink { ifname, netns } => {
                net::check_ifname(&ifname)?;
                if let Some(n) = &netns {
                    netns::check_name(n)?;
                }
                if netns == loc {
                    return Ok(Reply::Ok);
                }
                let target = self.fd_of(&netns, &mut keep).await?;
                let (reply, effect) = self
                    .run_task_at(
                        &loc,
                        Task::Move {
                            ifname: ifname.clone(),
                            target,
                        },
                    )
                    .await?;
                if let Effect::Moved { ifname, state } = effect {
                    match self.created_at(&loc, &ifname) {
                        Some(idx) => {
                            if let Some(c) = lock(&self.created).get_mut(idx) {
                                c.loc = netns.clone();
                            }
                        }
                        None => self.push(Entry::Moved {
                            ifname,
                            at: netns.clone(),
                            back_to: loc.clone(),
                            state,
                        }),
                    }
                }
                tracing::info!("moved to {}", loc_name(&netns));
                return Ok(reply);
            }
            other => {
                return Err(OpError::new(
                    ErrorKind::Internal,
                    format!("{} is not a link operation", other.name()),
                ))
            }
        };
        let (reply, effect) = self.run_task_at(&loc, task).await?;
        drop(keep);
        self.record(&loc, effect);
        Ok(reply)
    }

    fn record(&self, loc: &Loc, effect: Effect) {
        match effect {
            Effect::None | Effect::Moved { .. } => {}
            Effect::Created { ifname, peer, team } => {
                let mut c = lock(&self.created);
                let idx = c.len();
                let peer_idx = peer.as_ref().map(|_| idx + 1);
                c.push(Created {
                    loc: loc.clone(),
                    name: ifname,
                    alive: true,
                    peer: peer_idx,
                    team,
                });
                if let Some((ploc, p)) = peer {
                    c.push(Created {
                        loc: ploc,
                        name: p,
                        alive: true,
                        peer: Some(idx),
                        team: None,
                    });
                }
                drop(c);
                self.push(Entry::Created(idx));
            }
            Effect::Master {
                port,
                old_master,
                state,
            } => {
                // The first change of a port's master this session holds what to put back;
                // a later change (releasing it again) needs no undo of its own, and one would
                // point at a master that may be gone by the end of the recipe.
                let known = lock(&self.journal).iter().any(|e| {
                    matches!(e, Entry::Step { loc: l, step: Step::Master { port: p, .. } }
                        if l == loc && *p == port)
                });
                if known {
                    return;
                }
                let pre_existing = self.created_at(loc, &port).is_none();
                self.push(Entry::Step {
                    loc: loc.clone(),
                    step: Step::Master {
                        port,
                        master: old_master,
                        state: pre_existing.then_some(state),
                    },
                });
            }
            Effect::Undo(step) => {
                if !self.cancels(loc, &step) {
                    self.push(Entry::Step {
                        loc: loc.clone(),
                        step,
                    })
                }
            }
        }
    }

    /// A deletion of something this session added cancels the addition's undo instead of
    /// journaling a restore (whose context, a gateway or a port, may be gone by then).
    fn cancels(&self, loc: &Loc, step: &Step) -> bool {
        let mut j = lock(&self.journal);
        let hit = j.iter_mut().enumerate().rev().find_map(|(i, e)| {
            let Entry::Step { loc: l, step: s } = e else {
                return None;
            };
            if l != loc {
                return None;
            }
            let cancelled = match (step, s) {
                (
                    Step::Route {
                        remove: None,
                        restore: Some(gone),
                    },
                    Step::Route {
                        remove: remove @ Some(_),
                        ..
                    },
                ) if remove
                    .as_ref()
                    .is_some_and(|added| route_matches(added, gone)) =>
                {
                    *remove = None;
                    true
                }
                (
                    Step::Neigh {
                        remove: None,
                        restore: Some(gone),
                    },
                    Step::Neigh {
                        remove: remove @ Some(_),
                        ..
                    },
                ) if remove.as_ref().is_some_and(|added| {
                    added.header.ifindex == gone.header.ifindex
                        && neigh_dst(added) == neigh_dst(gone)
                }) =>
                {
                    *remove = None;
                    true
                }
                (
                    Step::Vlan {
                        ifname,
                        vid,
                        bridge_self,
                        remove: false,
                        ..
                    },
                    Step::Vlan {
                        ifname: i2,
                        vid: v2,
                        bridge_self: b2,
                        remove: remove @ true,
                        ..
                    },
                ) if ifname == i2 && vid == v2 && bridge_self == b2 => {
                    *remove = false;
                    true
                }
                _ => false,
            };
            cancelled.then_some(i)
        });
        let Some(i) = hit else { return false };
        let empty = matches!(
            j.get(i),
            Some(Entry::Step {
                step: Step::Route {
                    remove: None,
                    restore: None
                } | Step::Neigh {
                    remove: None,
                    restore: None
                } | Step::Vlan {
                    remove: false,
                    restore: None,
                    ..
                },
                ..
            })
        );
        if empty {
            j.remove(i);
        }
        true
    }

    async fn create_netns(&self, name: &str) -> Result<Reply, OpError> {
        netns::check_name(name)?;
        let _g = self.serial.lock().await;
        {
            let all = lock(&self.namespaces);
            if all.contains_key(name) {
                return Err(failed(format!("agent namespace {name} already exists")));
            }
            if all.len() >= MAX_NAMESPACES {
                return Err(OpError::new(
                    ErrorKind::NotAllowed,
                    format!("at most {MAX_NAMESPACES} agent namespaces per session"),
                ));
            }
        }
        // The agent's namespace descriptor is taken before the first namespace exists.
        self.root().await?;
        let ns = Netns::create(name).await?;
        lock(&self.namespaces).insert(name.to_string(), ns);
        self.push(Entry::Netns(name.to_string()));
        Ok(Reply::Ok)
    }

    /// Delete namespace `name` now: its journal entries are undone (links that existed before
    /// go back), links created in it are deleted, its jobs killed.
    async fn delete_netns(&self, name: &str) -> Result<Reply, OpError> {
        netns::check_name(name)?;
        let _g = self.serial.lock().await;
        self.netns(name)?;
        let loc: Loc = Some(name.to_string());
        // Take this namespace's entries out of the journal, keeping their order.
        let mine = {
            let mut j = lock(&self.journal);
            let mut mine = Vec::new();
            let mut i = 0;
            while i < j.len() {
                let ours = match &j[i] {
                    Entry::Step { loc: l, .. } | Entry::Tunable { loc: l, .. } => *l == loc,
                    Entry::Moved { at, .. } => *at == loc,
                    Entry::Netns(n) => n == name,
                    Entry::Created(_) => false,
                };
                if ours {
                    mine.push(j.remove(i));
                } else {
                    i += 1;
                }
            }
            mine
        };
        let mut errors = Vec::new();
        for e in mine.into_iter().rev() {
            match e {
                Entry::Moved {
                    ifname,
                    at: _,
                    back_to,
                    state,
                } => {
                    // Moved on from here to elsewhere later: let that later entry bring it
                    // straight back where it came from.
                    let rewired = {
                        let mut j = lock(&self.journal);
                        let later = j.iter_mut().rev().find_map(|e| match e {
                            Entry::Moved {
                                ifname: n,
                                back_to: b,
                                ..
                            } if *n == ifname && *b == loc => Some(b),
                            _ => None,
                        });
                        match later {
                            Some(b) => {
                                *b = back_to.clone();
                                true
                            }
                            None => false,
                        }
                    };
                    if !rewired {
                        self.undo_moved(&ifname, &loc, &back_to, state, &mut errors)
                            .await;
                    }
                }
                Entry::Step { step, .. } => {
                    let what = step.describe();
                    if let Err(e) = self.run_step_at(&loc, step).await {
                        errors.push(format!("{what}: {}", e.message));
                    }
                }
                Entry::Tunable { undo, .. } => self.undo_tunable(&loc, undo, &mut errors).await,
                Entry::Netns(_) | Entry::Created(_) => {}
            }
        }
        self.drop_netns(name, &mut errors).await;
        if errors.is_empty() {
            Ok(Reply::Ok)
        } else {
            Err(failed(format!(
                "namespace {name} deleted; restore incomplete: {}",
                errors.join("; ")
            )))
        }
    }

    async fn undo_moved(
        &self,
        ifname: &str,
        at: &Loc,
        back_to: &Loc,
        state: LinkState,
        errors: &mut Vec<String>,
    ) {
        let mut keep = Vec::new();
        let target = match self.fd_of(back_to, &mut keep).await {
            Ok(fd) => fd,
            Err(e) => {
                errors.push(format!("moving {ifname} back: {}", e.message));
                return;
            }
        };
        let step = Step::Move {
            ifname: ifname.to_string(),
            target,
        };
        if let Err(e) = self.run_step_at(at, step).await {
            errors.push(format!(
                "moving {ifname} back to {}: {}",
                loc_name(back_to),
                e.message
            ));
            return;
        }
        drop(keep);
        let step = Step::Restore {
            ifname: ifname.to_string(),
            state,
        };
        if let Err(e) = self.run_step_at(back_to, step).await {
            errors.push(format!("restoring {ifname}: {}", e.message));
        }
    }

    /// Delete the created links in a namespace, move any other link still in it to the
    /// agent's namespace, stop its thread and forget it (its jobs are killed by the caller).
    async fn drop_netns(&self, name: &str, errors: &mut Vec<String>) {
        let Ok(ns) = self.netns(name) else { return };
        let loc: Loc = Some(name.to_string());
        let here: Vec<usize> = lock(&self.created)
            .iter()
            .enumerate()
            .filter(|(_, c)| c.alive && c.loc == loc)
            .map(|(i, _)| i)
            .rev()
            .collect();
        for idx in here {
            let Some(c) = lock(&self.created).get(idx).cloned() else {
                continue;
            };
            if !c.alive {
                continue;
            }
            let step = Step::Delete {
                ifname: c.name.clone(),
                team: c.team.clone(),
            };
            if let Err(e) = self.run_step_at(&loc, step).await {
                errors.push(format!("deleting {}: {}", c.name, e.message));
            }
            self.mark_dead(idx);
        }
        // Anything else left (a move back failed): rescue it to the agent's namespace rather
        // than let the kernel hand it to the initial namespace or destroy it.
        match self.root().await {
            Ok(root) => {
                let target = root.fd.as_raw_fd();
                let left = ns
                    .run(move |ctx| async move {
                        let mut moved = Vec::new();
                        for l in ctx.nl.links().await.unwrap_or_default() {
                            if l.name == "lo" || is_fallback_tunnel(&l.name, l.kind.as_deref()) {
                                continue;
                            }
                            let f = Facts {
                                ifindex: l.ifindex,
                                name: l.name.clone(),
                                master: None,
                                mtu: l.mtu,
                                up: l.up,
                                mac: Vec::new(),
                                kind: l.kind.clone(),
                            };
                            let r = move_link(&ctx.nl, &f, target).await;
                            moved.push((l.name, r.err().map(|e| e.message)));
                        }
                        moved
                    })
                    .await
                    .unwrap_or_default();
                for (n, err) in left {
                    errors.push(match err {
                        None => format!(
                            "{n} was still in namespace {name}; moved to the agent's namespace"
                        ),
                        Some(e) => format!(
                            "{n} was still in namespace {name} and could not be moved out: {e}"
                        ),
                    });
                }
            }
            Err(e) => errors.push(e.message),
        }
        ns.shutdown().await;
        lock(&self.namespaces).remove(name);
        // Entries of other namespaces that point here are void now.
        lock(&self.journal).retain(|e| !matches!(e, Entry::Netns(n) if n == name));
    }

    /// Run a tunable (tunables.rs) at `loc` under the journal's lock and journal what it
    /// changed, also when it failed half-way; host-wide state is journaled for the agent's
    /// namespace.
    pub(super) async fn exec_tunable(&self, loc: Loc, op: Op) -> Result<Reply, OpError> {
        use super::tunables;
        let _g = self.serial.lock().await;
        let (reply, undos) = match &loc {
            None => tunables::run(&self.root().await?.nl, op).await,
            Some(n) => {
                self.netns(n)?
                    .run(move |ctx| async move { tunables::run(&ctx.nl, op).await })
                    .await?
            }
        };
        for undo in undos {
            let at = if undo.is_global() { None } else { loc.clone() };
            self.push(Entry::Tunable { loc: at, undo });
        }
        reply
    }

    async fn undo_tunable(&self, loc: &Loc, undo: super::tunables::Undo, errors: &mut Vec<String>) {
        use super::tunables;
        let what = undo.describe();
        let r = match loc {
            None => match self.root().await {
                Ok(root) => tunables::undo(&root.nl, undo).await,
                Err(e) => Err(e),
            },
            Some(n) => match self.netns(n) {
                Ok(ns) => ns
                    .run(move |ctx| async move { tunables::undo(&ctx.nl, undo).await })
                    .await
                    .and_then(|r| r),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = r {
            errors.push(format!("{what}: {}", e.message));
        }
    }

    /// Undo the whole journal in reverse order; every namespace goes.
    pub async fn undo_all(&self, errors: &mut Vec<String>) {
        let _g = self.serial.lock().await;
        loop {
            let Some(e) = lock(&self.journal).pop() else {
                break;
            };
            match e {
                Entry::Created(idx) => {
                    let c = lock(&self.created).get(idx).cloned();
                    let Some(c) = c else { continue };
                    let peer = c.peer.and_then(|p| lock(&self.created).get(p).cloned());
                    // Either end of a veth deletes the pair.
                    let target = if c.alive {
                        Some(c)
                    } else {
                        peer.filter(|p| p.alive)
                    };
                    if let Some(t) = target {
                        let known = t.loc.as_ref().is_none_or(|n| self.netns(n).is_ok());
                        if known {
                            let step = Step::Delete {
                                ifname: t.name.clone(),
                                team: t.team.clone(),
                            };
                            if let Err(e) = self.run_step_at(&t.loc, step).await {
                                errors.push(format!("deleting {}: {}", t.name, e.message));
                            }
                        }
                    }
                    self.mark_dead(idx);
                }
                Entry::Netns(name) => self.drop_netns(&name, errors).await,
                Entry::Moved {
                    ifname,
                    at,
                    back_to,
                    state,
                } => self.undo_moved(&ifname, &at, &back_to, state, errors).await,
                Entry::Step { loc, step } => {
                    if loc.as_ref().is_some_and(|n| self.netns(n).is_err()) {
                        continue;
                    }
                    let what = step.describe();
                    if let Err(e) = self.run_step_at(&loc, step).await {
                        errors.push(format!("{what}: {}", e.message));
                    }
                }
                Entry::Tunable { loc, undo } => {
                    if loc.as_ref().is_some_and(|n| self.netns(n).is_err()) {
                        continue;
                    }
                    self.undo_tunable(&loc, undo, errors).await;
                }
            }
        }
        // Namespaces not in the journal any more (none expected) go too.
        let rest: Vec<String> = lock(&self.namespaces).keys().cloned().collect();
        for n in rest {
            self.drop_netns(&n, errors).await;
        }
        lock(&self.created).clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Session hooks
// ---------------------------------------------------------------------------------------------

/// Operations that only make sense in the agent's own namespace.
fn root_only(op: &Op) -> bool {
    matches!(
        op,
        Op::StartRecipe { .. }
            | Op::EndRecipe
            | Op::Bye
            | Op::CreateNetns { .. }
            | Op::DeleteNetns { .. }
            | Op::InNetns { .. }
    )
}

/// Write an allowed sysctl of a namespace (from its thread: /proc/sys/net is per namespace),
/// with the same allow-list and link-free open as the agent's own ([`super::sysctl`]). Not
/// journaled: the namespace goes at the end of the recipe.
fn ns_sysctl_write(path: &str, value: &str) -> Result<String, OpError> {
    let key = super::sysctl::Key::parse(path)?;
    key.check_value(value)?;
    let root = std::path::Path::new(super::sysctl::SYSCTL_ROOT);
    let old = if key.write_only {
        String::new()
    } else {
        super::sysctl::read(root, &key)?
    };
    super::sysctl::write(root, &key, value)?;
    Ok(old)
}

/// The plain interface operations, run on a namespace's thread.
async fn ns_basic(nl: &net::Netlink, op: Op) -> Result<Reply, OpError> {
    match op {
        Op::ListInterfaces => Ok(Reply::Interfaces(nl.list_interfaces().await?)),
        Op::SetLink { ifname, up } => nl.set_link(&ifname, up).await.map(|_| Reply::Ok),
        Op::SetMtu { ifname, mtu } => nl.set_mtu(&ifname, mtu).await.map(|_| Reply::Ok),
        Op::AddAddress { ifname, addr } => nl.add_address(&ifname, &addr).await.map(|_| Reply::Ok),
        Op::FlushAddresses { ifname } => nl.flush_addresses(&ifname).await.map(|_| Reply::Ok),
        Op::GetOffloads { ifname } => {
            nl.link(&ifname).await?;
            Ok(Reply::Offloads(net::get_offloads(&ifname).await?))
        }
        Op::SetOffloads { ifname, features } => {
            nl.link(&ifname).await?;
            net::set_offloads(&ifname, &features).await?;
            Ok(Reply::Ok)
        }
        Op::WaitDad { ifname, timeout_ms } => {
            nl.wait_dad(&ifname, Duration::from_millis(timeout_ms))
                .await?;
            Ok(Reply::Ok)
        }
        Op::SysctlWrite { path, value } => Ok(Reply::OldValue(ns_sysctl_write(&path, &value)?)),
        Op::Shell { argv } => {
            let Some((prog, args)) = argv.split_first() else {
                return Err(bad("empty argv"));
            };
            let out = tokio::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| failed(format!("{prog}: {e}")))?;
            Ok(Reply::Shell(ShellOutput {
                exit_code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }))
        }
        other => Err(OpError::new(
            ErrorKind::Internal,
            format!("{} is not a plain interface operation", other.name()),
        )),
    }
}

fn is_journaled(op: &Op) -> bool {
    matches!(
        op,
        Op::CreateLink { .. }
            | Op::DeleteLink { .. }
            | Op::Enslave { .. }
            | Op::Release { .. }
            | Op::BridgeVlanAdd { .. }
            | Op::BridgeVlanDel { .. }
            | Op::AddRoute { .. }
            | Op::DelRoute { .. }
            | Op::AddNeighbour { .. }
            | Op::DelNeighbour { .. }
            | Op::DelAddress { .. }
            | Op::AddL2tpTunnel { .. }
            | Op::AddL2tpSession { .. }
            | Op::MoveLink { .. }
    )
}

impl Session {
    /// The link, route, neighbour and namespace operations (and InNetns).
    pub(super) async fn dispatch_links(&self, op: Op) -> Result<Reply, OpError> {
        match op {
            Op::InNetns { netns, inner } => self.in_netns(netns, *inner).await,
            Op::DeleteNetns { name } => {
                netns::check_name(&name)?;
                let ns = self.links.netns(&name)?;
                let ids: Vec<u64> = std::mem::take(&mut *lock(&ns.jobs));
                for id in ids {
                    let _ = self.jobs.kill(id).await;
                }
                self.detached(None, Op::DeleteNetns { name }).await
            }
            op => self.detached(None, op).await,
        }
    }

    /// Run a journaled operation as its own task: if the request is aborted (Bye, lost
    /// connection) the operation still finishes and is journaled before the undo runs.
    async fn detached(&self, loc: Loc, op: Op) -> Result<Reply, OpError> {
        let links = self.links.clone();
        let h = tokio::spawn(async move {
            match op {
                Op::CreateNetns { name } => links.create_netns(&name).await,
                Op::DeleteNetns { name } => links.delete_netns(&name).await,
                op => links.exec(loc, op).await,
            }
        });
        h.await
            .map_err(|e| OpError::new(ErrorKind::Internal, format!("link operation: {e}")))?
    }

    async fn in_netns(&self, name: String, op: Op) -> Result<Reply, OpError> {
        netns::check_name(&name)?;
        if root_only(&op) {
            return Err(bad(format!("{} cannot run inside a namespace", op.name())));
        }
        let ns = self.links.netns(&name)?;
        if is_journaled(&op) {
            return self.detached(Some(name), op).await;
        }
        if super::tunables::is_tunable(&op) {
            return self.dispatch_tunables(Some(name), op).await;
        }
        match op {
            Op::StartJob { spec } => {
                let listen_port = match &spec {
                    JobSpec::IperfServer { port, .. } => Some(*port),
                    _ => None,
                };
                let id = self.jobs.start_in(
                    spec,
                    super::job_finished_events(&self.out),
                    Some(ns.fd()),
                )?;
                lock(&ns.jobs).push(id);
                self.jobs.wait_ready(id).await;
                if let Some(port) = listen_port {
                    ns.run(move |_| async move {
                        super::jobs::wait_listening(port, Duration::from_secs(5)).await
                    })
                    .await?;
                }
                Ok(Reply::JobId(id))
            }
            Op::WaitJob { job_id, timeout_ms } => Ok(Reply::JobResult(
                self.jobs
                    .wait(job_id, Duration::from_millis(timeout_ms))
                    .await?,
            )),
            Op::StopJob { job_id } => Ok(Reply::JobResult(self.jobs.stop(job_id).await?)),
            Op::KillJob { job_id } => Ok(Reply::JobResult(self.jobs.kill(job_id).await?)),
            Op::KillAllJobs => {
                let ids: Vec<u64> = lock(&ns.jobs).clone();
                for id in ids {
                    let _ = self.jobs.kill(id).await;
                }
                Ok(Reply::Ok)
            }
            Op::Shell { .. } if !self.cfg.allow_shell => Err(OpError::new(
                ErrorKind::NotAllowed,
                "Shell is disabled on this agent (start lnst-agent with --allow-shell)",
            )),
            op => {
                ns.run(move |ctx| async move { ns_basic(&ctx.nl, op).await })
                    .await?
            }
        }
    }

    /// Undo everything the link operations did (EndRecipe, end of session).
    pub(super) async fn undo_links(&self, errors: &mut Vec<String>) {
        self.links.undo_all(errors).await;
    }
}

/// The kernel's per-namespace fallback tunnel devices (`gre0`, `ip6tnl0`, ...): every new
/// namespace gets one per loaded tunnel module; they cannot leave their namespace and go
/// with it, so deleting a namespace leaves them alone.
fn is_fallback_tunnel(name: &str, kind: Option<&str>) -> bool {
    const FALLBACK: [(&str, &str); 10] = [
        ("gre0", "gre"),
        ("gretap0", "gretap"),
        ("erspan0", "erspan"),
        ("ip6gre0", "ip6gre"),
        ("ip6tnl0", "ip6tnl"),
        ("sit0", "sit"),
        ("tunl0", "ipip"),
        ("ip_vti0", "vti"),
        ("ip6_vti0", "vti6"),
        ("ip6gretap0", "ip6gretap"),
    ];
    FALLBACK.contains(&(name, kind.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BondMode, FailOverMac, LacpRate, TeamTxHash, XmitHashPolicy};

    #[test]
    fn only_the_kernels_fallback_tunnels_stay_in_a_deleted_namespace() {
        assert!(is_fallback_tunnel("ip6gre0", Some("ip6gre")));
        assert!(is_fallback_tunnel("ip6tnl0", Some("ip6tnl")));
        assert!(is_fallback_tunnel("gre0", Some("gre")));
        // A device of ours with such a name but another kind, or one without a kind, moves.
        assert!(!is_fallback_tunnel("gre0", Some("veth")));
        assert!(!is_fallback_tunnel("ip6gre0", None));
        assert!(!is_fallback_tunnel("t_gre6_tunnel", Some("ip6gre")));
    }

    fn link_info(m: &LinkMessage) -> Vec<LinkInfo> {
        m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn vlan_message() {
        let spec = LinkSpec::Vlan {
            parent: "eth0".into(),
            id: 10,
            protocol: VlanProtocol::Dot1Ad,
        };
        let r = Resolved {
            parent: Some(7),
            master: Some(9),
            ..Resolved::default()
        };
        let m = create_message("vlan0", &spec, &r, Some(1400)).unwrap_or_default();
        assert!(m
            .attributes
            .contains(&LinkAttribute::IfName("vlan0".into())));
        assert!(m.attributes.contains(&LinkAttribute::Link(7)));
        assert!(m.attributes.contains(&LinkAttribute::Controller(9)));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert!(!m.header.flags.contains(&LinkFlag::Up), "created down");
        assert_eq!(
            link_info(&m),
            vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![
                    InfoVlan::Id(10),
                    InfoVlan::Protocol(NlVlanProtocol::Ieee8021Ad)
                ]))
            ]
        );
        // Without a resolved parent the message is not built.
        assert!(create_message("vlan0", &spec, &Resolved::default(), None).is_err());
    }

    #[test]
    fn bond_message_carries_every_option() {
        let o = BondOptions {
            mode: Some(BondMode::ActiveBackup),
            miimon: Some(100),
            fail_over_mac: Some(FailOverMac::Follow),
            xmit_hash_policy: Some(XmitHashPolicy::Layer34),
            lacp_rate: Some(LacpRate::Fast),
            ad_actor_system: Some("02:00:00:00:00:01".into()),
            arp_ip_target: Some(vec!["198.18.0.1"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST)]),
            primary: Some("eth0".into()),
            tlb_dynamic_lb: Some(false),
            ..BondOptions::default()
        };
        let d = bond_data(&o, Some(3)).unwrap_or_default();
        assert_eq!(
            d,
            vec![
                InfoBond::Mode(1),
                InfoBond::MiiMon(100),
                InfoBond::FailOverMac(2),
                InfoBond::XmitHashPolicy(1),
                InfoBond::AdLacpRate(1),
                InfoBond::AdActorSystem([2, 0, 0, 0, 0, 1]),
                InfoBond::ArpIpTarget(vec!["198.18.0.1"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST)]),
                InfoBond::Primary(3),
                InfoBond::TlbDynamicLb(0),
            ]
        );
        let m = create_message(
            "bond0",
            &LinkSpec::Bond(Box::new(o)),
            &Resolved::default(),
            None,
        )
        .unwrap_or_default();
        assert_eq!(link_info(&m).first(), Some(&LinkInfo::Kind(InfoKind::Bond)));
        // Mode numbers are the kernel's.
        let nums: Vec<u8> = BondMode::ALL.iter().map(|m| m.number()).collect();
        assert_eq!(nums, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(BondMode::parse("1"), Some(BondMode::ActiveBackup));
        assert_eq!(BondMode::parse("802.3ad"), Some(BondMode::Lacp));
        assert_eq!(BondMode::parse("7"), None);
    }

    #[test]
    fn bridge_macvlan_veth_team_messages() {
        let o = BridgeOptions {
            stp: Some(true),
            vlan_filtering: Some(true),
            ..BridgeOptions::default()
        };
        let m = create_message("br0", &LinkSpec::Bridge(o), &Resolved::default(), None)
            .unwrap_or_default();
        assert_eq!(
            link_info(&m),
            vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::StpState(1),
                    InfoBridge::VlanFiltering(1)
                ]))
            ]
        );
        let plain = create_message(
            "br1",
            &LinkSpec::Bridge(BridgeOptions::default()),
            &Resolved::default(),
            None,
        )
        .unwrap_or_default();
        assert_eq!(link_info(&plain), vec![LinkInfo::Kind(InfoKind::Bridge)]);

        let mv = create_message(
            "mv0",
            &LinkSpec::Macvlan {
                parent: "eth0".into(),
                mode: MacvlanMode::Vepa,
            },
            &Resolved {
                parent: Some(2),
                ..Resolved::default()
            },
            None,
        )
        .unwrap_or_default();
        assert!(
            link_info(&mv).contains(&LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                2
            )])))
        );

        let v = create_message(
            "va",
            &LinkSpec::Veth {
                peer: "vb".into(),
                peer_netns: Some("ns1".into()),
            },
            &Resolved {
                peer_netns: Some(42),
                ..Resolved::default()
            },
            None,
        )
        .unwrap_or_default();
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName("vb".into()));
        peer.attributes.push(LinkAttribute::NetNsFd(42));
        assert!(link_info(&v).contains(&LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer)))));

        let t = create_message(
            "team0",
            &LinkSpec::Team(TeamOptions {
                runner: TeamRunner::Lacp,
                link_watch: None,
                tx_hash: None,
                hwaddr_policy: None,
                active: None,
                fast_rate: None,
                min_ports: None,
            }),
            &Resolved::default(),
            None,
        )
        .unwrap_or_default();
        assert_eq!(
            link_info(&t),
            vec![LinkInfo::Kind(InfoKind::Other("team".into()))]
        );
    }

    #[test]
    fn teamd_configuration_and_argv() {
        let o = TeamOptions {
            runner: TeamRunner::Lacp,
            link_watch: Some(TeamLinkWatch::Ethtool {
                delay_up_ms: Some(100),
                delay_down_ms: None,
            }),
            tx_hash: Some(vec![TeamTxHash::Eth, TeamTxHash::L4]),
            hwaddr_policy: None,
            active: Some(true),
            fast_rate: Some(true),
            min_ports: None,
        };
        assert!(check_team(&o).is_ok());
        assert_eq!(
            teamd_config("team0", &o),
            serde_json::json!({
                "device": "team0",
                "runner": {"name": "lacp", "tx_hash": ["eth", "l4"], "active": true, "fast_rate": true},
                "link_watch": {"name": "ethtool", "delay_up": 100}
            })
        );
        let ab = TeamOptions {
            runner: TeamRunner::Activebackup,
            link_watch: None,
            tx_hash: None,
            hwaddr_policy: None,
            active: None,
            fast_rate: None,
            min_ports: None,
        };
        assert_eq!(
            teamd_config("t_team0", &ab),
            serde_json::json!({"device": "t_team0", "runner": {"name": "activebackup"}})
        );
        // Options of another runner are refused.
        let wrong = TeamOptions {
            fast_rate: Some(true),
            ..ab.clone()
        };
        let e = check_team(&wrong)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(e.contains("fast_rate") && e.contains("lacp"), "{e}");
        let argv = teamd_argv("team0", std::path::Path::new("/run/x.pid"), "{}");
        assert_eq!(
            argv,
            [
                "teamd",
                "-d",
                "-o",
                "-n",
                "-U",
                "-t",
                "team0",
                "-p",
                "/run/x.pid",
                "-c",
                "{}"
            ]
        );
        assert_eq!(
            team_port_json(&TeamPortConfig {
                prio: Some(-10),
                sticky: Some(true),
                ..TeamPortConfig::default()
            }),
            serde_json::json!({"prio": -10, "sticky": true})
        );
    }

    #[test]
    fn validation() {
        assert!(check_new_ifname("t_team0").is_ok());
        for n in ["-x", "", "a/b", "1234567890123456", ".."] {
            assert!(check_new_ifname(n).is_err(), "{n}");
        }
        assert!(parse_mac("02:00:00:00:00:0a").is_ok());
        for m in [
            "02:00:00:00:00",
            "02:00:00:00:00:0a:0b",
            "zz:00:00:00:00:00",
            "2:0:0:0:0:0",
        ] {
            assert!(parse_mac(m).is_err(), "{m}");
        }
        let vlan = |id| LinkSpec::Vlan {
            parent: "eth0".into(),
            id,
            protocol: VlanProtocol::Dot1Q,
        };
        assert!(check_spec("v", &vlan(1)).is_ok());
        assert!(check_spec("v", &vlan(4094)).is_ok());
        for id in [0, 4095, 65535] {
            let e = check_spec("v", &vlan(id)).err();
            assert_eq!(e.map(|e| e.kind), Some(ErrorKind::BadRequest), "{id}");
        }
        let veth = LinkSpec::Veth {
            peer: "a".into(),
            peer_netns: None,
        };
        assert!(check_spec("a", &veth).is_err(), "same name");
        assert!(check_spec(
            "a",
            &LinkSpec::Veth {
                peer: "a".into(),
                peer_netns: Some("ns1".into())
            }
        )
        .is_ok());
        assert!(check_spec(
            "a",
            &LinkSpec::Veth {
                peer: "b".into(),
                peer_netns: Some("../etc".into())
            }
        )
        .is_err());
        let bond = |o: BondOptions| {
            check_spec("b", &LinkSpec::Bond(Box::new(o)))
                .err()
                .map(|e| e.kind)
        };
        assert_eq!(
            bond(BondOptions {
                ad_actor_sys_prio: Some(0),
                ..BondOptions::default()
            }),
            Some(ErrorKind::BadRequest)
        );
        assert_eq!(
            bond(BondOptions {
                ad_actor_system: Some("01:00:5e:00:00:01".into()),
                ..BondOptions::default()
            }),
            Some(ErrorKind::BadRequest)
        );
        assert_eq!(
            bond(BondOptions {
                arp_ip_target: Some(vec![std::net::Ipv4Addr::LOCALHOST; 17]),
                ..BondOptions::default()
            }),
            Some(ErrorKind::BadRequest)
        );
        assert_eq!(bond(BondOptions::default()), None);
        assert!(check_mtu(Some(67)).is_err());
        assert!(check_mtu(Some(9000)).is_ok());
    }

    #[test]
    fn unsupported_names_feature_and_module() {
        let e = unsupported(kernel_feature(&LinkSpec::Vlan {
            parent: "eth0".into(),
            id: 5,
            protocol: VlanProtocol::Dot1Q,
        }));
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message
                .starts_with("kernel lacks 802.1Q VLAN support (module 8021q; kernel "),
            "{}",
            e.message
        );
        assert!(unsupported(BRIDGE_VLAN_FEATURE)
            .message
            .contains("bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING"));
    }

    #[test]
    fn lwt_encap_attributes_as_iproute2_sends_them() {
        use crate::protocol::{GeneveOpt, RouteEncap};
        use netlink_packet_utils::nla::Nla;
        let e = RouteEncap {
            id: 1234,
            dst: "fd00:182::2".parse().unwrap(),
            src: None,
            ttl: Some(64),
            tos: None,
            geneve_opt: Some(GeneveOpt {
                class: 0x102,
                kind: 0x80,
                data: vec![0, 1, 0, 1],
            }),
        };
        let (kind, attrs) = lwt_encap("198.18.185.1", &e).unwrap();
        assert_eq!(kind, RouteLwEnCapType::Ip6);
        let raw: Vec<(u16, Vec<u8>)> = attrs
            .iter()
            .map(|a| {
                let mut v = vec![0; a.value_len()];
                a.emit_value(&mut v);
                (a.kind(), v)
            })
            .collect();
        assert_eq!(raw[0], (1, 1234u64.to_be_bytes().to_vec()));
        assert_eq!(raw[1].0, 2);
        assert_eq!(raw[1].1.len(), 16);
        assert_eq!(raw[2], (4, vec![64]));
        // LWTUNNEL_IP_OPTS (8, nested) > LWTUNNEL_IP_OPTS_GENEVE (1, nested) > class, type, data.
        assert_eq!(raw[3].0, 8 | NLA_F_NESTED);
        let mut want = nla(1, &0x102u16.to_be_bytes());
        want.extend(nla(2, &[0x80]));
        want.extend(nla(3, &[0, 1, 0, 1]));
        assert_eq!(raw[3].1, nla(1 | NLA_F_NESTED, &want));
        // A source of the other family, and option data not in 4-byte words, are refused.
        let bad = RouteEncap {
            src: Some("198.18.182.1".parse().unwrap()),
            ..e.clone()
        };
        assert!(lwt_encap("x", &bad).is_err());
        let mut bad = e;
        bad.geneve_opt = Some(GeneveOpt {
            class: 1,
            kind: 1,
            data: vec![1, 2],
        });
        assert!(lwt_encap("x", &bad).is_err());
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

    #[test]
    fn route_messages() {
        let m = route_message(
            &RouteSpec {
                via: Some("198.18.0.1".into()),
                ..route("default")
            },
            None,
            false,
        )
        .unwrap_or_default();
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        let m6 = route_message(
            &RouteSpec {
                dev: Some("br0".into()),
                metric: Some(5),
                table: Some(1000),
                ..route("fd00:30::/64")
            },
            Some(4),
            false,
        )
        .unwrap_or_default();
        assert_eq!(m6.header.address_family, AddressFamily::Inet6);
        assert_eq!(m6.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert!(m6.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(m6.attributes.contains(&RouteAttribute::Oif(4)));
        assert!(m6.attributes.contains(&RouteAttribute::Priority(5)));
        // A host route from a bare address; a link route gets link scope.
        let h = route_message(
            &RouteSpec {
                dev: Some("eth0".into()),
                ..route("198.18.102.2")
            },
            Some(2),
            false,
        )
        .unwrap_or_default();
        assert_eq!(h.header.destination_prefix_length, 32);
        assert_eq!(h.header.scope, RouteScope::Link);
        // Refused: host bits, mixed families, nothing to route through, default without
        // family hint picks IPv4 unless ipv6 is set.
        assert!(route_message(&route("198.18.0.1/24"), Some(1), false).is_err());
        assert!(route_message(
            &RouteSpec {
                via: Some("fd00::1".into()),
                ..route("198.18.0.0/24")
            },
            None,
            false
        )
        .is_err());
        assert!(route_message(&route("198.18.0.0/24"), None, false).is_err());
        // A deletion may name the route by its destination alone.
        assert!(route_message(&route("198.18.0.0/24"), None, true).is_ok());
        assert!(route_message(
            &RouteSpec {
                kind: RouteKind::Blackhole,
                ..route("198.18.0.0/24")
            },
            None,
            false
        )
        .is_ok());
        let d6 = route_message(
            &RouteSpec {
                ipv6: true,
                dev: Some("x".into()),
                ..route("default")
            },
            Some(1),
            false,
        )
        .unwrap_or_default();
        assert_eq!(d6.header.address_family, AddressFamily::Inet6);
        // Matching a dump: extra attributes of the kernel's copy do not matter; a different
        // gateway does.
        let want = route_message(
            &RouteSpec {
                via: Some("198.18.0.1".into()),
                ..route("198.18.5.0/24")
            },
            None,
            false,
        )
        .unwrap_or_default();
        let mut have = want.clone();
        have.attributes.push(RouteAttribute::Oif(3));
        have.header.flags.push(RouteFlag::Cloned);
        assert!(route_matches(&want, &have));
        let back = route_for_readd(&have);
        assert!(back.header.flags.is_empty());
        let mut other = want.clone();
        other
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Gateway(_)));
        other
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "198.18.0.2"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            )));
        assert!(!route_matches(&want, &other));
    }

    #[test]
    fn bridge_vlan_wire_message() {
        let v = BridgeVlan {
            ifname: "p0".into(),
            vid: 10,
            pvid: true,
            untagged: true,
            bridge_self: false,
        };
        let m = bridge_vlan_message(5, v.vid, vlan_flags(&v), v.bridge_self);
        assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        assert_eq!(m.header.index, 5);
        let mut info = BridgeVlanInfo::default();
        info.vid = 10;
        info.flags = 6;
        assert_eq!(
            m.attributes,
            vec![LinkAttribute::AfSpecBridge(vec![
                AfSpecBridge::Flags(BRIDGE_FLAGS_MASTER),
                AfSpecBridge::VlanInfo(info)
            ])]
        );
    }
}
