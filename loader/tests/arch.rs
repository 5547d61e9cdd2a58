//! The bundle per architecture (issue 18): every object records the architecture it was built
//! for in its note, its code agrees (the register frame bpf_tracing.h reads, and no other
//! architecture's syscall wrapper as a kprobe or fentry target), and `inspect` and `lint` show
//! and judge it for either architecture's bundle on this machine. The tests build tapio-load with
//! `all-arches` (the dev-dependency in Cargo.toml), so both bundles are embedded here.

use std::process::{Command, Output};

use rstest::rstest;
use serde_json::Value;
use tapio_bundle::{objects_for, Arch, OBJECTS};

fn tapio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapio-load")).args(args).output().expect("run tapio-load")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `inspect --json` with `args`: one value per object.
fn inspect(args: &[&str]) -> Vec<Value> {
    let out = tapio(&[&["inspect", "--json"], args].concat());
    assert!(out.status.success(), "tapio-load inspect {args:?}:\n{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    v.as_array().expect("an array of objects").clone()
}

fn object<'a>(objects: &'a [Value], file: &str) -> &'a Value {
    objects.iter().find(|o| o["file"] == file).unwrap_or_else(|| panic!("no {file} in the inspected bundle"))
}

/// The evidence lines of one object (`BTF struct user_pt_regs`, ...).
fn evidence(o: &Value) -> Vec<(String, String)> {
    o["arch"]["evidence"]
        .as_array()
        .expect("arch.evidence")
        .iter()
        .map(|e| (e["arch"].as_str().unwrap().to_owned(), e["what"].as_str().unwrap().to_owned()))
        .collect()
}

/// Every object of each bundle names the bundle's architecture in its note, shows no code of
/// another, and attaches to no other architecture's syscall wrapper (`__x64_sys_*` in an arm64
/// object is a kprobe on a function the arm64 kernel does not have).
#[rstest]
fn every_object_is_built_for_its_bundles_arch(#[values(Arch::X86_64, Arch::Arm64)] arch: Arch) {
    let objects = inspect(&["--arch", arch.name()]);
    assert_eq!(objects.len(), objects_for(arch).expect("bundle embedded with all-arches").len());
    let foreign: &[&str] = match arch {
        Arch::X86_64 => &["__arm64_sys_", "__arm64_compat_sys_"],
        Arch::Arm64 => &["__x64_sys_", "__ia32_sys_", "__x64_compat_sys_", "__ia32_compat_sys_"],
    };
    for o in &objects {
        let file = o["file"].as_str().unwrap();
        assert_eq!(o["arch"]["note"], serde_json::json!({"state": "arch", "arch": arch.name()}), "{file}: note");
        for (shows, what) in evidence(o) {
            assert_eq!(shows, arch.name(), "{file} ({arch} bundle) holds {what}, {shows} code");
        }
        for p in o["programs"].as_array().unwrap() {
            let target = p["attach_target"].as_str().unwrap();
            assert!(!foreign.iter().any(|f| target.starts_with(f)), "{file}: {} attaches to {target} in the {arch} bundle", p["name"]);
        }
    }
}

/// The objects that read registers were compiled for the architecture their note names: the
/// note alone could be right while the `-D__TARGET_ARCH_*` was wrong. x86 reads `pt_regs` by its
/// kernel names (`di`); arm64 casts a kprobe's context to `user_pt_regs` and reads a syscall's
/// first argument from `orig_x0` through libbpf's `pt_regs___arm64`.
#[rstest]
#[case::x86_64(Arch::X86_64, &[("network.bpf.o", "BTF struct pt_regs"), ("security.bpf.o", "BTF struct pt_regs"), ("advanced.bpf.o", "BTF struct pt_regs")])]
#[case::arm64(Arch::Arm64, &[("network.bpf.o", "BTF struct user_pt_regs"), ("security.bpf.o", "BTF struct user_pt_regs"), ("advanced.bpf.o", "BTF struct pt_regs___arm64")])]
fn register_code_is_the_arch_own(#[case] arch: Arch, #[case] expected: &[(&str, &str)]) {
    let objects = inspect(&["--arch", arch.name()]);
    for (file, what) in expected {
        let found = evidence(object(&objects, file));
        assert!(found.contains(&(arch.name().to_owned(), (*what).to_owned())), "{file} ({arch}): expected {what}, found {found:?}");
    }
}

/// The text output names the architecture on every object's line.
#[test]
fn inspect_text_shows_each_objects_arch() {
    let out = tapio(&["inspect", "--arch", "aarch64"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let heads: Vec<&str> = stdout.lines().filter(|l| l.contains(".bpf.o")).collect();
    assert_eq!(heads.len(), OBJECTS.len(), "{stdout}");
    assert!(heads.iter().all(|l| l.contains(" arch=arm64 ")), "{stdout}");
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
}

/// The embedded bundle (no --arch) is the binary's own architecture's.
#[test]
fn the_default_bundle_is_the_binarys_arch() {
    let own = Arch::this().expect("a supported architecture");
    assert_eq!(Arch::TARGET, own);
    assert!(OBJECTS.iter().all(|o| o.arch == own));
    for o in inspect(&[]) {
        assert_eq!(o["arch"]["note"]["arch"], own.name(), "{}", o["file"]);
    }
}

/// Each bundle lints clean for its own architecture, and the summary counts it.
#[rstest]
fn each_bundle_lints_clean(#[values("x86_64", "arm64")] arch: &str, #[values("4.19", "5.8")] min: &str) {
    let out = tapio(&["lint", "--min-kernel", min, "--arch", arch]);
    let output = text(&out);
    assert!(out.status.success(), "lint --min-kernel {min} --arch {arch}:\n{output}");
    assert!(output.contains(&format!("arch    {arch}: ")), "{output}");
    assert!(output.contains("0 arch problems"), "{output}");
}

/// An x86 object handed to the arm64 lint fails it, naming the object and both architectures.
#[test]
fn an_object_of_the_other_arch_fails_the_lint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let x86 = objects_for(Arch::X86_64).unwrap().iter().find(|o| o.file == "security.bpf.o").unwrap();
    let path = dir.path().join("security.bpf.o");
    std::fs::write(&path, x86.bytes).expect("write");
    let p = path.to_str().unwrap();
    let out = tapio(&["lint", "--min-kernel", "5.8", "--arch", "arm64", "--object", p]);
    let output = text(&out);
    assert!(!out.status.success(), "an x86_64 object passed the arm64 lint:\n{output}");
    assert!(output.contains(&format!("ARCH    {p}: built for x86_64, expected arm64")), "{output}");
    // The same file without --arch is judged on its own: its note and code agree.
    let out = tapio(&["lint", "--min-kernel", "5.8", "--object", p]);
    assert!(out.status.success(), "{}", text(&out));
}

/// An object whose note says arm64 but whose code was compiled for x86 (the wrong
/// `-D__TARGET_ARCH_*` under the right note) is caught by its code: inspect says so, and the
/// arm64 lint fails on the x86 `pt_regs`.
#[test]
fn a_note_the_code_contradicts_is_caught() {
    let x86 = objects_for(Arch::X86_64).unwrap().iter().find(|o| o.file == "network.bpf.o").unwrap();
    // The note as build.rs writes it: namesz 6, descsz 7, type 1, "tapio\0" and "x86_64\0", each
    // padded to 4 bytes. "arm64\0" pads to the same 8 bytes, so the section keeps its size.
    let mut from = vec![6, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0];
    from.extend_from_slice(b"tapio\0\0\0x86_64\0\0");
    let mut to = vec![6, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0];
    to.extend_from_slice(b"tapio\0\0\0arm64\0\0\0");
    let at = x86.bytes.windows(from.len()).position(|w| w == from).expect("the x86_64 note in network.bpf.o");
    let mut bytes = x86.bytes.to_vec();
    bytes[at..at + to.len()].copy_from_slice(&to);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("network.bpf.o");
    std::fs::write(&path, &bytes).expect("write");
    let p = path.to_str().unwrap();

    let out = tapio(&["inspect", "--object", p]);
    let output = text(&out);
    assert!(output.contains("arch=arm64 (contradicted by its code)"), "{output}");
    assert!(output.contains("arch PROBLEM: BTF struct pt_regs is x86_64 code, not arm64"), "{output}");
    let out = tapio(&["lint", "--min-kernel", "5.8", "--arch", "arm64", "--object", p]);
    let output = text(&out);
    assert!(!out.status.success() && output.contains("BTF struct pt_regs is x86_64 code, not arm64"), "{output}");
}

/// --arch takes the names the architecture goes by.
#[rstest]
fn arch_names(#[values("arm64", "aarch64", "x86_64", "amd64")] name: &str) {
    let out = tapio(&["lint", "--min-kernel", "6.1", "--arch", name]);
    assert!(out.status.success(), "--arch {name}: {}", text(&out));
}

/// --arch refuses other names, naming the known ones.
#[test]
fn unknown_arch_names_are_refused() {
    let out = tapio(&["inspect", "--arch", "riscv64"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown architecture \"riscv64\" (known: x86_64, arm64)"), "{}", text(&out));
}

/// `btf minimize --arch` minimizes for that architecture's bundle: on this x86_64 kernel's BTF
/// the arm64 objects' register reads (`user_pt_regs`, `orig_x0`) find nothing to relocate
/// against, where the x86_64 objects' (`pt_regs.di`) do, so more relocations go unmatched.
#[test]
fn btf_minimize_takes_the_arch_bundle() {
    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
    if std::env::consts::ARCH != "x86_64" || !std::path::Path::new(VMLINUX).exists() {
        // The comparison below holds for an x86_64 kernel's BTF, which every host of this
        // project's CI runs (5.4+ with CONFIG_DEBUG_INFO_BTF).
        println!("SKIP btf_minimize_takes_the_arch_bundle: needs an x86_64 kernel with {VMLINUX}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unmatched = |arch: &str| -> u64 {
        let out_file = dir.path().join(format!("{arch}.btf"));
        let out = tapio(&["btf", "minimize", "--from", VMLINUX, "--out", out_file.to_str().unwrap(), "--arch", arch]);
        let output = text(&out);
        assert!(out.status.success(), "btf minimize --arch {arch}:\n{output}");
        let count = output.split(" CO-RE relocations (").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok());
        count.unwrap_or_else(|| panic!("no unmatched count in: {output}"))
    };
    let (x86, arm64) = (unmatched("x86_64"), unmatched("arm64"));
    assert!(arm64 > x86, "arm64 bundle: {arm64} unmatched, x86_64 bundle: {x86}, on this x86_64 kernel");
}
