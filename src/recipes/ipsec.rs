//! The IPsec recipes' shared part (upstream `ENRT/IpsecEspAeadRecipe.py`,
//! `ENRT/IpsecEspAhCompRecipe.py` and `ENRT/XfrmTools.py`): host1.eth0 and host2.eth0 in two
//! networks joined by host routes, one sub-configuration per IP version × algorithm whose
//! states and policies are added on both hosts (the same states on both, policies in
//! opposite directions), pings and flows between the two addresses of the sub-configuration's
//! family, each ping watched on host2.eth0 for its IPsec headers.
//!
//! Keys come from the OS random number generator, a fresh one per sub-configuration, and
//! never appear in a result, a log line or a raw file: the recorded `ip xfrm` commands show
//! `<redacted>` (upstream uses the constant `0x0b0b…`).
//!
//! The SPIs upstream hard-codes are the parameter `spi_values` (upstream's as default), and
//! `spi_values_host2` (default: the same) gives host2 other ones — a mismatch test: host1's
//! packets then find no state on host2 and the pings FAIL.
//!
//! Removal deletes exactly the states and policies the sub-configuration added (by
//! selector and SPI); upstream flushes every state and policy of both hosts, which would also
//! wipe a lab machine's own IPsec configuration.

use super::common::config::{nth_address, Configured, TestWide};
use super::context::{Dev, RecipeError, RunContext};
use super::typed::{IfAddr, IpVersion};
use crate::protocol::{XfrmMode, XfrmPolicy, XfrmState};
use crate::schema::{Check, TWO_HOSTS};

/// `spi_values`: hexadecimal strings (`0x00001000`) or numbers, `n` of them.
pub fn parse_spis(name: &str, given: &[String], n: usize) -> Result<Vec<u32>, RecipeError> {
    if given.len() != n {
        return Err(RecipeError::Param(format!(
            "{name}: expected {n} SPIs, got {}",
            given.len()
        )));
    }
    given
        .iter()
        .map(|s| {
            let t = s.trim();
            let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u32::from_str_radix(h, 16),
                None => t.parse::<u32>(),
            };
            match v {
                // SPIs 1-255 are reserved for ESP and AH, but IPComp's CPIs use them, and so
                // does upstream (AhComp: 1 to 4).
                Ok(v) if v > 0 => Ok(v),
                _ => Err(RecipeError::Param(format!(
                    "{name}: '{s}' is not an SPI (a number 1 to 0xffffffff)"
                ))),
            }
        })
        .collect()
}

fn check_spis(v: &crate::params::Value, n: usize) -> Result<(), String> {
    let Some(items) = v.items() else {
        return Ok(());
    };
    let given: Vec<String> = items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| i.to_string())
        })
        .collect();
    parse_spis("spi_values", &given, n)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The check of a list of two SPIs at plan time (IpsecEspAead).
pub const SPIS2: Check = Check {
    what: "2 SPIs (hexadecimal 0x… or decimal, non-zero)",
    check: |v| check_spis(v, 2),
};

/// The check of a list of four SPIs at plan time (IpsecEspAhComp).
pub const SPIS4: Check = Check {
    what: "4 SPIs (hexadecimal 0x… or decimal, non-zero)",
    check: |v| check_spis(v, 4),
};

/// A random key of `bits` bits as `ip xfrm` takes it (`0x` and hexadecimal), from the OS
/// random number generator.
pub fn random_key(bits: u32) -> crate::protocol::Secret {
    use rand::RngCore;
    let mut bytes = vec![0u8; (bits as usize).div_ceil(8)];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    crate::protocol::Secret(format!("0x{}", hex::encode(bytes)))
}

/// `ipsec_mode`.
pub fn mode(s: &str) -> XfrmMode {
    if s == "tunnel" {
        XfrmMode::Tunnel
    } else {
        XfrmMode::Transport
    }
}

crate::param_set! {
    /// The IPsec recipes' networks: host1.eth0 gets the first host address of net1, host2.eth0
    /// of net2; each routes the other's addresses over its eth0.
    pub struct IpsecNets {
        param net1_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.99.0/24",
            "IPv4 network of host1.eth0 (it gets the first host address)",
        )
        .check(TWO_HOSTS),
        param net1_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:1::/64",
            "IPv6 network of host1.eth0 (it gets ::1)",
        ),
        param net2_ipv4: ipnet::Ipv4Net = dflt(
            Ipv4Net,
            "192.168.100.0/24",
            "IPv4 network of host2.eth0 (it gets the first host address)",
        )
        .check(TWO_HOSTS),
        param net2_ipv6: ipnet::Ipv6Net = dflt(
            Ipv6Net,
            "fc00:2::/64",
            "IPv6 network of host2.eth0 (it gets ::1)",
        ),
        param ipsec_mode: String = dflt(
            Choice(vec!["transport", "tunnel"]),
            "transport",
            "IPsec mode of the states and policies",
        ),
    }
}

impl IpsecNets {
    /// Upstream's test-wide configuration: per host eth0 down, its two addresses, up; the
    /// tentative wait; host routes to the peer's addresses over eth0.
    pub fn test_wide(&self, nics: &[Dev; 2]) -> Result<TestWide, RecipeError> {
        let mut tw = TestWide::new();
        let addrs = self.addresses()?;
        for (dev, a) in nics.iter().zip(&addrs) {
            tw.down(dev);
            tw.addresses(dev, a);
            tw.up(dev);
        }
        tw.wait_tentative();
        for (i, dev) in nics.iter().enumerate() {
            for peer in &addrs[1 - i] {
                let host_bits = if peer.addr.is_ipv4() { 32 } else { 128 };
                tw.route_dev(&dev.host, format!("{}/{host_bits}", peer.addr), dev);
            }
        }
        Ok(tw)
    }

    /// host1's and host2's addresses (IPv4, IPv6).
    pub fn addresses(&self) -> Result<[[IfAddr; 2]; 2], RecipeError> {
        Ok([
            [
                nth_address(self.net1_ipv4.into(), 1)?,
                nth_address(self.net1_ipv6.into(), 1)?,
            ],
            [
                nth_address(self.net2_ipv4.into(), 1)?,
                nth_address(self.net2_ipv6.into(), 1)?,
            ],
        ])
    }

    pub fn mode(&self) -> XfrmMode {
        mode(&self.ipsec_mode)
    }
}

/// The two addresses of one IP version (host1's, host2's) as the test-wide configuration
/// put them on the eth0s.
pub fn endpoints(
    config: &Configured,
    nics: &[Dev; 2],
    ipv: IpVersion,
) -> Result<[IfAddr; 2], RecipeError> {
    let one = |d: &Dev| {
        config.ips(d, Some(ipv)).first().copied().ok_or_else(|| {
            RecipeError::Run(format!("{d} has no {ipv} address for the IPsec endpoints"))
        })
    };
    Ok([one(&nics[0])?, one(&nics[1])?])
}

/// The configuration a sub-configuration pings and measures: only its two addresses.
pub fn variant_config(nics: &[Dev; 2], ips: [IfAddr; 2]) -> Configured {
    let mut c = Configured::default();
    c.track(&nics[0], ips[0]);
    c.track(&nics[1], ips[1]);
    c
}

/// Add each host's states and policies (host1's, host2's), recorded with the keys redacted
/// and removed with the sub-configuration.
pub async fn configure(
    ctx: &mut RunContext,
    nics: &[Dev; 2],
    per_host: [(Vec<XfrmState>, Vec<XfrmPolicy>); 2],
) -> Result<(), RecipeError> {
    for (dev, (states, policies)) in nics.iter().zip(per_host) {
        ctx.xfrm_add(&dev.host, states, policies).await?;
    }
    Ok(())
}

/// An algorithm with its key length (`('aes', 128)`), as AhComp's `ciphers` and `hashes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgoBits {
    pub name: String,
    pub bits: u32,
}

impl AlgoBits {
    fn parse(v: &crate::params::Value) -> Result<AlgoBits, String> {
        let shape = || format!("expected (name, key bits) like ('aes', 128), got {v}");
        let items = v.items().ok_or_else(shape)?;
        let [name, bits] = items else {
            return Err(shape());
        };
        let name = name.as_str().ok_or_else(shape)?;
        let bits = bits.as_i64().ok_or_else(shape)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "()-_,".contains(c))
        {
            return Err(format!("'{name}' is not an algorithm name"));
        }
        if !(8..=4096).contains(&bits) || bits % 8 != 0 {
            return Err(format!(
                "{name}: {bits} is not a key length in bits (8 to 4096, whole bytes)"
            ));
        }
        Ok(AlgoBits {
            name: name.to_string(),
            bits: bits as u32,
        })
    }
}

impl super::typed::FromParam for AlgoBits {
    fn from_param(v: Option<&crate::params::Value>) -> Result<Self, String> {
        AlgoBits::parse(v.ok_or("has no value")?)
    }
}

/// The check of a list of (algorithm, key bits) at plan time.
pub const ALGO_BITS: Check = Check {
    what: "(algorithm, key bits) pairs",
    check: |v| {
        for i in v.items().unwrap_or_default() {
            AlgoBits::parse(i)?;
        }
        Ok(())
    },
};

/// host1's and host2's SPIs, `n` each: `spi_values`, and `spi_values_host2` for host2 when
/// given.
pub fn host_spis(
    spi_values: &[String],
    spi_values_host2: Option<&[String]>,
    n: usize,
) -> Result<[Vec<u32>; 2], RecipeError> {
    let one = parse_spis("spi_values", spi_values, n)?;
    let two = match spi_values_host2 {
        Some(s) => parse_spis("spi_values_host2", s, n)?,
        None => one.clone(),
    };
    Ok([one, two])
}

/// One sub-configuration's IPsec on the eth0s `nics`: the two addresses of `ipv` the
/// test-wide configuration put on them (host1's, host2's), and on each host (`i` 0: host1)
/// the states and policies `host_config(i, addresses)` makes. Returns the two addresses.
pub async fn apply<F>(
    ctx: &mut RunContext,
    config: &Configured,
    nics: &[Dev; 2],
    ipv: IpVersion,
    host_config: F,
) -> Result<[IfAddr; 2], RecipeError>
where
    F: Fn(usize, [std::net::IpAddr; 2]) -> (Vec<XfrmState>, Vec<XfrmPolicy>),
{
    let ips = endpoints(config, nics, ipv)?;
    let addrs = [ips[0].addr, ips[1].addr];
    configure(ctx, nics, [host_config(0, addrs), host_config(1, addrs)]).await?;
    Ok(ips)
}

/// The packet asserts watch only the pings host1 sends: host2's eth0 (the device they are
/// watched on) for those, None for host2's.
pub fn host1_pinging(nics: [Dev; 2], ping: &super::common::ping::PingConf) -> Option<Dev> {
    let [n1, n2] = nics;
    (ping.client == n1.host).then_some(n2)
}

/// The `Recipe` and `EnrtRecipe` glue of the IPsec recipes (`tunnel_recipe!`
/// with the IPsec parts). `$name` has the groups `nets` ([`IpsecNets`]), `base`, `reqs` and
/// `hw` (`CommonHwParams`), and an inherent `fn check(&self) -> Result<(), RecipeError>` run
/// before anything is configured. It gets `fn nics(&self)` (host1.eth0, host2.eth0), the
/// test-wide configuration of [`IpsecNets`], the eth0 pair, and the hardware
/// sub-configurations without pause frames (upstream's IPsec recipes do not take
/// PauseFramesHWConfigMixin). The recipe's own `EnrtRecipe` methods follow in braces.
macro_rules! ipsec_recipe {
    ($name:ident, $doc:literal, { $($enrt:tt)* }) => {
        impl $name {
            fn nics(&self) -> [$crate::recipes::context::Dev; 2] {
                $crate::recipes::reqs::simple_network_req(&self.reqs).1
            }
        }

        $crate::recipes::tunnel::tunnel_recipe!(
            $name,
            $doc,
            |r| $crate::recipes::reqs::simple_network_req(r).0,
            check,
            {
                fn test_wide_configuration(
                    &self,
                ) -> Result<
                    $crate::recipes::common::config::TestWide,
                    $crate::recipes::context::RecipeError,
                > {
                    self.nets.test_wide(&self.nics())
                }

                fn pair(
                    &self,
                ) -> Option<($crate::recipes::context::Dev, $crate::recipes::context::Dev)> {
                    let [a, b] = self.nics();
                    Some((a, b))
                }

                fn sub_configurations(&self) -> $crate::recipes::enrt::SubConfigs<'_> {
                    let nics = self.nics();
                    $crate::recipes::enrt::SubConfigs {
                        offloads: None,
                        hw: Some($crate::recipes::enrt::HwConfig {
                            pause_frames_devs: Vec::new(),
                            ..$crate::recipes::enrt::HwConfig::on(&self.hw, &nics)
                        }),
                    }
                }

                $($enrt)*
            }
        );
    };
}
pub(crate) use ipsec_recipe;
