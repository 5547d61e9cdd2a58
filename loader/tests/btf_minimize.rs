//! `tapio-load btf minimize`: the minimized BTF is small, well-formed, and relocates the bundle
//! as the kernel's own BTF does: every program the verifier accepts with the full BTF it accepts
//! with the minimized file, after the same number of verified instructions.

mod common;

use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;
use tapio_object::{btf::Btf, btf_minimize::{self, ObjectInput}};
use tapio_bundle as bundle;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// bpftool's minimized files for a handful of tools are a few KB to tens of KB; ours must be too.
const MAX_BYTES: usize = 64 * 1024;

fn skip_without_vmlinux(test: &str) -> bool {
    if !Path::new(VMLINUX).exists() {
        common::skip_for_kernel(test, &tapio_kernel_gates::Needs::one("vmlinux btf"), format!("no {VMLINUX}"));
        return true;
    }
    false
}

fn bundle_inputs() -> Vec<ObjectInput<'static>> {
    bundle::OBJECTS.iter().map(|o| ObjectInput { file: o.file, bytes: o.bytes }).collect()
}

fn tapio_load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run tapio-load {args:?}: {e}"))
}

#[test]
fn minimized_vmlinux_is_small_and_parses() {
    if skip_without_vmlinux("minimized_vmlinux_is_small_and_parses") {
        return;
    }
    let full = std::fs::read(VMLINUX).expect("read vmlinux btf");
    let m = btf_minimize::minimize(&full, &bundle_inputs()).expect("minimize");
    println!(
        "minimized {VMLINUX}: {} bytes ({} of {} types) for {} relocations, {} unmatched",
        m.bytes.len(),
        m.types_kept,
        m.types_total,
        m.relocations,
        m.unmatched
    );
    assert!(m.bytes.len() < MAX_BYTES, "minimized btf is {} bytes, want < {MAX_BYTES}", m.bytes.len());
    assert!(m.relocations > 0 && m.types_kept > 0);

    let parsed = Btf::parse(&m.bytes).expect("our own btf reader parses the output");
    assert_eq!(parsed.len(), m.types_kept);
    // Structs keep their real size with only the members the bundle reads.
    let full_btf = Btf::parse(&full).unwrap();
    let small = parsed.struct_layout("task_struct").expect("task_struct kept");
    let large = full_btf.struct_layout("task_struct").unwrap();
    assert_eq!(small.size, large.size);
    assert!(small.fields.len() < large.fields.len());
    for field in &small.fields {
        assert!(large.fields.contains(field), "task_struct member {field:?} moved");
    }

    // bpftool, when installed, reads it too.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("min.btf");
    std::fs::write(&out, &m.bytes).unwrap();
    match Command::new("bpftool").args(["btf", "dump", "file"]).arg(&out).output() {
        Ok(dump) => assert!(dump.status.success(), "bpftool btf dump: {}", String::from_utf8_lossy(&dump.stderr)),
        Err(e) => println!("bpftool not run: {e}"),
    }
}

#[test]
fn object_files_give_the_same_result_as_the_bundle() {
    if skip_without_vmlinux("object_files_give_the_same_result_as_the_bundle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["btf".to_owned(), "minimize".to_owned(), "--from".to_owned(), VMLINUX.to_owned()];
    let from_files = dir.path().join("files.btf");
    args.extend(["--out".to_owned(), from_files.display().to_string()]);
    for o in bundle::OBJECTS {
        let path = dir.path().join(o.file);
        std::fs::write(&path, o.bytes).unwrap();
        args.extend(["--object".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = tapio_load(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let from_bundle = dir.path().join("bundle.btf");
    let run = tapio_load(&["btf", "minimize", "--from", VMLINUX, "--out", from_bundle.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read(from_files).unwrap(), std::fs::read(from_bundle).unwrap());
}

/// (monitor, program) -> (accepted, skipped, verified instructions), from `check --json`.
fn check(btf: Option<&Path>) -> BTreeMap<(String, String), (bool, bool, Option<u64>)> {
    let mut args = vec!["check", "--json"];
    let btf_arg;
    if let Some(path) = btf {
        btf_arg = path.display().to_string();
        args.extend(["--btf", &btf_arg]);
    }
    let out = tapio_load(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tapio-load {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("check --json: {e}: {stdout}"));
    results
        .iter()
        .map(|r| {
            (
                (r["monitor"].as_str().unwrap().to_owned(), r["program"].as_str().unwrap().to_owned()),
                (
                    r["accepted"].as_bool().unwrap_or(false),
                    r.get("skipped").is_some_and(|s| !s.is_null()),
                    r["verified_insns"].as_u64(),
                ),
            )
        })
        .collect()
}

#[test]
fn check_accepts_every_program_with_the_minimized_btf() {
    if skip_without_vmlinux("check_accepts_every_program_with_the_minimized_btf")
        || common::skip_unless_root("check_accepts_every_program_with_the_minimized_btf")
    {
        return;
    }
    let _kernel = common::kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("min.btf");
    let run = tapio_load(&["btf", "minimize", "--from", VMLINUX, "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let size = std::fs::metadata(&out).unwrap().len();
    println!("{}", String::from_utf8_lossy(&run.stdout).trim());
    assert!((size as usize) < MAX_BYTES, "minimized btf is {size} bytes");

    let with_kernel = check(None);
    let with_minimized = check(Some(&out));
    assert!(!with_minimized.is_empty());
    for (program, verdict) in &with_minimized {
        let (accepted, skipped, _) = verdict;
        assert!(*accepted || *skipped, "{program:?} rejected with the minimized btf");
    }
    // Same relocations, same code: the verifier walks the same number of instructions.
    assert_eq!(with_kernel, with_minimized, "check differs between kernel btf and minimized btf");
}
