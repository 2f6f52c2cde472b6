//! The run context a recipe works in: one connected agent per requirement host, the
//! requirement-interface → agent-device binding, the results being recorded, raw tool output,
//! and the stack of changes to undo (deconfiguration in reverse order, also after a failure).

use crate::measure::evaluate::BaselineFile;
use crate::protocol::{JobResult, JobSpec};
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
pub struct HostHandle {
    pub id: String,
    pub client: AgentClient,
    /// Requirement interface id (`eth0`) → device name on the agent.
    pub ifaces: BTreeMap<String, String>,
}

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
    /// Delete a static neighbour entry the recipe added.
    DelNeighbour {
        host: String,
        neighbour: crate::protocol::NeighbourSpec,
    },
    /// Run a job that takes a change back (`xdp-forward unload`); it must pass.
    RunJob { host: String, spec: JobSpec },
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

    pub async fn wait_dad(&mut self, dev: &Dev, timeout: Duration) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(dev)?;
        client
            .wait_dad(&ifname, timeout)
            .await
            .map_err(|e| RecipeError::Run(format!("{dev}: IPv6 addresses still tentative: {e}")))
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

    fn push_undo(&mut self, u: Undo) {
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
    /// Every change is attempted; the first error is returned.
    pub async fn unwind(&mut self, mark: usize) -> Result<(), RecipeError> {
        let mut first_err = None;
        while self.undo.len() > mark {
            let Some(&(group, _)) = self.undo.last() else {
                break;
            };
            let mut start = self.undo.len();
            while start > mark && self.undo.get(start - 1).is_some_and(|(g, _)| *g == group) {
                start -= 1;
            }
            let run: Vec<Undo> = self.undo.drain(start..).map(|(_, u)| u).collect();
            for u in run {
                if let Err(e) = self.undo_one(u).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
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
                Undo::DelNeighbour { host, neighbour } => {
                    let client = self.client(&host)?;
                    client
                        .del_neighbour(neighbour)
                        .await
                        .map_err(RecipeError::from)
                }
                Undo::RunJob { host, spec } => self.run_job(&host, spec).await,
            }
        }
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
    if let Some(d) = dev {
        out.push_str(&format!(" dev {d}"));
    }
    out
}
