//! Agents in network namespaces on this machine (the embedded default): the
//! [`NetnsProvisioner`] per test, the lnst-agent binary found once.

use super::{ProvisionerKind, SourceError};
use crate::config::Config;
use crate::provision::netns::NetnsProvisioner;
use crate::provision::Provisioner;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};

pub struct Netns {
    run_id: String,
    agent_bin: Option<PathBuf>,
    path: Vec<PathBuf>,
    /// Found by preflight.
    agent: Option<PathBuf>,
}

impl Netns {
    pub fn new(config: &Config, run_id: &str) -> Self {
        Netns {
            run_id: run_id.to_string(),
            agent_bin: config.agent_bin.clone(),
            path: config.path.clone(),
            agent: None,
        }
    }
}

/// Where our agent binary is: `LNST_AGENT_BIN`, next to this executable, or on `PATH`.
pub fn agent_binary(agent_bin: Option<&Path>, path: &[PathBuf]) -> Result<PathBuf, SourceError> {
    if let Some(p) = agent_bin {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(SourceError::Unusable(format!(
            "LNST_AGENT_BIN={} does not exist",
            crate::text::clip(&p.display().to_string(), 200)
        )));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for cand in [dir.join("lnst-agent"), dir.join("../lnst-agent")] {
                if cand.is_file() {
                    return Ok(cand);
                }
            }
        }
    }
    path.iter()
        .map(|dir| dir.join("lnst-agent"))
        .find(|c| c.is_file())
        .ok_or_else(|| {
            SourceError::Unusable(
                "lnst-agent not found (next to lnst-runner, on PATH, or in LNST_AGENT_BIN)".into(),
            )
        })
}

impl ProvisionerKind for Netns {
    const NAME: &'static str = "netns";

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            NetnsProvisioner::check_root().map_err(|e| SourceError::Unusable(e.to_string()))?;
            self.agent = Some(agent_binary(self.agent_bin.as_deref(), &self.path)?);
            Ok(())
        })
    }

    fn provisioner(&self, secret: &str) -> Result<Box<dyn Provisioner>, SourceError> {
        let agent = self
            .agent
            .clone()
            .ok_or_else(|| SourceError::Unusable("the agent binary was not looked for".into()))?;
        let argv = vec![agent.into_os_string(), "--stdio".into()];
        Ok(Box::new(
            NetnsProvisioner::new(&self.run_id, argv).with_agent_secret(secret),
        ))
    }

    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        Box::pin(async { Ok(crate::provision::netns::cleanup_leftovers()?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_binary_from_config() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bin = dir.path().join("lnst-agent");
        std::fs::write(&bin, "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(agent_binary(Some(&bin), &[]).ok(), Some(bin.clone()));
        let missing = dir.path().join("nope");
        let e = agent_binary(Some(&missing), &[])
            .err()
            .map(|e| e.to_string());
        assert!(
            e.is_some_and(|e| e.starts_with("LNST_AGENT_BIN=") && e.ends_with("does not exist"))
        );
    }
}
