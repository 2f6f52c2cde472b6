//! lnst-vm-init: process 1 of a VM agent (LNST_AGENTS=vm; design in docs/VM.md).
//!
//! It runs from the initramfs the runner writes for each run (`/init`, next to its shared
//! libraries, the kernel modules the transports need, and `/lnst/init.conf`), and:
//!
//! 1. mounts /dev, /proc, /sys and loads the listed modules (finit_module, in the given order);
//! 2. mounts the host's root (virtio-9p tag `root_tag`, read-only) under an overlay whose
//!    upper layer is guest memory, moves /dev, /proc, /sys into it and makes it the root;
//! 3. gives the guest its own /run, /dev/shm and /dev/pts, and mounts the modules tree (tag
//!    `modules_tag`) at /lib/modules/<release> so that modprobe and module autoload work;
//! 4. sets the host name from `lnst.hostname=` on the kernel command line, brings `lo` up;
//! 5. reads one line from the control port (the virtio-serial port named `port`): the run's
//!    secret, sent by the runner before anything else; it never touches a file or the command
//!    line;
//! 6. starts the agent with the port as stdin/stdout and the secret in its environment, reaps
//!    every process, and when the agent exits, reboots: QEMU runs with `-no-reboot`, so the
//!    VM ends. The same happens when the controller's side of the port closes (the runner is
//!    gone): a write to such a port blocks, so the agent alone would wait forever.
//!
//! Any failure is one line on the console (`lnst-vm-init: ...`), then the same reboot.
//! Only the standard library and raw system calls: the binary must be small, it is copied into
//! every run's initramfs.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONF: &str = "/lnst/init.conf";
/// Flag of finit_module(2) for a compressed module (Linux ≥ 6.2 with MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
/// Longest secret line accepted from the port.
const MAX_SECRET_LINE: usize = 4096;

#[derive(Default)]
struct Conf {
    modules: Vec<String>,
    agent: String,
    args: Vec<String>,
    root_tag: String,
    modules_tag: String,
    port: String,
    ninep_opts: String,
    /// Floor measurement: stop as soon as the kernel has started us.
    poweroff_at_once: bool,
}

fn parse_conf(text: &str) -> Result<Conf, String> {
    let mut c = Conf::default();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "module" => c.modules.push(value.to_string()),
            "agent" => c.agent = value.to_string(),
            "arg" => c.args.push(value.to_string()),
            "root_tag" => c.root_tag = value.to_string(),
            "modules_tag" => c.modules_tag = value.to_string(),
            "port" => c.port = value.to_string(),
            "9p_options" => c.ninep_opts = value.to_string(),
            "poweroff_at_once" => c.poweroff_at_once = true,
            other => return Err(format!("{CONF}: unknown key {other:?}")),
        }
    }
    if !c.poweroff_at_once && (c.agent.is_empty() || c.root_tag.is_empty() || c.port.is_empty()) {
        return Err(format!("{CONF}: agent, root_tag and port are required"));
    }
    Ok(c)
}

/// `lnst.verbose` on the kernel command line: one console line per step, with the uptime.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn step(what: &str) {
    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        let up = up.split_whitespace().next().unwrap_or("?");
        let _ = writeln!(std::io::stderr(), "lnst-vm-init: [{up}] {what}");
    }
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                f.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    if rc != 0 {
        return Err(format!("mount {src} on {target} ({fstype}): {}", errno()));
    }
    Ok(())
}

fn mkdir_p(p: &str) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {p}: {e}"))
}

fn load_module(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("module {path}: {e}"))?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| path.ends_with(s));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let empty = cstr("")?;
    // SAFETY: an open fd and an empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), empty.as_ptr(), flags) };
    if rc != 0 {
        let e = errno();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("loading module {path}: {e}"));
        }
    }
    Ok(())
}

/// `lnst.hostname=` from the kernel command line.
fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .map(str::to_string)
}

fn release() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("kernel release: {e}"))
}

/// `ip link set lo up`.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(format!("socket: {}", errno()));
        }
        let sock = OwnedFd::from_raw_fd(s);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(format!("lo flags: {}", errno()));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(format!("lo up: {}", errno()));
        }
    }
    Ok(())
}

/// The device node of the virtio-serial port called `name` (it appears once virtio_console
/// has probed the device).
fn find_port(name: &str) -> Result<PathBuf, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() == name {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no virtio-serial port named {name}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first line the runner sends: `lnst-secret <secret>` or `lnst-nosecret`.
fn read_secret(port: &mut std::fs::File) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match port.read(&mut b) {
            Ok(0) => {
                // No controller connected yet: the port reads as closed until one is.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the control port: {e}")),
        }
        if line.len() > MAX_SECRET_LINE {
            return Err("the control port's first line is too long".into());
        }
    }
    let line = String::from_utf8(line).map_err(|_| "the secret line is not UTF-8".to_string())?;
    if line == "lnst-nosecret" {
        return Ok(None);
    }
    match line.strip_prefix("lnst-secret ") {
        Some(s) if !s.trim().is_empty() => Ok(Some(s.to_string())),
        _ => Err("the control port did not start with the secret line".into()),
    }
}

fn switch_root(conf: &Conf) -> Result<(), String> {
    mkdir_p("/rw")?;
    mount("tmpfs", "/rw", "tmpfs", 0, "mode=0755")?;
    mkdir_p("/rw/upper")?;
    mkdir_p("/rw/work")?;
    mkdir_p("/lower")?;
    mkdir_p("/newroot")?;
    let opts = if conf.ninep_opts.is_empty() {
        "trans=virtio,version=9p2000.L".to_string()
    } else {
        conf.ninep_opts.clone()
    };
    mount(&conf.root_tag, "/lower", "9p", libc::MS_RDONLY, &opts)?;
    mount(
        "overlay",
        "/newroot",
        "overlay",
        0,
        "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work",
    )?;
    for d in ["/dev", "/proc", "/sys"] {
        let target = format!("/newroot{d}");
        mkdir_p(&target)?;
        mount(d, &target, "", libc::MS_MOVE, "")?;
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir /newroot: {e}"))?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = cstr(".")?;
    // SAFETY: a valid path string.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(format!("chroot: {}", errno()));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;

    // The guest's own runtime places; everything else is the host's, writes kept in memory.
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    )?;
    mkdir_p("/dev/pts")?;
    mount("devpts", "/dev/pts", "devpts", 0, "")?;
    mkdir_p("/dev/shm")?;
    mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "",
    )?;
    if !conf.modules_tag.is_empty() {
        let dir = format!("/lib/modules/{}", release()?);
        mkdir_p(&dir)?;
        mount(&conf.modules_tag, &dir, "9p", libc::MS_RDONLY, &opts)?;
    }
    Ok(())
}

fn run() -> Result<(), String> {
    for d in ["/dev", "/proc", "/sys"] {
        mkdir_p(d)?;
    }
    mount("devtmpfs", "/dev", "devtmpfs", 0, "")?;
    mount("proc", "/proc", "proc", 0, "")?;
    mount("sysfs", "/sys", "sysfs", 0, "")?;
    let conf = parse_conf(&std::fs::read_to_string(CONF).map_err(|e| format!("{CONF}: {e}"))?)?;
    if conf.poweroff_at_once {
        return Ok(());
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "lnst.verbose") {
        VERBOSE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    step("started");
    // Addresses on the test links are assigned by the recipe: no duplicate address detection
    // (as the netns source does), set before any NIC driver is loaded.
    for scope in ["default", "all"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{scope}/accept_dad"), "0");
    }
    for m in &conf.modules {
        load_module(m)?;
    }
    step("modules loaded");
    switch_root(&conf)?;
    step("root switched");
    if let Some(h) = cmdline_value(&cmdline, "lnst.hostname") {
        let c = cstr(&h)?;
        // SAFETY: a valid buffer of the given length.
        if unsafe { libc::sethostname(c.as_ptr(), h.len()) } != 0 {
            return Err(format!("sethostname {h}: {}", errno()));
        }
    }
    loopback_up()?;

    let dev = find_port(&conf.port)?;
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map_err(|e| format!("{}: {e}", dev.display()))?;
    step("control port open");
    let secret = read_secret(&mut port)?;
    step("secret received");

    // The agent is the port's only reader. When the controller's end goes away for good (the
    // runner died), the agent reads the end of its input, exits, and the VM ends with it. No
    // one else may even poll the port: virtio_console's poll takes a delivered buffer off the
    // ring without waking the reader, whose wake-up then never comes (the stalled handshakes
    // of docs/VM.md, when this process polled the port for a hang-up).
    let mut cmd = std::process::Command::new(&conf.agent);
    cmd.args(&conf.args);
    // The kernel modules of the devices the recipe will create (the controller's hint): the
    // agent loads them on a thread of its own from its start, beside the handshake.
    if let Some(m) = cmdline_value(&cmdline, "lnst.modules") {
        cmd.arg(format!("--preload-modules={m}"));
    }
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .stdin(port.try_clone().map_err(|e| format!("control port: {e}"))?)
        .stdout(port);
    if let Some(s) = &secret {
        cmd.env("LNST_AGENT_SECRET", s);
    }
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", conf.agent))?;
    let agent = libc::pid_t::try_from(child.id()).map_err(|_| "agent pid".to_string())?;
    drop(secret);
    step("agent started");
    // Process 1 reaps every orphan; the VM ends with the agent.
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == agent {
            eprintln!("lnst-vm-init: the agent exited (status {status:#x})");
            return Ok(());
        }
        if pid < 0 && errno().raw_os_error() == Some(libc::ECHILD) {
            return Ok(());
        }
    }
}

fn halt() -> ! {
    // SAFETY: plain system calls; QEMU runs with -no-reboot, so a restart ends the VM.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    if std::process::id() != 1 {
        let _ = writeln!(
            std::io::stderr(),
            "lnst-vm-init is process 1 of an lnst-runner VM; it is not meant to be run by hand"
        );
        std::process::exit(2);
    }
    if let Err(e) = run() {
        let _ = writeln!(std::io::stderr(), "lnst-vm-init: {e}");
    }
    halt();
}
