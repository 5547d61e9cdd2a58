//! The cgroup v2 root, where the packet-path programs (cgroup_skb, cgroup/sock_create) attach.
//!
//! A program attached to the root of the v2 hierarchy runs for every socket of every process on
//! the node, whatever cgroup v1 hierarchies the node also mounts: on a hybrid host the v2
//! hierarchy sits at `/sys/fs/cgroup/unified`, on a pure v2 host at `/sys/fs/cgroup`, and an
//! initramfs may not mount it at all. The root is found in `/proc/self/mountinfo` (a mount whose
//! root is `/`); where none is mounted it is mounted at [`OWN_MOUNT`], which is what an operator
//! would do by hand, and the same hierarchy whatever the mount point.
//!
//! **In a container with its own cgroup namespace** (every Kubernetes container on a cgroup v2
//! node) the container's `/sys/fs/cgroup` shows root `/`, but `/` is the container's own cgroup:
//! a scan there finds no other container, and a program attached there sees only the agent's
//! sockets. mountinfo prints a mount's root relative to the reader's cgroup namespace, so the
//! node's hierarchy mounted into the pod (the DaemonSet's `hostPath` of `/sys/fs/cgroup`) shows
//! as `/..`, `/../..`, ...: the mount with the most `..` components is the node's root. When the
//! agent is in a cgroup namespace of its own and no such mount exists, [`root`] refuses with an
//! error that says which mount is missing, rather than watching one container and calling it the
//! node. Whether the namespace is the initial one is read from `/proc/self/ns/cgroup`'s inode,
//! which the kernel fixes for the initial namespace (`PROC_CGROUP_INIT_INO`, 4.6+).

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
    #[error(
        "cgroup2: this process is in a cgroup namespace of its own (a container's), and the node's \
         cgroup v2 root is not mounted in it: {own} is only this container's cgroup. Mount the \
         node's /sys/fs/cgroup into the container (the DaemonSet's `cgroup` hostPath volume)"
    )]
    OwnNamespaceOnly { own: PathBuf },
    #[error("cgroup2: open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The inode number of the initial cgroup namespace (`PROC_CGROUP_INIT_INO`).
const INIT_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// A cgroup2 mount whose root is the reader's namespace root or one of its ancestors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    pub mount_point: PathBuf,
    /// How many levels above the reader's cgroup-namespace root the mount's root is: 0 for `/`,
    /// 2 for `/../..`. Above 0 only when the reader is in a cgroup namespace of its own.
    pub levels_up: usize,
}

/// The cgroup2 mounts of a mountinfo text whose root is `/` or made only of `..` components,
/// highest first (fields 4, root, and 5, mount point; the filesystem type after ` - `). A mount
/// of a child cgroup (`/kubepods`) is not among them.
pub fn root_mounts(mountinfo: &str) -> Vec<RootMount> {
    let mut mounts: Vec<RootMount> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let fields: Vec<&str> = before.split_whitespace().collect();
            let (root, mount_point) = (*fields.get(3)?, *fields.get(4)?);
            if fstype != "cgroup2" {
                return None;
            }
            let levels_up = if root == "/" {
                0
            } else {
                let parts: Vec<&str> = root.trim_start_matches('/').split('/').collect();
                if !parts.iter().all(|p| *p == "..") {
                    return None;
                }
                parts.len()
            };
            Some(RootMount { mount_point: PathBuf::from(unescape(mount_point)), levels_up })
        })
        .collect();
    // Stable: among equals, the first in mountinfo (the earliest mounted) wins.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.levels_up));
    mounts
}

/// The mount point of the v2 hierarchy's root as seen from this mountinfo: the highest of
/// [`root_mounts`]. In the initial cgroup namespace that is a mount with root `/`.
pub fn find_in_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    root_mounts(mountinfo).into_iter().next().map(|m| m.mount_point)
}

/// Whether this process is in the initial cgroup namespace; `None` when it cannot be told
/// (no `/proc/self/ns/cgroup`: a kernel before 4.6, which has no cgroup namespaces at all).
pub fn in_initial_cgroup_namespace() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/cgroup").ok().map(|m| m.ino() == INIT_CGROUP_NS_INO)
}

/// Decides the node's root from the mounts and the namespace: in a namespace of its own, a mount
/// of the namespace root alone (`levels_up` 0) is refused.
fn node_root(mounts: &[RootMount], initial_namespace: Option<bool>) -> Result<Option<PathBuf>, Cgroup2Error> {
    match (mounts.first(), initial_namespace) {
        (None, _) => Ok(None),
        (Some(m), Some(false)) if m.levels_up == 0 => Err(Cgroup2Error::OwnNamespaceOnly { own: m.mount_point.clone() }),
        (Some(m), _) => Ok(Some(m.mount_point.clone())),
    }
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

/// The node's root's mount point if the v2 hierarchy is mounted, without mounting anything.
/// In a cgroup namespace of its own, only a mount of the node's root (or an ancestor of the
/// namespace's) counts ([`Cgroup2Error::OwnNamespaceOnly`] otherwise).
pub fn mounted_root() -> Result<Option<PathBuf>, Cgroup2Error> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(Cgroup2Error::Mountinfo)?;
    node_root(&root_mounts(&text), in_initial_cgroup_namespace())
}

/// The root's mount point, mounting the hierarchy at [`OWN_MOUNT`] if the node has none.
pub fn root() -> Result<PathBuf, Cgroup2Error> {
    if let Some(path) = mounted_root()? {
        return Ok(path);
    }
    // Mounting cgroup2 from a cgroup namespace of its own mounts that namespace's root: this
    // container's cgroup, not the node's.
    if in_initial_cgroup_namespace() == Some(false) {
        return Err(Cgroup2Error::OwnNamespaceOnly { own: PathBuf::from(OWN_MOUNT) });
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

    /// A Kubernetes container on a cgroup v2 node: its own /sys/fs/cgroup (the namespace root,
    /// `/`) and the node's, mounted by the DaemonSet at /host/sys/fs/cgroup (`/../../..`).
    const POD: &str = "60 50 0:39 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
                       61 50 0:39 /../../.. /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
                       62 50 0:39 /../x /elsewhere ro - cgroup2 cgroup2 rw\n";

    #[test]
    fn in_a_cgroup_namespace_the_nodes_root_is_the_mount_highest_above_it() {
        let mounts = root_mounts(POD);
        assert_eq!(mounts.iter().map(|m| m.levels_up).collect::<Vec<_>>(), [3, 0], "`/../x` is not an ancestor");
        assert_eq!(find_in_mountinfo(POD), Some(PathBuf::from("/host/sys/fs/cgroup")));
        assert_eq!(node_root(&mounts, Some(false)).unwrap(), Some(PathBuf::from("/host/sys/fs/cgroup")));
    }

    #[test]
    fn a_container_with_only_its_own_cgroup_mounted_is_refused_by_name() {
        let own = "60 50 0:39 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let err = node_root(&root_mounts(own), Some(false)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cgroup namespace of its own") && text.contains("/sys/fs/cgroup") && text.contains("hostPath"), "{text}");
        // The same mount in the initial namespace is the node's root.
        assert_eq!(node_root(&root_mounts(own), Some(true)).unwrap(), Some(PathBuf::from("/sys/fs/cgroup")));
        // A kernel without cgroup namespaces: nothing to doubt.
        assert_eq!(node_root(&root_mounts(own), None).unwrap(), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn this_test_process_is_in_the_initial_cgroup_namespace() {
        // The test host runs tests in the host's cgroup namespace; the fixed inode is the kernel's.
        assert_eq!(in_initial_cgroup_namespace(), Some(true));
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "51 40 0:39 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_in_mountinfo(text), Some(PathBuf::from("/mnt/cg two")));
    }
}
