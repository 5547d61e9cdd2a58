//! Turns a locked kernel line into files on disk: download, verify, extract, cache.
//!
//! Downloads stream to a temp file in the cache while being hashed, so a truncated or
//! tampered package never reaches the extractor and never lingers in the cache. A cache
//! entry is complete only once its marker file exists (written last, atomically), so an
//! interrupted run is simply redone and a complete one needs no network at all.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::{debug, info};

use crate::artifacts::deb::{self, DebError};
use crate::kernels::manifest::{LockedKernel, Pin, PinnedPackage};

/// Overrides the cache root (normally `dirs::cache_dir()/tapio-probes`); kernels live in
/// its `kernels/` subdirectory.
pub const CACHE_ENV: &str = "TAPIO_CACHE_DIR";

/// Name of the file that marks a cache entry as complete; holds the pinned hashes.
const MARKER: &str = ".complete";

/// Everything the VM runner needs from one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// `uname -r` of the kernel, taken from `boot/vmlinuz-<release>`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `boot/config-<release>`, when the package ships it.
    pub config: Option<PathBuf>,
    /// `.../lib/modules/<release>`, when modules are available.
    pub modules_dir: Option<PathBuf>,
}

/// Errors obtaining a kernel.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("fetch {line}: unavailable: {reason}")]
    Unavailable { line: String, reason: String },
    #[error("fetch {what}: GET {url}: {source}")]
    Http {
        what: String,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("fetch {what}: {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetch {what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("fetch {what}: sha256 mismatch: expected {expected}, got {actual}")]
    Sha256Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("fetch {what}: {source}")]
    Deb {
        what: String,
        #[source]
        source: DebError,
    },
    #[error("fetch {what}: no boot/vmlinuz-* found in {dir}")]
    NoKernel { what: String, dir: PathBuf },
    #[error("fetch {what}: several kernels in {dir}: {releases:?}")]
    SeveralKernels {
        what: String,
        dir: PathBuf,
        releases: Vec<String>,
    },
    #[error("fetch {what}: cannot tell the kernel release of {path} (name it vmlinuz-<release> or pass its modules directory)")]
    UnknownRelease { what: String, path: PathBuf },
    #[error("fetch cache: no cache directory on this system; set {CACHE_ENV}")]
    NoCacheDir,
    #[error("fetch {what}: cache entry lock")]
    Lock {
        what: String,
        #[source]
        source: crate::artifacts::lock::LockError,
    },
}

/// The directory kernels are cached in: `$TAPIO_CACHE_DIR/kernels` or
/// `dirs::cache_dir()/tapio-probes/kernels`.
pub fn kernel_cache_dir() -> Result<PathBuf, FetchError> {
    let root = match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir()
            .ok_or(FetchError::NoCacheDir)?
            .join("tapio-probes"),
    };
    Ok(root.join("kernels"))
}

/// The HTTP agent shared by index and package downloads: bounded connect/read timeouts so
/// a dead mirror fails the run instead of hanging it.
pub(crate) fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(120))
        .user_agent(concat!(
            "tapio-probes-verifier-matrix/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// Makes the kernel of a locked line available locally, downloading it only when the cache
/// has no complete copy.
pub fn ensure_kernel(
    line: &LockedKernel,
    mirror: &str,
    cache_dir: &Path,
) -> Result<KernelArtifacts, FetchError> {
    let image = match &line.pin {
        Pin::Unavailable { reason } => {
            return Err(FetchError::Unavailable {
                line: line.line.clone(),
                reason: reason.clone(),
            })
        }
        Pin::Local {
            kernel_file,
            modules_dir,
        } => return artifacts_from_files(kernel_file, modules_dir.as_deref()),
        Pin::Debian { image, .. } => image,
    };
    let what = line.line.as_str();
    let entry = cache_dir.join(cache_entry_name(image));
    let root = entry.join("root");
    let packages = line.pin.packages();
    let stamp: String = packages
        .iter()
        .map(|p| format!("{} {}\n", p.sha256, p.package))
        .collect();
    if std::fs::read_to_string(entry.join(MARKER)).is_ok_and(|m| m == stamp) {
        debug!(line = what, dir = %entry.display(), "kernel cache hit");
        return artifacts_in(what, &root);
    }

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io {
            what: what.to_owned(),
            path,
            source,
        }
    };
    // Another harness process (a shard beside this one) may be filling the same entry: wait for
    // it, then look again, rather than both deleting and extracting into one directory.
    std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    let lock_path = cache_dir.join(format!("{}.lock", cache_entry_name(image)));
    let _lock = crate::artifacts::lock::FileLock::exclusive(&lock_path).map_err(|e| FetchError::Lock {
        what: what.to_owned(),
        source: e,
    })?;
    if std::fs::read_to_string(entry.join(MARKER)).is_ok_and(|m| m == stamp) {
        debug!(line = what, dir = %entry.display(), "kernel cache filled by another run");
        return artifacts_in(what, &root);
    }
    if entry.exists() {
        std::fs::remove_dir_all(&entry).map_err(io(&entry))?;
    }
    std::fs::create_dir_all(&entry).map_err(io(&entry))?;
    for package in packages {
        let url = format!("{}/{}", mirror.trim_end_matches('/'), package.filename);
        let deb_path = download_verified(what, &url, package, &entry)?;
        let started = std::time::Instant::now();
        let stats =
            deb::extract_kernel_parts(&deb_path, &root).map_err(|source| FetchError::Deb {
                what: what.to_owned(),
                source,
            })?;
        info!(
            line = what,
            package = %package.package,
            files = stats.files,
            bytes = stats.bytes,
            secs = started.elapsed().as_secs_f32(),
            "extracted"
        );
        std::fs::remove_file(&deb_path).map_err(io(&deb_path))?;
    }
    let artifacts = artifacts_in(what, &root)?;
    write_atomically(&entry.join(MARKER), stamp.as_bytes()).map_err(io(&entry))?;
    Ok(artifacts)
}

/// `<package>_<version>`, with characters that are awkward in paths replaced.
fn cache_entry_name(p: &PinnedPackage) -> String {
    format!("{}_{}", p.package, p.version)
        .chars()
        .map(|c| if c == ':' || c == '/' { '_' } else { c })
        .collect()
}

/// Downloads `url` into `dir`, checking size and sha256 against the pin while streaming.
/// Returns the verified file's path; on any failure nothing is left in `dir`.
pub fn download_verified(
    what: &str,
    url: &str,
    expected: &PinnedPackage,
    dir: &Path,
) -> Result<PathBuf, FetchError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io {
            what: what.to_owned(),
            path,
            source,
        }
    };
    let started = std::time::Instant::now();
    info!(what, %url, bytes = expected.size, "downloading");
    let response = http_agent()
        .get(url)
        .call()
        .map_err(|source| FetchError::Http {
            what: what.to_owned(),
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    // Dropping `tmp` deletes it, which is what every early return below relies on.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    let mut reader = response.into_reader();
    let mut hasher = Sha256::new();
    let mut progress = Progress::new(what, &expected.package, expected.size);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(tmp.path())(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(io(tmp.path()))?;
        total += n as u64;
        progress.advance(total);
    }
    progress.finish();
    tmp.flush().map_err(io(tmp.path()))?;
    if total != expected.size {
        return Err(FetchError::SizeMismatch {
            what: what.to_owned(),
            expected: expected.size,
            actual: total,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(&expected.sha256) {
        return Err(FetchError::Sha256Mismatch {
            what: what.to_owned(),
            expected: expected.sha256.clone(),
            actual,
        });
    }
    let name = expected
        .filename
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("package.deb");
    let dest = dir.join(name);
    tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
    let secs = started.elapsed().as_secs_f64();
    info!(
        what,
        bytes = total,
        secs,
        mib_per_sec = total as f64 / 1048576.0 / secs.max(1e-3),
        "downloaded and verified"
    );
    Ok(dest)
}

/// Download progress: a bar on a terminal, a log line every ~10% otherwise (CI logs).
enum Progress {
    Bar(indicatif::ProgressBar),
    Log {
        what: String,
        size: u64,
        next_decile: u64,
    },
}

impl Progress {
    fn new(what: &str, package: &str, size: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(size);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("{what}: {package}"));
            Progress::Bar(bar)
        } else {
            Progress::Log {
                what: what.to_owned(),
                size,
                next_decile: 1,
            }
        }
    }

    fn advance(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Log {
                what,
                size,
                next_decile,
            } => {
                while *size > 0 && *next_decile <= 10 && done * 10 >= *size * *next_decile {
                    info!(what = %what, "download {}% ({done} of {size} bytes)", *next_decile * 10);
                    *next_decile += 1;
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Finds the kernel in an extracted tree. Debian up to 6.x ships `boot/vmlinuz-<release>` and
/// `boot/config-<release>`; the 7.x packaging ships `lib/modules/<release>/vmlinuz` and
/// `lib/modules/<release>/config` instead. Both layouts are accepted.
fn artifacts_in(what: &str, root: &Path) -> Result<KernelArtifacts, FetchError> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let boot = root.join("boot");
    let modules_root = root.join("lib/modules");
    let mut found: Vec<(String, PathBuf)> = names(&boot)
        .into_iter()
        .filter_map(|n| {
            let release = n.strip_prefix("vmlinuz-")?.to_owned();
            Some((release, boot.join(&n)))
        })
        .collect();
    for release in names(&modules_root) {
        let image = modules_root.join(&release).join("vmlinuz");
        if image.is_file() && !found.iter().any(|(r, _)| *r == release) {
            found.push((release, image));
        }
    }
    found.sort();
    let (release, vmlinuz) = match found.len() {
        0 => {
            return Err(FetchError::NoKernel {
                what: what.to_owned(),
                dir: root.to_path_buf(),
            })
        }
        1 => found.remove(0),
        _ => {
            return Err(FetchError::SeveralKernels {
                what: what.to_owned(),
                dir: root.to_path_buf(),
                releases: found.into_iter().map(|(r, _)| r).collect(),
            })
        }
    };
    let modules = modules_root.join(&release);
    let config = [
        boot.join(format!("config-{release}")),
        modules.join("config"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    Ok(KernelArtifacts {
        vmlinuz,
        config,
        // The 7.x image package alone creates the directory for vmlinuz; only report it
        // as a module tree when modules are actually there.
        modules_dir: modules.join("kernel").is_dir().then_some(modules),
        release,
    })
}

/// Extracts a user-supplied kernel `.deb` into the cache (keyed by its sha256, so the same
/// file is only unpacked once) and returns its artifacts.
pub fn artifacts_from_deb(deb: &Path, cache_dir: &Path) -> Result<KernelArtifacts, FetchError> {
    let what = deb.display().to_string();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        let what = what.clone();
        move |source| FetchError::Io { what, path, source }
    };
    let mut file = std::fs::File::open(deb).map_err(io(deb))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io(deb))?;
    let sha = hex::encode(hasher.finalize());
    let entry = cache_dir.join(format!("deb-{}", &sha[..16]));
    let root = entry.join("root");
    if std::fs::read_to_string(entry.join(MARKER)).is_ok_and(|m| m.trim() == sha) {
        return artifacts_in(&what, &root);
    }
    // As in ensure_kernel: one process fills an entry, another waits and then finds it filled.
    std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    let _lock = crate::artifacts::lock::FileLock::exclusive(&cache_dir.join(format!("deb-{}.lock", &sha[..16])))
        .map_err(|source| FetchError::Lock { what: what.clone(), source })?;
    if std::fs::read_to_string(entry.join(MARKER)).is_ok_and(|m| m.trim() == sha) {
        return artifacts_in(&what, &root);
    }
    if entry.exists() {
        std::fs::remove_dir_all(&entry).map_err(io(&entry))?;
    }
    deb::extract_kernel_parts(deb, &root).map_err(|source| FetchError::Deb {
        what: what.clone(),
        source,
    })?;
    let artifacts = artifacts_in(&what, &root)?;
    write_atomically(&entry.join(MARKER), sha.as_bytes()).map_err(io(&entry))?;
    Ok(artifacts)
}

/// Describes a kernel given as loose files. The release comes from a `vmlinuz-<release>`
/// file name, else the modules directory's name, else the bzImage header's version string.
pub fn artifacts_from_files(
    vmlinuz: &Path,
    modules_dir: Option<&Path>,
) -> Result<KernelArtifacts, FetchError> {
    let what = vmlinuz.display().to_string();
    let missing = |path: &Path, kind: &str| FetchError::Io {
        what: what.clone(),
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{kind} not found")),
    };
    if !vmlinuz.is_file() {
        return Err(missing(vmlinuz, "kernel file"));
    }
    if let Some(m) = modules_dir {
        if !m.is_dir() {
            return Err(missing(m, "modules directory"));
        }
    }
    let from_name = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_owned);
    let from_modules = || {
        modules_dir
            .and_then(|m| m.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_owned)
    };
    let release = from_name
        .or_else(from_modules)
        .or_else(|| bzimage_release(vmlinuz))
        .ok_or_else(|| FetchError::UnknownRelease {
            what: what.clone(),
            path: vmlinuz.to_path_buf(),
        })?;
    let config = vmlinuz.with_file_name(format!("config-{release}"));
    Ok(KernelArtifacts {
        release,
        vmlinuz: vmlinuz.to_path_buf(),
        config: config.is_file().then_some(config),
        modules_dir: modules_dir.map(Path::to_path_buf),
    })
}

/// Reads the release from an x86 bzImage: the setup header (magic `HdrS` at 0x202) holds at
/// 0x20e a pointer (minus 0x200) to a NUL-terminated "release (builder) #n ..." string.
fn bzimage_release(path: &Path) -> Option<String> {
    let mut head = vec![0u8; 0x4000];
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]).ok()? {
            0 => break,
            n => len += n,
        }
    }
    release_from_setup_header(&head[..len])
}

fn release_from_setup_header(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*head.get(0x20e)?, *head.get(0x20f)?]) as usize;
    if ptr == 0 {
        return None;
    }
    let text = head.get(ptr + 0x200..)?;
    let end = text.iter().position(|&b| b == 0)?;
    let release = std::str::from_utf8(&text[..end])
        .ok()?
        .split_whitespace()
        .next()?;
    Some(release.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::deb::tests::{deb_bytes, tar_bytes, xz};
    use std::io::BufRead;
    use std::net::TcpListener;

    /// Serves `body` at every path for `requests` connections, as a minimal HTTP/1.1 server,
    /// so downloads in tests go through real sockets and ureq.
    fn serve(body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        (base, handle)
    }

    fn tiny_kernel_deb() -> Vec<u8> {
        let data = tar_bytes(&[
            ("./boot/vmlinuz-9.9.9-test", Some(b"not really a kernel")),
            ("./boot/config-9.9.9-test", Some(b"CONFIG_BPF=y\n")),
            ("./lib/modules/9.9.9-test/kernel/x.ko", Some(b"module")),
        ]);
        deb_bytes("data.tar.xz", &xz(&data))
    }

    fn pin_for(bytes: &[u8]) -> PinnedPackage {
        PinnedPackage {
            package: "linux-image-9.9.9-test".into(),
            version: "9.9.9-1".into(),
            filename: "pool/main/l/linux/linux-image-9.9.9-test_9.9.9-1_amd64.deb".into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn artifacts_from_a_tiny_deb() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("k.deb");
        std::fs::write(&deb, tiny_kernel_deb()).unwrap();
        let cache = dir.path().join("cache");
        let a = artifacts_from_deb(&deb, &cache).unwrap();
        assert_eq!(a.release, "9.9.9-test");
        assert_eq!(std::fs::read(&a.vmlinuz).unwrap(), b"not really a kernel");
        assert!(a.config.is_some());
        let modules = a.modules_dir.clone().unwrap();
        assert!(modules.ends_with("lib/modules/9.9.9-test"));
        assert!(modules.join("kernel/x.ko").is_file());
        // Second call is served from the cache.
        assert_eq!(artifacts_from_deb(&deb, &cache).unwrap(), a);
    }

    #[test]
    fn debian_7_layout_under_usr_lib_modules() {
        let dir = tempfile::tempdir().unwrap();
        let data = tar_bytes(&[
            (
                "./usr/lib/modules/7.3.4+deb13-cloud-amd64/vmlinuz",
                Some(b"kernel"),
            ),
            (
                "./usr/lib/modules/7.3.4+deb13-cloud-amd64/config",
                Some(b"CONFIG_BPF=y\n"),
            ),
        ]);
        let deb = dir.path().join("binary.deb");
        std::fs::write(&deb, deb_bytes("data.tar.xz", &xz(&data))).unwrap();
        let a = artifacts_from_deb(&deb, dir.path()).unwrap();
        assert_eq!(a.release, "7.3.4+deb13-cloud-amd64");
        assert!(a
            .vmlinuz
            .ends_with("lib/modules/7.3.4+deb13-cloud-amd64/vmlinuz"));
        assert!(a
            .config
            .unwrap()
            .ends_with("7.3.4+deb13-cloud-amd64/config"));
        assert_eq!(a.modules_dir, None, "no kernel/ tree, so no modules");
    }

    #[test]
    fn wrong_sha256_is_refused_and_not_kept() {
        let body = tiny_kernel_deb();
        let (base, server) = serve(body.clone(), 1);
        let mut pin = pin_for(&body);
        let real = pin.sha256.clone();
        pin.sha256 = "0".repeat(64);
        let dir = tempfile::tempdir().unwrap();
        let err = download_verified("9.9", &format!("{base}/{}", pin.filename), &pin, dir.path())
            .unwrap_err();
        server.join().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "fetch 9.9: sha256 mismatch: expected {}, got {real}",
                "0".repeat(64)
            )
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing kept"
        );
    }

    #[test]
    fn wrong_size_is_refused() {
        let body = tiny_kernel_deb();
        let (base, server) = serve(body.clone(), 1);
        let mut pin = pin_for(&body);
        pin.size += 1;
        let dir = tempfile::tempdir().unwrap();
        let err = download_verified("9.9", &format!("{base}/x.deb"), &pin, dir.path()).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, FetchError::SizeMismatch { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn ensure_kernel_downloads_once_then_uses_the_cache() {
        let body = tiny_kernel_deb();
        let (base, server) = serve(body.clone(), 1);
        let locked = LockedKernel {
            line: "9.9".into(),
            arch: crate::arch::Arch::X86_64,
            default: true,
            pin: Pin::Debian {
                suite: "test".into(),
                image: pin_for(&body),
                modules: None,
                base: None,
            },
        };
        let cache = tempfile::tempdir().unwrap();
        let a = ensure_kernel(&locked, &base, cache.path()).unwrap();
        server.join().unwrap();
        assert_eq!(a.release, "9.9.9-test");
        assert!(a.modules_dir.is_some());
        // The server is gone: a second call must not touch the network.
        let again = ensure_kernel(&locked, "http://127.0.0.1:9", cache.path()).unwrap();
        assert_eq!(again, a);
        // The downloaded .deb itself is not kept.
        let entry = cache.path().join("linux-image-9.9.9-test_9.9.9-1");
        assert!(!entry
            .join("linux-image-9.9.9-test_9.9.9-1_amd64.deb")
            .exists());
    }

    #[test]
    fn unavailable_lines_say_why() {
        let locked = LockedKernel {
            line: "4.19".into(),
            arch: crate::arch::Arch::X86_64,
            default: false,
            pin: Pin::Unavailable {
                reason: "suite buster not served".into(),
            },
        };
        let err = ensure_kernel(
            &locked,
            "http://mirror.example/debian",
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fetch 4.19: unavailable: suite buster not served"
        );
    }

    #[test]
    fn loose_files_release_detection() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("vmlinuz-5.4.0-custom");
        std::fs::write(&named, b"x").unwrap();
        assert_eq!(
            artifacts_from_files(&named, None).unwrap().release,
            "5.4.0-custom"
        );

        let modules = dir.path().join("5.15.0-x");
        std::fs::create_dir(&modules).unwrap();
        let bz = dir.path().join("bzImage");
        std::fs::write(&bz, b"x").unwrap();
        assert_eq!(
            artifacts_from_files(&bz, Some(&modules)).unwrap().release,
            "5.15.0-x"
        );
        assert!(matches!(
            artifacts_from_files(&bz, None),
            Err(FetchError::UnknownRelease { .. })
        ));
        assert!(artifacts_from_files(&dir.path().join("missing"), None).is_err());
    }

    #[test]
    fn bzimage_header_release() {
        let mut head = vec![0u8; 0x1000];
        head[0x202..0x206].copy_from_slice(b"HdrS");
        head[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let version = b"6.6.30-custom (builder@host) #1 SMP\0";
        head[0x500..0x500 + version.len()].copy_from_slice(version);
        assert_eq!(
            release_from_setup_header(&head).as_deref(),
            Some("6.6.30-custom")
        );
        head[0x202] = b'X';
        assert_eq!(release_from_setup_header(&head), None);
    }

    /// Downloads and extracts one locked line (`TAPIO_FETCH_LINE`, default 6.1) into the real
    /// cache, to prove the path end to end. Ignored because it needs the network; run with
    /// `cargo test -p verifier-matrix --lib fetch_locked_kernel -- --ignored --nocapture`.
    #[test]
    #[ignore = "network: downloads a real kernel into the cache"]
    fn fetch_locked_kernel() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-images");
        let lock = crate::kernels::manifest::Lock::load(&dir.join("kernels.lock")).unwrap();
        let line = std::env::var("TAPIO_FETCH_LINE").unwrap_or_else(|_| "6.1".into());
        let locked = lock.get(&line).expect("line in lock");
        let mirror = crate::kernels::apt::discover_mirror().unwrap();
        let started = std::time::Instant::now();
        let a = ensure_kernel(locked, &mirror, &kernel_cache_dir().unwrap()).unwrap();
        eprintln!("{line}: {a:?} in {:.1}s", started.elapsed().as_secs_f64());
        assert!(a.vmlinuz.is_file());
    }
}
