//! Extracts the kernel-relevant parts of a `.deb` in pure Rust.
//!
//! A `.deb` is an `ar` archive whose `data.tar[.xz|.zst|.gz]` member holds the files. Only
//! `boot/` (vmlinuz, config, System.map) and the module tree are needed to boot a kernel, so
//! everything else is skipped. Newer Debian ships modules under `usr/lib/modules/`; those are
//! normalised to `lib/modules/` so callers see a single layout.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;
use tracing::debug;

/// Errors extracting a `.deb`.
#[derive(Debug, Error)]
pub enum DebError {
    #[error("deb {path}: opening: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("deb {path}: not a valid ar archive: {source}")]
    NotAr {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("deb {path}: no data.tar member")]
    NoData { path: PathBuf },
    #[error("deb {path}: unsupported data member compression {member}")]
    UnsupportedCompression { path: PathBuf, member: String },
    #[error("deb {path}: corrupt {member}: {source}")]
    CorruptData {
        path: PathBuf,
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error("deb {path}: unsafe entry path {entry} in {member}")]
    UnsafePath {
        path: PathBuf,
        member: String,
        entry: String,
    },
    #[error("deb {path}: writing {target}: {source}")]
    Write {
        path: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Summary of what an extraction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Number of regular files written.
    pub files: usize,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Unpacks `boot/` and `lib/modules/` (also `usr/lib/modules/`, normalised) from `deb` into
/// `dest`, which is created if needed. Symlinks and device nodes are skipped: the module
/// tree's `build`/`source` links point into the build host and nothing here needs them.
pub fn extract_kernel_parts(deb: &Path, dest: &Path) -> Result<Extracted, DebError> {
    let file = std::fs::File::open(deb).map_err(|source| DebError::Open {
        path: deb.to_path_buf(),
        source,
    })?;
    let mut archive = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(member) = archive.next_entry() {
        let member = member.map_err(|source| DebError::NotAr {
            path: deb.to_path_buf(),
            source,
        })?;
        let name = String::from_utf8_lossy(member.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        if !name.starts_with("data.tar") {
            continue;
        }
        let reader: Box<dyn Read + '_> = match name.as_str() {
            "data.tar" => Box::new(member),
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(member)),
            "data.tar.gz" => Box::new(flate2::read::MultiGzDecoder::new(member)),
            "data.tar.zst" => {
                Box::new(zstd::stream::read::Decoder::new(member).map_err(|source| {
                    DebError::CorruptData {
                        path: deb.to_path_buf(),
                        member: name.clone(),
                        source,
                    }
                })?)
            }
            _ => {
                return Err(DebError::UnsupportedCompression {
                    path: deb.to_path_buf(),
                    member: name,
                })
            }
        };
        return unpack_tar(deb, &name, reader, dest);
    }
    Err(DebError::NoData {
        path: deb.to_path_buf(),
    })
}

/// Maps an archive path to where it belongs under the destination, or `None` to skip it.
/// `Err(())` marks a path that tries to escape (`..`, absolute).
fn kept_path(raw: &Path) -> Result<Option<PathBuf>, ()> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    let rel: PathBuf = parts.iter().collect();
    let rel = match rel.strip_prefix("usr") {
        Ok(under_usr) if under_usr.starts_with("lib/modules") => under_usr.to_path_buf(),
        _ => rel,
    };
    Ok((rel.starts_with("boot") || rel.starts_with("lib/modules")).then_some(rel))
}

fn unpack_tar(
    deb: &Path,
    member: &str,
    reader: impl Read,
    dest: &Path,
) -> Result<Extracted, DebError> {
    let corrupt = |source| DebError::CorruptData {
        path: deb.to_path_buf(),
        member: member.to_owned(),
        source,
    };
    let write_err = |target: &Path, source| DebError::Write {
        path: deb.to_path_buf(),
        target: target.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(|e| write_err(dest, e))?;
    let mut tar = tar::Archive::new(reader);
    let mut stats = Extracted::default();
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let rel = match kept_path(&raw) {
            Ok(Some(rel)) => rel,
            Ok(None) => continue,
            Err(()) => {
                return Err(DebError::UnsafePath {
                    path: deb.to_path_buf(),
                    member: member.to_owned(),
                    entry: raw.display().to_string(),
                })
            }
        };
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(|e| write_err(&target, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
                }
                let mut out = std::fs::File::create(&target).map_err(|e| write_err(&target, e))?;
                // A short read here means the compressed stream or tar is damaged.
                stats.bytes += std::io::copy(&mut entry, &mut out).map_err(corrupt)?;
                stats.files += 1;
            }
            other => debug!(entry = %raw.display(), kind = ?other, "skipping non-file entry"),
        }
    }
    debug!(deb = %deb.display(), files = stats.files, bytes = stats.bytes, "extracted");
    Ok(stats)
}

#[cfg(test)]
pub(crate) mod tests {
    use rstest::rstest;

    use super::*;

    /// Builds a tar with the given (path, content) files; `None` content means a directory.
    pub(crate) fn tar_bytes(files: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            match content {
                Some(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, path, *data).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder
                        .append_data(&mut header, path, std::io::empty())
                        .unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    /// Wraps a data tar member into a `.deb` (ar) the way dpkg lays it out.
    pub(crate) fn deb_bytes(data_member: &str, data: &[u8]) -> Vec<u8> {
        let mut ar = ar::Builder::new(Vec::new());
        let control = tar_bytes(&[("./control", Some(b"Package: test\n"))]);
        for (name, bytes) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("control.tar", &control[..]),
            (data_member, data),
        ] {
            let header = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
            ar.append(&header, bytes).unwrap();
        }
        ar.into_inner().unwrap()
    }

    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 1)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn kernel_tar() -> Vec<u8> {
        tar_bytes(&[
            ("./", None),
            ("./boot/", None),
            ("./boot/vmlinuz-9.9.9-test", Some(b"kernel")),
            ("./usr/lib/modules/9.9.9-test/kernel/x.ko", Some(b"module")),
            ("./usr/share/doc/linux/changelog", Some(b"skip me")),
        ])
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 1).unwrap()
    }

    #[rstest]
    #[case::xz("data.tar.xz", xz)]
    #[case::zstd("data.tar.zst", zst)]
    #[case::plain("data.tar", <[u8]>::to_vec)]
    fn keeps_boot_and_normalises_usr_lib_modules(#[case] member: &str, #[case] compress: fn(&[u8]) -> Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join(format!("{member}.deb"));
        std::fs::write(&deb, deb_bytes(member, &compress(&kernel_tar()))).unwrap();
        let out = dir.path().join(format!("{member}-out"));
        let stats = extract_kernel_parts(&deb, &out).unwrap();
        assert_eq!(stats.files, 2, "{member}");
        assert_eq!(std::fs::read(out.join("boot/vmlinuz-9.9.9-test")).unwrap(), b"kernel");
        assert_eq!(std::fs::read(out.join("lib/modules/9.9.9-test/kernel/x.ko")).unwrap(), b"module");
        assert!(!out.join("usr").exists());
    }

    #[test]
    fn corrupt_data_member_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = xz(&kernel_tar());
        let mid = data.len() / 2;
        data[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
        let deb = dir.path().join("bad.deb");
        std::fs::write(&deb, deb_bytes("data.tar.xz", &data)).unwrap();
        let err = extract_kernel_parts(&deb, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, DebError::CorruptData { .. }), "{err}");
        assert!(err.to_string().contains("corrupt data.tar.xz"), "{err}");
    }

    #[test]
    fn non_ar_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("junk.deb");
        std::fs::write(&deb, b"this is not an ar archive at all").unwrap();
        let err = extract_kernel_parts(&deb, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, DebError::NotAr { .. }), "{err}");
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert_eq!(kept_path(Path::new("./boot/../../etc/passwd")), Err(()));
        assert_eq!(kept_path(Path::new("/boot/x")), Err(()));
        assert_eq!(kept_path(Path::new("./usr/share/x")), Ok(None));
        assert_eq!(
            kept_path(Path::new("./usr/lib/modules/1/x.ko")),
            Ok(Some(PathBuf::from("lib/modules/1/x.ko")))
        );
    }
}
