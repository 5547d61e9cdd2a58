//! tapio-load: the agent. Loads the tapio-probes bundle on the running kernel through
//! tapio-runtime, and owns what a node's operator touches: the CLI (`main.rs`), the
//! configuration and its reload ([`config`], [`config_watch`]), the source filters ([`filter`]),
//! the run loop ([`run`]), the
//! outputs and metrics ([`output`]) and logging ([`logging`]).
//!
//! May import every tapio crate below it; `anyhow` lives here (in `main.rs`) and in the harness
//! only. It may not import the harness; no crate may import it. The rules live in one table,
//! `tests/crate_rules.rs`; docs/architecture.md draws the picture.

pub mod config;
pub mod config_watch;
pub mod filter;
pub mod logging;
pub mod output;
pub mod run;

// What the agent takes from the crates below, under the names its modules use.
use tapio_bundle as bundle;
use tapio_decode::{attribution, dns, events};
use tapio_features::{cgroup2, privileges};
use tapio_runtime::{errors, monitors, pin, plan, transport};
