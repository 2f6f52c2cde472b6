//! The runner: for each test of the plan, provision agents (netns | pool | podman), connect,
//! run the recipe, tear everything down, export the results, and decide the exit code.
//! Teardown runs on success, failure, Ctrl-C and SIGTERM.

use crate::config::{AgentMode, Config};
use crate::plan::{Plan, TestSpec};
use crate::pool::{Pool, Security};
use crate::provision::netns::NetnsProvisioner;
use crate::provision::podman::{PodmanOptions, PodmanProvisioner};
use crate::provision::vm::{VmOptions, VmProvisioner};
use crate::provision::{AgentEndpoint, IfaceBinding, Provisioner, Transport};
use crate::recipes::context::{HostHandle, RecipeError, RunContext};
use crate::requirements::Requirements;
use crate::results::export::{exit_code, stdout_summary, Exporter};
use crate::results::{InterfaceMatch, MachineMatch, MatchDescription, RecipeRun, TestOutcome};
use crate::session::{AgentClient, ClientOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Exit code for bad input detected before anything ran.
pub const EXIT_BAD_INPUT: i32 = 2;

/// Why a run could not start at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{0}")]
    NotRoot(String),
    #[error("{0}")]
    Pool(String),
    #[error("{0}")]
    Podman(String),
    #[error("{0}")]
    Results(String),
    #[error("{0}")]
    Agent(String),
    #[error("{0}")]
    Vm(String),
}

/// A fresh short run id: 8 hex digits.
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Where our agent binary is: `LNST_AGENT_BIN`, next to this executable, or on PATH.
pub fn agent_binary() -> Result<PathBuf, PreflightError> {
    if let Some(p) = std::env::var_os("LNST_AGENT_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(PreflightError::Agent(format!(
            "LNST_AGENT_BIN={} does not exist",
            p.display()
        )));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for cand in [dir.join("lnst-agent"), dir.join("../lnst-agent")] {
                if cand.is_file() {
                    return Ok(cand);
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("lnst-agent");
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    Err(PreflightError::Agent(
        "lnst-agent not found (next to lnst-runner, on PATH, or in LNST_AGENT_BIN)".into(),
    ))
}

/// Everything checked before the first test: agents can be had, results can be written.
enum Mode {
    Netns { agent: PathBuf },
    Pool { pool: Pool },
    Podman { opts: PodmanOptions },
    // VM source: everything but the run id and secret, checked; the accelerator chosen.
    Vm { opts: VmOptions },
}

async fn preflight(config: &Config, run_id: &str) -> Result<Mode, PreflightError> {
    match config.agent_mode {
        AgentMode::Netns => {
            NetnsProvisioner::check_root().map_err(|e| PreflightError::NotRoot(e.to_string()))?;
            Ok(Mode::Netns {
                agent: agent_binary()?,
            })
        }
        AgentMode::Pool => {
            let pool = crate::pool::load_pool_dir(&config.pool_dir)
                .map_err(|e| PreflightError::Pool(e.to_string()))?;
            Ok(Mode::Pool { pool })
        }
        AgentMode::Podman => {
            let uri = config
                .podman_uri
                .as_ref()
                .map(|u| u.to_uri())
                .unwrap_or_default();
            let mut opts = PodmanOptions::new(uri, config.image_name.clone(), run_id);
            opts.oci_runtime = config.oci_runtime.clone();
            let prov = PodmanProvisioner::connect(opts.clone())
                .map_err(|e| PreflightError::Podman(e.to_string()))?;
            prov.preflight()
                .await
                .map_err(|e| PreflightError::Podman(e.to_string()))?;
            Ok(Mode::Podman { opts })
        }
        AgentMode::Vm => preflight_vm(config, run_id).await,
    }
}

/// VM source (issue 10): root, the kernel (checked by the config), QEMU, the agent and init
/// binaries, and the accelerator (the KVM probe runs here, once per run, bounded).
async fn preflight_vm(config: &Config, run_id: &str) -> Result<Mode, PreflightError> {
    use crate::provision::vm;
    NetnsProvisioner::check_root().map_err(|e| PreflightError::NotRoot(e.to_string()))?;
    let vc = config
        .vm
        .clone()
        .ok_or_else(|| PreflightError::Vm("LNST_AGENTS=vm without VM settings".into()))?;
    let agent = vm::check_agent_path(&agent_binary()?).map_err(PreflightError::Agent)?;
    let init = vm::find_init(&agent).map_err(PreflightError::Vm)?;
    let qemu = vm::find_qemu().map_err(PreflightError::Vm)?;
    let choice = vc.accel;
    let accel = tokio::task::spawn_blocking(move || vm::accel::choose(choice))
        .await
        .map_err(|e| PreflightError::Vm(format!("accelerator probe: {e}")))?;
    let kernel = vc.kernel.clone();
    let boot_kernel = tokio::task::spawn_blocking(move || vm::prepare_kernel(&kernel))
        .await
        .map_err(|e| PreflightError::Vm(format!("kernel: {e}")))?
        .map_err(PreflightError::Vm)?;
    Ok(Mode::Vm {
        opts: VmOptions {
            run_id: run_id.to_string(),
            kernel: vc.kernel,
            modules_dir: vc.modules,
            accel,
            cpus: vc.cpus,
            memory_mib: vc.memory_mib,
            agent,
            init,
            qemu,
            boot_timeout: vm::default_boot_timeout(accel),
            agent_secret: None,
            extra_append: vc.append,
            boot_kernel,
        },
    })
}

/// Resolves when SIGINT or SIGTERM arrives, with the signal's name. The handlers are installed
/// when this is called, not when the future is first polled: from then on neither signal can
/// kill the process before its teardown has run.
fn interrupted() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            std::future::pending::<()>().await;
            return "signal";
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

/// `lnst-runner run`: the whole plan; returns the exit code.
pub async fn run(config: &Config, plan: Plan) -> i32 {
    let signal = interrupted();
    tokio::pin!(signal);
    let run_id = new_run_id();
    let mode = match preflight(config, &run_id).await {
        Ok(m) => m,
        Err(e) => {
            crate::say!("lnst-runner: {}", crate::cli::line(&e.to_string()));
            return EXIT_BAD_INPUT;
        }
    };
    let exporter = match Exporter::new(&config.results_dir) {
        Ok(e) => e,
        Err(e) => {
            crate::say!("lnst-runner: {}", crate::cli::line(&e.to_string()));
            return EXIT_BAD_INPUT;
        }
    };
    tracing::debug!(
        "run {run_id}: {} test(s), agents: {:?}",
        plan.tests.len(),
        config.agent_mode
    );
    let mut outcomes: Vec<TestOutcome> = Vec::new();
    let mut stopped_by: Option<&'static str> = None;
    for spec in &plan.tests {
        if let Some(sig) = stopped_by {
            outcomes.push(TestOutcome {
                id: spec.id.clone(),
                recipe: spec.recipe.clone(),
                params: spec.params.to_json(),
                error: Some(format!("not run: the runner was stopped by {sig}")),
                ..TestOutcome::default()
            });
            continue;
        }
        crate::say!("== test {} ({})", spec.id, spec.recipe);
        let (outcome, sig) = run_test(config, &mode, spec, &run_id, &mut signal).await;
        stopped_by = stopped_by.or(sig);
        crate::say!("== test {}: {}", spec.id, outcome.overall_result());
        if let Err(e) = exporter.write_test(&outcome) {
            tracing::error!("exporting {} failed: {e}", outcome.id);
        }
        outcomes.push(outcome);
    }
    if stopped_by.is_none() {
        // A signal that arrived while nothing was waiting for it (during a teardown, say):
        // the run finished its work, but it was asked to stop, so it does not report success.
        stopped_by = tokio::select! {
            biased;
            sig = signal.as_mut() => Some(sig),
            _ = std::future::ready(()) => None,
        };
        if let Some(sig) = stopped_by {
            crate::say!("lnst-runner: {sig} received during teardown; teardown completed");
        }
    }
    if let Err(e) = exporter.finish(&outcomes) {
        tracing::error!("writing summary files failed: {e}");
    }
    crate::out!("{}", stdout_summary(&outcomes, &config.formatters));
    let code = exit_code(&outcomes);
    if code == 0 && stopped_by.is_some() {
        return 1;
    }
    code
}

fn make_provisioner(mode: &Mode, run_id: &str, secret: &str) -> Option<Box<dyn Provisioner>> {
    // The run's secret reaches each agent in its environment (a root-only channel: a child's
    // environment, a container's environment on the engine's socket), never in a file.
    match mode {
        Mode::Netns { agent } => {
            let argv = vec![agent.clone().into_os_string(), "--stdio".into()];
            Some(Box::new(
                NetnsProvisioner::new(run_id, argv).with_agent_secret(secret),
            ))
        }
        Mode::Podman { opts } => match PodmanProvisioner::connect(PodmanOptions {
            agent_secret: Some(secret.to_string()),
            ..opts.clone()
        }) {
            Ok(p) => Some(Box::new(p)),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        },
        Mode::Vm { opts } => Some(Box::new(VmProvisioner::new(VmOptions {
            run_id: run_id.to_string(),
            agent_secret: Some(secret.to_string()),
            ..opts.clone()
        }))),
        Mode::Pool { .. } => None,
    }
}

/// Run one test of the plan; never fails: problems become the outcome's error / run exceptions.
async fn run_test(
    config: &Config,
    mode: &Mode,
    spec: &TestSpec,
    run_id: &str,
    signal: &mut std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
) -> (TestOutcome, Option<&'static str>) {
    let started = Instant::now();
    let mut outcome = TestOutcome {
        id: spec.id.clone(),
        recipe: spec.recipe.clone(),
        params: spec.params.to_json(),
        ..TestOutcome::default()
    };
    let def = match crate::recipes::find(&spec.recipe) {
        Ok(d) => d,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return (outcome, None);
        }
    };
    let reqs = (def.requirements)(&spec.params);
    let mut stopped = None;

    match mode {
        Mode::Pool { pool } => {
            let matches = match crate::mapper::map(&reqs, pool, config.multimatch) {
                Ok(m) => m,
                Err(e) => {
                    outcome.error = Some(e.to_string());
                    outcome.duration_s = started.elapsed().as_secs_f64();
                    return (outcome, None);
                }
            };
            for (i, m) in matches.into_iter().enumerate() {
                crate::say!(
                    "match {}: {}",
                    i + 1,
                    crate::mapper::describe_match(&m).join(" | ")
                );
                let fut = async {
                    let eps = pool_endpoints(pool, &m).await?;
                    Ok::<_, String>(run_on_endpoints(spec, eps, m.clone(), ("pool", None)).await)
                };
                tokio::select! {
                    r = fut => match r {
                        Ok((run, raw, tool)) => {
                            outcome.runs.push(run);
                            outcome.tool_time_s += tool;
                            outcome.raw.extend(raw.into_iter().map(|(n, b)| (format!("match{}/{n}", i + 1), b)));
                        }
                        Err(e) => { outcome.error = Some(e); break; }
                    },
                    sig = signal.as_mut() => {
                        outcome.error = Some(format!("interrupted by {sig}"));
                        stopped = Some(sig);
                        break;
                    }
                }
            }
        }
        _ => {
            let secret = hex::encode(rand::random::<[u8; 32]>());
            let Some(mut prov) = make_provisioner(mode, run_id, &secret) else {
                outcome.error = Some("could not create the provisioner".into());
                return (outcome, None);
            };
            let pool_name = match mode {
                Mode::Podman { .. } => "podman",
                Mode::Vm { .. } => "vm",
                _ => "netns",
            };
            let accel = match mode {
                Mode::Vm { opts } => Some(opts.accel.name()),
                _ => None,
            };
            let t0 = Instant::now();
            crate::say!("provisioning {} agent(s) ({pool_name})", reqs.hosts.len());
            {
                let fut = async {
                    // Both provisioners give every agent the run's fresh secret and put it on
                    // its endpoint: the controller then requires each agent to prove it.
                    let eps = prov.provision(&reqs).await.map_err(|e| e.to_string())?;
                    crate::say!("agents ready in {:.2} s", t0.elapsed().as_secs_f64());
                    let m = match_from_endpoints(&reqs, &eps, pool_name);
                    Ok::<_, String>(run_on_endpoints(spec, eps, m, (pool_name, accel)).await)
                };
                tokio::select! {
                    r = fut => match r {
                        Ok((run, raw, tool)) => {
                            outcome.runs.push(run);
                            outcome.raw = raw;
                            outcome.tool_time_s = tool;
                        }
                        Err(e) => outcome.error = Some(e),
                    },
                    sig = signal.as_mut() => {
                        outcome.error = Some(format!("interrupted by {sig}"));
                        stopped = Some(sig);
                    }
                }
            }
            crate::say!("tearing down the {pool_name} agents");
            if let Err(e) = prov.teardown().await {
                tracing::error!("{e}");
                let msg = format!("teardown: {e}");
                outcome.error = Some(match outcome.error.take() {
                    Some(prev) => format!("{prev}; {msg}"),
                    None => msg,
                });
            }
        }
    }
    outcome.duration_s = started.elapsed().as_secs_f64();
    (outcome, stopped)
}

fn match_from_endpoints(
    reqs: &Requirements,
    eps: &[AgentEndpoint],
    pool: &str,
) -> MatchDescription {
    let mut m = MatchDescription {
        pool_name: pool.to_string(),
        ..MatchDescription::default()
    };
    for label in reqs.labels() {
        m.networks.insert(label.clone(), label);
    }
    for ep in eps {
        m.machines.insert(
            ep.host_id.clone(),
            MachineMatch {
                target: ep.target.clone(),
                hostname: ep.hostname.clone(),
                interfaces: ep
                    .interfaces
                    .iter()
                    .map(|(id, b)| {
                        (
                            id.clone(),
                            InterfaceMatch {
                                target: b.target.clone(),
                                hwaddr: b.hwaddr.clone(),
                            },
                        )
                    })
                    .collect(),
            },
        );
    }
    m
}

/// Connect to the pool machines of a match over TCP (bounded by a timeout).
async fn pool_endpoints(pool: &Pool, m: &MatchDescription) -> Result<Vec<AgentEndpoint>, String> {
    let mut eps = Vec::new();
    for (host_id, mm) in &m.machines {
        let machine = pool
            .machines
            .get(&mm.target)
            .ok_or_else(|| format!("pool machine {} vanished", mm.target))?;
        let port = machine.rpc_port().map_err(|e| e.to_string())?;
        let hostname = machine.hostname().to_string();
        let addr = format!("{hostname}:{port}");
        let addr = if hostname.contains(':') && !hostname.starts_with('[') {
            format!("[{hostname}]:{port}")
        } else {
            addr
        };
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| {
            format!(
                "pool machine {} ({addr}) did not answer within 5 s",
                mm.target
            )
        })?
        .map_err(|e| format!("pool machine {} ({addr}) is not reachable: {e}", mm.target))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        // Normalised exactly as the agent normalises its own copy (surrounding whitespace
        // stripped), so that `echo secret > file` on either side matches.
        let raw = match &machine.security {
            Security::None => None,
            Security::Password { secret } => Some((secret.clone(), "<auth_password>".to_string())),
            Security::PasswordFile { path } => Some((
                std::fs::read(path).map_err(|e| {
                    format!(
                        "pool machine {}: secret file {}: {e}",
                        mm.target,
                        path.display()
                    )
                })?,
                format!("secret file {}", path.display()),
            )),
        };
        let secret = match raw {
            None => None,
            Some((bytes, what)) => Some(
                crate::protocol::normalize_secret(&bytes)
                    .ok_or_else(|| format!("pool machine {}: {what} is empty", mm.target))?,
            ),
        };
        eps.push(AgentEndpoint {
            host_id: host_id.clone(),
            target: mm.target.clone(),
            hostname: hostname.clone(),
            transport: Transport {
                reader: Box::new(r),
                writer: Box::new(w),
            },
            secret,
            interfaces: mm
                .interfaces
                .iter()
                .map(|(id, i)| {
                    (
                        id.clone(),
                        IfaceBinding {
                            ifname: None,
                            hwaddr: i.hwaddr.to_ascii_lowercase(),
                            target: i.target.clone(),
                        },
                    )
                })
                .collect(),
        });
    }
    Ok(eps)
}

/// Connect to every agent, bind interfaces by MAC, run the recipe, restore the agents.
async fn run_on_endpoints(
    spec: &TestSpec,
    eps: Vec<AgentEndpoint>,
    matched: MatchDescription,
    // Agent source and (VMs) accelerator, recorded with each agent's identity.
    source: (&str, Option<&str>),
) -> (RecipeRun, Vec<(String, Vec<u8>)>, f64) {
    let mut run = RecipeRun::new(&spec.recipe, matched);
    // Every agent at once: handshakes and interface listings run concurrently.
    let connected = futures::future::join_all(eps.into_iter().map(connect_host)).await;
    let mut hosts = BTreeMap::new();
    let mut first_error = None;
    for c in connected {
        match c {
            Ok(h) => {
                hosts.insert(h.id.clone(), h);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        run.exception = Some(e);
        for h in hosts.values() {
            let _ = h.client.bye().await;
        }
        return (run, Vec::new(), 0.0);
    }
    record_agents(&mut run, &hosts, source);
    let mut ctx = RunContext::new(hosts, run);
    if let Some(path) = std::env::var_os("LNST_BASELINE_FILE") {
        match crate::measure::evaluate::BaselineFile::load(Path::new(&path)) {
            Ok(b) => ctx.baseline = Some(b),
            Err(e) => ctx.run.exception = Some(format!("baseline file: {e}")),
        }
    }
    if ctx.run.exception.is_none() {
        let res = crate::recipes::run_recipe(&spec.recipe, &mut ctx, &spec.params).await;
        if let Err(e) = res {
            let msg = match &e {
                RecipeError::Agent(se) => format!("agent failure: {se}"),
                other => other.to_string(),
            };
            tracing::error!("Recipe execution terminated by unexpected exception: {msg}");
            ctx.run.exception = Some(msg);
        }
    }
    // Framework cleanup: restore device state and system config on every agent.
    for h in ctx.hosts.values() {
        if let Err(e) = h.client.end_recipe().await {
            tracing::warn!("{}: restoring agent state failed: {e}", h.id);
        }
        let _ = h.client.bye().await;
    }
    (ctx.run, ctx.raw, ctx.tool_time_s)
}

/// Every agent's identity (kernel release above all: VM agents run the kernel under test) in the
/// run: `run.agents` (summary.json) and one result per agent (run data, result summary log).
fn record_agents(
    run: &mut RecipeRun,
    hosts: &BTreeMap<String, HostHandle>,
    (source, accel): (&str, Option<&str>),
) {
    use crate::results::{AgentInfo, ResultEntry, ResultLevel, ResultType};
    for (id, h) in hosts {
        let hello = h.client.hello();
        let info = AgentInfo {
            kernel_release: hello.kernel_release.clone(),
            agent_version: hello.agent_version.clone(),
            hostname: hello.hostname.clone(),
            source: source.to_string(),
            accelerator: accel.map(str::to_string),
        };
        let mut what = format!(
            "Agent {id}: kernel {}, lnst-agent {}, {} agent",
            info.kernel_release, info.agent_version, info.source
        );
        if let Some(a) = &info.accelerator {
            what.push_str(&format!(" (accelerator {a})"));
        }
        let data = serde_json::to_value(&info).unwrap_or_default();
        run.add(
            ResultEntry::generic(ResultType::Pass, what)
                .with_level(ResultLevel::Normal)
                .with_data(data),
        );
        run.agents.insert(id.clone(), info);
    }
}

async fn connect_host(ep: AgentEndpoint) -> Result<HostHandle, String> {
    let host = ep.host_id.clone();
    let client = AgentClient::connect(
        &host,
        ep.transport,
        ep.secret.as_deref(),
        ClientOptions::default(),
    )
    .await
    .map_err(|e| format!("connecting to the agent of {host} ({}): {e}", ep.hostname))?;
    let ifaces = client
        .list_interfaces()
        .await
        .map_err(|e| format!("{host}: listing interfaces failed: {e}"))?;
    let mut map = BTreeMap::new();
    for (req_id, b) in &ep.interfaces {
        let found = ifaces
            .iter()
            .find(|i| i.mac.eq_ignore_ascii_case(&b.hwaddr))
            .ok_or_else(|| {
                format!(
                    "Device not found on {host} when searching by hwaddr {} (requirement {host}.{req_id})",
                    b.hwaddr
                )
            })?;
        map.insert(req_id.clone(), found.name.clone());
    }
    let names: Vec<String> = map.values().cloned().collect();
    client
        .start_recipe(&names)
        .await
        .map_err(|e| format!("{host}: start_recipe failed: {e}"))?;
    Ok(HostHandle {
        id: host,
        client,
        ifaces: map,
    })
}

/// Podman's rootful API socket, when one exists at the default path.
fn default_podman_socket() -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let path = "/run/podman/podman.sock";
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|_| format!("unix://{path}"))
}

/// `lnst-runner cleanup`: remove what killed runs left behind.
pub async fn cleanup(config: &Config) -> i32 {
    let mut removed = Vec::new();
    let mut failed = false;
    // VM source first: its QEMU processes hold taps in switch namespaces the netns cleanup
    // would otherwise delete under them.
    match crate::provision::vm::cleanup_leftovers() {
        Ok(r) => removed.extend(r),
        Err(e) => {
            crate::say!("lnst-runner: cleanup: {e}");
            failed = true;
        }
    }
    match crate::provision::netns::cleanup_leftovers() {
        Ok(r) => removed.extend(r),
        Err(e) => {
            crate::say!("lnst-runner: cleanup: {e}");
            failed = true;
        }
    }
    // Without PODMAN_URI, the rootful default socket is looked at too when it exists: a killed
    // Podman run's leftovers should not need the URI repeated. An engine that does not answer
    // there is only reported.
    let (uri, explicit) = match &config.podman_uri {
        Some(uri) => (Some(uri.to_uri()), true),
        None => (default_podman_socket(), false),
    };
    if let Some(uri) = uri {
        match crate::provision::podman::cleanup_leftovers(&uri).await {
            Ok(r) => removed.extend(r),
            Err(e) if explicit => {
                crate::say!("lnst-runner: cleanup: {e}");
                failed = true;
            }
            Err(e) => crate::say!("lnst-runner: cleanup: skipped the engine at {uri}: {e}"),
        }
    }
    if removed.is_empty() {
        crate::out!("nothing to clean up\n");
    } else {
        for r in &removed {
            crate::out!("removed {r}\n");
        }
    }
    i32::from(failed)
}
