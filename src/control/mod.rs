//! The control plane: the wire protocol, the daemon's socket server, and the client
//! `envsnapctl` uses.

pub mod client;
mod fdpass;
pub mod limits;
pub mod peer;
pub mod protocol;
pub mod server;
