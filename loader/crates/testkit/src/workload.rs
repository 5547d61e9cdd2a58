//! Workloads the real-kernel tests (through `tapio-scenario`) and the verifier matrix's guests
//! (through the agent re-executing itself) both run, so each is written once.

use std::{
    sync::{Arc, Barrier},
    thread,
    time::Duration,
};

const GROUP_CODE: i32 = 3;
const LEADER_CODE: i32 = 4;
const THREAD_CODE: i32 = 9;

/// How the threads of [`threads_exit`] end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadsExit {
    /// Every thread calls exit_group(3) at once: the wait status is the group's code, 3.
    Group,
    /// Every thread calls exit(2) (the thread's own exit) at once, the extra threads with 9 and
    /// the leader with 4. The process ends with its last thread; wait() reports the leader's
    /// code before 6.0 and, since synchronize_group_exit() (6.0), the code of the last thread
    /// to start exiting, so either.
    Each,
}

impl ThreadsExit {
    pub fn name(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Each => "each",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Group, Self::Each].into_iter().find(|m| m.name() == s)
    }

    /// The exit codes wait() may report for the process.
    pub fn wait_codes(self) -> &'static [i32] {
        match self {
            Self::Group => &[GROUP_CODE],
            Self::Each => &[LEADER_CODE, THREAD_CODE],
        }
    }
}

/// A process that lives `late` with one thread, then starts `threads` more, and has all of them
/// end at the same instant as `mode` says. The threads started late make the last thread out
/// much younger than the process (its exit's `duration_ns` must be the process's age), and
/// threads exiting together race to be the last (the exit must be reported once). Never returns.
pub fn threads_exit(threads: usize, late: Duration, mode: ThreadsExit) -> ! {
    thread::sleep(late);
    let barrier = Arc::new(Barrier::new(threads + 1));
    for _ in 0..threads {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            end(mode, THREAD_CODE)
        });
    }
    barrier.wait();
    end(mode, LEADER_CODE)
}

fn end(mode: ThreadsExit, own_code: i32) -> ! {
    let (call, code) = match mode {
        ThreadsExit::Group => (libc::SYS_exit_group, GROUP_CODE),
        ThreadsExit::Each => (libc::SYS_exit, own_code),
    };
    loop {
        // SAFETY: exit and exit_group end the thread or the process; nothing is touched after.
        unsafe { libc::syscall(call, code) };
    }
}

/// What [`memory_hog`] does once it holds its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHog {
    /// Says `ready` on stdout and waits to be killed.
    Wait,
    /// Exits 0.
    Exit,
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`, then touches `mib`
/// MiB of memory, 1 MiB at a time (killed on the way if the cgroup's `memory.max` is smaller),
/// then does what `after` says. Exits 1 if it cannot join the cgroup.
pub fn memory_hog(procs: &std::path::Path, mib: usize, after: AfterHog) -> ! {
    use std::io::Write;
    if std::fs::write(procs, std::process::id().to_string()).is_err() {
        std::process::exit(1);
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        // Written, not just allocated: untouched pages are never charged.
        held.push(vec![0x5a; 1 << 20]);
        std::hint::black_box(&held);
    }
    match after {
        AfterHog::Exit => std::process::exit(0),
        AfterHog::Wait => {
            let _ = writeln!(std::io::stdout(), "ready");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::park();
            }
        }
    }
}

/// A memory-limited cgroup for an OOM workload, removed on drop.
///
/// cgroup v2 where its root has the memory controller; on a hybrid host (v2 without memory, the
/// v1 memory hierarchy beside it) a v1 memory cgroup, the task then staying in its v2 cgroup.
/// Only directories of a mounted cgroup hierarchy are ever written.
pub struct MemCgroup {
    pub dir: std::path::PathBuf,
    /// The victim's cgroup v2 id as the kernel monitor reads it (`task->cgroups->dfl_cgrp->kn->id`,
    /// the inode number of the v2 directory), when it can be known.
    pub expected_v2_id: Option<u64>,
}

impl MemCgroup {
    /// A cgroup named `name` with a `limit`-byte memory limit and no swap; None when neither
    /// hierarchy offers the memory controller here, with the reason.
    pub fn create(name: &str, limit: u64) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt;
        let v2 = crate::cgroup2::mounted_root().map_err(|e| e.to_string())?;
        if let Some(mount) = &v2 {
            let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+memory");
                let dir = mount.join(name);
                let _ = std::fs::create_dir(&dir);
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                if let Err(e) = std::fs::write(dir.join("memory.max"), limit.to_string()) {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(format!("{}: memory.max: {e}", dir.display()));
                }
                let id = std::fs::metadata(&dir).ok().map(|m| m.ino());
                return Ok(Self { dir, expected_v2_id: id });
            }
        }
        let v1 = v1_memory_mount().ok_or_else(|| {
            format!("no memory controller: cgroup v2 at {v2:?} lacks it and no v1 memory hierarchy is mounted")
        })?;
        let dir = v1.join(name);
        let _ = std::fs::create_dir(&dir);
        if let Err(e) = std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("{}: memory.limit_in_bytes: {e}", dir.display()));
        }
        let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        let id = v2.as_deref().and_then(own_v2_cgroup_id);
        Ok(Self { dir, expected_v2_id: id })
    }

    /// The file a process writes its pid to, to join.
    pub fn procs(&self) -> std::path::PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // Its processes have been reaped by now; an empty cgroup can be removed.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where the v1 memory hierarchy is mounted, from /proc/self/mountinfo.
fn v1_memory_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut fields = right.split(' ');
        let (fstype, options) = (fields.next()?, fields.nth(1)?);
        (fstype == "cgroup" && options.split(',').any(|o| o == "memory")).then(|| left.split(' ').nth(4).map(Into::into))?
    })
}

/// The inode of this process's cgroup v2 directory under `mount`: its cgroup id.
fn own_v2_cgroup_id(mount: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(std::fs::metadata(mount.join(path.trim_start_matches('/'))).ok()?.ino())
}

/// The fds [`mount_api`] got, as the kernel returned them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountApiFds {
    /// fsopen's fs context.
    pub fs_fd: i32,
    /// fsmount's detached tmpfs.
    pub mount_fd: i32,
    /// open_tree(OPEN_TREE_CLONE)'s detached copy of it.
    pub tree_fd: i32,
}

/// The step of [`mount_api`] that failed and its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountApiError {
    pub step: &'static str,
    pub errno: i32,
}

impl std::fmt::Display for MountApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, std::io::Error::from_raw_os_error(self.errno))
    }
}

/// include/uapi/linux/mount.h (5.2+).
pub mod mount_api_abi {
    pub const FSOPEN_CLOEXEC: libc::c_long = 0x1;
    pub const FSCONFIG_SET_STRING: libc::c_long = 1;
    pub const FSCONFIG_CMD_CREATE: libc::c_long = 6;
    pub const FSMOUNT_CLOEXEC: libc::c_long = 0x1;
    pub const MOUNT_ATTR_NOSUID: libc::c_long = 0x2;
    pub const OPEN_TREE_CLONE: libc::c_long = 0x1;
    pub const OPEN_TREE_CLOEXEC: libc::c_long = libc::O_CLOEXEC as libc::c_long;
    pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_long = 0x4;
}

/// Mounts through the new mount API (5.2+), as util-linux 2.39+ `mount(8)` does: a tmpfs whose
/// source is `source`, made with fsopen, fsconfig and fsmount (`nosuid`) and attached at
/// `fs_target` with move_mount; then a bind copy of that tree, made with
/// open_tree(OPEN_TREE_CLONE) and attached at `bind_target`. The mounts land in the caller's
/// mount namespace: the caller makes a private one first. The fds stay open (close-on-exec).
///
/// Raw syscalls only, and nothing allocated: safe in a forked child of a threaded process.
pub fn mount_api(source: &std::ffi::CStr, fs_target: &std::ffi::CStr, bind_target: &std::ffi::CStr) -> Result<MountApiFds, MountApiError> {
    use mount_api_abi::*;
    let fail = |step| MountApiError { step, errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0) };
    let check = |step, rc: libc::c_long| if rc < 0 { Err(fail(step)) } else { Ok(rc) };
    let (zero, at_fdcwd, empty) = (0 as libc::c_long, libc::AT_FDCWD as libc::c_long, c"");
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; the rest are
    // integers, passed as full registers.
    unsafe {
        let fs_fd = check("fsopen", libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC))?;
        let key = c"source";
        check("fsconfig source", libc::syscall(libc::SYS_fsconfig, fs_fd, FSCONFIG_SET_STRING, key.as_ptr(), source.as_ptr(), zero))?;
        let null = std::ptr::null::<libc::c_char>();
        check("fsconfig create", libc::syscall(libc::SYS_fsconfig, fs_fd, FSCONFIG_CMD_CREATE, null, null, zero))?;
        let mount_fd = check("fsmount", libc::syscall(libc::SYS_fsmount, fs_fd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID))?;
        let to = MOVE_MOUNT_F_EMPTY_PATH;
        check("move_mount fsmount", libc::syscall(libc::SYS_move_mount, mount_fd, empty.as_ptr(), at_fdcwd, fs_target.as_ptr(), to))?;
        let flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
        let tree_fd = check("open_tree", libc::syscall(libc::SYS_open_tree, at_fdcwd, fs_target.as_ptr(), flags))?;
        check("move_mount open_tree", libc::syscall(libc::SYS_move_mount, tree_fd, empty.as_ptr(), at_fdcwd, bind_target.as_ptr(), to))?;
        Ok(MountApiFds { fs_fd: fs_fd as i32, mount_fd: mount_fd as i32, tree_fd: tree_fd as i32 })
    }
}
