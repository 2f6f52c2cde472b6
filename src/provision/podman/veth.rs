//! Veth fallback for a second (third, ...) interface of one host on one label: Podman attaches
//! a container to a network only once, so the extra NIC is a veth pair whose host end joins the
//! label network's bridge and whose other end moves into the container's network namespace
//! (as upstream LNST's `custom_lnst` does). Needs the controller in the host's network and pid
//! namespaces (it is, when run from the host; a controller container needs `--network=host
//! --pid=host` and CAP_NET_ADMIN).

use super::PodmanError;
use std::path::Path;

fn sys_read(name: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join(attr))
        .ok()
        .map(|s| s.trim().to_string())
}

fn ifindex(name: &str) -> Option<u32> {
    sys_read(name, "ifindex")?.parse().ok()
}

/// Create `host_end`/`ctr_end`, enslave `host_end` to `bridge` and bring it up, move `ctr_end`
/// into the netns of process `pid`. Returns `ctr_end`'s MAC (lower-case).
pub(crate) async fn attach(
    bridge: &str,
    pid: u32,
    host_end: &str,
    ctr_end: &str,
) -> Result<String, PodmanError> {
    let op = format!("veth {host_end}/{ctr_end} on bridge {bridge}");
    let bridge_idx = ifindex(bridge).ok_or_else(|| {
        PodmanError::api(
            &op,
            "bridge not found in this network namespace (the veth fallback needs the \
             controller in the host's network namespace)",
        )
    })?;
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| PodmanError::api(&op, format!("netlink: {e}")))?;
    let conn_task = tokio::spawn(conn);
    let result = async {
        handle
            .link()
            .add()
            .veth(host_end.to_string(), ctr_end.to_string())
            .execute()
            .await
            .map_err(|e| PodmanError::api(&op, format!("create: {e}")))?;
        let host_idx = ifindex(host_end)
            .ok_or_else(|| PodmanError::api(&op, format!("{host_end} vanished")))?;
        let ctr_idx =
            ifindex(ctr_end).ok_or_else(|| PodmanError::api(&op, format!("{ctr_end} vanished")))?;
        let mac = sys_read(ctr_end, "address")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| PodmanError::api(&op, format!("no MAC on {ctr_end}")))?
            .to_ascii_lowercase();
        handle
            .link()
            .set(ctr_idx)
            .setns_by_pid(pid)
            .execute()
            .await
            .map_err(|e| PodmanError::api(&op, format!("move into pid {pid}'s netns: {e}")))?;
        handle
            .link()
            .set(host_idx)
            .controller(bridge_idx)
            .execute()
            .await
            .map_err(|e| PodmanError::api(&op, format!("enslave to {bridge}: {e}")))?;
        handle
            .link()
            .set(host_idx)
            .up()
            .execute()
            .await
            .map_err(|e| PodmanError::api(&op, format!("set up: {e}")))?;
        Ok(mac)
    }
    .await;
    conn_task.abort();
    result
}

/// Delete a host end (its peer goes with it); already gone is fine.
pub(crate) async fn remove(host_end: &str) -> Result<(), String> {
    let Some(idx) = ifindex(host_end) else {
        return Ok(());
    };
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("remove veth {host_end}: {e}"))?;
    let conn_task = tokio::spawn(conn);
    let r = handle.link().del(idx).execute().await;
    conn_task.abort();
    match r {
        Ok(()) => Ok(()),
        Err(_) if ifindex(host_end).is_none() => Ok(()),
        Err(e) => Err(format!("remove veth {host_end}: {e}")),
    }
}

/// Delete `bridge` when it is a bridge in this namespace with no port (a network's bridge the
/// engine left behind); anything else, or nothing by that name, is left alone. True when
/// deleted.
pub(crate) async fn remove_orphan_bridge(bridge: &str) -> Result<bool, String> {
    if bridge.is_empty() || bridge.contains('/') || bridge.starts_with('.') {
        return Ok(false);
    }
    let dir = std::path::Path::new("/sys/class/net").join(bridge);
    let Some(idx) = ifindex(bridge) else {
        return Ok(false);
    };
    let ports = std::fs::read_dir(dir.join("brif")).map(|d| d.count());
    if !dir.join("bridge").is_dir() || !matches!(ports, Ok(0)) {
        return Ok(false);
    }
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("remove bridge {bridge}: {e}"))?;
    let conn_task = tokio::spawn(conn);
    let r = handle.link().del(idx).execute().await;
    conn_task.abort();
    match r {
        Ok(()) => {
            tracing::debug!("removed the orphaned bridge {bridge}");
            Ok(true)
        }
        Err(_) if ifindex(bridge).is_none() => Ok(false),
        Err(e) => Err(format!("remove bridge {bridge}: {e}")),
    }
}

/// Interface names for the veth pair of (run, host, interface): ≤ 15 characters, stable.
pub(crate) fn names(run: &str, host: &str, iface: &str) -> (String, String) {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{run}\0{host}\0{iface}").as_bytes());
    let h = hex::encode(&digest[..4]);
    (format!("lnv{h}h"), format!("lnv{h}c"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_distinct_and_stable() {
        let (a, b) = names("run", "host1", "eth1");
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
        assert_eq!(names("run", "host1", "eth1"), (a.clone(), b));
        assert_ne!(names("run", "host1", "eth2").0, a);
        assert_ne!(names("run2", "host1", "eth1").0, a);
    }
}
