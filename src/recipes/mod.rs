//! Recipes: the [`Recipe`] trait and the one registry, keyed by upstream class name.
//!
//! A recipe is a struct of typed parameters declared with [`param_set!`](crate::param_set)
//! (the same declaration gives the schema of `lnst-runner recipes NAME`), its requirements and
//! its run. The plan resolves the parameters once ([`RecipeDef::plan`]); the runner then asks
//! the planned recipe for its requirements, provisions agents and runs it. Adding a recipe is
//! one file and one line in [`REGISTRY`] (docs/ARCHITECTURE.md walks through an example).

pub mod bond;
pub mod common;
pub mod context;
pub mod double_bond;
pub mod double_team;
pub mod enrt;
pub mod forwarding;
pub mod geneve_lwt_tunnel;
pub mod geneve_tunnel;
pub mod gre_lwt_tunnel;
pub mod gre_tunnel;
pub mod gre_tunnel_over_bond;
pub mod gre_tunnel_over_macvlan;
pub mod gre_tunnel_over_vlan;
pub mod ip6gre_netns_tunnel;
pub mod ip6gre_tunnel;
pub mod ip6tnl_tunnel;
pub mod ipip_tunnel;
pub mod ipsec;
pub mod ipsec_esp_aead;
pub mod ipsec_esp_ah_comp;
pub mod l2tp_tunnel;
pub mod linux_bridge;
pub mod linux_bridge_over_bond;
pub mod lwt;
pub mod ping_flood;
pub mod reqs;
pub mod short_lived_connections;
pub mod simple_macsec;
pub mod simple_netns_router;
pub mod simple_network;
pub mod simple_network_tunable;
pub mod sit_tunnel;
pub mod team;
pub mod team_vs_bond;
pub mod tunnel;
pub mod typed;
pub mod virtual_bridge_vlan_in_guest;
pub mod virtual_bridge_vlan_in_guest_mirrored;
pub mod virtual_bridge_vlan_in_host;
pub mod virtual_bridge_vlan_in_host_mirrored;
pub mod virtual_bridge_vlans_over_bond;
pub mod vlans;
pub mod vlans_over_bond;
pub mod vlans_over_team;
pub mod vxlan_gpe_tunnel;
pub mod vxlan_lwt_tunnel;
pub mod vxlan_multicast;
pub mod vxlan_netns_tunnel;
pub mod vxlan_remote;
pub mod xdp;

#[cfg(test)]
mod catalogue_tests;
#[cfg(test)]
mod hw_params_tests;
#[cfg(test)]
mod ipsec_tests;
#[cfg(test)]
mod lwt_tests;
#[cfg(test)]
mod rr_tunable_tests;
#[cfg(test)]
mod scripted_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tunnel_tests;
#[cfg(test)]
mod tunnel_variants_tests;
#[cfg(test)]
mod xdp_tests;

use crate::requirements::Requirements;
use crate::schema::{ParamSpec, ResolvedParams, SchemaError};
use context::{RecipeError, RunContext};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use typed::ParamSet;

/// Kernel modules by requirement host (`host1` → `["8021q", "bonding"]`).
pub type HostModules = std::collections::BTreeMap<String, Vec<&'static str>>;

/// A recipe: typed parameters ([`ParamSet`]), requirements and a run. Without a `run` an
/// implementation does not compile, and without an implementation nothing can be registered.
pub trait Recipe: ParamSet + std::fmt::Debug + Send + Sync + 'static {
    /// Upstream class name, e.g. `SimpleNetworkRecipe`.
    const NAME: &'static str;
    /// One line for `lnst-runner recipes`.
    const DOC: &'static str;

    /// Checks across parameters, at plan time (a bad combination is exit 2 before any agent
    /// is contacted). Single parameters are checked by their declarations.
    fn validate(&self) -> Result<(), SchemaError> {
        Ok(())
    }

    /// The hosts and interfaces this recipe needs.
    fn requirements(&self) -> Requirements;

    /// The same without device filters (`driver`, `nic_speed`...): what `lnst-runner recipes`
    /// shows.
    fn layout() -> Requirements;

    /// Run on connected agents.
    fn run(&self, ctx: &mut RunContext) -> impl Future<Output = Result<(), RecipeError>> + Send;

    /// The kernel modules each host's devices will need ([`Requirements::kernel_modules`]; ENRT
    /// recipes: [`enrt::kernel_modules`]). A hint: nothing when unknown.
    fn kernel_modules(&self) -> HostModules {
        HostModules::new()
    }
}

/// A recipe whose parameters are resolved: what a planned test carries to the runner.
pub trait PlannedRecipe: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    /// The requirements with the kernel-module hint filled in.
    fn requirements(&self) -> Requirements;
    fn run<'a>(&'a self, ctx: &'a mut RunContext) -> BoxFuture<'a, Result<(), RecipeError>>;
}

impl<R: Recipe> PlannedRecipe for R {
    fn name(&self) -> &'static str {
        R::NAME
    }
    fn requirements(&self) -> Requirements {
        Requirements {
            kernel_modules: Recipe::kernel_modules(self),
            ..Recipe::requirements(self)
        }
    }
    fn run<'a>(&'a self, ctx: &'a mut RunContext) -> BoxFuture<'a, Result<(), RecipeError>> {
        Box::pin(Recipe::run(self, ctx))
    }
}

/// A planned recipe, shared by the plan and the runner.
#[derive(Debug, Clone)]
pub struct Planned(pub Arc<dyn PlannedRecipe>);

impl PartialEq for Planned {
    /// Same recipe with the same typed parameters.
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

impl std::ops::Deref for Planned {
    type Target = dyn PlannedRecipe;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// A registered recipe before its parameters are known.
#[derive(Debug, Clone, Copy)]
pub struct RecipeDef {
    /// Upstream class name, e.g. `SimpleNetworkRecipe`.
    pub name: &'static str,
    pub doc: &'static str,
    /// The parameter declarations.
    pub params: fn() -> Vec<ParamSpec>,
    /// The hosts and interfaces without device filters.
    pub layout: fn() -> Requirements,
    /// Typed parameters from schema-checked ones, cross-checked by [`Recipe::validate`].
    pub plan: fn(&ResolvedParams) -> Result<Planned, SchemaError>,
}

fn plan_of<R: Recipe>(p: &ResolvedParams) -> Result<Planned, SchemaError> {
    let r = R::from_resolved(p)?;
    r.validate()?;
    Ok(Planned(Arc::new(r)))
}

impl RecipeDef {
    pub const fn of<R: Recipe>() -> RecipeDef {
        RecipeDef {
            name: R::NAME,
            doc: R::DOC,
            params: R::specs,
            layout: R::layout,
            plan: plan_of::<R>,
        }
    }
}

/// Every recipe this runner has: one line per recipe.
pub const REGISTRY: &[RecipeDef] = &[
    RecipeDef::of::<simple_network::SimpleNetworkRecipe>(),
    RecipeDef::of::<ping_flood::PingFloodRecipe>(),
    RecipeDef::of::<bond::BondRecipe>(),
    RecipeDef::of::<linux_bridge::LinuxBridgeRecipe>(),
    RecipeDef::of::<simple_netns_router::SimpleNetnsRouterRecipe>(),
    RecipeDef::of::<vlans::VlansRecipe>(),
    RecipeDef::of::<team::TeamRecipe>(),
    RecipeDef::of::<virtual_bridge_vlan_in_host::VirtualBridgeVlanInHostRecipe>(),
    RecipeDef::of::<virtual_bridge_vlan_in_guest::VirtualBridgeVlanInGuestRecipe>(),
    RecipeDef::of::<virtual_bridge_vlan_in_host_mirrored::VirtualBridgeVlanInHostMirroredRecipe>(),
    RecipeDef::of::<virtual_bridge_vlan_in_guest_mirrored::VirtualBridgeVlanInGuestMirroredRecipe>(
    ),
    RecipeDef::of::<virtual_bridge_vlans_over_bond::VirtualBridgeVlansOverBondRecipe>(),
    RecipeDef::of::<double_bond::DoubleBondRecipe>(),
    RecipeDef::of::<vlans_over_bond::VlansOverBondRecipe>(),
    RecipeDef::of::<linux_bridge_over_bond::LinuxBridgeOverBondRecipe>(),
    RecipeDef::of::<double_team::DoubleTeamRecipe>(),
    RecipeDef::of::<vlans_over_team::VlansOverTeamRecipe>(),
    RecipeDef::of::<team_vs_bond::TeamVsBondRecipe>(),
    RecipeDef::of::<short_lived_connections::ShortLivedConnectionsRecipe>(),
    RecipeDef::of::<simple_network_tunable::SimpleNetworkTunableRecipe>(),
    RecipeDef::of::<gre_tunnel::GreTunnelRecipe>(),
    RecipeDef::of::<ipsec_esp_aead::IpsecEspAeadRecipe>(),
    RecipeDef::of::<ipsec_esp_ah_comp::IpsecEspAhCompRecipe>(),
    RecipeDef::of::<simple_macsec::SimpleMacsecRecipe>(),
    RecipeDef::of::<ipip_tunnel::IpIpTunnelRecipe>(),
    RecipeDef::of::<vxlan_remote::VxlanRemoteRecipe>(),
    RecipeDef::of::<geneve_tunnel::GeneveTunnelRecipe>(),
    RecipeDef::of::<sit_tunnel::SitTunnelRecipe>(),
    RecipeDef::of::<ip6tnl_tunnel::Ip6TnlTunnelRecipe>(),
    RecipeDef::of::<ip6gre_tunnel::Ip6GreTunnelRecipe>(),
    RecipeDef::of::<vxlan_multicast::VxlanMulticastRecipe>(),
    RecipeDef::of::<gre_tunnel_over_vlan::GreTunnelOverVlanRecipe>(),
    RecipeDef::of::<gre_tunnel_over_macvlan::GreTunnelOverMacvlanRecipe>(),
    RecipeDef::of::<gre_tunnel_over_bond::GreTunnelOverBondRecipe>(),
    RecipeDef::of::<vxlan_netns_tunnel::VxlanNetnsTunnelRecipe>(),
    RecipeDef::of::<ip6gre_netns_tunnel::Ip6GreNetnsTunnelRecipe>(),
    RecipeDef::of::<gre_lwt_tunnel::GreLwtTunnelRecipe>(),
    RecipeDef::of::<geneve_lwt_tunnel::GeneveLwtTunnelRecipe>(),
    RecipeDef::of::<vxlan_lwt_tunnel::VxlanLwtTunnelRecipe>(),
    RecipeDef::of::<vxlan_gpe_tunnel::VxlanGpeTunnelRecipe>(),
    RecipeDef::of::<l2tp_tunnel::L2TPTunnelRecipe>(),
    RecipeDef::of::<xdp::XDPDropRecipe>(),
    RecipeDef::of::<xdp::XDPTxRecipe>(),
    RecipeDef::of::<xdp::XDPRedirectCPURecipe>(),
    RecipeDef::of::<forwarding::ForwardingRecipe>(),
    RecipeDef::of::<forwarding::XDPForwardingRecipe>(),
];

/// RECIPE names no registered recipe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown recipe '{name}'{hint}; known recipes: {}", known.join(", "))]
pub struct UnknownRecipe {
    pub name: String,
    pub known: Vec<&'static str>,
    hint: String,
}

/// Every registered recipe, sorted by name.
pub fn registry() -> Vec<RecipeDef> {
    let mut v = REGISTRY.to_vec();
    v.sort_by_key(|r| r.name);
    v
}

/// The recipe named `name` (exact, case-sensitive, as upstream).
pub fn find(name: &str) -> Result<RecipeDef, UnknownRecipe> {
    let all = registry();
    if let Some(r) = all.iter().find(|r| r.name == name) {
        return Ok(*r);
    }
    let known: Vec<&'static str> = all.iter().map(|r| r.name).collect();
    // Edit distances cost O(len × recipe name) per recipe: a 100 000-character name took
    // seconds over the registry. No recipe name is close to one that long.
    let hint = all
        .iter()
        .filter(|_| name.chars().nth(64).is_none())
        .map(|r| {
            (
                strsim::normalized_damerau_levenshtein(
                    &name.to_lowercase(),
                    &r.name.to_lowercase(),
                ),
                r.name,
            )
        })
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default();
    let shown = crate::text::clip(name, 64).escape_debug().to_string();
    Err(UnknownRecipe {
        name: shown,
        known,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{parse_params, Value};
    use crate::schema::{resolve, ParamType};

    #[test]
    fn registry_sorted_and_findable() {
        let names: Vec<&str> = registry().iter().map(|r| r.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(find("SimpleNetworkRecipe").is_ok());
        let e = find("SimpleNetworkRecipes")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("did you mean 'SimpleNetworkRecipe'"), "{e}");
        assert!(
            e.contains(&format!("known recipes: {}", names.join(", "))),
            "{e}"
        );
        let e = find("Nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn simple_network_has_38_params_with_upstream_defaults() {
        let specs = simple_network::SimpleNetworkRecipe::specs();
        assert_eq!(specs.len(), 38);
        let mut names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 38, "duplicate parameter names");
        assert!(specs.iter().all(|s| !s.doc.is_empty() && !s.mandatory));
        let r = resolve("SimpleNetworkRecipe", &specs, vec![]).unwrap_or_default();
        assert_eq!(r.int("perf_duration"), Some(60));
        assert_eq!(r.int("perf_iterations"), Some(5));
        assert_eq!(r.int("ping_count"), Some(100));
        assert_eq!(r.float("ping_interval"), Some(0.2));
        assert_eq!(r.str("net_ipv4"), Some("192.168.101.0/24"));
        assert_eq!(r.str("net_perf_tool"), Some("iperf"));
        assert_eq!(r.str("cpu_perf_tool"), Some("StatCPUMeasurement"));
        assert_eq!(r.items("offload_combinations").map(<[Value]>::len), Some(5));
        assert_eq!(
            r.get("offload_combinations").map(ToString::to_string).as_deref().map(|s| s.starts_with("({'gro': 'on', 'gso': 'on', 'tso': 'on', 'tx': 'on', 'rx': 'on'}, {'gro': 'off'")),
            Some(true)
        );
        assert_eq!(
            r.get("ip_versions").map(ToString::to_string).as_deref(),
            Some("('ipv4', 'ipv6')")
        );
        for absent in [
            "perf_tool_cpu",
            "perf_tool_cpu_policy",
            "mtu",
            "driver",
            "vf_trust",
            "dev_intr_cpu",
        ] {
            assert!(r.get(absent).is_none(), "{absent} should be absent");
        }
        assert_eq!(r.len(), 38 - 12);
        let policy = specs
            .iter()
            .find(|s| s.name == "perf_tool_cpu_policy")
            .map(|s| s.ty.clone());
        assert_eq!(policy, Some(ParamType::Choice(vec!["all", "round-robin"])));
    }

    #[test]
    fn every_recipe_plans_with_its_defaults() {
        // A declaration whose default does not fit its field type would only fail here.
        for d in registry() {
            let specs = (d.params)();
            if specs.iter().any(|s| s.mandatory) {
                continue;
            }
            // The packet recipes need perf_tool_cpu in practice (upstream declares it optional
            // and crashes without it); the plan refuses them without it.
            let given = if d.name.starts_with("XDP") || d.name == "ForwardingRecipe" {
                crate::params::parse_params("perf_tool_cpu=[0]").unwrap_or_default()
            } else {
                vec![]
            };
            let p = resolve(d.name, &specs, given).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            let planned = (d.plan)(&p).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert_eq!(planned.name(), d.name);
            assert!(!planned.requirements().hosts.is_empty(), "{}", d.name);
        }
    }

    #[test]
    fn simple_network_requirements() {
        let d = find("SimpleNetworkRecipe").unwrap_or_else(|e| panic!("{e}"));
        let planned = |s: &str| {
            let given = parse_params(s).unwrap_or_default();
            let p = resolve(d.name, &(d.params)(), given).unwrap_or_else(|e| panic!("{e}"));
            (d.plan)(&p).unwrap_or_else(|e| panic!("{e}"))
        };
        let req = planned("driver='ice';nic_model='E810'").requirements();
        assert_eq!(req.labels(), vec!["net1".to_string()]);
        assert_eq!(req.hosts.len(), 2);
        for h in ["host1", "host2"] {
            let dev = req.hosts.get(h).and_then(|h| h.interfaces.get("eth0"));
            let dev = dev.unwrap_or_else(|| panic!("{h}.eth0 missing"));
            assert_eq!(dev.label, "net1");
            assert_eq!(dev.params.get("driver").map(String::as_str), Some("ice"));
            assert_eq!(dev.params.get("model").map(String::as_str), Some("E810"));
            assert!(!dev.params.contains_key("speed"));
        }
        let req = planned("").requirements();
        assert!(req
            .hosts
            .values()
            .all(|h| h.interfaces.values().all(|i| i.params.is_empty())));
    }
}
