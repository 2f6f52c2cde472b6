//! Recipe logic against scripted in-memory agents (no root): phases, evaluators and the
//! order of the deconfiguration, also after a failure.

use super::common::config::{Configured, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::BaremetalEnrtParams;
use super::enrt::{self, EnrtRecipe, PingEndpoints};
use super::test_support::*;
use super::Recipe;
use crate::plan::TestSpec;
use crate::protocol::{JobSpec, Op};
use crate::requirements::Requirements;
use crate::results::{ResultKind, ResultType};
use crate::schema::resolve;
use crate::scripted::{Script, ScriptedRun};

fn run(recipe: &str, params: &str, script: Script) -> ScriptedRun {
    run_on(recipe, params, script, TWO)
}

/// Descriptions of the generic (evaluation and description) results.
/// The agent identity lines the runner records before the recipe starts (one per host).
fn is_agent_line(e: &crate::results::ResultEntry) -> bool {
    e.description.starts_with("Agent host")
}

fn texts(r: &ScriptedRun) -> Vec<(ResultType, String)> {
    r.run
        .results
        .iter()
        .filter(|e| matches!(e.kind, ResultKind::Generic) && !is_agent_line(e))
        .map(|e| (e.result, e.description.clone()))
        .collect()
}

/// The requests of one host, without the bookkeeping ones, as `Op` names.
fn ops_of(r: &ScriptedRun, host: &str) -> Vec<String> {
    r.journal
        .ops()
        .into_iter()
        .filter_map(|o| o.strip_prefix(&format!("{host}:")).map(str::to_string))
        .collect()
}

const SNR_SMALL: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];ip_versions=('ipv4',);offload_combinations=[{'gro':'off','gso':'on'}];mtu=1400;ping_count=4;net_ipv4='198.18.50.0/24';net_ipv6='fd00:50::/64'";

#[test]
fn simple_network_phases_and_deconfiguration_order() {
    let r = run("SimpleNetworkRecipe", SNR_SMALL, Script::default());
    assert_eq!(r.run.exception, None);
    assert_eq!(r.run.overall_result(), ResultType::Pass);
    assert_eq!(
        ops_of(&r, "host1"),
        [
            "StartRecipe",
            // test-wide configuration: two addresses, up, no tentative address left
            "AddAddress",
            "AddAddress",
            "SetLink",
            "WaitDad",
            // sub-configuration: offloads (saved, set), MTU (saved by a listing, set)
            "GetOffloads",
            "SetOffloads",
            "SetMtu",
            // ping, then CPU sampler, iperf3 client (host2 runs the server)
            "StartJob",
            "StartJob",
            "StartJob",
            // removal in reverse: MTU first, then offloads
            "SetMtu",
            "SetOffloads",
            "EndRecipe",
            "Bye",
        ]
    );
    // Inside one sub-configuration mixin, the devices are restored in list order.
    let all = r.journal.ops();
    let pos = |needle: &str, nth: usize| {
        all.iter()
            .enumerate()
            .filter(|(_, o)| *o == needle)
            .map(|(i, _)| i)
            .nth(nth)
            .unwrap_or_else(|| panic!("{needle} #{nth} missing in {all:?}"))
    };
    assert!(pos("host1:SetMtu", 1) < pos("host2:SetMtu", 1));
    assert!(pos("host2:SetMtu", 1) < pos("host1:SetOffloads", 1));
    assert!(pos("host1:SetOffloads", 1) < pos("host2:SetOffloads", 1));
    let jobs = r.journal.jobs();
    assert!(jobs
        .iter()
        .any(|(h, j)| h == "host1" && matches!(j, JobSpec::Ping { count: 4, .. })));
    // The offload restore is recorded, the sctp flows were not asked for.
    let t = texts(&r);
    assert!(t
        .iter()
        .any(|(ok, s)| *ok == ResultType::Pass && s.contains("measured rate 100")));
    assert!(t
        .iter()
        .any(|(_, s)| s.starts_with("Nonzero evaluation of flow")));
}

#[test]
fn deconfiguration_runs_after_a_failure() {
    // The ping cannot start on host1: the run ends with the agent's error, and the
    // sub-configuration is still removed (MTU, then offloads) before the recipe ends.
    let r = run(
        "SimpleNetworkRecipe",
        SNR_SMALL,
        Script::default().failing("host1", "StartJob"),
    );
    let exc = r.run.exception.clone().unwrap_or_default();
    assert!(exc.contains("scripted failure of StartJob"), "{exc}");
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let ops = ops_of(&r, "host1");
    let tail: Vec<&str> = ops.iter().rev().take(5).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["StartJob", "SetMtu", "SetOffloads", "EndRecipe", "Bye"]
    );
    assert_eq!(
        ops_of(&r, "host2").iter().rev().nth(2).map(String::as_str),
        Some("SetOffloads")
    );
}

#[test]
fn a_failing_configuration_step_stops_the_run_and_is_recorded() {
    let r = run(
        "SimpleNetworkRecipe",
        SNR_SMALL,
        Script::default().failing("host2", "AddAddress"),
    );
    assert!(r.run.exception.is_some());
    let failed: Vec<_> = r
        .run
        .results
        .iter()
        .filter(|e| e.result == ResultType::Fail)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0].description,
        "Calling Device method host2.eth0.ip_add('198.18.50.2/24')"
    );
    // Nothing after the failed step ran.
    assert!(!ops_of(&r, "host1").iter().any(|o| o == "StartJob"));
}

#[test]
fn simulation_runs_no_flows() {
    let r = run(
        "SimpleNetworkRecipe",
        &format!("{SNR_SMALL};perf_test_simulation=True"),
        Script::default(),
    );
    assert!(!r
        .journal
        .jobs()
        .iter()
        .any(|(_, j)| matches!(j, JobSpec::IperfClient { .. } | JobSpec::CpuStat { .. })));
    // Zero-valued flows fail the non-zero evaluator, like upstream's simulation.
    assert!(texts(&r)
        .iter()
        .any(|(ok, s)| *ok == ResultType::Fail && s.contains("reported zero throughput")));
}

const PF: &str = "src_addr='198.18.60.1/24';dst_addr='198.18.60.2/24';count=8;interval=0.1";

#[test]
fn ping_flood_passes_with_its_parameters() {
    let r = run(
        "PingFloodRecipe",
        &format!("{PF};size=1400;mtu=9000"),
        Script::default(),
    );
    assert_eq!(r.run.exception, None);
    assert_eq!(r.run.overall_result(), ResultType::Pass);
    assert_eq!(
        ops_of(&r, "host1"),
        [
            "StartRecipe",
            "AddAddress",
            "SetMtu",
            "SetLink",
            "StartJob",
            "EndRecipe",
            "Bye"
        ]
    );
    let jobs = r.journal.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(matches!(
        &jobs[0],
        (h, JobSpec::Ping { dst, src: Some(src), count: 8, size: Some(1400), ipv6: false, .. })
            if h == "host1" && dst == "198.18.60.2" && src == "198.18.60.1"
    ));
    assert_eq!(r.run.results.iter().filter(|e| is_agent_line(e)).count(), 2);
    let methods: Vec<&str> = r
        .run
        .results
        .iter()
        .filter(|e| !is_agent_line(e))
        .map(|e| e.description.as_str())
        .take(6)
        .collect();
    assert_eq!(
        methods,
        [
            "Calling Device method host1.eth0.ip_add('198.18.60.1/24')",
            "Calling Device method host2.eth0.ip_add('198.18.60.2/24')",
            "Setting Device attribute host1.eth0.mtu = 9000, previous value = 1500",
            "Setting Device attribute host2.eth0.mtu = 9000, previous value = 1500",
            "Calling Device method host1.eth0.up()",
            "Calling Device method host2.eth0.up()",
        ]
    );
    assert_eq!(
        texts(&r),
        [(
            ResultType::Pass,
            "measured rate 100 is more than min_rate(50)".to_string()
        )]
    );
}

#[test]
fn ping_flood_evaluator_fails_below_half() {
    let r = run(
        "PingFloodRecipe",
        PF,
        Script::default().ping_received_to("198.18.60.2", 25),
    );
    assert_eq!(r.run.exception, None);
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert_eq!(
        texts(&r),
        [(
            ResultType::Fail,
            "measured rate 25 is lower than min_rate(50)".to_string()
        )]
    );
    // Exactly half is enough.
    let r = run(
        "PingFloodRecipe",
        PF,
        Script::default().ping_received_to("198.18.60.2", 50),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass);
}

crate::param_set! {
    /// A recipe whose two NICs must not reach each other (VLAN recipes' isolation pings).
    struct IsolationRecipe {
        group base: BaremetalEnrtParams,
    }
}

impl Recipe for IsolationRecipe {
    const NAME: &'static str = "IsolationRecipe";
    const DOC: &'static str = "test only";
    fn requirements(&self) -> Requirements {
        super::reqs::two_hosts_one_nic(&Default::default()).0
    }
    fn layout() -> Requirements {
        super::reqs::two_hosts_one_nic(&Default::default()).0
    }
    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for IsolationRecipe {
    fn base(&self) -> super::enrt::params::EnrtBase<'_> {
        self.base.view()
    }
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        for (dev, a) in [("host1", "198.18.70.1/24"), ("host2", "198.18.71.2/24")] {
            let d = Dev::new(dev, "eth0");
            tw.address(&d, a.parse().map_err(RecipeError::Param)?)
                .up(&d);
        }
        Ok(tw)
    }
    fn ping_endpoints(&self, _c: &Configured) -> Vec<PingEndpoints> {
        vec![PingEndpoints::unreachable(
            &Dev::new("host1", "eth0"),
            &Dev::new("host2", "eth0"),
        )]
    }
}

fn run_isolation(script: Script) -> ScriptedRun {
    use super::typed::ParamSet;
    let params = resolve("IsolationRecipe", &IsolationRecipe::specs(), vec![])
        .unwrap_or_else(|e| panic!("{e}"));
    let planned = super::Planned(std::sync::Arc::new(
        IsolationRecipe::from_resolved(&params).unwrap_or_else(|e| panic!("{e}")),
    ));
    let spec = TestSpec {
        id: "t".into(),
        recipe: "IsolationRecipe".into(),
        params,
        planned,
    };
    run_spec(&spec, script, TWO)
}

#[test]
fn unreachable_endpoints_must_not_answer() {
    let r = run_isolation(Script::default().ping_received_to("198.18.71.2", 0));
    assert_eq!(r.run.overall_result(), ResultType::Pass, "{:?}", texts(&r));
    assert!(texts(&r)
        .iter()
        .any(|(ok, s)| *ok == ResultType::Pass && s == "received 0 of 100 packets as expected"));
    // Only IPv4 is pinged between isolated endpoints, and no flows without perf endpoints.
    let jobs = r.journal.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let r = run_isolation(Script::default());
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    assert!(texts(&r).iter().any(|(ok, s)| *ok == ResultType::Fail
        && s == "expected zero packets but 100 of 100 packets were received"));
    assert!(!r
        .journal
        .entries()
        .iter()
        .any(|e| matches!(e.op, Op::WaitDad { .. })));
}

#[test]
fn raw_files_are_unique_per_measurement_and_cpu_data_keeps_every_cpu() {
    let r = run(
        "SimpleNetworkRecipe",
        "perf_iterations=2;perf_duration=1;perf_tests=['tcp_stream','udp_stream'];perf_msg_sizes=[123,1400];ip_versions=('ipv4',);offload_combinations=();ping_count=2;net_ipv4='198.18.51.0/24'",
        Script::default(),
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass);
    let names: Vec<&str> = r.raw.iter().map(|(n, _)| n.as_str()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    // 2 tests × 2 sizes × 2 iterations × 2 hosts CPU samples, each named after its measurement.
    let cpu: Vec<&&str> = names.iter().filter(|n| n.contains("_cpu_")).collect();
    assert_eq!(cpu.len(), 16, "{names:?}");
    assert!(names.contains(&"sub1_udp_stream_ipv4_1400_iter2_cpu_host2.json"));
    assert!(names.contains(&"sub1_udp_stream_ipv4_1400_iter2_flow1_client.json"));
    // The CPU measurement's data has every CPU line the samples had.
    let cpu_data: Vec<Vec<String>> = r
        .run
        .results
        .iter()
        .filter_map(|e| match &e.kind {
            ResultKind::Measurement {
                measurement_type,
                summary,
            } if measurement_type == "cpu" => Some(
                summary
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(cpu_data.len(), 8);
    assert!(
        cpu_data.iter().all(|k| k == &["cpu", "cpu0", "cpu1"]),
        "{cpu_data:?}"
    );
}

#[test]
fn a_raw_name_given_twice_is_not_overwritten() {
    let mut ctx = RunContext::new(Default::default(), crate::results::RecipeRun::default());
    ctx.save_raw("a.json".into(), b"1");
    ctx.save_raw("a.json".into(), b"2");
    ctx.save_raw("a.json".into(), b"3");
    ctx.save_raw("b".into(), b"4");
    ctx.save_raw("b".into(), b"5");
    let names: Vec<&str> = ctx.raw.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.json", "a_2.json", "a_3.json", "b", "b_2"]);
}
