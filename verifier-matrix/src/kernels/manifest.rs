//! The kernel manifest (`vm-images/kernels.toml`, what we want to test) and the lock
//! (`vm-images/kernels.lock`, exactly which package bytes that resolved to).
//!
//! The manifest names kernel *lines* and where they come from; the lock pins each line to one
//! package version and its sha256 so every run of the matrix boots the same bytes, and records
//! honestly why a line could not be resolved instead of silently dropping it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::arch::{default_arch, Arch};

/// Errors reading or writing the manifest or the lock.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("manifest {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("manifest {path}: kernel {line}: {problem}")]
    Invalid {
        path: PathBuf,
        line: String,
        problem: String,
    },
    #[error("lock {path}: {source}")]
    LockRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}: {source}")]
    LockParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("lock {path}: serialising: {source}")]
    LockSerialize {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    #[error("lock {path}: writing: {source}")]
    LockWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The parsed `kernels.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Directory containing the manifest; relative local paths are resolved against it.
    pub base_dir: PathBuf,
    pub kernels: Vec<KernelEntry>,
}

/// A kernel's name in reports: `6.1` on x86_64, `arm64/6.12` on arm64.
pub fn kernel_id(arch: Arch, line: &str) -> String {
    match arch {
        Arch::X86_64 => line.to_owned(),
        other => format!("{other}/{line}"),
    }
}

fn is_x86_64(arch: &Arch) -> bool {
    *arch == Arch::X86_64
}

/// The upstream version a kernel line names: `6.1` for both `6.1` and `6.1-rt`.
///
/// A line is `<major>.<minor>`, optionally followed by `-<flavour>` when one release series
/// ships builds that differ in what matters to the probes (Debian's `rt` flavour is built with
/// PREEMPT_RT, which changes `struct trace_entry` and what runs preemptible). A resolved
/// package's version must be in the version part; per-kernel snapshot variants are named by it
/// too, so `6.1-rt` meets the reasoned variants of `6.1`.
pub fn line_version(line: &str) -> &str {
    line.split_once('-').map_or(line, |(version, _)| version)
}

/// One kernel line the matrix knows about.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelEntry {
    /// The kernel line, e.g. `6.1` or `6.1-rt` ([`line_version`]); a resolved package's upstream
    /// version must start with its version part.
    pub line: String,
    /// The CPU architecture the line's kernel is built for; `x86_64` unless the entry says.
    pub arch: Arch,
    /// Whether the line is part of the default matrix run.
    pub default: bool,
    /// Free-form note carried into the lock's reasons (e.g. "not a Debian kernel").
    pub note: Option<String>,
    pub source: KernelSource,
}

/// Where a kernel line's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelSource {
    /// A package from the Debian archive, chosen as the newest version matching the patterns.
    Debian {
        suite: String,
        /// Glob (`*` only) over package names, e.g. `linux-image-*-cloud-amd64-unsigned`.
        image_package: String,
        /// Glob for a separate modules package (Debian 7.x splits image and modules).
        modules_package: Option<String>,
        /// Glob for a separate base package (Debian 7.x: `config`, `System.map`,
        /// `modules.builtin*` and `modules.order` live in `linux-base-<abi>`).
        base_package: Option<String>,
    },
    /// A kernel the user supplies, for lines Debian never shipped.
    Local {
        kernel_file: PathBuf,
        modules_dir: Option<PathBuf>,
    },
}

/// On-disk shape of a manifest entry; validated into [`KernelEntry`] so that a mixed-up
/// entry gets a message naming the line rather than a generic serde error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    line: String,
    #[serde(default = "default_arch")]
    arch: Arch,
    #[serde(default)]
    default: bool,
    note: Option<String>,
    suite: Option<String>,
    image_package: Option<String>,
    modules_package: Option<String>,
    base_package: Option<String>,
    kernel_file: Option<PathBuf>,
    modules_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default, rename = "kernel")]
    kernels: Vec<RawEntry>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, path, base_dir)
    }

    /// Parses manifest text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |line: &str, problem: &str| ManifestError::Invalid {
            path: path.to_path_buf(),
            line: line.to_owned(),
            problem: problem.to_owned(),
        };
        let mut kernels = Vec::with_capacity(raw.kernels.len());
        for e in raw.kernels {
            if kernels.iter().any(|k: &KernelEntry| k.line == e.line && k.arch == e.arch) {
                return Err(invalid(&e.line, &format!("listed twice for {}", e.arch)));
            }
            let version = line_version(&e.line);
            let flavour = e.line.strip_prefix(version).and_then(|f| f.strip_prefix('-'));
            let numeric = version.split('.').count() == 2 && version.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !numeric || flavour.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric())) {
                return Err(invalid(&e.line, "a line is <major>.<minor>, optionally -<flavour> (e.g. 6.1-rt)"));
            }
            let source = match (e.suite, e.image_package, e.kernel_file) {
                (Some(suite), Some(image_package), None) => {
                    if e.modules_dir.is_some() {
                        return Err(invalid(&e.line, "modules_dir only applies to kernel_file"));
                    }
                    KernelSource::Debian {
                        suite,
                        image_package,
                        modules_package: e.modules_package,
                        base_package: e.base_package,
                    }
                }
                (None, None, Some(kernel_file)) => {
                    if e.modules_package.is_some() || e.base_package.is_some() {
                        return Err(invalid(
                            &e.line,
                            "modules_package and base_package only apply to suite",
                        ));
                    }
                    KernelSource::Local {
                        kernel_file,
                        modules_dir: e.modules_dir,
                    }
                }
                _ => {
                    return Err(invalid(
                        &e.line,
                        "needs either suite + image_package, or kernel_file",
                    ))
                }
            };
            kernels.push(KernelEntry {
                line: e.line,
                arch: e.arch,
                default: e.default,
                note: e.note,
                source,
            });
        }
        Ok(Manifest { base_dir, kernels })
    }
}

/// The parsed `kernels.lock`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lock {
    /// Directory the lock lives in; local kernel paths are stored relative to it on disk and
    /// held resolved (joined with it) in memory.
    pub base_dir: PathBuf,
    pub kernels: Vec<LockedKernel>,
}

/// One line of the lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLocked", into = "RawLocked")]
pub struct LockedKernel {
    pub line: String,
    /// The CPU architecture of the pinned kernel (see [`LockedKernel::id`]).
    pub arch: Arch,
    pub default: bool,
    pub pin: Pin,
}

/// What a kernel line resolved to.
// One value per kernel line and never in a hot path: boxing the packages would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Pin {
    /// Exact Debian packages; `modules` is set when modules ship separately (7.x).
    Debian {
        suite: String,
        image: PinnedPackage,
        modules: Option<PinnedPackage>,
        /// The `linux-base-<abi>` package, set when the manifest asks for one (7.x).
        base: Option<PinnedPackage>,
    },
    /// A user-supplied kernel file that existed when the lock was written.
    Local {
        kernel_file: PathBuf,
        modules_dir: Option<PathBuf>,
    },
    /// The line cannot be tested here; the reason is shown in reports.
    Unavailable { reason: String },
}

/// One exact package from the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPackage {
    pub package: String,
    pub version: String,
    /// Path relative to the mirror base, e.g. `pool/main/l/linux/...deb`.
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl Pin {
    /// The archive packages to download, image first; empty for local and unavailable pins.
    pub fn packages(&self) -> Vec<&PinnedPackage> {
        match self {
            Pin::Debian {
                image,
                modules,
                base,
                ..
            } => std::iter::once(image).chain(modules).chain(base).collect(),
            _ => Vec::new(),
        }
    }
}

impl LockedKernel {
    /// The name of the line in reports and on the command line: the line itself for x86_64
    /// (so existing names and directories stay), `<arch>/<line>` for any other architecture.
    pub fn id(&self) -> String {
        kernel_id(self.arch, &self.line)
    }

    /// The reason the line cannot run, if it cannot.
    pub fn unavailable_reason(&self) -> Option<&str> {
        match &self.pin {
            Pin::Unavailable { reason } => Some(reason),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocked {
    line: String,
    #[serde(default = "default_arch", skip_serializing_if = "is_x86_64")]
    arch: Arch,
    default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    suite: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modules_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<PinnedPackage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modules: Option<PinnedPackage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<PinnedPackage>,
}

impl TryFrom<RawLocked> for LockedKernel {
    type Error = String;

    fn try_from(r: RawLocked) -> Result<Self, String> {
        let pin = match (r.unavailable, r.suite, r.image, r.kernel_file) {
            (Some(reason), None, None, None) => Pin::Unavailable { reason },
            (None, Some(suite), Some(image), None) => Pin::Debian {
                suite,
                image,
                modules: r.modules,
                base: r.base,
            },
            (None, None, None, Some(kernel_file)) => Pin::Local {
                kernel_file,
                modules_dir: r.modules_dir,
            },
            _ => {
                return Err(format!(
                    "kernel {}: needs exactly one of unavailable, suite + image, or kernel_file",
                    r.line
                ))
            }
        };
        Ok(LockedKernel {
            line: r.line,
            arch: r.arch,
            default: r.default,
            pin,
        })
    }
}

impl From<LockedKernel> for RawLocked {
    fn from(k: LockedKernel) -> Self {
        let mut raw = RawLocked {
            line: k.line,
            arch: k.arch,
            default: k.default,
            suite: None,
            unavailable: None,
            kernel_file: None,
            modules_dir: None,
            image: None,
            modules: None,
            base: None,
        };
        match k.pin {
            Pin::Debian {
                suite,
                image,
                modules,
                base,
            } => {
                raw.suite = Some(suite);
                raw.image = Some(image);
                raw.modules = modules;
                raw.base = base;
            }
            Pin::Local {
                kernel_file,
                modules_dir,
            } => {
                raw.kernel_file = Some(kernel_file);
                raw.modules_dir = modules_dir;
            }
            Pin::Unavailable { reason } => raw.unavailable = Some(reason),
        }
        raw
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    #[serde(default, rename = "kernel")]
    kernels: Vec<LockedKernel>,
}

const LOCK_HEADER: &str = "\
# Generated by `cargo xtask vm-images update` from kernels.toml; do not edit by hand.
# Filenames are relative to the Debian mirror configured in apt (or TAPIO_DEBIAN_MIRROR).
";

impl Lock {
    /// Reads a lock file, resolving local kernel paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::LockRead {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, path, base_dir)
    }

    /// Parses lock text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Self, ManifestError> {
        let raw: RawLock = toml::from_str(text).map_err(|source| ManifestError::LockParse {
            path: path.to_path_buf(),
            source,
        })?;
        let mut kernels = raw.kernels;
        for k in &mut kernels {
            map_local_paths(k, |p| base_dir.join(p));
        }
        Ok(Lock { base_dir, kernels })
    }

    /// Renders the lock as TOML, with local paths relative to `base_dir`.
    pub fn to_toml(&self, path: &Path) -> Result<String, ManifestError> {
        let mut kernels = self.kernels.clone();
        for k in &mut kernels {
            map_local_paths(k, |p| {
                p.strip_prefix(&self.base_dir)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| p.to_path_buf())
            });
        }
        let body = toml::to_string(&RawLock { kernels }).map_err(|source| {
            ManifestError::LockSerialize {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(format!("{LOCK_HEADER}\n{body}"))
    }

    /// Writes the lock atomically (temp file + rename) so an interrupted update never leaves
    /// a half-written lock behind.
    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        let text = self.to_toml(path)?;
        let write_err = |source| ManifestError::LockWrite {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(write_err)?;
        tmp.persist(path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Looks up a line by its [`LockedKernel::id`], e.g. `"6.1"` or `"arm64/6.12"`.
    pub fn get(&self, id: &str) -> Option<&LockedKernel> {
        self.kernels.iter().find(|k| k.id() == id)
    }
}

fn map_local_paths(k: &mut LockedKernel, f: impl Fn(&Path) -> PathBuf) {
    if let Pin::Local {
        kernel_file,
        modules_dir,
    } = &mut k.pin
    {
        *kernel_file = f(kernel_file);
        if let Some(m) = modules_dir {
            *m = f(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const MANIFEST: &str = r#"
[[kernel]]
line = "6.1"
default = true
suite = "bookworm"
image_package = "linux-image-*-cloud-amd64-unsigned"

[[kernel]]
line = "7.3"
default = true
suite = "trixie-backports"
image_package = "linux-binary-*-cloud-amd64"
modules_package = "linux-modules-*-cloud-amd64"

[[kernel]]
line = "5.4"
note = "not a Debian kernel"
kernel_file = "local/vmlinuz-5.4"
"#;

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST, Path::new("kernels.toml"), PathBuf::from("/vm")).unwrap()
    }

    #[test]
    fn manifest_sources_are_classified() {
        let m = manifest();
        assert_eq!(m.kernels.len(), 3);
        assert!(m.kernels[0].default);
        assert!(matches!(
            &m.kernels[1].source,
            KernelSource::Debian { modules_package: Some(p), .. } if p == "linux-modules-*-cloud-amd64"
        ));
        assert!(!m.kernels[2].default);
        assert!(matches!(
            &m.kernels[2].source,
            KernelSource::Local {
                modules_dir: None,
                ..
            }
        ));
    }

    #[test]
    fn one_line_per_architecture_named_by_its_id() {
        let text = "[[kernel]]\nline = \"6.12\"\nsuite = \"trixie\"\nimage_package = \"a\"\n\
                    [[kernel]]\nline = \"6.12\"\narch = \"arm64\"\nsuite = \"trixie\"\nimage_package = \"b\"\n";
        let m = Manifest::parse(text, Path::new("k.toml"), PathBuf::new()).unwrap();
        assert_eq!(m.kernels.iter().map(|k| k.arch).collect::<Vec<_>>(), [Arch::X86_64, Arch::Arm64]);
        let twice = text.replace("image_package = \"a\"\n", "image_package = \"a\"\narch = \"arm64\"\n");
        let err = Manifest::parse(&twice, Path::new("k.toml"), PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("listed twice for arm64"), "{err}");
        let bad = text.replace("\"arm64\"", "\"sparc\"");
        assert!(Manifest::parse(&bad, Path::new("k.toml"), PathBuf::new()).is_err());
    }

    #[test]
    fn lock_keeps_x86_entries_as_they_were_and_names_arm64_ones() {
        let pinned = |arch| LockedKernel {
            line: "6.12".into(),
            arch,
            default: true,
            pin: Pin::Unavailable { reason: "r".into() },
        };
        let lock = Lock { base_dir: PathBuf::from("/vm"), kernels: vec![pinned(Arch::X86_64), pinned(Arch::Arm64)] };
        let text = lock.to_toml(Path::new("/vm/kernels.lock")).unwrap();
        // An x86_64 entry is written without the key, so locks from before arm64 are unchanged.
        assert_eq!(text.matches("arch = ").count(), 1, "{text}");
        let back = Lock::parse(&text, Path::new("k.lock"), PathBuf::from("/vm")).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.get("6.12").unwrap().arch, Arch::X86_64);
        assert_eq!(back.get("arm64/6.12").unwrap().arch, Arch::Arm64);
        assert!(back.get("arm64/6.1").is_none());
    }

    #[test]
    fn manifest_rejects_mixed_sources_naming_the_line() {
        let text = "[[kernel]]\nline = \"6.6\"\nsuite = \"sid\"\nkernel_file = \"x\"\n";
        let err = Manifest::parse(text, Path::new("k.toml"), PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("kernel 6.6"), "{err}");
    }

    #[test]
    fn flavoured_lines_resolve_by_their_version() {
        let text = "[[kernel]]\nline = \"6.1-rt\"\nsuite = \"bookworm\"\nimage_package = \"linux-image-*-rt-amd64-unsigned\"\n";
        let m = Manifest::parse(text, Path::new("k.toml"), PathBuf::new()).unwrap();
        assert_eq!(m.kernels[0].line, "6.1-rt");
        assert_eq!(line_version(&m.kernels[0].line), "6.1");
        assert_eq!(line_version("6.12"), "6.12");
    }

    #[rstest]
    fn malformed_lines_are_rejected(#[values("rt", "6.1-", "6.1-r t", "6", "6.1.2", "6.1-rt-x")] bad: &str) {
        let text = format!("[[kernel]]\nline = \"{bad}\"\nsuite = \"s\"\nimage_package = \"p\"\n");
        assert!(Manifest::parse(&text, Path::new("k.toml"), PathBuf::new()).is_err(), "{bad} accepted");
    }

    #[test]
    fn manifest_rejects_unknown_keys() {
        let text = "[[kernel]]\nline = \"6.6\"\nsuit = \"sid\"\n";
        assert!(Manifest::parse(text, Path::new("k.toml"), PathBuf::new()).is_err());
    }

    #[test]
    fn lock_round_trips_with_relative_local_paths() {
        let pkg = PinnedPackage {
            package: "linux-binary-7.3.4+deb13-cloud-amd64".into(),
            version: "7.3.4-1~bpo13+1".into(),
            filename: "pool/main/l/x.deb".into(),
            sha256: "ab".repeat(32),
            size: 42,
        };
        let lock = Lock {
            base_dir: PathBuf::from("/vm"),
            kernels: vec![
                LockedKernel {
                    line: "7.3".into(),
                    arch: Arch::X86_64,
                    default: true,
                    pin: Pin::Debian {
                        suite: "trixie-backports".into(),
                        image: pkg.clone(),
                        modules: Some(pkg.clone()),
                        base: Some(pkg),
                    },
                },
                LockedKernel {
                    line: "5.4".into(),
                    arch: Arch::X86_64,
                    default: false,
                    pin: Pin::Local {
                        kernel_file: PathBuf::from("/vm/local/vmlinuz-5.4"),
                        modules_dir: None,
                    },
                },
                LockedKernel {
                    line: "4.19".into(),
                    arch: Arch::X86_64,
                    default: false,
                    pin: Pin::Unavailable {
                        reason: "suite buster not served".into(),
                    },
                },
            ],
        };
        let text = lock.to_toml(Path::new("kernels.lock")).unwrap();
        assert!(
            text.contains("kernel_file = \"local/vmlinuz-5.4\""),
            "{text}"
        );
        let back = Lock::parse(&text, Path::new("kernels.lock"), PathBuf::from("/vm")).unwrap();
        assert_eq!(back, lock);
        assert_eq!(
            back.get("4.19").unwrap().unavailable_reason(),
            Some("suite buster not served")
        );
    }

    #[test]
    fn lock_entry_with_two_sources_is_rejected() {
        let text = "[[kernel]]\nline = \"6.1\"\ndefault = true\nunavailable = \"x\"\nkernel_file = \"y\"\n";
        let err = Lock::parse(text, Path::new("kernels.lock"), PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("kernel 6.1"), "{err}");
    }
}
