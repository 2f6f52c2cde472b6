//! The result model: what a recipe run records, in upstream LNST's shape
//! (ResultType FAIL/PASS/WARNING, ResultLevel IMPORTANT/NORMAL/DEBUG).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Outcome of one result. Severity order: FAIL > WARNING > PASS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ResultType {
    Fail,
    Pass,
    Warning,
}

impl ResultType {
    /// The more severe of two results (FAIL > WARNING > PASS).
    pub fn max_severity(self, other: ResultType) -> ResultType {
        use ResultType::*;
        match (self, other) {
            (Fail, _) | (_, Fail) => Fail,
            (Warning, _) | (_, Warning) => Warning,
            _ => Pass,
        }
    }
    pub fn from_bool(ok: bool) -> ResultType {
        if ok {
            ResultType::Pass
        } else {
            ResultType::Fail
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::Fail => "FAIL",
            ResultType::Pass => "PASS",
            ResultType::Warning => "WARNING",
        }
    }
}

impl std::fmt::Display for ResultType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Importance of a result (lower is more important), as upstream: IMPORTANT=1, NORMAL=2, DEBUG=3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ResultLevel {
    Important = 1,
    Normal = 2,
    Debug = 3,
}

impl ResultLevel {
    /// One level less important (used for data_level = level + 1), saturating at DEBUG.
    pub fn next(self) -> ResultLevel {
        match self {
            ResultLevel::Important => ResultLevel::Normal,
            _ => ResultLevel::Debug,
        }
    }
}

/// What kind of result this is; decides the `src` column of the human summary and the
/// JSON shape (upstream `RunSummaryFormatters/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResultKind {
    /// Job start (`action = "start"`) or finish (`"end"`). `command` is the rendered argv.
    Job {
        host: String,
        job_id: u64,
        action: JobAction,
        command: String,
    },
    /// Device configuration (upstream DeviceConfigResult): create / method_call / attr_set.
    DeviceConfig {
        host: String,
        netns: String,
        dev_id: String,
        action: DeviceAction,
    },
    /// A measurement (`ping`, `cpu`, `flow`); `summary` is the JSON formatter's `data` value.
    Measurement {
        measurement_type: String,
        summary: serde_json::Value,
    },
    /// A plain result (upstream `Result`): descriptions, evaluators.
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    Start,
    End,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DeviceAction {
    Create {
        cls_name: String,
        args: Vec<String>,
        kwargs: Vec<String>,
    },
    MethodCall {
        name: String,
        args: Vec<String>,
        kwargs: Vec<String>,
    },
    AttrSet {
        name: String,
        value: String,
        old_value: String,
    },
}

/// One recorded result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEntry {
    pub result: ResultType,
    pub level: ResultLevel,
    pub data_level: ResultLevel,
    pub kind: ResultKind,
    pub description: String,
    /// Structured data dumped under the line by the human formatter when data_level allows.
    pub data: Option<serde_json::Value>,
    /// Unix time, seconds.
    pub timestamp: f64,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ResultEntry {
    /// Upstream `Result(result, description, data)`: level IMPORTANT, data_level NORMAL.
    pub fn generic(result: ResultType, description: impl Into<String>) -> Self {
        ResultEntry {
            result,
            level: ResultLevel::Important,
            data_level: ResultLevel::Normal,
            kind: ResultKind::Generic,
            description: description.into(),
            data: None,
            timestamp: now(),
        }
    }
    /// Upstream `MeasurementResult(type, result, description, data)`.
    pub fn measurement(
        measurement_type: &str,
        result: ResultType,
        description: impl Into<String>,
        summary: serde_json::Value,
        data: Option<serde_json::Value>,
    ) -> Self {
        ResultEntry {
            result,
            level: ResultLevel::Important,
            data_level: ResultLevel::Normal,
            kind: ResultKind::Measurement {
                measurement_type: measurement_type.to_string(),
                summary,
            },
            description: description.into(),
            data,
            timestamp: now(),
        }
    }
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
    pub fn with_level(mut self, level: ResultLevel) -> Self {
        self.level = level;
        self
    }
    pub fn with_data_level(mut self, level: ResultLevel) -> Self {
        self.data_level = level;
        self
    }
    /// Job start/finish (upstream JobStartResult/JobFinishResult): level = job level,
    /// data_level = level + 1; description `Job started: ...` / `Job finished: ...`.
    pub fn job(
        result: ResultType,
        host: &str,
        netns: Option<&str>,
        job_id: u64,
        action: JobAction,
        command: &str,
        level: ResultLevel,
    ) -> Self {
        let verb = match action {
            JobAction::Start => "started",
            JobAction::End => "finished",
        };
        let description = format!(
            "Job {verb}: type(shell), host({host}), netns({}), '{command}'",
            netns.unwrap_or("None")
        );
        ResultEntry {
            result,
            level,
            data_level: level.next(),
            kind: ResultKind::Job {
                host: host.to_string(),
                job_id,
                action,
                command: command.to_string(),
            },
            description,
            data: None,
            timestamp: now(),
        }
    }
    /// Device configuration result: level NORMAL, data_level DEBUG.
    pub fn device(result: ResultType, host: &str, dev_id: &str, action: DeviceAction) -> Self {
        let description = match &action {
            DeviceAction::Create {
                cls_name,
                args,
                kwargs,
            } => format!(
                "Creating Device {host}.{dev_id} = {cls_name}({})",
                args.iter().chain(kwargs.iter()).cloned().collect::<Vec<_>>().join(", ")
            ),
            DeviceAction::MethodCall { name, args, kwargs } => format!(
                "Calling Device method {host}.{dev_id}.{name}({})",
                args.iter().chain(kwargs.iter()).cloned().collect::<Vec<_>>().join(", ")
            ),
            DeviceAction::AttrSet {
                name,
                value,
                old_value,
            } => format!(
                "Setting Device attribute {host}.{dev_id}.{name} = {value}, previous value = {old_value}"
            ),
        };
        ResultEntry {
            result,
            level: ResultLevel::Normal,
            data_level: ResultLevel::Debug,
            kind: ResultKind::DeviceConfig {
                // A device in a namespace the recipe made is `host2.ns.np0`: host2, netns ns.
                host: host.split_once('.').map_or(host, |(h, _)| h).to_string(),
                netns: host
                    .split_once('.')
                    .map(|(_, ns)| ns.to_string())
                    .unwrap_or_default(),
                dev_id: dev_id.to_string(),
                action,
            },
            description,
            data: None,
            timestamp: now(),
        }
    }
}

/// The mapping used by a run (upstream `RecipeRun.match`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchDescription {
    /// requirement host id → (pool machine id, hostname, interfaces: req if id → (target if id, hwaddr))
    pub machines: BTreeMap<String, MachineMatch>,
    /// requirement label → pool label
    pub networks: BTreeMap<String, String>,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    pub pool_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineMatch {
    pub target: String,
    pub hostname: String,
    pub interfaces: BTreeMap<String, InterfaceMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceMatch {
    pub target: String,
    pub hwaddr: String,
}

/// One run of a recipe on one match (upstream `RecipeRun`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipeRun {
    pub recipe: String,
    pub description: Option<String>,
    pub matched: MatchDescription,
    pub results: Vec<ResultEntry>,
    /// Set when the run was terminated by an error (upstream `run.exception`).
    pub exception: Option<String>,
    /// Unix time the run started.
    pub started: f64,
    /// The agents of the run by requirement host id, as they described themselves.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentInfo>,
}

/// One agent of a run: where it ran and on which kernel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// `uname -r` of the agent's machine (for a VM agent, the kernel under test).
    pub kernel_release: String,
    pub agent_version: String,
    pub hostname: String,
    /// Agent source: netns, pool, podman or vm.
    pub source: String,
    /// VM agents: the QEMU accelerator (kvm or tcg).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
}

impl RecipeRun {
    pub fn new(recipe: &str, matched: MatchDescription) -> Self {
        RecipeRun {
            recipe: recipe.to_string(),
            description: None,
            matched,
            results: Vec::new(),
            exception: None,
            started: now(),
            agents: BTreeMap::new(),
        }
    }
    pub fn add(&mut self, r: ResultEntry) {
        tracing::debug!("Result: {}, What: {}", r.result, r.description);
        self.results.push(r);
    }
    /// FAIL if any FAIL or an exception; else WARNING if any WARNING; else PASS
    /// (also PASS for zero results: upstream raises TypeError there, we do not).
    pub fn overall_result(&self) -> ResultType {
        if self.exception.is_some() {
            return ResultType::Fail;
        }
        self.results
            .iter()
            .fold(ResultType::Pass, |acc, r| acc.max_severity(r.result))
    }
}

/// Wall time of a test's orchestration phases in seconds (summary.json `phases_s`): where the
/// time outside the measurement tools and the agents' making goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Handshakes, interface listings and state snapshots of every agent (concurrently).
    pub connect: f64,
    /// The test-wide configuration: devices, addresses, routes, the IPv6 tentative wait.
    pub configure: f64,
    /// Sub-configurations applied and taken back (offloads, NIC and host tunables).
    pub sub_configure: f64,
    /// The test-wide deconfiguration.
    pub deconfigure: f64,
    /// Every agent's state restored and the sessions ended (concurrently).
    pub end: f64,
}

impl Phases {
    pub fn add(&mut self, o: &Phases) {
        self.connect += o.connect;
        self.configure += o.configure;
        self.sub_configure += o.sub_configure;
        self.deconfigure += o.deconfigure;
        self.end += o.end;
    }
}

/// The outcome of one test of the plan (all its runs, one per match).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub id: String,
    pub recipe: String,
    pub params: serde_json::Value,
    pub runs: Vec<RecipeRun>,
    /// An error that prevented any run (provisioning, mapping); the test FAILs with it.
    pub error: Option<String>,
    /// Raw tool output to store under `<test_id>/raw/`: relative file name → contents.
    #[serde(skip)]
    pub raw: Vec<(String, Vec<u8>)>,
    pub duration_s: f64,
    /// Wall time spent inside measurement tools (ping runs, iperf3 iterations): the rest of
    /// `duration_s` is orchestration overhead.
    pub tool_time_s: f64,
    /// Wall time spent making the agents (VM boots, containers, namespaces) and taking them
    /// down again; 0 for pool machines.
    #[serde(default)]
    pub agents_s: f64,
    /// Orchestration phases of every run (see [`Phases`]).
    #[serde(default)]
    pub phases: Phases,
}

impl TestOutcome {
    /// Worst of every run; FAIL when there is an error or no run at all.
    pub fn overall_result(&self) -> ResultType {
        if self.error.is_some() || self.runs.is_empty() {
            return ResultType::Fail;
        }
        self.runs.iter().fold(ResultType::Pass, |acc, r| {
            acc.max_severity(r.overall_result())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order() {
        use ResultType::*;
        assert_eq!(Pass.max_severity(Warning), Warning);
        assert_eq!(Warning.max_severity(Fail), Fail);
        assert_eq!(Pass.max_severity(Pass), Pass);
    }

    #[test]
    fn run_overall() {
        let mut r = RecipeRun::new("X", MatchDescription::default());
        assert_eq!(r.overall_result(), ResultType::Pass);
        r.add(ResultEntry::generic(ResultType::Warning, "w"));
        assert_eq!(r.overall_result(), ResultType::Warning);
        r.exception = Some("boom".into());
        assert_eq!(r.overall_result(), ResultType::Fail);
        let t = TestOutcome::default();
        assert_eq!(t.overall_result(), ResultType::Fail);
    }
}
