//! The cgroup v2 root, where the packet-path programs (cgroup_skb, cgroup/sock_create) attach.
//!
//! A program attached to the root of the v2 hierarchy runs for every socket of every process on
//! the node, whatever cgroup v1 hierarchies the node also mounts: on a hybrid host the v2
//! hierarchy sits at `/sys/fs/cgroup/unified`, on a pure v2 host at `/sys/fs/cgroup`, and an
//! initramfs may not mount it at all. The root is found in `/proc/self/mountinfo` (a mount whose
//! root is `/`); where none is mounted it is mounted at [`OWN_MOUNT`], which is what an operator
//! would do by hand, and the same hierarchy whatever the mount point.

use std::{
    ffi::CString,
    fs::File,
    path::PathBuf,
};

use thiserror::Error;

/// Where the root is mounted when the node has no cgroup2 mount.
pub const OWN_MOUNT: &str = "/run/tapio/cgroup2";

/// The cgroup v2 root could not be found, mounted or opened.
#[derive(Debug, Error)]
pub enum Cgroup2Error {
    #[error("cgroup2: read /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] std::io::Error),
    #[error("cgroup2: no cgroup2 mount, and mounting one at {OWN_MOUNT} failed: {0}")]
    Mount(#[source] std::io::Error),
    #[error("cgroup2: open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The mount point of the v2 hierarchy's root, from a mountinfo text: fields 4 (root) and 5
/// (mount point), and the filesystem type after the ` - ` separator.
pub fn find_in_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let fields: Vec<&str> = before.split_whitespace().collect();
        let mount_point = fields.get(4)?;
        (fstype == "cgroup2" && fields.get(3) == Some(&"/")).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The root's mount point if the v2 hierarchy is mounted, without mounting anything.
pub fn mounted_root() -> Result<Option<PathBuf>, Cgroup2Error> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(Cgroup2Error::Mountinfo)?;
    Ok(find_in_mountinfo(&text))
}

/// The root's mount point, mounting the hierarchy at [`OWN_MOUNT`] if the node has none.
pub fn root() -> Result<PathBuf, Cgroup2Error> {
    if let Some(path) = mounted_root()? {
        return Ok(path);
    }
    std::fs::create_dir_all(OWN_MOUNT).map_err(Cgroup2Error::Mount)?;
    let source = CString::new("cgroup2").expect("no NUL");
    let target = CString::new(OWN_MOUNT).expect("no NUL");
    // SAFETY: valid NUL-terminated strings, null data.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), source.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(Cgroup2Error::Mount(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted the cgroup v2 hierarchy at {OWN_MOUNT}");
    Ok(PathBuf::from(OWN_MOUNT))
}

/// Opens the root directory, the fd the attach calls take.
pub fn open_root() -> Result<File, Cgroup2Error> {
    let path = root()?;
    File::open(&path).map_err(|source| Cgroup2Error::Open { path: path.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_hierarchy_of_a_hybrid_host() {
        let text = "35 25 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n\
                    36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    44 35 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(find_in_mountinfo(text), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn a_bind_mount_of_a_child_cgroup_is_not_the_root() {
        let text = "50 40 0:39 /kubepods /host/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_in_mountinfo(text), None);
        let both = format!("{text}51 40 0:39 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(find_in_mountinfo(&both), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "51 40 0:39 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_in_mountinfo(text), Some(PathBuf::from("/mnt/cg two")));
    }
}
