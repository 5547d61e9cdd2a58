//! The results channel: JSON lines to the dedicated serial port (VM) or stdout (host row).

use std::{
    fs::OpenOptions,
    io::{self, Write},
};

use tapio_matrix_protocol::Line;

/// The device the host reads results from: the second 8250 UART on x86; on arm64 QEMU's
/// `virt` board has one UART (the console), so the harness adds a virtio console instead.
const RESULTS_DEVICE: &str = if cfg!(target_arch = "aarch64") { "/dev/hvc0" } else { "/dev/ttyS1" };

/// Where the harness packs the results port's modules, `NN-<name>.ko` in load order
/// (verifier-matrix's `matrix::RESULTS_MODULE_DIR`).
const RESULTS_MODULE_DIR: &str = "/lib/modules/results-port";

/// How long the port's device node may take to appear after its module loaded (devtmpfs makes
/// it from a kernel thread, so it can trail `finit_module`'s return).
const DEVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Loads every module in [`RESULTS_MODULE_DIR`] in name order ("already loaded" is fine), then
/// says whether it loaded any (so the port may still be coming). Failures go to the console,
/// which is all there is yet.
fn load_results_port_modules() -> bool {
    let Ok(dir) = std::fs::read_dir(RESULTS_MODULE_DIR) else { return false };
    let mut modules: Vec<_> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
    modules.sort();
    for path in &modules {
        let loaded = std::fs::File::open(path).and_then(|file| {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid fd and a NUL-terminated empty parameter string; flags 0.
            let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
            match rc {
                0 => Ok(()),
                _ => match io::Error::last_os_error() {
                    e if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                    e => Err(e),
                },
            }
        });
        if let Err(e) = loaded {
            eprintln!("tapio-guest: load {}: {e}", path.display());
        }
    }
    !modules.is_empty()
}

/// Opens [`RESULTS_DEVICE`]; with `wait`, retries for [`DEVICE_WAIT`] while the device is not
/// there yet: a virtio console's port turns into `hvc0` only after the device's control message
/// says it is a console, which comes after the module has loaded (ENOENT until devtmpfs has the
/// node, ENODEV until the port is a console).
fn open_port(wait: bool) -> io::Result<std::fs::File> {
    let deadline = std::time::Instant::now() + DEVICE_WAIT;
    loop {
        match OpenOptions::new().write(true).open(RESULTS_DEVICE) {
            Err(e) if wait && matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Writes result lines to one sink.
pub struct Reporter {
    out: Box<dyn Write>,
}

impl Reporter {
    /// The VM's results port ([`RESULTS_DEVICE`]), in raw mode so the host reads exactly the
    /// bytes written. Loads the port's modules first when the harness packed them (arm64 kernels
    /// that build virtio-console as a module), and waits for the device node to appear.
    pub fn results_port() -> Self {
        let waits = load_results_port_modules();
        match open_port(waits) {
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
