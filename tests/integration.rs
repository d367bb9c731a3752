//! The integration tests: one test binary, so that the whole crate (aws-lc, SQLite,
//! zstd...) is linked once for all of them.
//!
//! - [`engine`]: the library in-process, on real stores and real files: the storage
//!   engine's round trips, corruption, crash safety and maintenance, and config
//!   loading.
//! - [`e2e`]: the real `envsnapd` and `envsnapctl` over a real socket, with real
//!   database servers, a real S3-compatible server and the Azure Blob Storage
//!   emulator.
//! - [`support`]: what both share: test repositories, a test daemon, throwaway
//!   servers.
//! - [`architecture`]: the layering of `src/` (no import cycles, dependencies
//!   pointing down, no oversized files), read from the source text.
//! - [`fuzz`]: a fuzz target for every decoder of untrusted bytes, a short pass
//!   here, long runs with `fuzz/run.sh`.
//!
//! Each former test file is one module, so `cargo test --test integration engine::`
//! runs the in-process tests alone and `e2e::restore_e2e::` one file's tests.
//!
//! All tests run as threads of one process, so process-wide state is shared. What
//! the tests share, and how they keep out of each other's way:
//! - Environment variables: `engine::config_errors` sets one `ENVSNAP_*` variable for
//!   a moment, which daemons do not inherit ([`support::daemon`] starts them without
//!   `ENVSNAP_*` variables). The two S3 tests point the `AWS_*` settings at their own
//!   server, one at a time ([`support::s3`]); the Azure tests the `AZURE_*` settings
//!   at their own emulator, one at a time ([`support::azurite`]).
//! - Loopback ports: handed out once per run ([`support::ports`]).
//! - Unix users: created once, with retries ([`support::daemon::ensure_user`]).
//! - The allocator: [`fuzz`]'s guard wraps the system allocator for the whole
//!   binary; it only looks at allocations of threads running a fuzz target.

mod architecture;
mod e2e;
mod engine;
mod fuzz;
mod support;
