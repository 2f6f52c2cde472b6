//! The two ethtool questions every session asks, answered with `SIOCETHTOOL` in this process
//! instead of by running the ethtool binary: the driver of an interface (listing interfaces)
//! and its features by kernel name (the state snapshot at recipe start and its restore).
//!
//! It also asks for the link state (`ETHTOOL_GLINK`), for what that does in the kernel: the
//! answer first runs the device's pending link-watch event (`linkwatch_sync_dev`), which the
//! kernel otherwise delays by up to a second after the previous one. Until that event runs, a
//! device that came up has no operational state `up`, so IPv6 keeps its addresses tentative.
//!
//! Running ethtool costs a process start per interface, which in a TCG guest (a freshly
//! booted VM agent, every library cold) is 0.1–0.5 s each; the ioctls cost microseconds.
//! Changing offloads still runs ethtool (`-K`), which checks names and dependencies.

use crate::protocol::Offload;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GLINK: u32 = 0x0000_000a;
const ETHTOOL_GSTRINGS: u32 = 0x0000_001b;
const ETHTOOL_GSSET_INFO: u32 = 0x0000_0037;
const ETHTOOL_GFEATURES: u32 = 0x0000_003a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// More features than any kernel has (about 70 in 6.x); bounds the buffers.
const MAX_FEATURES: u32 = 1024;

/// `struct ethtool_sset_info` asking for one string set.
#[repr(C)]
struct SsetInfo {
    cmd: u32,
    reserved: u32,
    sset_mask: u64,
    data: [u32; 1],
}

/// One ethtool ioctl on `ifname` with `data` as the command buffer (its first u32 is the
/// command), in the calling thread's network namespace.
fn ioctl(ifname: &str, data: *mut libc::c_void) -> std::io::Result<()> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.cast();
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a command buffer the caller
    // sized for that command.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The driver name (`ethtool -i`), None when the interface has none to tell (loopback).
pub fn driver(ifname: &str) -> Option<String> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], five u32 counts: 196 bytes.
    let mut buf = [0u32; 49];
    buf[0] = ETHTOOL_GDRVINFO;
    ioctl(ifname, buf.as_mut_ptr().cast()).ok()?;
    let bytes: Vec<u8> = buf[1..9].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let name = c_string(&bytes);
    (!name.is_empty()).then_some(name)
}

/// The carrier of `ifname` as `ethtool` shows it ("Link detected"), None when the device has
/// no such question. Asking runs the device's pending link-watch event at once (see the module
/// documentation): [`super::net::Netlink::wait_dad`] asks every device for that.
pub fn link_detected(ifname: &str) -> Option<bool> {
    // struct ethtool_value: cmd, data.
    let mut buf = [ETHTOOL_GLINK, 0u32];
    ioctl(ifname, buf.as_mut_ptr().cast()).ok()?;
    Some(buf[1] != 0)
}

/// Every feature of `ifname` by its kernel name (`tx-tcp-segmentation`, `rx-gro`), on or off,
/// and fixed when the driver cannot change it (as `ethtool -k` marks `[fixed]`).
pub fn features(ifname: &str) -> std::io::Result<Vec<Offload>> {
    let mut info = SsetInfo {
        cmd: ETHTOOL_GSSET_INFO,
        reserved: 0,
        sset_mask: 1u64 << ETH_SS_FEATURES,
        data: [0],
    };
    ioctl(ifname, (&mut info as *mut SsetInfo).cast())?;
    // The kernel clears the bit of a set it does not have.
    if info.sset_mask & (1u64 << ETH_SS_FEATURES) == 0 || info.data[0] == 0 {
        return Ok(Vec::new());
    }
    let count = info.data[0].min(MAX_FEATURES);
    // struct ethtool_gstrings: cmd, string_set, len, then len × 32 bytes.
    let n = count as usize;
    let mut strings = vec![0u32; 3 + n * ETH_GSTRING_LEN / 4];
    strings[0] = ETHTOOL_GSTRINGS;
    strings[1] = ETH_SS_FEATURES;
    strings[2] = count;
    ioctl(ifname, strings.as_mut_ptr().cast())?;
    let n = (strings[2] as usize).min(n);
    // struct ethtool_gfeatures: cmd, size (blocks), then per block available, requested,
    // active, never_changed.
    let blocks = n.div_ceil(32);
    let mut feats = vec![0u32; 2 + blocks * 4];
    feats[0] = ETHTOOL_GFEATURES;
    feats[1] = blocks as u32;
    ioctl(ifname, feats.as_mut_ptr().cast())?;
    let names: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = c_string(&names[i * ETH_GSTRING_LEN..(i + 1) * ETH_GSTRING_LEN]);
        if name.is_empty() {
            continue;
        }
        let block = &feats[2 + (i / 32) * 4..2 + (i / 32) * 4 + 4];
        let bit = 1u32 << (i % 32);
        out.push(Offload {
            name,
            enabled: block[2] & bit != 0,
            fixed: block[0] & bit == 0 || block[3] & bit != 0,
        });
    }
    Ok(out)
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn loopback_features_agree_with_ethtool_k() {
        // `ethtool -k` prints every kernel feature that has no legacy group name by its kernel
        // name: each of those must read the same here, on and fixed alike.
        let Ok(out) = std::process::Command::new("ethtool")
            .args(["-k", "lo"])
            .output()
        else {
            eprintln!("SKIP: no ethtool");
            return;
        };
        let theirs =
            crate::agent::net::parse_ethtool_features(&String::from_utf8_lossy(&out.stdout));
        let ours = features("lo").unwrap();
        assert!(ours.len() > 30, "{ours:?}");
        let mut compared = 0;
        for t in &theirs {
            if let Some(o) = ours.iter().find(|o| o.name == t.name) {
                assert_eq!((o.enabled, o.fixed), (t.enabled, t.fixed), "{}", t.name);
                compared += 1;
            }
        }
        assert!(compared > 20, "only {compared} names in common: {ours:?}");
        // Loopback has no driver to tell; an unknown interface has nothing at all.
        assert_eq!(driver("lo"), None);
        assert!(features("lnst-no-such0").is_err());
        assert!(features("").is_err() && features("a-name-far-too-long-for-linux").is_err());
    }

    #[test]
    fn a_drivers_name_agrees_with_ethtool_i() {
        // Whatever real interface this machine has (veth, virtio_net, e1000e ...).
        let Ok(rd) = std::fs::read_dir("/sys/class/net") else {
            return;
        };
        let mut compared = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(out) = std::process::Command::new("ethtool")
                .args(["-i", &name])
                .output()
            else {
                return;
            };
            let theirs =
                crate::agent::net::parse_ethtool_driver(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(driver(&name), theirs, "{name}");
            compared += usize::from(theirs.is_some());
        }
        assert!(
            compared > 0 || !root(),
            "no interface with a driver to compare"
        );
    }
}
