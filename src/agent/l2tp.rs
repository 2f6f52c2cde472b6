//! Static L2TPv3 tunnels and sessions (upstream's `L2TPManager` and `L2TPSessionDevice`):
//! checked here, made by iproute2's `ip l2tp` (an argv, never a shell) over the kernel's
//! `l2tp` generic-netlink family, and deleted again by the link journal (`ip l2tp del tunnel`
//! also removes the tunnel's sessions and their devices). A kernel without L2TP fails with
//! `Unsupported` naming the feature.

use super::OpError;
use crate::protocol::{ErrorKind, L2tpEncap, L2tpSessionSpec, L2tpTunnelSpec};
use std::time::Duration;

/// The modules an L2TP tunnel and its Ethernet sessions need.
pub const MODULES: [&str; 4] = ["l2tp_netlink", "l2tp_eth", "l2tp_ip", "l2tp_ip6"];

const FEATURE: (&str, &str) = ("L2TPv3 support", "modules l2tp_netlink, l2tp_eth, l2tp_ip");

fn bad(m: String) -> OpError {
    OpError::new(ErrorKind::BadRequest, m)
}

/// A tunnel's fields: ids above 0, addresses of one family, UDP ports only over UDP.
pub fn check_tunnel(t: &L2tpTunnelSpec) -> Result<(), OpError> {
    if t.tunnel_id == 0 || t.peer_tunnel_id == 0 {
        return Err(bad(format!(
            "l2tp tunnel {}: tunnel ids must be above 0",
            t.tunnel_id
        )));
    }
    if t.local.is_ipv6() != t.remote.is_ipv6() {
        return Err(bad(format!(
            "l2tp tunnel {}: local {} and remote {} differ in family",
            t.tunnel_id, t.local, t.remote
        )));
    }
    if t.encap == L2tpEncap::Ip && (t.udp_sport.is_some() || t.udp_dport.is_some()) {
        return Err(bad(format!(
            "l2tp tunnel {}: UDP ports need encap udp",
            t.tunnel_id
        )));
    }
    Ok(())
}

/// A session's fields: ids above 0 and a valid device name.
pub fn check_session(s: &L2tpSessionSpec) -> Result<(), OpError> {
    super::net::check_ifname(&s.ifname)?;
    if s.tunnel_id == 0 || s.session_id == 0 || s.peer_session_id == 0 {
        return Err(bad(format!(
            "l2tp session {}: ids must be above 0",
            s.ifname
        )));
    }
    Ok(())
}

/// `ip l2tp del tunnel tunnel_id ID` (its sessions go with it).
pub fn del_tunnel_argv(id: u32) -> Vec<String> {
    ["ip", "l2tp", "del", "tunnel", "tunnel_id"]
        .iter()
        .map(|s| s.to_string())
        .chain([id.to_string()])
        .collect()
}

/// `ip l2tp del session tunnel_id T session_id S`.
pub fn del_session_argv(s: &L2tpSessionSpec) -> Vec<String> {
    ["ip", "l2tp", "del", "session", "tunnel_id"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            s.tunnel_id.to_string(),
            "session_id".into(),
            s.session_id.to_string(),
        ])
        .collect()
}

async fn ip(argv: &[String]) -> Result<std::process::Output, OpError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(OpError::new(ErrorKind::Internal, "empty argv"));
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .map_err(|_| OpError::new(ErrorKind::Failed, format!("{prog} did not finish in 20 s")))?
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (not found in PATH: Debian package iproute2)"
            } else {
                ""
            };
            OpError::new(ErrorKind::Failed, format!("{prog}: {e}{hint}"))
        })
}

/// Run an `ip l2tp` argv; a kernel without the `l2tp` family is `Unsupported` naming it.
pub async fn run(argv: &[String]) -> Result<(), OpError> {
    if argv.get(1).map(String::as_str) != Some("l2tp") {
        return Err(OpError::new(ErrorKind::Internal, "not an ip l2tp argv"));
    }
    let out = ip(argv).await?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    // Tell a kernel without L2TP from a refused request: `ip l2tp show tunnel` only needs
    // the generic-netlink family.
    let probe = ip(&["ip", "l2tp", "show", "tunnel"].map(String::from)).await?;
    if !probe.status.success() {
        return Err(super::links::unsupported(FEATURE));
    }
    Err(OpError::new(
        ErrorKind::Failed,
        format!("{}: {err}", argv.join(" ")),
    ))
}
