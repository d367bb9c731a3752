//! Which socket `envsnapctl` talks to, and where an unconfigured daemon keeps its state.
//!
//! Order (SPEC.md, "Interfaces that scripts rely on"): `--socket`, else
//! `ENVSNAP_SOCKET`, else `daemon.socket` in `/etc/envsnap/envsnap.toml`, else the first
//! of [`default_socket_candidates`] that exists, else the first candidate (the system
//! socket), so that the error names the socket an operator expects.
//!
//! Reading the config file is best effort: a file the user may not read, or that does
//! not parse, is skipped — the daemon reports config errors, not the client.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const SYSTEM_CONFIG: &str = "/etc/envsnap/envsnap.toml";
pub const SYSTEM_SOCKET: &str = "/run/envsnap/envsnapd.sock";
/// The state directory of a daemon run as root without a config.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/envsnap";
/// The socket's file name inside the state directory of a daemon run without a config.
pub const STATE_DIR_SOCKET: &str = "envsnapd.sock";

/// What the default locations depend on: read from this process, or made up in tests.
#[derive(Debug, Clone, Default)]
pub struct Surroundings {
    pub is_root: bool,
    pub xdg_state_home: Option<OsString>,
    pub home: Option<OsString>,
}

impl Surroundings {
    pub fn of_this_process() -> Self {
        Surroundings {
            is_root: nix::unistd::geteuid().is_root(),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// The state directory a daemon uses when the config names none: `/var/lib/envsnap`
/// for root, else `$XDG_STATE_HOME/envsnap`, else `$HOME/.local/state/envsnap`. None
/// when neither variable gives an absolute path.
pub fn default_state_dir(surroundings: &Surroundings) -> Option<PathBuf> {
    if surroundings.is_root {
        return Some(PathBuf::from(SYSTEM_STATE_DIR));
    }
    // The XDG base directory spec says relative values are to be ignored.
    let absolute = |value: &Option<OsString>| {
        value
            .as_ref()
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(state_home) = absolute(&surroundings.xdg_state_home) {
        return Some(state_home.join("envsnap"));
    }
    absolute(&surroundings.home).map(|home| home.join(".local/state/envsnap"))
}

/// The sockets a daemon listens on when nobody configured one, most likely first: the
/// system daemon's, then the quick-start daemon's in its default state directory.
pub fn default_socket_candidates() -> Vec<PathBuf> {
    socket_candidates(&Surroundings::of_this_process())
}

fn socket_candidates(surroundings: &Surroundings) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(SYSTEM_SOCKET)];
    if let Some(state_dir) = default_state_dir(surroundings) {
        candidates.push(state_dir.join(STATE_DIR_SOCKET));
    }
    candidates
}

/// The socket to use, given the `--socket` option (if any), from this process's
/// environment and files.
pub fn resolve_socket(option: Option<PathBuf>) -> PathBuf {
    let config_text = || std::fs::read_to_string(SYSTEM_CONFIG).ok();
    choose_socket(
        option,
        std::env::var_os("ENVSNAP_SOCKET"),
        config_text,
        &default_socket_candidates(),
        |path| path.exists(),
    )
}

fn choose_socket(
    option: Option<PathBuf>,
    environment: Option<OsString>,
    config_text: impl FnOnce() -> Option<String>,
    candidates: &[PathBuf],
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(path) = option {
        return path;
    }
    if let Some(path) = environment.filter(|value| !value.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(path) = config_text().as_deref().and_then(socket_in_config) {
        return path;
    }
    candidates
        .iter()
        .find(|path| exists(path))
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

/// `daemon.socket` from a config file's text, if it parses and has one.
fn socket_in_config(text: &str) -> Option<PathBuf> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let socket = table.get("daemon")?.get("socket")?.as_str()?;
    (!socket.is_empty()).then(|| PathBuf::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(xdg: Option<&str>, home: Option<&str>) -> Surroundings {
        Surroundings {
            is_root: false,
            xdg_state_home: xdg.map(Into::into),
            home: home.map(Into::into),
        }
    }

    #[test]
    fn state_dir_follows_root_then_xdg_then_home() {
        let root = Surroundings {
            is_root: true,
            ..user(Some("/x"), Some("/root"))
        };
        assert_eq!(
            default_state_dir(&root),
            Some(PathBuf::from("/var/lib/envsnap"))
        );
        assert_eq!(
            default_state_dir(&user(Some("/home/ann/.state"), Some("/home/ann"))),
            Some(PathBuf::from("/home/ann/.state/envsnap"))
        );
        assert_eq!(
            default_state_dir(&user(Some("relative"), Some("/home/ann"))),
            Some(PathBuf::from("/home/ann/.local/state/envsnap"))
        );
        assert_eq!(
            default_state_dir(&user(Some(""), Some("/home/ann"))),
            Some(PathBuf::from("/home/ann/.local/state/envsnap"))
        );
        assert_eq!(default_state_dir(&user(None, None)), None);
    }

    #[test]
    fn candidates_are_system_then_quick_start() {
        assert_eq!(
            socket_candidates(&user(None, Some("/home/ann"))),
            vec![
                PathBuf::from("/run/envsnap/envsnapd.sock"),
                PathBuf::from("/home/ann/.local/state/envsnap/envsnapd.sock")
            ]
        );
        assert_eq!(
            socket_candidates(&user(None, None)),
            vec![PathBuf::from(SYSTEM_SOCKET)]
        );
    }

    #[test]
    fn resolution_order() {
        let candidates = [PathBuf::from("/run/a.sock"), PathBuf::from("/state/b.sock")];
        let config = || Some("[daemon]\nsocket = \"/etc-socket\"\n".to_owned());
        let none = || None;
        let nothing_exists = |_: &Path| false;
        let choose =
            |option: Option<&str>, env: Option<&str>, config: &dyn Fn() -> Option<String>| {
                choose_socket(
                    option.map(PathBuf::from),
                    env.map(Into::into),
                    config,
                    &candidates,
                    nothing_exists,
                )
            };
        assert_eq!(
            choose(Some("/opt"), Some("/env"), &config),
            PathBuf::from("/opt")
        );
        assert_eq!(choose(None, Some("/env"), &config), PathBuf::from("/env"));
        assert_eq!(
            choose(None, Some(""), &config),
            PathBuf::from("/etc-socket")
        );
        assert_eq!(choose(None, None, &config), PathBuf::from("/etc-socket"));
        // No config: the first candidate that exists, else the first one.
        assert_eq!(choose(None, None, &none), PathBuf::from("/run/a.sock"));
        let only_b = |path: &Path| path == Path::new("/state/b.sock");
        assert_eq!(
            choose_socket(None, None, none, &candidates, only_b),
            PathBuf::from("/state/b.sock")
        );
    }

    #[test]
    fn config_is_read_tolerantly() {
        assert_eq!(
            socket_in_config("[daemon]\nsocket = \"/s\"\n"),
            Some(PathBuf::from("/s"))
        );
        assert_eq!(socket_in_config("[daemon]\nhost = \"h\"\n"), None);
        assert_eq!(socket_in_config("[daemon]\nsocket = 3\n"), None);
        assert_eq!(socket_in_config("[daemon\n"), None);
        assert_eq!(socket_in_config("daemon = 1\n"), None);
    }
}
