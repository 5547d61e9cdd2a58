//! QEMU command-line construction, kept free of process handling so it can be unit tested.
//!
//! Layout of the guest's I/O:
//! - `ttyS0` is the kernel console. It goes to QEMU's stdout (which the runner reads line by
//!   line for the progress UI and splat detection) and, through the chardev `logfile=`
//!   option, to `console_path`, so a complete console log exists even if the harness dies.
//! - `ttyS1` is the results channel: a `file` chardev at `results_path`. Debian cloud kernels
//!   have no 9p or virtio-vsock drivers built in, but the 8250 UART is built in everywhere,
//!   so a second serial port is the one transport every kernel in the matrix has.
//! - On arm64 (QEMU's `virt` machine) the console is the one PL011, `ttyAMA0`, and the machine
//!   has no second UART; the results go through a virtio console (`hvc0`) instead, since
//!   Debian's arm64 kernels build virtio-pci and virtio-console in.
//!
//! The guest leaves by `reboot(RB_POWER_OFF)`; with `-no-reboot` and `panic=-1` QEMU also
//! exits on a kernel panic instead of rebooting into the same failure forever.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::arch::{Arch, ArchExt as _};

/// The QEMU binary for x86-64 guests; `TAPIO_QEMU` overrides it (e.g. a locally built QEMU).
/// Other architectures: [`Arch::qemu_binary`].
pub fn qemu_binary() -> OsString {
    Arch::X86_64.qemu_binary()
}

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation; fast but not available (or, on some hosts, broken) everywhere.
    Kvm,
    /// Pure emulation; slow but always works.
    Tcg,
}

impl Accel {
    /// The `-accel` argument. TCG runs single-threaded: multi-threaded TCG races with the
    /// guest's int3-based live text patching (`text_poke_bp`), which was seen to oops 7.3 kernels
    /// at boot roughly one time in two; one thread for both vCPUs keeps SMP and removes the race.
    pub fn accel_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=single",
        }
    }

    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The `-cpu` model. Under KVM `host` passes the real CPU through; under TCG `max` enables
    /// every feature QEMU can emulate, so BPF JIT paths that test CPU features (e.g. BMI2, or
    /// arm64's LSE atomics) are exercised the same way as on modern hardware. On arm64,
    /// `pauth-impdef` swaps the architected pointer-authentication hash (QARMA, slow to
    /// emulate and run on every kernel function return) for QEMU's cheap one.
    pub fn cpu_model(self, arch: Arch) -> &'static str {
        match (self, arch) {
            (Accel::Kvm, _) => "host",
            (Accel::Tcg, Arch::X86_64) => "max",
            (Accel::Tcg, Arch::Arm64) => "max,pauth-impdef=on",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("unknown accelerator {other:?} (want kvm or tcg)")),
        }
    }
}

/// Kernel command-line words every boot gets.
///
/// - `console=ttyS0`: the console is the first UART (see the module docs).
/// - `panic=-1`: reboot immediately on panic, which `-no-reboot` turns into a QEMU exit.
/// - no `oops=panic` and no `panic_on_warn`: an oops or WARN in some probe path should be
///   *reported*, not end the run. The runner finds splats in the console text, and the
///   guest agent keeps going and flushes the rest of its results. An oops that kills `/init`
///   still becomes a panic ("Attempted to kill init"), so nothing is lost.
/// - `printk.devkmsg=on`: lets the agent write markers into the kernel log if it wants.
/// - `random.trust_cpu=on`: avoids boot stalls waiting for entropy under TCG.
/// - `nokaslr`: stable addresses make call traces comparable across runs of one kernel.
///
/// (The console word is per architecture: [`QemuConfig::cmdline`] puts it first.)
pub const BASE_CMDLINE: &[&str] = &[
    "panic=-1",
    "printk.devkmsg=on",
    "random.trust_cpu=on",
    "nokaslr",
];

/// One guest boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// The guest's architecture: which QEMU, machine, console and results device.
    pub arch: Arch,
    /// The `vmlinuz` to boot directly with `-kernel`.
    pub kernel: PathBuf,
    /// The newc initramfs with the guest agent as `/init`.
    pub initrd: PathBuf,
    /// Extra kernel command-line words, appended after [`BASE_CMDLINE`] (later words win).
    pub append_extra: Vec<String>,
    /// Guest memory in MiB.
    pub mem_mb: u32,
    /// Number of virtual CPUs. Two by default so per-CPU map and SMP paths are exercised.
    pub smp: u32,
    /// KVM or TCG.
    pub accel: Accel,
    /// Where QEMU mirrors the console (`ttyS0`).
    pub console_path: PathBuf,
    /// Where QEMU writes what the guest sends on `ttyS1`.
    pub results_path: PathBuf,
}

impl QemuConfig {
    /// A config with the defaults the matrix uses: 1 GiB, 2 vCPUs, no extra command line.
    pub fn new(
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        accel: Accel,
        console_path: impl Into<PathBuf>,
        results_path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            arch: Arch::X86_64,
            kernel: kernel.into(),
            initrd: initrd.into(),
            append_extra: Vec::new(),
            mem_mb: 1024,
            smp: 2,
            accel,
            console_path: console_path.into(),
            results_path: results_path.into(),
        }
    }

    /// The full kernel command line.
    pub fn cmdline(&self) -> String {
        let console = format!("console={}", self.arch.console_device());
        std::iter::once(console.as_str())
            .chain(BASE_CMDLINE.iter().copied())
            .chain(self.append_extra.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The QEMU binary for this config's architecture.
    pub fn program(&self) -> OsString {
        self.arch.qemu_binary()
    }

    /// The argv for [`QemuConfig::program`] (without the program name).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(OsString::from(s));
        if self.arch == Arch::Arm64 {
            // The generic virtual board: PL011 console, virtio-pci, GICv3 for more than 8 CPUs.
            push("-machine");
            push("virt,gic-version=3");
        }
        push("-accel");
        push(self.accel.accel_arg());
        push("-cpu");
        push(self.accel.cpu_model(self.arch));
        push("-m");
        push(&self.mem_mb.to_string());
        push("-smp");
        push(&self.smp.to_string());
        // Guest reset (including the one `panic=-1` triggers) ends QEMU instead of rebooting.
        push("-no-reboot");
        // No window, no monitor, no default devices on stdio: stdout carries only ttyS0.
        push("-display");
        push("none");
        push("-monitor");
        push("none");
        push("-nodefaults");
        // -nodefaults drops the VGA card and the default serial, keep nothing else implicit.
        push("-net");
        push("none");

        a.push("-kernel".into());
        a.push(self.kernel.clone().into_os_string());
        a.push("-initrd".into());
        a.push(self.initrd.clone().into_os_string());
        a.push("-append".into());
        a.push(self.cmdline().into());

        // ttyS0: stdio (no SIGINT handling, so ^C in the harness does not reach the guest)
        // plus a log file.
        let mut con = OsString::from("stdio,id=console,signal=off,logappend=off,logfile=");
        con.push(escape_chardev_path(&self.console_path));
        a.push("-chardev".into());
        a.push(con);
        a.push("-serial".into());
        a.push("chardev:console".into());

        // Results file: ttyS1 on x86, hvc0 (a virtio console) on arm64.
        let mut res = OsString::from("file,id=results,path=");
        res.push(escape_chardev_path(&self.results_path));
        a.push("-chardev".into());
        a.push(res);
        match self.arch {
            Arch::X86_64 => {
                a.push("-serial".into());
                a.push("chardev:results".into());
            }
            Arch::Arm64 => {
                a.push("-device".into());
                a.push("virtio-serial-pci".into());
                a.push("-device".into());
                a.push("virtconsole,chardev=results".into());
            }
        }
        a
    }
}

/// QEMU option values are comma-separated; a literal comma is written as `,,`.
fn escape_chardev_path(p: &std::path::Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> QemuConfig {
        QemuConfig::new(
            "/k/vmlinuz",
            "/k/initrd.cpio",
            Accel::Tcg,
            "/out/console.log",
            "/out/results.jsonl",
        )
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    /// The value following `flag`, for flags that appear once.
    fn value_of(args: &[String], flag: &str) -> String {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        args[i + 1].clone()
    }

    #[test]
    fn tcg_defaults() {
        let a = strs(&cfg().args());
        assert_eq!(value_of(&a, "-accel"), "tcg,thread=single");
        assert_eq!(value_of(&a, "-cpu"), "max");
        assert!(!a.contains(&"-machine".to_owned()), "x86 keeps QEMU's default pc machine");
        assert_eq!(value_of(&a, "-m"), "1024");
        assert_eq!(value_of(&a, "-smp"), "2");
        assert_eq!(value_of(&a, "-kernel"), "/k/vmlinuz");
        assert_eq!(value_of(&a, "-initrd"), "/k/initrd.cpio");
        assert_eq!(value_of(&a, "-net"), "none");
        assert_eq!(value_of(&a, "-display"), "none");
        assert_eq!(value_of(&a, "-monitor"), "none");
        assert!(a.contains(&"-no-reboot".to_owned()));
        assert!(
            !a.contains(&"-nographic".to_owned()),
            "-nographic would put the monitor on stdio"
        );
    }

    #[test]
    fn kvm_uses_host_cpu() {
        let mut c = cfg();
        c.accel = Accel::Kvm;
        let a = strs(&c.args());
        assert_eq!(value_of(&a, "-accel"), "kvm");
        assert_eq!(value_of(&a, "-cpu"), "host");
    }

    #[test]
    fn two_serial_ports_in_order() {
        let a = strs(&cfg().args());
        let serials: Vec<&String> = a
            .iter()
            .zip(a.iter().skip(1))
            .filter(|(f, _)| *f == "-serial")
            .map(|(_, v)| v)
            .collect();
        // Order matters: the first -serial is ttyS0, the second ttyS1.
        assert_eq!(serials, ["chardev:console", "chardev:results"]);
        let chardevs: Vec<&String> = a
            .iter()
            .zip(a.iter().skip(1))
            .filter(|(f, _)| *f == "-chardev")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            chardevs[0],
            "stdio,id=console,signal=off,logappend=off,logfile=/out/console.log"
        );
        assert_eq!(chardevs[1], "file,id=results,path=/out/results.jsonl");
    }

    #[test]
    fn cmdline_has_console_and_panic_and_extras_last() {
        let mut c = cfg();
        c.append_extra = vec!["tapio.mode=full".into(), "loglevel=4".into()];
        let a = strs(&c.args());
        let cmd = value_of(&a, "-append");
        assert!(cmd.starts_with("console=ttyS0 panic=-1"), "{cmd}");
        assert!(cmd.ends_with("tapio.mode=full loglevel=4"), "{cmd}");
        assert!(!cmd.contains("oops=panic"));
        assert_eq!(cmd, c.cmdline());
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut c = cfg();
        c.results_path = "/tmp/a,b/r".into();
        let a = strs(&c.args());
        assert!(
            a.contains(&"file,id=results,path=/tmp/a,,b/r".to_owned()),
            "{a:?}"
        );
    }

    #[test]
    fn arm64_uses_virt_pl011_and_a_virtio_console_for_results() {
        let mut c = cfg();
        c.arch = Arch::Arm64;
        let a = strs(&c.args());
        assert_eq!(c.program(), "qemu-system-aarch64");
        assert_eq!(value_of(&a, "-machine"), "virt,gic-version=3");
        assert_eq!(value_of(&a, "-cpu"), "max,pauth-impdef=on");
        assert!(value_of(&a, "-append").starts_with("console=ttyAMA0 panic=-1"));
        let serials = a.iter().filter(|x| *x == "-serial").count();
        assert_eq!(serials, 1, "virt has one UART: the console");
        assert!(a.contains(&"virtconsole,chardev=results".to_owned()), "{a:?}");
        assert!(a.contains(&"file,id=results,path=/out/results.jsonl".to_owned()));
    }

    #[test]
    fn accel_parses() {
        assert_eq!("KVM".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!(" tcg ".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!("hvf".parse::<Accel>().is_err());
    }
}
