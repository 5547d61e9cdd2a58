//! The host side's roles use each other only the way docs/architecture.md says: `vm` uses no
//! other role, `artifacts` reads `kernels`, `report` reads `vm` and `kernels`, `kernels` borrows
//! only fetch's HTTP agent, and no role reaches back into `matrix` or `ui`, which run them.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// (role, the other top-level modules its files may name through `crate::`).
const RULES: &[(&str, &[&str])] = &[
    ("kernels", &["artifacts::fetch::http_agent"]),
    ("artifacts", &["kernels"]),
    ("vm", &[]),
    ("report", &["kernels", "vm"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every path named after `crate::`, with a `use crate::{a::b, c}` group split into its members.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's members at depth 0, each up to its `,` or the closing brace.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(group[start..i].trim().to_owned());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(group[start..i].trim().to_owned());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_owned());
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

#[test]
fn roles_use_each_other_only_as_documented() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let roles: BTreeSet<&str> = RULES.iter().map(|(r, _)| *r).collect();
    let mut broken = Vec::new();
    for (role, allowed) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(role), &mut files);
        assert!(!files.is_empty(), "no files under src/{role}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            for path in crate_paths(&text) {
                let top = path.split("::").next().unwrap_or_default();
                let ok = top == *role
                    || (!roles.contains(top) && top != "matrix" && top != "ui")
                    || allowed.iter().any(|a| path == *a || path.starts_with(&format!("{a}::")));
                if !ok {
                    broken.push(format!("{}: crate::{path}", file.strip_prefix(&src).unwrap_or(&file).display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "a role uses what docs/architecture.md does not allow it:\n{}", broken.join("\n"));
}

#[test]
fn crate_paths_splits_groups() {
    let text = "use crate::{report::{first_line, Row}, vm::console::Splat};\nlet a = crate::kernels::apt::discover_mirror();";
    assert_eq!(crate_paths(text), ["report::{first_line, Row}", "vm::console::Splat", "kernels::apt::discover_mirror"]);
}
