//! Cgroups the tests make in the v2 hierarchy (kubelet's and the runtimes' layouts) and processes
//! moved into them: shared by the attribution and filter tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// The mount point of the cgroup v2 hierarchy on the test host.
pub fn v2_root() -> PathBuf {
    tapio_features::cgroup2::mounted_root().expect("read mountinfo").expect("the test host mounts the cgroup v2 hierarchy")
}

/// Removes the cgroups it made, deepest first, even when the test fails.
#[derive(Default)]
pub struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Makes every missing directory of `rel` under `root`; returns the deepest.
    pub fn make(&mut self, root: &Path, rel: &str) -> PathBuf {
        let mut dir = root.to_path_buf();
        for component in rel.split('/').filter(|c| !c.is_empty()) {
            dir.push(component);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.0.push(dir.clone());
            }
        }
        dir
    }

    pub fn remove_all(&mut self) {
        while let Some(dir) = self.0.pop() {
            let deadline = Instant::now() + Duration::from_secs(2);
            // A cgroup whose last task just exited may be busy for a moment.
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A shell that moves itself into `cgroup`, then execs `/bin/echo <marker>`.
pub fn exec_in(cgroup: &Path, marker: &str) {
    let script = format!("echo $$ > '{}/cgroup.procs' && exec /bin/echo {marker}", cgroup.display());
    let out = Command::new("/bin/sh").args(["-c", &script]).output().expect("run sh");
    assert!(out.status.success(), "moving into {}: {}", cgroup.display(), String::from_utf8_lossy(&out.stderr));
}
