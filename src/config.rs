//! Config: environment variables → typed configuration. The environment is the only source
//! of truth, and this module its only reader in lnst-runner (docs/ARCHITECTURE.md).
//!
//! Differences from upstream, on purpose: `DEBUG`/`MULTIMATCH` accept 1/true/yes/on and
//! 0/false/no/off/empty (case-insensitive) and reject anything else (upstream treats any
//! non-empty string, even "0", as true); `FORMATTERS` is implemented (upstream documents it but
//! ignores it). Empty `RECIPE`, `TEST_DB`, `PODMAN_URI`, `IMAGE_NAME`, `LNST_OCI_RUNTIME`,
//! `LNST_POOL_DIR`, `LNST_RESULTS_DIR` and `LNST_BASELINE_FILE` count as unset. Without `HOME`,
//! `/root` is used.
//!
//! This module is the only reader of the environment's job variables. Files named by them are
//! read by their own modules; `LNST_BASELINE_FILE` is loaded by [`Config::load_baseline`]
//! before anything runs, and the run uses the loaded copy.

use crate::measure::evaluate::{BaselineError, BaselineFile};
use crate::provision::vm::accel::AccelChoice;
use serde::Deserialize;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Every environment variable we read. Others are ignored (even when not UTF-8).
pub const VARS: &[&str] = &[
    "RECIPE",
    "RECIPE_PARAMS",
    "TEST_DB",
    "FORMATTERS",
    "DEBUG",
    "MULTIMATCH",
    "PODMAN_URI",
    "IMAGE_NAME",
    "LNST_OCI_RUNTIME",
    "LNST_POOL_DIR",
    "LNST_RESULTS_DIR",
    "LNST_BASELINE_FILE",
    "LNST_AGENTS",
    "LNST_AGENT_BIN",
    "HOME",
    // The VM source.
    "LNST_VM_KERNEL",
    "LNST_VM_MODULES",
    "LNST_VM_ACCEL",
    "LNST_VM_CPUS",
    "LNST_VM_MEMORY",
    "LNST_VM_APPEND",
    "LNST_VM_PRELOAD",
];

/// Which run summaries are printed to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatterKind {
    /// `HumanReadableRunSummaryFormatter` / `human`.
    Human,
    /// `JsonRunSummaryFormatter` / `json`.
    Json,
}

impl FormatterKind {
    /// Short name used in the plan JSON.
    pub fn name(self) -> &'static str {
        match self {
            FormatterKind::Human => "human",
            FormatterKind::Json => "json",
        }
    }

    /// Upstream class name.
    pub fn class_name(self) -> &'static str {
        match self {
            FormatterKind::Human => "HumanReadableRunSummaryFormatter",
            FormatterKind::Json => "JsonRunSummaryFormatter",
        }
    }
}

/// Where the test agents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// Agents started in network namespaces on this host.
    Netns,
    /// Machines described by `*.xml` in the pool dir.
    Pool,
    /// Agents started as Podman containers through `PODMAN_URI`.
    Podman,
    /// Agents in QEMU virtual machines (only when `LNST_AGENTS=vm`).
    Vm,
}

impl AgentMode {
    /// Every mode, as `LNST_AGENTS` names it.
    pub const ALL: &'static [AgentMode] = &[
        AgentMode::Netns,
        AgentMode::Pool,
        AgentMode::Podman,
        AgentMode::Vm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AgentMode::Netns => "netns",
            AgentMode::Pool => "pool",
            AgentMode::Podman => "podman",
            AgentMode::Vm => "vm",
        }
    }
}

/// The VM source's settings (`LNST_VM_*`), resolved and checked: the kernel and the modules
/// tree exist and are readable.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    /// The kernel's release, from its bzImage header (None: not a bzImage).
    pub release: Option<String>,
    /// A modules tree holding `modules.dep`.
    pub modules: PathBuf,
    pub accel: AccelChoice,
    /// vCPUs per VM (`LNST_VM_CPUS`); None: chosen per run, [`crate::provision::vm::vcpus`].
    pub cpus: Option<u32>,
    pub memory_mib: u32,
    /// Extra words for the guest kernel's command line (`LNST_VM_APPEND`).
    pub append: Vec<String>,
    /// Load the modules of the devices a recipe creates from the agent's start, beside its
    /// handshake (`LNST_VM_PRELOAD`, off unless 1/true/yes/on: with one vCPU per VM it measured
    /// no faster; docs/VM.md).
    pub preload: bool,
}

/// Defaults of the VM source (the vCPUs are chosen per run: [`crate::provision::vm::vcpus`]).
pub const VM_DEFAULT_MEMORY_MIB: u32 = 512;

/// Podman API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodmanUri {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl PodmanUri {
    /// Accepts `unix:///path`, `unix:/path` and `tcp://host:port` (IPv6 hosts in brackets).
    pub fn parse(s: &str) -> Result<PodmanUri, String> {
        let expected = "expected unix:///path, unix:/path or tcp://host:port";
        if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') || rest.len() < 2 {
                return Err(format!(
                    "{} is not a valid unix socket URI ({expected})",
                    quote(s)
                ));
            }
            return Ok(PodmanUri::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            if !rest.starts_with('/') || rest.starts_with("//") || rest.len() < 2 {
                return Err(format!(
                    "{} is not a valid unix socket URI ({expected})",
                    quote(s)
                ));
            }
            return Ok(PodmanUri::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (host, port) = if let Some(r) = rest.strip_prefix('[') {
                match r.split_once("]:") {
                    Some((h, p)) if h.contains(':') => (h, p),
                    _ => return Err(format!("{} is not host:port ({expected})", quote(s))),
                }
            } else {
                match rest.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') => (h, p),
                    _ => return Err(format!("{} is not host:port ({expected})", quote(s))),
                }
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
            if !host_ok {
                return Err(format!("{} has an invalid host ({expected})", quote(s)));
            }
            let port: u16 = match port.parse() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{} has an invalid port ({expected})", quote(s))),
            };
            return Ok(PodmanUri::Tcp {
                host: host.to_string(),
                port,
            });
        }
        Err(format!("{} is not supported ({expected})", quote(s)))
    }

    /// Canonical form: `unix:///path` or `tcp://host:port`.
    pub fn to_uri(&self) -> String {
        match self {
            PodmanUri::Unix(p) => format!("unix://{}", p.display()),
            PodmanUri::Tcp { host, port } if host.contains(':') => format!("tcp://[{host}]:{port}"),
            PodmanUri::Tcp { host, port } => format!("tcp://{host}:{port}"),
        }
    }
}

impl fmt::Display for PodmanUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// The runner's configuration, read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub recipe: Option<String>,
    pub recipe_params: String,
    pub test_db: Option<String>,
    pub formatters: Vec<FormatterKind>,
    pub debug: bool,
    pub multimatch: bool,
    pub podman_uri: Option<PodmanUri>,
    pub image_name: String,
    pub oci_runtime: Option<String>,
    pub pool_dir: PathBuf,
    pub results_dir: PathBuf,
    pub agent_mode: AgentMode,
    /// `LNST_BASELINE_FILE`: baseline figures flows are compared against.
    pub baseline_file: Option<PathBuf>,
    /// The baseline file, once [`Config::load_baseline`] has read and checked it.
    pub baseline: Option<BaselineFile>,
    /// `LNST_AGENT_BIN`: the lnst-agent binary for namespace agents (checked when they start).
    pub agent_bin: Option<PathBuf>,
    /// The directories of `PATH`, where lnst-agent is looked for last.
    pub path: Vec<PathBuf>,
    /// Set when `agent_mode` is [`AgentMode::Vm`].
    pub vm: Option<VmConfig>,
}

/// A bad environment variable. The message is one line and names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: value is not valid UTF-8")]
    NotUnicode { var: &'static str },
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("environment: {0}")]
    Env(String),
}

#[derive(Debug, Deserialize)]
struct RawEnv {
    recipe: Option<String>,
    recipe_params: Option<String>,
    test_db: Option<String>,
    formatters: Option<String>,
    debug: Option<String>,
    multimatch: Option<String>,
    podman_uri: Option<String>,
    image_name: Option<String>,
    lnst_oci_runtime: Option<String>,
    lnst_pool_dir: Option<String>,
    lnst_results_dir: Option<String>,
    lnst_baseline_file: Option<String>,
    lnst_agents: Option<String>,
    lnst_agent_bin: Option<String>,
    home: Option<String>,
    lnst_vm_kernel: Option<String>,
    lnst_vm_modules: Option<String>,
    lnst_vm_accel: Option<String>,
    lnst_vm_cpus: Option<String>,
    lnst_vm_memory: Option<String>,
    lnst_vm_append: Option<String>,
    lnst_vm_preload: Option<String>,
}

fn quote(s: &str) -> String {
    crate::text::quote(s, 80)
}

/// Parse a truth value: 1/true/yes/on, 0/false/no/off/empty (case-insensitive).
pub fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Invalid {
            var,
            message: format!(
                "{} is not a truth value (use 1/true/yes/on or 0/false/no/off)",
                quote(v)
            ),
        }),
    }
}

/// Parse `FORMATTERS`: a `;`-separated list of formatter names; empty means none.
pub fn parse_formatters(v: &str) -> Result<Vec<FormatterKind>, ConfigError> {
    let mut out = Vec::new();
    for name in v.split(';').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = match name.to_ascii_lowercase().as_str() {
            "human" | "humanreadablerunsummaryformatter" => FormatterKind::Human,
            "json" | "jsonrunsummaryformatter" => FormatterKind::Json,
            _ => {
                return Err(ConfigError::Invalid {
                    var: "FORMATTERS",
                    message: format!(
                        "unknown formatter {} (known: HumanReadableRunSummaryFormatter or human, JsonRunSummaryFormatter or json)",
                        quote(name)
                    ),
                })
            }
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// `*.xml` (any case, not a directory) directly in `dir`? A missing dir counts as none; an
/// unreadable one is an error so that a permission problem does not silently switch to netns
/// agents.
///
/// `from_home` says the directory is the default one under HOME: a problem with it is then
/// HOME's, and the message says so.
fn has_pool_xml(dir: &Path, from_home: Option<&str>) -> Result<bool, ConfigError> {
    let bad = |what: String| {
        match from_home {
        None => ConfigError::Invalid {
            var: "LNST_POOL_DIR",
            message: what,
        },
        Some(home) => ConfigError::Invalid {
            var: "HOME",
            message: format!(
                "{} is not a usable home directory: the default pool directory {what} (set HOME, or LNST_POOL_DIR)",
                quote(home)
            ),
        },
    }
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(bad(format!("{} is not a directory", dir.display())))
        }
        Err(e) => return Err(bad(format!("cannot read {}: {e}", dir.display()))),
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let is_xml = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
        // Anything but a directory counts, even a FIFO or a broken symlink: loading the pool
        // then names it, instead of silently switching to netns agents.
        if is_xml && !entry.path().is_dir() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Check `IMAGE_NAME` as an OCI image reference: `[registry[:port]/]name[:tag][@digest]` made
/// of letters, digits and `. _ - / : @` (plus brackets around an IPv6 registry), at most 1024
/// characters. It is passed to the Podman API as data, never to a shell, but a value like
/// `x; rm -rf /` is a mistake worth reporting before anything runs.
pub fn check_image_name(v: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::Invalid {
        var: "IMAGE_NAME",
        message: format!("{} is not an image reference ({why})", quote(v)),
    };
    if v.len() > 1024 {
        return Err(bad("longer than 1024 characters"));
    }
    if let Some(c) = v.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '[' | ']'))
    }) {
        return Err(bad(&format!(
            "{} is not allowed",
            crate::params::Value::Str(c.to_string())
        )));
    }
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[') {
        return Err(bad("must start with a letter or digit"));
    }
    // Path components of the name (the tag and digest cannot hold '/'): none empty, none made
    // of dots only (`x/../../containers/abc` would otherwise climb out of the engine's
    // /images/<name> endpoint).
    let path = v.split('@').next().unwrap_or(v);
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg.chars().all(|c| c == '.'))
    {
        return Err(bad("a '/'-separated component is empty, '.' or '..'"));
    }
    if v.ends_with([':', '@']) {
        return Err(bad("ends with ':' or '@'"));
    }
    Ok(())
}

/// Whether `v` is an OCI runtime name: 1–64 letters, digits, `.`, `_` or `-`, starting with a
/// letter or digit (`runc`, `crun`, `krun`, `youki`). Paths are refused: Podman would run any
/// binary given by path as the runtime of the agent containers, as root.
pub fn is_runtime_name(v: &str) -> bool {
    v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Check `LNST_OCI_RUNTIME` (see [`is_runtime_name`]); whether the engine has that runtime is
/// checked by the Podman preflight.
pub fn check_oci_runtime(v: &str) -> Result<(), ConfigError> {
    if is_runtime_name(v) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        var: "LNST_OCI_RUNTIME",
        message: format!(
            "{} is not an OCI runtime name (a name the engine has configured, such as runc, crun or krun: letters, digits, '.', '_', '-'; not a path)",
            quote(v)
        ),
    })
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// `LNST_AGENTS`: which source provides the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentsChoice {
    /// PODMAN_URI → podman, pool XMLs → pool, else netns.
    Auto,
    Only(AgentMode),
}

pub fn parse_agents(v: &str) -> Result<AgentsChoice, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(AgentsChoice::Auto),
        "netns" => Ok(AgentsChoice::Only(AgentMode::Netns)),
        "pool" => Ok(AgentsChoice::Only(AgentMode::Pool)),
        "podman" => Ok(AgentsChoice::Only(AgentMode::Podman)),
        "vm" => Ok(AgentsChoice::Only(AgentMode::Vm)),
        _ => Err(ConfigError::Invalid {
            var: "LNST_AGENTS",
            message: format!(
                "{} is not an agent source (use auto, netns, pool, podman or vm)",
                quote(v)
            ),
        }),
    }
}

/// `LNST_VM_CPUS`: 1 to 64.
pub fn parse_vm_cpus(v: &str) -> Result<u32, ConfigError> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var: "LNST_VM_CPUS",
            message: format!("{} is not a vCPU count from 1 to 64", quote(v)),
        }),
    }
}

/// `LNST_VM_MEMORY`: MiB, with an optional M/MiB/G/GiB suffix (`512`, `512M`, `1G`); 128 MiB
/// to 64 GiB.
pub fn parse_vm_memory(v: &str) -> Result<u32, ConfigError> {
    let bad = || ConfigError::Invalid {
        var: "LNST_VM_MEMORY",
        message: format!(
            "{} is not a memory size from 128M to 64G (e.g. 512M, 1G)",
            quote(v)
        ),
    };
    let t = v.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mib = match unit.trim() {
        "" | "m" | "mib" | "mb" => n,
        "g" | "gib" | "gb" => n.checked_mul(1024).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !(128..=65536).contains(&mib) {
        return Err(bad());
    }
    u32::try_from(mib).map_err(|_| bad())
}

/// Resolve the kernel and modules tree of the VM source: `kernel` (LNST_VM_KERNEL) or the
/// newest `<boot_dir>/vmlinuz-*` whose modules exist; `modules` (LNST_VM_MODULES) or
/// `<modules_root>/<release>`. Missing or unreadable: an error naming the variable and path.
pub fn resolve_vm_kernel(
    kernel: Option<&str>,
    modules: Option<&str>,
    boot_dir: &Path,
    modules_root: &Path,
) -> Result<(PathBuf, Option<String>, PathBuf), ConfigError> {
    use crate::provision::vm::kernel as k;
    let (kernel, release) = match kernel {
        Some(p) => {
            let path = PathBuf::from(p);
            let release = k::read_kernel(&path).map_err(|e| ConfigError::Invalid {
                var: "LNST_VM_KERNEL",
                message: e.to_string(),
            })?;
            (path, release)
        }
        None => {
            let (path, release) = k::default_kernel(boot_dir, modules_root).ok_or_else(|| {
                ConfigError::Invalid {
                    var: "LNST_VM_KERNEL",
                    message: format!(
                        "not set, and {} has no vmlinuz-<release> with a modules tree in {}/<release> (set LNST_VM_KERNEL and LNST_VM_MODULES; .ci/vm-kernel.sh fetches Debian's)",
                        boot_dir.display(),
                        modules_root.display()
                    ),
                }
            })?;
            k::read_kernel(&path).map_err(|e| ConfigError::Invalid {
                var: "LNST_VM_KERNEL",
                message: e.to_string(),
            })?;
            (path, Some(release))
        }
    };
    let modules = match (modules, &release) {
        (Some(m), _) => PathBuf::from(m),
        (None, Some(r)) => modules_root.join(r),
        (None, None) => {
            return Err(ConfigError::Invalid {
                var: "LNST_VM_MODULES",
                message: format!(
                    "not set, and the release of {} cannot be read from it; set LNST_VM_MODULES",
                    kernel.display()
                ),
            })
        }
    };
    let dep = modules.join("modules.dep");
    if let Err(e) = std::fs::File::open(&dep) {
        return Err(ConfigError::Invalid {
            var: "LNST_VM_MODULES",
            message: format!("modules tree {}: {}: {e}", modules.display(), dep.display()),
        });
    }
    Ok((kernel, release, modules))
}

impl Config {
    /// Read the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars_os())
    }

    /// Read configuration from the given variables (testable; ignores variables we do not
    /// use, and rejects non-UTF-8 values only in ours).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let mut ours: Vec<(String, String)> = Vec::new();
        let mut path = Vec::new();
        for (k, v) in vars {
            // PATH is a list of directories, not text: read as it is.
            if k == "PATH" {
                path = std::env::split_paths(&v).collect();
                continue;
            }
            let Some(var) = k.to_str().and_then(|k| VARS.iter().find(|n| **n == k)) else {
                continue;
            };
            match v.into_string() {
                Ok(v) => ours.push((var.to_string(), v)),
                Err(_) => return Err(ConfigError::NotUnicode { var }),
            }
        }
        let raw: RawEnv = envy::from_iter(ours).map_err(|e| ConfigError::Env(e.to_string()))?;

        let debug = parse_bool("DEBUG", raw.debug.as_deref().unwrap_or(""))?;
        let multimatch = parse_bool("MULTIMATCH", raw.multimatch.as_deref().unwrap_or(""))?;
        let formatters = match &raw.formatters {
            None => vec![FormatterKind::Human],
            Some(v) => parse_formatters(v)?,
        };
        let podman_uri = match non_empty(raw.podman_uri) {
            None => None,
            Some(u) => {
                Some(
                    PodmanUri::parse(u.trim()).map_err(|message| ConfigError::Invalid {
                        var: "PODMAN_URI",
                        message,
                    })?,
                )
            }
        };
        let image_name = non_empty(raw.image_name)
            .map(|i| i.trim().to_string())
            .unwrap_or_else(|| "lnst-agent".to_string());
        check_image_name(&image_name)?;
        let oci_runtime = non_empty(raw.lnst_oci_runtime).map(|r| r.trim().to_string());
        if let Some(rt) = &oci_runtime {
            check_oci_runtime(rt)?;
        }
        let home = non_empty(raw.home).unwrap_or_else(|| "/root".to_string());
        let lnst = Path::new(&home).join(".lnst");
        let pool_from_home = raw
            .lnst_pool_dir
            .as_deref()
            .is_none_or(|p| p.trim().is_empty());
        let pool_dir = non_empty(raw.lnst_pool_dir)
            .map(PathBuf::from)
            .unwrap_or_else(|| lnst.join("pool"));
        let results_dir = non_empty(raw.lnst_results_dir)
            .map(PathBuf::from)
            .unwrap_or_else(|| lnst.join("results"));
        let agents = parse_agents(raw.lnst_agents.as_deref().unwrap_or(""))?;
        let accel = match raw.lnst_vm_accel.as_deref() {
            None => AccelChoice::Auto,
            Some(v) => AccelChoice::parse(v).ok_or_else(|| ConfigError::Invalid {
                var: "LNST_VM_ACCEL",
                message: format!("{} is not an accelerator (use auto, kvm or tcg)", quote(v)),
            })?,
        };
        let cpus = non_empty(raw.lnst_vm_cpus)
            .map(|v| parse_vm_cpus(&v))
            .transpose()?;
        let preload = match non_empty(raw.lnst_vm_preload) {
            None => false,
            Some(v) => parse_bool("LNST_VM_PRELOAD", &v)?,
        };
        let memory_mib = match non_empty(raw.lnst_vm_memory) {
            None => VM_DEFAULT_MEMORY_MIB,
            Some(v) => parse_vm_memory(&v)?,
        };
        let agent_mode = match agents {
            AgentsChoice::Only(m) => m,
            AgentsChoice::Auto if podman_uri.is_some() => AgentMode::Podman,
            AgentsChoice::Auto
                if has_pool_xml(&pool_dir, pool_from_home.then_some(home.as_str()))? =>
            {
                AgentMode::Pool
            }
            AgentsChoice::Auto => AgentMode::Netns,
        };
        let vm = if agent_mode == AgentMode::Vm {
            let (kernel, release, modules) = resolve_vm_kernel(
                non_empty(raw.lnst_vm_kernel).as_deref(),
                non_empty(raw.lnst_vm_modules).as_deref(),
                Path::new("/boot"),
                Path::new("/lib/modules"),
            )?;
            Some(VmConfig {
                kernel,
                release,
                modules,
                accel,
                cpus,
                memory_mib,
                append: raw
                    .lnst_vm_append
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                preload,
            })
        } else {
            None
        };
        Ok(Config {
            recipe: non_empty(raw.recipe).map(|r| r.trim().to_string()),
            recipe_params: raw.recipe_params.unwrap_or_default(),
            test_db: non_empty(raw.test_db).map(|t| t.trim().to_string()),
            formatters,
            debug,
            multimatch,
            podman_uri,
            image_name,
            oci_runtime,
            pool_dir,
            results_dir,
            agent_mode,
            baseline_file: non_empty(raw.lnst_baseline_file).map(PathBuf::from),
            baseline: None,
            agent_bin: non_empty(raw.lnst_agent_bin).map(PathBuf::from),
            path,
            vm,
        })
    }

    /// Read and check `LNST_BASELINE_FILE`, when set, into [`Config::baseline`]: a missing,
    /// special, oversized or malformed file is bad input found before any agent starts (the
    /// run then uses this copy and reads the file no more).
    pub fn load_baseline(&mut self) -> Result<(), BaselineError> {
        self.baseline = match &self.baseline_file {
            None => None,
            Some(path) => Some(BaselineFile::load(path)?),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    /// Config from `vars`, with HOME pointing nowhere unless given (hermetic).
    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all: Vec<(OsString, OsString)> = vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        if !vars.iter().any(|(k, _)| *k == "HOME") {
            all.push(("HOME".into(), "/nonexistent/lnst-runner-test-home".into()));
        }
        Config::from_vars(all)
    }

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn unusable_home_is_blamed_on_home_not_on_the_pool_dir() {
        match cfg(&[("HOME", "/dev/null")]) {
            Err(ConfigError::Invalid { var, message }) => {
                assert_eq!(var, "HOME");
                assert!(message.contains("/dev/null/.lnst/pool"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // An explicit LNST_POOL_DIR that is not a directory is its own culprit.
        match cfg(&[("HOME", "/dev/null"), ("LNST_POOL_DIR", "/dev/null")]) {
            Err(ConfigError::Invalid { var, .. }) => assert_eq!(var, "LNST_POOL_DIR"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let h = home();
        let hs = h.path().to_string_lossy().to_string();
        let c = cfg(&[("HOME", &hs)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.recipe, None);
        assert_eq!(c.recipe_params, "");
        assert_eq!(c.test_db, None);
        assert_eq!(c.formatters, vec![FormatterKind::Human]);
        assert!(!c.debug && !c.multimatch);
        assert_eq!(c.podman_uri, None);
        assert_eq!(c.image_name, "lnst-agent");
        assert_eq!(c.oci_runtime, None);
        assert_eq!(c.pool_dir, h.path().join(".lnst/pool"));
        assert_eq!(c.results_dir, h.path().join(".lnst/results"));
        assert_eq!(c.agent_mode, AgentMode::Netns);
        assert_eq!(c.agent_bin, None);
    }

    #[test]
    fn agent_source_choice() {
        let h = home();
        let pool = h.path().join("pool");
        std::fs::create_dir(&pool).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(pool.join("m.xml"), "<x/>").unwrap_or_else(|e| panic!("{e}"));
        let ps = pool.to_string_lossy().to_string();
        let mode = |vars: &[(&str, &str)]| cfg(vars).map(|c| c.agent_mode);
        assert_eq!(mode(&[("LNST_POOL_DIR", &ps)]), Ok(AgentMode::Pool));
        assert_eq!(
            mode(&[("LNST_POOL_DIR", &ps), ("LNST_AGENTS", "auto")]),
            Ok(AgentMode::Pool)
        );
        assert_eq!(
            mode(&[("LNST_POOL_DIR", &ps), ("LNST_AGENTS", "netns")]),
            Ok(AgentMode::Netns)
        );
        assert_eq!(mode(&[("LNST_AGENTS", " Pool ")]), Ok(AgentMode::Pool));
        assert_eq!(
            mode(&[("PODMAN_URI", "unix:/x"), ("LNST_AGENTS", "netns")]),
            Ok(AgentMode::Netns)
        );
        assert_eq!(mode(&[("LNST_AGENTS", "podman")]), Ok(AgentMode::Podman));
        assert_eq!(mode(&[("LNST_AGENTS", "")]), Ok(AgentMode::Netns));
        let e = cfg(&[("LNST_AGENTS", "docker")])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("LNST_AGENTS: 'docker' is not an agent source (use auto, netns, pool, podman or vm)")
        );
    }

    #[test]
    fn agent_binary_and_path() {
        let c = Config::from_vars([
            (
                OsString::from("LNST_AGENT_BIN"),
                OsString::from("/opt/lnst-agent"),
            ),
            (
                OsString::from("PATH"),
                OsString::from_vec(b"/a:/b\xff".to_vec()),
            ),
            (OsString::from("HOME"), OsString::from("/nonexistent/h")),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_bin, Some(PathBuf::from("/opt/lnst-agent")));
        assert_eq!(c.path.len(), 2);
        assert_eq!(c.path[0], PathBuf::from("/a"));
    }

    #[test]
    fn truthiness() {
        for t in ["1", "true", "TRUE", "Yes", "on", " on "] {
            assert_eq!(parse_bool("DEBUG", t), Ok(true), "{t}");
        }
        for f in ["0", "false", "No", "OFF", ""] {
            assert_eq!(parse_bool("DEBUG", f), Ok(false), "{f}");
        }
        let e = cfg(&[("DEBUG", "maybe")]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("DEBUG: 'maybe' is not a truth value (use 1/true/yes/on or 0/false/no/off)")
        );
        let e = cfg(&[("MULTIMATCH", "2")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("MULTIMATCH: "), "{e}");
        let c = cfg(&[("DEBUG", "yes"), ("MULTIMATCH", "on")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.debug && c.multimatch);
    }

    #[test]
    fn formatters() {
        assert_eq!(parse_formatters(""), Ok(vec![]));
        assert_eq!(
            parse_formatters("JsonRunSummaryFormatter;human;json"),
            Ok(vec![FormatterKind::Json, FormatterKind::Human])
        );
        assert_eq!(
            parse_formatters(" HumanReadableRunSummaryFormatter ; "),
            Ok(vec![FormatterKind::Human])
        );
        let e = cfg(&[("FORMATTERS", "xml")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("FORMATTERS: unknown formatter 'xml'"), "{e}");
        let c = cfg(&[("FORMATTERS", "")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.formatters.is_empty());
    }

    #[test]
    fn podman_uri() {
        let p = |s: &str| PodmanUri::parse(s);
        assert_eq!(
            p("unix:///run/podman/podman.sock"),
            Ok(PodmanUri::Unix("/run/podman/podman.sock".into()))
        );
        assert_eq!(p("unix:/run/x"), Ok(PodmanUri::Unix("/run/x".into())));
        assert_eq!(
            p("unix:/run/x").map(|u| u.to_uri()),
            Ok("unix:///run/x".into())
        );
        assert_eq!(
            p("tcp://localhost:8080"),
            Ok(PodmanUri::Tcp {
                host: "localhost".into(),
                port: 8080
            })
        );
        assert_eq!(
            p("tcp://198.18.0.1:8080/").map(|u| u.to_uri()),
            Ok("tcp://198.18.0.1:8080".into())
        );
        assert_eq!(
            p("tcp://[fd00::1]:8080").map(|u| u.to_uri()),
            Ok("tcp://[fd00::1]:8080".into())
        );
        for bad in [
            "http://x",
            "unix://relative/x",
            "unix:relative",
            "unix://",
            "tcp://host",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://:80",
            "tcp://a b:80",
            "tcp://fd00::1:80",
            "/run/podman.sock",
        ] {
            assert!(p(bad).is_err(), "{bad} accepted");
        }
        let c = cfg(&[("PODMAN_URI", "unix:/run/x")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Podman);
        let e = cfg(&[("PODMAN_URI", "http://x")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("PODMAN_URI: 'http://x' is not supported"),
            "{e}"
        );
        let c = cfg(&[("PODMAN_URI", "")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.podman_uri, None);
    }

    #[test]
    fn image_names() {
        for ok in [
            "lnst-agent",
            "localhost/lnst-agent:latest",
            "registry.example:5000/team/agent:v1.2_rc-3",
            "quay.io/x/y@sha256:0123abcd",
            "[fd00::1]:5000/agent",
        ] {
            assert_eq!(check_image_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x; rm -rf /",
            "$(touch /tmp/x)",
            "`id`",
            "a b",
            "-x",
            "/abs",
            "agent\n",
            "ägent",
        ] {
            let e = check_image_name(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("IMAGE_NAME: "), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        assert!(check_image_name(&"a".repeat(2000)).is_err());
        let e = cfg(&[("IMAGE_NAME", "a;b")]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("IMAGE_NAME: 'a;b' is not an image reference (';' is not allowed)")
        );
        let c = cfg(&[("IMAGE_NAME", " my-agent ")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.image_name, "my-agent");
    }

    #[test]
    fn image_names_cannot_climb_out_of_their_endpoint() {
        for bad in [
            "x/../../containers/abc",
            "x/./y",
            "a//b",
            "a/",
            "a/..",
            "x/.../y",
            "agent:",
            "agent@",
        ] {
            let e = check_image_name(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("IMAGE_NAME: "), "{bad:?}: {e}");
        }
        let e = cfg(&[("IMAGE_NAME", "x/../../containers/abc")])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("IMAGE_NAME: 'x/../../containers/abc' is not an image reference (a '/'-separated component is empty, '.' or '..')")
        );
        assert_eq!(
            check_image_name("registry.example:5000/a.b/c..d:v1"),
            Ok(())
        );
    }

    #[test]
    fn oci_runtime_is_a_plain_name() {
        for ok in [
            "runc",
            "crun",
            "krun",
            "youki",
            "kata-runtime",
            "runsc.v2",
            " crun ",
        ] {
            let c = cfg(&[("LNST_OCI_RUNTIME", ok)]).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(c.oci_runtime.as_deref(), Some(ok.trim()));
        }
        for bad in [
            "/usr/bin/runc",
            "./runc",
            "../../tmp/evil",
            "runc --debug",
            "runc;id",
            "-runc",
            ".runc",
            "rünc",
        ] {
            let e = cfg(&[("LNST_OCI_RUNTIME", bad)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with("LNST_OCI_RUNTIME: ") && e.contains("is not an OCI runtime name"),
                "{bad:?}: {e}"
            );
        }
        assert!(!is_runtime_name(&"r".repeat(65)));
        let c = cfg(&[("LNST_OCI_RUNTIME", "")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.oci_runtime, None);
    }

    #[test]
    fn baseline_file_is_a_config_field_loaded_on_demand() {
        let h = home();
        let good = h.path().join("baseline.json");
        std::fs::write(&good, r#"{"default_threshold_pct": 5, "flows": []}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let gs = good.to_string_lossy().to_string();
        let mut c = cfg(&[("LNST_BASELINE_FILE", &gs)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.baseline_file.as_deref(), Some(good.as_path()));
        assert_eq!(c.baseline, None);
        c.load_baseline().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.baseline.as_ref().map(|b| b.default_threshold_pct),
            Some(5.0)
        );
        let mut c = cfg(&[("LNST_BASELINE_FILE", "")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.baseline_file, None);
        assert!(c.load_baseline().is_ok() && c.baseline.is_none());
        let mut c = cfg(&[("LNST_BASELINE_FILE", "/dev/zero")]).unwrap_or_else(|e| panic!("{e}"));
        let e = c.load_baseline().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("/dev/zero: not a regular file (a character device)")
        );
    }

    #[test]
    fn pool_detection() {
        let h = home();
        let pool = h.path().join("pool");
        std::fs::create_dir(&pool).unwrap_or_else(|e| panic!("{e}"));
        let ps = pool.to_string_lossy().to_string();
        std::fs::write(pool.join("notes.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(pool.join("dir.xml")).unwrap_or_else(|e| panic!("{e}"));
        let c = cfg(&[("LNST_POOL_DIR", &ps)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Netns);
        assert_eq!(c.pool_dir, pool);
        std::fs::write(pool.join("machine1.XML"), "<x/>").unwrap_or_else(|e| panic!("{e}"));
        let c = cfg(&[("LNST_POOL_DIR", &ps)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Pool);
        // A FIFO or a dangling symlink named *.xml selects the pool, whose loading names it.
        let p2 = h.path().join("pool2");
        std::fs::create_dir(&p2).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/nonexistent/x", p2.join("gone.xml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let p2s = p2.to_string_lossy().to_string();
        let c = cfg(&[("LNST_POOL_DIR", &p2s)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Pool);
        let c = cfg(&[("LNST_POOL_DIR", &ps), ("PODMAN_URI", "tcp://h:1")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Podman);
        let file = pool.join("notes.txt").to_string_lossy().to_string();
        let e = cfg(&[("LNST_POOL_DIR", &file)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("LNST_POOL_DIR: "), "{e}");
    }

    #[test]
    fn strings_and_unicode() {
        let c = cfg(&[
            ("RECIPE", " SimpleNetworkRecipe "),
            ("RECIPE_PARAMS", "a=1"),
            ("TEST_DB", ""),
            ("IMAGE_NAME", "my-agent"),
            ("LNST_OCI_RUNTIME", "crun"),
            ("LNST_RESULTS_DIR", "/tmp/r"),
            ("recipe", "ignored"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.recipe.as_deref(), Some("SimpleNetworkRecipe"));
        assert_eq!(c.recipe_params, "a=1");
        assert_eq!(c.test_db, None);
        assert_eq!(c.image_name, "my-agent");
        assert_eq!(c.oci_runtime.as_deref(), Some("crun"));
        assert_eq!(c.results_dir, PathBuf::from("/tmp/r"));
        let bad = OsString::from_vec(vec![0x66, 0xff, 0x66]);
        let e = Config::from_vars([(OsString::from("RECIPE_PARAMS"), bad.clone())])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("RECIPE_PARAMS: value is not valid UTF-8")
        );
        assert!(Config::from_vars([(OsString::from("OTHER"), bad.clone())]).is_ok());
        assert!(Config::from_vars([(OsString::from_vec(vec![0xff]), bad)]).is_ok());
    }

    /// A fake kernel (bzImage header naming `release`) and its modules tree under `dir`.
    fn fake_kernel(dir: &Path, release: &str) -> (String, String) {
        let mut img = vec![0u8; 0x2000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x1000u16.to_le_bytes());
        let v = format!("{release} (x) #1\0");
        img[0x1200..0x1200 + v.len()].copy_from_slice(v.as_bytes());
        let k = dir.join(format!("vmlinuz-{release}"));
        std::fs::write(&k, img).unwrap_or_else(|e| panic!("{e}"));
        let m = dir.join("lib/modules").join(release);
        std::fs::create_dir_all(&m).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(m.join("modules.dep"), "").unwrap_or_else(|e| panic!("{e}"));
        (
            k.to_string_lossy().into_owned(),
            m.to_string_lossy().into_owned(),
        )
    }

    fn err_of(vars: &[(&str, &str)]) -> String {
        cfg(vars).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn agents_selection() {
        let c = cfg(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.agent_mode, c.vm.is_none()), (AgentMode::Netns, true));
        let c = cfg(&[("LNST_AGENTS", "netns"), ("PODMAN_URI", "unix:/x")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Netns);
        let c = cfg(&[("LNST_AGENTS", " Auto "), ("PODMAN_URI", "unix:/x")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Podman);
        let c = cfg(&[("LNST_AGENTS", "pool")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Pool);
        // Podman without PODMAN_URI: the source uses the rootful default socket.
        let c = cfg(&[("LNST_AGENTS", "podman")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Podman);
        assert_eq!(
            err_of(&[("LNST_AGENTS", "qemu")]),
            "LNST_AGENTS: 'qemu' is not an agent source (use auto, netns, pool, podman or vm)"
        );
    }

    #[test]
    fn vm_settings_are_resolved_and_checked() {
        let d = home();
        let (k, m) = fake_kernel(d.path(), "6.1.0-56-amd64");
        let c = cfg(&[
            ("LNST_AGENTS", "vm"),
            ("LNST_VM_KERNEL", &k),
            ("LNST_VM_MODULES", &m),
            ("LNST_VM_ACCEL", "tcg"),
            ("LNST_VM_CPUS", "4"),
            ("LNST_VM_MEMORY", "1G"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent_mode, AgentMode::Vm);
        let vm = c.vm.unwrap_or_else(|| panic!("no vm config"));
        assert_eq!(vm.release.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(
            (vm.accel, vm.cpus, vm.memory_mib),
            (AccelChoice::Tcg, Some(4), 1024)
        );
        assert_eq!(vm.modules, PathBuf::from(&m));
        assert!(!vm.preload, "the module preload is off by default");
        let on = cfg(&[
            ("LNST_AGENTS", "vm"),
            ("LNST_VM_KERNEL", &k),
            ("LNST_VM_MODULES", &m),
            ("LNST_VM_PRELOAD", "yes"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(on.vm.unwrap_or_else(|| panic!("no vm config")).preload);

        // Defaults, and the modules tree found from the kernel's release.
        let (kernel, release, modules) = resolve_vm_kernel(
            Some(&k),
            None,
            Path::new("/nonexistent"),
            &d.path().join("lib/modules"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (kernel, release.as_deref()),
            (PathBuf::from(&k), Some("6.1.0-56-amd64"))
        );
        assert_eq!(modules, PathBuf::from(&m));
        let c = cfg(&[
            ("LNST_AGENTS", "vm"),
            ("LNST_VM_KERNEL", &k),
            ("LNST_VM_MODULES", &m),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let vm = c.vm.unwrap_or_else(|| panic!("no vm config"));
        assert_eq!(
            (vm.accel, vm.cpus, vm.memory_mib),
            (AccelChoice::Auto, None, 512)
        );
        // The newest kernel of a boot directory whose modules exist.
        let boot = d.path().to_path_buf();
        let (kernel, release, _) =
            resolve_vm_kernel(None, None, &boot, &d.path().join("lib/modules"))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (kernel, release.as_deref()),
            (PathBuf::from(&k), Some("6.1.0-56-amd64"))
        );
    }

    #[test]
    fn bad_vm_settings_are_one_line_naming_the_variable() {
        let d = home();
        let (k, m) = fake_kernel(d.path(), "6.1.0-1-amd64");
        let vm = |extra: &[(&str, &str)]| {
            let mut v = vec![
                ("LNST_AGENTS", "vm"),
                ("LNST_VM_KERNEL", k.as_str()),
                ("LNST_VM_MODULES", m.as_str()),
            ];
            for (k2, v2) in extra {
                v.retain(|(k1, _)| k1 != k2);
                v.push((k2, v2));
            }
            err_of(&v)
        };
        let e = vm(&[("LNST_VM_KERNEL", "/nonexistent/bzImage")]);
        assert!(
            e.starts_with("LNST_VM_KERNEL: kernel /nonexistent/bzImage: "),
            "{e}"
        );
        let e = vm(&[("LNST_VM_MODULES", "/nonexistent/mods")]);
        assert!(
            e.starts_with("LNST_VM_MODULES: modules tree /nonexistent/mods: "),
            "{e}"
        );
        let tiny = d.path().join("tiny");
        std::fs::write(&tiny, "x").unwrap_or_else(|e| panic!("{e}"));
        let e = vm(&[("LNST_VM_KERNEL", &tiny.to_string_lossy())]);
        assert!(e.contains("is not a kernel image"), "{e}");
        for (var, val) in [
            ("LNST_VM_CPUS", "0"),
            ("LNST_VM_CPUS", "two"),
            ("LNST_VM_CPUS", "65"),
            ("LNST_VM_MEMORY", "64M"),
            ("LNST_VM_MEMORY", "lots"),
            ("LNST_VM_MEMORY", "1T"),
            ("LNST_VM_ACCEL", "hvf"),
            ("LNST_VM_PRELOAD", "maybe"),
        ] {
            // Checked whatever the agent source.
            let e = err_of(&[(var, val)]);
            assert!(e.starts_with(&format!("{var}: ")), "{var}={val}: {e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(parse_vm_memory("512"), Ok(512));
        assert_eq!(parse_vm_memory("2GiB"), Ok(2048));
        assert_eq!(parse_vm_memory(" 256m "), Ok(256));
        // Without LNST_AGENTS=vm, the kernel is not looked at.
        assert!(cfg(&[("LNST_VM_KERNEL", "/nonexistent")]).is_ok());
    }
}
