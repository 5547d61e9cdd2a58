//! A small cpio "newc" writer for the guest initramfs.
//!
//! The guest needs only a handful of files (the static agent as `/init`, the probe bundle and
//! a few kernel modules), so we write the archive ourselves instead of depending on a host
//! `cpio` or busybox: the output is then identical on every machine and byte-for-byte
//! reproducible (all timestamps and owners are zero, entries are sorted by path).
//!
//! Format reference: each entry is a 110-byte ASCII header (`070701` followed by thirteen
//! 8-digit hex fields), the NUL-terminated name padded so that header+name is a multiple of
//! four, then the data padded to a multiple of four. The archive ends with an entry named
//! `TRAILER!!!`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Errors raised while assembling or writing an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A guest path was empty, contained `..`, or collided with an entry of another type.
    #[error("invalid initramfs path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A host file could not be read.
    #[error("cannot read host file {path}")]
    ReadHost {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A compressed kernel module could not be decompressed.
    #[error("cannot decompress kernel module {path}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file handed to `add_module` does not look like a kernel module.
    #[error("kernel module {path} is not an ELF object after decompression")]
    NotAModule { path: PathBuf },
    /// The module file name does not end in `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`.
    #[error("kernel module {path} has an unsupported name (want .ko, .ko.xz, .ko.zst or .ko.gz)")]
    ModuleName { path: PathBuf },
    /// A field would not fit the 32-bit header of the newc format.
    #[error("initramfs entry {path:?} is too large for the newc format")]
    TooLarge { path: String },
    /// The finished archive could not be written.
    #[error("cannot write initramfs to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// File-type bits of `st_mode`, as the kernel's initramfs unpacker expects them.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The directory every module added by [`Initramfs::add_module`] lands in.
pub const MODULE_DIR: &str = "lib/modules";

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
struct Entry {
    node: Node,
    /// Permission bits only; the type bits are derived from `node`.
    perm: u32,
}

/// Builder for a newc initramfs.
///
/// Paths are guest paths (`/init`, `/lib/modules/x.ko`); parents are created implicitly with
/// mode 0755 (a later explicit `dir()` sets their mode). Adding the same path twice replaces
/// the earlier entry. Path errors are
/// remembered and reported by [`finish`](Self::finish) / [`write_to`](Self::write_to) so the
/// builder can be chained without a `?` after every call.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    /// Keyed by the normalised path without a leading slash. Lexicographic order puts every
    /// directory before its contents, which the kernel's unpacker requires.
    entries: BTreeMap<String, Entry>,
    /// The first invalid path seen (path, reason), reported by `finish`.
    error: Option<(String, &'static str)>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory with the given permission bits.
    pub fn dir(mut self, path: &str, perm: u32) -> Self {
        self.insert(path, Node::Dir, perm);
        self
    }

    /// Adds a regular file with the given contents and permission bits.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, perm: u32) -> Self {
        self.insert(path, Node::File(data.into()), perm);
        self
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.insert(path, Node::Symlink(target.to_owned()), 0o777);
        self
    }

    /// Adds a character device node, e.g. `/dev/console` (5, 1) so that the kernel can give
    /// `/init` a console before anything has mounted devtmpfs.
    pub fn char_dev(mut self, path: &str, perm: u32, major: u32, minor: u32) -> Self {
        self.insert(path, Node::CharDev { major, minor }, perm);
        self
    }

    /// Adds a regular file whose contents are read from `host` now.
    pub fn file_from_path(
        self,
        path: &str,
        host: impl AsRef<Path>,
        perm: u32,
    ) -> Result<Self, InitramfsError> {
        let host = host.as_ref();
        let data = fs::read(host).map_err(|source| InitramfsError::ReadHost {
            path: host.to_owned(),
            source,
        })?;
        Ok(self.file(path, data, perm))
    }

    /// Adds a kernel module as `/lib/modules/<name>.ko`, decompressing `.ko.xz`, `.ko.zst` and
    /// `.ko.gz` on the host: the guest agent loads modules with `finit_module` and must not
    /// depend on the guest kernel's in-kernel decompression support, which varies by release.
    pub fn add_module(self, host: impl AsRef<Path>) -> Result<Self, InitramfsError> {
        let host = host.as_ref();
        let (name, data) = read_module(host)?;
        Ok(self.file(&format!("/{MODULE_DIR}/{name}.ko"), data, 0o644))
    }

    /// Adds a kernel module as `/<dir>/<prefix><name>.ko` (decompressed as [`Self::add_module`]
    /// does), for modules the guest must load in a given order: the prefix sorts them.
    pub fn add_module_in(self, dir: &str, prefix: &str, host: impl AsRef<Path>) -> Result<Self, InitramfsError> {
        let (name, data) = read_module(host.as_ref())?;
        Ok(self.file(&format!("/{dir}/{prefix}{name}.ko"), data, 0o644))
    }

    /// Guest paths (with a leading slash) currently in the archive, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.keys().map(|k| format!("/{k}"))
    }

    /// Serialises the archive.
    pub fn finish(&self) -> Result<Vec<u8>, InitramfsError> {
        if let Some((path, reason)) = &self.error {
            return Err(InitramfsError::InvalidPath {
                path: path.clone(),
                reason,
            });
        }
        let mut out = Vec::new();
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.node {
                Node::Dir => (S_IFDIR | entry.perm, 2, &[], (0, 0)),
                Node::File(d) => (S_IFREG | entry.perm, 1, d, (0, 0)),
                Node::Symlink(t) => (S_IFLNK | entry.perm, 1, t.as_bytes(), (0, 0)),
                Node::CharDev { major, minor } => (S_IFCHR | entry.perm, 1, &[], (*major, *minor)),
            };
            let size = u32::try_from(data.len())
                .map_err(|_| InitramfsError::TooLarge { path: name.clone() })?;
            // Inode 0 is avoided: some readers treat it specially.
            let ino = u32::try_from(ino + 1)
                .map_err(|_| InitramfsError::TooLarge { path: name.clone() })?;
            write_entry(&mut out, name, ino, mode, nlink, data, size, rdev);
        }
        write_entry(&mut out, "TRAILER!!!", 0, 0, 1, &[], 0, (0, 0));
        Ok(out)
    }

    /// Serialises the archive into `path` (uncompressed; the kernel accepts that directly).
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), InitramfsError> {
        let path = path.as_ref();
        let bytes = self.finish()?;
        fs::write(path, bytes).map_err(|source| InitramfsError::Write {
            path: path.to_owned(),
            source,
        })
    }

    fn insert(&mut self, path: &str, node: Node, perm: u32) {
        if self.error.is_some() {
            return;
        }
        let name = match normalise(path) {
            Ok(n) => n,
            Err(reason) => {
                self.error = Some((path.to_owned(), reason));
                return;
            }
        };
        // Create missing parents, and refuse to put something under a non-directory.
        let mut parent = String::new();
        let components: Vec<&str> = name.split('/').collect();
        for comp in &components[..components.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            match self.entries.get(&parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    self.error = Some((path.to_owned(), "a parent is not a directory"));
                    return;
                }
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            node: Node::Dir,
                            perm: 0o755,
                        },
                    );
                }
            }
        }
        if let Some(existing) = self.entries.get(&name) {
            let existing_is_dir = matches!(existing.node, Node::Dir);
            let new_is_dir = matches!(node, Node::Dir);
            if existing_is_dir != new_is_dir {
                self.error = Some((path.to_owned(), "already present with a different type"));
                return;
            }
        }
        self.entries.insert(
            name,
            Entry {
                node,
                perm: perm & 0o7777,
            },
        );
    }
}

/// Turns `/a//b/./c` into `a/b/c`; rejects empty paths and `..`.
fn normalise(path: &str) -> Result<String, &'static str> {
    let mut parts = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("contains .."),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("is empty or the root");
    }
    Ok(parts.join("/"))
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    size: u32,
    rdev: (u32, u32),
) {
    // The name size counts the terminating NUL.
    let namesize = name.len() as u32 + 1;
    let fields: [u32; 13] = [
        ino, mode, 0, /* uid */
        0, /* gid */
        nlink, 0, /* mtime: zero for reproducible archives */
        size, 0, /* devmajor */
        0, /* devminor */
        rdev.0, rdev.1, namesize, 0, /* check: unused by newc */
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// Pads to a multiple of four. Every header starts 4-aligned, so aligning the absolute
/// offset is the same as aligning header+name or data as the format requires.
fn pad4(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

/// Reads a module file and returns its base name (without `.ko…`) and decompressed bytes.
fn read_module(host: &Path) -> Result<(String, Vec<u8>), InitramfsError> {
    let file_name =
        host.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| InitramfsError::ModuleName {
                path: host.to_owned(),
            })?;
    let (base, codec) = if let Some(b) = file_name.strip_suffix(".ko.xz") {
        (b, Codec::Xz)
    } else if let Some(b) = file_name.strip_suffix(".ko.zst") {
        (b, Codec::Zstd)
    } else if let Some(b) = file_name.strip_suffix(".ko.gz") {
        (b, Codec::Gzip)
    } else if let Some(b) = file_name.strip_suffix(".ko") {
        (b, Codec::None)
    } else {
        return Err(InitramfsError::ModuleName {
            path: host.to_owned(),
        });
    };
    if base.is_empty() || base.contains('/') {
        return Err(InitramfsError::ModuleName {
            path: host.to_owned(),
        });
    }
    let raw = fs::read(host).map_err(|source| InitramfsError::ReadHost {
        path: host.to_owned(),
        source,
    })?;
    let decompress_err = |source| InitramfsError::Decompress {
        path: host.to_owned(),
        source,
    };
    let data = match codec {
        Codec::None => raw,
        Codec::Xz => {
            let mut out = Vec::new();
            liblzma::read::XzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(decompress_err)?;
            out
        }
        Codec::Zstd => zstd::stream::decode_all(&raw[..]).map_err(decompress_err)?,
        Codec::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(decompress_err)?;
            out
        }
    };
    if !data.starts_with(b"\x7fELF") {
        return Err(InitramfsError::NotAModule {
            path: host.to_owned(),
        });
    }
    Ok((base.to_owned(), data))
}

enum Codec {
    None,
    Xz,
    Zstd,
    Gzip,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn cpio_available() -> bool {
        Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn header_layout_is_newc() {
        let bytes = Initramfs::new()
            .file("/a", b"xyz".to_vec(), 0o644)
            .finish()
            .unwrap();
        assert_eq!(&bytes[..6], b"070701");
        // ino=1, mode=0100644, uid, gid, nlink=1, mtime, filesize=3, ...
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000081a4");
        assert_eq!(&bytes[38..46], b"00000001");
        assert_eq!(&bytes[54..62], b"00000003");
        // namesize = 2 ("a\0") at field index 11.
        assert_eq!(&bytes[6 + 11 * 8..6 + 12 * 8], b"00000002");
        // 110 + 2 = 112, already aligned; data follows then pads to 116.
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], b"xyz");
        assert_eq!(bytes[115], 0);
        assert_eq!(&bytes[116..122], b"070701");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn rejects_bad_paths_at_finish() {
        let err = Initramfs::new()
            .file("/a/../b", b"".to_vec(), 0o644)
            .finish()
            .unwrap_err();
        assert!(matches!(err, InitramfsError::InvalidPath { .. }), "{err}");
        let err = Initramfs::new()
            .file("/a", b"".to_vec(), 0o644)
            .file("/a/b", b"".to_vec(), 0o644)
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn output_is_reproducible_and_sorted() {
        let a = Initramfs::new()
            .file("/z", b"1".to_vec(), 0o644)
            .file("/lib/x", b"2".to_vec(), 0o644)
            .finish()
            .unwrap();
        let b = Initramfs::new()
            .file("/lib/x", b"2".to_vec(), 0o644)
            .file("/z", b"1".to_vec(), 0o644)
            .finish()
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cpio_reads_it_back() {
        if !cpio_available() {
            eprintln!("SKIP cpio_reads_it_back: no cpio on PATH");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host_file = dir.path().join("host.bin");
        fs::write(&host_file, b"from the host").unwrap();
        let archive = dir.path().join("initramfs.cpio");
        // Sizes 0..=5 exercise every padding remainder for both names and data.
        let mut ramfs = Initramfs::new()
            .dir("/lib/modules", 0o755)
            .file("/init", b"#!/bin/true\n".to_vec(), 0o755)
            .symlink("/bin/sh", "/init")
            .file("/deep/er/path/file.txt", b"nested".to_vec(), 0o600)
            .file_from_path("/etc/host", &host_file, 0o644)
            .unwrap();
        for n in 0..=5usize {
            ramfs = ramfs.file(&format!("/pad/{}", "n".repeat(n + 1)), vec![b'x'; n], 0o644);
        }
        ramfs.write_to(&archive).unwrap();

        let listing = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let listing = String::from_utf8(listing.stdout).unwrap();
        let names: Vec<&str> = listing.lines().collect();
        for want in [
            "bin",
            "bin/sh",
            "deep",
            "deep/er",
            "deep/er/path",
            "deep/er/path/file.txt",
            "etc/host",
            "init",
            "lib",
            "lib/modules",
            "pad/nnnnnn",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }

        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let status = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&archive)
            .current_dir(&out)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(fs::read(out.join("etc/host")).unwrap(), b"from the host");
        assert_eq!(
            fs::read(out.join("deep/er/path/file.txt")).unwrap(),
            b"nested"
        );
        for n in 0..=5usize {
            let p = out.join(format!("pad/{}", "n".repeat(n + 1)));
            assert_eq!(fs::read(p).unwrap(), vec![b'x'; n]);
        }
        assert_eq!(
            fs::read_link(out.join("bin/sh")).unwrap(),
            Path::new("/init")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(out.join("init")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let mode = fs::metadata(out.join("deep/er/path/file.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A fake but ELF-looking module body, big enough to compress meaningfully.
    fn fake_module() -> Vec<u8> {
        let mut m = b"\x7fELF\x02\x01\x01".to_vec();
        m.extend((0..4096u32).map(|i| (i % 251) as u8));
        m
    }

    #[test]
    fn modules_are_stored_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let body = fake_module();

        let xz_path = dir.path().join("bpf_testmod.ko.xz");
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(&body).unwrap();
        let xz = enc.finish().unwrap();
        assert_eq!(&xz[..6], b"\xfd7zXZ\0", "test must use a real xz stream");
        fs::write(&xz_path, &xz).unwrap();

        let zst_path = dir.path().join("other.ko.zst");
        fs::write(&zst_path, zstd::stream::encode_all(&body[..], 3).unwrap()).unwrap();

        let plain_path = dir.path().join("plain.ko");
        fs::write(&plain_path, &body).unwrap();

        let ramfs = Initramfs::new()
            .add_module(&xz_path)
            .unwrap()
            .add_module(&zst_path)
            .unwrap()
            .add_module(&plain_path)
            .unwrap();
        let paths: Vec<String> = ramfs.paths().collect();
        assert!(
            paths.contains(&"/lib/modules/bpf_testmod.ko".to_owned()),
            "{paths:?}"
        );
        assert!(paths.contains(&"/lib/modules/other.ko".to_owned()));
        assert!(paths.contains(&"/lib/modules/plain.ko".to_owned()));

        if cpio_available() {
            let archive = dir.path().join("m.cpio");
            ramfs.write_to(&archive).unwrap();
            let out = dir.path().join("out");
            fs::create_dir(&out).unwrap();
            let status = Command::new("cpio")
                .args(["-i", "-d", "--quiet", "-F"])
                .arg(&archive)
                .current_dir(&out)
                .status()
                .unwrap();
            assert!(status.success());
            for m in ["bpf_testmod", "other", "plain"] {
                assert_eq!(
                    fs::read(out.join(format!("lib/modules/{m}.ko"))).unwrap(),
                    body
                );
            }
        }
    }

    #[test]
    fn module_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let bad_name = dir.path().join("thing.txt");
        fs::write(&bad_name, b"x").unwrap();
        assert!(matches!(
            Initramfs::new().add_module(&bad_name),
            Err(InitramfsError::ModuleName { .. })
        ));
        let not_elf = dir.path().join("x.ko");
        fs::write(&not_elf, b"hello").unwrap();
        assert!(matches!(
            Initramfs::new().add_module(&not_elf),
            Err(InitramfsError::NotAModule { .. })
        ));
        let corrupt = dir.path().join("y.ko.xz");
        fs::write(&corrupt, b"definitely not xz").unwrap();
        assert!(matches!(
            Initramfs::new().add_module(&corrupt),
            Err(InitramfsError::Decompress { .. })
        ));
    }
}
