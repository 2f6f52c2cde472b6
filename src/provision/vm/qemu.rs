//! The QEMU command line of one VM agent, and the NIC models.

use super::accel::Accel;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The QEMU binary looked up on PATH.
pub const QEMU_BIN: &str = "qemu-system-x86_64";

/// virtio-serial port name the agent is reached on.
pub const CONTROL_PORT: &str = "lnst.agent";
/// 9p mount tags of the host's root and of the modules tree.
pub const ROOT_TAG: &str = "lnstroot";
pub const MODULES_TAG: &str = "lnstmods";
/// 9p mount options in the guest: cached (the host root is read-only for the guest's lifetime)
/// with large messages.
pub const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,cache=loose,msize=512000";

/// A test NIC model, chosen by a requirement interface's `driver` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    VirtioNet,
    E1000,
    E1000e,
    Igb,
}

impl NicModel {
    /// The model for a `driver` parameter (None: the default, virtio_net).
    pub fn from_driver(driver: Option<&str>) -> Result<NicModel, String> {
        match driver.map(|d| d.trim().to_ascii_lowercase()) {
            None => Ok(NicModel::VirtioNet),
            Some(d) => match d.as_str() {
                "" | "virtio_net" | "virtio-net" | "virtio" => Ok(NicModel::VirtioNet),
                "e1000" => Ok(NicModel::E1000),
                "e1000e" => Ok(NicModel::E1000e),
                "igb" => Ok(NicModel::Igb),
                _ => Err(format!(
                    "NIC driver {d:?} has no QEMU model (VM agents offer virtio_net, e1000, e1000e, igb)"
                )),
            },
        }
    }

    /// The QEMU device.
    pub fn device(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Igb => "igb",
        }
    }

    /// The guest kernel module driving it.
    pub fn module(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio_net",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Igb => "igb",
        }
    }

    /// Queue pairs this model gets with `cpus` vCPUs (multi-queue only for virtio-net; e1000e
    /// and igb have fixed queues QEMU picks itself).
    pub fn queues(self, cpus: u32) -> usize {
        match self {
            NicModel::VirtioNet => usize::try_from(cpus.clamp(1, 8)).unwrap_or(1),
            _ => 1,
        }
    }
}

/// Whether QEMU's `-device help` output lists `device`.
pub fn device_listed(help: &str, device: &str) -> bool {
    let needle = format!("name \"{device}\"");
    help.lines().any(|l| l.trim_start().starts_with(&needle))
}

/// One test NIC of a VM.
#[derive(Debug, Clone)]
pub struct NicSpec {
    pub model: NicModel,
    pub mac: String,
    /// File descriptor numbers (in QEMU) of the tap's queues.
    pub fds: Vec<i32>,
}

/// Everything that varies between VMs.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// `lnst-<run>-<host>`: QEMU's `-name`, how cleanup finds a killed run's VMs.
    pub name: String,
    pub hostname: String,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub modules_dir: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    pub control_socket: PathBuf,
    pub console_log: PathBuf,
    pub pidfile: PathBuf,
    pub nics: Vec<NicSpec>,
    /// Extra words for the kernel command line.
    pub extra_append: Vec<String>,
}

/// Kernel command line: serial console; `panic=-1` with QEMU's `-no-reboot` turns a panic into
/// a QEMU exit; the rest skips probing and work a test VM does not need (legacy keyboard
/// controller, timer checks, speculative-execution mitigations, which under TCG cost time on
/// every system call).
pub fn kernel_append(spec: &VmSpec) -> String {
    let mut words = vec![
        "console=ttyS0".to_string(),
        "quiet".into(),
        "panic=-1".into(),
        "reboot=t".into(),
        "i8042.noaux".into(),
        "i8042.nomux".into(),
        "i8042.nopnp".into(),
        "i8042.dumbkbd".into(),
        "no_timer_check".into(),
        "mitigations=off".into(),
        "rcupdate.rcu_expedited=1".into(),
        format!("lnst.hostname={}", spec.hostname),
    ];
    words.extend(spec.extra_append.iter().cloned());
    words.join(" ")
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// QEMU's arguments (without the program).
pub fn argv(spec: &VmSpec) -> Vec<OsString> {
    let p = |p: &Path| p.display().to_string();
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[String]| a.extend(items.iter().map(os));
    push(&[
        "-name".into(),
        format!("{},process={}", spec.name, spec.name),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        spec.accel.name().into(),
        // TCG's `max` model has RDRAND, so the guest's random pool is ready at once instead of
        // seconds into the boot (the agent's first nonce waits for it); KVM gets the default.
        "-cpu".into(),
        match spec.accel {
            Accel::Tcg => "max".into(),
            Accel::Kvm => "qemu64".into(),
        },
        "-smp".into(),
        spec.cpus.to_string(),
        "-m".into(),
        format!("{}M", spec.memory_mib),
        "-kernel".into(),
        p(&spec.kernel),
        "-initrd".into(),
        p(&spec.initramfs),
        "-append".into(),
        kernel_append(spec),
        "-pidfile".into(),
        p(&spec.pidfile),
        "-chardev".into(),
        format!("file,id=con,path={}", p(&spec.console_log)),
        "-serial".into(),
        "chardev:con".into(),
        "-device".into(),
        "virtio-serial-pci,id=vser".into(),
        "-chardev".into(),
        format!(
            "socket,id=ctl,path={},server=on,wait=off",
            p(&spec.control_socket)
        ),
        "-device".into(),
        format!("virtserialport,bus=vser.0,chardev=ctl,name={CONTROL_PORT}"),
        "-fsdev".into(),
        "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap".into(),
        "-device".into(),
        format!("virtio-9p-pci,fsdev=root,mount_tag={ROOT_TAG}"),
        "-fsdev".into(),
        format!(
            "local,id=mods,path={},security_model=none,readonly=on",
            p(&spec.modules_dir)
        ),
        "-device".into(),
        format!("virtio-9p-pci,fsdev=mods,mount_tag={MODULES_TAG}"),
    ]);
    for (i, nic) in spec.nics.iter().enumerate() {
        let fds = nic
            .fds
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(":");
        let netdev = if nic.fds.len() > 1 {
            format!("tap,id=n{i},fds={fds}")
        } else {
            format!("tap,id=n{i},fd={fds}")
        };
        // romfile= : no option ROM (network boot firmware): nothing to load, nothing to find.
        let mut dev = format!(
            "{},netdev=n{i},mac={},romfile=",
            nic.model.device(),
            nic.mac
        );
        if nic.model == NicModel::VirtioNet && nic.fds.len() > 1 {
            // One vector per queue of each direction, plus configuration and control; RSS
            // (QEMU steers by the Toeplitz hash, in software without eBPF), so the guest's
            // `ethtool -x/-X` and `-n/-N rx-flow-hash` work as on a multi-queue NIC.
            dev.push_str(&format!(",mq=on,vectors={},rss=on", 2 * nic.fds.len() + 2));
        }
        push(&["-netdev".into(), netdev, "-device".into(), dev]);
    }
    a
}

/// MAC of interface `iface` of host `host` (indexes in sorted requirement order): locally
/// administered, unicast, the same for every run (`02:6c:6e:00:HH:II`).
pub fn nic_mac(host: usize, iface: usize) -> Result<String, String> {
    let h = u8::try_from(host).map_err(|_| "more than 256 hosts".to_string())?;
    let i = u8::try_from(iface).map_err(|_| "more than 256 interfaces on a host".to_string())?;
    Ok(format!("02:6c:6e:00:{h:02x}:{i:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "lnst-1a2b3c4d-host1".into(),
            hostname: "host1".into(),
            kernel: "/k/vmlinuz".into(),
            initramfs: "/r/initramfs.cpio".into(),
            modules_dir: "/k/modules".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 512,
            control_socket: "/r/host1.sock".into(),
            console_log: "/r/host1.console".into(),
            pidfile: "/r/host1.pid".into(),
            nics: vec![
                NicSpec {
                    model: NicModel::VirtioNet,
                    mac: "02:6c:6e:00:00:00".into(),
                    fds: vec![7, 8],
                },
                NicSpec {
                    model: NicModel::E1000e,
                    mac: "02:6c:6e:00:00:01".into(),
                    fds: vec![9],
                },
            ],
            extra_append: Vec::new(),
        }
    }

    #[test]
    fn argv_has_the_name_the_nics_and_no_secret() {
        let a: Vec<String> = argv(&spec())
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| -> Vec<&str> {
            a.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(
            after("-name"),
            ["lnst-1a2b3c4d-host1,process=lnst-1a2b3c4d-host1"]
        );
        assert_eq!(after("-netdev"), ["tap,id=n0,fds=7:8", "tap,id=n1,fd=9"]);
        let devs = after("-device");
        assert!(devs.contains(
            &"virtio-net-pci,netdev=n0,mac=02:6c:6e:00:00:00,romfile=,mq=on,vectors=6,rss=on"
        ));
        assert!(devs.contains(&"e1000e,netdev=n1,mac=02:6c:6e:00:00:01,romfile="));
        assert_eq!(after("-accel"), ["tcg"]);
        assert!(after("-append")[0].contains("lnst.hostname=host1"));
        assert!(!a.iter().any(|s| s.contains("secret")));
        assert!(a.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn nic_models_follow_the_driver_parameter() {
        assert_eq!(NicModel::from_driver(None), Ok(NicModel::VirtioNet));
        assert_eq!(
            NicModel::from_driver(Some("virtio_net")),
            Ok(NicModel::VirtioNet)
        );
        assert_eq!(NicModel::from_driver(Some("E1000E")), Ok(NicModel::E1000e));
        assert_eq!(NicModel::from_driver(Some("igb")), Ok(NicModel::Igb));
        let e = NicModel::from_driver(Some("ice")).err().unwrap_or_default();
        assert!(e.contains("\"ice\""), "{e}");
        assert_eq!(NicModel::VirtioNet.queues(4), 4);
        assert_eq!(NicModel::E1000e.queues(4), 1);
    }

    #[test]
    fn device_help_is_searched_by_exact_name() {
        let help = "name \"e1000\", bus PCI, alias \"e1000-82540em\"\nname \"e1000e\", bus PCI\n";
        assert!(device_listed(help, "e1000"));
        assert!(device_listed(help, "e1000e"));
        assert!(!device_listed(help, "igb"));
    }

    #[test]
    fn macs_are_deterministic_and_local() {
        assert_eq!(nic_mac(1, 2).as_deref(), Ok("02:6c:6e:00:01:02"));
        assert!(nic_mac(256, 0).is_err());
    }
}
