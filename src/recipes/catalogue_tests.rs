//! Catalogue recipes' logic against scripted in-memory agents: the devices each creates and
//! in which order they come down again, the options they are created with, where jobs run,
//! and evaluators that FAIL. The kernel's part is tested on real agents (tests/e2e_catalogue*).

use super::find;
use super::test_support::*;
use crate::params::parse_params;
use crate::protocol::{BondMode, FailOverMac, JobSpec, LinkSpec, Op};
use crate::results::ResultType;
use crate::schema::resolve;
use crate::scripted::{Script, ScriptedRun};

const BOND_OR_TEAM: Devices = &[
    ("host1", &[("eth0", "veth-a"), ("eth1", "veth-c")]),
    ("host2", &[("eth0", "veth-b")]),
];

const SMOKE: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];offload_combinations=();ping_count=4";

const VLANS: &str = "vlan0_ipv4='198.18.50.0/24';vlan1_ipv4='198.18.51.0/24';vlan2_ipv4='198.18.52.0/24';vlan0_ipv6='fd00:50::/64';vlan1_ipv6='fd00:51::/64';vlan2_ipv6='fd00:52::/64'";

/// The link operations of `host` as `Op(name)`, in order.
fn link_ops(r: &ScriptedRun, host: &str) -> Vec<String> {
    r.journal
        .entries()
        .into_iter()
        .filter(|e| e.host == host)
        .filter_map(|e| {
            let (_, op) = out_of_netns(e.op);
            match op {
                Op::CreateLink { ifname, .. } => Some(format!("CreateLink({ifname})")),
                Op::DeleteLink { ifname } => Some(format!("DeleteLink({ifname})")),
                Op::Enslave { ifname, master, .. } => Some(format!("Enslave({ifname}, {master})")),
                Op::Release { ifname } => Some(format!("Release({ifname})")),
                Op::CreateNetns { name } => Some(format!("CreateNetns({name})")),
                Op::DeleteNetns { name } => Some(format!("DeleteNetns({name})")),
                Op::MoveLink { ifname, netns } => {
                    Some(format!("MoveLink({ifname}, {})", netns.unwrap_or_default()))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn vlans_are_created_on_the_nic_and_deleted_in_reverse() {
    let r = run_passing(
        "VlansRecipe",
        &format!("{SMOKE};{VLANS}"),
        Script::default(),
        TWO,
    );
    assert_eq!(
        link_ops(&r, "host2"),
        [
            "CreateLink(t_vlan0)",
            "CreateLink(t_vlan1)",
            "CreateLink(t_vlan2)",
            "DeleteLink(t_vlan2)",
            "DeleteLink(t_vlan1)",
            "DeleteLink(t_vlan0)",
        ]
    );
    let ids: Vec<u16> = ops(&r, "host1", |op| match op {
        Op::CreateLink {
            link: LinkSpec::Vlan { parent, id, .. },
            ..
        } => {
            assert_eq!(parent, "veth-a");
            Some(id)
        }
        _ => None,
    });
    assert_eq!(ids, [10, 20, 30]);
    // Three VLANs × two IP versions of pings, flows over vlan0 only.
    let pings = r
        .journal
        .jobs()
        .into_iter()
        .filter(|(_, j)| matches!(j, JobSpec::Ping { .. }))
        .count();
    assert_eq!(pings, 6);
}

#[test]
fn vlans_rate_evaluator_fails_when_one_vlan_loses_pings() {
    let r = run_on(
        "VlansRecipe",
        &format!("{SMOKE};{VLANS}"),
        Script::default().ping_received_to("198.18.51.2", 25),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let t = generic(&r);
    assert!(
        t.iter()
            .any(|(ok, s)| *ok == ResultType::Fail && s.contains("measured rate 25")),
        "{t:?}"
    );
    // The other VLANs still passed, and everything came down.
    assert!(link_ops(&r, "host1").ends_with(&[
        "DeleteLink(t_vlan2)".to_string(),
        "DeleteLink(t_vlan1)".to_string(),
        "DeleteLink(t_vlan0)".to_string(),
    ]));
}

#[test]
fn a_device_that_cannot_be_created_fails_the_test_and_the_others_come_down() {
    let r = run_on(
        "VlansRecipe",
        &format!("{SMOKE};{VLANS}"),
        Script::default().failing("host2", "CreateLink"),
        TWO,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let exc = r.run.exception.clone().unwrap_or_default();
    assert!(
        exc.contains("host2: creating host2.vlan0") && exc.contains("scripted failure"),
        "{exc}"
    );
    assert_eq!(
        link_ops(&r, "host1"),
        [
            "CreateLink(t_vlan0)",
            "CreateLink(t_vlan1)",
            "CreateLink(t_vlan2)",
            "DeleteLink(t_vlan2)",
            "DeleteLink(t_vlan1)",
            "DeleteLink(t_vlan0)",
        ]
    );
    // No ping ran.
    assert!(r.journal.jobs().is_empty());
}

fn bond_link(r: &ScriptedRun) -> Option<crate::protocol::BondOptions> {
    r.journal.entries().into_iter().find_map(|e| match e.op {
        Op::CreateLink {
            link: LinkSpec::Bond(o),
            ..
        } => Some(*o),
        _ => None,
    })
}

#[test]
fn bond_options_follow_the_parameters() {
    const NET: &str = "net_ipv4='198.18.53.0/24';net_ipv6='fd00:53::/64'";
    // Upstream's StrParam makes 1 the string "1", which its agent refuses; here it is
    // active-backup, and fail_over_mac applies.
    let r = run_passing(
        "BondRecipe",
        &format!("{SMOKE};{NET};bonding_mode='1';miimon_value=100;fail_over_mac='active'"),
        Script::default(),
        BOND_OR_TEAM,
    );
    let o = bond_link(&r).unwrap_or_default();
    assert_eq!(o.mode, Some(BondMode::ActiveBackup));
    assert_eq!(o.miimon, Some(100));
    assert_eq!(o.fail_over_mac, Some(FailOverMac::Active));
    assert_eq!(
        link_ops(&r, "host1"),
        [
            "CreateLink(t_bond0)",
            "Enslave(veth-a, t_bond0)",
            "Enslave(veth-c, t_bond0)",
            "Release(veth-c)",
            "Release(veth-a)",
            "DeleteLink(t_bond0)",
        ]
    );
    // Other modes leave fail_over_mac alone.
    let r = run_on(
        "BondRecipe",
        &format!("{SMOKE};{NET};bonding_mode='balance-rr';miimon_value=50;fail_over_mac='active'"),
        Script::default(),
        BOND_OR_TEAM,
    );
    let o = bond_link(&r).unwrap_or_default();
    assert_eq!(o.mode, Some(BondMode::BalanceRr));
    assert_eq!(o.fail_over_mac, None);
}

#[test]
fn bad_bonding_mode_and_runner_are_plan_errors() {
    for (recipe, params, want) in [
        (
            "BondRecipe",
            "bonding_mode='fast';miimon_value=1",
            "not a bonding mode",
        ),
        ("BondRecipe", "bonding_mode='1'", "miimon_value"),
        ("TeamRecipe", "runner_name='fastest'", "not a teamd runner"),
    ] {
        let def = find(recipe).unwrap_or_else(|e| panic!("{e}"));
        let given = parse_params(params).unwrap_or_else(|e| panic!("{e}"));
        let err = resolve(def.name, &(def.params)(), given)
            .map_err(|e| e.to_string())
            .and_then(|p| (def.plan)(&p).map(|_| ()).map_err(|e| e.to_string()))
            .err()
            .unwrap_or_default();
        assert!(err.contains(want), "{recipe} {params}: {err}");
    }
}

#[test]
fn team_pings_both_ways_and_perf_reverse_swaps_the_flow() {
    const P: &str = "runner_name='activebackup';perf_reverse=True;net_ipv4='198.18.54.0/24';net_ipv6='fd00:54::/64'";
    let r = run_passing(
        "TeamRecipe",
        &format!("{SMOKE};{P}"),
        Script::default(),
        BOND_OR_TEAM,
    );
    let jobs = r.journal.jobs();
    let pings_from = |h: &str| {
        jobs.iter()
            .filter(|(host, j)| host == h && matches!(j, JobSpec::Ping { .. }))
            .count()
    };
    assert_eq!((pings_from("host1"), pings_from("host2")), (2, 2));
    // perf_reverse: host2 runs the iperf3 clients.
    let clients: Vec<&String> = jobs
        .iter()
        .filter(|(_, j)| matches!(j, JobSpec::IperfClient { .. }))
        .map(|(h, _)| h)
        .collect();
    assert!(
        !clients.is_empty() && clients.iter().all(|h| *h == "host2"),
        "{clients:?}"
    );
}

#[test]
fn netns_router_runs_the_receiver_in_the_namespace_and_measures_cpu_on_host2() {
    const P: &str = "net_ipv4='198.18.55.0/24';net_ipv6='fd00:55::/64';netns_ipv4='198.18.56.0/24';netns_ipv6='fd00:56::/64'";
    let r = run_passing(
        "SimpleNetnsRouterRecipe",
        &format!("{SMOKE};{P}"),
        Script::default(),
        TWO,
    );
    assert_eq!(
        link_ops(&r, "host2"),
        [
            "CreateNetns(host2ns)",
            "CreateLink(t_pn0)",
            "MoveLink(t_np0, host2ns)",
            "DeleteLink(t_pn0)",
            "DeleteNetns(host2ns)",
        ]
    );
    let mut server_in_ns = 0;
    let mut cpu_in_ns = 0;
    for e in r
        .journal
        .entries()
        .into_iter()
        .filter(|e| e.host == "host2")
    {
        if let Op::InNetns { netns, inner } = &e.op {
            assert_eq!(netns, "host2ns");
            if let Op::StartJob { spec } = &**inner {
                match spec {
                    JobSpec::IperfServer { .. } => server_in_ns += 1,
                    JobSpec::CpuStat { .. } => cpu_in_ns += 1,
                    _ => {}
                }
            }
        }
    }
    assert_eq!((server_in_ns, cpu_in_ns), (2, 0));
    // The forwarding sysctls are written back to what they were, not to 0.
    let writes: Vec<(String, String)> = ops(&r, "host2", |op| match op {
        Op::SysctlWrite { path, value } if path.contains("forward") => Some((path, value)),
        _ => None,
    });
    assert_eq!(writes.len(), 4, "{writes:?}");
    assert_eq!(writes[0].1, "1");
    assert_eq!(writes[3].1, "0", "the scripted agent's old value");
}

/// The descriptions of the device configuration results, in recorded order.
fn device_calls(r: &ScriptedRun) -> Vec<String> {
    r.run
        .results
        .iter()
        .filter(|e| e.description.starts_with("Calling Device method"))
        .map(|e| {
            e.description
                .trim_start_matches("Calling Device method ")
                .to_string()
        })
        .collect()
}

#[test]
fn agents_configured_concurrently_record_their_steps_in_the_recipes_order() {
    // BondRecipe interleaves the hosts: host1's bond and addresses, host2's addresses, then
    // host1's and host2's links up. The agents work concurrently; the results read as if
    // one step followed the other.
    const NET: &str = "net_ipv4='198.18.53.0/24';net_ipv6='fd00:53::/64'";
    let r = run_on(
        "BondRecipe",
        &format!("{SMOKE};{NET};bonding_mode='active-backup';miimon_value=100"),
        Script::default(),
        BOND_OR_TEAM,
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass);
    let calls = device_calls(&r);
    let at = |want: &str| {
        calls
            .iter()
            .position(|c| c == want)
            .unwrap_or_else(|| panic!("{want} not in {calls:?}"))
    };
    assert!(at("host1.bond0.slave_add(eth0)") < at("host1.bond0.ip_add('198.18.53.1/24')"));
    assert!(at("host1.bond0.ip_add('fd00:53::1/64')") < at("host2.eth0.ip_add('198.18.53.2/24')"));
    assert!(at("host2.eth0.ip_add('fd00:53::2/64')") < at("host1.eth0.up()"));
    assert!(at("host1.bond0.up()") < at("host2.eth0.up()"));
    assert!(
        calls.ends_with(&[
            "host1.eth1.master_release()".to_string(),
            "host1.eth0.master_release()".to_string(),
            "host1.bond0.destroy()".to_string(),
        ]),
        "{calls:?}"
    );
    // The configuration comes down host2 first, in exact reverse of the steps.
    assert_eq!(
        link_ops(&r, "host1"),
        [
            "CreateLink(t_bond0)",
            "Enslave(veth-a, t_bond0)",
            "Enslave(veth-c, t_bond0)",
            "Release(veth-c)",
            "Release(veth-a)",
            "DeleteLink(t_bond0)",
        ]
    );
}

#[test]
fn when_two_agents_fail_the_error_is_the_earlier_step_and_both_come_down() {
    // host1's first address (step 5) fails; host2, configured concurrently, gets as far as
    // its first link up (step 9), which fails too. The error is host1's, the earlier step,
    // as one step after the other would have made it.
    const NET: &str = "net_ipv4='198.18.54.0/24';net_ipv6='fd00:54::/64'";
    let r = run_on(
        "BondRecipe",
        &format!("{SMOKE};{NET};bonding_mode='active-backup';miimon_value=100"),
        Script::default()
            .failing("host1", "AddAddress")
            .failing("host2", "SetLink"),
        BOND_OR_TEAM,
    );
    assert_eq!(r.run.overall_result(), ResultType::Fail);
    let exc = r.run.exception.clone().unwrap_or_default();
    assert!(exc.contains("host1") && !exc.contains("host2"), "{exc}");
    // What host2 did meanwhile is recorded, and host1's bond comes down; no traffic ran.
    let calls = device_calls(&r);
    assert!(
        calls.contains(&"host2.eth0.ip_add('198.18.54.2/24')".to_string()),
        "{calls:?}"
    );
    assert_eq!(
        link_ops(&r, "host1").last().map(String::as_str),
        Some("DeleteLink(t_bond0)")
    );
    assert!(r.journal.jobs().is_empty());
}

#[test]
fn both_agents_take_their_configuration_back_concurrently_recorded_in_reverse_step_order() {
    const BOTH_BONDED: Devices = &[
        ("host1", &[("eth0", "veth-a"), ("eth1", "veth-c")]),
        ("host2", &[("eth0", "veth-b"), ("eth1", "veth-d")]),
    ];
    const NET: &str = "net_ipv4='198.18.55.0/24';net_ipv6='fd00:55::/64'";
    let r = run_on(
        "DoubleBondRecipe",
        &format!("{SMOKE};{NET};bonding_mode='active-backup';miimon_value=100"),
        Script::default(),
        BOTH_BONDED,
    );
    assert_eq!(r.run.overall_result(), ResultType::Pass);
    let calls = device_calls(&r);
    let tail: Vec<&str> = calls[calls.len() - 6..]
        .iter()
        .map(String::as_str)
        .collect();
    // host2's bond was made after host1's: it comes down first in the results.
    assert_eq!(
        tail,
        [
            "host2.eth1.master_release()",
            "host2.eth0.master_release()",
            "host2.bond0.destroy()",
            "host1.eth1.master_release()",
            "host1.eth0.master_release()",
            "host1.bond0.destroy()",
        ]
    );
    for host in ["host1", "host2"] {
        assert_eq!(
            link_ops(&r, host).last().map(String::as_str),
            Some("DeleteLink(t_bond0)"),
            "{host}"
        );
    }
}

#[test]
fn requirements_name_the_kernel_modules_each_host_will_need() {
    // VlansOverBond: host1 makes a bond of its NICs and VLANs on it; host2 VLANs on its NIC.
    let s = spec(
        "VlansOverBondRecipe",
        &format!("{SMOKE};{VLANS};bonding_mode='active-backup';miimon_value=5"),
    );
    let m = s.planned.requirements().kernel_modules;
    assert_eq!(m.get("host1"), Some(&vec!["bonding", "8021q"]), "{m:?}");
    assert_eq!(m.get("host2"), Some(&vec!["8021q"]), "{m:?}");
    // A team names its runner's mode; a namespace's veth counts for its host.
    let s = spec("DoubleTeamRecipe", &format!("{SMOKE};runner_name='lacp'"));
    let m = s.planned.requirements().kernel_modules;
    assert_eq!(
        m.get("host1"),
        Some(&vec!["team", "team_mode_loadbalance"]),
        "{m:?}"
    );
    let s = spec("SimpleNetnsRouterRecipe", SMOKE);
    let m = s.planned.requirements().kernel_modules;
    assert!(m.values().any(|v| v.contains(&"veth")), "{m:?}");
    // A recipe that creates nothing names nothing.
    let s = spec("SimpleNetworkRecipe", SMOKE);
    assert!(s.planned.requirements().kernel_modules.is_empty());
}
