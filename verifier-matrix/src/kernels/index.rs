//! Reads Debian archive indices (`Packages` files) and resolves the manifest into a lock.
//!
//! Kernel package names embed the ABI (`linux-image-6.1.0-28-cloud-amd64-unsigned`), so a
//! line is described by a glob and the newest match wins. "Newest" must follow dpkg's version
//! ordering, not string ordering: `6.1.0-9` < `6.1.0-28` and `1.0~rc1` < `1.0`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Read;

use thiserror::Error;
use tracing::{debug, info, warn};

use crate::arch::{Arch, ArchExt as _};
use crate::kernels::manifest::{
    KernelEntry, KernelSource, Lock, LockedKernel, Manifest, Pin, PinnedPackage,
};

/// Errors fetching or reading an archive index.
#[derive(Debug, Error)]
pub enum IndexError {
    /// The mirror answered but does not carry this suite (e.g. an archived release).
    #[error("index {suite}: suite not served by the mirror (HTTP {status})")]
    SuiteNotServed { suite: String, status: u16 },
    #[error("index {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("index {url}: reading or decompressing: {source}")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// The fields of one `Packages` stanza the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub package: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

impl IndexEntry {
    fn pin(&self) -> PinnedPackage {
        PinnedPackage {
            package: self.package.clone(),
            version: self.version.clone(),
            filename: self.filename.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

/// Parses a `Packages` file. Stanzas lacking any needed field (or with a bad `Size`) are
/// skipped: they cannot be downloaded and verified anyway.
pub fn parse_packages(text: &str) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut package, mut version, mut filename, mut sha256, mut size) =
            (None, None, None, None, None);
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => package = Some(value),
                "Version" => version = Some(value),
                "Filename" => filename = Some(value),
                "SHA256" => sha256 = Some(value),
                "Size" => size = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(p), Some(v), Some(f), Some(h), Some(s)) =
            (package, version, filename, sha256, size)
        {
            out.push(IndexEntry {
                package: p.to_owned(),
                version: v.to_owned(),
                filename: f.to_owned(),
                sha256: h.to_ascii_lowercase(),
                size: s,
            });
        }
    }
    out
}

/// Downloads and parses `dists/<suite>/main/binary-<arch>/Packages.xz`, falling back to `.gz`.
pub fn fetch_index(mirror: &str, suite: &str, arch: Arch) -> Result<Vec<IndexEntry>, IndexError> {
    let agent = crate::artifacts::fetch::http_agent();
    let base = format!(
        "{}/dists/{suite}/main/binary-{}/Packages",
        mirror.trim_end_matches('/'),
        arch.debian()
    );
    let mut not_found = None;
    for ext in ["xz", "gz"] {
        let url = format!("{base}.{ext}");
        debug!(%url, "fetching package index");
        let response = match agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status @ (403 | 404 | 410), _)) => {
                not_found = Some(status);
                continue;
            }
            Err(source) => {
                return Err(IndexError::Http {
                    url,
                    source: Box::new(source),
                })
            }
        };
        let reader = response.into_reader();
        let mut decoder: Box<dyn Read> = match ext {
            "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
            _ => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        };
        let mut text = String::new();
        decoder
            .read_to_string(&mut text)
            .map_err(|source| IndexError::Read {
                url: url.clone(),
                source,
            })?;
        let entries = parse_packages(&text);
        info!(suite, packages = entries.len(), "package index loaded");
        return Ok(entries);
    }
    Err(IndexError::SuiteNotServed {
        suite: suite.to_owned(),
        status: not_found.unwrap_or(404),
    })
}

/// Matches `name` against a glob where `*` matches any (possibly empty) run of characters,
/// returning what each `*` matched (leftmost-shortest), or `None` when it does not match.
pub fn glob_captures<'a>(pattern: &str, name: &'a str) -> Option<Vec<&'a str>> {
    fn go<'a>(parts: &[&str], name: &'a str, caps: &mut Vec<&'a str>) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return name.is_empty();
        };
        if rest.is_empty() {
            // Last literal must match the whole remainder.
            return name == *first;
        }
        // Literal `first` is followed by a `*`.
        let Some(after) = name.strip_prefix(first) else {
            return false;
        };
        for split in (0..=after.len()).filter(|&i| after.is_char_boundary(i)) {
            caps.push(&after[..split]);
            if go(rest, &after[split..], caps) {
                return true;
            }
            caps.pop();
        }
        false
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut caps = Vec::new();
    go(&parts, name, &mut caps).then_some(caps)
}

/// Whether `name` matches the `*`-glob `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob_captures(pattern, name).is_some()
}

/// A Debian version split into its dpkg parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebVersion<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

impl<'a> DebVersion<'a> {
    /// Splits `[epoch:]upstream[-revision]`; the revision is after the *last* hyphen.
    pub fn parse(v: &'a str) -> Self {
        let v = v.trim();
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().unwrap_or(0), rest)
            }
            _ => (0, v),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        DebVersion {
            epoch,
            upstream,
            revision,
        }
    }
}

impl Ord for DebVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream, other.upstream))
            .then_with(|| verrevcmp(self.revision, other.revision))
    }
}

impl PartialOrd for DebVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two Debian version strings the way dpkg does.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    DebVersion::parse(a).cmp(&DebVersion::parse(b))
}

/// dpkg's character weight in a non-digit run: `~` sorts before everything (even the end of
/// the string), letters before other punctuation.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (compared by [`weight`]) and digit runs
/// (compared numerically).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Whether a package version belongs to a kernel line: `6.1.176-1` is line `6.1`, `6.12.5-1`
/// is not.
pub fn version_in_line(version: &str, line: &str) -> bool {
    let upstream = DebVersion::parse(version).upstream;
    upstream
        .strip_prefix(line)
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// A package chosen for a line, with the ABI string its glob `*` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub entry: &'a IndexEntry,
    pub abi: &'a str,
}

/// Picks the newest package matching `pattern` whose version is in `line`.
///
/// Only names where the first `*` matched something starting with a digit count: that is a
/// real, ABI-versioned kernel (`6.1.0-28`), not a meta package or a `-unsigned`/`-dbg`
/// variant that happens to fit the glob.
pub fn resolve<'a>(index: &'a [IndexEntry], pattern: &str, line: &str) -> Option<Resolved<'a>> {
    index
        .iter()
        .filter_map(|e| {
            let caps = glob_captures(pattern, &e.package)?;
            let abi = *caps.first()?;
            (abi.starts_with(|c: char| c.is_ascii_digit()) && version_in_line(&e.version, line))
                .then_some(Resolved { entry: e, abi })
        })
        .max_by(|a, b| {
            compare_versions(&a.entry.version, &b.entry.version)
                .then_with(|| b.entry.package.cmp(&a.entry.package))
        })
}

/// Finds the modules package belonging to an image: same ABI and same version.
pub fn resolve_companion<'a>(
    index: &'a [IndexEntry],
    pattern: &str,
    image: &Resolved<'_>,
) -> Option<&'a IndexEntry> {
    index.iter().find(|e| {
        e.version == image.entry.version
            && glob_captures(pattern, &e.package).is_some_and(|c| c.first() == Some(&image.abi))
    })
}

/// Resolves every manifest line against the mirror into a fresh lock.
///
/// A suite the mirror does not serve, or a glob with no match, makes that line
/// `unavailable` with the reason; any other network failure aborts, so a flaky connection
/// never rewrites good pins as unavailable.
pub fn update_lock(manifest: &Manifest, mirror: &str) -> Result<Lock, IndexError> {
    // One index per (suite, architecture): each is tens of MB uncompressed.
    let mut indices: HashMap<(String, Arch), Result<Vec<IndexEntry>, u16>> = HashMap::new();
    let mut kernels = Vec::with_capacity(manifest.kernels.len());
    for entry in &manifest.kernels {
        let pin = match &entry.source {
            KernelSource::Debian {
                suite,
                image_package,
                modules_package,
                base_package,
            } => {
                let key = (suite.clone(), entry.arch);
                if !indices.contains_key(&key) {
                    let loaded = match fetch_index(mirror, suite, entry.arch) {
                        Ok(index) => Ok(index),
                        Err(IndexError::SuiteNotServed { status, .. }) => Err(status),
                        Err(e) => return Err(e),
                    };
                    indices.insert(key.clone(), loaded);
                }
                match &indices[&key] {
                    Err(status) => Pin::Unavailable {
                        reason: format!(
                            "suite {suite} not served by the configured mirror (HTTP {status})"
                        ),
                    },
                    Ok(index) => {
                        let companions = [modules_package.as_deref(), base_package.as_deref()];
                        resolve_debian(entry, suite, image_package, companions, index)
                    }
                }
            }
            KernelSource::Local {
                kernel_file,
                modules_dir,
            } => {
                let file = manifest.base_dir.join(kernel_file);
                if file.is_file() {
                    Pin::Local {
                        kernel_file: file,
                        modules_dir: modules_dir.as_ref().map(|m| manifest.base_dir.join(m)),
                    }
                } else {
                    let missing = format!("kernel_file {} not present", kernel_file.display());
                    Pin::Unavailable {
                        reason: match &entry.note {
                            Some(note) => format!("{note}; {missing}"),
                            None => missing,
                        },
                    }
                }
            }
        };
        match &pin {
            Pin::Unavailable { reason } => warn!(line = %entry.line, arch = %entry.arch, %reason, "kernel unavailable"),
            Pin::Debian { image, .. } => {
                info!(line = %entry.line, arch = %entry.arch, package = %image.package, version = %image.version, "kernel pinned")
            }
            Pin::Local { kernel_file, .. } => {
                info!(line = %entry.line, file = %kernel_file.display(), "local kernel")
            }
        }
        kernels.push(LockedKernel {
            line: entry.line.clone(),
            arch: entry.arch,
            default: entry.default,
            pin,
        });
    }
    Ok(Lock {
        base_dir: manifest.base_dir.clone(),
        kernels,
    })
}

fn resolve_debian(
    entry: &KernelEntry,
    suite: &str,
    image_pattern: &str,
    [modules_pattern, base_pattern]: [Option<&str>; 2],
    index: &[IndexEntry],
) -> Pin {
    let Some(image) = resolve(index, image_pattern, crate::kernels::manifest::line_version(&entry.line)) else {
        return Pin::Unavailable {
            reason: format!(
                "no package matching {image_pattern} with version {}.* in {suite}",
                entry.line
            ),
        };
    };
    let companion = |pattern: Option<&str>| match pattern {
        None => Ok(None),
        Some(pattern) => match resolve_companion(index, pattern, &image) {
            Some(m) => Ok(Some(m.pin())),
            None => Err(format!(
                "no package matching {pattern} for {} {} in {suite}",
                image.entry.package, image.entry.version
            )),
        },
    };
    let (modules, base) = match (companion(modules_pattern), companion(base_pattern)) {
        (Ok(modules), Ok(base)) => (modules, base),
        (Err(reason), _) | (_, Err(reason)) => return Pin::Unavailable { reason },
    };
    Pin::Debian {
        suite: suite.to_owned(),
        image: image.entry.pin(),
        modules,
        base,
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("6.1.0-28", "6.1.0-9", Ordering::Greater)]
    #[case("1.0~rc1", "1.0", Ordering::Less)]
    #[case("1.0~rc1", "1.0~rc2", Ordering::Less)]
    #[case("1.0~~", "1.0~", Ordering::Less)]
    #[case("1.0", "1.0a", Ordering::Less)]
    #[case("1.0a", "1.0+", Ordering::Less)]
    #[case("1:1.0", "2.0", Ordering::Greater)]
    #[case("1.0-1", "1.0-1", Ordering::Equal)]
    #[case("1.00", "1.0", Ordering::Equal)]
    #[case("6.1.176-1", "6.1.170-3", Ordering::Greater)]
    #[case("7.3.4-1~bpo13+1", "7.3.4-1", Ordering::Less)]
    #[case("7.2.12-1~bpo13+1", "7.2.9-1~bpo13+1", Ordering::Greater)]
    #[case("1.0", "1.0-0", Ordering::Equal)]
    #[case("2.30-1", "2.3-1", Ordering::Greater)]
    fn dpkg_version_ordering(#[case] a: &str, #[case] b: &str, #[case] want: Ordering) {
        assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
    }

    #[test]
    fn version_parts() {
        let v = DebVersion::parse("2:1.2-3-4");
        assert_eq!((v.epoch, v.upstream, v.revision), (2, "1.2-3", "4"));
        let v = DebVersion::parse("1.2");
        assert_eq!((v.epoch, v.upstream, v.revision), (0, "1.2", ""));
    }

    #[test]
    fn globs() {
        assert_eq!(
            glob_captures(
                "linux-image-*-cloud-amd64-unsigned",
                "linux-image-6.1.0-28-cloud-amd64-unsigned"
            ),
            Some(vec!["6.1.0-28"])
        );
        assert!(!glob_match(
            "linux-image-*-cloud-amd64",
            "linux-image-cloud-amd64"
        ));
        assert!(!glob_match(
            "linux-image-*-cloud-amd64",
            "linux-image-6.1.0-28-cloud-amd64-dbg"
        ));
        assert!(glob_match("linux-*", "linux-"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn line_membership() {
        assert!(version_in_line("6.1.176-1", "6.1"));
        assert!(!version_in_line("6.12.57-1", "6.1"));
        assert!(version_in_line("7.3.4-1~bpo13+1", "7.3"));
        assert!(version_in_line("7.3~rc1-1", "7.3"));
    }

    fn stanza(package: &str, version: &str) -> String {
        format!(
            "Package: {package}\nSource: linux\nVersion: {version}\nDescription: x\n multi-line\n .\nFilename: pool/main/l/linux/{package}_{version}_amd64.deb\nSize: 1000\nSHA256: {}\n",
            "AB".repeat(32)
        )
    }

    fn sample_index() -> Vec<IndexEntry> {
        let text = [
            stanza("linux-image-6.1.0-9-cloud-amd64-unsigned", "6.1.27-1"),
            stanza("linux-image-6.1.0-28-cloud-amd64-unsigned", "6.1.119-1"),
            stanza("linux-image-6.1.0-28-cloud-amd64-dbg", "6.1.119-1"),
            stanza("linux-image-cloud-amd64", "6.1.119-1"),
            stanza("linux-binary-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1"),
            stanza(
                "linux-binary-unsigned-7.3.4+deb13-cloud-amd64",
                "7.3.4-1~bpo13+1",
            ),
            stanza("linux-binary-7.2.9+deb13-cloud-amd64", "7.2.9-1~bpo13+1"),
            stanza("linux-modules-7.2.9+deb13-cloud-amd64", "7.2.9-1~bpo13+1"),
            stanza("linux-modules-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1"),
            stanza("linux-modules-7.3.4+deb13-rt-amd64", "7.3.4-1~bpo13+1"),
            stanza("linux-modules-cloud-amd64", "7.3.4-1~bpo13+1"),
            "Package: broken\nVersion: 1\n".to_owned(),
        ]
        .join("\n");
        parse_packages(&text)
    }

    #[test]
    fn packages_parsing_skips_incomplete_stanzas() {
        let index = sample_index();
        assert_eq!(index.len(), 11);
        assert_eq!(index[0].size, 1000);
        assert_eq!(index[0].sha256, "ab".repeat(32));
        assert!(index[0].filename.starts_with("pool/main/l/linux/"));
    }

    #[test]
    fn resolve_prefers_newest_versioned_package() {
        let index = sample_index();
        let r = resolve(&index, "linux-image-*-cloud-amd64-unsigned", "6.1").unwrap();
        assert_eq!(r.entry.package, "linux-image-6.1.0-28-cloud-amd64-unsigned");
        assert_eq!(r.abi, "6.1.0-28");
        assert!(resolve(&index, "linux-image-*-cloud-amd64-unsigned", "6.12").is_none());
    }

    #[test]
    fn resolve_split_image_and_modules() {
        let index = sample_index();
        let image = resolve(&index, "linux-binary-*-cloud-amd64", "7.3").unwrap();
        assert_eq!(image.entry.package, "linux-binary-7.3.4+deb13-cloud-amd64");
        let modules = resolve_companion(&index, "linux-modules-*-cloud-amd64", &image).unwrap();
        assert_eq!(modules.package, "linux-modules-7.3.4+deb13-cloud-amd64");
        let older = resolve(&index, "linux-binary-*-cloud-amd64", "7.2").unwrap();
        assert_eq!(older.entry.version, "7.2.9-1~bpo13+1");
    }

    #[test]
    fn unmatched_pattern_is_unavailable_with_reason() {
        let m = Manifest::parse(
            "[[kernel]]\nline = \"6.6\"\nsuite = \"sid\"\nimage_package = \"linux-image-*-cloud-amd64-unsigned\"\n",
            std::path::Path::new("k.toml"),
            Default::default(),
        )
        .unwrap();
        let KernelSource::Debian {
            suite,
            image_package,
            ..
        } = &m.kernels[0].source
        else {
            unreachable!()
        };
        let pin = resolve_debian(
            &m.kernels[0],
            suite,
            image_package,
            [None, None],
            &sample_index(),
        );
        assert_eq!(
            pin,
            Pin::Unavailable {
                reason: "no package matching linux-image-*-cloud-amd64-unsigned with version 6.6.* in sid".into()
            }
        );
    }

    /// Re-resolves `vm-images/kernels.toml` against this machine's mirror and rewrites
    /// `vm-images/kernels.lock`. Ignored because it needs the network; run with
    /// `cargo test -p verifier-matrix --lib refresh_lock -- --ignored`.
    #[test]
    #[ignore = "network: rewrites vm-images/kernels.lock from the configured mirror"]
    fn refresh_lock() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-images");
        let manifest = Manifest::load(&dir.join("kernels.toml")).unwrap();
        let mirror = crate::kernels::apt::discover_mirror().unwrap();
        let lock = update_lock(&manifest, &mirror).unwrap();
        lock.write(&dir.join("kernels.lock")).unwrap();
    }
}
