//! Keyed device parameters: `{host: {device: settings}}` (upstream
//! `BaseHWConfigMixin._parse_device_settings`), as `coalescing_settings`
//! (CoalescingHWConfigMixin) and `multi_dev_interrupt_config` (MultiDevInterruptHWConfigMixin)
//! take them. A host key is a requirement host id (`host1`) or a namespace the recipe creates
//! on it (`host1.ns`); deeper nesting is refused, as upstream. The shape and the settings are
//! checked when the plan is made (bad input, exit 2); whether the host and device exist is
//! checked when the sub-configuration is applied (the test FAILs naming them).

use crate::params::Value;
use crate::protocol::{Coalesce, IrqPolicy};
use crate::recipes::context::Dev;
use crate::recipes::typed::FromParam;

use super::params::MAX_CPU_INDEX;

/// A user's key as an error shows it: as given when it is short and printable, else quoted
/// (a newline in it would split the one-line error).
fn shown_key(s: &str) -> String {
    if s.len() <= 64 && !s.chars().any(char::is_control) {
        s.to_string()
    } else {
        crate::text::quote(s, 64)
    }
}

/// The device a `{host: {device: …}}` entry names.
fn device_key(host: &Value, dev: &Value) -> Result<Dev, String> {
    let host = host
        .as_str()
        .ok_or_else(|| format!("host keys are strings, got {host}"))?;
    let dev = dev
        .as_str()
        .ok_or_else(|| format!("{}: device keys are strings, got {dev}", shown_key(host)))?;
    let part_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 2 {
        return Err(format!(
            "{}: nested namespaces are not supported (a host key is 'host1' or 'host1.<namespace>')",
            shown_key(host)
        ));
    }
    if !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "{host:?} is not a host id (a host key is 'host1' or 'host1.<namespace>')"
        ));
    }
    if !part_ok(dev) {
        return Err(format!("{host}: {dev:?} is not a device id"));
    }
    Ok(Dev::new(host, dev))
}

/// Every `(device, settings)` of a keyed parameter, in the order given; a device named twice
/// is an error (upstream raises too). Shared by every keyed parameter (also
/// [`super::nic_tunables`]).
pub(super) fn keyed<T>(
    v: &Value,
    settings: impl Fn(&Dev, &Value) -> Result<T, String>,
) -> Result<Vec<(Dev, T)>, String> {
    let hosts = v
        .as_dict()
        .ok_or_else(|| format!("expected {{host: {{device: settings}}}}, got {v}"))?;
    let mut out: Vec<(Dev, T)> = Vec::new();
    for (host, devs) in hosts {
        let devs = devs.as_dict().ok_or_else(|| {
            let h = host.as_str().map_or_else(|| host.to_string(), shown_key);
            format!("{h}: expected {{device: settings}}, got {devs}")
        })?;
        for (dev, s) in devs {
            let d = device_key(host, dev)?;
            if out.iter().any(|(x, _)| *x == d) {
                return Err(format!("{d} is given twice"));
            }
            let t = settings(&d, s)?;
            out.push((d, t));
        }
    }
    Ok(out)
}

/// One `coalescing_settings` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoalesceValue {
    /// `adaptive-rx`, `adaptive-tx`: "on"/"off" (or True/False).
    Flag(bool),
    /// Every other parameter: a number.
    Number(u32),
}

impl std::fmt::Display for CoalesceValue {
    /// As upstream's description shows the device attribute: `True`, `16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoalesceValue::Flag(true) => write!(f, "True"),
            CoalesceValue::Flag(false) => write!(f, "False"),
            CoalesceValue::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Whether `key` is an adaptive-mode flag.
pub fn is_adaptive(key: &str) -> bool {
    matches!(key, "adaptive-rx" | "adaptive-tx")
}

/// Upstream's device attribute for an `ethtool -C` key (`coalescing_param_to_device_attribute`):
/// `adaptive_rx_coalescing`, `coalescing_rx_usecs`.
pub fn coalesce_attribute(key: &str) -> String {
    if is_adaptive(key) {
        format!("{}_coalescing", key.replace('-', "_"))
    } else {
        format!("coalescing_{}", key.replace('-', "_"))
    }
}

/// A [`Coalesce`] request setting only `key` to `value`.
pub fn coalesce_one(key: &str, value: CoalesceValue) -> Coalesce {
    let mut c = Coalesce::default();
    match (key, value) {
        ("adaptive-rx", CoalesceValue::Flag(b)) => c.adaptive_rx = Some(b),
        ("adaptive-tx", CoalesceValue::Flag(b)) => c.adaptive_tx = Some(b),
        (k, CoalesceValue::Number(n)) => {
            if let Some(slot) = c.number_mut(k) {
                *slot = Some(n);
            }
        }
        _ => {}
    }
    c
}

/// The value of `key` in `c`, if set.
pub fn coalesce_get(c: &Coalesce, key: &str) -> Option<CoalesceValue> {
    match key {
        "adaptive-rx" => c.adaptive_rx.map(CoalesceValue::Flag),
        "adaptive-tx" => c.adaptive_tx.map(CoalesceValue::Flag),
        k => c
            .numbers()
            .into_iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| v)
            .map(CoalesceValue::Number),
    }
}

fn coalesce_setting(dev: &Dev, key: &Value, v: &Value) -> Result<(String, CoalesceValue), String> {
    let names = || {
        let mut n = vec!["adaptive-rx", "adaptive-tx"];
        n.extend(Coalesce::default().numbers().into_iter().map(|(k, _)| k));
        n.join(", ")
    };
    let key = key
        .as_str()
        .ok_or_else(|| format!("{dev}: setting names are strings, got {key}"))?;
    if is_adaptive(key) {
        let b = match v {
            Value::Str(s) if s == "on" => true,
            Value::Str(s) if s == "off" => false,
            Value::Bool(b) => *b,
            _ => return Err(format!("{dev}: {key}: expected 'on' or 'off', got {v}")),
        };
        return Ok((key.to_string(), CoalesceValue::Flag(b)));
    }
    // ethtool -C's names only (not -c's `rx-frame-low` spelling).
    let known = Coalesce::default()
        .numbers()
        .into_iter()
        .any(|(k, _)| k == key);
    if !known {
        return Err(format!(
            "{dev}: unknown coalescing parameter {key:?} (ethtool -C names: {})",
            names()
        ));
    }
    let n = v
        .as_i64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| format!("{dev}: {key}: expected a number 0 to {}, got {v}", u32::MAX))?;
    Ok((key.to_string(), CoalesceValue::Number(n)))
}

/// `coalescing_settings`: per device, the `ethtool -C` settings in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoalescingSettings(pub Vec<(Dev, Vec<(String, CoalesceValue)>)>);

impl CoalescingSettings {
    pub fn parse(v: &Value) -> Result<Self, String> {
        keyed(v, |dev, s| {
            let items = s
                .as_dict()
                .ok_or_else(|| format!("{dev}: expected {{setting: value}}, got {s}"))?;
            items
                .iter()
                .map(|(k, v)| coalesce_setting(dev, k, v))
                .collect()
        })
        .map(CoalescingSettings)
    }

    /// No device has a setting.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, s)| s.is_empty())
    }
}

impl FromParam for CoalescingSettings {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        match v {
            None | Some(Value::None) => Ok(CoalescingSettings::default()),
            Some(v) => CoalescingSettings::parse(v),
        }
    }
}

/// One device of `multi_dev_interrupt_config`: its IRQs pinned to `cpus` by `policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevIrqConfig {
    pub cpus: Vec<u32>,
    pub policy: IrqPolicy,
}

impl DevIrqConfig {
    /// Upstream's policy name.
    pub fn policy_name(&self) -> &'static str {
        match self.policy {
            IrqPolicy::RoundRobin => "round-robin",
            IrqPolicy::All => "all",
        }
    }
}

fn dev_irq_config(dev: &Dev, v: &Value) -> Result<DevIrqConfig, String> {
    let items = v
        .as_dict()
        .ok_or_else(|| format!("{dev}: expected {{'cpus': [...], 'cpu_policy': ...}}, got {v}"))?;
    let mut cpus = None;
    let mut policy: Option<(String, IrqPolicy)> = None;
    for (k, x) in items {
        let key = k.as_str().unwrap_or_default();
        match key {
            "cpus" => {
                let list = x
                    .items()
                    .ok_or_else(|| format!("{dev}: cpus: expected a list of CPU ids, got {x}"))?;
                let mut c = Vec::new();
                for i in list {
                    let n = i
                        .as_i64()
                        .filter(|n| (0..=MAX_CPU_INDEX as i64).contains(n))
                        .ok_or_else(|| {
                            format!("{dev}: cpus: {i} is not a CPU id (0 to {MAX_CPU_INDEX})")
                        })?;
                    c.push(n as u32);
                }
                cpus = Some(c);
            }
            // Upstream's key is `cpu_policy`; the containerized controller's documented
            // example writes `policy`.
            "cpu_policy" | "policy" => {
                let p = match x.as_str() {
                    Some("round-robin") => IrqPolicy::RoundRobin,
                    Some("all") => IrqPolicy::All,
                    _ => {
                        return Err(format!(
                            "{dev}: {key}: expected 'round-robin' or 'all', got {x}"
                        ))
                    }
                };
                if let Some((other, q)) = &policy {
                    if *q != p {
                        return Err(format!("{dev}: {other} and {key} disagree"));
                    }
                }
                policy = Some((key.to_string(), p));
            }
            _ => {
                return Err(format!(
                    "{dev}: unknown key {k} (expected 'cpus' and 'cpu_policy')"
                ))
            }
        }
    }
    let cpus = cpus.ok_or_else(|| format!("{dev}: 'cpus' is missing"))?;
    Ok(DevIrqConfig {
        cpus,
        // Unset: round-robin, as upstream's pin_dev_interrupts treats no policy.
        policy: policy.map_or(IrqPolicy::RoundRobin, |(_, p)| p),
    })
}

/// `multi_dev_interrupt_config`: per device, the CPUs its IRQs are pinned to and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MultiDevInterruptConfig(pub Vec<(Dev, DevIrqConfig)>);

impl MultiDevInterruptConfig {
    pub fn parse(v: &Value) -> Result<Self, String> {
        keyed(v, dev_irq_config).map(MultiDevInterruptConfig)
    }
}

impl FromParam for MultiDevInterruptConfig {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        match v {
            None | Some(Value::None) => Ok(MultiDevInterruptConfig::default()),
            Some(v) => MultiDevInterruptConfig::parse(v),
        }
    }
}

crate::param_set! {
    /// MultiDevInterruptHWConfigMixin (XDP*, Forwarding, SimpleNetworkTunable): per-device IRQ
    /// pinning. Upstream reads it unconditionally (AttributeError when absent); unset here
    /// means no pinning. A recipe with the mixin embeds this group and returns
    /// [`MultiDevInterruptParams::config`] from
    /// [`EnrtRecipe::multi_dev_interrupt_config`](super::EnrtRecipe::multi_dev_interrupt_config).
    pub struct MultiDevInterruptParams {
        param multi_dev_interrupt_config: Option<MultiDevInterruptConfig> = opt(
            Dict,
            "per device IRQ pinning: {'host1': {'eth0': {'cpus': [0], 'cpu_policy': 'round-robin'|'all'}}}",
        ),
    }
}

/// No device pinned.
static NO_DEVICES: MultiDevInterruptConfig = MultiDevInterruptConfig(Vec::new());

impl MultiDevInterruptParams {
    /// The configuration (empty when the parameter is unset).
    pub fn config(&self) -> &MultiDevInterruptConfig {
        self.multi_dev_interrupt_config
            .as_ref()
            .unwrap_or(&NO_DEVICES)
    }

    /// A plan-time check that every device named is one of `devices` (the recipe's own, as
    /// they are named while the test runs: `host1.ns.eth1` once eth1 is in host1's
    /// namespace), for recipes whose devices are fixed; the message lists them.
    pub fn check(&self, devices: &[Dev]) -> Result<(), crate::schema::SchemaError> {
        for (d, _) in &self.config().0 {
            if !devices.contains(d) {
                let known: Vec<String> = devices.iter().map(Dev::to_string).collect();
                return Err(crate::schema::SchemaError::Type {
                    name: "multi_dev_interrupt_config".into(),
                    message: format!("{d} is not a device of this recipe ({})", known.join(", ")),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::parse_params;

    fn value(s: &str) -> Value {
        let p = parse_params(&format!("x={s}")).unwrap_or_else(|e| panic!("{e}"));
        p.into_iter().next().map(|(_, v)| v).unwrap_or(Value::None)
    }

    #[test]
    fn coalescing_settings_parse_in_order() {
        let c = CoalescingSettings::parse(&value(
            "{'host1': {'eth0': {'rx-usecs': 16, 'adaptive-rx': 'off', 'adaptive-tx': True}}, 'host2.ns': {'eth1': {'tx-frames': 0}}}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.0,
            vec![
                (
                    Dev::new("host1", "eth0"),
                    vec![
                        ("rx-usecs".to_string(), CoalesceValue::Number(16)),
                        ("adaptive-rx".to_string(), CoalesceValue::Flag(false)),
                        ("adaptive-tx".to_string(), CoalesceValue::Flag(true)),
                    ]
                ),
                (
                    Dev::new("host2.ns", "eth1"),
                    vec![("tx-frames".to_string(), CoalesceValue::Number(0))]
                ),
            ]
        );
        assert!(!c.is_empty());
        assert!(CoalescingSettings::parse(&value("{}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty());
        assert_eq!(coalesce_attribute("adaptive-rx"), "adaptive_rx_coalescing");
        assert_eq!(coalesce_attribute("rx-usecs"), "coalescing_rx_usecs");
        let one = coalesce_one("rx-usecs", CoalesceValue::Number(16));
        assert_eq!(one.rx_usecs, Some(16));
        assert_eq!(
            coalesce_get(&one, "rx-usecs"),
            Some(CoalesceValue::Number(16))
        );
        assert_eq!(coalesce_get(&one, "adaptive-rx"), None);
        assert_eq!(CoalesceValue::Flag(false).to_string(), "False");
    }

    #[test]
    fn bad_coalescing_settings_name_the_culprit() {
        for (given, want) in [
            (
                "{'host1': {'eth0': {'rx-usec': 1}}}",
                "unknown coalescing parameter \"rx-usec\"",
            ),
            (
                "{'host1': {'eth0': {'rx-frame-low': 1}}}",
                "unknown coalescing parameter",
            ),
            (
                "{'host1': {'eth0': {'rx-usecs': -1}}}",
                "host1.eth0: rx-usecs: expected a number",
            ),
            (
                "{'host1': {'eth0': {'rx-usecs': '16'}}}",
                "expected a number",
            ),
            (
                "{'host1': {'eth0': {'adaptive-rx': 1}}}",
                "adaptive-rx: expected 'on' or 'off'",
            ),
            ("{'host1.a.b': {'eth0': {}}}", "nested namespaces"),
            // The fuzzer's find: the key is quoted, so its newline stays escaped.
            (
                "{'h.a\\n.b': {'eth0': {}}}",
                "'h.a\\n.b': nested namespaces",
            ),
            ("{'h\\n': [1]}", "'h\\n': expected {device: settings}"),
            ("{'host 1': {'eth0': {}}}", "is not a host id"),
            ("{'host1': {'eth/0': {}}}", "is not a device id"),
            ("{'host1': [1]}", "host1: expected {device: settings}"),
            (
                "{'host1': {'eth0': 5}}",
                "host1.eth0: expected {setting: value}",
            ),
            ("[1]", "expected {host: {device: settings}}"),
        ] {
            let e = CoalescingSettings::parse(&value(given))
                .err()
                .unwrap_or_default();
            assert!(e.contains(want), "{given}: {e}");
            assert!(!e.contains('\n'), "{given}: {e}");
        }
    }

    #[test]
    fn multi_dev_interrupt_config_parses_both_policy_spellings() {
        let m = MultiDevInterruptConfig::parse(&value(
            "{'host1': {'eth0': {'cpus': [0, 1], 'cpu_policy': 'all'}}, 'host2': {'eth0': {'cpus': [2], 'policy': 'round-robin'}, 'eth1': {'cpus': []}}}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.0,
            vec![
                (
                    Dev::new("host1", "eth0"),
                    DevIrqConfig {
                        cpus: vec![0, 1],
                        policy: IrqPolicy::All
                    }
                ),
                (
                    Dev::new("host2", "eth0"),
                    DevIrqConfig {
                        cpus: vec![2],
                        policy: IrqPolicy::RoundRobin
                    }
                ),
                (
                    Dev::new("host2", "eth1"),
                    DevIrqConfig {
                        cpus: vec![],
                        policy: IrqPolicy::RoundRobin
                    }
                ),
            ]
        );
        assert_eq!(m.0[0].1.policy_name(), "all");
        for (given, want) in [
            (
                "{'host1': {'eth0': {'cpu_policy': 'all'}}}",
                "'cpus' is missing",
            ),
            (
                "{'host1': {'eth0': {'cpus': [0], 'cpu_policy': 'rr'}}}",
                "expected 'round-robin' or 'all'",
            ),
            ("{'host1': {'eth0': {'cpus': [-1]}}}", "-1 is not a CPU id"),
            (
                "{'host1': {'eth0': {'cpus': [9000]}}}",
                "9000 is not a CPU id",
            ),
            (
                "{'host1': {'eth0': {'cpus': [0], 'cpu': 1}}}",
                "unknown key 'cpu'",
            ),
            (
                "{'host1': {'eth0': {'cpus': [0], 'policy': 'all', 'cpu_policy': 'round-robin'}}}",
                "disagree",
            ),
        ] {
            let e = MultiDevInterruptConfig::parse(&value(given))
                .err()
                .unwrap_or_default();
            assert!(e.contains(want), "{given}: {e}");
        }
    }
}
