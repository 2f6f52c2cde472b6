//! lnst-runner: a Rust re-implementation of LNST's containerized controller.
//!
//! Data flow (see DESIGN.md): env → [`config`] → [`plan`] (recipes + [`params`] + [`schema`])
//! → [`provision`] (netns | pool | podman) → [`mapper`] → [`session`] (agent clients over
//! [`protocol`]) → recipe run ([`recipes`], [`measure`]) → [`results`] → exit code.

pub mod agent;
pub mod cli;
pub mod config;
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
pub mod session;
