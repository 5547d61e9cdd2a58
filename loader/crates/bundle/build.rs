//! Compiles the C probes in `probes/` into BTF/CO-RE objects that `tapio-bundle` embeds.
//!
//! Each monitor is built twice, with a ring buffer and with a perf event array (`-DTAPIO_PERF`),
//! because a map's type cannot be changed once the object exists. The objects depend only on the
//! committed headers, never on the build machine's kernel, so any machine builds the same bundle.
//!
//! Each build is for one architecture: the `-D__TARGET_ARCH_*` that tells bpf_tracing.h which
//! registers hold a kprobe's arguments, and the register frame `probes/include/vmlinux.h`
//! declares for it. The bundle embedded in a binary is the one for the binary's own architecture
//! (`CARGO_CFG_TARGET_ARCH`): an x86_64 agent carries x86_64 objects, an aarch64 one arm64
//! objects. With the `all-arches` feature every other supported architecture is built too, so an
//! x86_64 machine can inspect and lint the arm64 objects it ships.
//!
//! Every object records the architecture it was built for in an ELF note (see [`arch_note`]).

use std::{
    env,
    path::{Path, PathBuf},
    process::{self, Command},
};

/// The monitors whose `<name>.bpf.c` is compiled.
const MONITORS: &[&str] = &["process", "network", "kernel", "dns", "security", "advanced", "xdp_filter", "cgroup_watch"];

/// How the probes are built for one architecture.
///
/// Its `name` is tapio-kernel-gates' `Arch::name` (the bundle's `Arch`), written out rather than
/// imported: a build-dependency on tapio-kernel-gates would recompile every probe whenever its
/// feature table changes. The bundle's tests and tapio-object's check every embedded object's
/// note against the `Arch` of the bundle it is in, so the two spellings cannot drift.
struct ArchBuild {
    /// The name the bundle, `inspect` and the object's note use (`tapio_bundle::Arch::name`).
    name: &'static str,
    /// Its `CARGO_CFG_TARGET_ARCH`.
    cargo: &'static str,
    /// What follows `-D__TARGET_ARCH_` (libbpf's names, as bpf_tracing.h tests them).
    define: &'static str,
    /// Where its `<asm/types.h>` (which `<linux/types.h>` includes) may live: Debian's multiarch
    /// directory on a native host, the cross headers on another.
    asm_dirs: &'static [&'static str],
    /// The Debian package that provides those headers on an x86_64 host.
    package: &'static str,
}

const ARCHES: &[ArchBuild] = &[
    ArchBuild {
        name: "x86_64",
        cargo: "x86_64",
        define: "x86",
        asm_dirs: &["/usr/include/x86_64-linux-gnu", "/usr/x86_64-linux-gnu/include"],
        package: "linux-libc-dev",
    },
    ArchBuild {
        name: "arm64",
        cargo: "aarch64",
        define: "arm64",
        asm_dirs: &["/usr/include/aarch64-linux-gnu", "/usr/aarch64-linux-gnu/include"],
        package: "linux-libc-dev-arm64-cross",
    },
];

/// The ELF note that names an object's architecture: section `.note.tapio.arch`, owner `tapio`,
/// type 1, the architecture's name as its NUL-terminated descriptor.
///
/// Why a note the build writes rather than evidence read back from the code: only objects with
/// kprobes or a raw `sys_enter` program touch registers, and the others (process, kernel, dns,
/// xdp_filter, ...) come out of both builds with the same BTF, so nothing in them could tell a
/// reader which bundle they belong to. The build is the one place that knows, as it passes the
/// `-D__TARGET_ARCH_*`, so it says so once in every object. A note is inert: aya-obj ignores the
/// section (not a program, map, BTF or license), and the kernel never sees it; `readelf -n` shows
/// it. `tapio-object`'s `arch` module reads it and checks it against the register types in the
/// object's BTF where there are any.
fn arch_note(arch: &str) -> Vec<u8> {
    const OWNER: &[u8] = b"tapio\0";
    const TYPE_ARCH: u32 = 1;
    let desc: Vec<u8> = arch.bytes().chain([0]).collect();
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
    let mut note = Vec::new();
    note.extend_from_slice(&(OWNER.len() as u32).to_le_bytes());
    note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    note.extend_from_slice(&TYPE_ARCH.to_le_bytes());
    note.extend_from_slice(OWNER);
    pad(&mut note);
    note.extend_from_slice(&desc);
    pad(&mut note);
    note
}

/// Exits the build with one line naming what is missing and how to get it.
fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    process::exit(1);
}

/// Finds a tool by its plain name, then by Debian's versioned names (`clang-16`, ...).
fn find_tool(name: &str, package: &str) -> PathBuf {
    if let Ok(path) = which::which(name) {
        return path;
    }
    for version in (11..=21).rev() {
        if let Ok(path) = which::which(format!("{name}-{version}")) {
            return path;
        }
    }
    die(&format!("{name} not found: install the Debian package `{package}` (or run ci/setup.sh)"))
}

/// What every compile of one architecture shares.
struct Build<'a> {
    clang: &'a Path,
    objcopy: &'a Path,
    probes: &'a Path,
    arch: &'a ArchBuild,
    /// The architecture's `<asm/types.h>` directory.
    asm_dir: PathBuf,
    /// The note file for `--add-section`.
    note: PathBuf,
}

impl Build<'_> {
    fn compile(&self, source: &Path, out: &Path, perf: bool) {
        let mut cmd = Command::new(self.clang);
        cmd.args(["-target", "bpf", "-mcpu=v2", "-g", "-O2", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{}", self.arch.define))
            .arg("-I")
            .arg(self.probes.join("include"))
            // <linux/types.h> includes <asm/types.h>, which Debian keeps per architecture.
            .arg("-I")
            .arg(&self.asm_dir);
        if perf {
            cmd.arg("-DTAPIO_PERF");
        }
        cmd.arg("-c").arg(source).arg("-o").arg(out);
        let status = cmd.status().unwrap_or_else(|e| die(&format!("running {}: {e}", self.clang.display())));
        if !status.success() {
            die(&format!("clang failed on {} for {}", source.display(), self.arch.name));
        }
        // Drop DWARF, keep BTF: the embedded objects stay small. Add the architecture's note.
        let status = Command::new(self.objcopy)
            .arg("--strip-debug")
            .arg(format!("--add-section=.note.tapio.arch={}", self.note.display()))
            .arg(out)
            .status()
            .unwrap_or_else(|e| die(&format!("running {}: {e}", self.objcopy.display())));
        if !status.success() {
            die(&format!("llvm-objcopy failed on {}", out.display()));
        }
    }
}

/// The directory holding `arch`'s `<asm/types.h>`, or the build stops naming the package.
fn asm_dir(arch: &ArchBuild) -> PathBuf {
    arch.asm_dirs
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("asm/types.h").exists())
        .unwrap_or_else(|| {
            die(&format!(
                "no <asm/types.h> for {} in {}: install the Debian package `{}` (or run ci/setup.sh)",
                arch.name,
                arch.asm_dirs.join(" or "),
                arch.package
            ))
        })
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let probes = manifest.join("../../../probes");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", probes.display());
    println!("cargo:rerun-if-changed={}", probes.join("include").display());
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        die("libbpf headers not found: install the Debian package `libbpf-dev` (or run ci/setup.sh)");
    }

    let target = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let own = ARCHES.iter().find(|a| a.cargo == target).unwrap_or_else(|| {
        let known: Vec<&str> = ARCHES.iter().map(|a| a.cargo).collect();
        die(&format!("no probe build for target architecture {target} (supported: {})", known.join(", ")))
    });
    let all = env::var_os("CARGO_FEATURE_ALL_ARCHES").is_some();

    let clang = find_tool("clang", "clang");
    let objcopy = find_tool("llvm-objcopy", "llvm");
    for arch in ARCHES.iter().filter(|a| all || a.cargo == own.cargo) {
        let dir = out_dir.join(arch.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("creating {}: {e}", dir.display())));
        let note = dir.join("arch.note");
        std::fs::write(&note, arch_note(arch.name)).unwrap_or_else(|e| die(&format!("writing {}: {e}", note.display())));
        let build = Build { clang: &clang, objcopy: &objcopy, probes: &probes, arch, asm_dir: asm_dir(arch), note };
        if arch.cargo == own.cargo {
            // Test and benchmark fixtures (see probes/fixtures/): an object that exists to be
            // refused, and the synthetic producer of benches/ring_decode.rs and
            // benches/delivery.rs (ring and perf builds). None is a monitor; only the binary's
            // own architecture needs them.
            for (source, object, perf) in [
                ("rejected", "fixture_rejected", false),
                ("bench_producer", "fixture_bench_producer", false),
                ("bench_producer", "fixture_bench_producer_perf", true),
            ] {
                let fixture = probes.join(format!("fixtures/{source}.bpf.c"));
                println!("cargo:rerun-if-changed={}", fixture.display());
                build.compile(&fixture, &dir.join(format!("{object}.bpf.o")), perf);
            }
        }
        for monitor in MONITORS {
            let source = probes.join(format!("{monitor}.bpf.c"));
            println!("cargo:rerun-if-changed={}", source.display());
            build.compile(&source, &dir.join(format!("{monitor}.bpf.o")), false);
            build.compile(&source, &dir.join(format!("{monitor}.perf.bpf.o")), true);
        }
        // advanced: a third flavour with a BPF_MAP_TYPE_BLOOM_FILTER pre-filter (5.16+; ring
        // buffer only, as every kernel with bloom maps has ring buffers). advanced_bloom.bpf.c
        // includes advanced.bpf.c with TAPIO_ADVANCED_BLOOM defined; the loader picks it per kernel.
        let bloom = probes.join("advanced_bloom.bpf.c");
        println!("cargo:rerun-if-changed={}", bloom.display());
        build.compile(&bloom, &dir.join("advanced.bloom.bpf.o"), false);
    }
}
