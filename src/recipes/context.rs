//! The run context a recipe works in: one connected agent per requirement host, the
//! requirement-interface → agent-device binding, the results being recorded, raw tool output,
//! and the stack of changes to undo (deconfiguration in reverse order, also after a failure).

use crate::measure::evaluate::BaselineFile;
use crate::protocol::{JobResult, JobSpec};
use crate::recipes::enrt::devparams::{
    coalesce_attribute, coalesce_get, coalesce_one, CoalesceValue,
};
use crate::results::{DeviceAction, JobAction, RecipeRun, ResultEntry, ResultLevel, ResultType};
use crate::session::{AgentClient, SessionError};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Why a recipe run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("parameter error: {0}")]
    Param(String),
    #[error("not supported by this runner: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Run(String),
    #[error(transparent)]
    Agent(#[from] SessionError),
}

/// A device of the test: a requirement host id and a device id (`host1`, `eth0`). The
/// requirement interfaces are bound to agent devices by MAC when the agents connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dev {
    pub host: String,
    pub id: String,
}

impl Dev {
    pub fn new(host: &str, id: &str) -> Dev {
        Dev {
            host: host.to_string(),
            id: id.to_string(),
        }
    }
}

impl std::fmt::Display for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.host, self.id)
    }
}

/// One connected host.
#[derive(Clone)]
pub struct HostHandle {
    pub id: String,
    pub client: AgentClient,
    /// Requirement interface id (`eth0`) → device name on the agent.
    pub ifaces: BTreeMap<String, String>,
}

/// The device id of a host's loopback device (upstream `host.lo = LoopbackDevice()`).
pub const LOOPBACK: &str = "lo";

/// A change to take back when its scope ends (see [`RunContext::unwind`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// Put a device's offload features back (the ENRT set: gro, gso, tso, tx, rx).
    Offloads {
        dev: Dev,
        saved: Vec<(String, bool)>,
    },
    /// Put a device's MTU back.
    Mtu { dev: Dev, old: u32 },
    /// Write a sysctl's old value back.
    Sysctl {
        host: String,
        path: String,
        old: String,
    },
    /// Delete a link the recipe created.
    DeleteLink { dev: Dev },
    /// Take a port out of its master.
    Release { dev: Dev },
    /// Delete an agent namespace the recipe created (`host2.ns`).
    DeleteNetns { host: String },
    /// Delete a route the recipe added.
    DelRoute {
        host: String,
        route: crate::protocol::RouteSpec,
    },
    /// Put a device's channel counts back (only the counts that were changed).
    Channels {
        dev: Dev,
        counts: crate::protocol::ChannelCounts,
    },
    /// Put a device's RSS hash function back.
    RssHfunc { dev: Dev, hfunc: String },
    /// Put a device's RSS input transformations back (the ones that were on).
    RssXfrm { dev: Dev, on: Vec<String> },
    /// Put the hashed fields of a flow type back (`ethtool -N … rx-flow-hash`).
    FlowHash {
        dev: Dev,
        flow_type: crate::protocol::FlowType,
        fields: String,
    },
    /// Put pause frames back: the old value of each direction that was changed.
    Pause {
        dev: Dev,
        /// Pause autonegotiation to turn back on (it was turned off to force rx/tx).
        autoneg: Option<bool>,
        rx: Option<bool>,
        tx: Option<bool>,
    },
    /// Put one interrupt coalescing parameter back (`ethtool -C` name).
    Coalesce {
        dev: Dev,
        key: String,
        old: CoalesceValue,
        /// The value it was set to.
        set: CoalesceValue,
    },
    /// Put the affinity lists of a device's IRQs back.
    Irqs {
        dev: Dev,
        lists: Vec<crate::protocol::IrqAffinity>,
    },
    /// Turn turbo boost on again on a host.
    TurboBoost { host: String },
    /// Enable CPU idle states of a host again.
    IdleStates {
        host: String,
        states: Vec<crate::protocol::IdleStateId>,
    },
    /// Delete a static neighbour entry the recipe added.
    DelNeighbour {
        host: String,
        neighbour: crate::protocol::NeighbourSpec,
    },
    /// Run a job that takes a change back (`xdp-forward unload`); it must pass.
    RunJob { host: String, spec: JobSpec },
    /// Delete the IPsec policies and states the recipe added (by selector and SPI).
    XfrmDel {
        host: String,
        states: Vec<crate::protocol::XfrmStateId>,
        policies: Vec<crate::protocol::XfrmPolicyId>,
    },
    /// Delete an address the recipe added to a device it neither matched nor created (`lo`:
    /// the agent's snapshot does not cover it).
    DelAddress { dev: Dev, addr: String },
}

impl Undo {
    /// The agent that takes this change back (`host2` also for `host2.ns`).
    pub fn agent(&self) -> &str {
        let host = match self {
            Undo::Offloads { dev, .. }
            | Undo::Mtu { dev, .. }
            | Undo::DeleteLink { dev }
            | Undo::Release { dev }
            | Undo::Channels { dev, .. }
            | Undo::RssHfunc { dev, .. }
            | Undo::RssXfrm { dev, .. }
            | Undo::FlowHash { dev, .. }
            | Undo::Pause { dev, .. }
            | Undo::Coalesce { dev, .. }
            | Undo::DelAddress { dev, .. }
            | Undo::Irqs { dev, .. } => &dev.host,
            Undo::Sysctl { host, .. }
            | Undo::DeleteNetns { host }
            | Undo::DelRoute { host, .. }
            | Undo::TurboBoost { host }
            | Undo::IdleStates { host, .. }
            | Undo::DelNeighbour { host, .. }
            | Undo::RunJob { host, .. }
            | Undo::XfrmDel { host, .. } => host,
        };
        host.split('.').next().unwrap_or(host)
    }
}

/// What a device or host setting did.
#[derive(Debug, Clone, PartialEq)]
pub enum Tuned<T> {
    /// Changed from `old`.
    Changed { old: T },
    /// Already as asked.
    Unchanged,
    /// The device or host has no such setting and "off" was asked: nothing to do.
    NotApplicable { reason: String },
}

/// Python's `True`/`False`.
fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// Pause between "every iperf3 server listens" and the first client. The agent reports a
/// server started once it listens, but a client that connects within milliseconds of the
/// server's start measures differently from one that connects later: on a 2-vCPU machine a
/// 123-byte tcp_stream over veth settled in its slow mode (≈ 0.6× the fast one) in 40 of 40
/// runs without the pause and in about half with a pause of 0.1 s or more, as direct iperf3
/// runs by hand do (bench/embedded-report.md). Upstream sleeps 2 s here; 0.25 s keeps a
/// margin over the 0.1 s seen to suffice and costs 4 s over the 16 iterations of a
/// two-sub-configuration run.
pub const SERVER_SETTLE: Duration = Duration::from_millis(250);

/// What a recipe needs while it runs.
pub struct RunContext {
    pub hosts: BTreeMap<String, HostHandle>,
    pub run: RecipeRun,
    /// Raw tool output: file name under `raw/` → bytes.
    pub raw: Vec<(String, Vec<u8>)>,
    /// Prefix of progress lines (`[sub 2/5]`).
    pub progress_prefix: String,
    /// Baseline figures to compare flows against (LNST_BASELINE_FILE).
    pub baseline: Option<BaselineFile>,
    /// Wall time spent in ping runs and iperf3 iterations (reported as `TestOutcome::tool_time_s`).
    pub tool_time_s: f64,
    /// Wall time of the configuration phases (the runner adds connect and end).
    pub phases: crate::results::Phases,
    /// The test's parameters as resolved by the plan, for the description results.
    pub params: crate::schema::ResolvedParams,
    /// Pause between the iperf3 servers and clients ([`SERVER_SETTLE`]; 0 for scripted agents).
    pub server_settle: Duration,
    /// Changes to take back, each tagged with its group (see [`RunContext::begin_undo_group`]).
    undo: Vec<(u64, Undo)>,
    undo_group: u64,
    job_level: ResultLevel,
    /// Agent namespaces the recipe created: `host2.ns` → (`host2`, agent namespace name).
    netns: BTreeMap<String, (String, String)>,
    /// Devices the recipe created or moved: device → name on the agent.
    names: BTreeMap<Dev, String>,
}

impl RunContext {
    pub fn new(hosts: BTreeMap<String, HostHandle>, run: RecipeRun) -> Self {
        RunContext {
            hosts,
            run,
            raw: Vec::new(),
            progress_prefix: String::new(),
            baseline: None,
            tool_time_s: 0.0,
            phases: crate::results::Phases::default(),
            params: crate::schema::ResolvedParams::default(),
            server_settle: SERVER_SETTLE,
            undo: Vec::new(),
            undo_group: 0,
            job_level: ResultLevel::Normal,
            netns: BTreeMap::new(),
            names: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, r: ResultEntry) {
        self.run.add(r);
    }

    /// A context for one host's share of a configuration applied concurrently with the other
    /// hosts' (see `config::apply`): the same agents, device names and namespaces, its own
    /// results and undo entries, taken back step by step with [`RunContext::absorb_step`].
    pub fn lane(&self) -> RunContext {
        RunContext {
            hosts: self.hosts.clone(),
            run: RecipeRun::new(&self.run.recipe, self.run.matched.clone()),
            raw: Vec::new(),
            progress_prefix: self.progress_prefix.clone(),
            baseline: None,
            tool_time_s: 0.0,
            phases: crate::results::Phases::default(),
            params: self.params.clone(),
            server_settle: self.server_settle,
            undo: Vec::new(),
            undo_group: 0,
            job_level: self.job_level,
            netns: self.netns.clone(),
            names: self.names.clone(),
        }
    }

    /// How many results and undo entries there are (a lane's step marks).
    pub fn counts(&self) -> (usize, usize) {
        (self.run.results.len(), self.undo.len())
    }

    /// Take over one step of `lane`: its results `results` and undo entries `undo` (ranges
    /// from [`RunContext::counts`]), the entries as one new undo group of this context.
    pub fn absorb_step(
        &mut self,
        lane: &RunContext,
        results: std::ops::Range<usize>,
        undo: std::ops::Range<usize>,
    ) {
        self.run
            .results
            .extend(lane.run.results[results].iter().cloned());
        self.begin_undo_group();
        let g = self.undo_group;
        self.undo
            .extend(lane.undo[undo].iter().map(|(_, u)| (g, u.clone())));
    }

    /// Take over the device names and namespaces `lane` added, and the raw files it kept.
    pub fn absorb_names(&mut self, lane: &RunContext) {
        for (name, bytes) in &lane.raw {
            self.save_raw(name.clone(), bytes);
        }
        for (k, v) in &lane.names {
            self.names.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &lane.netns {
            self.netns.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// One progress line on stderr.
    pub fn progress(&self, msg: &str) {
        if self.progress_prefix.is_empty() {
            crate::say!("{msg}");
        } else {
            crate::say!("{} {msg}", self.progress_prefix);
        }
    }

    /// Keep raw tool output under `raw/<name>`. Names are unique per measurement; a name
    /// given twice (a recipe bug) gets `_2`, `_3`, ... before its extension instead of
    /// overwriting the first file.
    pub fn save_raw(&mut self, name: String, bytes: &[u8]) {
        let mut unique = name.clone();
        let mut n = 2;
        while self.raw.iter().any(|(x, _)| *x == unique) {
            unique = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}_{n}.{ext}"),
                None => format!("{name}_{n}"),
            };
            n += 1;
        }
        if unique != name {
            tracing::warn!("raw file {name} was already written; keeping this one as {unique}");
        }
        self.raw.push((unique, bytes.to_vec()));
    }

    /// The ids of every connected host, sorted (upstream `self.matched`).
    pub fn host_ids(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    fn host(&self, host: &str) -> Result<&HostHandle, RecipeError> {
        self.hosts
            .get(host)
            .ok_or_else(|| RecipeError::Run(format!("no agent for requirement host {host}")))
    }

    /// The agent handle of a host (`host1`) or of an agent namespace the recipe created on
    /// it (`host2.ns`, upstream's `host2.ns` attribute path).
    pub fn client(&self, host: &str) -> Result<AgentClient, RecipeError> {
        if let Some((h, ns)) = self.netns.get(host) {
            return Ok(self.host(h)?.client.in_netns(ns));
        }
        Ok(self.host(host)?.client.clone())
    }

    /// The requirement host a host or namespace path lives on (`host2.ns` → `host2`).
    pub fn root_host<'a>(&'a self, host: &'a str) -> &'a str {
        self.netns.get(host).map_or(host, |(h, _)| h.as_str())
    }

    /// The agent device of `dev`: a device the recipe created or moved, else a matched one.
    pub fn ifname(&self, dev: &Dev) -> Result<String, RecipeError> {
        if let Some(n) = self.names.get(dev) {
            return Ok(n.clone());
        }
        if dev.id == LOOPBACK {
            // Upstream's LoopbackDevice(): every host (and namespace) has one.
            return Ok(LOOPBACK.to_string());
        }
        self.host(&dev.host)?
            .ifaces
            .get(&dev.id)
            .cloned()
            .ok_or_else(|| {
                RecipeError::Run(format!("{dev} is not mapped to a device on the agent"))
            })
    }

    fn dev(&self, dev: &Dev) -> Result<(AgentClient, String), RecipeError> {
        Ok((self.client(&dev.host)?, self.ifname(dev)?))
    }

    fn record_call(&mut self, dev: &Dev, ok: bool, method: &str, args: &[String]) {
        self.add(ResultEntry::device(
            ResultType::from_bool(ok),
            &dev.host,
            &dev.id,
            DeviceAction::MethodCall {
                name: method.to_string(),
                args: args.to_vec(),
                kwargs: Vec::new(),
            },
        ));
    }

    /// Call a device operation and record it as a DeviceMethodCallResult (FAIL on error).
    pub async fn device_call<F, Fut>(
        &mut self,
        dev: &Dev,
        method: &str,
        args: &[String],
        op: F,
    ) -> Result<(), RecipeError>
    where
        F: FnOnce(AgentClient, String) -> Fut,
        Fut: Future<Output = Result<(), SessionError>>,
    {
        let (client, ifname) = self.dev(dev)?;
        let res = op(client, ifname).await;
        self.record_call(dev, res.is_ok(), method, args);
        res.map_err(RecipeError::from)
    }

    /// Wait until no IPv6 address of any of `devs` is tentative, all devices at once (each
    /// wait is a round trip to its agent); the first device in `devs` order that still has
    /// one is the error.
    pub async fn wait_dad_all(
        &mut self,
        devs: &[Dev],
        timeout: Duration,
    ) -> Result<(), RecipeError> {
        let mut waits = Vec::with_capacity(devs.len());
        for dev in devs {
            let (client, ifname) = self.dev(dev)?;
            waits.push(async move { (dev, client.wait_dad(&ifname, timeout).await) });
        }
        for (dev, res) in futures::future::join_all(waits).await {
            res.map_err(|e| {
                RecipeError::Run(format!("{dev}: IPv6 addresses still tentative: {e}"))
            })?;
        }
        Ok(())
    }

    /// Set offload features (recorded as `set_offloads('gro=on ...')`); the device's features
    /// before are put back when the enclosing scope unwinds.
    pub async fn set_offloads(
        &mut self,
        dev: &Dev,
        features: &[(String, bool)],
        shown: &str,
    ) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let saved = client.get_offloads(&ifname).await?;
        self.push_undo(Undo::Offloads {
            dev: dev.clone(),
            saved,
        });
        let res = client.set_offloads(&ifname, features).await;
        self.record_call(dev, res.is_ok(), "set_offloads", &[format!("'{shown}'")]);
        res.map_err(RecipeError::from)
    }

    /// Put back the ENRT offload features (gro, gso, tso, tx, rx) as they were.
    async fn restore_offloads(
        &mut self,
        dev: &Dev,
        saved: Vec<(String, bool)>,
    ) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        // Only the features ethtool lets us change and that a combination touches matter;
        // setting fixed ones fails, so restore the common ENRT set.
        let keep: Vec<(String, bool)> = saved
            .into_iter()
            .map(|(k, v)| (crate::protocol::offload_short_name(&k).to_string(), v))
            .filter(|(k, _)| matches!(k.as_str(), "gro" | "gso" | "tso" | "tx" | "rx"))
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        let shown = keep
            .iter()
            .map(|(k, v)| format!("{k} {}", if *v { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(" ");
        let res = client.set_offloads(&ifname, &keep).await;
        self.record_call(
            dev,
            res.is_ok(),
            "restore_offloads",
            &[format!("'{shown}'")],
        );
        res.map_err(RecipeError::from)
    }

    /// Set the MTU, recorded as a DeviceAttrSetResult. With `restore`, the old MTU is put back
    /// when the enclosing scope unwinds (otherwise the agent's end of recipe restores it).
    pub async fn set_mtu(&mut self, dev: &Dev, mtu: u32, restore: bool) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let old = client
            .list_interfaces()
            .await?
            .into_iter()
            .find(|i| i.name == ifname)
            .map(|i| i.mtu)
            .ok_or_else(|| RecipeError::Run(format!("{dev} ({ifname}) disappeared")))?;
        if restore {
            self.push_undo(Undo::Mtu {
                dev: dev.clone(),
                old,
            });
        }
        let res = client.set_mtu(&ifname, mtu).await;
        self.add(ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            &dev.host,
            &dev.id,
            DeviceAction::AttrSet {
                name: "mtu".into(),
                value: mtu.to_string(),
                old_value: old.to_string(),
            },
        ));
        res.map_err(RecipeError::from)
    }

    /// Write a sysctl on a host; the old value is written back when the enclosing scope
    /// unwinds (and the agent restores it when the recipe ends).
    pub async fn sysctl(&mut self, host: &str, path: &str, value: &str) -> Result<(), RecipeError> {
        let client = self.client(host)?;
        let old = client.sysctl_write(path, value).await.map_err(|e| {
            RecipeError::Run(format!("{host}: writing {path} = {value} failed: {e}"))
        })?;
        self.push_undo(Undo::Sysctl {
            host: host.to_string(),
            path: path.to_string(),
            old,
        });
        Ok(())
    }

    /// Push a change to take back when the enclosing scope unwinds (in the current group).
    pub fn push_undo(&mut self, u: Undo) {
        self.undo.push((self.undo_group, u));
    }

    /// Start a new group of changes: groups are taken back newest first, the changes inside
    /// one group in the order they were made (upstream removes a mixin's setting from its
    /// devices in list order, and the mixins in reverse).
    pub fn begin_undo_group(&mut self) {
        self.undo_group += 1;
    }

    /// A scope mark: [`RunContext::unwind`] takes back every change made after it.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Take back the changes made since `mark`: the newest group first, each group in order.
    /// Every change is attempted; the first error is returned. Each agent's changes are taken
    /// back in that order, the agents concurrently (as `config::apply` makes them); the
    /// results are recorded in that order all the same.
    pub async fn unwind(&mut self, mark: usize) -> Result<(), RecipeError> {
        let mut seq: Vec<Undo> = Vec::new();
        while self.undo.len() > mark {
            let Some(&(group, _)) = self.undo.last() else {
                break;
            };
            let mut start = self.undo.len();
            while start > mark && self.undo.get(start - 1).is_some_and(|(g, _)| *g == group) {
                start -= 1;
            }
            seq.extend(self.undo.drain(start..).map(|(_, u)| u));
        }
        let mut agents: Vec<String> = Vec::new();
        for u in &seq {
            let a = u.agent().to_string();
            if !agents.contains(&a) {
                agents.push(a);
            }
        }
        if agents.len() <= 1 {
            let mut first_err = None;
            for u in seq {
                if let Err(e) = self.undo_one(u).await {
                    first_err.get_or_insert(e);
                }
            }
            return first_err.map_or(Ok(()), Err);
        }
        let seq = &seq;
        let lanes = agents.iter().map(|agent| {
            let mut lane = self.lane();
            async move {
                let mut marks = Vec::new();
                for (i, u) in seq.iter().enumerate().filter(|(_, u)| u.agent() == agent) {
                    let before = lane.run.results.len();
                    let r = lane.undo_one(u.clone()).await;
                    marks.push((i, before..lane.run.results.len(), r.err()));
                }
                (agent, lane, marks)
            }
        });
        let mut done = futures::future::join_all(lanes).await;
        let mut order: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
        let mut errs: Vec<(usize, RecipeError)> = Vec::new();
        for (l, (_, _, marks)) in done.iter_mut().enumerate() {
            for (i, range, err) in marks.drain(..) {
                order.push((i, l, range));
                if let Some(e) = err {
                    errs.push((i, e));
                }
            }
        }
        order.sort_by_key(|(i, ..)| *i);
        for (_, l, range) in order {
            self.run
                .results
                .extend(done[l].1.run.results[range].iter().cloned());
        }
        // Each lane removed the names and namespaces of its own agent.
        for (agent, lane, _) in &done {
            for (name, bytes) in &lane.raw {
                self.save_raw(name.clone(), bytes);
            }
            let mine = |h: &str| h.split('.').next() == Some(agent.as_str());
            self.names.retain(|d, _| !mine(&d.host));
            self.names.extend(
                lane.names
                    .iter()
                    .filter(|(d, _)| mine(&d.host))
                    .map(|(d, n)| (d.clone(), n.clone())),
            );
            self.netns.retain(|h, _| !mine(h));
            self.netns.extend(
                lane.netns
                    .iter()
                    .filter(|(h, _)| mine(h))
                    .map(|(h, v)| (h.clone(), v.clone())),
            );
        }
        errs.sort_by_key(|(i, _)| *i);
        errs.into_iter().next().map_or(Ok(()), |(_, e)| Err(e))
    }

    async fn undo_one(&mut self, u: Undo) -> Result<(), RecipeError> {
        {
            match u {
                Undo::Offloads { dev, saved } => self.restore_offloads(&dev, saved).await,
                Undo::Mtu { dev, old } => match self.dev(&dev) {
                    Ok((client, ifname)) => client
                        .set_mtu(&ifname, old)
                        .await
                        .map_err(RecipeError::from),
                    Err(e) => Err(e),
                },
                Undo::Sysctl { host, path, old } => match self.client(&host) {
                    Ok(c) => c.sysctl_write(&path, &old).await.map(|_| ()).map_err(|e| {
                        RecipeError::Run(format!("{host}: writing {path} = {old} failed: {e}"))
                    }),
                    Err(e) => Err(e),
                },
                Undo::DeleteLink { dev } => {
                    let (client, ifname) = self.dev(&dev)?;
                    let res = client.delete_link(&ifname).await;
                    self.record_call(&dev, res.is_ok(), "destroy", &[]);
                    self.names.remove(&dev);
                    res.map_err(RecipeError::from)
                }
                Undo::Release { dev } => {
                    let (client, ifname) = self.dev(&dev)?;
                    let res = client.release(&ifname).await;
                    self.record_call(&dev, res.is_ok(), "master_release", &[]);
                    res.map_err(RecipeError::from)
                }
                Undo::DeleteNetns { host } => {
                    let Some((h, ns)) = self.netns.get(&host).cloned() else {
                        return Ok(());
                    };
                    let res = self.host(&h)?.client.clone().delete_netns(&ns).await;
                    self.netns.remove(&host);
                    self.names.retain(|d, _| d.host != host);
                    res.map_err(RecipeError::from)
                }
                Undo::DelRoute { host, route } => {
                    let client = self.client(&host)?;
                    client.del_route(route).await.map_err(RecipeError::from)
                }
                Undo::DelAddress { dev, addr } => {
                    let (client, ifname) = self.dev(&dev)?;
                    let res = client.del_address(&ifname, &addr).await;
                    self.record_call(&dev, res.is_ok(), "ip_del", &[format!("'{addr}'")]);
                    res.map_err(RecipeError::from)
                }
                Undo::Channels { dev, counts } => self
                    .set_channels(&dev, counts, "restore_channels")
                    .await
                    .map(|_| ()),
                Undo::RssHfunc { dev, hfunc } => self
                    .set_rss(&dev, Some(&hfunc), None, "restore_rx_hash_function")
                    .await
                    .map(|_| ()),
                Undo::RssXfrm { dev, on } => self
                    .set_rss(&dev, None, Some(on), "restore_rxfh_xfrm")
                    .await
                    .map(|_| ()),
                Undo::FlowHash {
                    dev,
                    flow_type,
                    fields,
                } => self
                    .set_rx_flow_hash(&dev, flow_type, &fields, "restore_rx_flow_hash")
                    .await
                    .map(|_| ()),
                Undo::Pause {
                    dev,
                    autoneg,
                    rx,
                    tx,
                } => {
                    let (client, ifname) = self.dev(&dev)?;
                    let res = client.set_pause(&ifname, autoneg, rx, tx).await;
                    for (name, v) in [("rx_pause_frames", rx), ("tx_pause_frames", tx)] {
                        if let Some(v) = v {
                            self.record_attr(&dev, res.is_ok(), name, py_bool(v), py_bool(!v));
                        }
                    }
                    res.map(|_| ()).map_err(|e| {
                        RecipeError::Run(format!("{dev} ({ifname}): restoring pause frames: {e}"))
                    })
                }
                Undo::Coalesce { dev, key, old, set } => {
                    let (client, ifname) = self.dev(&dev)?;
                    let res = client.set_coalesce(&ifname, coalesce_one(&key, old)).await;
                    self.record_attr(
                        &dev,
                        res.is_ok(),
                        &coalesce_attribute(&key),
                        &old.to_string(),
                        &set.to_string(),
                    );
                    res.map(|_| ()).map_err(|e| {
                        RecipeError::Run(format!("{dev} ({ifname}): restoring {key}: {e}"))
                    })
                }
                Undo::Irqs { dev, lists } => {
                    let (client, ifname) = self.dev(&dev)?;
                    let shown = lists
                        .iter()
                        .map(|l| format!("{}:{}", l.irq, l.affinity))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let res = client.restore_irq_affinity(&ifname, lists).await;
                    self.record_call(
                        &dev,
                        res.is_ok(),
                        "restore_irq_affinity",
                        &[format!("'{shown}'")],
                    );
                    res.map(|_| ()).map_err(|e| {
                        RecipeError::Run(format!("{dev} ({ifname}): restoring IRQ affinity: {e}"))
                    })
                }
                Undo::TurboBoost { host } => {
                    let client = self.client(&host)?;
                    let res = client.set_turbo_boost(true).await;
                    self.add(ResultEntry::generic(
                        ResultType::from_bool(res.is_ok()),
                        format!("turboboost enabled again on {host}"),
                    ));
                    res.map(|_| ()).map_err(|e| {
                        RecipeError::Run(format!("{host}: enabling turbo boost again: {e}"))
                    })
                }
                Undo::IdleStates { host, states } => {
                    let client = self.client(&host)?;
                    let n = states.len();
                    let res = client.enable_idle_states(states).await;
                    self.add(ResultEntry::generic(
                        ResultType::from_bool(res.is_ok()),
                        format!("{n} CPU idle states enabled again on {host}"),
                    ));
                    res.map(|_| ()).map_err(|e| {
                        RecipeError::Run(format!("{host}: enabling CPU idle states again: {e}"))
                    })
                }
                Undo::DelNeighbour { host, neighbour } => {
                    let client = self.client(&host)?;
                    client
                        .del_neighbour(neighbour)
                        .await
                        .map_err(RecipeError::from)
                }
                Undo::RunJob { host, spec } => self.run_job(&host, spec).await,
                Undo::XfrmDel {
                    host,
                    states,
                    policies,
                } => {
                    let client = self.client(&host)?;
                    let shown: Vec<String> = policies
                        .iter()
                        .map(|p| p.argv()[3..].join(" "))
                        .chain(states.iter().map(|s| s.argv()[3..].join(" ")))
                        .collect();
                    let res = client.xfrm_del(states, policies).await;
                    self.add(ResultEntry::generic(
                        ResultType::from_bool(res.is_ok()),
                        format!("{host}: ip xfrm delete: {}", shown.join("; ")),
                    ));
                    res.map_err(|e| RecipeError::Run(format!("{host}: deleting IPsec: {e}")))
                }
            }
        }
    }

    fn record_attr(&mut self, dev: &Dev, ok: bool, name: &str, value: &str, old: &str) {
        self.add(ResultEntry::device(
            ResultType::from_bool(ok),
            &dev.host,
            &dev.id,
            DeviceAction::AttrSet {
                name: name.to_string(),
                value: value.to_string(),
                old_value: old.to_string(),
            },
        ));
    }

    // --- Device and host tunables (the hardware sub-configurations) ---------------------

    /// Set rx (`rx` true) or tx pause frames of `dev`, recorded as a DeviceAttrSetResult
    /// (`rx_pause_frames`); the old value is put back when the enclosing scope unwinds. An
    /// "off" on a device without pause frames is `NotApplicable`; an "on" there fails with the
    /// agent's reason (naming the device and its pause-frame settings).
    ///
    /// Some drivers (e1000e) ignore rx/tx while pause autonegotiation is on: when the value
    /// does not read back and autonegotiation is on, it is set again with autonegotiation
    /// off (the second value returned is then true), and autonegotiation comes back on with
    /// the old value.
    pub async fn set_pause_frames(
        &mut self,
        dev: &Dev,
        rx: bool,
        value: bool,
    ) -> Result<(Tuned<bool>, bool), RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let name = if rx {
            "rx_pause_frames"
        } else {
            "tx_pause_frames"
        };
        let (want_rx, want_tx) = if rx {
            (Some(value), None)
        } else {
            (None, Some(value))
        };
        let mut res = client.set_pause(&ifname, None, want_rx, want_tx).await;
        let mut forced = false;
        if let Err(SessionError::Remote {
            kind: crate::protocol::ErrorKind::Failed,
            ..
        }) = &res
        {
            if let Ok(now) = client.get_pause(&ifname).await {
                let got = if rx { now.rx } else { now.tx };
                if now.autoneg == Some(true) && got != value {
                    tracing::info!(
                        "{dev} ({ifname}): {name} did not change with pause autonegotiation on; setting it with autonegotiation off"
                    );
                    res = client
                        .set_pause(&ifname, Some(false), want_rx, want_tx)
                        .await;
                    forced = true;
                }
            }
        }
        let out = match res {
            Ok(crate::protocol::SetOutcome::Applied { previous }) => {
                let prev = match previous {
                    crate::protocol::Previous::Pause(p) => Some(p),
                    _ => None,
                };
                let old = prev.map_or(!value, |p| if rx { p.rx } else { p.tx });
                self.push_undo(Undo::Pause {
                    dev: dev.clone(),
                    autoneg: prev.and_then(|p| p.autoneg).filter(|a| forced && *a),
                    rx: rx.then_some(old),
                    tx: (!rx).then_some(old),
                });
                Tuned::Changed { old }
            }
            Ok(crate::protocol::SetOutcome::Unchanged) => Tuned::Unchanged,
            Ok(crate::protocol::SetOutcome::NotApplicable { reason }) => {
                Tuned::NotApplicable { reason }
            }
            Err(e) => {
                self.record_attr(dev, false, name, py_bool(value), "None");
                return Err(RecipeError::Run(format!(
                    "{name}={}: {dev} ({ifname}): {e}",
                    py_bool(value)
                )));
            }
        };
        let old = match &out {
            Tuned::Changed { old } => py_bool(*old),
            Tuned::Unchanged => py_bool(value),
            Tuned::NotApplicable { .. } => "None",
        };
        self.record_attr(dev, true, name, py_bool(value), old);
        Ok((out, forced))
    }

    /// Set one interrupt coalescing parameter (`ethtool -C` name) of `dev`, recorded as a
    /// DeviceAttrSetResult (`coalescing_rx_usecs`). Returns the old value; the caller pushes
    /// [`Undo::Coalesce`] (upstream restores the numbers before the adaptive modes).
    pub async fn set_coalescing(
        &mut self,
        dev: &Dev,
        key: &str,
        value: CoalesceValue,
    ) -> Result<Tuned<CoalesceValue>, RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let attr = coalesce_attribute(key);
        let res = client.set_coalesce(&ifname, coalesce_one(key, value)).await;
        let out = match res {
            Ok(crate::protocol::SetOutcome::Applied { previous }) => {
                let old = match previous {
                    crate::protocol::Previous::Coalesce(c) => coalesce_get(&c, key),
                    _ => None,
                };
                match old {
                    Some(old) => Tuned::Changed { old },
                    None => {
                        self.record_attr(dev, false, &attr, &value.to_string(), "None");
                        return Err(RecipeError::Run(format!(
                            "coalescing_settings: {dev} ({ifname}): the agent changed {key} without reporting its old value"
                        )));
                    }
                }
            }
            Ok(crate::protocol::SetOutcome::Unchanged) => Tuned::Unchanged,
            Ok(crate::protocol::SetOutcome::NotApplicable { reason }) => {
                Tuned::NotApplicable { reason }
            }
            Err(e) => {
                self.record_attr(dev, false, &attr, &value.to_string(), "None");
                return Err(RecipeError::Run(format!(
                    "coalescing_settings: {dev} ({ifname}): {key} {value}: {e}"
                )));
            }
        };
        let old = match &out {
            Tuned::Changed { old } => old.to_string(),
            Tuned::Unchanged => value.to_string(),
            Tuned::NotApplicable { .. } => "None".to_string(),
        };
        self.record_attr(dev, true, &attr, &value.to_string(), &old);
        Ok(out)
    }

    /// Pin the IRQs of `dev` to `cpus` by `policy` (irqbalance, when it runs, is stopped for
    /// the rest of the test: the agent starts it again when the test ends), recorded as a
    /// DeviceMethodCallResult; every IRQ whose list changed gets its old list back when the
    /// enclosing scope unwinds. `param` names the parameter in the error.
    pub async fn pin_irqs(
        &mut self,
        dev: &Dev,
        cpus: &[u32],
        policy: crate::protocol::IrqPolicy,
        param: &str,
    ) -> Result<crate::protocol::IrqPinning, RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let res = client.set_irq_affinity(&ifname, cpus, policy, true).await;
        let policy_name = match policy {
            crate::protocol::IrqPolicy::RoundRobin => "round-robin",
            crate::protocol::IrqPolicy::All => "all",
        };
        // The data: every IRQ's list before and after (IrqPinning).
        let mut entry = ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            &dev.host,
            &dev.id,
            DeviceAction::MethodCall {
                name: "pin_dev_interrupts".into(),
                args: vec![format!("{cpus:?}"), format!("'{policy_name}'")],
                kwargs: Vec::new(),
            },
        );
        if let Ok(p) = &res {
            entry = entry.with_data(serde_json::to_value(p).unwrap_or_default());
        }
        self.add(entry);
        let p = res.map_err(|e| RecipeError::Run(format!("{param}: {dev} ({ifname}): {e}")))?;
        let lists: Vec<crate::protocol::IrqAffinity> = p
            .irqs
            .iter()
            .filter(|i| i.skipped.is_none() && i.previous != i.now)
            .map(|i| crate::protocol::IrqAffinity {
                irq: i.irq,
                affinity: i.previous.clone(),
            })
            .collect();
        if !lists.is_empty() {
            self.push_undo(Undo::Irqs {
                dev: dev.clone(),
                lists,
            });
        }
        Ok(p)
    }

    /// Turn turbo boost off on `host`; on again when the enclosing scope unwinds. Whether it
    /// changed anything.
    pub async fn disable_turbo_boost(&mut self, host: &str) -> Result<bool, RecipeError> {
        let client = self.client(host)?;
        let res = client
            .set_turbo_boost(false)
            .await
            .map_err(|e| RecipeError::Run(format!("disable_turboboost=True: {host}: {e}")))?;
        let changed = matches!(res, crate::protocol::SetOutcome::Applied { .. });
        if changed {
            self.push_undo(Undo::TurboBoost {
                host: host.to_string(),
            });
        }
        Ok(changed)
    }

    /// Disable the CPU idle states of `host` with an exit latency of at least `latency` µs;
    /// enabled again when the enclosing scope unwinds. How many it disabled.
    pub async fn disable_idle_states(
        &mut self,
        host: &str,
        latency: u64,
    ) -> Result<usize, RecipeError> {
        let client = self.client(host)?;
        let res = client.disable_idle_states(latency).await.map_err(|e| {
            RecipeError::Run(format!("minimal_idlestates_latency={latency}: {host}: {e}"))
        })?;
        let states: Vec<crate::protocol::IdleStateId> = match res {
            crate::protocol::SetOutcome::Applied {
                previous: crate::protocol::Previous::IdleStates { states },
            } => states
                .iter()
                .map(|s| crate::protocol::IdleStateId {
                    cpu: s.cpu,
                    state: s.state,
                })
                .collect(),
            _ => Vec::new(),
        };
        let n = states.len();
        if n > 0 {
            self.push_undo(Undo::IdleStates {
                host: host.to_string(),
                states,
            });
        }
        Ok(n)
    }

    // --- Devices, namespaces and routes a recipe creates ----------------------------------

    /// Create `dev` (its host may be an agent namespace) as `link`, recorded as a
    /// DeviceCreateResult `<cls_name>(<shown>)`; deleted when the enclosing scope unwinds (and
    /// by the agent when the recipe ends, whatever happens to the controller). The agent
    /// device is named `t_<id>` (upstream's `t_` prefix), so it cannot take the name of a
    /// device a lab machine already has by chance.
    pub async fn create_link(
        &mut self,
        dev: &Dev,
        link: crate::protocol::LinkSpec,
        master: Option<&Dev>,
        cls_name: &str,
        shown: Vec<String>,
    ) -> Result<(), RecipeError> {
        let client = self.client(&dev.host)?;
        let ifname = format!("t_{}", dev.id);
        let master_name = master.map(|m| self.ifname(m)).transpose()?;
        let res = client
            .create_link_with(&ifname, link, master_name.as_deref(), None, false)
            .await;
        self.add(ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            &dev.host,
            &dev.id,
            DeviceAction::Create {
                cls_name: cls_name.to_string(),
                args: Vec::new(),
                kwargs: shown,
            },
        ));
        res.map_err(|e| RecipeError::Run(format!("{}: creating {dev}: {e}", dev.host)))?;
        self.names.insert(dev.clone(), ifname);
        self.push_undo(Undo::DeleteLink { dev: dev.clone() });
        Ok(())
    }

    /// Name the peer of a veth pair the recipe created (it goes when its pair goes).
    pub fn register_peer(&mut self, dev: &Dev, ifname: String) {
        self.names.insert(dev.clone(), ifname);
    }

    /// Make `port` a port of `master` (bridge, bond or team), recorded as
    /// `<master>.slave_add(<port>)`; released when the enclosing scope unwinds.
    pub async fn enslave(&mut self, port: &Dev, master: &Dev) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(port)?;
        let master_name = self.ifname(master)?;
        let res = client.enslave(&ifname, &master_name).await;
        self.record_call(
            master,
            res.is_ok(),
            "slave_add",
            std::slice::from_ref(&port.id),
        );
        res.map_err(RecipeError::from)?;
        self.push_undo(Undo::Release { dev: port.clone() });
        Ok(())
    }

    /// Create the agent namespace `<host>.<attr>` (agent name `name`); deleted, with every
    /// device in it, when the enclosing scope unwinds.
    pub async fn create_netns(
        &mut self,
        host: &str,
        attr: &str,
        name: &str,
    ) -> Result<String, RecipeError> {
        let client = self.host(host)?.client.clone();
        let path = format!("{host}.{attr}");
        let res = client.create_netns(name).await;
        self.add(ResultEntry::generic(
            ResultType::from_bool(res.is_ok()),
            format!("Creating network namespace {path} = NetNamespace('{name}')"),
        ));
        res.map_err(RecipeError::from)?;
        self.netns
            .insert(path.clone(), (host.to_string(), name.to_string()));
        self.push_undo(Undo::DeleteNetns { host: path.clone() });
        Ok(path)
    }

    /// Move `dev` into the namespace `to` (`host2.ns`, or the host itself); returns the
    /// device's new path (`host2.ns.np0`).
    pub async fn move_link(&mut self, dev: &Dev, to: &str) -> Result<Dev, RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let target = match self.netns.get(to) {
            Some((h, ns)) if self.root_host(&dev.host) == h => Some(ns.clone()),
            None if to == self.root_host(&dev.host) => None,
            _ => {
                return Err(RecipeError::Run(format!(
                    "cannot move {dev} to {to}: not a namespace of its host"
                )))
            }
        };
        let res = client.move_link(&ifname, target.as_deref()).await;
        self.record_call(dev, res.is_ok(), "netns_move", &[format!("'{to}'")]);
        res.map_err(RecipeError::from)?;
        let moved = Dev::new(to, &dev.id);
        self.names.remove(dev);
        self.names.insert(moved.clone(), ifname);
        Ok(moved)
    }

    /// Add a route on a host or in one of its namespaces, recorded as a PASS/FAIL result;
    /// deleted when the enclosing scope unwinds.
    pub async fn add_route(
        &mut self,
        host: &str,
        mut route: crate::protocol::RouteSpec,
        dev: Option<&Dev>,
    ) -> Result<(), RecipeError> {
        let client = self.client(host)?;
        if let Some(d) = dev {
            route.dev = Some(self.ifname(d)?);
        }
        let shown = describe_route(&route, dev);
        let res = client.add_route(route.clone()).await;
        self.add(ResultEntry::generic(
            ResultType::from_bool(res.is_ok()),
            format!("{host}: ip route add {shown}"),
        ));
        res.map_err(|e| RecipeError::Run(format!("{host}: ip route add {shown}: {e}")))?;
        self.push_undo(Undo::DelRoute {
            host: host.to_string(),
            route,
        });
        Ok(())
    }

    /// Add IPsec states and policies on a host, recorded as one PASS/FAIL result whose text
    /// shows the `ip xfrm` commands with every key redacted; deleted (by selector and SPI,
    /// never a flush) when the enclosing scope unwinds.
    pub async fn xfrm_add(
        &mut self,
        host: &str,
        states: Vec<crate::protocol::XfrmState>,
        policies: Vec<crate::protocol::XfrmPolicy>,
    ) -> Result<(), RecipeError> {
        let client = self.client(host)?;
        let shown: Vec<String> = states
            .iter()
            .map(|s| format!("ip {}", s.argv(true).join(" ")))
            .chain(
                policies
                    .iter()
                    .map(|p| format!("ip {}", p.argv().join(" "))),
            )
            .collect();
        let ids = (
            states.iter().map(|s| s.id()).collect::<Vec<_>>(),
            policies.iter().map(|p| p.id()).collect::<Vec<_>>(),
        );
        let res = client.xfrm_add(states, policies).await;
        self.add(ResultEntry::generic(
            ResultType::from_bool(res.is_ok()),
            format!("{host}: IPsec configured:\n{}", shown.join("\n")),
        ));
        res.map_err(|e| RecipeError::Run(format!("{host}: configuring IPsec: {e}")))?;
        self.push_undo(Undo::XfrmDel {
            host: host.to_string(),
            states: ids.0,
            policies: ids.1,
        });
        Ok(())
    }

    /// Give a MACsec device its receive channel and SAs, recorded as one PASS/FAIL result
    /// with the keys redacted; they go with the device.
    pub async fn macsec_configure(
        &mut self,
        dev: &Dev,
        sas: crate::protocol::MacsecSas,
    ) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let shown: Vec<String> = sas
            .argvs(&ifname, true)
            .iter()
            .map(|a| format!("ip {}", a.join(" ")))
            .collect();
        let res = client.macsec_configure(&ifname, sas).await;
        self.add(ResultEntry::generic(
            ResultType::from_bool(res.is_ok()),
            format!("{}: MACsec configured:\n{}", dev.host, shown.join("\n")),
        ));
        res.map_err(|e| RecipeError::Run(format!("{}: configuring MACsec on {dev}: {e}", dev.host)))
    }

    /// Create a static L2TPv3 tunnel on `host` (upstream `L2TPManager.create_tunnel`),
    /// recorded as the `ip l2tp` command; the agent deletes it when the recipe ends.
    pub async fn add_l2tp_tunnel(
        &mut self,
        host: &str,
        tunnel: crate::protocol::L2tpTunnelSpec,
    ) -> Result<(), RecipeError> {
        let client = self.client(host)?;
        let shown = tunnel.argv().join(" ");
        let res = client.add_l2tp_tunnel(tunnel).await;
        self.add(ResultEntry::generic(
            ResultType::from_bool(res.is_ok()),
            format!("{host}: {shown}"),
        ));
        res.map_err(|e| RecipeError::Run(format!("{host}: {shown}: {e}")))
    }

    /// Create the L2TP session device `dev` (`t_<id>` on the agent), recorded as the `ip
    /// l2tp` command; it goes with its tunnel.
    pub async fn add_l2tp_session(
        &mut self,
        dev: &Dev,
        tunnel_id: u32,
        session_id: u32,
        peer_session_id: u32,
    ) -> Result<(), RecipeError> {
        let client = self.client(&dev.host)?;
        let spec = crate::protocol::L2tpSessionSpec {
            ifname: format!("t_{}", dev.id),
            tunnel_id,
            session_id,
            peer_session_id,
        };
        let shown = spec.argv().join(" ");
        let ifname = spec.ifname.clone();
        let res = client.add_l2tp_session(spec).await;
        self.add(ResultEntry::generic(
            ResultType::from_bool(res.is_ok()),
            format!("{}: {shown}", dev.host),
        ));
        res.map_err(|e| RecipeError::Run(format!("{}: {shown}: {e}", dev.host)))?;
        self.register_peer(dev, ifname);
        Ok(())
    }

    /// Start a background job, recording a JobStart result.
    pub async fn start_job(&mut self, host: &str, spec: JobSpec) -> Result<u64, RecipeError> {
        let client = self.client(host)?;
        let command = spec
            .argv()
            .map(|a| a.join(" "))
            .unwrap_or_else(|| format!("{spec:?}"));
        let res = client.start_job(spec).await;
        let id = match &res {
            Ok(id) => *id,
            Err(_) => 0,
        };
        self.add(ResultEntry::job(
            ResultType::from_bool(res.is_ok()),
            host,
            None,
            id,
            JobAction::Start,
            &command,
            self.job_level,
        ));
        res.map_err(RecipeError::from)
    }

    fn record_end(&mut self, host: &str, id: u64, res: &JobResult) {
        let mut data = serde_json::Map::new();
        if let Some(code) = res.exit_code {
            data.insert("exit_code".into(), code.into());
        }
        if let Some(e) = &res.error {
            data.insert("error".into(), e.clone().into());
        }
        let stderr_tail: String = res
            .stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        data.insert("stderr".into(), stderr_tail.into());
        data.insert(
            "duration_s".into(),
            serde_json::json!(res.finished_at - res.started_at),
        );
        let command = self
            .run
            .results
            .iter()
            .rev()
            .find_map(|r| match &r.kind {
                crate::results::ResultKind::Job {
                    host: h,
                    job_id,
                    command,
                    ..
                } if h == host && *job_id == id => Some(command.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.add(
            ResultEntry::job(
                ResultType::from_bool(res.passed),
                host,
                None,
                id,
                JobAction::End,
                &command,
                self.job_level,
            )
            .with_data(serde_json::Value::Object(data)),
        );
    }

    /// Wait for a job up to `timeout`, kill it when it overruns, and record JobFinish.
    pub async fn finish_job(
        &mut self,
        host: &str,
        id: u64,
        timeout: Duration,
    ) -> Result<JobResult, RecipeError> {
        let client = self.client(host)?;
        let res = match client.wait_job(id, timeout).await {
            Ok(r) => r,
            Err(SessionError::AgentLost { host, reason }) => {
                return Err(RecipeError::Agent(SessionError::AgentLost { host, reason }))
            }
            Err(e) => {
                tracing::warn!(
                    "job {id} on {host} did not finish in {timeout:?} ({e}); killing it"
                );
                let mut r = client.kill_job(id).await?;
                r.passed = false;
                if r.error.is_none() {
                    r.error = Some(format!(
                        "did not finish within {} s and was killed",
                        timeout.as_secs()
                    ));
                }
                r
            }
        };
        self.record_end(host, id, &res);
        Ok(res)
    }

    /// Run a short job to its end (30 s at most); an error names the command and why it
    /// failed.
    pub async fn run_job(&mut self, host: &str, spec: JobSpec) -> Result<(), RecipeError> {
        let command = spec.argv().map(|a| a.join(" ")).unwrap_or_default();
        let id = self.start_job(host, spec).await?;
        let r = self.finish_job(host, id, Duration::from_secs(30)).await?;
        if r.passed {
            return Ok(());
        }
        let why = r.error.clone().unwrap_or_else(|| {
            format!(
                "exit code {:?}: {}",
                r.exit_code,
                r.stderr.lines().last().unwrap_or_default()
            )
        });
        Err(RecipeError::Run(format!(
            "{host}: `{command}` failed: {why}"
        )))
    }

    /// Add a static neighbour entry on `host` (upstream `ip neigh add <ip> lladdr <mac> dev
    /// <dev>`); deleted when the enclosing scope unwinds.
    pub async fn add_neighbour(
        &mut self,
        host: &str,
        neighbour: crate::protocol::NeighbourSpec,
    ) -> Result<(), RecipeError> {
        self.client(host)?.add_neighbour(neighbour.clone()).await?;
        self.undo.push((
            self.undo_group,
            Undo::DelNeighbour {
                host: host.to_string(),
                neighbour: crate::protocol::NeighbourSpec {
                    lladdr: None,
                    ..neighbour
                },
            },
        ));
        Ok(())
    }

    /// Take `spec` back with `undo` (a job) when the enclosing scope unwinds.
    pub fn push_undo_job(&mut self, host: &str, undo: JobSpec) {
        self.undo.push((
            self.undo_group,
            Undo::RunJob {
                host: host.to_string(),
                spec: undo,
            },
        ));
    }

    /// Stop a sampling job (SIGINT semantics) and record JobFinish.
    pub async fn stop_job(&mut self, host: &str, id: u64) -> Result<JobResult, RecipeError> {
        let client = self.client(host)?;
        let mut res = client.stop_job(id).await?;
        // Stopping a sampler is its normal end.
        if res.error.is_none() {
            res.passed = true;
        }
        self.record_end(host, id, &res);
        Ok(res)
    }
}

/// `198.18.2.2 via 198.18.1.2 dev host1.eth0` for results.
fn describe_route(r: &crate::protocol::RouteSpec, dev: Option<&Dev>) -> String {
    let mut out = r.dst.clone();
    if let Some(v) = &r.via {
        out.push_str(&format!(" via {v}"));
    }
    if let Some(e) = &r.encap {
        let fam = if e.dst.is_ipv6() { "ip6" } else { "ip" };
        out.push_str(&format!(" encap {fam} id {} dst {}", e.id, e.dst));
        if let Some(g) = &e.geneve_opt {
            let data: String = g.data.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!(" geneve_opts {:#x}:{:#x}:{data}", g.class, g.kind));
        }
    }
    if let Some(d) = dev {
        out.push_str(&format!(" dev {d}"));
    }
    out
}

/// NIC tunables (upstream's DevQueues, DevNfcRxFlowHash and DevRxHashFunction mixins run
/// `ethtool -L/-N/-X`): each call is recorded as a device method call, PASS or FAIL, with
/// what the agent found before it (`previous='…'`, or `unchanged=True`). The caller pushes
/// the undo from the outcome (see `recipes::enrt::nic_tunables`).
impl RunContext {
    fn record_tuned(
        &mut self,
        dev: &Dev,
        method: &str,
        shown: &str,
        res: &Result<crate::protocol::SetOutcome, SessionError>,
    ) {
        use crate::protocol::{Previous, SetOutcome};
        let kwargs = match res {
            Ok(SetOutcome::Applied { previous }) => {
                let p = match previous {
                    Previous::Channels(c) => c
                        .named()
                        .iter()
                        .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                        .collect::<Vec<_>>()
                        .join(" "),
                    Previous::Rss(r) => {
                        let mut v = Vec::new();
                        if let Some(h) = r.active_hfunc() {
                            v.push(format!("hfunc {h}"));
                        }
                        if let Some(x) = r.xfrm_on() {
                            v.push(format!("xfrm [{}]", x.join(" ")));
                        }
                        v.join(" ")
                    }
                    Previous::FlowHash { fields } => fields.clone(),
                    other => format!("{other:?}"),
                };
                vec![format!("previous='{p}'")]
            }
            Ok(SetOutcome::Unchanged) => vec!["unchanged=True".to_string()],
            Ok(SetOutcome::NotApplicable { reason }) => vec![format!("not_applicable='{reason}'")],
            Err(_) => Vec::new(),
        };
        self.add(ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            &dev.host,
            &dev.id,
            DeviceAction::MethodCall {
                name: method.to_string(),
                args: vec![format!("'{shown}'")],
                kwargs,
            },
        ));
    }

    /// `ethtool -L`: set the channel counts given (`method`: the name recorded).
    pub async fn set_channels(
        &mut self,
        dev: &Dev,
        counts: crate::protocol::ChannelCounts,
        method: &str,
    ) -> Result<crate::protocol::SetOutcome, RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let shown = counts
            .named()
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
            .collect::<Vec<_>>()
            .join(" ");
        let res = client.set_channels(&ifname, counts).await;
        self.record_tuned(dev, method, &shown, &res);
        res.map_err(RecipeError::from)
    }

    /// `ethtool -X`: the hash function, or the input transformations (`Some([])`: none).
    pub async fn set_rss(
        &mut self,
        dev: &Dev,
        hfunc: Option<&str>,
        xfrm: Option<Vec<String>>,
        method: &str,
    ) -> Result<crate::protocol::SetOutcome, RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let mut shown = Vec::new();
        if let Some(h) = hfunc {
            shown.push(format!("hfunc {h}"));
        }
        if let Some(x) = &xfrm {
            shown.push("xfrm none".to_string());
            shown.extend(x.iter().map(|x| format!("xfrm {x}")));
        }
        let shown = shown.join(" ");
        let res = client.set_rss(&ifname, hfunc, None, xfrm).await;
        self.record_tuned(dev, method, &shown, &res);
        res.map_err(RecipeError::from)
    }

    /// `ethtool -N … rx-flow-hash TYPE FIELDS`.
    pub async fn set_rx_flow_hash(
        &mut self,
        dev: &Dev,
        flow_type: crate::protocol::FlowType,
        fields: &str,
        method: &str,
    ) -> Result<crate::protocol::SetOutcome, RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        let shown = format!("rx-flow-hash {} {fields}", flow_type.name());
        let res = client.set_rx_flow_hash(&ifname, flow_type, fields).await;
        self.record_tuned(dev, method, &shown, &res);
        res.map_err(RecipeError::from)
    }
}
