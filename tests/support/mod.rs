//! What the integration tests share.
//!
//! - [`repo`]: test repositories on real stores, backups of directories, and an
//!   entry-by-entry comparison of two trees.
//! - [`daemon`]: a real envsnapd in a temp directory, driven by envsnapctl.
//! - [`servers`]: throwaway PostgreSQL, MariaDB and Redis servers.
//! - [`s3`]: a throwaway S3-compatible server, and the `AWS_*` settings that reach it.
//! - [`moto`]: a throwaway moto S3 server, for Object Lock and versions (same settings).
//! - [`azurite`]: a throwaway Azure Blob Storage emulator, the `AZURE_*` settings that
//!   reach it, and requests it signs itself (containers, blobs).
//! - [`http`]: plain HTTP/1.1 requests on loopback, as a holder of a signed link sends them.
//! - [`ports`]: free loopback ports, each handed out once, and the wait for a listener.
//! - [`netproxy`]: a TCP proxy that adds latency and injects HTTP faults (503s, stalls,
//!   dropped connections, a denied method) between a client and a server.

pub mod azurite;
pub mod daemon;
pub mod http;
pub mod moto;
pub mod netproxy;
pub mod ports;
pub mod repo;
pub mod s3;
pub mod servers;
