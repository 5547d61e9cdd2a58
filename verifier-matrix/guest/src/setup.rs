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
    loopback_up();
}

/// Brings `lo` up: no init did, and the network and dns scenarios talk over 127.0.0.1 and ::1.
/// Setting IFF_UP is enough: the kernel gives the loopback device 127.0.0.1 and ::1 itself.
fn loopback_up() {
    // SAFETY: socket takes integers; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        eprintln!("tapio-guest: lo up: socket: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: ifreq is plain data; the name is NUL-terminated within IFNAMSIZ; both ioctls read
    // and write only the ifreq they are given.
    let rc = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        rc
    };
    if rc != 0 {
        eprintln!("tapio-guest: lo up: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
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
