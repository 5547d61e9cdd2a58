//! The results channel: JSON lines to the dedicated serial port (VM) or stdout (host row).

use std::{
    fs::OpenOptions,
    io::{self, Write},
};

use tapio_matrix_protocol::Line;

/// The device the host reads results from: the second 8250 UART on x86; on arm64 QEMU's
/// `virt` board has one UART (the console), so the harness adds a virtio console instead.
const RESULTS_DEVICE: &str = if cfg!(target_arch = "aarch64") { "/dev/hvc0" } else { "/dev/ttyS1" };

/// Writes result lines to one sink.
pub struct Reporter {
    out: Box<dyn Write>,
}

impl Reporter {
    /// The VM's results port ([`RESULTS_DEVICE`]), in raw mode so the host reads exactly the
    /// bytes written.
    pub fn results_port() -> Self {
        match OpenOptions::new().write(true).open(RESULTS_DEVICE) {
            Ok(file) => {
                use std::os::fd::AsRawFd;
                let fd = file.as_raw_fd();
                // SAFETY: fd is an open tty; termios is fully written by tcgetattr before use.
                unsafe {
                    let mut t: libc::termios = std::mem::zeroed();
                    if libc::tcgetattr(fd, &mut t) == 0 {
                        libc::cfmakeraw(&mut t);
                        libc::tcsetattr(fd, libc::TCSANOW, &t);
                    }
                }
                Self { out: Box::new(file) }
            }
            Err(e) => {
                eprintln!("tapio-guest: open {RESULTS_DEVICE}: {e}; results go to the console");
                Self { out: Box::new(io::stdout()) }
            }
        }
    }

    pub fn stdout() -> Self {
        Self { out: Box::new(io::stdout()) }
    }

    /// Writes one result line ([`Line::to_json`]).
    pub fn line(&mut self, line: &Line) {
        let _ = writeln!(self.out, "{}", line.to_json());
        let _ = self.out.flush();
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// The running kernel's identity: release and whether it has BTF.
pub fn kernel_info() -> Line {
    // SAFETY: utsname is plain data written by uname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid utsname to write.
    unsafe { libc::uname(&mut u) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Line::Kernel {
        release: field(&u.release),
        version: field(&u.version),
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
    }
}
