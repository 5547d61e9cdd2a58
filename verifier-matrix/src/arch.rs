//! The CPU architectures the matrix boots, and everything that differs between them for the
//! harness alone: the Debian architecture name (package indices and package names), the Rust
//! target of the guest agent, the QEMU binary, and the device names inside the guest.
//!
//! The architecture itself is tapio-kernel-gates' [`Arch`], the one type every crate names an
//! architecture with (its names, `x86_64` and `arm64`, are the manifest's, the lock's,
//! report.json's and `--arch`'s). What only the harness needs is [`ArchExt`], kept in one table so
//! that adding an architecture is one match arm per fact, and so the manifest, the fetcher, the
//! guest build and the QEMU command line cannot disagree.

/// A CPU architecture of a kernel line: tapio-kernel-gates' one `Arch` type.
pub use tapio_kernel_gates::Arch;

/// The architecture this harness runs on (the host row's); x86_64 on any other host.
pub fn host() -> Arch {
    Arch::this().unwrap_or(Arch::X86_64)
}

/// The architecture of a kernels.toml or kernels.lock entry that names none: x86_64.
pub fn default_arch() -> Arch {
    Arch::X86_64
}

/// What differs between architectures for the harness alone. An extension of the shared
/// [`Arch`], so the loader's crates, which never boot anything, do not carry these facts.
pub trait ArchExt {
    /// Debian's name, as in `binary-<arch>/Packages` and `*-cloud-<arch>` package names.
    fn debian(self) -> &'static str;
    /// The static musl target the guest agent is built for: the initramfs holds no libc.
    fn guest_target(self) -> &'static str;
    /// The QEMU system emulator; `TAPIO_QEMU` (x86_64) or `TAPIO_QEMU_ARM64` override it.
    fn qemu_binary(self) -> std::ffi::OsString;
    /// The Debian package that provides [`ArchExt::qemu_binary`], for the error when it is
    /// missing.
    fn qemu_package(self) -> &'static str;
    /// The kernel console device. x86 has the 8250 UART (`ttyS0`); QEMU's arm `virt` machine
    /// has one PL011 (`ttyAMA0`).
    fn console_device(self) -> &'static str;
    /// Whether KVM could run this architecture's guests on this host: only the host's own.
    fn kvm_possible(self) -> bool;
}

impl ArchExt for Arch {
    fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    fn guest_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    fn qemu_binary(self) -> std::ffi::OsString {
        let (var, default) = match self {
            Arch::X86_64 => ("TAPIO_QEMU", "qemu-system-x86_64"),
            Arch::Arm64 => ("TAPIO_QEMU_ARM64", "qemu-system-aarch64"),
        };
        std::env::var_os(var).unwrap_or_else(|| default.into())
    }

    fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Arm64 => "qemu-system-arm",
        }
    }

    fn console_device(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    fn kvm_possible(self) -> bool {
        self == host()
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
            other => other.parse().map(Self::Only).map_err(|_| format!("unknown architecture {other:?} (want x86_64 or arm64), or all")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// `--arch` takes every spelling the shared type parses (its own tests list them), and `all`.
    #[rstest]
    #[case("x86_64", ArchFilter::Only(Arch::X86_64))]
    #[case("amd64", ArchFilter::Only(Arch::X86_64))]
    #[case("aarch64", ArchFilter::Only(Arch::Arm64))]
    #[case(" AArch64 ", ArchFilter::Only(Arch::Arm64))]
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

    /// Debian's names parse back to the architecture, and the names the manifest, the lock and
    /// the report hold are the shared type's.
    #[rstest]
    fn names_round_trip(#[values(Arch::X86_64, Arch::Arm64)] arch: Arch) {
        assert_eq!(arch.name().parse::<Arch>(), Ok(arch));
        assert_eq!(arch.debian().parse::<Arch>(), Ok(arch));
        assert_eq!(serde_json::to_string(&arch).unwrap(), format!("\"{arch}\""));
    }
}
