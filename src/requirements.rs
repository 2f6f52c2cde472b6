//! Recipe requirements: which hosts and interfaces a recipe needs and on which L2 networks
//! (network labels). Sorted maps give the mapper its deterministic, sorted-id order.

use serde::Serialize;
use std::collections::BTreeMap;

/// One required interface: the L2 network label it must sit on, plus match parameters
/// (`driver`, `speed`, `model`, ...) compared by exact string equality with pool params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReq {
    pub label: String,
    pub params: BTreeMap<String, String>,
}

/// One required host: match parameters and its interfaces by requirement id (`eth0`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostReq {
    pub params: BTreeMap<String, String>,
    pub interfaces: BTreeMap<String, DeviceReq>,
}

/// All hosts a recipe needs, by requirement id (`host1`, `host2`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requirements {
    pub hosts: BTreeMap<String, HostReq>,
    /// Not a requirement: the kernel modules each host's configuration will need (the link
    /// kinds the recipe creates there), so that an agent source that boots the kernel (VMs)
    /// can have them loaded while the agents connect. Matching ignores it.
    #[serde(skip)]
    pub kernel_modules: BTreeMap<String, Vec<&'static str>>,
}

impl Requirements {
    /// Every distinct network label, sorted.
    pub fn labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .hosts
            .values()
            .flat_map(|h| h.interfaces.values().map(|d| d.label.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl HostReq {
    pub fn with_interface(
        mut self,
        id: &str,
        label: &str,
        params: BTreeMap<String, String>,
    ) -> Self {
        self.interfaces.insert(
            id.to_string(),
            DeviceReq {
                label: label.to_string(),
                params,
            },
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_distinct() {
        let mut r = Requirements::default();
        r.hosts.insert(
            "host2".into(),
            HostReq::default().with_interface("eth0", "net2", BTreeMap::new()),
        );
        r.hosts.insert(
            "host1".into(),
            HostReq::default()
                .with_interface("eth0", "net2", BTreeMap::new())
                .with_interface("eth1", "net1", BTreeMap::new()),
        );
        assert_eq!(r.labels(), vec!["net1".to_string(), "net2".to_string()]);
    }
}
