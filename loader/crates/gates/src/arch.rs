//! The CPU architectures tapio builds probes for and the matrix boots: the one [`Arch`] type.
//!
//! Every crate that names an architecture uses this type: the bundle (which objects are built
//! for which architecture), the object tools (an object's architecture note), the skip judge
//! ([`crate::ARCH_SINCE`]), the agent's `--arch`, and the harness (manifests, lock, report). It
//! lives here because this crate depends on nothing of ours, so each of them may import it. What
//! only one of them needs (the harness's QEMU binary and Debian name, the build's
//! `-D__TARGET_ARCH_*`) stays with that one.
//!
//! Its names are `x86_64` and `arm64`, everywhere it is written: serde (kernels.toml, the lock,
//! report.json), [`fmt::Display`], and the objects' ELF note. [`FromStr`] also takes the other
//! names each architecture goes by, so a user may write what their tools print.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A CPU architecture: x86-64 or 64-bit Arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64: Rust's and `uname -m`'s `x86_64`, Debian's and Kubernetes' `amd64`.
    X86_64,
    /// 64-bit Arm: Debian's and Kubernetes' `arm64`, Rust's and `uname -m`'s `aarch64`.
    Arm64,
}

impl Arch {
    /// Every architecture, in report order (x86_64 first).
    pub const ALL: [Self; 2] = [Self::X86_64, Self::Arm64];

    /// The architecture this code is compiled for. Defined only on the architectures above, so a
    /// crate that names it (the bundle, whose objects are this architecture's) builds nowhere
    /// else; [`Arch::this`] is the form for code that must build anywhere.
    #[cfg(target_arch = "x86_64")]
    pub const TARGET: Self = Self::X86_64;
    /// The architecture this code is compiled for (see the x86_64 definition).
    #[cfg(target_arch = "aarch64")]
    pub const TARGET: Self = Self::Arm64;

    /// The architecture this code runs on, `None` on any other: a static agent runs on the kernel
    /// of its own target.
    pub fn this() -> Option<Self> {
        std::env::consts::ARCH.parse().ok()
    }

    /// Its name in manifests, reports, on the command line and in the objects' note:
    /// `x86_64`, `arm64`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no architecture of [`Arch::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
        write!(f, "unknown architecture {:?} (known: {})", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// Its name, or another name it goes by, in any case and with surrounding blanks:
    /// `x86_64`, `amd64` (Debian, Kubernetes), `x86-64`, `x86` (libbpf's `__TARGET_ARCH_x86`);
    /// `arm64`, `aarch64` (Rust, `uname -m`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x86-64" | "x86" => Ok(Self::X86_64),
            "arm64" | "aarch64" => Ok(Self::Arm64),
            _ => Err(UnknownArch(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("x86_64", Arch::X86_64)]
    #[case("amd64", Arch::X86_64)]
    #[case("x86-64", Arch::X86_64)]
    #[case("x86", Arch::X86_64)]
    #[case("arm64", Arch::Arm64)]
    #[case("aarch64", Arch::Arm64)]
    #[case(" AArch64 ", Arch::Arm64)]
    fn parses_every_spelling(#[case] text: &str, #[case] want: Arch) {
        assert_eq!(text.parse::<Arch>(), Ok(want));
    }

    #[rstest]
    #[case("riscv64")]
    #[case("")]
    #[case("arm")]
    fn unknown_names_are_refused_with_the_choices(#[case] text: &str) {
        let e = text.parse::<Arch>().unwrap_err();
        assert_eq!(e.to_string(), format!("unknown architecture {text:?} (known: x86_64, arm64)"));
    }

    /// One name everywhere: Display, serde, and parsing it back.
    #[rstest]
    fn the_name_round_trips(#[values(Arch::X86_64, Arch::Arm64)] arch: Arch) {
        assert_eq!(arch.to_string(), arch.name());
        assert_eq!(arch.name().parse::<Arch>(), Ok(arch));
        let json = serde_json::to_string(&arch).unwrap();
        assert_eq!(json, format!("\"{}\"", arch.name()));
        assert_eq!(serde_json::from_str::<Arch>(&json).unwrap(), arch);
    }

    /// serde takes only the name, as kernels.toml, the lock and report.json have always held it.
    #[rstest]
    #[case("\"amd64\"")]
    #[case("\"aarch64\"")]
    #[case("\"X86_64\"")]
    fn serde_takes_only_the_name(#[case] json: &str) {
        assert!(serde_json::from_str::<Arch>(json).is_err(), "{json}");
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn this_is_the_target() {
        assert_eq!(Arch::this(), Some(Arch::TARGET));
        assert_eq!(Arch::ALL.map(Arch::name), ["x86_64", "arm64"]);
    }
}
