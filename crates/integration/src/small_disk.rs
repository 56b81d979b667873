//! A small file system of the test's own: a tmpfs mounted on a fresh directory, to run a
//! data directory out of space on purpose and give the space back. Mounting needs root (as
//! on CI and the project's machines); a test that cannot mount fails saying so.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    mount_point: PathBuf,
    fillers: Vec<PathBuf>,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_bytes` on a new directory under the system temp dir.
    pub fn mount(name: &str, size_bytes: u64) -> SmallDisk {
        let mount_point = std::env::temp_dir().join(crate::unique(name));
        fs::create_dir_all(&mount_point).expect("create the mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_bytes},mode=0700"))
            .arg("tmpfs")
            .arg(&mount_point)
            .output()
            .expect("run mount");
        if !output.status.success() {
            let _ = fs::remove_dir(&mount_point);
            panic!(
                "cannot mount a tmpfs for a full-disk test (it needs root): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        SmallDisk {
            mount_point,
            fillers: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Bytes free on it.
    pub fn free_bytes(&self) -> u64 {
        let stats = nix::sys::statvfs::statvfs(&self.mount_point).expect("statvfs");
        stats.blocks_available() * stats.fragment_size()
    }

    /// Takes all its free space but `leave_bytes` (to the 4 KiB page) with a filler file.
    pub fn fill(&mut self, leave_bytes: u64) {
        let path = self
            .mount_point
            .join(format!("filler-{}", self.fillers.len()));
        let mut file = fs::File::create(&path).expect("create a filler");
        self.fillers.push(path);
        loop {
            let free = self.free_bytes();
            if free <= leave_bytes {
                break;
            }
            let size = ((free - leave_bytes) / 4096 * 4096).clamp(4096, 1 << 20) as usize;
            if file.write_all(&vec![0x5a; size]).is_err() {
                break;
            }
        }
        file.sync_all().expect("sync the filler");
    }

    /// Gives back the space taken by [`SmallDisk::fill`].
    pub fn free(&mut self) {
        for path in self.fillers.drain(..) {
            fs::remove_file(&path).expect("remove a filler");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
        let _ = fs::remove_dir(&self.mount_point);
    }
}
