//! VM source (`LNST_AGENTS=vm`): one QEMU virtual machine per requirement host, booting the
//! kernel under test over a read-only view of this host's root filesystem. Design: docs/VM.md.
//!
//! Per run: a run directory `/run/lnst-runner/vm-<runid>/` (mode 0700: the initramfs, one
//! control socket, console log and pidfile per VM), the switch namespace `lnst-<runid>-sw` with
//! one bridge per network label (as the netns source) and one tap per requirement interface,
//! and the VMs, named `lnst-<runid>-<host>` (QEMU's `-name`). The run's state file
//! (`/run/lnst-runner/<runid>.json`, the netns format) is written before anything is created, so
//! teardown and [`cleanup_leftovers`] (after a killed run) find everything.
//!
//! The agent in each VM is reached over a virtio-serial port (the QEMU chardev socket in the
//! run directory): no network is needed for control. The run's secret is the first line the
//! runner writes on that channel; the VM's init hands it to the agent in its environment.

pub mod accel;
pub mod initramfs;
pub mod kernel;
pub mod qemu;
pub mod tap;

use crate::provision::netns::{self, names, nsfs, state};
use crate::provision::{
    AgentEndpoint, IfaceBinding, ProvisionError, Provisioner, TeardownErrors, Transport,
};
use crate::requirements::Requirements;
use accel::Accel;
use futures::future::BoxFuture;
use qemu::{NicModel, NicSpec, VmSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Prefix of a run directory under [`state::STATE_DIR`] (`vm-<runid>`).
pub const RUN_DIR_PREFIX: &str = "vm-";

/// Modules the guest needs before its root exists: PCI virtio, the control port, 9p, overlay.
pub const TRANSPORT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// Boot bound by accelerator: from QEMU's start to the agent's first bytes.
pub fn default_boot_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(30),
        Accel::Tcg => Duration::from_secs(90),
    }
}

/// vCPUs per VM when `LNST_VM_CPUS` does not say (`requested`): 2 under KVM. Under TCG every
/// vCPU is a host thread that is busy whenever the guest is, so a run's VMs get no more vCPUs
/// than the host has cores for them: `host_cpus / vms`, at least 1, at most 2. Oversubscribed,
/// TCG guests lose far more than the second vCPU gives: on 2 host cores, two 2-vCPU VMs took
/// 4.0–4.6 s to boot and 1.7–2.5 s to make a team, against 2.9–3.2 s and 0.34–0.39 s with one
/// vCPU each (docs/VM.md, "vCPUs").
pub fn vcpus(accel: Accel, requested: Option<u32>, vms: usize, host_cpus: usize) -> u32 {
    if let Some(n) = requested {
        return n;
    }
    match accel {
        Accel::Kvm => 2,
        Accel::Tcg => {
            let per_vm = host_cpus / vms.max(1);
            u32::try_from(per_vm.clamp(1, 2)).unwrap_or(1)
        }
    }
}

/// The host's CPUs this process may run on (1 when that cannot be read).
fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Everything a VM provisioner needs; checked before the run starts.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub run_id: String,
    pub kernel: PathBuf,
    pub modules_dir: PathBuf,
    pub accel: Accel,
    /// vCPUs per VM as asked (`LNST_VM_CPUS`); None: [`vcpus`] chooses.
    pub cpus: Option<u32>,
    pub memory_mib: u32,
    /// `lnst-agent` as a path of this host (the guest sees the same path).
    pub agent: PathBuf,
    /// `lnst-vm-init`.
    pub init: PathBuf,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    pub boot_timeout: Duration,
    /// The run's secret (first line on each control channel, set on each endpoint).
    pub agent_secret: Option<String>,
    /// Extra words for the guest kernel's command line (LNST_VM_APPEND).
    pub extra_append: Vec<String>,
    /// Put the modules of each VM's devices on its kernel command line (`lnst.modules=`), for
    /// the agent to load from its start, beside the handshake (LNST_VM_PRELOAD).
    pub preload_modules: bool,
    /// The uncompressed kernel in a memory file, when [`prepare_kernel`] extracted it: QEMU
    /// boots that (`-kernel /dev/fd/N`) instead of `kernel`.
    pub boot_kernel: Option<Arc<OwnedFd>>,
}

/// Decide what QEMU boots for `kernel` (run once per run): an ELF `vmlinux` with a PVH entry
/// point as it is; a bzImage's uncompressed kernel, extracted on the host into a memory file
/// (no file to clean up; it goes with the runner), so that the guest does not spend seconds of
/// TCG time decompressing itself; the bzImage itself when that is not possible. Logs one line.
pub fn prepare_kernel(kernel: &Path) -> Result<Option<Arc<OwnedFd>>, String> {
    let t0 = Instant::now();
    let data = std::fs::read(kernel).map_err(|e| format!("kernel {}: {e}", kernel.display()))?;
    if kernel::is_elf(&data) {
        if kernel::has_pvh_note(&data) {
            return Ok(None);
        }
        return Err(format!(
            "kernel {} is an ELF file without a PVH entry point (CONFIG_PVH); give its bzImage (arch/x86/boot/bzImage)",
            kernel.display()
        ));
    }
    match kernel::extract_vmlinux(&data) {
        Ok(vmlinux) => {
            let fd =
                memfd_with(&vmlinux).map_err(|e| format!("memory file for the kernel: {e}"))?;
            tracing::info!(
                "VM kernel: {} decompressed on the host ({} MB in {} ms), booted directly (PVH)",
                kernel.display(),
                vmlinux.len() / (1 << 20),
                t0.elapsed().as_millis()
            );
            Ok(Some(Arc::new(fd)))
        }
        Err(why) => {
            tracing::info!(
                "VM kernel: {} booted as it is ({why}); the guest decompresses it",
                kernel.display()
            );
            Ok(None)
        }
    }
}

/// A sealed-by-convention memory file holding `data` (close-on-exec).
fn memfd_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::Write;
    // SAFETY: memfd_create with a constant name; the fd is owned right away.
    let raw = unsafe { libc::memfd_create(c"lnst-vmlinux".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut f = std::fs::File::from(fd);
    f.write_all(data)?;
    Ok(OwnedFd::from(f))
}

/// Path of a run's directory.
pub fn run_dir(run_id: &str) -> PathBuf {
    Path::new(state::STATE_DIR).join(format!("{RUN_DIR_PREFIX}{run_id}"))
}

/// QEMU `-name` of a host's VM.
pub fn vm_name(run_id: &str, host: &str) -> String {
    names::host_ns_name(run_id, host)
}

/// Directories a guest does not see from the host (its own /dev, /proc, /sys, /run).
const GUEST_OWN_DIRS: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// An `lnst-agent` path the guest can execute: absolute, and not under the guest's own
/// /dev, /proc, /sys or /run.
pub fn check_agent_path(agent: &Path) -> Result<PathBuf, String> {
    let abs = agent
        .canonicalize()
        .map_err(|e| format!("lnst-agent {}: {e}", agent.display()))?;
    visible_in_guest(&abs)?;
    Ok(abs)
}

/// An absolute host path the guest sees (not under its own /dev, /proc, /sys, /run).
fn visible_in_guest(abs: &Path) -> Result<(), String> {
    match GUEST_OWN_DIRS.iter().find(|d| abs.starts_with(d)) {
        Some(d) => Err(format!(
            "lnst-agent {} is under {d}, which a VM does not see from the host",
            abs.display()
        )),
        None => Ok(()),
    }
}

/// `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(qemu::QEMU_BIN))
                .find(|c| c.is_file())
        })
        .ok_or_else(|| {
            format!(
                "{} not found on PATH (VM agents need QEMU: apt-get install qemu-system-x86)",
                qemu::QEMU_BIN
            )
        })
}

/// `lnst-vm-init`: `LNST_VM_INIT_BIN`, or next to `agent` (both are built together).
pub fn find_init(agent: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LNST_VM_INIT_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("LNST_VM_INIT_BIN={} does not exist", p.display()))
        };
    }
    let cand = agent.with_file_name("lnst-vm-init");
    if cand.is_file() {
        Ok(cand)
    } else {
        Err(format!(
            "lnst-vm-init not found next to {} (build it with cargo build, or set LNST_VM_INIT_BIN)",
            agent.display()
        ))
    }
}

/// One test NIC to create.
#[derive(Debug, Clone)]
struct NicPlan {
    req_id: String,
    model: NicModel,
    mac: String,
    tap: String,
    bridge: String,
    queues: usize,
}

/// One VM to start.
#[derive(Debug, Clone)]
struct HostPlan {
    host_id: String,
    name: String,
    nics: Vec<NicPlan>,
    /// Kernel modules the agent loads while it connects (`lnst.modules=` on the kernel
    /// command line, passed on by lnst-vm-init as `--preload-modules`).
    modules: Vec<&'static str>,
    /// vCPUs of this VM ([`vcpus`]).
    cpus: u32,
}

/// A started VM.
struct VmProc {
    host_id: String,
    child: tokio::process::Child,
    pidfd: Option<OwnedFd>,
    /// QEMU's last stderr lines.
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Creates the VMs of one run; see the module docs.
pub struct VmProvisioner {
    opts: VmOptions,
    state: state::RunState,
    wrote_state: bool,
    made_run_dir: bool,
    vms: Vec<VmProc>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn setup(msg: impl Into<String>) -> ProvisionError {
    ProvisionError::Setup(msg.into())
}

/// `pidfd_open(2)`.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: a plain system call; the returned descriptor is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`; a process already gone is fine.
fn pidfd_kill(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: a plain system call on an open pidfd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether the process of a pidfd has exited (the pidfd polls readable), without waiting.
fn pidfd_has_exited(fd: RawFd, wait_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of an open descriptor.
    unsafe { libc::poll(&mut pfd, 1, wait_ms) > 0 }
}

/// Resolve once the process of a pidfd has exited (checked every 50 ms).
async fn pidfd_exited(fd: RawFd) {
    while !pidfd_has_exited(fd, 0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use super::log_tail as console_tail;

/// The console lines of each VM that go to the debug log when it is torn down.
const CONSOLE_LOGGED: usize = 60;

impl VmProvisioner {
    pub fn new(opts: VmOptions) -> VmProvisioner {
        let state = state::RunState::for_this_process(&opts.run_id);
        VmProvisioner {
            opts,
            state,
            wrote_state: false,
            made_run_dir: false,
            vms: Vec::new(),
        }
    }

    pub fn options(&self) -> &VmOptions {
        &self.opts
    }

    fn record(&mut self) -> Result<(), ProvisionError> {
        self.wrote_state = true;
        state::write_state(&self.state).map_err(|e| {
            setup(format!(
                "cannot write state file {}: {e}",
                state::state_file_path(&self.opts.run_id).display()
            ))
        })
    }

    /// Check the ids and NIC models and compute what to create, before anything is created.
    fn plan(&self, reqs: &Requirements) -> Result<(Vec<String>, Vec<HostPlan>), ProvisionError> {
        names::validate_run_id(&self.opts.run_id).map_err(ProvisionError::Setup)?;
        let labels = reqs.labels();
        let bridge_of: BTreeMap<&str, String> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), names::bridge_name(i)))
            .collect();
        let mut hosts = Vec::new();
        let cpus = vcpus(
            self.opts.accel,
            self.opts.cpus,
            reqs.hosts.len(),
            host_cpus(),
        );
        for (hidx, (host_id, host)) in reqs.hosts.iter().enumerate() {
            names::validate_host_id(host_id).map_err(ProvisionError::Unsatisfiable)?;
            let mut nics = Vec::new();
            for (iidx, (req_id, dev)) in host.interfaces.iter().enumerate() {
                let model = NicModel::from_driver(dev.params.get("driver").map(String::as_str))
                    .map_err(|e| {
                        ProvisionError::Unsatisfiable(format!("{host_id}.{req_id}: {e}"))
                    })?;
                let bridge = bridge_of
                    .get(dev.label.as_str())
                    .cloned()
                    .ok_or_else(|| setup(format!("network label {:?} has no bridge", dev.label)))?;
                nics.push(NicPlan {
                    req_id: req_id.clone(),
                    model,
                    mac: qemu::nic_mac(hidx, iidx).map_err(ProvisionError::Unsatisfiable)?,
                    tap: format!("tap{hidx}i{iidx}"),
                    bridge,
                    queues: model.queues(cpus),
                });
            }
            hosts.push(HostPlan {
                host_id: host_id.clone(),
                name: vm_name(&self.opts.run_id, host_id),
                nics,
                modules: reqs
                    .kernel_modules
                    .get(host_id)
                    .cloned()
                    .unwrap_or_default(),
                cpus,
            });
        }
        let bridges = (0..labels.len()).map(names::bridge_name).collect();
        Ok((bridges, hosts))
    }

    /// The models QEMU must offer, checked against `-device help` (igb arrived in QEMU 8.0).
    async fn check_models(&self, hosts: &[HostPlan]) -> Result<(), ProvisionError> {
        let wanted: BTreeSet<&'static str> = hosts
            .iter()
            .flat_map(|h| h.nics.iter().map(|n| n.model.device()))
            .filter(|d| *d != NicModel::VirtioNet.device())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let out = tokio::process::Command::new(&self.opts.qemu)
            .args(["-nodefaults", "-machine", "none", "-device", "help"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| setup(format!("{}: {e}", self.opts.qemu.display())))?;
        let help = String::from_utf8_lossy(&out.stdout);
        for d in wanted {
            if !qemu::device_listed(&help, d) {
                return Err(ProvisionError::Unsatisfiable(format!(
                    "NIC model {d} is not available in this QEMU ({}); its version may be too old",
                    self.opts.qemu.display()
                )));
            }
        }
        Ok(())
    }

    async fn provision_inner(
        &mut self,
        reqs: &Requirements,
    ) -> Result<Vec<AgentEndpoint>, ProvisionError> {
        netns::NetnsProvisioner::check_root()?;
        let (bridges, hosts) = self.plan(reqs)?;
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        self.check_models(&hosts).await?;
        let cpus = hosts.first().map_or(0, |h| h.cpus);
        crate::say!(
            "{} VM(s) under {}, {cpus} vCPU(s) and {} MiB each",
            hosts.len(),
            self.opts.accel,
            self.opts.memory_mib
        );
        let started = Instant::now();
        let run_id = self.opts.run_id.clone();
        let sw = names::switch_ns_name(&run_id);
        let dir = run_dir(&run_id);

        // The modules the guest loads from its initramfs, dependencies first.
        let tree =
            kernel::ModuleTree::load(&self.opts.modules_dir).map_err(|e| setup(e.to_string()))?;
        let mut wanted: Vec<&str> = TRANSPORT_MODULES.to_vec();
        for h in &hosts {
            for n in &h.nics {
                if !wanted.contains(&n.model.module()) {
                    wanted.push(n.model.module());
                }
            }
        }
        let modules = tree.load_order(&wanted).map_err(|e| setup(e.to_string()))?;

        // A fresh run must not reuse another run's id: teardown would delete its VMs.
        if !self.wrote_state {
            let taken = std::fs::symlink_metadata(nsfs::ns_path(&sw)).is_ok()
                || state::state_file_path(&run_id).exists()
                || dir.exists();
            if taken {
                return Err(setup(format!(
                    "run id {run_id} is already in use; `lnst-runner cleanup` removes leftovers of killed runs"
                )));
            }
        }
        if !self.state.namespaces.contains(&sw) {
            self.state.namespaces.push(sw.clone());
        }
        self.record()?;
        self.made_run_dir = true;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| setup(format!("cannot create {}: {e}", dir.display())))?;
        }

        // 1. The initramfs (shared by the run's VMs).
        let initrd = dir.join("initramfs.cpio");
        let spec = initramfs::InitramfsSpec {
            init: self.opts.init.clone(),
            modules,
            conf: vec![
                format!("agent {}", self.opts.agent.display()),
                "arg --stdio".into(),
                "arg --load-modules".into(),
                format!("root_tag {}", qemu::ROOT_TAG),
                format!("modules_tag {}", qemu::MODULES_TAG),
                format!("port {}", qemu::CONTROL_PORT),
                format!("9p_options {}", qemu::NINEP_OPTIONS),
            ],
        };
        let dest = initrd.clone();
        let size = tokio::task::spawn_blocking(move || initramfs::write_initramfs(&spec, &dest))
            .await
            .map_err(|e| setup(format!("initramfs writer: {e}")))?
            .map_err(|e| setup(format!("initramfs: {e}")))?;
        tracing::debug!(bytes = size, "initramfs written");

        // 2. Switch namespace: one bridge per label, one tap per NIC (its queue descriptors
        //    come back to this process and go to QEMU).
        let tap_jobs: Vec<Vec<(String, String, usize)>> = hosts
            .iter()
            .map(|h| {
                h.nics
                    .iter()
                    .map(|n| (n.tap.clone(), n.bridge.clone(), n.queues))
                    .collect()
            })
            .collect();
        let mut tap_fds: Vec<Vec<Vec<OwnedFd>>> = nsfs::in_netns(
            nsfs::NsEntry::Create(sw.clone()),
            move |handle| async move {
                // No addresses at all on the switch side, not even IPv6 link-local ones.
                for scope in ["all", "default"] {
                    let _ = std::fs::write(
                        format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"),
                        "1",
                    );
                }
                let mut bridge_idx = BTreeMap::new();
                for br in bridges {
                    netns::create_bridge(&handle, &br).await?;
                    let idx = netns::link_by_name(&handle, &br).await?.header.index;
                    bridge_idx.insert(br, idx);
                }
                let mut out = Vec::new();
                for host in tap_jobs {
                    let mut per_host = Vec::new();
                    for (tap, bridge, queues) in host {
                        let fds = tap::open_tap(&tap, queues).map_err(ProvisionError::Setup)?;
                        let idx = netns::link_by_name(&handle, &tap).await?.header.index;
                        let br = bridge_idx.get(&bridge).copied().unwrap_or_default();
                        handle
                            .link()
                            .set(idx)
                            .controller(br)
                            .up()
                            .execute()
                            .await
                            .map_err(|e| setup(format!("cannot attach {tap} to {bridge}: {e}")))?;
                        per_host.push(fds);
                    }
                    out.push(per_host);
                }
                Ok(out)
            },
        )
        .await?;

        // 3. The VMs, all at once.
        let mut waits = Vec::new();
        for (h, fds) in hosts.iter().zip(tap_fds.drain(..)) {
            let (sock, console) = self.start_vm(h, fds, &initrd)?;
            let Some(vm) = self.vms.last() else {
                return Err(setup("internal: the VM was not recorded"));
            };
            let pidfd = vm.pidfd.as_ref().map(|f| f.as_raw_fd());
            waits.push(wait_for_agent(
                h.host_id.clone(),
                sock,
                console,
                pidfd,
                vm.stderr.clone(),
                self.opts.agent_secret.clone(),
                self.opts.boot_timeout,
                self.opts.accel,
            ));
        }
        self.state.agent_pids = self.vms.iter().filter_map(|v| v.child.id()).collect();
        self.record()?;

        // 4. Every agent has started (its first bytes arrived), or a named error.
        let streams: Vec<tokio::net::UnixStream> = futures::future::join_all(waits)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;

        let mut endpoints = Vec::new();
        for (h, stream) in hosts.iter().zip(streams) {
            let control_socket = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned().ok();
            let (r, w) = stream.into_split();
            endpoints.push(AgentEndpoint {
                host_id: h.host_id.clone(),
                target: h.name.clone(),
                hostname: h.name.clone(),
                transport: Transport {
                    reader: Box::new(r),
                    writer: Box::new(w),
                },
                secret: self
                    .opts
                    .agent_secret
                    .as_ref()
                    .map(|s| s.as_bytes().to_vec()),
                interfaces: h
                    .nics
                    .iter()
                    .map(|n| {
                        (
                            n.req_id.clone(),
                            IfaceBinding {
                                ifname: None,
                                hwaddr: n.mac.clone(),
                                target: n.tap.clone(),
                            },
                        )
                    })
                    .collect(),
                console_log: Some(run_dir(&run_id).join(format!("{}.console", h.host_id))),
                control_socket,
            });
        }
        tracing::info!(
            run = %run_id,
            hosts = endpoints.len(),
            accel = %self.opts.accel,
            vcpus = cpus,
            elapsed = ?started.elapsed(),
            "VM agents started"
        );
        Ok(endpoints)
    }

    /// Spawn QEMU for one host with its taps' descriptors; returns the control socket and the
    /// console log paths.
    fn start_vm(
        &mut self,
        h: &HostPlan,
        fds: Vec<Vec<OwnedFd>>,
        initrd: &Path,
    ) -> Result<(PathBuf, PathBuf), ProvisionError> {
        let dir = run_dir(&self.opts.run_id);
        let sock = dir.join(format!("{}.sock", h.host_id));
        let console = dir.join(format!("{}.console", h.host_id));
        let pidfile = dir.join(format!("{}.pid", h.host_id));
        let mut raw_fds = Vec::new();
        let kernel = match &self.opts.boot_kernel {
            Some(fd) => {
                raw_fds.push(fd.as_raw_fd());
                PathBuf::from(format!("/dev/fd/{}", fd.as_raw_fd()))
            }
            None => self.opts.kernel.clone(),
        };
        let mut nics = Vec::new();
        for (n, queue_fds) in h.nics.iter().zip(&fds) {
            let q: Vec<RawFd> = queue_fds.iter().map(|f| f.as_raw_fd()).collect();
            raw_fds.extend(q.iter().copied());
            nics.push(NicSpec {
                model: n.model,
                mac: n.mac.clone(),
                fds: q,
            });
        }
        let spec = VmSpec {
            name: h.name.clone(),
            hostname: h.host_id.clone(),
            kernel,
            initramfs: initrd.to_path_buf(),
            modules_dir: self.opts.modules_dir.clone(),
            accel: self.opts.accel,
            cpus: h.cpus,
            memory_mib: self.opts.memory_mib,
            control_socket: sock.clone(),
            console_log: console.clone(),
            pidfile,
            nics,
            extra_append: {
                let mut words = self.opts.extra_append.clone();
                if self.opts.preload_modules && !h.modules.is_empty() {
                    words.push(format!("lnst.modules={}", h.modules.join(",")));
                }
                words
            },
        };
        let mut cmd = tokio::process::Command::new(&self.opts.qemu);
        cmd.args(qemu::argv(&spec))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (fcntl, setpgid) on descriptors opened before
        // the fork; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &raw_fds {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Its own process group: a terminal's Ctrl-C reaches the runner, which tears
                // the VM down, not QEMU directly.
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            setup(format!(
                "cannot start {} for {}: {e}",
                self.opts.qemu.display(),
                h.host_id
            ))
        })?;
        drop(fds); // QEMU holds the taps now
        let pidfd = child.id().and_then(|pid| pidfd_open(pid).ok());
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let host = h.host_id.clone();
            let keep = stderr_lines.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(host = %host, "qemu: {line}");
                    let mut k = lock(&keep);
                    k.push(line);
                    if k.len() > 20 {
                        k.remove(0);
                    }
                }
            });
        }
        tracing::debug!(host = %h.host_id, pid = ?child.id(), "started VM {}", h.name);
        self.vms.push(VmProc {
            host_id: h.host_id.clone(),
            child,
            pidfd,
            stderr: stderr_lines,
        });
        Ok((sock, console))
    }

    async fn teardown_inner(&mut self) -> Result<(), TeardownErrors> {
        let mut errs = TeardownErrors::default();
        // 0. An interrupted provisioning may still have a namespace worker creating taps.
        if !nsfs::wait_for_workers(Duration::from_secs(10)).await {
            errs.push("namespace workers still running after 10 s; teardown goes on anyway");
        }
        // 1. VMs: nothing in them needs an orderly shutdown (the root is read-only, writes
        //    live in guest memory), so they are killed, all at once, then reaped.
        for vm in &mut self.vms {
            let r = match &vm.pidfd {
                Some(fd) => pidfd_kill(fd),
                None => vm.child.start_kill(),
            };
            if let Err(e) = r {
                if vm.child.try_wait().ok().flatten().is_none() {
                    errs.push(format!("killing the VM of {}: {e}", vm.host_id));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let hosts: Vec<String> = self.vms.iter().map(|v| v.host_id.clone()).collect();
        for mut vm in self.vms.drain(..) {
            match tokio::time::timeout_at(deadline, vm.child.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => errs.push(format!("waiting for the VM of {}: {e}", vm.host_id)),
                Err(_) => errs.push(format!(
                    "the VM of {} did not exit after SIGKILL",
                    vm.host_id
                )),
            }
        }
        self.state.agent_pids.clear();
        // 2. The switch namespace (bridges; the taps went with QEMU).
        let mut remaining = Vec::new();
        for ns in self.state.namespaces.iter().rev() {
            if let Err(e) = nsfs::delete_named_ns(ns) {
                errs.push(e);
                remaining.push(ns.clone());
            }
        }
        remaining.reverse();
        self.state.namespaces = remaining;
        // 3. The run directory (sockets, console logs, initramfs); with DEBUG the end of
        //    each console goes to the log first (the guest's init and agent write there).
        if tracing::enabled!(tracing::Level::DEBUG) {
            for host in &hosts {
                let path = run_dir(&self.opts.run_id).join(format!("{host}.console"));
                for line in super::log_last_lines(&path, CONSOLE_LOGGED) {
                    tracing::debug!(host = %host, "console: {line}");
                }
            }
        }
        if self.made_run_dir {
            let dir = run_dir(&self.opts.run_id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => self.made_run_dir = false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.made_run_dir = false,
                Err(e) => errs.push(format!("cannot remove {}: {e}", dir.display())),
            }
        }
        // 4. The state file: gone when everything is gone.
        if self.state.namespaces.is_empty() && !self.made_run_dir {
            if self.wrote_state {
                match state::remove_state(&state::state_file_path(&self.opts.run_id)) {
                    Ok(_) => self.wrote_state = false,
                    Err(e) => errs.push(e),
                }
            }
        } else if let Err(e) = state::write_state(&self.state) {
            errs.push(format!("cannot update state file: {e}"));
        }
        errs.into_result()
    }
}

/// Connect to a VM's control socket, send the secret line, and wait for the agent's first
/// bytes, bounded by `timeout`; a VM that stops first is an error with its last console lines.
#[allow(clippy::too_many_arguments)]
async fn wait_for_agent(
    host: String,
    sock: PathBuf,
    console: PathBuf,
    pidfd: Option<RawFd>,
    qemu_stderr: Arc<Mutex<Vec<String>>>,
    secret: Option<String>,
    timeout: Duration,
    accel: Accel,
) -> Result<tokio::net::UnixStream, ProvisionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let stopped = |what: &str| {
        let stderr = lock(&qemu_stderr).join(" | ");
        let tail = console_tail(&console, 6);
        let mut msg = format!("the VM of {host} stopped {what}");
        if !stderr.is_empty() {
            msg.push_str(&format!("; qemu: {stderr}"));
        }
        if !tail.is_empty() {
            msg.push_str(&format!("; console: {tail}"));
        }
        setup(msg)
    };
    let exited = async {
        match pidfd {
            Some(fd) => pidfd_exited(fd).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exited);
    let t0 = Instant::now();
    let work = async {
        // QEMU creates the socket while it starts.
        let mut stream = loop {
            match tokio::net::UnixStream::connect(&sock).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        tracing::debug!(host = %host, elapsed = ?t0.elapsed(), "control channel connected");
        let line = match &secret {
            Some(s) => format!("lnst-secret {s}\n"),
            None => "lnst-nosecret\n".to_string(),
        };
        stream.write_all(line.as_bytes()).await?;
        stream.readable().await?;
        tracing::debug!(host = %host, elapsed = ?t0.elapsed(), "the agent has started");
        Ok::<_, std::io::Error>(stream)
    };
    tokio::select! {
        r = work => r.map_err(|e| setup(format!("control channel of {host}: {e}"))),
        _ = &mut exited => Err(stopped("before its agent started")),
        _ = tokio::time::sleep_until(deadline) => Err(setup(format!(
            "the agent of {host} did not start within {} s (accelerator {accel}){}",
            timeout.as_secs(),
            {
                let tail = console_tail(&console, 4);
                if tail.is_empty() { String::new() } else { format!("; console: {tail}") }
            }
        ))),
    }
}

impl Provisioner for VmProvisioner {
    fn provision<'a>(
        &'a mut self,
        reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, ProvisionError>> {
        Box::pin(self.provision_inner(reqs))
    }

    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>> {
        Box::pin(self.teardown_inner())
    }
}

// ---------------------------------------------------------------------------------------------
// Leftovers of killed runs
// ---------------------------------------------------------------------------------------------

/// A QEMU process of ours: its pid, and the run and VM name from its `-name lnst-<run>-<host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmProcess {
    pub pid: u32,
    pub run_id: String,
    pub name: String,
}

/// The VM name in a QEMU argv (`-name lnst-<run>-<host>[,process=...]`), if it is one of ours.
pub fn vm_name_in_argv(argv: &[&str]) -> Option<(String, String)> {
    let i = argv.iter().position(|a| *a == "-name")?;
    let value = argv.get(i + 1)?;
    let name = value.split(',').next()?;
    let run = names::run_id_of_namespace(name)?;
    Some((run.to_string(), name.to_string()))
}

/// Every running QEMU of ours, found by its `-name` in `/proc/<pid>/cmdline`.
pub fn vm_processes() -> Vec<VmProcess> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_qemu = args.first().is_some_and(|a| {
            a.rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with("qemu-system"))
        });
        if !is_qemu {
            continue;
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Some((run_id, name)) = vm_name_in_argv(&refs) {
            out.push(VmProcess { pid, run_id, name });
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Kill one of our QEMU processes that is not our child: open a pidfd, check that the process
/// is still that VM (a pid may have been reused), SIGKILL, wait up to 5 s for it to go.
fn kill_vm_process(p: &VmProcess) -> Result<bool, String> {
    let fd = match pidfd_open(p.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) => return Err(format!("pidfd of {} (pid {}): {e}", p.name, p.pid)),
    };
    let still = vm_processes()
        .into_iter()
        .any(|q| q.pid == p.pid && q.name == p.name);
    if !still {
        return Ok(false);
    }
    pidfd_kill(&fd).map_err(|e| format!("killing {} (pid {}): {e}", p.name, p.pid))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if pidfd_has_exited(fd.as_raw_fd(), 100) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} (pid {}) did not exit after SIGKILL",
                p.name, p.pid
            ));
        }
    }
}

/// Run ids whose owner (a runner, by its state file) is alive.
fn live_runs() -> (BTreeSet<String>, TeardownErrors) {
    let mut errs = TeardownErrors::default();
    let mut live = BTreeSet::new();
    match state::state_files() {
        Ok(files) => {
            for f in files {
                match state::read_state(&f) {
                    Ok(st) if st.owner_alive() => {
                        live.insert(st.run_id);
                    }
                    Ok(_) => {}
                    Err(e) => errs.push(e),
                }
            }
        }
        Err(e) => errs.push(e),
    }
    (live, errs)
}

/// Remove the VMs of runs whose owner is gone: their QEMU processes (found by `-name`, and by
/// the pidfiles of their run directory), their namespaces, run directories and state files.
/// Never touches a live run. Returns what was removed.
pub fn cleanup_leftovers() -> Result<Vec<String>, TeardownErrors> {
    let (live, mut errs) = live_runs();
    let mut removed = Vec::new();
    let mut dead_runs = BTreeSet::new();
    // 1. QEMU processes of dead runs (pidfiles name the same processes: they carry -name too).
    for p in vm_processes() {
        if live.contains(&p.run_id) {
            continue;
        }
        dead_runs.insert(p.run_id.clone());
        match kill_vm_process(&p) {
            Ok(true) => removed.push(format!("VM {} (pid {})", p.name, p.pid)),
            Ok(false) => {}
            Err(e) => errs.push(e),
        }
    }
    // 2. Run directories of dead runs.
    if let Ok(rd) = std::fs::read_dir(state::STATE_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix(RUN_DIR_PREFIX) else {
                continue;
            };
            if names::validate_run_id(id).is_err() || live.contains(id) {
                continue;
            }
            dead_runs.insert(id.to_string());
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => removed.push(e.path().display().to_string()),
                Err(err) => errs.push(format!("cannot remove {}: {err}", e.path().display())),
            }
        }
    }
    // 3. Their namespaces and state files.
    for id in dead_runs {
        for ns in nsfs::list_namespaces(&names::run_prefix(&id)) {
            match nsfs::delete_named_ns(&ns) {
                Ok(true) => removed.push(ns),
                Ok(false) => {}
                Err(e) => errs.push(e),
            }
        }
        match state::remove_state(&state::state_file_path(&id)) {
            Ok(true) => removed.push(state::state_file_path(&id).display().to_string()),
            Ok(false) => {}
            Err(e) => errs.push(e),
        }
    }
    if !removed.is_empty() {
        tracing::info!(?removed, "removed VMs of earlier runs");
    }
    errs.into_result().map(|()| removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirements::HostReq;

    fn opts() -> VmOptions {
        VmOptions {
            run_id: "1a2b3c4d".into(),
            kernel: "/k".into(),
            modules_dir: "/m".into(),
            accel: Accel::Tcg,
            cpus: Some(2),
            memory_mib: 512,
            agent: "/a".into(),
            init: "/i".into(),
            qemu: "/q".into(),
            boot_timeout: Duration::from_secs(1),
            agent_secret: None,
            extra_append: Vec::new(),
            preload_modules: true,
            boot_kernel: None,
        }
    }

    fn params(driver: &str) -> BTreeMap<String, String> {
        [("driver".to_string(), driver.to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn vcpus_fit_the_host_under_tcg() {
        // Asked for: as asked, whatever the accelerator.
        assert_eq!(vcpus(Accel::Tcg, Some(8), 6, 2), 8);
        assert_eq!(vcpus(Accel::Kvm, Some(1), 2, 64), 1);
        // KVM: 2.
        assert_eq!(vcpus(Accel::Kvm, None, 6, 2), 2);
        // TCG: the host's cores shared out, 1 to 2 each.
        assert_eq!(vcpus(Accel::Tcg, None, 2, 2), 1);
        assert_eq!(vcpus(Accel::Tcg, None, 6, 2), 1);
        assert_eq!(vcpus(Accel::Tcg, None, 2, 4), 2);
        assert_eq!(vcpus(Accel::Tcg, None, 3, 64), 2);
        assert_eq!(vcpus(Accel::Tcg, None, 0, 1), 1);
    }

    #[test]
    fn plan_maps_labels_models_macs_and_queues() {
        let mut r = Requirements::default();
        r.hosts.insert(
            "host1".into(),
            HostReq::default()
                .with_interface("eth0", "netB", BTreeMap::new())
                .with_interface("eth1", "netA", params("e1000e")),
        );
        r.hosts.insert(
            "host2".into(),
            HostReq::default().with_interface("eth0", "netA", BTreeMap::new()),
        );
        r.kernel_modules
            .insert("host2".into(), vec!["bonding", "8021q"]);
        let p = VmProvisioner::new(opts());
        let (bridges, hosts) = p.plan(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bridges, ["br0", "br1"]);
        // The module hint goes to its host's VM only.
        assert!(hosts[0].modules.is_empty());
        assert_eq!(hosts[1].modules, ["bonding", "8021q"]);
        assert_eq!(hosts[0].name, "lnst-1a2b3c4d-host1");
        let n = &hosts[0].nics;
        assert_eq!(
            (n[0].bridge.as_str(), n[0].model, n[0].queues),
            ("br1", NicModel::VirtioNet, 2)
        );
        assert_eq!(
            (n[1].bridge.as_str(), n[1].model, n[1].queues),
            ("br0", NicModel::E1000e, 1)
        );
        assert_eq!(n[1].mac, "02:6c:6e:00:00:01");
        assert_eq!(hosts[1].nics[0].mac, "02:6c:6e:00:01:00");
        assert_eq!(hosts[1].nics[0].tap, "tap1i0");
    }

    #[test]
    fn plan_rejects_unknown_models_and_bad_ids() {
        let mut r = Requirements::default();
        r.hosts.insert(
            "host1".into(),
            HostReq::default().with_interface("eth0", "n", params("ice")),
        );
        let p = VmProvisioner::new(opts());
        let e = p.plan(&r).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("host1.eth0") && e.contains("\"ice\""), "{e}");
        let mut r = Requirements::default();
        r.hosts.insert("sw".into(), HostReq::default());
        assert!(matches!(p.plan(&r), Err(ProvisionError::Unsatisfiable(_))));
    }

    #[test]
    fn vm_names_are_found_in_argv() {
        let argv = [
            "qemu-system-x86_64",
            "-name",
            "lnst-1a2b3c4d-host1,process=x",
            "-m",
            "1",
        ];
        assert_eq!(
            vm_name_in_argv(&argv),
            Some(("1a2b3c4d".into(), "lnst-1a2b3c4d-host1".into()))
        );
        assert_eq!(vm_name_in_argv(&["qemu", "-name", "other-vm"]), None);
        assert_eq!(vm_name_in_argv(&["qemu", "-name"]), None);
        assert_eq!(vm_name_in_argv(&["qemu"]), None);
    }

    #[test]
    fn agent_paths_under_the_guests_own_dirs_are_refused() {
        assert!(visible_in_guest(Path::new("/run/x/lnst-agent")).is_err());
        assert!(visible_in_guest(Path::new("/usr/bin/lnst-agent")).is_ok());
        assert!(check_agent_path(Path::new("/nonexistent/lnst-agent")).is_err());
        let exe = std::env::current_exe().unwrap_or_default();
        assert!(check_agent_path(&exe).is_ok());
    }

    #[test]
    fn console_tail_keeps_the_last_lines() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("c");
        std::fs::write(&p, "a\r\n\nb\nc\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(console_tail(&p, 2), "b | c");
        assert_eq!(console_tail(&d.path().join("none"), 2), "");
    }
}
