//! SimpleMacsecRecipe (upstream `ENRT/SimpleMacsecRecipe.py`): a MACsec device on each
//! host's eth0, one sub-configuration per `macsec_encryption` value (encryption on or off);
//! pings and flows between the two MACsec devices.
//!
//! ```text
//!   host1.eth0 ═══════════════════════════ host2.eth0
//!     └ msec0: net_ipv4 .1, net_ipv6 ::1       └ msec0: .2, ::2
//!       tx key K[0], rx (peer MAC, port 1) K[1]  tx key K'[0], rx K'[1]
//! ```
//!
//! K is `macsec_keys` (upstream's hard-coded ids `00`/`01` and keys); host2 uses
//! `macsec_keys_host2` (default: `macsec_keys`) reversed, as upstream reverses the list for
//! host2, so each host's transmit key is the other's receive key. A `macsec_keys_host2` with
//! other keys breaks the channel on purpose (a mismatch test).
//!
//! Deliberate differences (docs/UPSTREAM-DIFFERENCES.md): the keys are parameters and never
//! logged (the recorded `ip macsec` commands show `<redacted>`); the pings keep the standard
//! evaluators — upstream's have none, so a MACsec link that drops everything passed there,
//! here it FAILs.

use super::common::config::{self, nth_address, Configured, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe, HwConfig, SubConfigs};
use super::reqs::simple_network_req;
use super::Recipe;
use crate::param_set;
use crate::params::Value;
use crate::protocol::{LinkSpec, MacsecKey, MacsecSas, Secret};
use crate::requirements::Requirements;
use crate::schema::{Check, TWO_HOSTS};

/// Upstream's key ids and keys.
pub const UPSTREAM_KEYS: [(&str, &str); 2] = [
    ("00", "7a16780284000775d4f0a3c0f0e092c0"),
    ("01", "3212ef5c4cc5d0e4210b17208e88779e"),
];

/// One (key id, key) pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub id: String,
    pub key: Secret,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({}, {:?})", self.id, self.key)
    }
}

impl KeyPair {
    fn parse(v: &Value) -> Result<KeyPair, String> {
        // The message never quotes the value: it holds a key.
        let shape = || "expected (key id, key) pairs of hexadecimal strings".to_string();
        let items = v.items().ok_or_else(shape)?;
        let [id, key] = items else {
            return Err(shape());
        };
        let (Some(id), Some(key)) = (id.as_str(), key.as_str()) else {
            return Err(shape());
        };
        let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
        if !hex(id) || id.len() % 2 != 0 || id.len() > 32 {
            return Err(format!("key id '{id}' is not 1 to 16 hexadecimal bytes"));
        }
        if !hex(key) || !(key.len() == 32 || key.len() == 64) {
            return Err(format!(
                "the key of id '{id}' is not 16 or 32 hexadecimal bytes"
            ));
        }
        Ok(KeyPair {
            id: id.to_string(),
            key: Secret(key.to_string()),
        })
    }
}

impl super::typed::FromParam for KeyPair {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        KeyPair::parse(v.ok_or("has no value")?)
    }
}

/// Two (key id, key) pairs.
const KEY_PAIRS: Check = Check {
    what: "two (key id, key) pairs",
    check: |v| {
        let items = v.items().unwrap_or_default();
        if items.len() != 2 {
            return Err(format!(
                "expected 2 (key id, key) pairs, got {}",
                items.len()
            ));
        }
        items.iter().try_for_each(|i| KeyPair::parse(i).map(|_| ()))
    },
};

fn upstream_keys() -> Value {
    Value::List(
        UPSTREAM_KEYS
            .iter()
            .map(|(i, k)| Value::Tuple(vec![Value::from(*i), Value::from(*k)]))
            .collect(),
    )
}

param_set! {
    /// SimpleMacsecRecipe's parameters.
    pub struct SimpleMacsecRecipe {
        param net_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.100.0/24",
            "IPv4 network of the MACsec devices (host1 .1, host2 .2)",
        )
        .check(TWO_HOSTS),
        param net_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00::/64",
            "IPv6 network of the MACsec devices (host1 ::1, host2 ::2)",
        ),
        param macsec_encryption: Vec<String> = dflt(
            List(Some(Box::new(Choice(vec!["on", "off"])))),
            Value::List(vec![Value::from("on"), Value::from("off")]),
            "encryption of the MACsec devices; one sub-configuration per value",
        ),
        param macsec_keys: Vec<KeyPair> = dflt(
            Seq(Box::new(Any)),
            upstream_keys(),
            "host1's (key id, key) pairs: transmit, receive (hexadecimal)",
        )
        .check(KEY_PAIRS)
        .secret(),
        param macsec_keys_host2: Option<Vec<KeyPair>> = opt(
            Seq(Box::new(Any)),
            "host2's pairs before the reversal (default: macsec_keys); other keys break the link on purpose",
        )
        .check(KEY_PAIRS)
        .secret(),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

/// The parameters this recipe has beyond upstream's.
pub const ADDED: [&str; 2] = ["macsec_keys", "macsec_keys_host2"];

impl SimpleMacsecRecipe {
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }

    fn msecs() -> [Dev; 2] {
        ["host1", "host2"].map(|h| Dev::new(h, "msec0"))
    }

    /// Each host's (transmit, receive) keys: host1's list as given, host2's reversed.
    pub fn keys(&self) -> [[KeyPair; 2]; 2] {
        let one = &self.macsec_keys;
        let two = self.macsec_keys_host2.as_ref().unwrap_or(one);
        [
            [one[0].clone(), one[1].clone()],
            [two[1].clone(), two[0].clone()],
        ]
    }
}

async fn mac_of(ctx: &mut RunContext, dev: &Dev) -> Result<String, RecipeError> {
    let name = ctx.ifname(dev)?;
    ctx.client(&dev.host)?
        .list_interfaces()
        .await?
        .into_iter()
        .find(|x| x.name == name)
        .map(|x| x.mac)
        .ok_or_else(|| RecipeError::Run(format!("{dev} ({name}) not found on its agent")))
}

impl Recipe for SimpleMacsecRecipe {
    const NAME: &'static str = "SimpleMacsecRecipe";
    const DOC: &'static str =
        "ping and flows between MACsec devices on two hosts, encryption on and off";

    fn requirements(&self) -> Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for SimpleMacsecRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    /// Upstream adds nothing test-wide.
    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        Ok(TestWide::new())
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = Self::msecs();
        Some((a, b))
    }

    fn variants(&self) -> usize {
        self.macsec_encryption.len()
    }

    async fn apply_variant(
        &self,
        ctx: &mut RunContext,
        _config: &Configured,
        v: usize,
    ) -> Result<(Option<Configured>, Vec<String>), RecipeError> {
        let nics = self.nics();
        let msecs = Self::msecs();
        let encrypt = self.macsec_encryption[v] == "on";
        let macs = [mac_of(ctx, &nics[0]).await?, mac_of(ctx, &nics[1]).await?];
        for (i, (nic, msec)) in nics.iter().zip(&msecs).enumerate() {
            let spec = LinkSpec::Macsec {
                parent: ctx.ifname(nic)?,
                encrypt,
            };
            let shown = vec![
                format!("realdev={nic}"),
                format!("encrypt='{}'", self.macsec_encryption[v]),
            ];
            ctx.create_link(msec, spec, None, "MacsecDevice", shown)
                .await?;
            let [tx, rx] = self.keys()[i].clone();
            let sas = MacsecSas {
                peer_mac: macs[1 - i].clone(),
                port: 1,
                an: 0,
                pn: 1,
                tx: MacsecKey {
                    id: tx.id,
                    key: tx.key,
                },
                rx: MacsecKey {
                    id: rx.id,
                    key: rx.key,
                },
            };
            ctx.macsec_configure(msec, sas).await?;
        }
        let mut tw = TestWide::new();
        for (n, msec) in (1..).zip(&msecs) {
            tw.address(msec, nth_address(self.net_ipv4.into(), n)?);
            tw.address(msec, nth_address(self.net_ipv6.into(), n)?);
        }
        for (nic, msec) in nics.iter().zip(&msecs) {
            tw.up(nic);
            tw.up(msec);
        }
        tw.wait_tentative();
        let configured = config::apply(ctx, &tw.steps).await?;
        let mut desc = configured.describe();
        desc.insert(
            0,
            format!(
                "MACsec encryption {} on host1.msec0 and host2.msec0",
                self.macsec_encryption[v]
            ),
        );
        Ok((Some(configured), desc))
    }

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        SubConfigs {
            offloads: None,
            hw: Some(HwConfig {
                pause_frames_devs: Vec::new(),
                parallel_stream_qdisc_devs: Vec::new(),
                ..HwConfig::on(&self.hw, &nics)
            }),
        }
    }
}
