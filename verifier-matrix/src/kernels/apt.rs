//! Finds the Debian mirror this machine already uses.
//!
//! The harness never hard-codes a mirror: whatever apt on this host is configured to use
//! (which may be a local proxy or a snapshot) is what the kernels are fetched from. The
//! `TAPIO_DEBIAN_MIRROR` environment variable overrides the discovery.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::debug;

/// Environment variable that replaces mirror discovery entirely.
pub const MIRROR_ENV: &str = "TAPIO_DEBIAN_MIRROR";

/// Why no mirror could be determined.
#[derive(Debug, Error)]
pub enum AptError {
    #[error("apt sources: reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "apt sources: no main Debian archive (a URI ending in /debian) found under {root}; set {MIRROR_ENV}"
    )]
    NoMainArchive { root: PathBuf },
}

/// One `deb` source: a repository base URI and the suites it is used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
}

/// Returns the mirror base URL (no trailing slash), honouring `TAPIO_DEBIAN_MIRROR` first.
pub fn discover_mirror() -> Result<String, AptError> {
    if let Ok(value) = std::env::var(MIRROR_ENV) {
        let value = value.trim();
        if !value.is_empty() {
            debug!(mirror = value, "debian mirror taken from {MIRROR_ENV}");
            return Ok(value.trim_end_matches('/').to_owned());
        }
    }
    discover_mirror_in(Path::new("/etc/apt"))
}

/// Discovers the main-archive mirror from an apt configuration directory (normally `/etc/apt`),
/// reading `sources.list` first and then `sources.list.d/` in name order, as apt does.
pub fn discover_mirror_in(apt_dir: &Path) -> Result<String, AptError> {
    let sources = read_sources(apt_dir)?;
    let mirror = pick_main_archive(&sources).ok_or_else(|| AptError::NoMainArchive {
        root: apt_dir.to_path_buf(),
    })?;
    debug!(mirror = %mirror, "debian mirror discovered from apt sources");
    Ok(mirror)
}

/// Reads every enabled `deb` source under an apt configuration directory.
pub fn read_sources(apt_dir: &Path) -> Result<Vec<AptSource>, AptError> {
    let mut sources = Vec::new();
    let one_line = apt_dir.join("sources.list");
    if let Some(text) = read_optional(&one_line)? {
        sources.extend(parse_one_line(&text));
    }
    let dir = apt_dir.join("sources.list.d");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(AptError::Read { path: dir, source }),
    };
    files.sort();
    for path in files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parse: fn(&str) -> Vec<AptSource> = match ext {
            "list" => parse_one_line,
            "sources" => parse_deb822,
            // apt ignores anything else (e.g. `*.disabled`), and so do we.
            _ => continue,
        };
        if let Some(text) = read_optional(&path)? {
            sources.extend(parse(&text));
        }
    }
    Ok(sources)
}

fn read_optional(path: &Path) -> Result<Option<String>, AptError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AptError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses the classic one-line format: `deb [options] URI suite component...`.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        // `deb-src` lines and anything that merely starts with "deb" are not binary sources.
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut fields = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (fields.next(), fields.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_owned(),
            suites: vec![suite.to_owned()],
        });
    }
    out
}

/// Parses the deb822 format used by `*.sources` files: blank-line separated stanzas with
/// `Types:`, `URIs:`, `Suites:` and optionally `Enabled:` fields.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let flush = |stanza: &mut Vec<(String, String)>, out: &mut Vec<AptSource>| {
        let get = |key: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let is_deb = get("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if is_deb && enabled {
            let suites: Vec<String> = get("Suites")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            for uri in get("URIs").unwrap_or("").split_whitespace() {
                out.push(AptSource {
                    uri: uri.to_owned(),
                    suites: suites.clone(),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza, &mut out);
            continue;
        }
        // Continuation lines (embedded keys in Signed-By) carry nothing we need.
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            stanza.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    flush(&mut stanza, &mut out);
    out
}

/// Picks the first source serving the main archive: its URI path ends in `/debian`
/// (so `debian-security`, `debian-ports` and third-party repositories are skipped).
pub fn pick_main_archive(sources: &[AptSource]) -> Option<String> {
    sources.iter().find_map(|s| {
        let uri = s.uri.trim_end_matches('/');
        let scheme_ok = uri.starts_with("http://") || uri.starts_with("https://");
        (scheme_ok && uri.ends_with("/debian")).then(|| uri.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn deb822_stanzas_are_parsed() {
        let sources = parse_deb822(DEB822);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].uri, "http://mirror.example/debian");
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(sources[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn deb822_skips_disabled_and_source_only_stanzas() {
        let text = "\
Types: deb-src
URIs: http://src.example/debian
Suites: sid

Types: deb
URIs: http://off.example/debian
Suites: sid
Enabled: no
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb deb-src
URIs: http://on.example/debian/
Suites: trixie
";
        let sources = parse_deb822(text);
        assert_eq!(
            pick_main_archive(&sources).as_deref(),
            Some("http://on.example/debian")
        );
    }

    #[test]
    fn security_archive_is_not_the_main_archive() {
        let sources = parse_deb822(DEB822.split("\n\n").nth(1).unwrap());
        assert_eq!(pick_main_archive(&sources), None);
    }

    #[test]
    fn one_line_format_with_options_and_comments() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main # trailing
deb http://mirror.example/debian-security bookworm-security main
";
        let sources = parse_one_line(text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].suites, ["bookworm"]);
        assert_eq!(
            pick_main_archive(&sources).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn discovery_reads_list_then_sources_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/other.list.disabled"),
            "deb http://disabled.example/debian sid main\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        assert_eq!(
            discover_mirror_in(dir.path()).unwrap(),
            "http://mirror.example/debian"
        );
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://first.example/debian bullseye main\n",
        )
        .unwrap();
        assert_eq!(
            discover_mirror_in(dir.path()).unwrap(),
            "http://first.example/debian"
        );
    }

    #[test]
    fn discovery_without_a_main_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = discover_mirror_in(dir.path()).unwrap_err();
        assert!(matches!(err, AptError::NoMainArchive { .. }), "{err}");
    }
}
