//! Agents on pool machines (`*.xml` in the pool directory, `lnst-agent --port 9999`): the
//! requirements are mapped onto the pool (the first match, or every match with MULTIMATCH),
//! and each match's machines are reached over TCP when its turn comes.

use super::{AgentMatch, AgentSource, SourceError};
use crate::config::Config;
use crate::pool::Pool;
use crate::provision::{AgentEndpoint, IfaceBinding, TeardownErrors, Transport};
use crate::requirements::Requirements;
use crate::results::MatchDescription;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;

/// How long a pool machine may take to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PoolSource {
    dir: PathBuf,
    multimatch: bool,
    /// Loaded by preflight.
    pool: Option<Pool>,
}

impl PoolSource {
    pub fn new(config: &Config) -> Self {
        PoolSource {
            dir: config.pool_dir.clone(),
            multimatch: config.multimatch,
            pool: None,
        }
    }

    fn pool(&self) -> Result<&Pool, SourceError> {
        self.pool
            .as_ref()
            .ok_or_else(|| SourceError::Unusable("the pool was not loaded".into()))
    }
}

fn machine_err(machine: &str, message: String) -> SourceError {
    SourceError::Machine {
        machine: machine.to_string(),
        message,
        source: None,
    }
}

/// Connect to the machines of a match over TCP (each bounded by [`CONNECT_TIMEOUT`]).
async fn connect(pool: &Pool, m: &MatchDescription) -> Result<Vec<AgentEndpoint>, SourceError> {
    let mut eps = Vec::new();
    for (host_id, mm) in &m.machines {
        let machine = pool
            .machines
            .get(&mm.target)
            .ok_or_else(|| machine_err(&mm.target, "vanished from the pool".into()))?;
        let port = machine.rpc_port()?;
        let hostname = machine.hostname().to_string();
        let addr = if hostname.contains(':') && !hostname.starts_with('[') {
            format!("[{hostname}]:{port}")
        } else {
            format!("{hostname}:{port}")
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                machine_err(
                    &mm.target,
                    format!(
                        "{addr} did not answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| SourceError::Machine {
                machine: mm.target.clone(),
                message: format!("{addr} is not reachable: {e}"),
                source: Some(e),
            })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        // Normalised exactly as the agent normalises its own copy (surrounding whitespace
        // stripped), so that `echo secret > file` on either side matches; a secret file is
        // read bounded, as a regular file only.
        let secret = machine.secret()?;
        eps.push(AgentEndpoint {
            host_id: host_id.clone(),
            target: mm.target.clone(),
            hostname: hostname.clone(),
            transport: Transport {
                reader: Box::new(r),
                writer: Box::new(w),
            },
            secret,
            interfaces: mm
                .interfaces
                .iter()
                .map(|(id, i)| {
                    (
                        id.clone(),
                        IfaceBinding {
                            ifname: None,
                            hwaddr: i.hwaddr.to_ascii_lowercase(),
                            target: i.target.clone(),
                        },
                    )
                })
                .collect(),
            console_log: None,
            control_socket: None,
        });
    }
    Ok(eps)
}

impl AgentSource for PoolSource {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            self.pool = Some(crate::pool::load_pool_dir(&self.dir)?);
            Ok(())
        })
    }

    fn matches<'a>(
        &'a mut self,
        reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentMatch>, SourceError>> {
        Box::pin(async move {
            let found = crate::mapper::map(reqs, self.pool()?, self.multimatch)?;
            Ok(found
                .into_iter()
                .enumerate()
                .map(|(i, d)| AgentMatch {
                    description: Some(d),
                    raw_dir: format!("match{}/", i + 1),
                })
                .collect())
        })
    }

    fn endpoints<'a>(
        &'a mut self,
        _reqs: &'a Requirements,
        m: &'a AgentMatch,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, SourceError>> {
        Box::pin(async move {
            let d = m
                .description
                .as_ref()
                .ok_or_else(|| SourceError::Unusable("a pool match without machines".into()))?;
            connect(self.pool()?, d).await
        })
    }

    /// The machines stay; each agent restored its state when its session ended.
    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>> {
        Box::pin(async { Ok(()) })
    }

    /// Nothing of ours lives on pool machines after a session.
    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
