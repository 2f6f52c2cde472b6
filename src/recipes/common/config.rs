//! Test-wide configuration: the steps a recipe declares (addresses, link state, MTU; device
//! creation, routes and namespaces slot in as [`Step`] variants once the agent has the
//! operations, see docs/ARCHITECTURE.md), applied in order with one result each, and the configuration they leave
//! (upstream `EnrtConfiguration`: the devices and the addresses the recipe configured).

use crate::recipes::context::{Dev, RecipeError, RunContext};
use crate::recipes::typed::{IfAddr, IpVersion};
use std::time::Duration;

/// How long configured IPv6 addresses may stay tentative (upstream `wait_tentative_ips`).
pub const TENTATIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One step of a test-wide configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Add an address to a device and track it (`configure_and_track_ip`), recorded as
    /// `ip_add('198.18.0.1/24')`.
    Address { dev: Dev, addr: IfAddr },
    /// Bring a device up, recorded as `up_and_wait()` (`wait`) or `up()`.
    Up { dev: Dev, wait: bool },
    /// Set a device's MTU, recorded as an attribute change.
    Mtu { dev: Dev, mtu: u32 },
    /// Wait until no address of the devices configured so far is tentative.
    WaitTentative,
}

/// A recipe's test-wide configuration, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestWide {
    pub steps: Vec<Step>,
}

impl TestWide {
    pub fn new() -> Self {
        TestWide::default()
    }
    /// Add and track an address.
    pub fn address(&mut self, dev: &Dev, addr: IfAddr) -> &mut Self {
        self.steps.push(Step::Address {
            dev: dev.clone(),
            addr,
        });
        self
    }
    /// Bring a device up and wait for it.
    pub fn up_and_wait(&mut self, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Up {
            dev: dev.clone(),
            wait: true,
        });
        self
    }
    /// Bring a device up.
    pub fn up(&mut self, dev: &Dev) -> &mut Self {
        self.steps.push(Step::Up {
            dev: dev.clone(),
            wait: false,
        });
        self
    }
    /// Set an MTU.
    pub fn mtu(&mut self, dev: &Dev, mtu: u32) -> &mut Self {
        self.steps.push(Step::Mtu {
            dev: dev.clone(),
            mtu,
        });
        self
    }
    /// Wait until the configured addresses are no longer tentative.
    pub fn wait_tentative(&mut self) -> &mut Self {
        self.steps.push(Step::WaitTentative);
        self
    }
}

/// The configured devices and their addresses, in configuration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configured {
    devices: Vec<(Dev, Vec<IfAddr>)>,
}

impl Configured {
    /// Record `addr` on `dev`.
    pub fn track(&mut self, dev: &Dev, addr: IfAddr) {
        match self.devices.iter_mut().find(|(d, _)| d == dev) {
            Some((_, v)) => v.push(addr),
            None => self.devices.push((dev.clone(), vec![addr])),
        }
    }

    /// The configured devices, in order.
    pub fn devices(&self) -> impl Iterator<Item = &Dev> {
        self.devices.iter().map(|(d, _)| d)
    }

    /// The addresses configured on `dev` (of one IP version, or all).
    pub fn ips(&self, dev: &Dev, version: Option<IpVersion>) -> Vec<IfAddr> {
        self.devices
            .iter()
            .filter(|(d, _)| d == dev)
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|a| version.is_none_or(|want| a.version() == want))
            .collect()
    }

    /// `Configured host1.eth0.ips = ['198.18.0.1/24', ...]` for every device.
    pub fn describe(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|(d, ips)| {
                let list = ips
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("Configured {d}.ips = [{list}]")
            })
            .collect()
    }
}

/// Apply `steps` in order, one result each; returns what was configured. Addresses, link
/// state and MTU are restored by the agent's end of recipe (it snapshots the matched
/// devices); a step that creates something (a device, a route) pushes its removal on the
/// context's undo stack ([`RunContext::unwind`]), which the base unwinds in reverse order when
/// the test ends, also after a failure.
pub async fn apply(ctx: &mut RunContext, steps: &[Step]) -> Result<Configured, RecipeError> {
    let mut configured = Configured::default();
    for step in steps {
        match step {
            Step::Address { dev, addr } => {
                let cidr = addr.to_string();
                ctx.device_call(
                    dev,
                    "ip_add",
                    &[format!("'{cidr}'")],
                    |c, ifname| async move { c.add_address(&ifname, &cidr).await },
                )
                .await?;
                configured.track(dev, *addr);
            }
            Step::Up { dev, wait } => {
                let method = if *wait { "up_and_wait" } else { "up" };
                ctx.device_call(dev, method, &[], |c, ifname| async move {
                    c.set_link(&ifname, true).await
                })
                .await?;
            }
            Step::Mtu { dev, mtu } => ctx.set_mtu(dev, *mtu, false).await?,
            Step::WaitTentative => {
                let devs: Vec<Dev> = configured.devices().cloned().collect();
                for dev in devs {
                    ctx.wait_dad(&dev, TENTATIVE_TIMEOUT).await?;
                }
            }
        }
    }
    Ok(configured)
}

/// The `n`-th host address of a network with its prefix (1 → `.1`), as upstream's
/// `interface_addresses` (Python `network.hosts()` order). The declarations check that the
/// networks are large enough ([`crate::schema::TWO_HOSTS`]); a smaller one is an error here.
pub fn nth_address(net: ipnet::IpNet, n: u128) -> Result<IfAddr, RecipeError> {
    let too_small = || RecipeError::Param(format!("network {net} is too small"));
    let addr = match net {
        ipnet::IpNet::V4(v4) => {
            let base = u128::from(u32::from(v4.network()));
            let last = u128::from(u32::from(v4.broadcast()));
            let v = base + n;
            if v >= last && v4.prefix_len() < 31 {
                return Err(too_small());
            }
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                u32::try_from(v).map_err(|_| too_small())?,
            ))
        }
        ipnet::IpNet::V6(v6) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6.network())
                .checked_add(n)
                .ok_or_else(too_small)?,
        )),
    };
    if !net.contains(&addr) {
        return Err(too_small());
    }
    Ok(IfAddr {
        addr,
        prefix: net.prefix_len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_python_hosts_order() {
        let n = |s: &str, k| nth_address(s.parse().unwrap_or_else(|e| panic!("{e}")), k);
        assert_eq!(
            n("198.18.20.0/24", 1)
                .map(|a| a.to_string())
                .ok()
                .as_deref(),
            Some("198.18.20.1/24")
        );
        assert_eq!(
            n("fd00:1:2::/64", 2).map(|a| a.to_string()).ok().as_deref(),
            Some("fd00:1:2::2/64")
        );
        assert!(n("198.18.20.0/31", 5).is_err());
        assert!(n("198.18.20.0/30", 3).is_err());
        assert!(n("198.18.20.0/30", 2).is_ok());
    }

    #[test]
    fn configured_tracks_in_order() {
        let mut c = Configured::default();
        let (a, b) = (Dev::new("host1", "eth0"), Dev::new("host2", "eth0"));
        let ip = |s: &str| s.parse::<IfAddr>().unwrap_or_else(|e| panic!("{e}"));
        c.track(&a, ip("198.18.0.1/24"));
        c.track(&b, ip("198.18.0.2/24"));
        c.track(&a, ip("fd00::1/64"));
        assert_eq!(c.devices().cloned().collect::<Vec<_>>(), vec![a.clone(), b]);
        assert_eq!(c.ips(&a, Some(IpVersion::Ipv6)), vec![ip("fd00::1/64")]);
        assert_eq!(c.ips(&a, None).len(), 2);
        assert_eq!(
            c.describe()[0],
            "Configured host1.eth0.ips = ['198.18.0.1/24', 'fd00::1/64']"
        );
    }
}
