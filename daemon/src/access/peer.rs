//! Who is at the other end of a Unix socket: uid, gid and groups from the kernel.
//!
//! `SO_PEERCRED` gives the uid, gid and pid the peer had when it connected;
//! `SO_PEERGROUPS` (Linux 4.13+) gives its supplementary groups at that same moment.
//! Both come from the socket itself, so a peer cannot lie about them and nothing races
//! with the peer exiting or changing its credentials later (as reading `/proc/PID` would).
//! Where the kernel lacks `SO_PEERGROUPS`, only the primary gid counts.

use std::os::fd::{AsFd, AsRawFd};

/// The credentials of a local process, as its socket connection carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPeer {
    /// Effective uid at connect time.
    pub uid: u32,
    /// Primary gid at connect time.
    pub gid: u32,
    /// Supplementary groups at connect time (empty where the kernel cannot tell).
    pub groups: Vec<u32>,
    /// Process id at connect time, for logs only (the process may have exited since);
    /// None when not read from a socket.
    pub pid: Option<i32>,
}

impl LocalPeer {
    /// The peer of a connected Unix socket.
    pub fn of(socket: &impl AsFd) -> std::io::Result<LocalPeer> {
        let cred = nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials)?;
        Ok(LocalPeer { uid: cred.uid(), gid: cred.gid(), groups: peer_groups(socket), pid: Some(cred.pid()) })
    }

    /// Is this peer the given uid, or in one of the given groups?
    pub fn matches(&self, uids: &[u32], gids: &[u32]) -> bool {
        uids.contains(&self.uid) || std::iter::once(&self.gid).chain(&self.groups).any(|g| gids.contains(g))
    }
}

/// `SO_PEERGROUPS` is not in the libc crate; its value per architecture family.
#[cfg(all(target_os = "linux", any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_PEERGROUPS: Option<libc::c_int> = Some(0x3d);
#[cfg(all(target_os = "linux", not(any(target_arch = "sparc", target_arch = "sparc64"))))]
const SO_PEERGROUPS: Option<libc::c_int> = Some(59);
#[cfg(not(target_os = "linux"))]
const SO_PEERGROUPS: Option<libc::c_int> = None;

/// The peer's supplementary groups; empty when the kernel does not say.
fn peer_groups(socket: &impl AsFd) -> Vec<u32> {
    let Some(opt) = SO_PEERGROUPS else {
        return Vec::new();
    };
    let fd = socket.as_fd().as_raw_fd();
    // The kernel answers ERANGE with the needed size when the buffer is too small.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..4 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a valid, writable buffer of `len` bytes; the kernel writes at
        // most `len` bytes and stores the length it used (or needs) back into `len`.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, groups.as_mut_ptr().cast(), &mut len) };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count.min(groups.len()));
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Vec::new();
        }
        groups.resize(count, 0);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_shows_our_own_credentials_and_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = LocalPeer::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::getuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getgid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
        let mut ours: Vec<u32> = nix::unistd::getgroups().unwrap().iter().map(|g| g.as_raw()).collect();
        let mut seen = peer.groups.clone();
        ours.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, ours, "SO_PEERGROUPS gives the supplementary groups of the peer");
        assert!(peer.matches(&[peer.uid], &[]));
        assert!(peer.matches(&[], &[peer.gid]));
        assert!(!peer.matches(&[peer.uid.wrapping_add(1)], &[peer.gid.wrapping_add(1)]));
    }
}
