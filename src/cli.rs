//! Command line of lnst-runner: `run` (the default), `plan`, `recipes [NAME]`,
//! `pool check [DIR]`, `cleanup`.
//!
//! Bad input (environment, RECIPE_PARAMS, TEST_DB, unknown recipe, pool) is a [`CliError`]
//! with exit code 2, detected before anything runs; the binary prints it as one line.

use crate::config::{Config, ConfigError};
use crate::measure::evaluate::BaselineError;
use crate::plan::{plan_json, Plan, PlanError};
use crate::pool::PoolError;
use crate::recipes::{self, RecipeDef, UnknownRecipe};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Exit code for bad input detected before anything ran.
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "lnst-runner",
    version,
    about = "Run LNST network test recipes against netns, pool, Podman or VM agents",
    long_about = "Run LNST network test recipes against netns, pool, Podman or VM agents.\n\n\
        The job comes from the environment: RECIPE, RECIPE_PARAMS, TEST_DB, FORMATTERS, DEBUG, \
        MULTIMATCH, PODMAN_URI, IMAGE_NAME, LNST_POOL_DIR, LNST_RESULTS_DIR, LNST_AGENTS \
        (auto|netns|pool|podman|vm), LNST_AGENT_BIN, LNST_VM_KERNEL, LNST_VM_MODULES, \
        LNST_VM_ACCEL, LNST_VM_CPUS, LNST_VM_MEMORY, LNST_VM_APPEND, LNST_VM_PRELOAD."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tests of RECIPE or TEST_DB (the default).
    Run,
    /// Print the resolved plan as JSON (every parameter with its default); runs nothing.
    Plan,
    /// List the recipes, or the parameters of one recipe.
    Recipes {
        /// Recipe class name, e.g. SimpleNetworkRecipe.
        name: Option<String>,
    },
    /// Pool XML tools.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Remove what a killed run left behind (namespaces, containers, networks, VMs).
    Cleanup,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Validate the pool XMLs in DIR (default: LNST_POOL_DIR) and print what they describe.
    Check {
        /// Pool directory.
        dir: Option<PathBuf>,
    },
}

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    UnknownRecipe(#[from] UnknownRecipe),
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
    #[error("LNST_BASELINE_FILE: {0}")]
    Baseline(#[from] BaselineError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

impl CliError {
    /// 2 for bad input, 1 for failures of the runner itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Runtime(_) | CliError::Output(_) => 1,
            _ => EXIT_BAD_INPUT,
        }
    }
}

/// The error as one line (control characters from user input replaced).
pub fn one_line(e: &CliError) -> String {
    line(&e.to_string())
}

/// `s` as one line: control characters (newlines from user input) replaced by spaces.
pub fn line(s: &str) -> String {
    crate::text::one_line(s)
}

fn out(text: &str) -> Result<(), CliError> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|_| o.flush())
        .map_err(CliError::Output)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Execute a parsed command line; returns the exit code, or the error to print.
pub fn execute(cli: Cli) -> Result<i32, CliError> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let mut config = Config::from_env()?;
            crate::logging::init(config.debug);
            let plan = Plan::from_config(&config)?;
            config.load_baseline()?;
            tracing::debug!(
                tests = plan.tests.len(),
                agents = config.agent_mode.name(),
                "starting run"
            );
            let rt = runtime()?;
            Ok(rt.block_on(crate::runner::run(&config, plan)))
        }
        Command::Plan => {
            let mut config = Config::from_env()?;
            crate::logging::init(config.debug);
            let plan = Plan::from_config(&config)?;
            config.load_baseline()?;
            crate::logging::release_held();
            let json = plan_json(&config, &plan);
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
            out(&format!("{text}\n"))?;
            Ok(0)
        }
        Command::Recipes { name: None } => {
            out(&recipes_list())?;
            Ok(0)
        }
        Command::Recipes { name: Some(name) } => {
            let def = recipes::find(&name)?;
            out(&recipe_params_table(&def))?;
            Ok(0)
        }
        Command::Pool {
            command: PoolCommand::Check { dir },
        } => {
            let dir = match dir {
                Some(d) => d,
                None => Config::from_env()?.pool_dir,
            };
            let report = crate::pool::check_report(&dir)?;
            out(&report)?;
            if !report.ends_with('\n') {
                out("\n")?;
            }
            Ok(0)
        }
        Command::Cleanup => {
            let config = Config::from_env()?;
            crate::logging::init(config.debug);
            crate::logging::release_held();
            let rt = runtime()?;
            Ok(rt.block_on(crate::runner::cleanup(&config)))
        }
    }
}

/// The one-line usage error for a command given without its subcommand (`lnst-runner pool`):
/// which command, and the subcommands it has.
pub fn missing_subcommand_line(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["lnst-runner".to_string()];
    for a in args.iter().skip(1) {
        let Some(sub) = cmd.find_subcommand(a).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    let subs: Vec<&str> = cmd
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| *n != "help")
        .collect();
    let path = path.join(" ");
    format!(
        "lnst-runner: '{path}' needs a subcommand: {} (see '{path} --help')",
        subs.join(", ")
    )
}

/// One recipe per line, name and doc, then the hosts and interfaces it requires.
pub fn recipes_list() -> String {
    let all = recipes::registry();
    let width = all.iter().map(|r| r.name.len()).max().unwrap_or(0);
    all.iter()
        .map(|r| {
            format!(
                "{:<width$}  {}\n{:<width$}  requires {}\n",
                r.name,
                r.doc,
                "",
                describe_layout(&(r.layout)())
            )
        })
        .collect()
}

/// `host1: eth0, eth1 (tnet); host2: eth0 (tnet)`: hosts, their interfaces and networks.
pub fn describe_layout(reqs: &crate::requirements::Requirements) -> String {
    reqs.hosts
        .iter()
        .map(|(h, req)| {
            let ifaces: Vec<String> = req
                .interfaces
                .iter()
                .map(|(id, d)| format!("{id} ({})", d.label))
                .collect();
            format!("{h}: {}", ifaces.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The parameters of one recipe: `name  type  default  doc`, aligned.
pub fn recipe_params_table(def: &RecipeDef) -> String {
    let rows: Vec<[String; 4]> = (def.params)()
        .into_iter()
        .map(|p| {
            let default = match (&p.default, p.mandatory) {
                (Some(_), _) if p.secret => "<redacted>".to_string(),
                (Some(d), _) => d.to_string(),
                (None, true) => "(mandatory)".to_string(),
                (None, false) => "-".to_string(),
            };
            let doc = match p.bounds {
                Some(b) => format!("{} (range {b})", p.doc),
                None => p.doc.to_string(),
            };
            [p.name.to_string(), p.ty.to_string(), default, doc]
        })
        .collect();
    let w = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    // Long types and defaults (perf_tests, offload_combinations) overflow their column
    // instead of widening it.
    let (w0, w1, w2) = (w(0), w(1).min(24), w(2).min(20));
    let mut s = format!(
        "{}: {}\nrequires {}\n",
        def.name,
        def.doc,
        describe_layout(&(def.layout)())
    );
    for [n, t, d, doc] in &rows {
        s.push_str(&format!("  {n:<w0$}  {t:<w1$}  {d:<w2$}  {doc}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        let p = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        assert!(matches!(p(&["lnst-runner"]), Ok(None)));
        assert!(matches!(
            p(&["lnst-runner", "plan"]),
            Ok(Some(Command::Plan))
        ));
        assert!(matches!(
            p(&["lnst-runner", "recipes", "X"]),
            Ok(Some(Command::Recipes { name: Some(_) }))
        ));
        assert!(matches!(
            p(&["lnst-runner", "pool", "check"]),
            Ok(Some(Command::Pool {
                command: PoolCommand::Check { dir: None }
            }))
        ));
        assert!(p(&["lnst-runner", "frobnicate"]).is_err());
    }

    #[test]
    fn recipe_tables() {
        let list = recipes_list();
        assert!(list.lines().any(|l| l.starts_with("SimpleNetworkRecipe  ")));
        assert!(list
            .lines()
            .any(|l| l.trim() == "requires host1: eth0 (tnet), eth1 (tnet); host2: eth0 (tnet)"));
        let def = recipes::find("SimpleNetworkRecipe").unwrap_or_else(|e| panic!("{e}"));
        let t = recipe_params_table(&def);
        // Header, requirements, 38 parameters.
        assert_eq!(t.lines().count(), 40);
        assert!(t.contains("\nrequires host1: eth0 (net1); host2: eth0 (net1)\n"));
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with("perf_duration "))
            .unwrap_or_default();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(..3), Some(&["perf_duration", "int", "60"][..]));
        assert!(t.contains("('ipv4', 'ipv6')"));
    }

    #[test]
    fn errors_are_one_line_with_exit_2() {
        let e = CliError::Config(ConfigError::Invalid {
            var: "DEBUG",
            message: "a\nb".into(),
        });
        assert_eq!(one_line(&e), "DEBUG: a b");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(CliError::Runtime(std::io::Error::other("x")).exit_code(), 1);
    }
}
