//! A real agent over stdio in a fresh network namespace of the host kernel, for agent
//! operation tests.
#![allow(dead_code)]

use lnst_runner::provision::Transport;
use lnst_runner::session::{AgentClient, ClientOptions};
use std::process::Command;
use std::time::Duration;

/// A network namespace deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        super::sh(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    /// `ip -n NS ARGS`: stdout, or stderr as the error.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let o = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }

    /// `ip netns exec NS ARGS`, waited for.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Start `lnst-agent --stdio` in the namespace and connect to it as `host`; the child's
    /// stderr (its log) is captured for the caller to inspect.
    pub async fn agent(&self, host: &str) -> (tokio::process::Child, AgentClient) {
        self.agent_with_stderr(host, std::process::Stdio::piped())
            .await
    }

    /// [`Netns::agent`] with the agent's stderr (its log) going to `stderr`
    /// (`Stdio::inherit()`: the test's own output).
    pub async fn agent_with_stderr(
        &self,
        host: &str,
        stderr: std::process::Stdio,
    ) -> (tokio::process::Child, AgentClient) {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.0,
            env!("CARGO_BIN_EXE_lnst-agent"),
            "--stdio",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent: {e}"));
        let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
            panic!("agent stdio not piped");
        };
        let t = Transport {
            reader: Box::new(out),
            writer: Box::new(inp),
        };
        let opts = ClientOptions {
            request_timeout: Duration::from_secs(20),
            keepalive_interval: Duration::from_millis(500),
            keepalive_timeout: Duration::from_secs(10),
        };
        let c = AgentClient::connect(host, t, None, opts)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        (child, c)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
