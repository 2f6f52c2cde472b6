//! Test-wide configuration: the steps a recipe declares (addresses, link state, MTU; device
//! creation, routes and namespaces slot in as [`Step`] variants once the agent has the
//! operations, see docs/ARCHITECTURE.md), applied in order with one result each, and the configuration they leave
//! (upstream `EnrtConfiguration`: the devices and the addresses the recipe configured).

use crate::protocol::{BondOptions, LinkSpec, RouteSpec, TeamOptions, TeamRunner};
use crate::recipes::context::{Dev, RecipeError, RunContext};
use crate::recipes::typed::{IfAddr, IpVersion};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long configured IPv6 addresses may stay tentative (upstream `wait_tentative_ips`).
pub const TENTATIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One step of a test-wide configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Add an address to a device and track it (`configure_and_track_ip`), recorded as
    /// `ip_add('198.18.0.1/24')`.
    Address { dev: Dev, addr: IfAddr },
    /// Add an address without tracking it (upstream's plain `dev.ip_add(...)`): not in the
    /// configuration's record, so neither pinged nor described nor waited for.
    UntrackedAddress { dev: Dev, addr: IfAddr },
    /// An [`Step::Address`] on a device the recipe neither matched nor created (`lo`), which
    /// the agent's snapshot does not restore: the address is deleted again (`ip_del`) when
    /// the configuration is taken down.
    AddressUndone { dev: Dev, addr: IfAddr },
    /// Bring a device up, recorded as `up_and_wait()` (`wait`) or `up()`.
    Up { dev: Dev, wait: bool },
    /// Set a device's MTU, recorded as an attribute change.
    Mtu { dev: Dev, mtu: u32 },
    /// Wait until no address of the devices configured so far is tentative.
    WaitTentative,
    /// Create a soft device (deleted when the test-wide configuration is taken down),
    /// optionally as a port of `master` from its creation (upstream `master=` kwarg).
    Create {
        dev: Dev,
        link: Link,
        master: Option<Dev>,
    },
    /// Make `port` a port of `master` (`master.slave_add(port)`).
    Enslave { port: Dev, master: Dev },
    /// Set a device down.
    Down { dev: Dev },
    /// Track a device without addresses (`track_device`): it shows in the description and
    /// in the tentative-address wait.
    Track { dev: Dev },
    /// Create the agent namespace `<host>.<attr>` (agent name `name`).
    Netns {
        host: String,
        attr: String,
        name: String,
    },
    /// Move `dev` into the namespace `to` (`host2.ns`); later steps name it `host2.ns.<id>`.
    Move { dev: Dev, to: String },
    /// Add a route on a host or namespace; `dev` fills the route's device.
    Route {
        host: String,
        route: RouteSpec,
        dev: Option<Dev>,
    },
    /// Create a static L2TPv3 tunnel on a host (upstream `L2TPManager.create_tunnel`); the
    /// agent deletes it, with its sessions, when the recipe ends.
    L2tpTunnel {
        host: String,
        tunnel: crate::protocol::L2tpTunnelSpec,
    },
    /// Create an L2TP session whose Ethernet device is `dev` (upstream
    /// `L2TPSessionDevice(tunnel_id, session_id, peer_session_id)`).
    L2tpSession {
        dev: Dev,
        tunnel_id: u32,
        session_id: u32,
        peer_session_id: u32,
    },
    /// A point-to-point address (`configure_and_track_ip(dev, ip, peer=…)`), tracked as
    /// `addr`.
    PeerAddress {
        dev: Dev,
        addr: IfAddr,
        peer: std::net::IpAddr,
    },
    /// Write a sysctl (the old value is written back when the configuration is taken down).
    Sysctl {
        host: String,
        path: String,
        value: String,
    },
}

/// A soft device to create; devices are named by requirement paths, resolved to agent names
/// when the step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// `VlanDevice(realdev, vlan_id)`.
    Vlan { parent: Dev, id: u16 },
    /// `BridgeDevice()` with the kernel's defaults.
    Bridge,
    /// `BondDevice(...)`.
    Bond(BondOptions),
    /// `TeamDevice(config={"runner": {"name": ...}})`, driven by teamd.
    Team(TeamRunner),
    /// `VethPair()`: this device and `peer` on the same host.
    Veth { peer: Dev },
    /// `MacvlanDevice(realdev)`.
    Macvlan { parent: Dev },
    /// A tunnel without an underlay device (`GreDevice`, `IpIpDevice`, `SitDevice`,
    /// `Ip6TnlDevice`, `Ip6GreDevice`, `GeneveDevice`, …): the agent's spec as it is sent.
    Tunnel(LinkSpec),
    /// `VxlanDevice(vxlan_id, remote|group, realdev=parent)`; `opts.parent` is filled from
    /// `parent` when the step runs.
    Vxlan {
        parent: Option<Dev>,
        opts: crate::protocol::VxlanOptions,
    },
}

/// `local=…, remote=…, key=…` of a tunnel as upstream's device kwargs.
fn tunnel_kwargs(spec: &LinkSpec) -> (&'static str, Vec<String>) {
    use std::fmt::Display;
    fn kw<T: Display>(out: &mut Vec<String>, name: &str, v: &Option<T>, quote: bool) {
        if let Some(v) = v {
            out.push(if quote {
                format!("{name}='{v}'")
            } else {
                format!("{name}={v}")
            });
        }
    }
    let mut out = Vec::new();
    let cls = match spec {
        LinkSpec::Gre(o) | LinkSpec::GreTap(o) | LinkSpec::Ip6Gre(o) | LinkSpec::Ip6GreTap(o) => {
            kw(&mut out, "local", &o.local, true);
            kw(&mut out, "remote", &o.remote, true);
            kw(&mut out, "key", &o.key, false);
            kw(&mut out, "ttl", &o.ttl, false);
            kw(&mut out, "tos", &o.tos, false);
            match spec {
                LinkSpec::Gre(_) => "GreDevice",
                LinkSpec::GreTap(_) => "GreTapDevice",
                LinkSpec::Ip6Gre(_) => "Ip6GreDevice",
                _ => "Ip6GreTapDevice",
            }
        }
        LinkSpec::Ipip(o) | LinkSpec::Sit(o) | LinkSpec::Ip6Tnl(o) => {
            kw(&mut out, "local", &o.local, true);
            kw(&mut out, "remote", &o.remote, true);
            kw(&mut out, "mode", &o.mode.map(|m| m.name()), true);
            kw(&mut out, "ttl", &o.ttl, false);
            kw(&mut out, "tos", &o.tos, false);
            match spec {
                LinkSpec::Ipip(_) => "IpIpDevice",
                LinkSpec::Sit(_) => "SitDevice",
                _ => "Ip6TnlDevice",
            }
        }
        LinkSpec::Vxlan(o) => {
            out.push(format!("vxlan_id={}", o.id));
            kw(&mut out, "remote", &o.remote, true);
            kw(&mut out, "group", &o.group, true);
            kw(&mut out, "local", &o.local, true);
            kw(&mut out, "dst_port", &o.dstport, false);
            "VxlanDevice"
        }
        LinkSpec::Geneve(o) => {
            out.push(format!("id={}", o.id));
            kw(&mut out, "remote", &o.remote, true);
            kw(&mut out, "dst_port", &o.dstport, false);
            "GeneveDevice"
        }
        _ => "SoftDevice",
    };
    (cls, out)
}

impl Link {
    /// The upstream device class and the keyword arguments shown in the result.
    fn shown(&self) -> (&'static str, Vec<String>) {
        match self {
            Link::Vlan { parent, id } => (
                "VlanDevice",
                vec![format!("realdev={parent}"), format!("vlan_id={id}")],
            ),
            Link::Bridge => ("BridgeDevice", Vec::new()),
            Link::Bond(o) => {
                let mut kw = Vec::new();
                if let Some(m) = o.mode {
                    kw.push(format!("mode='{}'", m.name()));
                }
                if let Some(m) = o.miimon {
                    kw.push(format!("miimon={m}"));
                }
                if let Some(f) = o.fail_over_mac {
                    kw.push(format!(
                        "fail_over_mac='{}'",
                        serde_json::to_value(f)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    ));
                }
                ("BondDevice", kw)
            }
            Link::Team(r) => (
                "TeamDevice",
                vec![format!("config={{'runner': {{'name': '{}'}}}}", r.name())],
            ),
            Link::Veth { peer } => ("VethPair", vec![format!("peer={peer}")]),
            Link::Macvlan { parent } => ("MacvlanDevice", vec![format!("realdev={parent}")]),
            Link::Tunnel(spec) => tunnel_kwargs(spec),
            Link::Vxlan { parent, opts } => {
                let (cls, mut kw) = tunnel_kwargs(&LinkSpec::Vxlan(opts.clone()));
                if let Some(p) = parent {
                    kw.push(format!("realdev={p}"));
                }
                (cls, kw)
            }
        }
    }
}

/// A recipe's test-wide configuration, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestWide {
    pub steps: Vec<Step>,
}

impl TestWide {
    pub fn new() -> Self {
        TestWide::default()
    }
    /// Add and track an address.
    pub fn address(&mut self, dev: &Dev, addr: IfAddr) -> &mut Self {
        self.steps.push(Step::Address {
            dev: dev.clone(),
            addr,
        });
        self
    }
    /// Add an address without tracking it.
    pub fn address_untracked(&mut self, dev: &Dev, addr: IfAddr) -> &mut Self {
        self.steps.push(Step::UntrackedAddress {
            dev: dev.clone(),
            addr,
        });
        self
    }
    /// Bring a device up and wait for it.
    pub fn up_and_wait(&mut self, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Up {
            dev: dev.clone(),
            wait: true,
        });
        self
    }
    /// Bring a device up.
    pub fn up(&mut self, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Up {
            dev: dev.clone(),
            wait: false,
        });
        self
    }
    /// Set an MTU.
    pub fn mtu(&mut self, dev: &Dev, mtu: u32) -> &mut Self {
        self.steps.push(Step::Mtu {
            dev: dev.clone(),
            mtu,
        });
        self
    }
    /// Wait until the configured addresses are no longer tentative.
    pub fn wait_tentative(&mut self) -> &mut Self {
        self.steps.push(Step::WaitTentative);
        self
    }
    /// Create a soft device.
    pub fn create(&mut self, dev: &Dev, link: Link) -> &mut Self {
        self.steps.push(Step::Create {
            dev: dev.clone(),
            link,
            master: None,
        });
        self
    }
    /// Create a soft device as a port of `master`.
    pub fn create_in(&mut self, dev: &Dev, link: Link, master: &Dev) -> &mut Self {
        self.steps.push(Step::Create {
            dev: dev.clone(),
            link,
            master: Some(master.clone()),
        });
        self
    }
    /// Make `port` a port of `master`.
    pub fn enslave(&mut self, port: &Dev, master: &Dev) -> &mut Self {
        self.steps.push(Step::Enslave {
            port: port.clone(),
            master: master.clone(),
        });
        self
    }
    /// Set a device down.
    pub fn down(&mut self, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Down { dev: dev.clone() });
        self
    }
    /// Track a device without addresses.
    pub fn track(&mut self, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Track { dev: dev.clone() });
        self
    }
    /// Add every address of `addrs` to `dev`.
    pub fn addresses(&mut self, dev: &Dev, addrs: &[IfAddr]) -> &mut Self {
        for a in addrs {
            self.address(dev, *a);
        }
        self
    }
    /// Bring every device of `devs` up, without waiting.
    pub fn up_all(&mut self, devs: &[Dev]) -> &mut Self {
        for d in devs {
            self.up(d);
        }
        self
    }
    /// Bring every device of `devs` up and wait for each.
    pub fn up_and_wait_all(&mut self, devs: &[Dev]) -> &mut Self {
        for d in devs {
            self.up_and_wait(d);
        }
        self
    }
    /// Create the agent namespace `<host>.<attr>`.
    pub fn netns(&mut self, host: &str, attr: &str, name: &str) -> &mut Self {
        self.steps.push(Step::Netns {
            host: host.into(),
            attr: attr.into(),
            name: name.into(),
        });
        self
    }
    /// Move `dev` into `to`.
    pub fn move_to(&mut self, dev: &Dev, to: &str) -> &mut Self {
        self.steps.push(Step::Move {
            dev: dev.clone(),
            to: to.into(),
        });
        self
    }
    /// Add a route (`dst` via `via`).
    pub fn route(&mut self, host: &str, dst: String, via: Option<String>) -> &mut Self {
        self.steps.push(Step::Route {
            host: host.into(),
            route: RouteSpec {
                dst,
                via,
                ..RouteSpec::default()
            },
            dev: None,
        });
        self
    }
    /// Add an address to a device the recipe neither matched nor created (`lo`), deleted
    /// again when the configuration is taken down ([`Step::AddressUndone`]).
    pub fn address_undone(&mut self, dev: &Dev, addr: IfAddr) -> &mut Self {
        self.steps.push(Step::AddressUndone {
            dev: dev.clone(),
            addr,
        });
        self
    }

    /// Create a static L2TPv3 tunnel on `host` ([`Step::L2tpTunnel`]).
    pub fn l2tp_tunnel(
        &mut self,
        host: &str,
        tunnel: crate::protocol::L2tpTunnelSpec,
    ) -> &mut Self {
        self.steps.push(Step::L2tpTunnel {
            host: host.to_string(),
            tunnel,
        });
        self
    }

    /// Create an L2TP session device `dev` of tunnel `tunnel_id` ([`Step::L2tpSession`]).
    pub fn l2tp_session(
        &mut self,
        dev: &Dev,
        tunnel_id: u32,
        session_id: u32,
        peer_session_id: u32,
    ) -> &mut Self {
        self.steps.push(Step::L2tpSession {
            dev: dev.clone(),
            tunnel_id,
            session_id,
            peer_session_id,
        });
        self
    }

    /// A point-to-point address with its peer ([`Step::PeerAddress`]).
    pub fn peer_address(&mut self, dev: &Dev, addr: IfAddr, peer: std::net::IpAddr) -> &mut Self {
        self.steps.push(Step::PeerAddress {
            dev: dev.clone(),
            addr,
            peer,
        });
        self
    }

    /// Add a route with any [`RouteSpec`] fields (`encap`, …); `dev` fills its device.
    pub fn route_spec(&mut self, host: &str, route: RouteSpec, dev: Option<&Dev>) -> &mut Self {
        self.steps.push(Step::Route {
            host: host.to_string(),
            route,
            dev: dev.cloned(),
        });
        self
    }

    /// Add a route to `dst` through the device `dev` (`ip route add DST dev DEV`).
    pub fn route_dev(&mut self, host: &str, dst: String, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Route {
            host: host.into(),
            route: RouteSpec {
                dst,
                ..RouteSpec::default()
            },
            dev: Some(dev.clone()),
        });
        self
    }
    /// Write a sysctl.
    pub fn sysctl(&mut self, host: &str, path: &str, value: &str) -> &mut Self {
        self.steps.push(Step::Sysctl {
            host: host.into(),
            path: path.into(),
            value: value.into(),
        });
        self
    }
}

/// The configured devices and their addresses, in configuration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configured {
    devices: Vec<(Dev, Vec<IfAddr>)>,
}

impl Configured {
    /// Record `addr` on `dev`.
    pub fn track(&mut self, dev: &Dev, addr: IfAddr) {
        match self.devices.iter_mut().find(|(d, _)| d == dev) {
            Some((_, v)) => v.push(addr),
            None => self.devices.push((dev.clone(), vec![addr])),
        }
    }

    /// Register a device without addresses (upstream `track_device`).
    pub fn track_device(&mut self, dev: &Dev) {
        if !self.devices.iter().any(|(d, _)| d == dev) {
            self.devices.push((dev.clone(), Vec::new()));
        }
    }

    /// The configured devices, in order.
    pub fn devices(&self) -> impl Iterator<Item = &Dev> {
        self.devices.iter().map(|(d, _)| d)
    }

    /// The addresses configured on `dev` (of one IP version, or all).
    pub fn ips(&self, dev: &Dev, version: Option<IpVersion>) -> Vec<IfAddr> {
        self.devices
            .iter()
            .filter(|(d, _)| d == dev)
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|a| version.is_none_or(|want| a.version() == want))
            .collect()
    }

    /// `Configured host1.eth0.ips = ['198.18.0.1/24', ...]` for every device.
    pub fn describe(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|(d, ips)| {
                let list = ips
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("Configured {d}.ips = [{list}]")
            })
            .collect()
    }
}

/// Apply `steps` in order, one result each; returns what was configured. Addresses, link
/// state and MTU are restored by the agent's end of recipe (it snapshots the matched
/// devices); a step that creates something (a device, a route) pushes its removal on the
/// context's undo stack ([`RunContext::unwind`]), which the base unwinds in reverse order when
/// the test ends, also after a failure.
pub async fn apply(ctx: &mut RunContext, steps: &[Step]) -> Result<Configured, RecipeError> {
    let mut configured = Configured::default();
    // Team devices of this configuration (their ports get no IPv6, see Step::Enslave).
    let mut teams: Vec<Dev> = Vec::new();
    let mut rest = steps;
    loop {
        // Up to the next tentative-address wait, which needs everything before it.
        let cut = rest
            .iter()
            .position(|s| matches!(s, Step::WaitTentative))
            .unwrap_or(rest.len());
        apply_concurrently(ctx, &rest[..cut], &mut configured, &mut teams).await?;
        if cut == rest.len() {
            break;
        }
        ctx.begin_undo_group();
        let devs: Vec<Dev> = configured.devices().cloned().collect();
        ctx.wait_dad_all(&devs, TENTATIVE_TIMEOUT).await?;
        rest = &rest[cut + 1..];
    }
    Ok(configured)
}

/// A lane step's (results, undo entries) counts before and after it.
type Marks = ((usize, usize), (usize, usize));

/// The agent a step talks to (`host2` for `host2.ns`).
fn step_agent(step: &Step) -> Option<&str> {
    let host = match step {
        Step::Address { dev, .. }
        | Step::UntrackedAddress { dev, .. }
        | Step::AddressUndone { dev, .. }
        | Step::L2tpSession { dev, .. }
        | Step::PeerAddress { dev, .. }
        | Step::Up { dev, .. }
        | Step::Mtu { dev, .. }
        | Step::Create { dev, .. }
        | Step::Down { dev }
        | Step::Track { dev }
        | Step::Move { dev, .. } => &dev.host,
        Step::Enslave { port, .. } => &port.host,
        Step::Netns { host, .. }
        | Step::Route { host, .. }
        | Step::Sysctl { host, .. }
        | Step::L2tpTunnel { host, .. } => host,
        Step::WaitTentative => return None,
    };
    host.split('.').next()
}

/// What a step adds to the configuration's record (addresses, tracked devices).
fn track(configured: &mut Configured, step: &Step) {
    match step {
        Step::Address { dev, addr }
        | Step::AddressUndone { dev, addr }
        | Step::PeerAddress { dev, addr, .. } => configured.track(dev, *addr),
        Step::Track { dev } => configured.track_device(dev),
        _ => {}
    }
}

/// Apply `steps` (no tentative wait among them): each agent's steps in order, the agents
/// concurrently — the steps of different agents are independent, and every agent operation
/// is a round trip (tens of milliseconds to a VM agent), so a two-host configuration takes
/// about half the time. The results and undo entries are then taken over in the steps'
/// order, exactly as one after the other would have recorded them; the first failing step
/// (in that order) is the error, and whatever any agent did is undone with the rest.
async fn apply_concurrently(
    ctx: &mut RunContext,
    steps: &[Step],
    configured: &mut Configured,
    teams: &mut Vec<Dev>,
) -> Result<(), RecipeError> {
    let mut agents: Vec<&str> = Vec::new();
    for a in steps.iter().filter_map(step_agent) {
        if !agents.contains(&a) {
            agents.push(a);
        }
    }
    if agents.len() <= 1 {
        for step in steps {
            // Every step is its own undo group: the configuration comes down in reverse order.
            ctx.begin_undo_group();
            apply_step(ctx, step, teams).await?;
            track(configured, step);
        }
        return Ok(());
    }
    let lanes = agents.iter().map(|agent| {
        let mut lane = ctx.lane();
        let mut lane_teams = teams.clone();
        async move {
            let mut marks = Vec::new();
            let mut failed = None;
            for (i, step) in steps.iter().enumerate() {
                if step_agent(step) != Some(*agent) {
                    continue;
                }
                let before = lane.counts();
                lane.begin_undo_group();
                let r = apply_step(&mut lane, step, &mut lane_teams).await;
                marks.push((i, (before, lane.counts())));
                if let Err(e) = r {
                    failed = Some((i, e));
                    break;
                }
            }
            (lane, marks, lane_teams, failed)
        }
    });
    let done = futures::future::join_all(lanes).await;
    // Each lane's steps with their (results, undo) counts before and after, in step order.
    let mut order: Vec<(usize, usize, Marks)> = done
        .iter()
        .enumerate()
        .flat_map(|(l, (_, marks, _, _))| marks.iter().map(move |(i, m)| (*i, l, *m)))
        .collect();
    order.sort_by_key(|(i, ..)| *i);
    let first_failure = done
        .iter()
        .filter_map(|(_, _, _, failed)| failed.as_ref().map(|(i, _)| *i))
        .min();
    for (i, l, (before, after)) in order {
        ctx.absorb_step(&done[l].0, before.0..after.0, before.1..after.1);
        if first_failure.is_none_or(|f| i < f) {
            track(configured, &steps[i]);
        }
    }
    let mut error = None;
    for (lane, _, lane_teams, failed) in done {
        ctx.absorb_names(&lane);
        for t in lane_teams {
            if !teams.contains(&t) {
                teams.push(t);
            }
        }
        if let Some((i, e)) = failed {
            if Some(i) == first_failure {
                error = Some(e);
            }
        }
    }
    error.map_or(Ok(()), Err)
}

/// One step on `ctx` (the whole context, or one agent's lane).
async fn apply_step(
    ctx: &mut RunContext,
    step: &Step,
    teams: &mut Vec<Dev>,
) -> Result<(), RecipeError> {
    match step {
        Step::Address { dev, addr } | Step::UntrackedAddress { dev, addr } => {
            let cidr = addr.to_string();
            ctx.device_call(
                dev,
                "ip_add",
                &[format!("'{cidr}'")],
                |c, ifname| async move { c.add_address(&ifname, &cidr).await },
            )
            .await?;
        }
        Step::AddressUndone { dev, addr } => {
            let cidr = addr.to_string();
            let c2 = cidr.clone();
            ctx.device_call(
                dev,
                "ip_add",
                &[format!("'{cidr}'")],
                |c, ifname| async move { c.add_address(&ifname, &c2).await },
            )
            .await?;
            ctx.push_undo(crate::recipes::context::Undo::DelAddress {
                dev: dev.clone(),
                addr: cidr,
            });
        }
        Step::L2tpTunnel { host, tunnel } => ctx.add_l2tp_tunnel(host, tunnel.clone()).await?,
        Step::L2tpSession {
            dev,
            tunnel_id,
            session_id,
            peer_session_id,
        } => {
            ctx.add_l2tp_session(dev, *tunnel_id, *session_id, *peer_session_id)
                .await?
        }
        Step::PeerAddress { dev, addr, peer } => {
            let cidr = addr.to_string();
            let arg = format!("{cidr} peer {peer}");
            ctx.device_call(
                dev,
                "ip_add",
                &[format!("'{cidr}'"), format!("peer='{peer}'")],
                |c, ifname| async move { c.add_address(&ifname, &arg).await },
            )
            .await?;
        }
        Step::Up { dev, wait } => {
            let method = if *wait { "up_and_wait" } else { "up" };
            ctx.device_call(dev, method, &[], |c, ifname| async move {
                c.set_link(&ifname, true).await
            })
            .await?;
        }
        Step::Mtu { dev, mtu } => ctx.set_mtu(dev, *mtu, false).await?,
        Step::Create { dev, link, master } => {
            let (cls, shown) = link.shown();
            let spec = link.spec(|d| ctx.ifname(d))?;
            ctx.create_link(dev, spec, master.as_ref(), cls, shown)
                .await?;
            if matches!(link, Link::Team(_)) {
                teams.push(dev.clone());
            }
            if let Link::Veth { peer } = link {
                ctx.register_peer(peer, format!("t_{}", peer.id));
            }
        }
        Step::Enslave { port, master } => {
            if teams.contains(master) {
                // A team port keeps its own IPv6 (the kernel drops it only for bond ports,
                // IFF_SLAVE): an activebackup backup port then sends DAD and router
                // solicitations from the team's MAC, the switch learns that MAC on the
                // backup port, and pings to the team are lost for seconds. The port has no
                // IPv6 while it is in the team; the old value comes back with the rest.
                let path = format!("net.ipv6.conf.{}.disable_ipv6", ctx.ifname(port)?);
                ctx.sysctl(&port.host, &path, "1").await?;
            }
            ctx.enslave(port, master).await?
        }
        Step::Down { dev } => {
            ctx.device_call(dev, "down", &[], |c, ifname| async move {
                c.set_link(&ifname, false).await
            })
            .await?;
        }
        Step::Netns { host, attr, name } => {
            ctx.create_netns(host, attr, name).await?;
        }
        Step::Move { dev, to } => {
            ctx.move_link(dev, to).await?;
        }
        Step::Route { host, route, dev } => {
            ctx.add_route(host, route.clone(), dev.as_ref()).await?
        }
        Step::Sysctl { host, path, value } => {
            let res = ctx.sysctl(host, path, value).await;
            ctx.add(crate::results::ResultEntry::generic(
                crate::results::ResultType::from_bool(res.is_ok()),
                format!("{host}: sysctl {path} = {value}"),
            ));
            res?;
        }
        Step::Track { .. } | Step::WaitTentative => {}
    }
    Ok(())
}

impl Link {
    /// The agent's link specification, with `ifname` naming the parent devices.
    pub fn spec(
        &self,
        ifname: impl Fn(&Dev) -> Result<String, RecipeError>,
    ) -> Result<LinkSpec, RecipeError> {
        Ok(match self {
            Link::Vlan { parent, id } => LinkSpec::Vlan {
                parent: ifname(parent)?,
                id: *id,
                protocol: Default::default(),
            },
            Link::Bridge => LinkSpec::Bridge(Default::default()),
            Link::Bond(o) => LinkSpec::Bond(Box::new(o.clone())),
            Link::Team(r) => LinkSpec::Team(TeamOptions::runner(*r)),
            Link::Veth { peer } => LinkSpec::Veth {
                peer: format!("t_{}", peer.id),
                peer_netns: None,
            },
            Link::Macvlan { parent } => LinkSpec::Macvlan {
                parent: ifname(parent)?,
                mode: Default::default(),
            },
            Link::Tunnel(spec) => spec.clone(),
            Link::Vxlan { parent, opts } => {
                let mut o = opts.clone();
                o.parent = parent.as_ref().map(ifname).transpose()?;
                LinkSpec::Vxlan(o)
            }
        })
    }
}

impl TestWide {
    /// The kernel modules each host's part of this configuration needs (by requirement host;
    /// a namespace's devices count for its host), for [`Requirements::kernel_modules`].
    ///
    /// [`Requirements::kernel_modules`]: crate::requirements::Requirements::kernel_modules
    pub fn kernel_modules(&self) -> BTreeMap<String, Vec<&'static str>> {
        let mut out: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for step in &self.steps {
            let Step::Create { dev, link, .. } = step else {
                continue;
            };
            // Only the kind matters here, not the parent's name.
            let Ok(spec) = link.spec(|d| Ok(d.id.clone())) else {
                continue;
            };
            let host = dev.host.split('.').next().unwrap_or(&dev.host);
            let mods = out.entry(host.to_string()).or_default();
            for m in crate::agent::kmod::modules_for(&spec) {
                if !mods.contains(&m) {
                    mods.push(m);
                }
            }
        }
        out
    }
}

/// The `n`-th host address of a network with its prefix (1 → `.1`), as upstream's
/// `interface_addresses` (Python `network.hosts()` order). The declarations check that the
/// networks are large enough ([`crate::schema::TWO_HOSTS`]); a smaller one is an error here.
pub fn nth_address(net: ipnet::IpNet, n: u128) -> Result<IfAddr, RecipeError> {
    let too_small = || RecipeError::Param(format!("network {net} is too small"));
    let addr = match net {
        ipnet::IpNet::V4(v4) => {
            let base = u128::from(u32::from(v4.network()));
            let last = u128::from(u32::from(v4.broadcast()));
            let v = base + n;
            if v >= last && v4.prefix_len() < 31 {
                return Err(too_small());
            }
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                u32::try_from(v).map_err(|_| too_small())?,
            ))
        }
        ipnet::IpNet::V6(v6) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6.network())
                .checked_add(n)
                .ok_or_else(too_small)?,
        )),
    };
    if !net.contains(&addr) {
        return Err(too_small());
    }
    Ok(IfAddr {
        addr,
        prefix: net.prefix_len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_python_hosts_order() {
        let n = |s: &str, k| nth_address(s.parse().unwrap_or_else(|e| panic!("{e}")), k);
        assert_eq!(
            n("198.18.20.0/24", 1)
                .map(|a| a.to_string())
                .ok()
                .as_deref(),
            Some("198.18.20.1/24")
        );
        assert_eq!(
            n("fd00:1:2::/64", 2).map(|a| a.to_string()).ok().as_deref(),
            Some("fd00:1:2::2/64")
        );
        assert!(n("198.18.20.0/31", 5).is_err());
        assert!(n("198.18.20.0/30", 3).is_err());
        assert!(n("198.18.20.0/30", 2).is_ok());
    }

    #[test]
    fn configured_tracks_in_order() {
        let mut c = Configured::default();
        let (a, b) = (Dev::new("host1", "eth0"), Dev::new("host2", "eth0"));
        let ip = |s: &str| s.parse::<IfAddr>().unwrap_or_else(|e| panic!("{e}"));
        c.track(&a, ip("198.18.0.1/24"));
        c.track(&b, ip("198.18.0.2/24"));
        c.track(&a, ip("fd00::1/64"));
        assert_eq!(c.devices().cloned().collect::<Vec<_>>(), vec![a.clone(), b]);
        assert_eq!(c.ips(&a, Some(IpVersion::Ipv6)), vec![ip("fd00::1/64")]);
        assert_eq!(c.ips(&a, None).len(), 2);
        assert_eq!(
            c.describe()[0],
            "Configured host1.eth0.ips = ['198.18.0.1/24', 'fd00::1/64']"
        );
    }
}
