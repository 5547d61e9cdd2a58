//! The CPU architectures the matrix boots, and everything that differs between them: the
//! Debian architecture name (package indices and package names), the Rust target of the guest
//! agent, the QEMU binary and machine, and the device names inside the guest.
//!
//! Kept in one table so that adding an architecture is one match arm per fact, and so the
//! manifest, the fetcher, the guest build and the QEMU command line cannot disagree.

use serde::{Deserialize, Serialize};

/// A CPU architecture of a kernel line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub enum Arch {
    /// 64-bit x86: Debian's `amd64`.
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM: Debian's `arm64`, Rust's `aarch64`.
    #[serde(rename = "arm64")]
    Arm64,
}

impl Arch {
    /// Every architecture, in report order.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The architecture this harness runs on (the host row's).
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The name used in manifests, reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Debian's name, as in `binary-<arch>/Packages` and `*-cloud-<arch>` package names.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The static musl target the guest agent is built for: the initramfs holds no libc.
    pub fn guest_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The QEMU system emulator; `TAPIO_QEMU` (x86_64) or `TAPIO_QEMU_ARM64` override it.
    pub fn qemu_binary(self) -> std::ffi::OsString {
        let (var, default) = match self {
            Arch::X86_64 => ("TAPIO_QEMU", "qemu-system-x86_64"),
            Arch::Arm64 => ("TAPIO_QEMU_ARM64", "qemu-system-aarch64"),
        };
        std::env::var_os(var).unwrap_or_else(|| default.into())
    }

    /// The Debian package that provides [`Arch::qemu_binary`], for the error when it is missing.
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Arm64 => "qemu-system-arm",
        }
    }

    /// The kernel console device. x86 has the 8250 UART (`ttyS0`); QEMU's arm `virt` machine
    /// has one PL011 (`ttyAMA0`).
    pub fn console_device(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// Whether KVM could run this architecture's guests on this host: only the host's own.
    pub fn kvm_possible(self) -> bool {
        self == Arch::host()
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(format!("unknown architecture {other:?} (want x86_64 or arm64)")),
        }
    }
}

/// Which architectures `--arch` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchFilter {
    #[default]
    All,
    Only(Arch),
}

impl ArchFilter {
    pub fn admits(self, arch: Arch) -> bool {
        match self {
            Self::All => true,
            Self::Only(a) => a == arch,
        }
    }
}

impl std::fmt::Display for ArchFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Only(a) => a.fmt(f),
        }
    }
}

impl std::str::FromStr for ArchFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => Ok(Self::All),
            other => other.parse().map(Self::Only).map_err(|e| format!("{e}, or all")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("x86_64", Arch::X86_64)]
    #[case("amd64", Arch::X86_64)]
    #[case("arm64", Arch::Arm64)]
    #[case(" AArch64 ", Arch::Arm64)]
    fn parses_every_spelling(#[case] text: &str, #[case] want: Arch) {
        assert_eq!(text.parse::<Arch>().unwrap(), want);
    }

    #[rstest]
    #[case("x86_64", ArchFilter::Only(Arch::X86_64))]
    #[case("aarch64", ArchFilter::Only(Arch::Arm64))]
    #[case("all", ArchFilter::All)]
    fn arch_filters_parse(#[case] text: &str, #[case] filter: ArchFilter) {
        assert_eq!(text.parse::<ArchFilter>(), Ok(filter));
        assert!(filter.admits(Arch::X86_64) == (filter != ArchFilter::Only(Arch::Arm64)));
    }

    #[test]
    fn an_unknown_arch_filter_names_the_choices() {
        let e = "riscv64".parse::<ArchFilter>().unwrap_err();
        assert!(e.contains("riscv64") && e.contains("arm64") && e.ends_with("or all"), "{e}");
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        let e = "riscv64".parse::<Arch>().unwrap_err();
        assert!(e.contains("riscv64") && e.contains("arm64"), "{e}");
    }

    #[rstest]
    fn names_round_trip(#[values(Arch::X86_64, Arch::Arm64)] arch: Arch) {
        assert_eq!(arch.as_str().parse::<Arch>().unwrap(), arch);
        assert_eq!(arch.debian().parse::<Arch>().unwrap(), arch);
        let json = serde_json::to_string(&arch).unwrap();
        assert_eq!(json, format!("\"{}\"", arch.as_str()));
    }
}
