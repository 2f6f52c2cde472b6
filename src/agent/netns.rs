//! Network namespaces inside the agent (`CreateNetns`, `InNetns`).
//!
//! Each namespace is served by its own OS thread: the thread leaves the agent's namespace with
//! `unshare(CLONE_NEWNET)`, brings its loopback up and runs a single-threaded tokio runtime
//! with its own rtnetlink connection. Work for the namespace is sent to that thread as
//! closures ([`Netns::run`]); everything they do — netlink requests, `ethtool`, `teamd`,
//! /proc/sys writes, reading /proc/thread-self/net — happens in the namespace, because network
//! namespaces belong to threads and a process forked by a thread starts in the thread's
//! namespace. Jobs are the exception: they run under the agent's main runtime and join the
//! namespace in `pre_exec` ([`super::jobs::Jobs::start_in`]).
//!
//! The namespaces are anonymous (no /run/netns entry): the agent holds them through an open
//! descriptor and the worker thread, so they vanish with the agent even when it is killed.

use super::{net, OpError};
use crate::protocol::ErrorKind;
use futures::future::BoxFuture;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the namespace's closures get: the namespace's own netlink connection.
pub struct NsCtx {
    pub nl: net::Netlink,
}

type Task = Box<dyn FnOnce(Arc<NsCtx>) -> BoxFuture<'static, ()> + Send>;

/// Longest namespace name.
pub const MAX_NAME: usize = 32;

/// Check a namespace name: 1 to 32 characters of `[A-Za-z0-9_-]`, not starting with `-`.
pub fn check_name(name: &str) -> Result<(), OpError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return Ok(());
    }
    let mut shown: String = name.chars().take(40).collect();
    if name.chars().nth(40).is_some() {
        shown.push('…');
    }
    Err(OpError::new(
        ErrorKind::BadRequest,
        format!(
            "invalid namespace name {shown:?}: 1 to {MAX_NAME} characters of A-Z a-z 0-9 _ -, \
             not starting with -"
        ),
    ))
}

fn gone(name: &str) -> OpError {
    OpError::new(
        ErrorKind::Failed,
        format!("namespace {name}: its worker thread is gone"),
    )
}

/// One agent namespace.
pub struct Netns {
    name: String,
    fd: OwnedFd,
    tx: Mutex<Option<mpsc::UnboundedSender<Task>>>,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// Jobs started in this namespace (killed when it is deleted).
    pub jobs: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Netns {
    /// Create a namespace and its worker thread.
    pub async fn create(name: &str) -> Result<Arc<Netns>, OpError> {
        check_name(name)?;
        let (tx, rx) = mpsc::unbounded_channel::<Task>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<OwnedFd, OpError>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let label = name.to_string();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || worker(label, rx, ready_tx, done_tx))
            .map_err(|e| {
                OpError::new(
                    ErrorKind::Failed,
                    format!("namespace {name}: cannot start its thread: {e}"),
                )
            })?;
        let fd = ready_rx.await.map_err(|_| gone(name))??;
        tracing::info!("namespace {name} created");
        Ok(Arc::new(Netns {
            name: name.to_string(),
            fd,
            tx: Mutex::new(Some(tx)),
            done: tokio::sync::Mutex::new(Some(done_rx)),
            jobs: Mutex::new(Vec::new()),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's descriptor (for IFLA_NET_NS_FD and setns).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Run `f` on the namespace's thread and return its output.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<NsCtx>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (rtx, rrx) = oneshot::channel();
        let task: Task = Box::new(move |ctx| {
            Box::pin(async move {
                let _ = rtx.send(f(ctx).await);
            })
        });
        let sent = match &*lock(&self.tx) {
            Some(tx) => tx.send(task).is_ok(),
            None => false,
        };
        if !sent {
            return Err(gone(&self.name));
        }
        rrx.await.map_err(|_| gone(&self.name))
    }

    /// Stop the worker thread (its runtime, tasks and netlink socket go with it) and wait for
    /// it, at most 5 s. The namespace itself disappears when this value is dropped too.
    pub async fn shutdown(&self) {
        lock(&self.tx).take();
        if let Some(done) = self.done.lock().await.take() {
            if tokio::time::timeout(Duration::from_secs(5), done)
                .await
                .is_err()
            {
                tracing::warn!("namespace {}: worker did not stop within 5 s", self.name);
            }
        }
        tracing::info!("namespace {} deleted", self.name);
    }
}

fn open_own_netns() -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::open(
        "/proc/thread-self/ns/net",
    )?))
}

/// The agent's own namespace (call from one of its main threads).
pub fn open_agent_netns() -> Result<OwnedFd, OpError> {
    open_own_netns().map_err(|e| {
        OpError::new(
            ErrorKind::Internal,
            format!("cannot open the agent's network namespace: {e}"),
        )
    })
}

fn worker(
    name: String,
    mut rx: mpsc::UnboundedReceiver<Task>,
    ready: oneshot::Sender<Result<OwnedFd, OpError>>,
    done: oneshot::Sender<()>,
) {
    let fail = |m: String| OpError::new(ErrorKind::Failed, format!("namespace {name}: {m}"));
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        let err = if e == nix::errno::Errno::EPERM {
            OpError::new(
                ErrorKind::NotAllowed,
                format!(
                    "namespace {name}: this agent may not create network namespaces \
                     (unshare(CLONE_NEWNET): EPERM; it needs CAP_SYS_ADMIN)"
                ),
            )
        } else {
            fail(format!("unshare(CLONE_NEWNET): {e}"))
        };
        let _ = ready.send(Err(err));
        return;
    }
    let fd = match open_own_netns() {
        Ok(fd) => fd,
        Err(e) => {
            let _ = ready.send(Err(fail(format!("opening its descriptor: {e}"))));
            return;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(fail(format!("runtime: {e}"))));
            return;
        }
    };
    rt.block_on(async move {
        let nl = match net::Netlink::new() {
            Ok(nl) => nl,
            Err(e) => {
                let _ = ready.send(Err(fail(e.message)));
                return;
            }
        };
        // `ip netns add` leaves lo down; local traffic (iperf3 to a local address, a bound
        // server) needs it.
        if let Err(e) = nl.set_link("lo", true).await {
            let _ = ready.send(Err(fail(format!("lo up: {}", e.message))));
            return;
        }
        if ready.send(Ok(fd)).is_err() {
            return;
        }
        let ctx = Arc::new(NsCtx { nl });
        while let Some(task) = rx.recv().await {
            tokio::spawn(task(ctx.clone()));
        }
    });
    // Dropping the runtime aborts what still runs and closes the netlink socket.
    drop(rt);
    let _ = done.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ns1", "host2ns", "host1-net1", "a_b", &"x".repeat(32)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-n",
            "a b",
            "a/b",
            "..",
            ".",
            "ns.1",
            "ns\0",
            "é",
            &"x".repeat(33),
        ] {
            let e = check_name(bad).err();
            assert_eq!(e.map(|e| e.kind), Some(ErrorKind::BadRequest), "{bad:?}");
        }
    }

    /// A namespace is really another one: its thread sees only lo, up; the agent's
    /// namespace is untouched; after shutdown the thread is gone.
    #[tokio::test]
    async fn worker_lives_in_its_own_namespace() {
        if !nix::unistd::geteuid().is_root() {
            if std::env::var_os("CI").is_some() {
                panic!("required in CI: root");
            }
            eprintln!("SKIP: needs root");
            return;
        }
        let ns = Netns::create("unit-ns")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ifs = ns
            .run(|ctx| async move { ctx.nl.list_interfaces().await })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ifs.len(), 1, "{ifs:?}");
        assert_eq!(ifs[0].name, "lo");
        assert!(ifs[0].up);
        // The namespace's inode differs from ours.
        let ours = std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        let theirs = ns
            .run(|_| async {
                std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.ino()
                })
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ours.is_ok() && theirs.is_ok());
        assert_ne!(ours.ok(), theirs.ok());
        ns.shutdown().await;
        let e = ns.run(|_| async {}).await.err();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::Failed));
    }
}
