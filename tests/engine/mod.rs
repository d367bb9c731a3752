//! The library in-process, without a daemon: the storage engine on in-memory,
//! local-directory and S3 stores, and config loading.

mod concurrent_parts;
mod config_errors;
mod corruption;
mod crash_safety;
mod history;
mod hostile_tree;
mod maintenance;
mod paged_stream;
mod property_roundtrip;
mod s3_lock;
mod s3_store;
mod tree_roundtrip;
