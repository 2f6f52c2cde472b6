//! What the recipe-logic tests share: a registered recipe planned from `RECIPE_PARAMS` text,
//! the scripted agents' device layouts, and a run on them.

use super::find;
use crate::params::parse_params;
use crate::plan::TestSpec;
use crate::results::{ResultKind, ResultType};
use crate::schema::resolve;
use crate::scripted::{run_test, Script, ScriptedRun};

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
