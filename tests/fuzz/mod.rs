//! Fuzz targets for every decoder of untrusted bytes, on stable Rust.
//!
//! Each target is a `fn(&[u8])` around one decoder (`repo.rs`, `protocol.rs`,
//! `import.rs`, `sources.rs`); the driver (`driver.rs`) runs it over its kept corpus
//! in `fuzz/corpus/<target>/` and then over mutations of it (`mutate.rs`), and fails
//! on a panic, a hang, or an allocation out of proportion to the input
//! (`alloc.rs`), keeping the input in `fuzz/crashes/<target>/`.
//!
//! `cargo test` runs a short, reproducible pass (2000 inputs or 3 seconds per
//! target). `fuzz/run.sh SECONDS` runs each target for that long with a fresh seed;
//! `fuzz/README.md` says what the targets found.
//!
//! | target | decoder |
//! | --- | --- |
//! | `protocol_request` | `control::server::parse_request` |
//! | `protocol_socket` | `control::server::run` framing over a real socket, file handshake |
//! | `protocol_client` | `control::client::Client::call` reading a daemon's reply lines |
//! | `manifest` | `repo::manifest::Manifest::decode` |
//! | `tree` | `repo::tree::read_entry` over a tree stream |
//! | `pack` | `repo::pack::parse_pack` (trailer), then `decode_blob` per entry |
//! | `blob` | `repo::pack::decode_blob` (zstd, length cap, hash check) |
//! | `index` | `repo::index::IndexObject::decode` |
//! | `sealed` | `repo::crypto::Keys::open` with a key |
//! | `repo_config` | the repository config as `Repository::open` parses and validates it |
//! | `drill_report` | `drill::report::Report` as `catalog rebuild` reads it |
//! | `tar_import` | `import::from_file` (gzip, zstd) and `import::unpack_tar` |
//! | `dump_check` | `import::checked_dump` for each database kind |
//! | `pg_dump_header` | the custom-format dump header a drill reads |
//! | `pg_roles` | `sources::pg_roles::statements_for_missing` |
//! | `mariadb_definers` | `sources::scratch::WithoutDefiners` |

mod alloc;
mod driver;
mod import;
mod mutate;
mod protocol;
mod repo;
mod seeds;
mod sources;

/// One test per target, named as the target (`fuzz::tar_import`).
macro_rules! targets {
    ($($name:ident => $target:path,)*) => {
        $(
            #[test]
            fn $name() {
                driver::fuzz(&$target);
            }
        )*

        /// Every target's name matches its test (the replay hint and run.sh rely on it).
        #[test]
        fn targets_are_named_as_their_tests() {
            $( assert_eq!($target.name, stringify!($name)); )*
        }
    };
}

targets! {
    protocol_request => protocol::REQUEST,
    protocol_socket => protocol::SOCKET,
    protocol_client => protocol::CLIENT,
    manifest => repo::MANIFEST,
    tree => repo::TREE,
    pack => repo::PACK,
    blob => repo::BLOB,
    index => repo::INDEX,
    sealed => repo::SEALED,
    repo_config => repo::REPO_CONFIG,
    drill_report => repo::DRILL_REPORT,
    tar_import => import::TAR,
    dump_check => import::DUMP,
    pg_dump_header => sources::PG_DUMP_HEADER,
    pg_roles => sources::PG_ROLES,
    mariadb_definers => sources::MARIADB_DEFINERS,
}
