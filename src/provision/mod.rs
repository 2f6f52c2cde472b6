//! Provisioners: create agents for a recipe's requirements and tear them down.
//!
//! A provisioner is a *driver* (creates and destroys agents, converging: deleting what is
//! already gone is success) that hands back one [`AgentEndpoint`] per requirement host: a
//! transport to that host's agent plus the binding of each requirement interface to a
//! device on the agent.

pub mod netns;
pub mod podman;
pub mod vm;

use crate::requirements::Requirements;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to one agent (TCP socket halves, a child's stdout/stdin, an exec stream).
pub struct Transport {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

/// Where a requirement interface landed on the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceBinding {
    /// Interface name as the agent sees it (`eth0`, `lnsttest0`, ...), when known up front.
    pub ifname: Option<String>,
    /// MAC address, lower-case `aa:bb:cc:dd:ee:ff`; the controller finds the device by it.
    pub hwaddr: String,
    /// Pool-side interface id (pool XML `<eth id>`; container NIC name; netns veth name).
    pub target: String,
}

/// One provisioned agent for one requirement host.
#[derive(Debug)]
pub struct AgentEndpoint {
    /// Requirement host id (`host1`).
    pub host_id: String,
    /// Pool machine id / container name / namespace name.
    pub target: String,
    /// Address or name shown in the match description.
    pub hostname: String,
    pub transport: Transport,
    /// Shared secret the agent expects (None: agent runs without authentication).
    pub secret: Option<Vec<u8>>,
    /// Requirement interface id → binding.
    pub interfaces: BTreeMap<String, IfaceBinding>,
    /// Where the agent's own side writes what a controller cannot see over the transport (a
    /// VM's console: the guest kernel, its init and the agent's stderr). Its last lines are
    /// added to a failed connection's reason.
    pub console_log: Option<std::path::PathBuf>,
    /// A duplicate of the transport's socket, when it is one (a VM's control channel): a
    /// failed handshake's reason then says what each side had not yet taken off it
    /// ([`socket_queues`]), which tells a stalled VM channel from a silent agent.
    pub control_socket: Option<std::os::fd::OwnedFd>,
}

/// What a connected stream socket holds: whether the peer has read all we sent (`SIOCOUTQ`,
/// which for a Unix socket counts buffer memory, not bytes), and how many bytes the peer sent
/// that we have not read (`SIOCINQ`).
pub fn socket_queues(fd: &std::os::fd::OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    let query = |req| {
        let mut n: libc::c_int = 0;
        // SAFETY: an open descriptor and a pointer to an int, as both requests take.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n) };
        (rc == 0).then_some(n)
    };
    match (query(libc::TIOCOUTQ), query(libc::FIONREAD)) {
        (Some(out), Some(inq)) => format!(
            "{}, {inq} bytes from it unread",
            if out > 0 {
                "what was sent to the agent is not yet taken by its side"
            } else {
                "all that was sent to the agent was taken by its side"
            }
        ),
        _ => "socket queues unknown".into(),
    }
}

/// The last `n` non-empty lines of a log file joined with " | ", for error messages; empty when
/// the file is missing.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    log_last_lines(path, n).join(" | ")
}

/// The last `n` non-empty lines of a log file (none when it cannot be read).
pub fn log_last_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Errors while provisioning: the test fails with this reason.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("needs root: {0}")]
    NotRoot(String),
    #[error("{0}")]
    Setup(String),
    #[error("this setup cannot be provisioned: {0}")]
    Unsatisfiable(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Every error teardown met; teardown never stops at the first one.
#[derive(Debug, Default, thiserror::Error)]
#[error("teardown left errors: {}", .0.join("; "))]
pub struct TeardownErrors(pub Vec<String>);

impl TeardownErrors {
    pub fn push(&mut self, e: impl std::fmt::Display) {
        self.0.push(e.to_string());
    }
    pub fn into_result(self) -> Result<(), TeardownErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// A driver that creates agents for requirements and destroys everything it created.
pub trait Provisioner: Send {
    /// Create agents (and their L2 networks) for `reqs`. On error, whatever was created is
    /// still recorded so that [`Provisioner::teardown`] removes it.
    fn provision<'a>(
        &'a mut self,
        reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, ProvisionError>>;

    /// Remove everything this provisioner created. Convergent: what is already gone is fine.
    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn socket_queues_count_what_each_side_has_not_taken() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        a.write_all(b"0123456789").unwrap_or_else(|e| panic!("{e}"));
        let fd = |s: &std::os::unix::net::UnixStream| {
            std::os::fd::AsFd::as_fd(s)
                .try_clone_to_owned()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            socket_queues(&fd(&a)),
            "what was sent to the agent is not yet taken by its side, 0 bytes from it unread"
        );
        assert_eq!(
            socket_queues(&fd(&b)),
            "all that was sent to the agent was taken by its side, 10 bytes from it unread"
        );
    }
}
