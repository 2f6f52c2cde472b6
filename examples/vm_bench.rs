//! VM benchmark driver (bench/vm.sh). Needs root, QEMU and a kernel: LNST_VM_KERNEL and
//! LNST_VM_MODULES (e.g. from .ci/vm-kernel.sh), LNST_VM_ACCEL (default tcg).
//!
//! `vm_bench vm N [AGENT_BIN]`: N VM agents (one NIC each on one network), time from start until
//! every agent has answered its handshake, then teardown.
//! `vm_bench floor N`: the floor, side by side: the same kernel and QEMU devices (no NICs)
//! booting N VMs at once into our init in its `poweroff_at_once` mode (it stops the VM as soon
//! as the kernel has started it); time from start until every QEMU has exited.
//! Prints one JSON line: {"mode","hosts","ready_s","teardown_s"}.
//! With LNST_VM_BENCH_CONSOLE=DIR, copies the VMs' console logs there before teardown.

use lnst_runner::provision::vm::accel::Accel;
use lnst_runner::provision::vm::{self, initramfs, qemu, VmOptions, VmProvisioner};
use lnst_runner::provision::Provisioner;
use lnst_runner::requirements::{HostReq, Requirements};
use lnst_runner::session::{AgentClient, ClientOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn accel() -> Accel {
    match std::env::var("LNST_VM_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    }
}

fn append() -> Vec<String> {
    std::env::var("LNST_VM_APPEND")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn env_path(var: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("{var} is not set"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("vm");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    // (floor-initramfs takes a path there instead)
    let kernel = env_path("LNST_VM_KERNEL")?;
    let modules = env_path("LNST_VM_MODULES")?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let agent = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir.join("lnst-agent"));
    let agent = vm::check_agent_path(&agent).map_err(anyhow::Error::msg)?;
    let init = vm::find_init(&agent).map_err(anyhow::Error::msg)?;
    let qemu_bin = vm::find_qemu().map_err(anyhow::Error::msg)?;
    let run_id = lnst_runner::runner::new_run_id();
    // Floor and VMs boot the same thing: the uncompressed kernel when it can be extracted.
    let boot_kernel = vm::prepare_kernel(&kernel).map_err(anyhow::Error::msg)?;
    if mode == "floor-initramfs" {
        // Write the floor's initramfs to the path given, for experiments by hand.
        let dest = args
            .get(2)
            .map(PathBuf::from)
            .unwrap_or_else(|| "floor.cpio".into());
        initramfs::write_initramfs(
            &initramfs::InitramfsSpec {
                init,
                modules: Vec::new(),
                conf: vec!["poweroff_at_once".into()],
            },
            &dest,
        )?;
        return Ok(());
    }
    if mode == "floor" {
        let kernel = match &boot_kernel {
            Some(fd) => PathBuf::from(format!(
                "/dev/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&**fd)
            )),
            None => kernel,
        };
        return floor(n, &run_id, kernel, modules, init, qemu_bin, boot_kernel).await;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut reqs = Requirements::default();
    for i in 1..=n {
        reqs.hosts.insert(
            format!("host{i:02}"),
            HostReq::default().with_interface("eth0", "net1", BTreeMap::new()),
        );
    }
    let mut prov = VmProvisioner::new(VmOptions {
        run_id: run_id.clone(),
        kernel,
        modules_dir: modules,
        accel: accel(),
        cpus: Some(2),
        memory_mib: 512,
        agent,
        init,
        qemu: qemu_bin,
        boot_timeout: vm::default_boot_timeout(accel()),
        agent_secret: Some(secret.clone()),
        extra_append: append(),
        // No device is configured here: nothing to preload.
        preload_modules: false,
        boot_kernel,
    });
    let t0 = Instant::now();
    let result = async {
        let eps = prov.provision(&reqs).await?;
        let clients = futures::future::join_all(eps.into_iter().map(|ep| {
            let secret = secret.clone();
            async move {
                AgentClient::connect(
                    &ep.host_id,
                    ep.transport,
                    Some(secret.as_bytes()),
                    ClientOptions::default(),
                )
                .await
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        anyhow::Ok(clients)
    }
    .await;
    let ready = t0.elapsed().as_secs_f64();
    if let Some(dir) = std::env::var_os("LNST_VM_BENCH_CONSOLE") {
        let run_dir = vm::run_dir(&run_id);
        if let Ok(rd) = std::fs::read_dir(&run_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".console") {
                    let _ = std::fs::copy(e.path(), PathBuf::from(&dir).join(e.file_name()));
                }
            }
        }
    }
    if let Ok(clients) = &result {
        for c in clients {
            let _ = c.bye().await;
        }
    }
    let t1 = Instant::now();
    let td = prov.teardown().await;
    let teardown = t1.elapsed().as_secs_f64();
    result?;
    td?;
    println!(
        "{{\"mode\":\"vm\",\"hosts\":{n},\"ready_s\":{ready:.3},\"teardown_s\":{teardown:.3}}}"
    );
    Ok(())
}

/// The floor: N QEMUs with the same kernel and devices booting our init, which stops the VM
/// at once.
async fn floor(
    n: usize,
    run_id: &str,
    kernel: PathBuf,
    modules: PathBuf,
    init: PathBuf,
    qemu_bin: PathBuf,
    boot_kernel: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
) -> anyhow::Result<()> {
    let inherit: Vec<i32> = boot_kernel
        .iter()
        .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&**fd))
        .collect();
    let dir = tempfile::tempdir()?;
    let initrd = dir.path().join("floor.cpio");
    initramfs::write_initramfs(
        &initramfs::InitramfsSpec {
            init,
            modules: Vec::new(),
            conf: vec!["poweroff_at_once".into()],
        },
        &initrd,
    )?;
    let t0 = Instant::now();
    let mut children = Vec::new();
    for i in 1..=n {
        let host = format!("host{i:02}");
        let spec = qemu::VmSpec {
            name: format!("lnst-{run_id}-{host}"),
            hostname: host.clone(),
            kernel: kernel.clone(),
            initramfs: initrd.clone(),
            modules_dir: modules.clone(),
            accel: accel(),
            cpus: 2,
            memory_mib: 512,
            control_socket: dir.path().join(format!("{host}.sock")),
            console_log: dir.path().join(format!("{host}.console")),
            pidfile: dir.path().join(format!("{host}.pid")),
            nics: Vec::new(),
            extra_append: append(),
        };
        let mut cmd = tokio::process::Command::new(&qemu_bin);
        cmd.args(qemu::argv(&spec))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let fds = inherit.clone();
        // SAFETY: fcntl only, on descriptors opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    libc::fcntl(*fd, libc::F_SETFD, 0);
                }
                Ok(())
            });
        }
        children.push(cmd.spawn()?);
    }
    for c in &mut children {
        let st = tokio::time::timeout(Duration::from_secs(120), c.wait()).await??;
        if !st.success() {
            anyhow::bail!("floor VM exited with {st}");
        }
    }
    let ready = t0.elapsed().as_secs_f64();
    println!("{{\"mode\":\"floor\",\"hosts\":{n},\"ready_s\":{ready:.3},\"teardown_s\":0}}");
    Ok(())
}
