//! Recipe registry, keyed by upstream class name.

pub mod simple_network_params;

use crate::requirements::Requirements;
use crate::schema::{ParamSpec, ResolvedParams};

/// A recipe as the runner sees it before running: its parameters and requirements.
#[derive(Debug, Clone, Copy)]
pub struct RecipeDef {
    /// Upstream class name, e.g. `SimpleNetworkRecipe`.
    pub name: &'static str,
    pub doc: &'static str,
    pub params: fn() -> Vec<ParamSpec>,
    pub requirements: fn(&ResolvedParams) -> Requirements,
}

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
    // PingFloodRecipe is not registered: the reference does not give its parameter names,
    // types or defaults.
    let mut v = vec![RecipeDef {
        name: "SimpleNetworkRecipe",
        doc: "IP ping and iperf/neper flows between one NIC on each of two hosts",
        params: simple_network_params::params,
        requirements: simple_network_params::requirements,
    }];
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
    let hint = all
        .iter()
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
    let mut shown: String = name.chars().take(64).collect();
    shown = shown.escape_debug().to_string();
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
        assert!(e.contains("known recipes: SimpleNetworkRecipe"), "{e}");
        let e = find("Nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn simple_network_has_38_params_with_upstream_defaults() {
        let specs = simple_network_params::params();
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
    fn simple_network_requirements() {
        let d = find("SimpleNetworkRecipe").unwrap_or_else(|e| panic!("{e}"));
        let given = parse_params("driver='ice';nic_model='E810'").unwrap_or_default();
        let p = resolve(d.name, &(d.params)(), given).unwrap_or_default();
        let req = (d.requirements)(&p);
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
        let p = resolve(d.name, &(d.params)(), vec![]).unwrap_or_default();
        let req = (d.requirements)(&p);
        assert!(req
            .hosts
            .values()
            .all(|h| h.interfaces.values().all(|i| i.params.is_empty())));
    }
}

pub mod context;
pub mod simple_network;

/// Run a registered recipe in a connected context.
pub async fn run_recipe(
    name: &str,
    ctx: &mut context::RunContext,
    params: &ResolvedParams,
) -> Result<(), context::RecipeError> {
    match name {
        "SimpleNetworkRecipe" => simple_network::run(ctx, params).await,
        other => Err(context::RecipeError::Unsupported(format!(
            "recipe {other} has no run implementation"
        ))),
    }
}
