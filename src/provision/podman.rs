//! Podman provisioner: one L2-only network per requirement label and one container per
//! requirement host, created through the engine API at `PODMAN_URI`; each container's command
//! is `lnst-agent --stdio` and the controller reaches it by attaching to the container's stdio
//! (no dependence on the host's routing, works from a controller container that has the socket
//! mounted).
//!
//! bollard (Docker-compatible API) does most of the work; the libpod endpoint creates the
//! networks, because the compat create ignores `IPAM.Driver` and so cannot make a network
//! without addresses (see docs/PODMAN.md). Against Docker the compat create is used with an
//! explicit unused /24 carved from [`PodmanOptions::subnet_v4`].
//!
//! Every name carries the run id (`lnst-<run>-<host|label>`), every resource the labels
//! `lnst-runner.run=<run>` and `lnst-runner.pid=<owner>` (see [`OwnerInfo`]), so that
//! [`cleanup_leftovers`] can remove what a killed run left behind.

mod attach;
mod exec;
mod libpod;
mod owner;
mod veth;

pub use exec::ExecOutput;
pub use owner::{Liveness, OwnerInfo};

use super::{AgentEndpoint, IfaceBinding, ProvisionError, Provisioner, TeardownErrors, Transport};
use crate::requirements::Requirements;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListNetworksOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures::future::BoxFuture;
use hyper::Method;
use ipnet::Ipv4Net;
use libpod::{Libpod, LIBPOD_PREFIX};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Label carrying the run id on every container and network.
pub const LABEL_RUN: &str = "lnst-runner.run";
/// Label carrying the creating process ([`OwnerInfo::label_value`]).
pub const LABEL_PID: &str = "lnst-runner.pid";
/// Label carrying the id of the Podman container the creator ran in, when it did.
pub const LABEL_CONTAINER: &str = "lnst-runner.container";
/// Requirement host id on a container / network label on a network.
pub const LABEL_HOST: &str = "lnst-runner.host";
pub const LABEL_NET: &str = "lnst-runner.label";

/// Capabilities the agent container gets on top of the engine defaults (see docs/PODMAN.md).
pub const AGENT_CAPS: &[&str] = &["NET_ADMIN", "NET_RAW", "SYS_NICE"];
/// `/proc/sys` is read-only in a container by default; the agent sets (and restores) net.*
/// sysctls of its own namespace, so it is unmasked.
pub const AGENT_SECURITY_OPTS: &[&str] = &["unmask=/proc/sys"];

/// Engine API call timeout (seconds) for bollard.
const API_TIMEOUT_S: u64 = 120;

/// Where the engine API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineUri {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

impl EngineUri {
    /// Accepts `unix:///path`, `unix:/path`, `unix://path` (relative paths are rejected),
    /// `tcp://host:port` and `http://host:port`.
    pub fn parse(uri: &str) -> Result<Self, PodmanError> {
        let bad = || PodmanError::BadUri(uri.to_string());
        let s = uri.trim();
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.trim_start_matches('/');
            if path.is_empty() || !rest.starts_with('/') && !rest.starts_with("//") {
                return Err(bad());
            }
            return Ok(EngineUri::Unix(PathBuf::from(format!("/{path}"))));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                let hostport = rest.trim_end_matches('/');
                let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
                if host.is_empty() || hostport.contains('/') || port.parse::<u16>().is_err() {
                    return Err(bad());
                }
                return Ok(EngineUri::Tcp(hostport.to_string()));
            }
        }
        Err(bad())
    }
}

impl std::fmt::Display for EngineUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineUri::Unix(p) => write!(f, "unix://{}", p.display()),
            EngineUri::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Options of the Podman provisioner.
#[derive(Debug, Clone)]
pub struct PodmanOptions {
    /// `unix:///path`, `unix:/path` or `tcp://host:port` (PODMAN_URI).
    pub uri: String,
    /// Agent image (IMAGE_NAME).
    pub image: String,
    /// Run id: part of every name and the value of the `lnst-runner.run` label.
    pub run_id: String,
    /// OCI runtime for the agent containers (LNST_OCI_RUNTIME); None: the engine's default.
    pub oci_runtime: Option<String>,
    /// Docker only: /24 subnets for the test networks are carved from here.
    pub subnet_v4: Ipv4Net,
    /// Command of each agent container; the controller talks to it over the container's
    /// attached stdin/stdout.
    pub agent_cmd: Vec<String>,
    /// Run agent containers `--privileged` instead of the capability set (escape hatch).
    pub privileged: bool,
    /// This run's shared secret, handed to each agent in its container's environment
    /// (`LNST_AGENT_SECRET`); None: agents accept any controller on the stdio channel.
    pub agent_secret: Option<String>,
}

impl PodmanOptions {
    pub fn new(
        uri: impl Into<String>,
        image: impl Into<String>,
        run_id: impl Into<String>,
    ) -> Self {
        Self {
            uri: uri.into(),
            image: image.into(),
            run_id: run_id.into(),
            oci_runtime: None,
            subnet_v4: default_subnet_v4(),
            agent_cmd: vec!["lnst-agent".into(), "--stdio".into()],
            privileged: false,
            agent_secret: None,
        }
    }
}

/// 198.19.0.0/16: inside the benchmarking range every network of ours must use.
pub fn default_subnet_v4() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(198, 19, 0, 0), 16).unwrap_or_default()
}

/// Which engine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

/// What preflight learned about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub kind: EngineKind,
    /// Engine version (`4.3.1`).
    pub version: String,
    /// Negotiated compat API version (`1.41`).
    pub api_version: String,
    /// `netavark` / `cni` (Podman), `bridge` (Docker).
    pub network_backend: String,
}

/// Errors of the Podman provisioner; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("PODMAN_URI {0:?}: not an engine address — use unix:///path/to/podman.sock or tcp://host:port")]
    BadUri(String),
    #[error("PODMAN_URI {uri}: socket does not exist — start the API with 'podman system service --time=0 {uri}'")]
    SocketMissing { uri: String },
    #[error("PODMAN_URI {uri}: the engine does not answer ({reason}) — start the API with 'podman system service --time=0 {uri}'")]
    NotAnswering { uri: String, reason: String },
    #[error(
        "image '{image}' not found in the engine — build it with container_files/build-images.sh"
    )]
    ImageMissing { image: String },
    #[error("invalid run id {0:?}: use letters, digits, '_', '.', '-'")]
    BadRunId(String),
    #[error("LNST_OCI_RUNTIME {0:?}: not a runtime name — give the name of a runtime the engine has configured (runc, crun, krun, ...), not a path")]
    BadRuntime(String),
    #[error("LNST_OCI_RUNTIME '{runtime}': the engine has no such OCI runtime (it has: {known})")]
    UnknownRuntime { runtime: String, known: String },
    #[error("engine API: {op}: {msg}")]
    Api { op: String, msg: String },
}

impl PodmanError {
    fn api(op: &str, msg: impl std::fmt::Display) -> Self {
        PodmanError::Api {
            op: op.to_string(),
            msg: one_line(&msg.to_string()),
        }
    }
}

impl From<PodmanError> for ProvisionError {
    fn from(e: PodmanError) -> Self {
        ProvisionError::Setup(e.to_string())
    }
}

/// Collapse whitespace runs (newlines included) into single spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A name part usable in engine object names: `[A-Za-z0-9_.-]`, others become '-'.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `base`, or `base-2`, `base-3`, ... whichever is not taken yet.
fn unique(base: String, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.clone();
    let mut i = 2;
    while taken.contains(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    taken.insert(name.clone());
    name
}

/// What to create for a set of requirements (pure; see [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Requirement label → network name.
    pub networks: BTreeMap<String, String>,
    pub hosts: Vec<HostPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub host_id: String,
    pub container: String,
    /// Requirement interface id → network name, for NICs the engine attaches.
    pub nics: BTreeMap<String, String>,
    /// Requirement interface id → (network name, host end, container end) for the further
    /// interfaces of this host on a label already attached: veth pairs onto that bridge.
    pub veths: BTreeMap<String, (String, String, String)>,
}

/// Names for every network and container, one NIC per requirement interface. Two interfaces
/// of one host on one label need two NICs on one segment, which Podman cannot attach (a
/// container joins a network only once, and a second network on the same bridge is refused):
/// the first (by id) is attached by the engine, the others become veth pairs on its bridge.
pub fn plan(reqs: &Requirements, run_id: &str) -> Result<Plan, ProvisionError> {
    let run = sanitize(run_id);
    let mut taken = BTreeSet::new();
    let mut networks = BTreeMap::new();
    for label in reqs.labels() {
        let name = unique(format!("lnst-{run}-{}", sanitize(&label)), &mut taken);
        networks.insert(label, name);
    }
    let mut hosts = Vec::new();
    for (host_id, host) in &reqs.hosts {
        let container = unique(format!("lnst-{run}-{}", sanitize(host_id)), &mut taken);
        let mut nics = BTreeMap::new();
        let mut veths = BTreeMap::new();
        for (iface_id, dev) in &host.interfaces {
            let net = networks.get(&dev.label).cloned().ok_or_else(|| {
                ProvisionError::Setup(format!("label {} has no network", dev.label))
            })?;
            if nics.values().any(|n| *n == net) {
                let (h, c) = veth::names(run_id, host_id, iface_id);
                veths.insert(iface_id.clone(), (net, h, c));
            } else {
                nics.insert(iface_id.clone(), net);
            }
        }
        hosts.push(HostPlan {
            host_id: host_id.clone(),
            container,
            nics,
            veths,
        });
    }
    Ok(Plan { networks, hosts })
}

/// First /24 inside `pool` that overlaps none of `used`.
fn free_subnet(pool: Ipv4Net, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    let prefix = pool.prefix_len().max(24);
    pool.subnets(prefix)
        .ok()?
        .find(|cand| !used.iter().any(|u| u.contains(cand) || cand.contains(u)))
}

/// The provisioner. Create with [`PodmanProvisioner::connect`], check with
/// [`PodmanProvisioner::preflight`], then use it through [`Provisioner`].
pub struct PodmanProvisioner {
    opts: PodmanOptions,
    uri: EngineUri,
    docker: OnceCell<Docker>,
    engine: OnceCell<EngineInfo>,
    libpod: Libpod,
    owner: OwnerInfo,
    /// Created (or being created) resources, removed by teardown.
    containers: Vec<String>,
    networks: Vec<String>,
    /// Host ends of veth pairs.
    veths: Vec<String>,
    /// MACs of veth container ends: (container, interface id) → MAC.
    veth_macs: BTreeMap<(String, String), String>,
    /// A create call was sent and has not returned: the run was interrupted mid-call, and the
    /// engine may finish creating the resource after teardown has looked for it.
    mid_create: bool,
}

impl std::fmt::Debug for PodmanProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodmanProvisioner")
            .field("uri", &self.uri)
            .field("image", &self.opts.image)
            .field("run_id", &self.opts.run_id)
            .field("containers", &self.containers)
            .field("networks", &self.networks)
            .finish()
    }
}

/// Build a bollard client for `uri` and negotiate the API version.
async fn connect_docker(uri: &EngineUri) -> Result<Docker, PodmanError> {
    let shown = uri.to_string();
    let docker = match uri {
        EngineUri::Unix(p) => {
            if !p.exists() {
                return Err(PodmanError::SocketMissing { uri: shown });
            }
            Docker::connect_with_unix(
                &p.to_string_lossy(),
                API_TIMEOUT_S,
                bollard::API_DEFAULT_VERSION,
            )
        }
        EngineUri::Tcp(a) => Docker::connect_with_http(
            &format!("tcp://{a}"),
            API_TIMEOUT_S,
            bollard::API_DEFAULT_VERSION,
        ),
    }
    .map_err(|e| PodmanError::NotAnswering {
        uri: shown.clone(),
        reason: one_line(&e.to_string()),
    })?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| PodmanError::NotAnswering {
            uri: shown,
            reason: one_line(&e.to_string()),
        })
}

impl PodmanProvisioner {
    /// Validate the options; contacts nothing (see [`PodmanProvisioner::preflight`]).
    pub fn connect(opts: PodmanOptions) -> Result<Self, PodmanError> {
        let uri = EngineUri::parse(&opts.uri)?;
        if opts.run_id.is_empty()
            || !opts
                .run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err(PodmanError::BadRunId(opts.run_id.clone()));
        }
        if let Some(rt) = &opts.oci_runtime {
            if !crate::config::is_runtime_name(rt) {
                return Err(PodmanError::BadRuntime(rt.clone()));
            }
        }
        Ok(Self {
            libpod: Libpod::new(uri.clone()),
            uri,
            opts,
            docker: OnceCell::new(),
            engine: OnceCell::new(),
            owner: OwnerInfo::current(),
            containers: Vec::new(),
            networks: Vec::new(),
            veths: Vec::new(),
            veth_macs: BTreeMap::new(),
            mid_create: false,
        })
    }

    /// Record another owner in the labels (tests fake a dead run with it).
    pub fn with_owner(mut self, owner: OwnerInfo) -> Self {
        self.owner = owner;
        self
    }

    pub fn options(&self) -> &PodmanOptions {
        &self.opts
    }

    async fn docker(&self) -> Result<&Docker, PodmanError> {
        self.docker
            .get_or_try_init(|| connect_docker(&self.uri))
            .await
    }

    /// Reach the engine, detect it, check that it has the OCI runtime asked for (when one is)
    /// and that the agent image exists. Every failure is one line naming the culprit and the
    /// fix.
    pub async fn preflight(&self) -> Result<EngineInfo, PodmanError> {
        let info = self.engine_info().await?.clone();
        if let Some(rt) = &self.opts.oci_runtime {
            self.check_runtime(rt).await?;
        }
        let docker = self.docker().await?;
        match docker.inspect_image(&path_segment(&self.opts.image)).await {
            Ok(_) => Ok(info),
            Err(e) if status_of(&e) == Some(404) => Err(PodmanError::ImageMissing {
                image: self.opts.image.clone(),
            }),
            Err(e) => Err(PodmanError::api(
                &format!("inspect image '{}'", self.opts.image),
                e,
            )),
        }
    }

    /// The engine's configured OCI runtimes (`Runtimes` of the compat `/info`, which Podman and
    /// Docker both serve) must include `rt`. An engine that does not list its runtimes is
    /// trusted: the container create then names the problem.
    async fn check_runtime(&self, rt: &str) -> Result<(), PodmanError> {
        let info = self.libpod.json(Method::GET, "/info", None).await?;
        let Some(runtimes) = info.get("Runtimes").and_then(|r| r.as_object()) else {
            tracing::debug!("the engine does not list its OCI runtimes; {rt} not checked");
            return Ok(());
        };
        if runtimes.contains_key(rt) {
            return Ok(());
        }
        let mut known: Vec<&str> = runtimes.keys().map(String::as_str).collect();
        known.sort_unstable();
        Err(PodmanError::UnknownRuntime {
            runtime: rt.to_string(),
            known: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
        })
    }

    async fn engine_info(&self) -> Result<&EngineInfo, PodmanError> {
        self.engine
            .get_or_try_init(|| async {
                let docker = self.docker().await?;
                let uri = self.uri.to_string();
                let v = docker
                    .version()
                    .await
                    .map_err(|e| PodmanError::NotAnswering {
                        uri,
                        reason: one_line(&e.to_string()),
                    })?;
                let is_podman = v
                    .components
                    .iter()
                    .flatten()
                    .any(|c| c.name.to_ascii_lowercase().contains("podman"))
                    || v.platform
                        .as_ref()
                        .is_some_and(|p| p.name.to_ascii_lowercase().contains("podman"));
                let kind = if is_podman {
                    EngineKind::Podman
                } else {
                    EngineKind::Docker
                };
                let network_backend = match kind {
                    EngineKind::Podman => self
                        .libpod
                        .json(Method::GET, &format!("{LIBPOD_PREFIX}/info"), None)
                        .await?
                        .pointer("/host/networkBackend")
                        .and_then(|b| b.as_str())
                        .unwrap_or("unknown")
                        .to_string(),
                    EngineKind::Docker => "bridge".to_string(),
                };
                let api = docker.client_version();
                let info = EngineInfo {
                    kind,
                    version: v.version.unwrap_or_default(),
                    api_version: format!("{}.{}", api.major_version, api.minor_version),
                    network_backend,
                };
                tracing::debug!(
                    "engine at {}: {:?} {} (API {}, network backend {})",
                    self.uri,
                    info.kind,
                    info.version,
                    info.api_version,
                    info.network_backend
                );
                Ok(info)
            })
            .await
    }

    fn labels(&self, role: (&str, &str)) -> HashMap<String, String> {
        let mut l = HashMap::new();
        l.insert(LABEL_RUN.to_string(), self.opts.run_id.clone());
        l.insert(LABEL_PID.to_string(), self.owner.label_value());
        if let Some(c) = &self.owner.container {
            l.insert(LABEL_CONTAINER.to_string(), c.clone());
        }
        l.insert(role.0.to_string(), role.1.to_string());
        l
    }

    /// Run a short command in one of the run's containers and collect its output
    /// (tests and diagnostics).
    pub async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput, PodmanError> {
        exec::run(self.docker().await?, container, cmd).await
    }

    /// Names of the containers and networks this provisioner created and has not removed.
    pub fn resources(&self) -> (Vec<String>, Vec<String>) {
        (self.containers.clone(), self.networks.clone())
    }

    async fn create_network(&mut self, label: &str, name: &str) -> Result<(), PodmanError> {
        let engine = self.engine_info().await?.clone();
        let labels = self.labels((LABEL_NET, label));
        // Recorded before the call: a create that timed out may still have happened.
        self.networks.push(name.to_string());
        self.mid_create = true;
        match engine.kind {
            EngineKind::Podman => {
                let body = serde_json::json!({
                    "name": name,
                    "driver": "bridge",
                    "internal": true,
                    "ipv6_enabled": false,
                    "dns_enabled": false,
                    "ipam_options": {"driver": "none"},
                    "labels": labels,
                });
                self.libpod
                    .json(
                        Method::POST,
                        &format!("{LIBPOD_PREFIX}/networks/create"),
                        Some(&body),
                    )
                    .await?;
            }
            EngineKind::Docker => {
                let docker = self.docker().await?.clone();
                let used: Vec<Ipv4Net> = docker
                    .list_networks(None::<ListNetworksOptions>)
                    .await
                    .map_err(|e| PodmanError::api("list networks", e))?
                    .into_iter()
                    .flat_map(|n| n.ipam.and_then(|i| i.config).unwrap_or_default())
                    .filter_map(|c| c.subnet.and_then(|s| s.parse().ok()))
                    .collect();
                let subnet = free_subnet(self.opts.subnet_v4, &used).ok_or_else(|| {
                    PodmanError::api(
                        &format!("create network {name}"),
                        format!("no free /24 left in {}", self.opts.subnet_v4),
                    )
                })?;
                docker
                    .create_network(NetworkCreateRequest {
                        name: name.to_string(),
                        driver: Some("bridge".into()),
                        internal: Some(true),
                        ipam: Some(Ipam {
                            config: Some(vec![IpamConfig {
                                subnet: Some(subnet.to_string()),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| PodmanError::api(&format!("create network {name}"), e))?;
            }
        }
        self.mid_create = false;
        tracing::debug!("created network {name} for label {label}");
        Ok(())
    }

    /// Create, attach to and start every host's container, all at once (the engine works on
    /// them in parallel); every name is recorded first, and all calls have returned before this
    /// does. Returns the attached stdio of each container, in the order of `hosts`.
    async fn create_containers(
        &mut self,
        hosts: &[HostPlan],
    ) -> Result<Vec<Transport>, PodmanError> {
        let docker = self.docker().await?.clone();
        let bodies: Vec<(String, ContainerCreateBody)> = hosts
            .iter()
            .map(|h| (h.container.clone(), self.container_body(h)))
            .collect();
        self.containers
            .extend(bodies.iter().map(|(n, _)| n.clone()));
        self.mid_create = true;
        let results = futures::future::join_all(bodies.into_iter().map(|(name, body)| {
            let docker = docker.clone();
            async move {
                docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: Some(name.clone()),
                            ..Default::default()
                        }),
                        body,
                    )
                    .await
                    .map_err(|e| PodmanError::api(&format!("create container {name}"), e))?;
                // Attached before the start: the agent speaks first.
                let transport = attach::stdio_transport(&docker, &name).await?;
                docker
                    .start_container(&path_segment(&name), None)
                    .await
                    .map_err(|e| PodmanError::api(&format!("start container {name}"), e))?;
                tracing::debug!("started container {name}");
                Ok::<_, PodmanError>(transport)
            }
        }))
        .await;
        self.mid_create = false;
        // join_all keeps the order; on an error the attaches made are dropped (their agents
        // read EOF) and teardown removes every container recorded above.
        results.into_iter().collect()
    }

    fn container_body(&self, host: &HostPlan) -> ContainerCreateBody {
        let nets: BTreeSet<&String> = host.nics.values().collect();
        let endpoints: HashMap<String, EndpointSettings> = nets
            .iter()
            .map(|n| (n.to_string(), EndpointSettings::default()))
            .collect();
        // Always an explicit network: without one the container would land on the engine's
        // default network (10.88.0.0/16 on Podman).
        let network_mode = nets
            .iter()
            .next()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "none".to_string());
        ContainerCreateBody {
            image: Some(self.opts.image.clone()),
            hostname: Some(sanitize(&host.host_id)),
            // The agent is the container's command; the controller attaches to its stdio before
            // starting it. stdin_once: when the controller's attach ends, the agent sees EOF,
            // restores its interfaces and exits, and the container stops. The whole argv is the
            // entrypoint (and no cmd), so an image's own ENTRYPOINT or CMD changes nothing.
            entrypoint: Some(self.opts.agent_cmd.clone()),
            cmd: Some(Vec::new()),
            env: self
                .opts
                .agent_secret
                .as_ref()
                .map(|s| vec![format!("{}={s}", crate::agent::AGENT_SECRET_ENV)]),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            labels: Some(self.labels((LABEL_HOST, &host.host_id))),
            host_config: Some(HostConfig {
                network_mode: Some(network_mode),
                cap_add: Some(AGENT_CAPS.iter().map(|c| c.to_string()).collect()),
                security_opt: Some(AGENT_SECURITY_OPTS.iter().map(|c| c.to_string()).collect()),
                privileged: Some(self.opts.privileged),
                runtime: self.opts.oci_runtime.clone(),
                // The protocol runs over stdout: keep it out of the engine's container log.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        }
    }

    /// Requirement interface → binding, from the MACs the engine reports.
    async fn bindings(
        &self,
        host: &HostPlan,
    ) -> Result<BTreeMap<String, IfaceBinding>, PodmanError> {
        let op = format!("inspect container {}", host.container);
        let inspect = running_container(&self.libpod, &host.container).await?;
        let nets = &inspect["NetworkSettings"]["Networks"];
        let mut out = BTreeMap::new();
        for (iface_id, (net, _, ctr_end)) in &host.veths {
            let mac = self
                .veth_macs
                .get(&(host.container.clone(), iface_id.clone()))
                .cloned()
                .ok_or_else(|| PodmanError::api(&op, format!("veth for {iface_id} missing")))?;
            out.insert(
                iface_id.clone(),
                IfaceBinding {
                    ifname: Some(ctr_end.clone()),
                    hwaddr: mac,
                    target: net.clone(),
                },
            );
        }
        for (iface_id, net) in &host.nics {
            let mac = nets[net.as_str()]["MacAddress"]
                .as_str()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    PodmanError::api(&op, format!("no MAC reported on network {net}"))
                })?;
            out.insert(
                iface_id.clone(),
                IfaceBinding {
                    ifname: None,
                    hwaddr: mac.to_ascii_lowercase(),
                    target: net.clone(),
                },
            );
        }
        Ok(out)
    }

    /// Attach the extra NICs of `host` as veth pairs onto their networks' bridges.
    async fn add_veths(&mut self, host: &HostPlan) -> Result<(), PodmanError> {
        if host.veths.is_empty() {
            return Ok(());
        }
        let op = format!("inspect container {}", host.container);
        let pid = running_container(&self.libpod, &host.container).await?["State"]["Pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| PodmanError::api(&op, "container has no pid"))?;
        for (iface_id, (net, host_end, ctr_end)) in &host.veths {
            let path = format!("{LIBPOD_PREFIX}/networks/{net}/json");
            let bridge = self
                .libpod
                .json(Method::GET, &path, None)
                .await?
                .get("network_interface")
                .and_then(|b| b.as_str())
                .map(str::to_string)
                .ok_or_else(|| PodmanError::api(&path, "network has no bridge interface"))?;
            self.veths.push(host_end.clone());
            let mac = veth::attach(&bridge, pid, host_end, ctr_end).await?;
            self.veth_macs
                .insert((host.container.clone(), iface_id.clone()), mac);
        }
        Ok(())
    }

    async fn provision_inner(
        &mut self,
        reqs: &Requirements,
    ) -> Result<Vec<AgentEndpoint>, ProvisionError> {
        let plan = plan(reqs, &self.opts.run_id)?;
        let engine = self.engine_info().await?.clone();
        if engine.kind != EngineKind::Podman {
            if let Some(h) = plan.hosts.iter().find(|h| !h.veths.is_empty()) {
                return Err(ProvisionError::Unsatisfiable(format!(
                    "host {} needs two interfaces on one network label; the veth fallback \
                     supports Podman only",
                    h.host_id
                )));
            }
        }
        for (label, name) in &plan.networks {
            self.create_network(label, name).await?;
        }
        let transports = self.create_containers(&plan.hosts).await?;
        for host in &plan.hosts {
            self.add_veths(host).await?;
        }
        // Inspect each container for its interface bindings, all hosts at once.
        let this = &*self;
        let endpoints = futures::future::join_all(
            plan.hosts
                .iter()
                .zip(transports)
                .map(|(host, transport)| this.endpoint(host, transport)),
        )
        .await;
        endpoints.into_iter().collect()
    }

    /// The agent endpoint of `host`: its interface bindings and its attached stdio.
    async fn endpoint(
        &self,
        host: &HostPlan,
        transport: Transport,
    ) -> Result<AgentEndpoint, ProvisionError> {
        let interfaces = self.bindings(host).await?;
        Ok(AgentEndpoint {
            host_id: host.host_id.clone(),
            target: host.container.clone(),
            hostname: host.container.clone(),
            transport,
            secret: self
                .opts
                .agent_secret
                .as_ref()
                .map(|s| s.as_bytes().to_vec()),
            interfaces,
            console_log: None,
            control_socket: None,
        })
    }

    async fn teardown_inner(&mut self) -> Result<(), TeardownErrors> {
        let mut errors = TeardownErrors::default();
        if self.containers.is_empty() && self.networks.is_empty() && self.veths.is_empty() {
            return Ok(());
        }
        let docker = match self.docker().await {
            Ok(d) => d.clone(),
            Err(e) => {
                errors.push(e);
                return errors.into_result();
            }
        };
        // The extra veths first: netavark deletes a network's bridge when it tears down the
        // last container on it, but only when nothing else is attached, and a veth's host end
        // still is (it would go only with its container's end, afterwards), which left an
        // orphaned `podmanN` bridge in the host's namespace.
        let mut kept_veths = Vec::new();
        for name in std::mem::take(&mut self.veths) {
            if let Err(e) = veth::remove(&name).await {
                errors.push(e);
                kept_veths.push(name);
            }
        }
        self.veths = kept_veths;
        self.veth_macs.clear();
        // Every container at once (the engine stops and removes them in parallel).
        let names = std::mem::take(&mut self.containers);
        let removed =
            futures::future::join_all(names.iter().map(|n| remove_container(&docker, n))).await;
        let mut kept_containers = Vec::new();
        for (name, r) in names.into_iter().zip(removed) {
            if let Err(e) = r {
                errors.push(e);
                kept_containers.push(name);
            }
        }
        let mut kept_networks = Vec::new();
        for name in std::mem::take(&mut self.networks) {
            if let Err(e) = remove_network(&docker, &self.libpod, &name).await {
                errors.push(e);
                kept_networks.push(name);
            }
        }
        // What failed stays recorded, so that another teardown can retry it.
        self.containers = kept_containers;
        self.networks = kept_networks;
        // Anything else labelled with this run: a create interrupted mid-call may complete
        // in the engine after the removal above found nothing, so look again for a while.
        let rounds: &[u64] = if self.mid_create {
            &[0, 500, 1000, 1500]
        } else {
            &[0]
        };
        for wait_ms in rounds {
            tokio::time::sleep(Duration::from_millis(*wait_ms)).await;
            if let Err(e) = sweep_run(&docker, &self.libpod, &self.opts.run_id).await {
                errors.0.extend(e.0);
                break;
            }
        }
        self.mid_create = false;
        errors.into_result()
    }
}

/// Remove every container, then every network, labelled with run `run_id`.
async fn sweep_run(docker: &Docker, libpod: &Libpod, run_id: &str) -> Result<(), TeardownErrors> {
    let mut errors = TeardownErrors::default();
    let (containers, networks) = list_labelled(
        docker,
        libpod,
        &format!("{LABEL_RUN}={run_id}"),
        &mut errors,
    )
    .await;
    for (name, _) in containers {
        tracing::debug!("teardown: removing late container {name} of run {run_id}");
        if let Err(e) = remove_container(docker, &name).await {
            errors.push(e);
        }
    }
    for (name, _) in networks {
        tracing::debug!("teardown: removing late network {name} of run {run_id}");
        if let Err(e) = remove_network(docker, libpod, &name).await {
            errors.push(e);
        }
    }
    errors.into_result()
}

type Labelled = Vec<(String, HashMap<String, String>)>;

/// (name, labels) of each container in an engine's `/containers/json` answer (Docker
/// schema: `Names` with a leading `/`, `Id`, `Labels`).
fn containers_of_listing(list: &serde_json::Value) -> Labelled {
    let mut out = Vec::new();
    for c in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = c
            .get("Names")
            .and_then(|n| n.get(0))
            .and_then(|n| n.as_str())
            .map(|n| n.trim_start_matches('/').to_string())
            .or_else(|| c.get("Id").and_then(|i| i.as_str()).map(str::to_string));
        let labels = c
            .get("Labels")
            .and_then(|l| l.as_object())
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(name) = name {
            out.push((name, labels));
        }
    }
    out
}

/// A container's inspect answer as plain JSON (Podman reports states, e.g. `stopped`, that the
/// Docker schema, and so bollard's typed inspect, lacks); `None`: no such container.
async fn inspect_raw(
    libpod: &Libpod,
    name: &str,
) -> Result<Option<serde_json::Value>, PodmanError> {
    let path = format!("/containers/{}/json", path_segment(name));
    libpod.json_unless_404(Method::GET, &path, None).await
}

/// The inspect answer of an agent container that must be running: one that is gone or has
/// stopped (its agent exited at once, e.g. an image without `lnst-agent`) is an error that says
/// so, with the exit code.
async fn running_container(libpod: &Libpod, name: &str) -> Result<serde_json::Value, PodmanError> {
    let op = format!("inspect container {name}");
    let v = inspect_raw(libpod, name)
        .await?
        .ok_or_else(|| PodmanError::api(&op, "the container is gone"))?;
    if v["State"]["Running"].as_bool() != Some(true) {
        return Err(PodmanError::api(
            &op,
            format!(
                "the agent container is not running (state {}, exit code {}): its agent did \
                 not start — is lnst-agent in image {}?",
                v["State"]["Status"].as_str().unwrap_or("?"),
                v["State"]["ExitCode"],
                v["Config"]["Image"].as_str().unwrap_or("?"),
            ),
        ));
    }
    Ok(v)
}

/// Percent-encode everything but RFC 3986's unreserved characters (for a query value, or a
/// path segment: see [`path_segment`]).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name` (an image, container or network name) as one segment of an engine URL path: every
/// byte but RFC 3986's unreserved characters percent-encoded, so that a `/`, `..`, `?` or `#`
/// in it cannot reach another endpoint (`IMAGE_NAME=x/../../containers/abc` must not become
/// `GET /containers/abc/json`). bollard puts the names it is given into its paths verbatim, so
/// every name handed to it for a path goes through here; the engines decode the segment
/// (`localhost%2Fagent%3Alatest` is image `localhost/agent:latest`).
pub(crate) fn path_segment(name: &str) -> String {
    percent_encode(name)
}

/// Containers (all states) and networks matching the label filter `label` (`key` or
/// `key=value`), as (name, labels); listing errors are collected in `errors`.
async fn list_labelled(
    docker: &Docker,
    libpod: &Libpod,
    label: &str,
    errors: &mut TeardownErrors,
) -> (Labelled, Labelled) {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_string(), vec![label.to_string()])]);
    // Containers are listed as plain JSON: Podman's compat listing reports states such as
    // `stopped` that the Docker schema (and so bollard's typed listing) does not know.
    let mut containers = Vec::new();
    let path = format!(
        "/containers/json?all=true&filters={}",
        percent_encode(&serde_json::json!(filters).to_string())
    );
    match libpod.json(Method::GET, &path, None).await {
        Ok(list) => containers = containers_of_listing(&list),
        Err(e) => errors.push(format!("list containers: {e}")),
    }
    let mut networks = Vec::new();
    match docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
    {
        Ok(list) => {
            for n in list {
                if let Some(name) = n.name {
                    networks.push((name, n.labels.unwrap_or_default()));
                }
            }
        }
        Err(e) => errors.push(format!("list networks: {}", one_line(&e.to_string()))),
    }
    (containers, networks)
}

/// Attempts at removing one container: an agent whose controller left exits by itself, and
/// Podman refuses a forced removal that meets the container half-way through stopping
/// ("could not be stopped: container state improper"); the next attempt succeeds.
const REMOVE_ATTEMPTS: u32 = 5;

async fn remove_container(docker: &Docker, name: &str) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        match docker
            .remove_container(
                &path_segment(name),
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => {
                tracing::debug!("removed container {name}");
                return Ok(());
            }
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) if attempt < REMOVE_ATTEMPTS && status_of(&e).is_some() => {
                tracing::debug!("remove container {name} (attempt {attempt}): {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(format!(
                    "remove container {name}: {}",
                    one_line(&e.to_string())
                ))
            }
        }
    }
}

/// Remove a network, then its bridge when the engine left it behind. netavark deletes a
/// network's bridge when it tears down the last container on it and nothing else is
/// attached; containers removed at the same time each still see the other's port, and both
/// keep the bridge, which stayed in the host's namespace as an orphaned `podmanN`. Only a
/// bridge in this namespace with no port left is deleted.
async fn remove_network(docker: &Docker, libpod: &Libpod, name: &str) -> Result<(), String> {
    let path = format!("{LIBPOD_PREFIX}/networks/{}/json", path_segment(name));
    let bridge = libpod
        .json(Method::GET, &path, None)
        .await
        .ok()
        .and_then(|n| n.get("network_interface")?.as_str().map(str::to_string));
    match docker.remove_network(&path_segment(name)).await {
        Ok(()) => {
            tracing::debug!("removed network {name}");
            if let Some(b) = bridge {
                veth::remove_orphan_bridge(&b).await?;
            }
            Ok(())
        }
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(format!(
            "remove network {name}: {}",
            one_line(&e.to_string())
        )),
    }
}

impl Provisioner for PodmanProvisioner {
    fn provision<'a>(
        &'a mut self,
        reqs: &'a Requirements,
    ) -> BoxFuture<'a, Result<Vec<AgentEndpoint>, ProvisionError>> {
        Box::pin(self.provision_inner(reqs))
    }

    fn teardown(&mut self) -> BoxFuture<'_, Result<(), TeardownErrors>> {
        Box::pin(self.teardown_inner())
    }
}

/// One labelled resource seen by [`cleanup_leftovers`].
struct Leftover {
    run: String,
    owner: Option<OwnerInfo>,
}

fn leftover_from_labels(labels: &HashMap<String, String>) -> Option<Leftover> {
    let run = labels.get(LABEL_RUN)?.clone();
    let owner = labels
        .get(LABEL_PID)
        .and_then(|v| OwnerInfo::parse(v, labels.get(LABEL_CONTAINER).map(String::as_str)));
    Some(Leftover { run, owner })
}

/// Remove every container and network labelled `lnst-runner.run` whose creating run is no
/// longer alive (see [`OwnerInfo`]); live runs and runs whose liveness cannot be judged from
/// here are left alone. Returns the names removed.
pub async fn cleanup_leftovers(uri: &str) -> Result<Vec<String>, TeardownErrors> {
    let mut errors = TeardownErrors::default();
    let parsed = EngineUri::parse(uri).map_err(|e| TeardownErrors(vec![e.to_string()]))?;
    let docker = connect_docker(&parsed)
        .await
        .map_err(|e| TeardownErrors(vec![e.to_string()]))?;
    let libpod = Libpod::new(parsed.clone());
    let (all_containers, all_networks) =
        list_labelled(&docker, &libpod, LABEL_RUN, &mut errors).await;
    let with_owner = |list: Labelled| -> Vec<(String, Leftover)> {
        list.into_iter()
            .filter_map(|(name, labels)| leftover_from_labels(&labels).map(|l| (name, l)))
            .collect()
    };
    let containers = with_owner(all_containers);
    let networks = with_owner(all_networks);

    // Judge each run once, from any of its resources' owner labels.
    let here_boot = owner::current_boot_id().unwrap_or_default();
    let here_ns = owner::current_pid_ns().unwrap_or(0);
    let mut verdicts: BTreeMap<String, Liveness> = BTreeMap::new();
    for (_, l) in containers.iter().chain(networks.iter()) {
        if verdicts.contains_key(&l.run) {
            continue;
        }
        let verdict = match &l.owner {
            None => Liveness::Unknown,
            Some(o) => match &o.container {
                Some(ctr) => match inspect_raw(&libpod, ctr).await {
                    Ok(Some(i)) if i["State"]["Running"].as_bool() == Some(true) => Liveness::Alive,
                    Ok(_) => Liveness::Dead,
                    Err(_) => Liveness::Unknown,
                },
                None => o.local_liveness(&here_boot, here_ns, owner::proc_start_time),
            },
        };
        if verdict != Liveness::Dead {
            tracing::debug!("cleanup: run {} is {:?}, left alone", l.run, verdict);
        }
        verdicts.insert(l.run.clone(), verdict);
    }
    let dead = |run: &str| verdicts.get(run) == Some(&Liveness::Dead);

    let mut removed = Vec::new();
    for (name, l) in &containers {
        if dead(&l.run) {
            match remove_container(&docker, name).await {
                Ok(()) => removed.push(name.clone()),
                Err(e) => errors.push(e),
            }
        }
    }
    for (name, l) in &networks {
        if dead(&l.run) {
            match remove_network(&docker, &libpod, name).await {
                Ok(()) => removed.push(name.clone()),
                Err(e) => errors.push(e),
            }
        }
    }
    if !removed.is_empty() {
        tracing::info!("cleanup removed {}", removed.join(", "));
    }
    errors.into_result().map(|()| removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_takes_podman_only_states() {
        // Podman 4.3's compat listing says "stopped", which the Docker schema lacks.
        let list = serde_json::json!([
            {"Id": "abc", "Names": ["/lnst-1-h1"], "State": "stopped",
             "Labels": {"lnst-runner.run": "1", "n": 3}},
            {"Id": "def", "State": "running"},
            {"Names": [], "Labels": null}
        ]);
        let got = containers_of_listing(&list);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "lnst-1-h1");
        assert_eq!(
            got[0].1.get("lnst-runner.run").map(String::as_str),
            Some("1")
        );
        assert!(
            !got[0].1.contains_key("n"),
            "non-string label values are dropped"
        );
        assert_eq!(got[1].0, "def");
        assert!(containers_of_listing(&serde_json::json!({"message": "x"})).is_empty());
    }

    #[test]
    fn names_in_paths_are_one_segment() {
        assert_eq!(
            path_segment("x/../../containers/abc"),
            "x%2F..%2F..%2Fcontainers%2Fabc"
        );
        assert_eq!(
            path_segment("localhost/lnst-agent:latest"),
            "localhost%2Flnst-agent%3Alatest"
        );
        assert_eq!(path_segment("a?b#c d"), "a%3Fb%23c%20d");
        assert_eq!(path_segment("lnst-1a2b3c4d-h1"), "lnst-1a2b3c4d-h1");
    }

    /// A fake engine on a unix socket: answers the version and info requests of a preflight
    /// like Podman 4.3 and 404 to everything else, and records every request line.
    async fn fake_engine(
        sock: &std::path::Path,
        runtimes: serde_json::Value,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = tokio::net::UnixListener::bind(sock).unwrap_or_else(|e| panic!("bind: {e}"));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                let runtimes = runtimes.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or("").to_string();
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(path.clone());
                        let (status, body) = if path.ends_with("/version") {
                            (
                                "200 OK",
                                serde_json::json!({"ApiVersion": "1.41", "Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}),
                            )
                        } else if path.ends_with("/libpod/info") {
                            (
                                "200 OK",
                                serde_json::json!({"host": {"networkBackend": "netavark"}}),
                            )
                        } else if path == "/info" {
                            ("200 OK", serde_json::json!({"Runtimes": runtimes}))
                        } else {
                            (
                                "404 Not Found",
                                serde_json::json!({"message": "no such thing"}),
                            )
                        };
                        let body = body.to_string();
                        let resp = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        seen
    }

    #[tokio::test]
    async fn preflight_encodes_the_image_and_checks_the_runtime() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sock = dir.path().join("engine.sock");
        let seen = fake_engine(&sock, serde_json::json!({"runc": {}, "crun": {}})).await;
        let uri = format!("unix://{}", sock.display());
        // The image name cannot climb to another endpoint: it reaches the engine as one
        // encoded segment of /images/<name>/json.
        let mut opts = PodmanOptions::new(&uri, "x/../../containers/abc", "r1");
        opts.oci_runtime = Some("runc".into());
        let prov = PodmanProvisioner::connect(opts).unwrap_or_else(|e| panic!("{e}"));
        let e = prov.preflight().await.err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("image 'x/../../containers/abc' not found in the engine — build it with container_files/build-images.sh")
        );
        let paths = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(
            paths
                .iter()
                .any(|p| p.ends_with("/images/x%2F..%2F..%2Fcontainers%2Fabc/json")),
            "{paths:?}"
        );
        assert!(
            !paths.iter().any(|p| p.contains("/containers/abc")),
            "{paths:?}"
        );
        assert!(paths.iter().any(|p| p == "/info"), "{paths:?}");
        // A runtime the engine does not have: named with the ones it has, before the image.
        let mut opts = PodmanOptions::new(&uri, "lnst-agent", "r1");
        opts.oci_runtime = Some("youki".into());
        let prov = PodmanProvisioner::connect(opts).unwrap_or_else(|e| panic!("{e}"));
        let e = prov.preflight().await.err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "LNST_OCI_RUNTIME 'youki': the engine has no such OCI runtime (it has: crun, runc)"
            )
        );
        // Not a name: refused before anything is contacted.
        for bad in ["/usr/bin/runc", "../runc", "runc --debug", ""] {
            let mut opts = PodmanOptions::new(&uri, "lnst-agent", "r1");
            opts.oci_runtime = Some(bad.into());
            assert!(
                matches!(
                    PodmanProvisioner::connect(opts),
                    Err(PodmanError::BadRuntime(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"label":["a=b c"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D"
        );
        assert_eq!(percent_encode("Az09-._~"), "Az09-._~");
    }
    use crate::requirements::HostReq;

    #[test]
    fn uri_forms() {
        assert_eq!(
            EngineUri::parse("unix:///run/podman/podman.sock").unwrap(),
            EngineUri::Unix("/run/podman/podman.sock".into())
        );
        assert_eq!(
            EngineUri::parse("unix:/run/podman/podman.sock").unwrap(),
            EngineUri::Unix("/run/podman/podman.sock".into())
        );
        assert_eq!(
            EngineUri::parse("tcp://127.0.0.1:8080").unwrap(),
            EngineUri::Tcp("127.0.0.1:8080".into())
        );
        assert_eq!(
            EngineUri::parse("unix:///x.sock").unwrap().to_string(),
            "unix:///x.sock"
        );
        for bad in [
            "",
            "/run/podman/podman.sock",
            "unix:",
            "unix://",
            "unix:relative.sock",
            "tcp://host",
            "tcp://:80",
            "tcp://h:99999",
            "ssh://root@h/run/podman/podman.sock",
        ] {
            assert!(EngineUri::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_are_one_line() {
        let e = PodmanError::SocketMissing {
            uri: "unix:///nope.sock".into(),
        };
        assert_eq!(
            e.to_string(),
            "PODMAN_URI unix:///nope.sock: socket does not exist — start the API with \
             'podman system service --time=0 unix:///nope.sock'"
        );
        let e = PodmanError::api("op", "line one\nline two\n");
        assert!(!e.to_string().contains('\n'));
        assert!(e.to_string().ends_with("line one line two"));
    }

    fn reqs(hosts: &[(&str, &[(&str, &str)])]) -> Requirements {
        let mut r = Requirements::default();
        for (h, ifs) in hosts {
            let mut hr = HostReq::default();
            for (id, label) in *ifs {
                hr = hr.with_interface(id, label, BTreeMap::new());
            }
            r.hosts.insert(h.to_string(), hr);
        }
        r
    }

    #[test]
    fn plan_names_networks_and_nics() {
        let r = reqs(&[
            ("host1", &[("eth0", "net1"), ("eth1", "net2")]),
            ("host2", &[("eth0", "net1")]),
        ]);
        let p = plan(&r, "r42").unwrap();
        assert_eq!(
            p.networks,
            BTreeMap::from([
                ("net1".to_string(), "lnst-r42-net1".to_string()),
                ("net2".to_string(), "lnst-r42-net2".to_string())
            ])
        );
        assert_eq!(p.hosts.len(), 2);
        assert_eq!(p.hosts[0].container, "lnst-r42-host1");
        assert_eq!(p.hosts[0].nics.get("eth1").unwrap(), "lnst-r42-net2");
        assert_eq!(p.hosts[1].nics.get("eth0").unwrap(), "lnst-r42-net1");
    }

    #[test]
    fn agent_container_runs_the_agent_whatever_the_image_says() {
        let mut o = PodmanOptions::new("unix:///x.sock", "img", "r42");
        o.agent_secret = Some("s3cr3t".into());
        let p = PodmanProvisioner::connect(o).unwrap();
        let r = reqs(&[("host1", &[("eth0", "net1")])]);
        let body = p.container_body(&plan(&r, "r42").unwrap().hosts[0]);
        // The whole argv is the entrypoint and cmd is empty: an image's ENTRYPOINT or CMD
        // cannot wrap or extend the agent's command.
        assert_eq!(
            body.entrypoint,
            Some(vec!["lnst-agent".to_string(), "--stdio".to_string()])
        );
        assert_eq!(body.cmd, Some(vec![]));
        assert_eq!(body.env, Some(vec!["LNST_AGENT_SECRET=s3cr3t".to_string()]));
        assert_eq!(
            (body.open_stdin, body.stdin_once, body.tty),
            (Some(true), Some(true), Some(false))
        );
        let hc = body.host_config.unwrap_or_default();
        assert_eq!(hc.network_mode.as_deref(), Some("lnst-r42-net1"));
        assert_eq!(hc.log_config.and_then(|l| l.typ).as_deref(), Some("none"));
    }

    #[test]
    fn plan_keeps_names_distinct_and_safe() {
        // A label and a host that sanitize to the same name must not collide.
        let r = reqs(&[("a b", &[("eth0", "a b")]), ("x", &[("eth0", "a/b")])]);
        let p = plan(&r, "r").unwrap();
        let mut all: Vec<&String> = p.networks.values().collect();
        all.extend(p.hosts.iter().map(|h| &h.container));
        let set: BTreeSet<&String> = all.iter().copied().collect();
        assert_eq!(set.len(), all.len(), "{all:?}");
        for n in all {
            assert!(n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        }
    }

    #[test]
    fn second_nic_on_one_label_becomes_a_veth() {
        let r = reqs(&[(
            "host1",
            &[("eth0", "net1"), ("eth1", "net1"), ("eth2", "net2")],
        )]);
        let p = plan(&r, "r").unwrap();
        let h = &p.hosts[0];
        assert_eq!(h.nics.keys().collect::<Vec<_>>(), ["eth0", "eth2"], "{h:?}");
        let (net, host_end, ctr_end) = h.veths.get("eth1").expect("eth1 is a veth");
        assert_eq!(net, "lnst-r-net1");
        assert!(host_end.len() <= 15 && ctr_end.len() <= 15 && host_end != ctr_end);
    }

    #[test]
    fn subnets_avoid_used_ones() {
        let pool: Ipv4Net = "198.19.0.0/16".parse().unwrap();
        assert_eq!(free_subnet(pool, &[]).unwrap().to_string(), "198.19.0.0/24");
        let used: Vec<Ipv4Net> = vec![
            "198.19.0.0/23".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert_eq!(
            free_subnet(pool, &used).unwrap().to_string(),
            "198.19.2.0/24"
        );
        let all: Vec<Ipv4Net> = vec!["198.0.0.0/8".parse().unwrap()];
        assert_eq!(free_subnet(pool, &all), None);
        assert!(default_subnet_v4().to_string() == "198.19.0.0/16");
    }

    #[test]
    fn run_id_is_validated() {
        let ok = PodmanOptions::new("unix:///x.sock", "img", "run-1.a_b");
        assert!(PodmanProvisioner::connect(ok).is_ok());
        for bad in ["", "a b", "x/y", "é"] {
            let o = PodmanOptions::new("unix:///x.sock", "img", bad);
            assert!(matches!(
                PodmanProvisioner::connect(o),
                Err(PodmanError::BadRunId(_))
            ));
        }
    }
}
