//! The per-device NIC tunables of SimpleNetworkTunableRecipe (upstream
//! `ConfigMixins/DevQueuesConfigMixin.py`, `DevNfcRxFlowHashConfigMixin.py`,
//! `DevRxHashFunctionConfigMixin.py`): channel counts (`ethtool -L`), the hashed fields of flow
//! types (`ethtool -N … rx-flow-hash`, with the RSS input transformations turned off first when
//! the fields are not symmetric) and the RSS hash function (`ethtool -X hfunc`), through the
//! agent's `SetChannels`, `SetRxFlowHash` and `SetRss` operations.
//!
//! The parameters are keyed `{host: {device: settings}}` (upstream
//! `BaseHWConfigMixin._parse_device_settings`); their shape and settings are checked when the
//! plan is made (bad input, exit 2), whether the device is one of the recipe's when the
//! sub-configuration is applied. A device that cannot do what is asked fails the
//! sub-configuration before any traffic, with the agent's reason.
//!
//! Order, as upstream's cooperative `hw_config` chain: queues, then rx-flow-hash, then the hash
//! function; each is one undo group, so they come back in the reverse order, and inside the
//! rx-flow-hash group every flow type's fields come back before the input transformations
//! (upstream's `hw_deconfig`).

use crate::params::Value;
use crate::protocol::{ChannelCounts, ErrorKind, FlowType, Previous, SetOutcome};
use crate::recipes::context::{Dev, RecipeError, RunContext, Undo};
use crate::recipes::typed::FromParam;
use crate::session::SessionError;

use super::devparams::keyed;

/// The `{name: value}` items of one device's settings.
fn items<'a>(dev: &Dev, s: &'a Value) -> Result<&'a [(Value, Value)], String> {
    s.as_dict()
        .ok_or_else(|| format!("{dev}: expected {{name: value}}, got {s}"))
}

/// `dev_queues`: per device, the channel counts to set (`ethtool -L` names: rx, tx, other,
/// combined), in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevQueues(pub Vec<(Dev, Vec<(String, u32)>)>);

impl DevQueues {
    pub fn parse(v: &Value) -> Result<Self, String> {
        keyed(v, |dev, s| {
            let mut out: Vec<(String, u32)> = Vec::new();
            for (k, x) in items(dev, s)? {
                let name = k
                    .as_str()
                    .filter(|n| ChannelCounts::default().named().iter().any(|(c, _)| c == n))
                    .ok_or_else(|| {
                        format!("{dev}: unknown queue kind {k} (ethtool -L names: rx, tx, other, combined)")
                    })?;
                let n = x
                    .as_i64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| format!("{dev}: {name}: expected a count 0 to {}, got {x}", u32::MAX))?;
                out.push((name.to_string(), n));
            }
            if out.is_empty() {
                return Err(format!("{dev}: no queue count given"));
            }
            Ok(out)
        })
        .map(DevQueues)
    }

    /// One device's counts as the agent takes them.
    fn counts(items: &[(String, u32)]) -> ChannelCounts {
        let mut c = ChannelCounts::default();
        for (k, n) in items {
            if let Some(slot) = c.get_mut(k) {
                *slot = Some(*n);
            }
        }
        c
    }
}

/// `dev_nfc_rx_flow_hash_config`: per device, the hashed fields of flow types (`tcp4:
/// 'sdfn'`), in the order given; the letters are stored sorted (ethtool's order does not
/// matter to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevNfcRxFlowHash(pub Vec<(Dev, Vec<(FlowType, String)>)>);

impl DevNfcRxFlowHash {
    pub fn parse(v: &Value) -> Result<Self, String> {
        keyed(v, |dev, s| {
            let mut out: Vec<(FlowType, String)> = Vec::new();
            for (k, x) in items(dev, s)? {
                let ft = k.as_str().and_then(FlowType::parse).ok_or_else(|| {
                    let all: Vec<&str> = FlowType::ALL.iter().map(|f| f.name()).collect();
                    format!("{dev}: unknown flow type {k} (one of {})", all.join(", "))
                })?;
                let fields = x.as_str().ok_or_else(|| {
                    format!(
                        "{dev}: {}: expected letters like 'sdfn', got {x}",
                        ft.name()
                    )
                })?;
                let sorted = crate::agent::tunables::check_flow_fields(fields)
                    .map_err(|e| format!("{dev}: {}: {e}", ft.name()))?;
                if out.iter().any(|(f, _)| *f == ft) {
                    return Err(format!("{dev}: {} is given twice", ft.name()));
                }
                out.push((ft, sorted));
            }
            Ok(out)
        })
        .map(DevNfcRxFlowHash)
    }
}

/// Hashed fields that keep a flow's two directions on one queue, so the RSS input
/// transformations (symmetric hashing) may stay on (upstream: sd, fn, sdfn).
fn symmetric(sorted: &str) -> bool {
    matches!(sorted, "ds" | "fn" | "dfns")
}

/// `dev_rx_hash_functions`: per device, the RSS hash function (`toeplitz`, `xor`, `crc32`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevRxHashFunctions(pub Vec<(Dev, String)>);

impl DevRxHashFunctions {
    pub fn parse(v: &Value) -> Result<Self, String> {
        keyed(v, |dev, s| {
            let h = s
                .as_str()
                .filter(|h| {
                    !h.is_empty()
                        && h.len() <= 32
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
                .ok_or_else(|| {
                    format!("{dev}: expected a hash function name like 'toeplitz', got {s}")
                })?;
            Ok(h.to_string())
        })
        .map(DevRxHashFunctions)
    }
}

macro_rules! from_param {
    ($($t:ty),*) => {$(
        impl FromParam for $t {
            fn from_param(v: Option<&Value>) -> Result<Self, String> {
                match v {
                    None | Some(Value::None) => Ok(Self::default()),
                    Some(v) => Self::parse(v),
                }
            }
        }
    )*};
}
from_param!(DevQueues, DevNfcRxFlowHash, DevRxHashFunctions);

crate::param_set! {
    /// DevQueuesConfigMixin, DevNfcRxFlowHashConfigMixin, DevRxHashFunctionConfigMixin
    /// (SimpleNetworkTunableRecipe). Unset or empty: skipped.
    pub struct NicTunableParams {
        param dev_queues: Option<DevQueues> = opt(
            Dict,
            "ethtool -L per device: {'host1': {'eth0': {'combined': 2}}}",
        ),
        param dev_nfc_rx_flow_hash_config: Option<DevNfcRxFlowHash> = opt(
            Dict,
            "ethtool -N rx-flow-hash per device: {'host1': {'eth0': {'udp4': 'sdfn'}}}",
        ),
        param dev_rx_hash_functions: Option<DevRxHashFunctions> = opt(
            Dict,
            "ethtool -X hfunc per device: {'host1': {'eth0': 'toeplitz'}}",
        ),
    }
}

impl NicTunableParams {
    /// What the base applies.
    pub fn view(&self) -> NicTunables<'_> {
        NicTunables {
            queues: self.dev_queues.as_ref().map_or(&[], |q| q.0.as_slice()),
            nfc: self
                .dev_nfc_rx_flow_hash_config
                .as_ref()
                .map_or(&[], |n| n.0.as_slice()),
            rx_hash: self
                .dev_rx_hash_functions
                .as_ref()
                .map_or(&[], |h| h.0.as_slice()),
        }
    }
}

/// The NIC tunables of a sub-configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicTunables<'a> {
    pub queues: &'a [(Dev, Vec<(String, u32)>)],
    pub nfc: &'a [(Dev, Vec<(FlowType, String)>)],
    pub rx_hash: &'a [(Dev, String)],
}

/// `host1 device eth0`, as upstream's descriptions name a device (its name on the machine).
fn who(ctx: &RunContext, dev: &Dev) -> String {
    let name = ctx.ifname(dev).unwrap_or_else(|_| dev.id.clone());
    format!("{} device {name}", ctx.root_host(&dev.host))
}

/// The device must be one of the recipe's (a namespace the recipe created counts).
fn known(ctx: &RunContext, param: &str, dev: &Dev) -> Result<(), RecipeError> {
    ctx.ifname(dev)
        .map(|_| ())
        .map_err(|e| RecipeError::Run(format!("{param}: {dev}: not a device of this recipe ({e})")))
}

impl NicTunables<'_> {
    /// Apply queues, rx-flow-hash and hash function; the description lines.
    pub async fn apply(&self, ctx: &mut RunContext) -> Result<Vec<String>, RecipeError> {
        let mut desc = Vec::new();
        desc.extend(self.apply_queues(ctx).await?);
        desc.extend(self.apply_nfc(ctx).await?);
        desc.extend(self.apply_rx_hash(ctx).await?);
        Ok(desc)
    }

    /// DevQueuesConfigMixin: `ethtool -L` per device; only the counts changed come back.
    async fn apply_queues(&self, ctx: &mut RunContext) -> Result<Vec<String>, RecipeError> {
        if self.queues.is_empty() {
            return Ok(vec!["device queues configuration skipped".into()]);
        }
        ctx.begin_undo_group();
        let mut desc = Vec::new();
        for (dev, items) in self.queues {
            known(ctx, "dev_queues", dev)?;
            let out = ctx
                .set_channels(dev, DevQueues::counts(items), "set_channels")
                .await?;
            if let SetOutcome::Applied {
                previous: Previous::Channels(old),
            } = out
            {
                ctx.push_undo(Undo::Channels {
                    dev: dev.clone(),
                    counts: old,
                });
            }
            let shown: Vec<String> = items.iter().map(|(k, n)| format!("{k} {n}")).collect();
            desc.push(format!(
                "{} queues configured: {}",
                who(ctx, dev),
                shown.join(" ")
            ));
        }
        Ok(desc)
    }

    /// DevNfcRxFlowHashConfigMixin: per device and flow type `ethtool -N … rx-flow-hash`;
    /// before fields that are not symmetric, the device's RSS input transformations off
    /// (once per device; upstream reads them again for every flow type, and so loses them
    /// when two flow types need it).
    async fn apply_nfc(&self, ctx: &mut RunContext) -> Result<Vec<String>, RecipeError> {
        if self.nfc.is_empty() {
            return Ok(vec!["nfc rx-flow-hash not configured".into()]);
        }
        ctx.begin_undo_group();
        let mut desc = Vec::new();
        let mut hash_undos = Vec::new();
        let mut xfrm_undos = Vec::new();
        let res = self
            .nfc_body(ctx, &mut desc, &mut hash_undos, &mut xfrm_undos)
            .await;
        // hw_deconfig: the fields first, then the transformations.
        for u in hash_undos.into_iter().chain(xfrm_undos) {
            ctx.push_undo(u);
        }
        res?;
        Ok(desc)
    }

    async fn nfc_body(
        &self,
        ctx: &mut RunContext,
        desc: &mut Vec<String>,
        hash_undos: &mut Vec<Undo>,
        xfrm_undos: &mut Vec<Undo>,
    ) -> Result<(), RecipeError> {
        let mut xfrm_off: Vec<&Dev> = Vec::new();
        for (dev, items) in self.nfc {
            known(ctx, "dev_nfc_rx_flow_hash_config", dev)?;
            for (ft, fields) in items {
                if !symmetric(fields) && !xfrm_off.contains(&dev) {
                    xfrm_off.push(dev);
                    if let Some(u) = disable_xfrm(ctx, dev).await? {
                        xfrm_undos.push(u);
                    }
                }
                let out = ctx
                    .set_rx_flow_hash(dev, *ft, fields, "set_rx_flow_hash")
                    .await?;
                if let SetOutcome::Applied {
                    previous: Previous::FlowHash { fields: old },
                } = out
                {
                    hash_undos.push(Undo::FlowHash {
                        dev: dev.clone(),
                        flow_type: *ft,
                        fields: old,
                    });
                }
                desc.push(format!(
                    "{} nfc rx-flow-hash {} configured: {fields}",
                    who(ctx, dev),
                    ft.name()
                ));
            }
        }
        Ok(())
    }

    /// DevRxHashFunctionConfigMixin: `ethtool -X hfunc` per device.
    async fn apply_rx_hash(&self, ctx: &mut RunContext) -> Result<Vec<String>, RecipeError> {
        if self.rx_hash.is_empty() {
            return Ok(vec!["rx hash function configuration skipped".into()]);
        }
        ctx.begin_undo_group();
        let mut desc = Vec::new();
        for (dev, hfunc) in self.rx_hash {
            known(ctx, "dev_rx_hash_functions", dev)?;
            let out = ctx
                .set_rss(dev, Some(hfunc), None, "set_rx_hash_function")
                .await?;
            if let SetOutcome::Applied {
                previous: Previous::Rss(info),
            } = out
            {
                if let Some(old) = info.active_hfunc() {
                    ctx.push_undo(Undo::RssHfunc {
                        dev: dev.clone(),
                        hfunc: old.to_string(),
                    });
                }
            }
            desc.push(format!(
                "{} rx hash function configured: {hfunc}",
                who(ctx, dev)
            ));
        }
        Ok(desc)
    }
}

/// `ethtool -X DEV xfrm none` when the device reports input transformations (upstream:
/// nothing to do when `ethtool -x` shows none, or cannot show RSS at all); the undo that turns
/// the ones that were on back on.
async fn disable_xfrm(ctx: &mut RunContext, dev: &Dev) -> Result<Option<Undo>, RecipeError> {
    let client = ctx.client(&dev.host)?;
    let ifname = ctx.ifname(dev)?;
    let info = match client.get_rss(&ifname).await {
        Ok(i) => i,
        Err(SessionError::Remote {
            kind: ErrorKind::Unsupported,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if info.xfrm.as_ref().is_none_or(|x| x.is_empty()) {
        return Ok(None);
    }
    let out = ctx
        .set_rss(dev, None, Some(Vec::new()), "set_rxfh_xfrm")
        .await?;
    Ok(match out {
        SetOutcome::Applied {
            previous: Previous::Rss(old),
        } => Some(Undo::RssXfrm {
            dev: dev.clone(),
            on: old.xfrm_on().unwrap_or_default(),
        }),
        _ => None,
    })
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
    fn keyed_settings_parse_in_order() {
        let q = DevQueues::parse(&value(
            "{'host1': {'eth0': {'combined': 2, 'rx': 1}}, 'host2.ns': {'eth1': {'tx': 0}}}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            q.0,
            vec![
                (
                    Dev::new("host1", "eth0"),
                    vec![("combined".to_string(), 2), ("rx".to_string(), 1)]
                ),
                (Dev::new("host2.ns", "eth1"), vec![("tx".to_string(), 0)]),
            ]
        );
        let c = DevQueues::counts(&q.0[0].1);
        assert_eq!((c.combined, c.rx, c.tx), (Some(2), Some(1), None));
        let n = DevNfcRxFlowHash::parse(&value(
            "{'host1': {'eth0': {'udp4': 'nfsd', 'tcp6': 'sd'}}}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.0[0].1,
            vec![
                (FlowType::Udp4, "dfns".to_string()),
                (FlowType::Tcp6, "ds".to_string())
            ]
        );
        assert!(symmetric("ds") && symmetric("dfns") && symmetric("fn"));
        assert!(!symmetric("d") && !symmetric("dfs") && !symmetric("dfnst"));
        let h = DevRxHashFunctions::parse(&value("{'host2': {'eth0': 'xor'}}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.0, vec![(Dev::new("host2", "eth0"), "xor".to_string())]);
        assert_eq!(
            DevQueues::from_param(None).unwrap_or_else(|e| panic!("{e}")),
            DevQueues::default()
        );
    }

    #[test]
    fn bad_settings_name_the_culprit() {
        let q = |s: &str| DevQueues::parse(&value(s)).err().unwrap_or_default();
        let n = |s: &str| DevNfcRxFlowHash::parse(&value(s)).err().unwrap_or_default();
        let h = |s: &str| {
            DevRxHashFunctions::parse(&value(s))
                .err()
                .unwrap_or_default()
        };
        for (got, want) in [
            (
                q("{'host1': {'eth0': {'queues': 2}}}"),
                "host1.eth0: unknown queue kind 'queues'",
            ),
            (
                q("{'host1': {'eth0': {'combined': -1}}}"),
                "host1.eth0: combined: expected a count",
            ),
            (
                q("{'host1': {'eth0': {}}}"),
                "host1.eth0: no queue count given",
            ),
            (
                q("{'host1': {'eth0': 2}}"),
                "host1.eth0: expected {name: value}",
            ),
            (q("{'host1.a.b': {'eth0': {'rx': 1}}}"), "nested namespaces"),
            (q("[1]"), "expected {host: {device: settings}}"),
            (
                q("{'host1': {'eth0': {'rx': 1}}, 'host1 ': {'eth0': {'rx': 1}}}"),
                "is not a host id",
            ),
            (
                n("{'host1': {'eth0': {'ip4': 'sd'}}}"),
                "host1.eth0: unknown flow type 'ip4'",
            ),
            (
                n("{'host1': {'eth0': {'tcp4': 'sdx'}}}"),
                "host1.eth0: tcp4: invalid rx-flow-hash fields",
            ),
            (
                n("{'host1': {'eth0': {'tcp4': 'ss'}}}"),
                "invalid rx-flow-hash fields",
            ),
            (n("{'host1': {'eth0': {'tcp4': 3}}}"), "expected letters"),
            (
                h("{'host1': {'eth0': 'toe plitz'}}"),
                "host1.eth0: expected a hash function name",
            ),
            (
                h("{'host1': {'eth0': ''}}"),
                "expected a hash function name",
            ),
        ] {
            assert!(got.contains(want), "{got:?} lacks {want:?}");
        }
    }
}
