//! `User=` and `Group=` to IDs, as systemd 252's `get_user_creds()` and
//! `get_group_creds()` resolve them.
//!
//! `root`/`0` and `nobody`/`65534` (group `nogroup`, the name Debian's systemd is built
//! with) are built in and never looked up, so they work on a host without `/etc/passwd` (a
//! `FROM scratch` container). A number is looked up by ID, anything else by name, through
//! the C library's name service (`getpwnam_r(3)`, `getpwuid_r(3)`, `getgrnam_r(3)`,
//! `getgrgid_r(3)`), so users from LDAP, sssd or systemd-userdb count like those in
//! `/etc/passwd`. A number the database does not know is refused, as systemd refuses it.

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

/// The ID systemd gives `nobody` and `nogroup`.
const NOBODY_ID: u32 = 65534;

/// What a unit's processes need to know about their `User=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRecord {
    /// The user's name (the database's, when `User=` was a number).
    pub(crate) name: String,
    pub(crate) uid: u32,
    /// The user's primary group, used when `Group=` is not set.
    pub(crate) gid: u32,
    pub(crate) home: String,
    pub(crate) shell: String,
}

/// Why a `User=` or `Group=` could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    /// The user database has no such user.
    #[error("Failed to determine user credentials: no such user {0:?}")]
    NoUser(String),
    /// The group database has no such group.
    #[error("Failed to determine group credentials: no such group {0:?}")]
    NoGroup(String),
    /// The name service failed (not: found nothing).
    #[error("Failed to look up {what} {name:?}: {errno}")]
    Failed {
        /// `user` or `group`.
        what: &'static str,
        name: String,
        errno: Errno,
    },
}

/// Resolves `User=` (a name or a UID).
pub(crate) fn user(spec: &str) -> Result<UserRecord, LookupError> {
    let fixed = |name: &str, id: u32, home: &str, shell: &str| UserRecord {
        name: name.to_owned(),
        uid: id,
        gid: id,
        home: home.to_owned(),
        shell: shell.to_owned(),
    };
    match spec {
        "root" | "0" => return Ok(fixed("root", 0, "/root", "/bin/sh")),
        "nobody" | "65534" => return Ok(fixed("nobody", NOBODY_ID, "/", "/usr/sbin/nologin")),
        _ => {}
    }
    let found = match spec.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id)),
        Err(_) => User::from_name(spec),
    };
    match found {
        Ok(Some(u)) => Ok(UserRecord {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir.to_string_lossy().into_owned(),
            shell: u.shell.to_string_lossy().into_owned(),
        }),
        // Some name services report "not found" as ENOENT/ESRCH rather than no entry.
        Ok(None) | Err(Errno::ENOENT | Errno::ESRCH) => Err(LookupError::NoUser(spec.to_owned())),
        Err(errno) => Err(LookupError::Failed {
            what: "user",
            name: spec.to_owned(),
            errno,
        }),
    }
}

/// Resolves `Group=` (a name or a GID) to its GID.
pub(crate) fn group(spec: &str) -> Result<u32, LookupError> {
    match spec {
        "root" | "0" => return Ok(0),
        "nogroup" | "65534" => return Ok(NOBODY_ID),
        _ => {}
    }
    let found = match spec.parse::<u32>() {
        Ok(id) => Group::from_gid(Gid::from_raw(id)),
        Err(_) => Group::from_name(spec),
    };
    match found {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) | Err(Errno::ENOENT | Errno::ESRCH) => Err(LookupError::NoGroup(spec.to_owned())),
        Err(errno) => Err(LookupError::Failed {
            what: "group",
            name: spec.to_owned(),
            errno,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `id ARGS`, the C library's own answer (the same name service).
    fn id(args: &[&str]) -> String {
        let out = std::process::Command::new("id")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "id {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn built_in_users_and_groups() {
        for spec in ["root", "0"] {
            let u = user(spec).unwrap();
            assert_eq!((u.name.as_str(), u.uid, u.gid), ("root", 0, 0));
            assert_eq!(group(spec), Ok(0));
        }
        for spec in ["nobody", "65534"] {
            let u = user(spec).unwrap();
            assert_eq!((u.name.as_str(), u.uid, u.gid), ("nobody", 65534, 65534));
        }
        assert_eq!(group("nogroup"), Ok(65534));
        assert_eq!(group("65534"), Ok(65534));
    }

    #[test]
    fn looked_up_through_the_name_service() {
        // `daemon` (UID 1 on Debian) is in every Debian base system; `id` is the oracle.
        let uid: u32 = id(&["-u", "daemon"]).parse().unwrap();
        let gid: u32 = id(&["-g", "daemon"]).parse().unwrap();
        let u = user("daemon").unwrap();
        assert_eq!((u.uid, u.gid), (uid, gid));
        assert!(u.home.starts_with('/'), "{u:?}");
        let by_id = user(&uid.to_string()).unwrap();
        assert_eq!(by_id, u, "a numeric User= takes the database's name");
        assert_eq!(group(&id(&["-gn", "daemon"])), Ok(gid));
        assert_eq!(group(&gid.to_string()), Ok(gid));
    }

    #[test]
    fn unknown_names_and_ids_are_refused() {
        assert_eq!(
            user("flotilla-no-such-user"),
            Err(LookupError::NoUser("flotilla-no-such-user".into()))
        );
        assert_eq!(user("4242424"), Err(LookupError::NoUser("4242424".into())));
        assert_eq!(
            group("flotilla-no-such-group").unwrap_err().to_string(),
            "Failed to determine group credentials: no such group \"flotilla-no-such-group\""
        );
        assert_eq!(
            group("4242424"),
            Err(LookupError::NoGroup("4242424".into()))
        );
        // A NUL cannot be in a name: not found, not a panic.
        assert!(matches!(user("a\0b"), Err(LookupError::NoUser(_))));
    }
}
