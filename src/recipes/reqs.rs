//! Requirements several recipes share (upstream `ENRT/RecipeReqs/`): the hosts, their
//! interfaces and the network labels, with the match parameters from the recipe's
//! parameters. The devices a recipe configures are named by these requirement ids.

use crate::recipes::context::Dev;
use crate::recipes::enrt::params::DeviceReqParams;
use crate::requirements::{HostReq, Requirements};
use std::collections::BTreeMap;

/// `host1.eth0` and `host2.eth0` on network `net1`, each matched by `params`; the two devices.
pub fn two_hosts_one_nic(params: &BTreeMap<String, String>) -> (Requirements, [Dev; 2]) {
    let mut r = Requirements::default();
    for host in ["host1", "host2"] {
        r.hosts.insert(
            host.to_string(),
            HostReq::default().with_interface("eth0", "net1", params.clone()),
        );
    }
    (r, [Dev::new("host1", "eth0"), Dev::new("host2", "eth0")])
}

/// Upstream `SimpleNetworkReq`: [`two_hosts_one_nic`] matched by the ENRT device parameters.
pub fn simple_network_req(p: &DeviceReqParams) -> (Requirements, [Dev; 2]) {
    two_hosts_one_nic(&device_req_params(p))
}

/// The match parameters of a requirement device: `driver`, `speed` and `model` when the
/// `driver`, `nic_speed` and `nic_model` parameters are set (upstream EnrtDeviceReqParams;
/// an unset one drops the filter).
pub fn device_req_params(p: &DeviceReqParams) -> BTreeMap<String, String> {
    [
        (&p.driver, "driver"),
        (&p.nic_speed, "speed"),
        (&p.nic_model, "model"),
    ]
    .into_iter()
    .filter_map(|(v, key)| v.as_ref().map(|v| (key.to_string(), v.clone())))
    .collect()
}

/// One host's requirement: its interfaces as (id, label, matched by the device parameters?).
fn host_req(ifaces: &[(&str, &str, bool)], params: &BTreeMap<String, String>) -> HostReq {
    ifaces
        .iter()
        .fold(HostReq::default(), |h, (id, label, matched)| {
            let p = if *matched {
                params.clone()
            } else {
                BTreeMap::new()
            };
            h.with_interface(id, label, p)
        })
}

/// Upstream `BondOrTeamReq`: host1.eth0, host1.eth1 and host2.eth0 on network `tnet`.
pub fn bond_or_team_req(p: &DeviceReqParams) -> Requirements {
    let params = device_req_params(p);
    let mut r = Requirements::default();
    r.hosts.insert(
        "host1".into(),
        host_req(&[("eth0", "tnet", true), ("eth1", "tnet", true)], &params),
    );
    r.hosts
        .insert("host2".into(), host_req(&[("eth0", "tnet", true)], &params));
    r
}

/// Upstream `DoubleTeamOrBondReq`: eth0 and eth1 on host1 and host2, network `tnet`.
pub fn double_team_or_bond_req(p: &DeviceReqParams) -> Requirements {
    let params = device_req_params(p);
    let mut r = Requirements::default();
    for h in ["host1", "host2"] {
        r.hosts.insert(
            h.into(),
            host_req(&[("eth0", "tnet", true), ("eth1", "tnet", true)], &params),
        );
    }
    r
}

/// Upstream `VirtualBridgeReq`: host1.eth0 and host2.eth0 on `to_switch` (matched by the
/// device parameters), host1.tap0 and guest1.eth0 on `to_guest`. A guest is an ordinary
/// requirement host: any agent source can serve it.
pub fn virtual_bridge_req(p: &DeviceReqParams) -> Requirements {
    let params = device_req_params(p);
    let mut r = Requirements::default();
    r.hosts.insert(
        "host1".into(),
        host_req(
            &[("eth0", "to_switch", true), ("tap0", "to_guest", false)],
            &params,
        ),
    );
    r.hosts.insert(
        "host2".into(),
        host_req(&[("eth0", "to_switch", true)], &params),
    );
    r.hosts.insert(
        "guest1".into(),
        host_req(&[("eth0", "to_guest", false)], &params),
    );
    r
}

/// Upstream `VirtualBridgeMirroredReq`: host1 and host2 each with eth0 (`to_switch`) and tap0
/// (`to_guest1`, `to_guest2`), guest1.eth0 and guest2.eth0 behind them.
pub fn virtual_bridge_mirrored_req(p: &DeviceReqParams) -> Requirements {
    let params = device_req_params(p);
    let mut r = Requirements::default();
    for (h, g, label) in [
        ("host1", "guest1", "to_guest1"),
        ("host2", "guest2", "to_guest2"),
    ] {
        r.hosts.insert(
            h.into(),
            host_req(
                &[("eth0", "to_switch", true), ("tap0", label, false)],
                &params,
            ),
        );
        r.hosts
            .insert(g.into(), host_req(&[("eth0", label, false)], &params));
    }
    r
}

/// Upstream `VirtualBridgeOverBondReq`: host1 and host2 each with eth0 and eth1 (`to_switch`)
/// and two taps; guest1–guest4 behind host1.tap0, host1.tap1, host2.tap0, host2.tap1.
pub fn virtual_bridge_over_bond_req(p: &DeviceReqParams) -> Requirements {
    let params = device_req_params(p);
    let mut r = Requirements::default();
    for (h, guests) in [
        ("host1", [("guest1", "to_guest1"), ("guest2", "to_guest2")]),
        ("host2", [("guest3", "to_guest3"), ("guest4", "to_guest4")]),
    ] {
        r.hosts.insert(
            h.into(),
            host_req(
                &[
                    ("eth0", "to_switch", true),
                    ("eth1", "to_switch", true),
                    ("tap0", guests[0].1, false),
                    ("tap1", guests[1].1, false),
                ],
                &params,
            ),
        );
        for (g, label) in guests {
            r.hosts
                .insert(g.into(), host_req(&[("eth0", label, false)], &params));
        }
    }
    r
}
