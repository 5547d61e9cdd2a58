//! Compiles the C probes in `probes/` into BTF/CO-RE objects that `tapio-bundle` embeds.
//!
//! Each monitor is built twice, with a ring buffer and with a perf event array (`-DTAPIO_PERF`),
//! because a map's type cannot be changed once the object exists. The objects depend only on the
//! committed headers, never on the build machine's kernel, so any machine builds the same bundle.

use std::{
    env,
    path::{Path, PathBuf},
    process::{self, Command},
};

/// The monitors whose `<name>.bpf.c` is compiled.
const MONITORS: &[&str] = &["process", "network", "kernel", "dns", "security", "advanced", "xdp_filter", "cgroup_watch"];

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

fn compile(clang: &Path, strip: &Path, probes: &Path, source: &Path, out: &Path, perf: bool) {
    let mut cmd = Command::new(clang);
    cmd.args(["-target", "bpf", "-mcpu=v2", "-g", "-O2", "-Wall", "-Werror"])
        .arg("-D__TARGET_ARCH_x86")
        .arg("-I")
        .arg(probes.join("include"))
        // <linux/types.h> includes <asm/types.h>, which Debian keeps in the multiarch directory.
        .args(["-I", "/usr/include/x86_64-linux-gnu"]);
    if perf {
        cmd.arg("-DTAPIO_PERF");
    }
    cmd.arg("-c").arg(source).arg("-o").arg(out);
    let status = cmd.status().unwrap_or_else(|e| die(&format!("running {}: {e}", clang.display())));
    if !status.success() {
        die(&format!("clang failed on {}", source.display()));
    }
    // Drop DWARF, keep BTF: the embedded objects stay small.
    let status = Command::new(strip)
        .arg("-g")
        .arg(out)
        .status()
        .unwrap_or_else(|e| die(&format!("running {}: {e}", strip.display())));
    if !status.success() {
        die(&format!("llvm-strip failed on {}", out.display()));
    }
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

    let clang = find_tool("clang", "clang");
    let strip = find_tool("llvm-strip", "llvm");
    // Test and benchmark fixtures (see probes/fixtures/): an object that exists to be refused, and
    // the synthetic producer of benches/ring_decode.rs and benches/delivery.rs (ring and perf builds).
    // None is a monitor.
    for (source, object, perf) in [
        ("rejected", "fixture_rejected", false),
        ("bench_producer", "fixture_bench_producer", false),
        ("bench_producer", "fixture_bench_producer_perf", true),
    ] {
        let fixture = probes.join(format!("fixtures/{source}.bpf.c"));
        println!("cargo:rerun-if-changed={}", fixture.display());
        compile(&clang, &strip, &probes, &fixture, &out_dir.join(format!("{object}.bpf.o")), perf);
    }
    for monitor in MONITORS {
        let source = probes.join(format!("{monitor}.bpf.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        compile(&clang, &strip, &probes, &source, &out_dir.join(format!("{monitor}.bpf.o")), false);
        compile(&clang, &strip, &probes, &source, &out_dir.join(format!("{monitor}.perf.bpf.o")), true);
    }
    // advanced: a third flavour with a BPF_MAP_TYPE_BLOOM_FILTER pre-filter (5.16+; ring buffer
    // only, as every kernel with bloom maps has ring buffers). advanced_bloom.bpf.c includes
    // advanced.bpf.c with TAPIO_ADVANCED_BLOOM defined; the loader picks it per kernel.
    let bloom = probes.join("advanced_bloom.bpf.c");
    println!("cargo:rerun-if-changed={}", bloom.display());
    compile(&clang, &strip, &probes, &bloom, &out_dir.join("advanced.bloom.bpf.o"), false);
}
