//! Who may do what: the `[access]` rules, globally and per environment.
//!
//! Each action has its own list of principals; there is no hierarchy between
//! `backup`, `download` and `restore`. The one implication: whoever may back up,
//! download or restore may also read (list and show), since each of those needs to
//! see what it acts on. Root is not special here: the caller lets root through
//! before asking.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Access rights, as in the config's `[access]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Backup,
    Download,
    /// Restore, import, delete, prune and reload.
    Restore,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Backup => "backup",
            Action::Download => "download",
            Action::Restore => "restore",
        })
    }
}

/// The principals allowed each action. Empty lists allow nobody (but root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub read: Vec<Principal>,
    pub backup: Vec<Principal>,
    pub download: Vec<Principal>,
    /// Restore, import and delete (and the daemon-wide prune, reload, rebuild).
    pub restore: Vec<Principal>,
}

/// A Unix user or group, written `user:alice`, `group:envsnap`, or a bare `alice`
/// (a user) in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    User(String),
    Group(String),
}

impl AccessRules {
    /// Whether `user`, member of `groups`, may perform `action`.
    pub fn allows(&self, action: Action, user: &str, groups: &[String]) -> bool {
        let listed = |list: &[Principal]| list.iter().any(|p| p.matches(user, groups));
        match action {
            Action::Read => {
                listed(&self.read)
                    || listed(&self.backup)
                    || listed(&self.download)
                    || listed(&self.restore)
            }
            Action::Backup => listed(&self.backup),
            Action::Download => listed(&self.download),
            Action::Restore => listed(&self.restore),
        }
    }
}

impl Principal {
    /// Parses `user:NAME`, `group:NAME` or a bare `NAME` (a user).
    pub fn parse(text: &str) -> Result<Principal, String> {
        let (kind, name) = match text.split_once(':') {
            Some(("user", name)) => ("user", name),
            Some(("group", name)) => ("group", name),
            Some((other, _)) => {
                return Err(format!(
                    "`{text}`: unknown principal kind `{other}` (expected `user:NAME`, \
                     `group:NAME` or a bare user name)"
                ));
            }
            None => ("user", text),
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(format!(
                "`{text}` is not a valid principal: the {kind} name must be non-empty, \
                 without spaces or `:`"
            ));
        }
        Ok(match kind {
            "group" => Principal::Group(name.to_owned()),
            _ => Principal::User(name.to_owned()),
        })
    }

    fn matches(&self, user: &str, groups: &[String]) -> bool {
        match self {
            Principal::User(name) => name == user,
            Principal::Group(name) => groups.iter().any(|g| g == name),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(name) => write!(f, "user:{name}"),
            Principal::Group(name) => write!(f, "group:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::User(name.to_owned())
    }

    fn group(name: &str) -> Principal {
        Principal::Group(name.to_owned())
    }

    #[test]
    fn principals_parse() {
        assert_eq!(Principal::parse("user:alice"), Ok(user("alice")));
        assert_eq!(Principal::parse("group:envsnap"), Ok(group("envsnap")));
        assert_eq!(Principal::parse("alice"), Ok(user("alice")));
        assert_eq!(Principal::parse("svc.backup-1"), Ok(user("svc.backup-1")));
        assert_eq!(group("ops").to_string(), "group:ops");
        assert_eq!(user("bob").to_string(), "user:bob");
    }

    #[test]
    fn bad_principals() {
        let err = Principal::parse("team:ops").unwrap_err();
        assert!(err.contains("unknown principal kind `team`"), "{err}");
        for bad in ["", "user:", "group:", "a b", "group:a:b"] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }

    fn rules() -> AccessRules {
        AccessRules {
            read: vec![group("auditors")],
            backup: vec![group("envsnap")],
            download: vec![user("dana")],
            restore: vec![group("admins"), user("rita")],
        }
    }

    #[test]
    fn each_action_has_its_own_list() {
        let rules = rules();
        let groups = |gs: &[&str]| gs.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        // A backup operator may back up but neither download nor restore.
        let ops = groups(&["envsnap"]);
        assert!(rules.allows(Action::Backup, "olga", &ops));
        assert!(!rules.allows(Action::Download, "olga", &ops));
        assert!(!rules.allows(Action::Restore, "olga", &ops));
        // A restorer may not back up: rights are not cumulative upward.
        assert!(rules.allows(Action::Restore, "rita", &[]));
        assert!(!rules.allows(Action::Backup, "rita", &[]));
        assert!(rules.allows(Action::Restore, "anyone", &groups(&["x", "admins"])));
        // Readers only read.
        let auditors = groups(&["auditors"]);
        assert!(rules.allows(Action::Read, "aude", &auditors));
        assert!(!rules.allows(Action::Backup, "aude", &auditors));
        // Strangers get nothing.
        for action in [
            Action::Read,
            Action::Backup,
            Action::Download,
            Action::Restore,
        ] {
            assert!(!rules.allows(action, "mallory", &groups(&["users"])));
        }
    }

    #[test]
    fn any_right_implies_read() {
        let rules = rules();
        assert!(rules.allows(Action::Read, "olga", &["envsnap".to_owned()]));
        assert!(rules.allows(Action::Read, "dana", &[]));
        assert!(rules.allows(Action::Read, "rita", &[]));
    }

    #[test]
    fn empty_rules_allow_nobody() {
        let rules = AccessRules::default();
        assert!(!rules.allows(Action::Read, "alice", &["envsnap".to_owned()]));
    }

    #[test]
    fn a_user_principal_does_not_match_a_group_of_that_name() {
        let rules = AccessRules {
            read: vec![user("envsnap")],
            ..AccessRules::default()
        };
        assert!(!rules.allows(Action::Read, "alice", &["envsnap".to_owned()]));
        assert!(rules.allows(Action::Read, "envsnap", &[]));
    }
}
