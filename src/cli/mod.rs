//! `envsnapctl`'s side of things: which socket to use, and how results look to people.
//!
//! The binary (`src/bin/envsnapctl.rs`) parses arguments into a protocol
//! [`Request`](crate::control::protocol::Request)
//! and calls [`run`], which sends it with
//! [`Client`](crate::control::client::Client), follows progress with a bar on a
//! terminal ([`progress`]), and prints the result: with `--json` the result's `data`
//! unchanged as one JSON document, else tables ([`tables`]) for lists and `key: value`
//! blocks ([`blocks`]) for single objects, times in local time.
//!
//! Exit status: every failure is one [`CliError`], printed by the binary as one line.
//! Besides transport and daemon errors, a result can itself be a failure: `verify`
//! that found problems, `job watch` of a job that failed or was cancelled. Those print
//! the result first, then fail, so scripts get both the data and the status.

pub mod blocks;
pub mod confirm;
pub mod download;
pub mod drills;
mod error;
pub mod fleet;
pub mod import;
pub mod progress;
mod result;
pub mod socket;
pub mod tables;
pub mod text;
pub mod time;
pub mod views;

pub use error::CliError;
pub use result::{render, run};
pub use socket::{Surroundings, default_socket_candidates, default_state_dir, resolve_socket};
