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
