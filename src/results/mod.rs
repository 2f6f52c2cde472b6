//! Results: the model, the run summary formatters, and the exporter that writes the
//! results layout (README "Results", docs/ARCHITECTURE.md) and decides the exit code.

pub mod export;
pub mod format;
pub mod model;
pub mod nofollow;

pub use model::*;
