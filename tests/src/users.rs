//! Other local users for access tests: a second real account (and a group it belongs to
//! only as a supplementary group), created on first use when missing.
//!
//! Creating them needs root; tests/run and CI run as root. Anywhere else the test fails
//! with a message saying so, never skips.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

/// The second local user the access tests run clients as.
pub const USER: &str = "borgstore-t2";
/// A group `USER` belongs to only as a supplementary group.
pub const GROUP: &str = "borgstore-t2g";

/// A local account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// [`GROUP`]: a supplementary group of the account.
    pub extra_gid: u32,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install the Debian package passwd)"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The second user, created (with its supplementary group) when missing.
pub fn second_user() -> Account {
    static ACCOUNT: OnceLock<Account> = OnceLock::new();
    *ACCOUNT.get_or_init(|| account(USER, GROUP))
}

/// A third local user (for two users besides the daemon's own), in [`GROUP`] too.
pub const USER3: &str = "borgstore-t3";

/// The third user, created (with the supplementary group) when missing.
pub fn third_user() -> Account {
    static ACCOUNT: OnceLock<Account> = OnceLock::new();
    *ACCOUNT.get_or_init(|| account(USER3, GROUP))
}

/// The account `user`, created when missing, with `group` as a supplementary group.
fn account(user: &str, group: &str) -> Account {
    assert!(
        nix::unistd::getuid().is_root(),
        "access tests create the local user {user} and run clients as it: run them as root (tests/run and CI do)"
    );
    if nix::unistd::Group::from_name(group).ok().flatten().is_none() {
        // Another test binary may be creating it right now: tolerate "exists".
        let _ = Command::new("groupadd").args(["--system", group]).output();
    }
    if nix::unistd::User::from_name(user).ok().flatten().is_none() {
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--groups", group, user])
            .output();
    }
    run(Command::new("usermod").args(["--append", "--groups", group, user]));
    let found = nix::unistd::User::from_name(user).ok().flatten().unwrap_or_else(|| panic!("user {user} missing"));
    let g = nix::unistd::Group::from_name(group).ok().flatten().unwrap_or_else(|| panic!("group {group} missing"));
    Account { uid: found.uid.as_raw(), gid: found.gid.as_raw(), extra_gid: g.gid.as_raw() }
}

/// Make `cmd` run as `account` with its real group list (primary and supplementary).
pub fn as_user(cmd: &mut Command, account: Account) -> &mut Command {
    switch(cmd, account, vec![account.gid, account.extra_gid])
}

/// Make `cmd` run as `account` with no supplementary groups at all.
pub fn as_user_without_groups(cmd: &mut Command, account: Account) -> &mut Command {
    switch(cmd, account, Vec::new())
}

fn switch(cmd: &mut Command, account: Account, groups: Vec<u32>) -> &mut Command {
    let groups: Vec<nix::unistd::Gid> = groups.into_iter().map(nix::unistd::Gid::from_raw).collect();
    // Groups, then gid, then uid (std's own uid/gid run before pre_exec and would leave
    // no right to set groups). SAFETY: only async-signal-safe system calls between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(account.gid))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(account.uid))?;
            Ok(())
        })
    }
}
