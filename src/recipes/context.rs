//! The run context a recipe works in: one connected agent per requirement host, the
//! requirement-interface → agent-device binding, the results being recorded, raw tool output
//! and the device state the recipe changed (restored when a sub-configuration ends).

use crate::measure::evaluate::BaselineFile;
use crate::protocol::{JobResult, JobSpec};
use crate::results::{DeviceAction, JobAction, RecipeRun, ResultEntry, ResultLevel, ResultType};
use crate::session::{AgentClient, SessionError};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Why a recipe run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("parameter error: {0}")]
    Param(String),
    #[error("not supported by this runner: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Run(String),
    #[error(transparent)]
    Agent(#[from] SessionError),
}

/// One connected host.
pub struct HostHandle {
    pub id: String,
    pub client: AgentClient,
    /// Requirement interface id (`eth0`) → device name on the agent.
    pub ifaces: BTreeMap<String, String>,
}

/// What a recipe needs while it runs.
pub struct RunContext {
    pub hosts: BTreeMap<String, HostHandle>,
    pub run: RecipeRun,
    /// Raw tool output: file name under `raw/` → bytes.
    pub raw: Vec<(String, Vec<u8>)>,
    /// Prefix of progress lines (`[sub 2/5]`).
    pub progress_prefix: String,
    /// Baseline figures to compare flows against (LNST_BASELINE_FILE).
    pub baseline: Option<BaselineFile>,
    /// Wall time spent in ping runs and iperf3 iterations (reported as `TestOutcome::tool_time_s`).
    pub tool_time_s: f64,
    /// The test's parameters as resolved by the plan, for the description results.
    pub params: crate::schema::ResolvedParams,
    saved_offloads: BTreeMap<(String, String), Vec<(String, bool)>>,
    saved_mtu: BTreeMap<(String, String), u32>,
    job_level: ResultLevel,
}

impl RunContext {
    pub fn new(hosts: BTreeMap<String, HostHandle>, run: RecipeRun) -> Self {
        RunContext {
            hosts,
            run,
            raw: Vec::new(),
            progress_prefix: String::new(),
            baseline: None,
            tool_time_s: 0.0,
            params: crate::schema::ResolvedParams::default(),
            saved_offloads: BTreeMap::new(),
            saved_mtu: BTreeMap::new(),
            job_level: ResultLevel::Normal,
        }
    }

    pub fn add(&mut self, r: ResultEntry) {
        self.run.add(r);
    }

    /// One progress line on stderr.
    pub fn progress(&self, msg: &str) {
        if self.progress_prefix.is_empty() {
            crate::say!("{msg}");
        } else {
            crate::say!("{} {msg}", self.progress_prefix);
        }
    }

    pub fn save_raw(&mut self, name: String, bytes: &[u8]) {
        self.raw.push((name, bytes.to_vec()));
    }

    fn host(&self, host: &str) -> Result<&HostHandle, RecipeError> {
        self.hosts
            .get(host)
            .ok_or_else(|| RecipeError::Run(format!("no agent for requirement host {host}")))
    }

    fn dev(&self, host: &str, dev: &str) -> Result<(AgentClient, String), RecipeError> {
        let h = self.host(host)?;
        let ifname = h.ifaces.get(dev).cloned().ok_or_else(|| {
            RecipeError::Run(format!(
                "{host}.{dev} is not mapped to a device on the agent"
            ))
        })?;
        Ok((h.client.clone(), ifname))
    }

    /// Call a device operation and record it as a DeviceMethodCallResult (FAIL on error).
    pub async fn device_call<F, Fut>(
        &mut self,
        host: &str,
        dev: &str,
        method: &str,
        args: &[String],
        op: F,
    ) -> Result<(), RecipeError>
    where
        F: FnOnce(AgentClient, String) -> Fut,
        Fut: Future<Output = Result<(), SessionError>>,
    {
        let (client, ifname) = self.dev(host, dev)?;
        let res = op(client, ifname).await;
        self.add(ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            host,
            dev,
            DeviceAction::MethodCall {
                name: method.to_string(),
                args: args.to_vec(),
                kwargs: Vec::new(),
            },
        ));
        res.map_err(RecipeError::from)
    }

    pub async fn wait_dad(
        &mut self,
        host: &str,
        dev: &str,
        timeout: Duration,
    ) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(host, dev)?;
        client.wait_dad(&ifname, timeout).await.map_err(|e| {
            RecipeError::Run(format!("{host}.{dev}: IPv6 addresses still tentative: {e}"))
        })
    }

    /// Remember the device's current offload features (once per sub-configuration).
    pub async fn save_offloads(&mut self, host: &str, dev: &str) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(host, dev)?;
        let feats = client.get_offloads(&ifname).await?;
        self.saved_offloads
            .insert((host.to_string(), dev.to_string()), feats);
        Ok(())
    }

    /// Put back the features a sub-configuration changed, to their values before it.
    pub async fn restore_offloads(&mut self, host: &str, dev: &str) -> Result<(), RecipeError> {
        let Some(saved) = self
            .saved_offloads
            .remove(&(host.to_string(), dev.to_string()))
        else {
            return Ok(());
        };
        let (client, ifname) = self.dev(host, dev)?;
        // Only the features ethtool lets us change and that a combination touches matter;
        // setting fixed ones fails, so restore the common ENRT set.
        let keep: Vec<(String, bool)> = saved
            .into_iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "generic-receive-offload"
                        | "generic-segmentation-offload"
                        | "tcp-segmentation-offload"
                        | "tx-checksumming"
                        | "rx-checksumming"
                        | "gro"
                        | "gso"
                        | "tso"
                        | "tx"
                        | "rx"
                )
            })
            .map(|(k, v)| (crate::protocol::offload_short_name(&k).to_string(), v))
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        let shown = keep
            .iter()
            .map(|(k, v)| format!("{k} {}", if *v { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(" ");
        let res = client.set_offloads(&ifname, &keep).await;
        self.add(ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            host,
            dev,
            DeviceAction::MethodCall {
                name: "restore_offloads".into(),
                args: vec![format!("'{shown}'")],
                kwargs: Vec::new(),
            },
        ));
        res.map_err(RecipeError::from)
    }

    pub async fn set_mtu_saved(
        &mut self,
        host: &str,
        dev: &str,
        mtu: u32,
    ) -> Result<(), RecipeError> {
        let (client, ifname) = self.dev(host, dev)?;
        let old = client
            .list_interfaces()
            .await?
            .into_iter()
            .find(|i| i.name == ifname)
            .map(|i| i.mtu)
            .ok_or_else(|| RecipeError::Run(format!("{host}.{dev} ({ifname}) disappeared")))?;
        self.saved_mtu
            .entry((host.to_string(), dev.to_string()))
            .or_insert(old);
        let res = client.set_mtu(&ifname, mtu).await;
        self.add(ResultEntry::device(
            ResultType::from_bool(res.is_ok()),
            host,
            dev,
            DeviceAction::AttrSet {
                name: "mtu".into(),
                value: mtu.to_string(),
                old_value: old.to_string(),
            },
        ));
        res.map_err(RecipeError::from)
    }

    pub async fn restore_mtu(&mut self, host: &str, dev: &str) -> Result<(), RecipeError> {
        let Some(old) = self.saved_mtu.remove(&(host.to_string(), dev.to_string())) else {
            return Ok(());
        };
        let (client, ifname) = self.dev(host, dev)?;
        client
            .set_mtu(&ifname, old)
            .await
            .map_err(RecipeError::from)
    }

    /// Write a sysctl on a host; returns the old value. The agent also restores it when the
    /// recipe ends.
    pub async fn sysctl(
        &mut self,
        host: &str,
        path: &str,
        value: &str,
    ) -> Result<String, RecipeError> {
        let client = self.host(host)?.client.clone();
        client
            .sysctl_write(path, value)
            .await
            .map_err(|e| RecipeError::Run(format!("{host}: writing {path} = {value} failed: {e}")))
    }

    /// Start a background job, recording a JobStart result.
    pub async fn start_job(&mut self, host: &str, spec: JobSpec) -> Result<u64, RecipeError> {
        let client = self.host(host)?.client.clone();
        let command = crate::agent::jobs::render_argv(&spec)
            .map(|a| a.join(" "))
            .unwrap_or_else(|| format!("{spec:?}"));
        let res = client.start_job(spec).await;
        let id = match &res {
            Ok(id) => *id,
            Err(_) => 0,
        };
        self.add(ResultEntry::job(
            ResultType::from_bool(res.is_ok()),
            host,
            None,
            id,
            JobAction::Start,
            &command,
            self.job_level,
        ));
        res.map_err(RecipeError::from)
    }

    fn record_end(&mut self, host: &str, id: u64, res: &JobResult) {
        let mut data = serde_json::Map::new();
        if let Some(code) = res.exit_code {
            data.insert("exit_code".into(), code.into());
        }
        if let Some(e) = &res.error {
            data.insert("error".into(), e.clone().into());
        }
        let stderr_tail: String = res
            .stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        data.insert("stderr".into(), stderr_tail.into());
        data.insert(
            "duration_s".into(),
            serde_json::json!(res.finished_at - res.started_at),
        );
        let command = self
            .run
            .results
            .iter()
            .rev()
            .find_map(|r| match &r.kind {
                crate::results::ResultKind::Job {
                    host: h,
                    job_id,
                    command,
                    ..
                } if h == host && *job_id == id => Some(command.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.add(
            ResultEntry::job(
                ResultType::from_bool(res.passed),
                host,
                None,
                id,
                JobAction::End,
                &command,
                self.job_level,
            )
            .with_data(serde_json::Value::Object(data)),
        );
    }

    /// Wait for a job up to `timeout`, kill it when it overruns, and record JobFinish.
    pub async fn finish_job(
        &mut self,
        host: &str,
        id: u64,
        timeout: Duration,
    ) -> Result<JobResult, RecipeError> {
        let client = self.host(host)?.client.clone();
        let res = match client.wait_job(id, timeout).await {
            Ok(r) => r,
            Err(SessionError::AgentLost { host, reason }) => {
                return Err(RecipeError::Agent(SessionError::AgentLost { host, reason }))
            }
            Err(e) => {
                tracing::warn!(
                    "job {id} on {host} did not finish in {timeout:?} ({e}); killing it"
                );
                let mut r = client.kill_job(id).await?;
                r.passed = false;
                if r.error.is_none() {
                    r.error = Some(format!(
                        "did not finish within {} s and was killed",
                        timeout.as_secs()
                    ));
                }
                r
            }
        };
        self.record_end(host, id, &res);
        Ok(res)
    }

    /// Stop a sampling job (SIGINT semantics) and record JobFinish.
    pub async fn stop_job(&mut self, host: &str, id: u64) -> Result<JobResult, RecipeError> {
        let client = self.host(host)?.client.clone();
        let mut res = client.stop_job(id).await?;
        // Stopping a sampler is its normal end.
        if res.error.is_none() {
            res.passed = true;
        }
        self.record_end(host, id, &res);
        Ok(res)
    }
}
