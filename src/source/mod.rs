//! Agent sources: where a test's agents come from. One trait, [`AgentSource`], for the
//! namespace pool ([`netns`]), pool XML machines ([`pool`]) and Podman containers
//! ([`podman`]); the runner drives every source through the same loop:
//!
//! ```text
//! preflight (once)  →  for each test: matches(reqs) → for each match: endpoints → run
//!                                      → teardown
//! lnst-runner cleanup: cleanup() of every source
//! ```
//!
//! A source that creates agents per test (namespaces, containers, VMs) is a
//! [`crate::provision::Provisioner`] plus a small [`ProvisionerKind`] (how to check the
//! machine, how to make a provisioner, how to clean up after killed runs); [`Provisioned`]
//! turns it into an `AgentSource`. See docs/ARCHITECTURE.md.

pub mod netns;
pub mod podman;
pub mod pool;
pub mod vm;

use crate::config::{AgentMode, Config};
use crate::provision::{AgentEndpoint, ProvisionError, Provisioner, TeardownErrors};
use crate::requirements::Requirements;
use crate::results::MatchDescription;
use futures::future::BoxFuture;
use std::time::Instant;

/// Why a source cannot give agents.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The machine cannot host this source (not root, no agent binary, no engine): exit 2.
    #[error("{0}")]
    Unusable(String),
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    #[error(transparent)]
    Podman(#[from] crate::provision::podman::PodmanError),
    #[error(transparent)]
    Mapping(#[from] crate::mapper::MapperError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A pool machine could not be reached or used.
    #[error("pool machine {machine}: {message}")]
    Machine {
        machine: String,
        message: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error(transparent)]
    Teardown(#[from] TeardownErrors),
}

/// One set of agents a test runs on: a pool match, or the agents a provisioner creates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentMatch {
    /// Known before the agents are reached (pool matches); None: described from the
    /// endpoints once they exist.
    pub description: Option<MatchDescription>,
    /// Directory of this match's raw files under `raw/` (`match1/`; empty for a single set).
    pub raw_dir: String,
}

/// Where agents come from.
pub trait AgentSource: Send {
    /// `netns`, `pool`, `podman` (`LNST_AGENTS`, the plan's `agents`).
    fn name(&self) -> &'static str;

    /// Checks before the first test; an error is bad input (exit 2, one line).
    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>>;

    /// The agent sets for `reqs`: the pool's first match or, with MULTIMATCH, every match;
    /// one set to provision for the others.
    fn matches<'a>(
        &'a mut self,
        reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentMatch>, SourceError>>;

    /// Transports to the agents of `m` (pool: connect to the machines; provisioners: create
    /// the agents). Called once per match, in order; the previous match's agents are done.
    fn endpoints<'a>(
        &'a mut self,
        reqs: &'a Requirements,
        m: &'a AgentMatch,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, SourceError>>;

    /// Remove what this test's agents needed (convergent; nothing for the pool).
    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>>;

    /// The accelerator the agents run under (VMs: `kvm`/`tcg`), recorded with each agent.
    fn accelerator(&self) -> Option<&'static str> {
        None
    }

    /// Remove what killed runs left behind; the names of what was removed.
    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>>;
}

/// What a provisioner-based source adds to its provisioner.
pub trait ProvisionerKind: Send {
    /// The source's name (`netns`, `podman`, `vm`).
    const NAME: &'static str;

    /// Checks before the first test.
    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>>;

    /// A provisioner for one test, whose agents require `secret` (fresh per test).
    fn provisioner(&self, secret: &str) -> Result<Box<dyn Provisioner>, SourceError>;

    /// The accelerator the agents run under (VMs), once preflight has chosen it.
    fn accelerator(&self) -> Option<&'static str> {
        None
    }

    /// Remove what killed runs left behind.
    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>>;
}

/// A [`ProvisionerKind`] as an [`AgentSource`]: one set of agents per test, created by a
/// fresh provisioner with a fresh secret and torn down after the test.
pub struct Provisioned<K> {
    kind: K,
    current: Option<Box<dyn Provisioner>>,
}

impl<K: ProvisionerKind> Provisioned<K> {
    pub fn new(kind: K) -> Self {
        Provisioned {
            kind,
            current: None,
        }
    }
}

impl<K: ProvisionerKind> AgentSource for Provisioned<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        self.kind.preflight()
    }

    fn matches<'a>(
        &'a mut self,
        _reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentMatch>, SourceError>> {
        Box::pin(async { Ok(vec![AgentMatch::default()]) })
    }

    fn endpoints<'a>(
        &'a mut self,
        reqs: &'a Requirements,
        _m: &'a AgentMatch,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, SourceError>> {
        Box::pin(async move {
            // The run's secret reaches each agent through a root-only channel (a child's or a
            // container's environment), never a file; the endpoints carry it, so the
            // controller requires each agent to prove it.
            let secret = hex::encode(rand::random::<[u8; 32]>());
            let prov = self.current.insert(self.kind.provisioner(&secret)?);
            crate::say!("provisioning {} agent(s) ({})", reqs.hosts.len(), K::NAME);
            let t0 = Instant::now();
            let eps = prov.provision(reqs).await?;
            crate::say!("agents ready in {:.2} s", t0.elapsed().as_secs_f64());
            Ok(eps)
        })
    }

    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>> {
        Box::pin(async move {
            match self.current.take() {
                Some(mut prov) => {
                    crate::say!("tearing down the {} agents", K::NAME);
                    prov.teardown().await
                }
                None => Ok(()),
            }
        })
    }

    fn accelerator(&self) -> Option<&'static str> {
        self.kind.accelerator()
    }

    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        self.kind.cleanup()
    }
}

/// The source `config` selects (not yet preflighted).
pub fn from_config(config: &Config, run_id: &str) -> Box<dyn AgentSource> {
    match config.agent_mode {
        AgentMode::Netns => Box::new(Provisioned::new(netns::Netns::new(config, run_id))),
        AgentMode::Pool => Box::new(pool::PoolSource::new(config)),
        AgentMode::Podman => Box::new(Provisioned::new(podman::Podman::new(config, run_id))),
        AgentMode::Vm => Box::new(Provisioned::new(vm::Vm::new(config, run_id))),
    }
}

/// Every source that can leave something behind, for `lnst-runner cleanup`.
pub fn all_for_cleanup(config: &Config) -> Vec<Box<dyn AgentSource>> {
    // VMs first: their QEMU processes hold taps in switch namespaces that the namespace
    // cleanup would otherwise delete under them.
    vec![
        Box::new(Provisioned::new(vm::Vm::new(config, "cleanup"))),
        Box::new(Provisioned::new(netns::Netns::new(config, "cleanup"))),
        Box::new(Provisioned::new(podman::Podman::new(config, "cleanup"))),
    ]
}

/// The match description of provisioned agents: the networks are the labels, each host is
/// its agent's target.
pub fn match_from_endpoints(
    reqs: &Requirements,
    eps: &[AgentEndpoint],
    pool: &str,
) -> MatchDescription {
    use crate::results::{InterfaceMatch, MachineMatch};
    let mut m = MatchDescription {
        pool_name: pool.to_string(),
        ..MatchDescription::default()
    };
    for label in reqs.labels() {
        m.networks.insert(label.clone(), label);
    }
    for ep in eps {
        m.machines.insert(
            ep.host_id.clone(),
            MachineMatch {
                target: ep.target.clone(),
                hostname: ep.hostname.clone(),
                interfaces: ep
                    .interfaces
                    .iter()
                    .map(|(id, b)| {
                        (
                            id.clone(),
                            InterfaceMatch {
                                target: b.target.clone(),
                                hwaddr: b.hwaddr.clone(),
                            },
                        )
                    })
                    .collect(),
            },
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::{Script, ScriptedAgent};
    use std::sync::{Arc, Mutex};

    /// A source of scripted agents: `n` matches (like a pool with MULTIMATCH), one failing
    /// when asked to; records its calls.
    struct ScriptedSource {
        agents: ScriptedAgent,
        n: usize,
        fail_match: Option<usize>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl AgentSource for ScriptedSource {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
            Box::pin(async { Ok(()) })
        }
        fn matches<'a>(
            &'a mut self,
            _reqs: &'a Requirements,
        ) -> BoxFuture<'a, Result<Vec<AgentMatch>, SourceError>> {
            Box::pin(async move {
                Ok((0..self.n)
                    .map(|i| AgentMatch {
                        description: None,
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
                self.calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("endpoints {}", m.raw_dir));
                if self
                    .fail_match
                    .is_some_and(|f| m.raw_dir == format!("match{f}/"))
                {
                    return Err(SourceError::Unusable(format!("{} is gone", m.raw_dir)));
                }
                Ok(vec![
                    self.agents.endpoint("host1", &[("eth0", "a")]),
                    self.agents.endpoint("host2", &[("eth0", "b")]),
                ])
            })
        }
        fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>> {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push("teardown".into());
            Box::pin(async { Ok(()) })
        }
        fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn spec() -> crate::plan::TestSpec {
        let plan = crate::plan::plan_from_test_db(
            br#"[{"recipe_name": "PingFloodRecipe", "params": {"src_addr": "198.18.80.1/24", "dst_addr": "198.18.80.2/24", "count": 3}}]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        plan.tests
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no test"))
    }

    fn run(n: usize, fail_match: Option<usize>) -> (crate::results::TestOutcome, Vec<String>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut src = ScriptedSource {
            agents: ScriptedAgent::new(Script::default()),
            n,
            fail_match,
            calls: calls.clone(),
        };
        let (outcome, stopped) = rt.block_on(async {
            let never = std::future::pending::<&'static str>();
            tokio::pin!(never);
            crate::runner::run_test(&mut src, &spec(), None, &mut never).await
        });
        assert_eq!(stopped, None);
        let calls = calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (outcome, calls)
    }

    #[test]
    fn every_match_runs_through_one_loop_then_one_teardown() {
        let (o, calls) = run(2, None);
        assert_eq!(o.error, None);
        assert_eq!(o.runs.len(), 2);
        assert_eq!(
            calls,
            ["endpoints match1/", "endpoints match2/", "teardown"]
        );
        let names: Vec<&str> = o.raw.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "match1/ping_ipv4_host1_to_host2.txt",
                "match2/ping_ipv4_host1_to_host2.txt"
            ]
        );
        // Provisioned agents are described from their endpoints.
        let m = &o.runs[0].matched;
        assert_eq!(m.pool_name, "scripted");
        assert_eq!(
            m.machines.get("host1").map(|h| h.target.as_str()),
            Some("scripted-host1")
        );
        assert_eq!(m.networks.get("net1").map(String::as_str), Some("net1"));
    }

    #[test]
    fn a_failing_match_stops_the_test_and_still_tears_down() {
        let (o, calls) = run(3, Some(2));
        assert_eq!(o.runs.len(), 1);
        assert_eq!(o.error.as_deref(), Some("match2/ is gone"));
        assert_eq!(
            calls,
            ["endpoints match1/", "endpoints match2/", "teardown"]
        );
    }
}
