//! The CPU architecture a kernel line is built for: half of a report row's key (architecture,
//! kernel line), so an x86_64 `6.12` and an arm64 `6.12` are two rows.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A kernel's architecture, spelt as Debian and the manifest spell it (`x86_64` rather than
/// Debian's `amd64`, since the rest of the harness names the x86_64 musl target and QEMU binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub enum Arch {
    /// The default: every manifest entry without an `arch` field.
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

/// An architecture name the harness does not know, and the names it does.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown architecture `{name}` (known: {known})")]
pub struct UnknownArch {
    pub name: String,
    pub known: &'static str,
}

impl Arch {
    /// Every architecture, in the order report rows are sorted by.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The manifest's and the report's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// The architecture this harness runs on (the host row's), from the compiler's name for it.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Self::X86_64),
            "aarch64" => Some(Self::Arm64),
            _ => None,
        }
    }

    /// Whether the field holds the default, so a lock written today keeps its bytes.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = UnknownArch;

    /// Also takes the other common spellings (`amd64`, `aarch64`), as a user may type either.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(Self::X86_64),
            "arm64" | "aarch64" => Ok(Self::Arm64),
            other => Err(UnknownArch { name: other.to_owned(), known: "x86_64, arm64" }),
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
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            other => other.parse().map(Self::Only).map_err(|e| UnknownArch { known: "x86_64, arm64, all", ..e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("x86_64", ArchFilter::Only(Arch::X86_64))]
    #[case("amd64", ArchFilter::Only(Arch::X86_64))]
    #[case("arm64", ArchFilter::Only(Arch::Arm64))]
    #[case("aarch64", ArchFilter::Only(Arch::Arm64))]
    #[case("all", ArchFilter::All)]
    fn arch_filters_parse(#[case] text: &str, #[case] filter: ArchFilter) {
        assert_eq!(text.parse::<ArchFilter>(), Ok(filter));
    }

    #[test]
    fn an_unknown_arch_names_the_known_ones() {
        let err = "riscv64".parse::<ArchFilter>().unwrap_err().to_string();
        assert_eq!(err, "unknown architecture `riscv64` (known: x86_64, arm64, all)");
    }

    #[test]
    fn the_json_spelling_is_the_manifests() {
        assert_eq!(serde_json::to_string(&Arch::Arm64).unwrap(), "\"arm64\"");
        assert_eq!(serde_json::from_str::<Arch>("\"x86_64\"").unwrap(), Arch::X86_64);
    }
}
