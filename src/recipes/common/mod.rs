//! What every recipe family uses (upstream `lnst/RecipeCommon`): the ping test and its
//! evaluators ([`ping`], `Ping/Recipe.py`), the perf test with its iterations, alignment,
//! report and evaluators ([`perf`], `Perf/Recipe.py`), and the test-wide configuration steps
//! ([`config`]) with the address allocation from network parameters ([`addrs`]).

pub mod addrs;
pub mod config;
pub mod packet_assert;
pub mod perf;
pub mod ping;
pub mod pktrate;
