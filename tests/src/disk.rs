//! A small file system for full-disk tests: a tmpfs of a given size mounted on a fresh
//! directory, unmounted when dropped (also when the test fails). Needs root, as
//! `tests/run` has.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at [`SmallDisk::mnt`], unmounted on drop.
pub struct SmallDisk {
    pub mnt: PathBuf,
}

impl SmallDisk {
    /// Mount a tmpfs of `size` (`mount -o size=`, e.g. `1m`) on `dir/mnt`.
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        Self::mount_at(&dir.join("mnt"), size)
    }

    /// Mount a tmpfs of `size` on `mnt` (created when missing).
    pub fn mount_at(mnt: &Path, size: &str) -> SmallDisk {
        let mnt = mnt.to_path_buf();
        assert!(
            nix::unistd::getuid().is_root(),
            "this test mounts a small tmpfs and must run as root (tests/run does)"
        );
        std::fs::create_dir_all(&mnt).unwrap();
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&mnt).output();
        let out = out.expect("mount not runnable (apt-get install mount)");
        assert!(out.status.success(), "mounting a tmpfs failed: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { mnt }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}
