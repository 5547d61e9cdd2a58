//! What /init must do before the loader can work, and the clean way out.

use std::{ffi::CString, fs};

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (s, t, f) = (c(source), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        eprintln!("tapio-guest: mount {fstype} on {target}: {}", std::io::Error::last_os_error());
    }
}

/// Mounts proc, sysfs, devtmpfs, tracefs, debugfs and bpffs; the kernel gave us none of them.
pub fn prepare_vm() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tracefs", "/sys/kernel/tracing", "tracefs");
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    mount("bpf", "/sys/fs/bpf", "bpf");
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2");
}

/// Powers the VM off; with `-no-reboot` QEMU then exits.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 must not exit, so wait for the end.
    loop {
        std::thread::park();
    }
}
