//! What the recipe-logic tests share: a registered recipe planned from `RECIPE_PARAMS` text,
//! the scripted agents' device layouts, a run on them, what the agents were asked to do, and
//! the captures' tcpdump lines.

use super::find;
use crate::params::parse_params;
use crate::plan::TestSpec;
use crate::protocol::{LinkSpec, Op};
use crate::results::{ResultKind, ResultType};
use crate::schema::resolve;
use crate::scripted::{run_test, Script, ScriptedRun};

/// Smoke parameters: one 1 s tcp_stream, four pings, no offload sub-configurations.
pub const SMOKE: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];offload_combinations=();ping_count=4;ping_interval=0.2";

/// [`SMOKE`] of the recipes without OffloadSubConfigMixin.
pub const SMOKE_NO_OFFLOADS: &str =
    "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];ping_count=4;ping_interval=0.2";

/// Requirement host → (requirement interface, agent device).
pub type Devices<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];

/// host1.eth0 and host2.eth0.
pub const TWO: Devices = &[
    ("host1", &[("eth0", "veth-a")]),
    ("host2", &[("eth0", "veth-b")]),
];

/// The test of `recipe` with `params`, planned as the runner plans it; the error as a line.
pub fn plan(recipe: &str, params: &str) -> Result<TestSpec, String> {
    let def = find(recipe).map_err(|e| e.to_string())?;
    let given = parse_params(params).map_err(|e| e.to_string())?;
    let params = resolve(def.name, &(def.params)(), given).map_err(|e| e.to_string())?;
    let planned = (def.plan)(&params).map_err(|e| e.to_string())?;
    Ok(TestSpec {
        id: "t".into(),
        recipe: def.name.into(),
        params,
        planned,
    })
}

/// [`plan`] that must succeed.
pub fn spec(recipe: &str, params: &str) -> TestSpec {
    plan(recipe, params).unwrap_or_else(|e| panic!("{e}"))
}

/// Run a future on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .block_on(f)
}

/// Run `spec` against scripted agents with `devices`.
pub fn run_spec(spec: &TestSpec, script: Script, devices: Devices) -> ScriptedRun {
    block_on(run_test(spec, script, devices))
}

/// Plan and run `recipe` against scripted agents with `devices`.
pub fn run_on(recipe: &str, params: &str, script: Script, devices: Devices) -> ScriptedRun {
    run_spec(&spec(recipe, params), script, devices)
}

/// The generic results (descriptions) of a run, with their outcomes.
pub fn generic(r: &ScriptedRun) -> Vec<(ResultType, String)> {
    r.run
        .results
        .iter()
        .filter(|e| matches!(e.kind, ResultKind::Generic))
        .map(|e| (e.result, e.description.clone()))
        .collect()
}

/// The run PASSed; else the generic results say why.
pub fn assert_pass(r: &ScriptedRun) {
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{:?}", generic(r));
}

/// [`run_on`] that must PASS.
pub fn run_passing(recipe: &str, params: &str, script: Script, devices: Devices) -> ScriptedRun {
    let r = run_on(recipe, params, script, devices);
    assert_pass(&r);
    r
}

/// The packet asserts' results of a run.
pub fn packet_asserts(r: &ScriptedRun) -> Vec<(ResultType, String)> {
    generic(r)
        .into_iter()
        .filter(|(_, t)| t.starts_with("PacketAssert"))
        .collect()
}

/// The agent operations of every host that `f` picks (given the host), in order.
pub fn host_ops<T>(r: &ScriptedRun, f: impl Fn(String, Op) -> Option<T>) -> Vec<T> {
    r.journal
        .entries()
        .into_iter()
        .filter_map(|e| f(e.host, e.op))
        .collect()
}

/// The agent operations of `host` that `f` picks, in order.
pub fn ops<T>(r: &ScriptedRun, host: &str, f: impl Fn(Op) -> Option<T>) -> Vec<T> {
    host_ops(r, |h, op| if h == host { f(op) } else { None })
}

/// The links created on `host` (in the root namespace), by name.
pub fn created(r: &ScriptedRun, host: &str) -> Vec<(String, LinkSpec)> {
    ops(r, host, |op| match op {
        Op::CreateLink { ifname, link, .. } => Some((ifname, link)),
        _ => None,
    })
}

/// The op, out of its namespace wrapper, with the namespace.
pub fn out_of_netns(op: Op) -> (Option<String>, Op) {
    match op {
        Op::InNetns { netns, inner } => (Some(netns), *inner),
        op => (None, op),
    }
}

/// tcpdump's lines for `n` encapsulated echo requests of each inner pair
/// `(src, dst, IPv6?)`, over an IPv4 underlay from `outer.0` to `outer.1`.
pub fn tcpdump_lines(
    outer: (&str, &str),
    encap: &str,
    inner: &[(&str, &str, bool)],
    n: u32,
) -> String {
    let mut out = String::new();
    for (src, dst, v6) in inner {
        for seq in 1..=n {
            let icmp = if *v6 {
                "ICMP6, echo request"
            } else {
                "ICMP echo request"
            };
            out.push_str(&format!(
                "12:00:00.{seq:06} IP {} > {}: {encap}, length 88: IP {src} > {dst}: {icmp}, id 1, seq {seq}, length 64\n",
                outer.0, outer.1
            ));
        }
    }
    out
}
