//! Who is on the other end of a connection: from the socket's peer credentials
//! (SO_PEERCRED), never from anything the client says.

/// Who is asking: the peer's uid, its user name, and the groups it belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub user: String,
    pub groups: Vec<String>,
}

impl Caller {
    /// Root, or the user the daemon runs as (who owns its socket, state and store
    /// anyway: a daemon started by hand serves its own user), may do everything.
    pub fn is_unrestricted(&self) -> bool {
        self.uid == 0 || self.uid == nix::unistd::geteuid().as_raw()
    }
}

/// The caller's user and group names, from its uid and primary gid.
pub fn identify(uid: u32, gid: u32) -> Caller {
    let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
    let name = user
        .as_ref()
        .map_or_else(|| format!("uid:{uid}"), |u| u.name.clone());
    let mut groups = Vec::new();
    if let Some(user) = &user
        && let Ok(cname) = std::ffi::CString::new(user.name.clone())
        && let Ok(gids) = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid))
    {
        for gid in gids {
            if let Ok(Some(group)) = nix::unistd::Group::from_gid(gid) {
                groups.push(group.name);
            }
        }
    }
    Caller {
        uid,
        user: name,
        groups,
    }
}
