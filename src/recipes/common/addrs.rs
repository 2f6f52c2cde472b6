//! Address allocation from a network parameter (upstream `interface_addresses` of
//! `lnst/Common/IpAddress.py`), and the plan-time checks that a network holds every address a
//! recipe allocates from it.
//!
//! Upstream starts at `default_start` (and keeps every `default_skip`-th address) only when
//! that literal address lies in the network, i.e. with the recipe's default network; any
//! other network silently allocates from host 1. The start here is a host *index*, so a
//! recipe keeps its address plan (an IPv6 host part equal to the IPv4 last octet) with
//! whatever network it is given, which is what the upstream recipes use `default_start` for
//! ("to keep the address order the same").

use super::config::nth_address;
use crate::params::Value;
use crate::recipes::context::RecipeError;
use crate::recipes::typed::IfAddr;
use crate::schema::Check;

/// Hands out the host addresses of a network in order: host `start`, then every `skip`-th.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddresses {
    net: ipnet::IpNet,
    next: u128,
    skip: u128,
}

impl InterfaceAddresses {
    /// From host 1, every address (upstream `interface_addresses(net)`).
    pub fn new(net: impl Into<ipnet::IpNet>) -> Self {
        Self::starting_at(net, 1, 1)
    }

    /// From host `start`, every `skip`-th address (upstream `default_start`, `default_skip`).
    pub fn starting_at(net: impl Into<ipnet::IpNet>, start: u128, skip: u128) -> Self {
        InterfaceAddresses {
            net: net.into(),
            next: start,
            skip: skip.max(1),
        }
    }

    /// The next address, with the network's prefix; an error when the network is exhausted.
    pub fn alloc(&mut self) -> Result<IfAddr, RecipeError> {
        let a = nth_address(self.net, self.next)?;
        self.next = self.next.saturating_add(self.skip);
        Ok(a)
    }
}

/// Whether a network value holds host address `N` (a value that is not a network is left to
/// the type check).
fn holds_host<const N: u128>(v: &Value) -> Result<(), String> {
    let Some(net) = v.as_str().and_then(|s| s.parse::<ipnet::IpNet>().ok()) else {
        return Ok(());
    };
    match nth_address(net, N) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "'{net}' is too small: the recipe gives host addresses up to number {N} of it to its devices"
        )),
    }
}

/// The network holds host addresses 1 to 3 (/29 or larger for IPv4, /126 for IPv6).
pub const THREE_HOSTS: Check = Check {
    what: "three host addresses",
    check: holds_host::<3>,
};

/// The network holds host addresses 1 to 4 (/29 or larger for IPv4, /125 for IPv6).
pub const FOUR_HOSTS: Check = Check {
    what: "four host addresses",
    check: holds_host::<4>,
};

/// The network holds host addresses 1 to 11 (/28 or larger for IPv4, /124 for IPv6):
/// ShortLivedConnectionsRecipe gives hosts 10 and 11 to its devices.
pub const ELEVEN_HOSTS: Check = Check {
    what: "eleven host addresses",
    check: holds_host::<11>,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut a: InterfaceAddresses, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                a.alloc()
                    .map(|x| x.to_string())
                    .unwrap_or_else(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn start_and_skip_follow_upstream_with_any_network() {
        let v4: ipnet::Ipv4Net = "198.18.70.0/24".parse().unwrap_or_else(|e| panic!("{e}"));
        let v6: ipnet::Ipv6Net = "fd00:70::/64".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            all(InterfaceAddresses::new(v4), 3),
            ["198.18.70.1/24", "198.18.70.2/24", "198.18.70.3/24"]
        );
        // default_start ::2 (VirtualBridgeVlanInHost): ::2, ::3.
        assert_eq!(
            all(InterfaceAddresses::starting_at(v6, 2, 1), 2),
            ["fd00:70::2/64", "fd00:70::3/64"]
        );
        // default_start ::2 with default_skip 2 (VirtualBridgeVlansOverBond): ::2, ::4, ::6.
        assert_eq!(
            all(InterfaceAddresses::starting_at(v6, 2, 2), 3),
            ["fd00:70::2/64", "fd00:70::4/64", "fd00:70::6/64"]
        );
        // Upstream's own default network gives upstream's addresses.
        let up: ipnet::Ipv6Net = "fc00:0:0:1::/64".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            all(InterfaceAddresses::starting_at(up, 3, 1), 2),
            ["fc00:0:0:1::3/64", "fc00:0:0:1::4/64"]
        );
        // Exhausted: an error, not a wrap-around.
        let small: ipnet::Ipv4Net = "198.18.70.0/30".parse().unwrap_or_else(|e| panic!("{e}"));
        let got = all(InterfaceAddresses::new(small), 3);
        assert_eq!(got[..2], ["198.18.70.1/30", "198.18.70.2/30"]);
        assert!(got[2].contains("too small"), "{}", got[2]);
    }

    #[test]
    fn host_checks() {
        let v = |s: &str| Value::Str(s.into());
        assert!((THREE_HOSTS.check)(&v("198.18.70.0/29")).is_ok());
        assert!((THREE_HOSTS.check)(&v("198.18.70.0/30")).is_err());
        assert!((THREE_HOSTS.check)(&v("fd00:70::/126")).is_ok());
        assert!((FOUR_HOSTS.check)(&v("fd00:70::/126")).is_err());
        assert!((FOUR_HOSTS.check)(&v("fd00:70::/125")).is_ok());
        let e = (FOUR_HOSTS.check)(&v("198.18.70.0/30"))
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            "'198.18.70.0/30' is too small: the recipe gives host addresses up to number 4 of it to its devices"
        );
        assert!((FOUR_HOSTS.check)(&Value::Int(3)).is_ok());
        assert!((ELEVEN_HOSTS.check)(&v("198.18.70.0/28")).is_ok());
        assert!((ELEVEN_HOSTS.check)(&v("198.18.70.0/29")).is_err());
    }
}
