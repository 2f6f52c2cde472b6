//! Tap devices for the VMs' test NICs. They are opened by the runner on a thread inside the
//! switch namespace (a tap is created in the namespace of the thread that opens
//! `/dev/net/tun`), one file descriptor per queue, and the descriptors are handed to QEMU
//! (`-netdev tap,fds=...`). They are not persistent: a tap disappears with the last descriptor,
//! so a VM's taps go with its QEMU process even when nobody tears down.

use std::os::fd::{FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// Open `queues` descriptors of the tap `name` (created by the first one) in the calling
/// thread's network namespace. With more than one queue the tap is multi-queue.
pub fn open_tap(name: &str, queues: usize) -> Result<Vec<OwnedFd>, String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("tap name {name:?} is not a valid interface name"));
    }
    let mut fds = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        // SAFETY: open(2) on a constant path; the fd is owned right after.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if raw < 0 {
            return Err(format!(
                "cannot open /dev/net/tun: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed ifreq with the name and flags set; TUNSETIFF reads it.
        let rc = unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (i, b) in name.bytes().enumerate() {
                ifr.ifr_name[i] = b as libc::c_char;
            }
            let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
            if queues > 1 {
                flags |= IFF_MULTI_QUEUE;
            }
            ifr.ifr_ifru.ifru_flags = flags;
            libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), TUNSETIFF, &ifr)
        };
        if rc < 0 {
            return Err(format!(
                "cannot create tap {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        fds.push(fd);
    }
    Ok(fds)
}
