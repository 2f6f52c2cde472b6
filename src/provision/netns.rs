//! netns provisioner: the embedded default pool. One network namespace per requirement host
//! (`lnst-<runid>-<host>`), one switch namespace (`lnst-<runid>-sw`) holding one bridge per
//! network label, veth pairs joining them, and one agent started inside each host namespace
//! and spoken to over its stdin/stdout.
//!
//! Everything is recorded in `/run/lnst-runner/<runid>.json` *before* it is created, so
//! [`Provisioner::teardown`] (also after a half-way failure) and [`cleanup_leftovers`] (after a
//! killed run) can remove it.

// Shared with the VM source (switch namespace, bridges, run state): crate-visible.
pub(crate) mod names;
pub(crate) mod nsfs;
pub(crate) mod state;

pub use names::{host_ns_name, run_id_of_namespace, switch_ns_name, NS_PREFIX};
pub use nsfs::NETNS_DIR;
pub use state::{state_file_path, RunState, STATE_DIR};

use crate::provision::{
    AgentEndpoint, IfaceBinding, ProvisionError, Provisioner, TeardownErrors, Transport,
};
use crate::requirements::Requirements;
use futures::future::BoxFuture;
use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlag, LinkInfo, LinkMessage,
};
use nsfs::{in_netns, NsEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWrite};
use tokio::process::{Child, ChildStdin};

/// The message of [`ProvisionError::NotRoot`] for this pool.
pub const NOT_ROOT_MSG: &str = "the embedded namespace pool needs root (run with sudo or as root)";

/// How long teardown waits for an agent to exit after closing its stdin.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(2);

/// Creates namespaces, L2 segments and agents for one run; see the module docs.
pub struct NetnsProvisioner {
    run_id: String,
    agent_cmd: Vec<OsString>,
    /// Extra environment of each agent (the run's secret travels here, never in a file).
    agent_env: Vec<(OsString, OsString)>,
    /// The run's secret, given to each agent and put on its endpoint.
    agent_secret: Option<String>,
    state: RunState,
    /// Whether this provisioner wrote the state file (only then does teardown remove it).
    wrote_state: bool,
    agents: Vec<AgentProc>,
}

/// One started agent.
struct AgentProc {
    host_id: String,
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
}

/// One veth to create: host end `ifname` in the host namespace, peer `peer` on `bridge`.
#[derive(Debug, Clone)]
struct VethPlan {
    ifname: String,
    peer: String,
    bridge: String,
}

/// One host namespace to create.
#[derive(Debug, Clone)]
struct HostPlan {
    host_id: String,
    ns: String,
    veths: Vec<VethPlan>,
}

impl NetnsProvisioner {
    /// `run_id`: short id (8 hex digits) naming everything the run creates. `agent_cmd`: argv
    /// starting one agent on stdio (e.g. `["/path/lnst-agent", "--stdio"]`).
    pub fn new(run_id: &str, agent_cmd: Vec<OsString>) -> NetnsProvisioner {
        NetnsProvisioner {
            run_id: run_id.to_string(),
            agent_cmd,
            agent_env: Vec::new(),
            agent_secret: None,
            state: RunState::for_this_process(run_id),
            wrote_state: false,
            agents: Vec::new(),
        }
    }

    /// Set a variable in every agent's environment.
    pub fn with_agent_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.agent_env.push((key.into(), value.into()));
        self
    }

    /// Require `secret` of every agent: it reaches each agent in its environment
    /// (`LNST_AGENT_SECRET`) and is set on each endpoint, so that the controller refuses an
    /// agent that cannot prove it.
    pub fn with_agent_secret(self, secret: &str) -> Self {
        let mut this = self.with_agent_env(crate::agent::AGENT_SECRET_ENV, secret);
        this.agent_secret = Some(secret.to_string());
        this
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Effective uid 0 with CAP_SYS_ADMIN and CAP_NET_ADMIN usable.
    pub fn check_root() -> Result<(), ProvisionError> {
        let not_root = || ProvisionError::NotRoot(NOT_ROOT_MSG.to_string());
        if !nix::unistd::geteuid().is_root() {
            return Err(not_root());
        }
        let status = std::fs::read_to_string("/proc/self/status").map_err(|_| not_root())?;
        let caps = parse_cap_eff(&status).ok_or_else(not_root)?;
        const CAP_NET_ADMIN: u32 = 12;
        const CAP_SYS_ADMIN: u32 = 21;
        if caps & (1 << CAP_SYS_ADMIN) == 0 || caps & (1 << CAP_NET_ADMIN) == 0 {
            return Err(not_root());
        }
        Ok(())
    }

    /// Persist the state file (called before anything new is created).
    fn record(&mut self) -> Result<(), ProvisionError> {
        self.wrote_state = true;
        state::write_state(&self.state).map_err(|e| {
            ProvisionError::Setup(format!(
                "cannot write state file {}: {e}",
                state_file_path(&self.run_id).display()
            ))
        })
    }

    fn record_namespace(&mut self, ns: &str) {
        if !self.state.namespaces.iter().any(|n| n == ns) {
            self.state.namespaces.push(ns.to_string());
        }
    }

    /// Check every id and compute what to create, before anything is created.
    fn plan(&self, reqs: &Requirements) -> Result<(Vec<String>, Vec<HostPlan>), ProvisionError> {
        names::validate_run_id(&self.run_id).map_err(ProvisionError::Setup)?;
        if self.agent_cmd.is_empty() {
            return Err(ProvisionError::Setup("the agent command is empty".into()));
        }
        let labels = reqs.labels();
        let bridge_of: BTreeMap<&str, String> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), names::bridge_name(i)))
            .collect();
        let mut hosts = Vec::new();
        for (hidx, (host_id, host)) in reqs.hosts.iter().enumerate() {
            names::validate_host_id(host_id).map_err(ProvisionError::Unsatisfiable)?;
            let mut veths = Vec::new();
            for (iidx, (ifname, dev)) in host.interfaces.iter().enumerate() {
                names::validate_ifname(ifname).map_err(ProvisionError::Unsatisfiable)?;
                let bridge = bridge_of.get(dev.label.as_str()).cloned().ok_or_else(|| {
                    ProvisionError::Setup(format!("network label {:?} has no bridge", dev.label))
                })?;
                veths.push(VethPlan {
                    ifname: ifname.clone(),
                    peer: names::peer_name(hidx, iidx),
                    bridge,
                });
            }
            hosts.push(HostPlan {
                host_id: host_id.clone(),
                ns: host_ns_name(&self.run_id, host_id),
                veths,
            });
        }
        let bridges = (0..labels.len()).map(names::bridge_name).collect();
        Ok((bridges, hosts))
    }

    async fn provision_inner(
        &mut self,
        reqs: &Requirements,
    ) -> Result<Vec<AgentEndpoint>, ProvisionError> {
        Self::check_root()?;
        let (bridges, hosts) = self.plan(reqs)?;
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let sw = switch_ns_name(&self.run_id);

        // A fresh run must not reuse another run's id: teardown would delete its namespaces.
        if self.state.namespaces.is_empty() {
            let taken: Vec<String> = std::iter::once(&sw)
                .chain(hosts.iter().map(|h| &h.ns))
                .filter(|ns| std::fs::symlink_metadata(nsfs::ns_path(ns)).is_ok())
                .cloned()
                .collect();
            if !taken.is_empty() || state_file_path(&self.run_id).exists() {
                return Err(ProvisionError::Setup(format!(
                    "run id {} is already in use (existing: {taken:?}); \
                     `lnst-runner cleanup` removes leftovers of killed runs",
                    self.run_id
                )));
            }
        }

        // Record every namespace before creating any: convergent teardown deletes what exists.
        self.record_namespace(&sw);
        for h in &hosts {
            self.record_namespace(&h.ns);
        }
        self.record()?;

        // 1. Switch namespace with one bridge per label.
        in_netns(NsEntry::Create(sw.clone()), move |handle| async move {
            for br in bridges {
                create_bridge(&handle, &br).await?;
            }
            Ok(())
        })
        .await?;

        // 2. Host namespaces (in parallel): lo up, veths with the peer landing in the switch
        //    namespace, MAC of each host end.
        let host_jobs = hosts.iter().cloned().map(|h| {
            let sw = sw.clone();
            in_netns(NsEntry::Create(h.ns.clone()), move |handle| async move {
                set_up_by_name(&handle, "lo").await?;
                skip_ipv6_dad();
                let sw_file = std::fs::File::open(nsfs::ns_path(&sw))?;
                let mut macs = BTreeMap::new();
                for v in &h.veths {
                    create_veth(&handle, &v.ifname, &v.peer, sw_file.as_raw_fd()).await?;
                    let link = link_by_name(&handle, &v.ifname).await?;
                    let mac = link_mac(&link).ok_or_else(|| {
                        ProvisionError::Setup(format!(
                            "{} in {} has no hardware address",
                            v.ifname, h.ns
                        ))
                    })?;
                    macs.insert(v.ifname.clone(), mac);
                }
                Ok(macs)
            })
        });
        // Wait for every worker (none may still be creating when teardown runs), then fail
        // with the first error.
        let macs: Vec<BTreeMap<String, String>> = futures::future::join_all(host_jobs)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;

        // 3. Enslave the switch-side peers to their bridges and bring them up.
        let ports: Vec<(String, String)> = hosts
            .iter()
            .flat_map(|h| h.veths.iter().map(|v| (v.peer.clone(), v.bridge.clone())))
            .collect();
        in_netns(NsEntry::Enter(sw.clone()), move |handle| async move {
            let mut bridge_idx = BTreeMap::new();
            for (peer, bridge) in ports {
                let br = match bridge_idx.get(&bridge) {
                    Some(i) => *i,
                    None => {
                        let i = link_by_name(&handle, &bridge).await?.header.index;
                        bridge_idx.insert(bridge.clone(), i);
                        i
                    }
                };
                let idx = link_by_name(&handle, &peer).await?.header.index;
                handle
                    .link()
                    .set(idx)
                    .controller(br)
                    .up()
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("cannot attach {peer} to {bridge}"), e))?;
            }
            Ok(())
        })
        .await?;
        tracing::debug!(run = %self.run_id, elapsed = ?started.elapsed(), "namespaces and segments ready");

        // 4. Agents.
        let mut endpoints = Vec::new();
        for (h, macs) in hosts.iter().zip(macs) {
            let transport = self.start_agent(h)?;
            let interfaces = macs
                .into_iter()
                .map(|(ifname, hwaddr)| {
                    (
                        ifname.clone(),
                        IfaceBinding {
                            ifname: Some(ifname.clone()),
                            hwaddr,
                            target: ifname,
                        },
                    )
                })
                .collect();
            endpoints.push(AgentEndpoint {
                host_id: h.host_id.clone(),
                target: h.ns.clone(),
                hostname: h.ns.clone(),
                transport,
                secret: self.agent_secret.as_ref().map(|s| s.as_bytes().to_vec()),
                interfaces,
                console_log: None,
                control_socket: None,
            });
        }
        self.record()?;
        tracing::info!(run = %self.run_id, hosts = endpoints.len(), elapsed = ?started.elapsed(), "netns pool provisioned");
        Ok(endpoints)
    }

    /// Spawn the agent inside `h.ns` with piped stdin/stdout and stderr forwarded to tracing.
    fn start_agent(&mut self, h: &HostPlan) -> Result<Transport, ProvisionError> {
        let (prog, args) = self
            .agent_cmd
            .split_first()
            .ok_or_else(|| ProvisionError::Setup("the agent command is empty".into()))?;
        let ns_file = std::fs::File::open(nsfs::ns_path(&h.ns))?;
        let ns_fd = ns_file.as_raw_fd();
        let setup = ChildNsSetup::new()?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure only performs async-signal-safe system calls on data prepared
        // before fork (an open fd, C strings); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || setup.apply(ns_fd));
        }
        let mut child = cmd.spawn().map_err(|e| {
            ProvisionError::Setup(format!(
                "cannot start the agent {:?} for {} in {}: {e}",
                self.agent_cmd, h.host_id, h.ns
            ))
        })?;
        drop(ns_file);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ProvisionError::Setup(format!(
                "agent for {} has no stdio pipes",
                h.host_id
            )));
        };
        if let Some(stderr) = child.stderr.take() {
            let host = h.host_id.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "lnst_agent", host = %host, "{line}");
                }
            });
        }
        if let Some(pid) = child.id() {
            self.state.agent_pids.push(pid);
        }
        let stdin = Arc::new(Mutex::new(Some(stdin)));
        self.agents.push(AgentProc {
            host_id: h.host_id.clone(),
            child,
            stdin: stdin.clone(),
        });
        Ok(Transport {
            reader: Box::new(stdout),
            writer: Box::new(AgentStdin(stdin)),
        })
    }

    async fn teardown_inner(&mut self) -> Result<(), TeardownErrors> {
        let mut errs = TeardownErrors::default();

        // 0. An interrupted provisioning may have left workers creating namespaces: let them
        //    finish, so that what they create is deleted below rather than left behind.
        if !nsfs::wait_for_workers(std::time::Duration::from_secs(10)).await {
            errs.push("namespace workers still running after 10 s; teardown goes on anyway");
        }

        // 1. Agents: close every stdin, give them a shared grace period, then kill.
        let mut agents: Vec<AgentProc> = self.agents.drain(..).collect();
        for a in &agents {
            lock(&a.stdin).take();
        }
        let deadline = tokio::time::Instant::now() + AGENT_STOP_GRACE;
        for a in &mut agents {
            match tokio::time::timeout_at(deadline, a.child.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => errs.push(format!("waiting for agent of {}: {e}", a.host_id)),
                Err(_) => {
                    tracing::debug!(host = %a.host_id, "agent did not exit after stdin closed; killing");
                    if let Err(e) = a.child.kill().await {
                        errs.push(format!("killing agent of {}: {e}", a.host_id));
                    }
                }
            }
        }
        self.state.agent_pids.clear();

        // 2. Namespaces, newest first (hosts, then the switch).
        let mut remaining = Vec::new();
        for ns in self.state.namespaces.iter().rev() {
            match nsfs::delete_named_ns(ns) {
                Ok(existed) => {
                    if existed {
                        tracing::debug!(namespace = %ns, "deleted namespace");
                    }
                }
                Err(e) => {
                    errs.push(e);
                    remaining.push(ns.clone());
                }
            }
        }
        remaining.reverse();
        self.state.namespaces = remaining;

        // 3. State file: gone when everything is gone, else keep what is left for cleanup.
        if self.state.namespaces.is_empty() {
            if self.wrote_state {
                match state::remove_state(&state_file_path(&self.run_id)) {
                    Ok(_) => self.wrote_state = false,
                    Err(e) => errs.push(e),
                }
            }
        } else if let Err(e) = state::write_state(&self.state) {
            errs.push(format!("cannot update state file: {e}"));
        }
        errs.into_result()
    }
}

/// No IPv6 duplicate address detection on the interfaces about to be created in this thread's
/// namespace: every address on these private links is assigned by the recipe, so a duplicate
/// cannot exist, and DAD would only delay each test by about a second before addresses leave
/// the tentative state. Best effort: without IPv6 the files do not exist.
fn skip_ipv6_dad() {
    for scope in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{scope}/accept_dad");
        if let Err(e) = std::fs::write(&path, "0") {
            tracing::debug!("{path}: {e}");
        }
    }
}

impl Provisioner for NetnsProvisioner {
    fn provision<'a>(
        &'a mut self,
        reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, ProvisionError>> {
        Box::pin(self.provision_inner(reqs))
    }

    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>> {
        Box::pin(self.teardown_inner())
    }
}

/// Remove leftovers of runs whose owner is gone: state files whose pid is dead (or recycled by
/// another process), their namespaces, and any `/run/netns/lnst-*` namespace not owned by a
/// live run. Returns what was removed (namespace names and state file paths). Never touches
/// namespaces without the `lnst-` prefix nor those of a live run.
pub fn cleanup_leftovers() -> Result<Vec<String>, TeardownErrors> {
    let mut errs = TeardownErrors::default();
    let mut removed = Vec::new();
    let mut live_runs = BTreeSet::new();
    let mut live_ns = BTreeSet::new();
    let files = match state::state_files() {
        Ok(f) => f,
        Err(e) => {
            errs.push(e);
            Vec::new()
        }
    };
    let mut dead = Vec::new();
    for path in files {
        match state::read_state(&path) {
            Ok(st) if st.owner_alive() => {
                live_runs.insert(st.run_id.clone());
                live_ns.extend(st.namespaces.iter().cloned());
            }
            Ok(st) => dead.push((path, st)),
            Err(e) => {
                // Unknown owner: protect nothing, remove nothing from it; report.
                errs.push(e);
            }
        }
    }
    for (path, st) in dead {
        let mut ok = true;
        for ns in st.namespaces.iter().rev() {
            if !ns.starts_with(NS_PREFIX) || live_ns.contains(ns) {
                continue;
            }
            match nsfs::delete_named_ns(ns) {
                Ok(true) => removed.push(ns.clone()),
                Ok(false) => {}
                Err(e) => {
                    ok = false;
                    errs.push(e);
                }
            }
        }
        if ok {
            match state::remove_state(&path) {
                Ok(true) => removed.push(path.display().to_string()),
                Ok(false) => {}
                Err(e) => errs.push(e),
            }
        }
    }
    for ns in all_lnst_namespaces() {
        let owned_by_live = live_ns.contains(&ns)
            || run_id_of_namespace(&ns).is_some_and(|id| live_runs.contains(id));
        if owned_by_live {
            continue;
        }
        match nsfs::delete_named_ns(&ns) {
            Ok(true) => removed.push(ns),
            Ok(false) => {}
            Err(e) => errs.push(e),
        }
    }
    if !removed.is_empty() {
        tracing::info!(?removed, "removed leftovers of earlier runs");
    }
    errs.into_result().map(|()| removed)
}

/// Synchronously remove everything of one run regardless of its owner: every namespace named
/// `lnst-<run_id>-*`, those listed in its state file, and the state file. For Drop guards and
/// signal handlers; agents die with their namespace (their processes are killed).
pub fn remove_run(run_id: &str) -> Result<Vec<String>, TeardownErrors> {
    let mut errs = TeardownErrors::default();
    let mut removed = Vec::new();
    if let Err(e) = names::validate_run_id(run_id) {
        errs.push(e);
        return Err(errs);
    }
    let path = state_file_path(run_id);
    let mut targets: Vec<String> = match state::read_state(&path) {
        Ok(st) => st
            .namespaces
            .into_iter()
            .filter(|n| n.starts_with(&names::run_prefix(run_id)))
            .collect(),
        Err(_) => Vec::new(),
    };
    for ns in namespaces_of_run(run_id) {
        if !targets.contains(&ns) {
            targets.push(ns);
        }
    }
    for ns in targets {
        match nsfs::delete_named_ns(&ns) {
            Ok(true) => removed.push(ns),
            Ok(false) => {}
            Err(e) => errs.push(e),
        }
    }
    match state::remove_state(&path) {
        Ok(true) => removed.push(path.display().to_string()),
        Ok(false) => {}
        Err(e) => errs.push(e),
    }
    errs.into_result().map(|()| removed)
}

/// Namespaces of one run (`lnst-<run_id>-*`) present in `/run/netns`, sorted.
pub fn namespaces_of_run(run_id: &str) -> Vec<String> {
    nsfs::list_namespaces(&names::run_prefix(run_id))
}

/// Every `lnst-*` namespace present in `/run/netns`, sorted.
pub fn all_lnst_namespaces() -> Vec<String> {
    nsfs::list_namespaces(NS_PREFIX)
}

/// `CapEff:` of `/proc/self/status` as a bit set.
fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent's stdin, closable by teardown while the session still holds the transport.
struct AgentStdin(Arc<Mutex<Option<ChildStdin>>>);

impl AsyncWrite for AgentStdin {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut g = lock(&self.0);
        match g.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the agent was stopped",
            ))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut g = lock(&self.0);
        match g.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Dropping the pipe end is what signals EOF to the agent.
        lock(&self.0).take();
        Poll::Ready(Ok(()))
    }
}

/// What the agent's child process does between fork and exec: join the host's network
/// namespace, then (like `ip netns exec`) get a private mount namespace with a fresh /sys so
/// that /sys/class/net shows the namespace's devices.
struct ChildNsSetup {
    root: CString,
    sys: CString,
    sysfs: CString,
}

impl ChildNsSetup {
    fn new() -> Result<ChildNsSetup, ProvisionError> {
        let c = |s: &str| {
            CString::new(s).map_err(|e| ProvisionError::Setup(format!("bad C string: {e}")))
        };
        Ok(ChildNsSetup {
            root: c("/")?,
            sys: c("/sys")?,
            sysfs: c("sysfs")?,
        })
    }

    /// Runs in the forked child: only raw system calls, no allocation.
    fn apply(&self, ns_fd: std::os::fd::RawFd) -> std::io::Result<()> {
        // SAFETY: plain system calls on valid, NUL-terminated strings and an open fd.
        unsafe {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The remaining steps are best effort: the agent works over netlink without them.
            if libc::unshare(libc::CLONE_NEWNS) == 0 {
                let none = std::ptr::null();
                if libc::mount(
                    none,
                    self.root.as_ptr(),
                    none,
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ) == 0
                {
                    libc::umount2(self.sys.as_ptr(), libc::MNT_DETACH);
                    libc::mount(
                        self.sysfs.as_ptr(),
                        self.sys.as_ptr(),
                        self.sysfs.as_ptr(),
                        0,
                        std::ptr::null(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn nl_err(what: &str, e: rtnetlink::Error) -> ProvisionError {
    ProvisionError::Setup(format!("{what}: {e}"))
}

pub(crate) async fn link_by_name(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<LinkMessage, ProvisionError> {
    handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|e| nl_err(&format!("cannot find link {name}"), e))?
        .ok_or_else(|| ProvisionError::Setup(format!("link {name} not found")))
}

fn link_mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) if !bytes.is_empty() => Some(names::format_mac(bytes)),
        _ => None,
    })
}

async fn set_up_by_name(handle: &rtnetlink::Handle, name: &str) -> Result<(), ProvisionError> {
    let idx = link_by_name(handle, name).await?.header.index;
    handle
        .link()
        .set(idx)
        .up()
        .execute()
        .await
        .map_err(|e| nl_err(&format!("cannot set {name} up"), e))
}

/// `ip link add <name> up type bridge stp_state 0 forward_delay 0`.
pub(crate) async fn create_bridge(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<(), ProvisionError> {
    let mut req = handle.link().add();
    let msg = req.message_mut();
    msg.header.flags.push(LinkFlag::Up);
    msg.header.change_mask.push(LinkFlag::Up);
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::StpState(0),
            InfoBridge::ForwardDelay(0),
        ])),
    ]));
    req.execute()
        .await
        .map_err(|e| nl_err(&format!("cannot create bridge {name}"), e))
}

/// `ip link add <ifname> type veth peer name <peer> netns <peer_ns_fd>`; `ifname` stays down.
async fn create_veth(
    handle: &rtnetlink::Handle,
    ifname: &str,
    peer: &str,
    peer_ns_fd: std::os::fd::RawFd,
) -> Result<(), ProvisionError> {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_string()));
    peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_ns_fd));
    let mut req = handle.link().add();
    let msg = req.message_mut();
    msg.attributes
        .push(LinkAttribute::IfName(ifname.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    req.execute()
        .await
        .map_err(|e| nl_err(&format!("cannot create veth {ifname} (peer {peer})"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirements::HostReq;

    #[test]
    fn cap_eff_is_parsed() {
        let s = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_feff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn plan_assigns_bridges_by_sorted_label_and_unique_peers() {
        let mut r = Requirements::default();
        r.hosts.insert(
            "host1".into(),
            HostReq::default()
                .with_interface("eth0", "netB", BTreeMap::new())
                .with_interface("eth1", "netA", BTreeMap::new()),
        );
        r.hosts.insert(
            "host2".into(),
            HostReq::default().with_interface("eth0", "netA", BTreeMap::new()),
        );
        let p = NetnsProvisioner::new("1a2b3c4d", vec!["cat".into()]);
        let (bridges, hosts) = p.plan(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bridges, vec!["br0", "br1"]);
        assert_eq!(hosts.len(), 2);
        let h1 = &hosts[0];
        assert_eq!(h1.ns, "lnst-1a2b3c4d-host1");
        let by_if: BTreeMap<_, _> = h1
            .veths
            .iter()
            .map(|v| (v.ifname.as_str(), v.bridge.as_str()))
            .collect();
        assert_eq!(by_if.get("eth0"), Some(&"br1"));
        assert_eq!(by_if.get("eth1"), Some(&"br0"));
        assert_eq!(hosts[1].veths[0].bridge, "br0");
        let mut peers: Vec<_> = hosts
            .iter()
            .flat_map(|h| h.veths.iter().map(|v| v.peer.clone()))
            .collect();
        let n = peers.len();
        peers.sort();
        peers.dedup();
        assert_eq!(peers.len(), n);
    }

    #[test]
    fn plan_rejects_bad_ids_before_creating_anything() {
        let mut r = Requirements::default();
        r.hosts.insert(
            "host1".into(),
            HostReq::default().with_interface("an_interface_name_too_long", "n", BTreeMap::new()),
        );
        let p = NetnsProvisioner::new("1a2b3c4d", vec!["cat".into()]);
        assert!(matches!(p.plan(&r), Err(ProvisionError::Unsatisfiable(_))));
        let bad_run = NetnsProvisioner::new("../etc", vec!["cat".into()]);
        assert!(matches!(
            bad_run.plan(&Requirements::default()),
            Err(ProvisionError::Setup(_))
        ));
        let no_cmd = NetnsProvisioner::new("1a2b3c4d", Vec::new());
        assert!(matches!(
            no_cmd.plan(&Requirements::default()),
            Err(ProvisionError::Setup(_))
        ));
    }
}
