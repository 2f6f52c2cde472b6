//! The runner: for each test of the plan, get agents from the agent source (netns | pool |
//! podman, [`crate::source`]), connect, run the recipe, tear everything down, export the
//! results, and decide the exit code. Teardown runs on success, failure, Ctrl-C and SIGTERM.

use crate::config::Config;
use crate::measure::evaluate::BaselineFile;
use crate::plan::{Plan, TestSpec};
use crate::provision::AgentEndpoint;
use crate::recipes::context::{HostHandle, RecipeError, RunContext, SERVER_SETTLE};
use crate::results::export::{exit_code, stdout_summary, Exporter};
use crate::results::{MatchDescription, RecipeRun, TestOutcome};
use crate::session::{AgentClient, ClientOptions};
use crate::source::{match_from_endpoints, AgentSource};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Exit code for bad input detected before anything ran.
pub const EXIT_BAD_INPUT: i32 = 2;

/// A fresh short run id: 8 hex digits.
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
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
    let mut source = crate::source::from_config(config, &run_id);
    if let Err(e) = source.preflight().await {
        crate::say!("lnst-runner: {}", crate::text::one_line(&e.to_string()));
        return EXIT_BAD_INPUT;
    }
    // The results directory, and the entries an earlier run left there, hold no links.
    let exporter = match Exporter::new(&config.results_dir).and_then(|e| {
        e.check_tests(plan.tests.iter().map(|t| t.id.as_str()))
            .map(|()| e)
    }) {
        Ok(e) => e,
        Err(e) => {
            crate::say!("lnst-runner: {}", crate::text::one_line(&e.to_string()));
            return EXIT_BAD_INPUT;
        }
    };
    // Past the checks: the debug lines held back until now may be shown.
    crate::logging::release_held();
    // An export that failed (a link planted during the run, a full disk) is an error line,
    // and the run does not exit 0.
    let mut export_failed = false;
    tracing::debug!(
        "run {run_id}: {} test(s), agents: {}",
        plan.tests.len(),
        source.name()
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
        let (outcome, sig) =
            run_test(source.as_mut(), spec, config.baseline.as_ref(), &mut signal).await;
        stopped_by = stopped_by.or(sig);
        crate::say!("== test {}: {}", spec.id, outcome.overall_result());
        if let Err(e) = exporter.write_test(&outcome) {
            crate::say!(
                "lnst-runner: results of test {}: {}",
                outcome.id,
                crate::text::one_line(&e.to_string())
            );
            export_failed = true;
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
        crate::say!(
            "lnst-runner: results: {}",
            crate::text::one_line(&e.to_string())
        );
        export_failed = true;
    }
    crate::out!("{}", stdout_summary(&outcomes, &config.formatters));
    let code = exit_code(&outcomes);
    if code == 0 && (stopped_by.is_some() || export_failed) {
        return 1;
    }
    code
}

fn add_error(outcome: &mut TestOutcome, msg: String) {
    outcome.error = Some(match outcome.error.take() {
        Some(prev) => format!("{prev}; {msg}"),
        None => msg,
    });
}

/// Run one test of the plan on every agent set the source gives (one, or every pool match
/// with MULTIMATCH), then tear down; never fails: problems become the outcome's error / run
/// exceptions.
pub async fn run_test(
    source: &mut dyn AgentSource,
    spec: &TestSpec,
    baseline: Option<&BaselineFile>,
    signal: &mut std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
) -> (TestOutcome, Option<&'static str>) {
    let started = Instant::now();
    let mut outcome = TestOutcome {
        id: spec.id.clone(),
        recipe: spec.recipe.clone(),
        params: spec.params.to_json(),
        ..TestOutcome::default()
    };
    let reqs = spec.planned.requirements();
    let mut stopped = None;
    let name = source.name();
    let accel = source.accelerator();
    let matches = tokio::select! {
        m = source.matches(&reqs) => m,
        sig = signal.as_mut() => {
            stopped = Some(sig);
            Ok(Vec::new())
        }
    };
    match matches {
        Err(e) => outcome.error = Some(e.to_string()),
        Ok(matches) => {
            for (i, m) in matches.iter().enumerate() {
                if stopped.is_some() {
                    break;
                }
                if let Some(d) = &m.description {
                    crate::say!(
                        "match {}: {}",
                        i + 1,
                        crate::mapper::describe_match(d).join(" | ")
                    );
                }
                let fut = async {
                    let t0 = Instant::now();
                    let eps = source.endpoints(&reqs, m).await?;
                    let made = t0.elapsed().as_secs_f64();
                    let described = match &m.description {
                        Some(d) => d.clone(),
                        None => match_from_endpoints(&reqs, &eps, name),
                    };
                    Ok::<_, crate::source::SourceError>((
                        made,
                        run_on_endpoints(
                            spec,
                            eps,
                            described,
                            SERVER_SETTLE,
                            baseline,
                            (name, accel),
                        )
                        .await,
                    ))
                };
                tokio::select! {
                    r = fut => match r {
                        Ok((made, (run, raw, timing))) => {
                            outcome.agents_s += made;
                            outcome.runs.push(run);
                            outcome.tool_time_s += timing.tool_s;
                            outcome.phases.add(&timing.phases);
                            outcome.raw.extend(
                                raw.into_iter().map(|(n, b)| (format!("{}{n}", m.raw_dir), b)),
                            );
                        }
                        Err(e) => {
                            outcome.error = Some(e.to_string());
                            break;
                        }
                    },
                    sig = signal.as_mut() => {
                        outcome.error = Some(format!("interrupted by {sig}"));
                        stopped = Some(sig);
                    }
                }
            }
        }
    }
    let t0 = Instant::now();
    if let Err(e) = source.teardown().await {
        tracing::error!("{e}");
        add_error(&mut outcome, format!("teardown: {e}"));
    }
    outcome.agents_s += t0.elapsed().as_secs_f64();
    outcome.duration_s = started.elapsed().as_secs_f64();
    (outcome, stopped)
}

/// Where a run's time went: inside the measurement tools, and the orchestration phases.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTiming {
    pub tool_s: f64,
    pub phases: crate::results::Phases,
}

/// Connect to every agent, bind interfaces by MAC, run the recipe (comparing flows with
/// `baseline`, loaded and checked before the run started), restore the agents.
/// Returns the run, the raw tool output and where the time went. `server_settle` is
/// the pause between iperf3 servers and clients ([`crate::recipes::context::SERVER_SETTLE`]).
pub async fn run_on_endpoints(
    spec: &TestSpec,
    eps: Vec<AgentEndpoint>,
    matched: MatchDescription,
    server_settle: Duration,
    baseline: Option<&BaselineFile>,
    // Agent source and (VMs) accelerator, recorded with each agent's identity.
    source: (&str, Option<&str>),
) -> (RecipeRun, Vec<(String, Vec<u8>)>, RunTiming) {
    let mut run = RecipeRun::new(&spec.recipe, matched);
    let mut timing = RunTiming::default();
    // Every agent at once: handshakes and interface listings run concurrently.
    let t0 = Instant::now();
    let connected = futures::future::join_all(eps.into_iter().map(connect_host)).await;
    timing.phases.connect = t0.elapsed().as_secs_f64();
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
        return (run, Vec::new(), timing);
    }
    record_agents(&mut run, &hosts, source);
    let mut ctx = RunContext::new(hosts, run);
    ctx.server_settle = server_settle;
    ctx.baseline = baseline.cloned();
    if ctx.run.exception.is_none() {
        ctx.params = spec.params.clone();
        let res = spec.planned.run(&mut ctx).await;
        if let Err(e) = res {
            let msg = match &e {
                RecipeError::Agent(se) => format!("agent failure: {se}"),
                other => other.to_string(),
            };
            tracing::error!("Recipe execution terminated by unexpected exception: {msg}");
            ctx.run.exception = Some(msg);
        }
    }
    // Framework cleanup: restore device state and system config on every agent, all at once
    // (each agent restores its own state).
    let t0 = Instant::now();
    futures::future::join_all(ctx.hosts.values().map(|h| async move {
        if let Err(e) = h.client.end_recipe().await {
            tracing::warn!("{}: restoring agent state failed: {e}", h.id);
        }
        let _ = h.client.bye().await;
    }))
    .await;
    timing.phases.end = t0.elapsed().as_secs_f64();
    timing.tool_s = ctx.tool_time_s;
    let ctx_phases = ctx.phases;
    timing.phases.configure = ctx_phases.configure;
    timing.phases.sub_configure = ctx_phases.sub_configure;
    timing.phases.deconfigure = ctx_phases.deconfigure;
    (ctx.run, ctx.raw, timing)
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
    let console = ep.console_log.clone();
    let socket = ep.control_socket;
    let client = AgentClient::connect(
        &host,
        ep.transport,
        ep.secret.as_deref(),
        ClientOptions::default(),
    )
    .await
    .map_err(|e| {
        let mut msg = format!("connecting to the agent of {host} ({}): {e}", ep.hostname);
        if let Some(fd) = &socket {
            msg.push_str(&format!(" ({})", crate::provision::socket_queues(fd)));
        }
        // What the agent's side printed (a VM's console) says why it did not answer.
        if let Some(tail) = console.map(|p| crate::provision::log_tail(&p, 8)) {
            if !tail.is_empty() {
                msg.push_str(&format!("; console: {tail}"));
            }
        }
        msg
    })?;
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

/// `lnst-runner cleanup`: remove what killed runs left behind, for every agent source.
pub async fn cleanup(config: &Config) -> i32 {
    let mut removed = Vec::new();
    let mut failed = false;
    for source in crate::source::all_for_cleanup(config) {
        match source.cleanup().await {
            Ok(r) => removed.extend(r),
            Err(e) => {
                crate::say!("lnst-runner: cleanup: {e}");
                failed = true;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn a_failed_connection_carries_the_agents_console_tail() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("host1.console");
        std::fs::write(
            &console,
            "boot\nlnst-vm-init: reading the control port: EIO\n",
        )
        .unwrap();
        // The agent's side closes at once: no Hello.
        let (ours, theirs) = tokio::io::duplex(64);
        drop(theirs);
        let (r, w) = tokio::io::split(ours);
        let ep = AgentEndpoint {
            host_id: "host1".into(),
            target: "vm".into(),
            hostname: "lnst-x-host1".into(),
            transport: crate::provision::Transport {
                reader: Box::new(r),
                writer: Box::new(w),
            },
            secret: None,
            interfaces: BTreeMap::new(),
            console_log: Some(console),
            control_socket: None,
        };
        let e = connect_host(ep).await.err().unwrap_or_default();
        assert!(
            e.starts_with("connecting to the agent of host1 (lnst-x-host1): ")
                && e.ends_with("; console: boot | lnst-vm-init: reading the control port: EIO"),
            "{e}"
        );
    }
}
