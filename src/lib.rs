//! lnst-runner: a Rust re-implementation of LNST's containerized controller.
//!
//! Data flow (docs/ARCHITECTURE.md): env → [`config`] → [`plan`] ([`recipes`] + [`params`] +
//! [`schema`]: typed recipe parameters) → [`source`] (netns | pool | podman agents, via
//! [`provision`] and [`mapper`]) → [`session`] (agent clients over [`protocol`]) → recipe run
//! ([`recipes`]: ENRT base, [`measure`]) → [`results`] → exit code.

/// `eprintln!` that never panics: a closed stderr (a pipe into `head`, a gone terminal) must
/// not kill a run between its provisioning and its teardown.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!`/`println!` that never panic (see [`say!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout();
        let _ = write!(o, $($arg)*);
        let _ = o.flush();
    }};
}

pub mod agent;
pub mod cli;
pub mod config;
pub mod fsread;
pub mod logging;
pub mod mapper;
pub mod measure;
pub mod params;
pub mod plan;
pub mod pool;
pub mod protocol;
pub mod provision;
pub mod recipes;
pub mod requirements;
pub mod results;
pub mod runner;
pub mod schema;
pub mod scripted;
pub mod session;
pub mod source;
pub mod text;
