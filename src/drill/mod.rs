//! Restore drills: proof that a backup restores into a working environment.
//!
//! A drill restores every part of a backup into a private sandbox, exactly as a
//! restore would, and checks each with its real engine: a tree entry by entry
//! against the backup, content hashed (`repo::check`); a database loaded into a
//! scratch copy of its engine and measured (`sources::scratch`). The operator's
//! checks (SQL that must return true) and commands (a smoke test of the app against
//! the sandbox) run next. The environment itself is never read or written: only the
//! store is.
//!
//! - [`sandbox`]: the drill's private directory under the state directory, the room
//!   it needs, and the clean-up of what a crashed drill left.
//! - [`report`]: the evidence a drill keeps (figures per part, checks, commands,
//!   timings, warnings, outcome) and the warnings that compare it with the previous
//!   drill (a table emptied or shrunk: a valid backup of a broken database).
//!
//! The job that runs a drill is `jobs/drill.rs`; the report is kept in the catalog
//! and in the store next to the backup's manifest (`repo::evidence`).

pub mod report;
pub mod sandbox;
