//! Kernel modules for the soft devices a VM agent creates, loaded in-process (`finit_module`)
//! before the device is made, instead of by the kernel's on-demand `modprobe`.
//!
//! In a freshly booted TCG guest each on-demand load starts `/sbin/modprobe` cold (it links
//! libcrypto, liblzma and libzstd): 0.3–1.5 s per module, and a team needs two. Reading
//! `modules.dep` and loading the files directly costs milliseconds. Only VM agents do this
//! (`lnst-agent --load-modules`, which the VM source passes): the guest is ours and runs the
//! stock module tree, while a lab machine's `modprobe` honours its own `/etc/modprobe.d`
//! (options, blacklists), which must keep deciding there. Any failure here is only logged:
//! creating the device then falls back to the kernel's own loading, and its error names the
//! missing feature as before.

use crate::protocol::{LinkSpec, TeamRunner};
use crate::provision::vm::kernel::{module_name, ModuleTree};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Held while modules load: one loader at a time in this process, so no device is made while
/// a module it needs shows in /sys/module but is still initialising.
static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The module trees read so far (an agent has one: its running kernel's), each read once:
/// `modules.dep` is half a megabyte, and reading and parsing it in a TCG guest takes
/// 50–130 ms, which a configuration that makes a bond, bridges and VLANs paid three times.
static TREES: std::sync::Mutex<Vec<(PathBuf, Arc<ModuleTree>)>> = std::sync::Mutex::new(Vec::new());

/// Load modules in-process from now on (VM agents), and start reading the running kernel's
/// module tree on a thread of its own: it is ready by the time the controller has connected
/// and makes the first device.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
    let started = std::thread::Builder::new()
        .name("kmod-tree".into())
        .spawn(|| {
            if let Err(e) = tree(Path::new("/")) {
                tracing::info!("module tree not read ({e}); the kernel loads modules itself");
            }
        });
    if let Err(e) = started {
        tracing::debug!("starting the module tree reader: {e}");
    }
}

/// The module tree of `root`'s running kernel, read on first use (concurrent first users wait
/// for the one read).
fn tree(root: &Path) -> Result<Arc<ModuleTree>, String> {
    let release = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .map_err(|e| format!("kernel release: {e}"))?;
    let dir = root.join("lib/modules").join(release.trim());
    let mut trees = TREES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, t)) = trees.iter().find(|(d, _)| *d == dir) {
        return Ok(t.clone());
    }
    let t = std::time::Instant::now();
    let tree = Arc::new(ModuleTree::load(&dir).map_err(|e| e.to_string())?);
    tracing::info!(
        "module tree {} read in {:.0} ms",
        dir.display(),
        t.elapsed().as_secs_f64() * 1e3
    );
    trees.push((dir, tree.clone()));
    Ok(tree)
}

/// The modules a link kind needs.
pub fn modules_for(spec: &LinkSpec) -> Vec<&'static str> {
    match spec {
        LinkSpec::Vlan { .. } => vec!["8021q"],
        LinkSpec::Bridge(_) => vec!["bridge"],
        LinkSpec::Bond(_) => vec!["bonding"],
        LinkSpec::Team(o) => vec![
            "team",
            match o.runner {
                TeamRunner::Broadcast => "team_mode_broadcast",
                TeamRunner::Roundrobin => "team_mode_roundrobin",
                TeamRunner::Random => "team_mode_random",
                TeamRunner::Activebackup => "team_mode_activebackup",
                // teamd's lacp runner drives the kernel's loadbalance mode.
                TeamRunner::Loadbalance | TeamRunner::Lacp => "team_mode_loadbalance",
            },
        ],
        LinkSpec::Macvlan { .. } => vec!["macvlan"],
        LinkSpec::Veth { .. } => vec!["veth"],
        LinkSpec::Gre(_) | LinkSpec::GreTap(_) => vec!["ip_gre"],
        LinkSpec::Ip6Gre(_) | LinkSpec::Ip6GreTap(_) => vec!["ip6_gre"],
        LinkSpec::Ipip(_) => vec!["ipip"],
        LinkSpec::Sit(_) => vec!["sit"],
        LinkSpec::Ip6Tnl(_) => vec!["ip6_tunnel"],
        LinkSpec::Vxlan(_) => vec!["vxlan"],
        LinkSpec::Geneve(_) => vec!["geneve"],
        LinkSpec::Macsec { .. } => vec!["macsec"],
        _ => Vec::new(),
    }
}

/// The parameters a module is loaded with. bonding gets `max_bonds=0`: loaded plainly it
/// creates a `bond0` nobody asked for.
fn params_of(module: &str) -> &'static str {
    match module {
        "bonding" => "max_bonds=0",
        _ => "",
    }
}

/// Start loading `modules` on a thread of its own and return as soon as that thread holds the
/// loader lock: the agent says Hello at once, and a device that needs one of them waits for
/// the load ([`ensure_list`] takes the same lock) instead of starting its own. A VM agent's
/// preload (`--preload-modules`) thus overlaps its handshake, the controller's connect phase
/// and the other VMs' boots, rather than lengthening its own boot. Names are checked first.
pub fn load_in_background(modules: Vec<String>) -> Result<(), String> {
    let names: Vec<&str> = modules.iter().map(String::as_str).collect();
    check_names(&names)?;
    if modules.is_empty() {
        return Ok(());
    }
    let (held_tx, held_rx) = std::sync::mpsc::sync_channel::<()>(0);
    std::thread::Builder::new()
        .name("kmod-preload".into())
        .spawn(move || {
            let _held = LOADING.lock().unwrap_or_else(|p| p.into_inner());
            let _ = held_tx.send(());
            let names: Vec<&str> = modules.iter().map(String::as_str).collect();
            match ensure(Path::new("/"), &names) {
                Ok(loaded) if !loaded.is_empty() => {
                    tracing::info!("preloaded kernel modules {loaded:?}")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("modules not preloaded ({e}); devices load their own"),
            }
        })
        .map_err(|e| format!("starting the preload thread: {e}"))?;
    // The thread holds the lock (or has died, which leaves nothing to wait for).
    let _ = held_rx.recv();
    Ok(())
}

/// Every name is a module name: letters, digits, `_` and `-`.
pub fn check_names(modules: &[&str]) -> Result<(), String> {
    match modules.iter().find(|m| {
        m.is_empty()
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    }) {
        Some(bad) => Err(format!("{bad:?} is not a module name")),
        None => Ok(()),
    }
}

fn log(res: Result<Vec<String>, String>) {
    match res {
        Ok(loaded) if !loaded.is_empty() => tracing::info!("loaded kernel modules {loaded:?}"),
        Ok(_) => {}
        Err(e) => tracing::info!("modules not preloaded ({e}); the kernel loads them"),
    }
}

/// Make sure the modules `spec` needs are loaded (when enabled); never fails.
pub async fn ensure_for(spec: &LinkSpec) {
    ensure_modules(modules_for(spec)).await
}

/// What [`ensure_list`] does when a module of its list does not load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop at the first module that does not load (the list loaded as a whole; the failure
    /// is logged, the modules loaded before it stay).
    Stop,
    /// Skip that module and go on with the next (each loaded on its own).
    Skip,
}

/// Make sure `wanted` are loaded (when enabled); never fails.
pub async fn ensure_modules(wanted: Vec<&'static str>) {
    ensure_list(wanted, OnFailure::Stop).await
}

/// Make sure each of `wanted` is loaded (when enabled), one by one: a module the tree does
/// not have is skipped (built in, or the kernel's own loading says what is missing); never
/// fails.
pub async fn ensure_each(wanted: &'static [&'static str]) {
    ensure_list(wanted.to_vec(), OnFailure::Skip).await
}

/// Load `wanted` (when enabled) under the `LOADING` lock, in a blocking task; a module that
/// does not load stops the list or is skipped (`on_failure`); never fails.
pub async fn ensure_list(wanted: Vec<&'static str>, on_failure: OnFailure) {
    if !ENABLED.load(Ordering::Relaxed) || wanted.is_empty() {
        return;
    }
    let res = tokio::task::spawn_blocking(move || {
        let _held = LOADING.lock().unwrap_or_else(|p| p.into_inner());
        match on_failure {
            OnFailure::Stop => ensure(Path::new("/"), &wanted),
            OnFailure::Skip => {
                let mut loaded = Vec::new();
                for w in &wanted {
                    match ensure(Path::new("/"), std::slice::from_ref(w)) {
                        Ok(l) => loaded.extend(l),
                        Err(e) => tracing::debug!("module {w} not preloaded: {e}"),
                    }
                }
                Ok(loaded)
            }
        }
    })
    .await;
    match res {
        Ok(r) => log(r),
        Err(e) => tracing::debug!("module loader task: {e}"),
    }
}

/// Load `wanted` (and their dependencies, first) from `root`'s module tree of the running
/// kernel, skipping what `/sys/module` already shows. Returns the modules loaded, each with
/// its load time (`bonding (212 ms)`).
fn ensure(root: &Path, wanted: &[&str]) -> Result<Vec<String>, String> {
    let sys = root.join("sys/module");
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|m| !sys.join(m).exists())
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let tree = tree(root)?;
    let mut loaded = Vec::new();
    for name in missing {
        let order = tree.load_order(&[name]).map_err(|e| e.to_string())?;
        for file in order {
            let m = module_name(&file.to_string_lossy());
            if sys.join(&m).exists() {
                continue;
            }
            let t = std::time::Instant::now();
            finit_module(&file, params_of(&m))?;
            loaded.push(format!("{m} ({:.0} ms)", t.elapsed().as_secs_f64() * 1e3));
        }
    }
    Ok(loaded)
}

fn finit_module(file: &Path, params: &str) -> Result<(), String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let params = std::ffi::CString::new(params).map_err(|_| "module parameters".to_string())?;
    // Compressed modules need the kernel's in-kernel decompression (Linux 6.2+).
    let compressed = [".xz", ".zst", ".gz"]
        .iter()
        .any(|s| file.to_string_lossy().ends_with(s));
    let flags: libc::c_uint = if compressed { 4 } else { 0 };
    // SAFETY: an open descriptor, a NUL-terminated parameter string and valid flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("loading {}: {e}", file.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TeamOptions;

    #[test]
    fn link_kinds_name_their_modules() {
        let team = LinkSpec::Team(TeamOptions::runner(TeamRunner::Lacp));
        assert_eq!(modules_for(&team), vec!["team", "team_mode_loadbalance"]);
        let bond = LinkSpec::Bond(Box::default());
        assert_eq!(modules_for(&bond), vec!["bonding"]);
        assert_eq!(params_of("bonding"), "max_bonds=0");
        assert!(modules_for(&LinkSpec::Dummy).is_empty());
    }

    #[test]
    fn preload_refuses_what_is_not_a_module_name() {
        for bad in ["", "../x", "a b", "bonding;rm"] {
            let e = load_in_background(vec!["8021q".into(), bad.into()]).unwrap_err();
            assert!(e.contains("is not a module name"), "{e}");
        }
        // Nothing to load: no thread, nothing read.
        assert_eq!(load_in_background(Vec::new()), Ok(()));
    }

    #[test]
    fn loaded_modules_are_skipped_and_a_missing_tree_is_an_error() {
        // A fake root: bridge shows in /sys/module, so nothing is read or loaded for it.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/module/bridge")).unwrap();
        assert_eq!(ensure(d.path(), &["bridge"]), Ok(Vec::new()));
        // 8021q is missing and there is no module tree: an error naming what is missing.
        std::fs::create_dir_all(d.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(d.path().join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        let e = ensure(d.path(), &["8021q"]).unwrap_err();
        assert!(e.contains("modules.dep"), "{e}");
        // A tree without the module: named.
        let tree = d.path().join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(
            tree.join("modules.dep"),
            "kernel/net/bridge/bridge.ko: kernel/net/llc/llc.ko\n",
        )
        .unwrap();
        let e = ensure(d.path(), &["8021q"]).unwrap_err();
        assert!(e.contains("has no 8021q"), "{e}");
        // The tree was read once: with modules.dep gone, it still answers.
        std::fs::remove_file(tree.join("modules.dep")).unwrap();
        let e = ensure(d.path(), &["8021q"]).unwrap_err();
        assert!(e.contains("has no 8021q"), "{e}");
    }
}
