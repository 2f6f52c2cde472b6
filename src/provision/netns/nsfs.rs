//! Named network namespaces the way `ip netns` keeps them (`/run/netns/<name>` bind mounts
//! of a namespace file), and running netlink work inside one on a dedicated thread.

use crate::provision::ProvisionError;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_DIR: &str = "/run/netns";

/// Serialises the one-time preparation of [`NETNS_DIR`] within this process.
static NETNS_DIR_READY: Mutex<bool> = Mutex::new(false);

/// Path of a named namespace.
pub fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Make [`NETNS_DIR`] exist and be a shared mount point (as iproute2 does), so namespace
/// bind mounts made here propagate to other mount namespaces (`ip netns exec`).
fn ensure_netns_dir() -> Result<(), String> {
    let mut ready = NETNS_DIR_READY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *ready {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| format!("cannot create {NETNS_DIR}: {e}"))?;
    let shared = || {
        mount(
            Some(""),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then make it shared.
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("cannot bind-mount {NETNS_DIR} onto itself: {e}"))?;
            shared().map_err(|e| format!("cannot make {NETNS_DIR} a shared mount: {e}"))?;
        }
        Err(e) => return Err(format!("cannot make {NETNS_DIR} a shared mount: {e}")),
    }
    *ready = true;
    Ok(())
}

/// Create the named namespace `name` and move the **calling thread** into it. Only call this
/// on a thread dedicated to that namespace.
fn create_and_enter(name: &str) -> Result<(), String> {
    ensure_netns_dir()?;
    let path = ns_path(name);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let result = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot create network namespace {name}: {e}"))
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                format!(
                    "cannot bind-mount network namespace onto {}: {e}",
                    path.display()
                )
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result
}

/// Move the calling thread into the named namespace `name`.
fn enter(name: &str) -> Result<(), String> {
    let path = ns_path(name);
    let f = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open namespace {}: {e}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("cannot enter namespace {name}: {e}"))
}

/// How the worker thread gets into its namespace.
#[derive(Debug, Clone)]
pub enum NsEntry {
    /// Create the named namespace (fails if it exists).
    Create(String),
    /// Enter an existing named namespace.
    Enter(String),
}

/// Namespace worker threads still running. A caller that stops waiting (a run interrupted by
/// SIGTERM drops its provisioning future) does not stop the thread, which may go on to create
/// its namespace; teardown waits for them with [`wait_for_workers`] before deleting anything.
static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct WorkerGuard;

impl WorkerGuard {
    fn new() -> WorkerGuard {
        WORKERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        WorkerGuard
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        WORKERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Wait until no namespace worker thread runs (or `limit` passes; false then).
pub async fn wait_for_workers(limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while WORKERS.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

/// Run `f` with an rtnetlink handle whose socket lives in the given namespace. The work runs on
/// a dedicated OS thread (namespace membership is per thread) with its own small runtime, so
/// the caller's threads never change namespace.
pub async fn in_netns<T, F, Fut>(entry: NsEntry, f: F) -> Result<T, ProvisionError>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ProvisionError>>,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    let label = match &entry {
        NsEntry::Create(n) | NsEntry::Enter(n) => n.clone(),
    };
    let guard = WorkerGuard::new();
    std::thread::Builder::new()
        .name("lnst-netns".into())
        .spawn(move || {
            let _guard = guard;
            let run = || -> Result<T, ProvisionError> {
                match &entry {
                    NsEntry::Create(name) => create_and_enter(name),
                    NsEntry::Enter(name) => enter(name),
                }
                .map_err(ProvisionError::Setup)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let (conn, handle, _) = rtnetlink::new_connection()?;
                    tokio::spawn(conn);
                    f(handle).await
                })
            };
            let _ = tx.send(run());
        })?;
    rx.await.map_err(|_| {
        ProvisionError::Setup(format!("namespace worker for {label} stopped unexpectedly"))
    })?
}

/// `(device, inode)` identifying a namespace file.
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `path` is currently a namespace bind mount (its inode lives on nsfs, not on the
/// file system of the directory).
fn is_ns_mount(path: &Path) -> bool {
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(dir))) => m.dev() != dir.dev(),
        _ => false,
    }
}

/// Kill (SIGKILL) every process whose network namespace is the one mounted at `path`.
/// Returns the pids signalled.
fn kill_processes_in(path: &Path) -> Vec<i32> {
    let Some(target) = ns_identity(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in rd.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if ns_identity(&entry.path().join("ns/net")) == Some(target) {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed.push(raw);
            }
        }
    }
    killed
}

/// Delete the named namespace `name` (what `ip netns delete` does): kill what still runs in
/// it, unmount, remove the file. Deleting a namespace destroys its veths and bridges.
/// Convergent: returns `Ok(false)` when it was already gone.
pub fn delete_named_ns(name: &str) -> Result<bool, String> {
    let path = ns_path(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(false);
    }
    if is_ns_mount(&path) {
        let killed = kill_processes_in(&path);
        if !killed.is_empty() {
            tracing::debug!(
                namespace = name,
                ?killed,
                "killed processes left in namespace"
            );
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(format!("cannot unmount {}: {e}", path.display())),
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// Names in [`NETNS_DIR`] starting with `prefix`, sorted.
pub fn list_namespaces(prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}
