//! The workspace's crates keep to their paragraphs in docs/architecture.md: no cycle between
//! them, and no crate depending on what its paragraph forbids. Reads `cargo metadata` (the
//! resolved graph, so a forbidden crate pulled in through another is caught too) and judges it
//! against [`RULES`], the one table of who may use what.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What one workspace crate may depend on.
struct Rule {
    krate: &'static str,
    /// Workspace crates it may depend on directly (normal and build dependencies).
    may_use: &'static [&'static str],
    /// Workspace crates its tests and benches may use besides [`Rule::may_use`].
    tests_may_use: &'static [&'static str],
    /// Crates that must not be in its normal dependency tree, directly or through another crate.
    forbids: &'static [&'static str],
}

/// The rules: anyhow, clap, tracing-subscriber and toml (the agent's CLI, logging set-up and
/// configuration) live in the agent and the harness only; aya (the runtime) only in the runtime,
/// the agent and the guest, and in the feature probes for `aya::sys`'s own probes (so the test
/// kit, which uses the features crate for cgroup2, builds against aya too, and is kept from the
/// runtime by its `may_use`); the decoder depends on no eBPF crate at all (aya-obj and object
/// are parsers, fine for the object tools); the ABI mirrors depend on nothing at all.
const RULES: &[Rule] = &[
    // The records' repr(C) mirrors: plain data every reader shares, so it pulls in nothing; its
    // layout test reads the objects' BTF through the object tools.
    Rule {
        krate: "tapio-abi",
        may_use: &[],
        tests_may_use: &["tapio-object", "tapio-bundle"],
        forbids: &["aya", "aya-obj", "object", "tokio", "tonic", "serde", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-kernel-gates",
        may_use: &[],
        tests_may_use: &[],
        forbids: &["aya", "aya-obj", "object", "tokio", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    // The embedded objects, keyed by the one `Arch` type, which the gates own because they depend
    // on nothing of ours (the harness, the object tools and the judge name architectures too).
    Rule {
        krate: "tapio-bundle",
        may_use: &["tapio-kernel-gates"],
        tests_may_use: &[],
        forbids: &["aya", "aya-obj", "object", "tokio", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    // The monitors as data: read by the runtime, the lint, the agent and the harness's guest, so
    // it builds against nothing of theirs (no aya, no parsers); the gates name its features.
    Rule {
        krate: "tapio-catalog",
        may_use: &["tapio-kernel-gates"],
        tests_may_use: &[],
        forbids: &["aya", "aya-obj", "object", "tokio", "tonic", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    // The object tools; the lint judges a group's alternative paths by the catalog's groups, and
    // an object's architecture note names the gates' `Arch`.
    Rule {
        krate: "tapio-object",
        may_use: &["tapio-catalog", "tapio-kernel-gates"],
        tests_may_use: &["tapio-bundle"],
        forbids: &["aya", "tokio", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-features",
        may_use: &["tapio-object", "tapio-kernel-gates"],
        tests_may_use: &[],
        forbids: &["tokio", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-decode",
        may_use: &["tapio-abi"],
        tests_may_use: &[],
        forbids: &["aya", "aya-obj", "object", "tokio", "tonic", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    // The CRI client: gRPC to the node's runtime and nothing of the agent's; it knows container
    // ids as strings and never the events (the agent puts its answers on them). anyhow is not
    // forbidden: prost-derive, a proc macro of the generated bindings, uses it at compile time
    // only (nothing of it is linked into the crate).
    Rule {
        krate: "tapio-cri",
        may_use: &[],
        tests_may_use: &[],
        forbids: &["aya", "aya-obj", "object", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-runtime",
        may_use: &[
            "tapio-abi",
            "tapio-catalog",
            "tapio-bundle",
            "tapio-object",
            "tapio-features",
            "tapio-decode",
            "tapio-kernel-gates",
        ],
        tests_may_use: &[],
        forbids: &["tonic", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-testkit",
        may_use: &["tapio-features"],
        tests_may_use: &[],
        forbids: &["tokio", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-load",
        may_use: &[
            "tapio-abi",
            "tapio-bundle",
            "tapio-object",
            "tapio-features",
            "tapio-decode",
            "tapio-runtime",
            "tapio-testkit",
            "tapio-kernel-gates",
            "tapio-cri",
        ],
        tests_may_use: &[],
        forbids: &[],
    },
    Rule { krate: "tapio-matrix-protocol", may_use: &["tapio-kernel-gates"], tests_may_use: &[], forbids: &["aya", "anyhow", "clap"] },
    // The scenarios, written once: run by the guest and by the guest's host tests. It speaks the
    // protocol's typed lines; it never reaches the agent, the harness or the snapshot store (the
    // callers compare the snapshots it returns).
    Rule {
        krate: "tapio-scenarios",
        may_use: &["tapio-decode", "tapio-features", "tapio-runtime", "tapio-testkit", "tapio-matrix-protocol"],
        tests_may_use: &[],
        forbids: &["tapio-load", "verifier-matrix", "tapio-snapshots", "anyhow", "clap", "tracing-subscriber", "toml"],
    },
    Rule {
        krate: "tapio-guest",
        may_use: &[
            "tapio-bundle",
            "tapio-decode",
            "tapio-features",
            "tapio-runtime",
            "tapio-scenarios",
            "tapio-matrix-protocol",
            "tapio-kernel-gates",
        ],
        tests_may_use: &["tapio-snapshots"],
        forbids: &["anyhow", "tracing-subscriber", "toml"],
    },
    // The decoded-event snapshots and their insta comparison (snapshots/ is this package).
    Rule { krate: "tapio-snapshots", may_use: &[], tests_may_use: &[], forbids: &["aya", "aya-obj", "tokio", "clap"] },
    Rule {
        krate: "verifier-matrix",
        may_use: &["tapio-matrix-protocol", "tapio-kernel-gates", "tapio-snapshots"],
        tests_may_use: &[],
        forbids: &["aya"],
    },
];

/// One dependency edge: the crate depended on and whether only tests and benches use it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Dep {
    name: String,
    dev_only: bool,
}

/// The resolved graph: every package by name, with its dependencies; `members` are the
/// workspace's own crates.
#[derive(Debug, Default)]
struct Graph {
    members: BTreeSet<String>,
    deps: BTreeMap<String, Vec<Dep>>,
}

impl Graph {
    /// Builds the graph from `cargo metadata --format-version 1` output.
    fn from_metadata(v: &Value) -> Self {
        let name_of: BTreeMap<&str, &str> = v["packages"]
            .as_array()
            .expect("metadata packages")
            .iter()
            .map(|p| (p["id"].as_str().expect("package id"), p["name"].as_str().expect("package name")))
            .collect();
        let mut g = Graph::default();
        for id in v["workspace_members"].as_array().expect("workspace_members") {
            g.members.insert(name_of[id.as_str().expect("member id")].to_owned());
        }
        for node in v["resolve"]["nodes"].as_array().expect("metadata resolve (run without --no-deps)") {
            let from = name_of[node["id"].as_str().expect("node id")].to_owned();
            let deps = node["deps"].as_array().expect("node deps").iter().map(|d| {
                let kinds = d["dep_kinds"].as_array().expect("dep_kinds");
                let dev_only = !kinds.is_empty() && kinds.iter().all(|k| k["kind"].as_str() == Some("dev"));
                Dep { name: name_of[d["pkg"].as_str().expect("dep pkg")].to_owned(), dev_only }
            });
            g.deps.entry(from).or_default().extend(deps);
        }
        g
    }

    fn edge(&mut self, from: &str, to: &str, dev_only: bool) {
        self.deps.entry(from.to_owned()).or_default().push(Dep { name: to.to_owned(), dev_only });
    }

    /// Every crate `krate` builds against outside tests, directly or through another.
    fn normal_closure(&self, krate: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![krate.to_owned()];
        while let Some(k) = todo.pop() {
            for d in self.deps.get(&k).into_iter().flatten().filter(|d| !d.dev_only) {
                if seen.insert(d.name.clone()) {
                    todo.push(d.name.clone());
                }
            }
        }
        seen
    }

    /// A cycle between workspace crates (any kind of dependency), as the path that closes it.
    fn member_cycle(&self) -> Option<Vec<String>> {
        fn visit(g: &Graph, k: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == k) {
                let mut cycle = path[at..].to_vec();
                cycle.push(k.to_owned());
                return Some(cycle);
            }
            if done.contains(k) {
                return None;
            }
            path.push(k.to_owned());
            for d in g.deps.get(k).into_iter().flatten().filter(|d| g.members.contains(&d.name) && d.name != k) {
                if let Some(c) = visit(g, &d.name, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(k.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        self.members.iter().find_map(|m| visit(self, m, &mut Vec::new(), &mut done))
    }
}

/// Every breach of `rules` in `g`, one line each; empty when the graph keeps to them.
fn check(g: &Graph, rules: &[Rule]) -> Vec<String> {
    let mut breaches = Vec::new();
    if let Some(cycle) = g.member_cycle() {
        breaches.push(format!("cycle between workspace crates: {}", cycle.join(" -> ")));
    }
    for member in &g.members {
        let Some(rule) = rules.iter().find(|r| r.krate == *member) else {
            breaches.push(format!("{member}: no rule: add its row to RULES and its paragraph to docs/architecture.md"));
            continue;
        };
        for d in g.deps.get(member).into_iter().flatten().filter(|d| g.members.contains(&d.name)) {
            let allowed = rule.may_use.contains(&d.name.as_str()) || (d.dev_only && rule.tests_may_use.contains(&d.name.as_str()));
            if !allowed {
                let how = if d.dev_only { "dev-dependency" } else { "dependency" };
                breaches.push(format!("{member}: {how} on {} is not in its rule's may_use", d.name));
            }
        }
        let closure = g.normal_closure(member);
        for forbidden in rule.forbids {
            if closure.contains(*forbidden) {
                breaches.push(format!("{member}: depends on {forbidden}, which its rule forbids"));
            }
        }
    }
    breaches.sort();
    breaches.dedup();
    breaches
}

#[test]
fn workspace_crates_keep_to_their_rules() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--manifest-path", manifest])
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata output is JSON");
    let g = Graph::from_metadata(&v);
    assert!(g.members.contains("tapio-decode") && g.members.len() >= RULES.len(), "members: {:?}", g.members);
    let breaches = check(&g, RULES);
    assert!(breaches.is_empty(), "the crate rules (tests/crate_rules.rs, docs/architecture.md) are broken:\n{}", breaches.join("\n"));
}

/// Each loader crate says in its lib.rs doc what it owns and what it may not import.
#[test]
fn every_loader_crate_documents_what_it_may_not_import() {
    let loader = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut libs = vec![loader.join("src/lib.rs")];
    for entry in std::fs::read_dir(loader.join("crates")).expect("read loader/crates") {
        libs.push(entry.expect("crate dir").path().join("src/lib.rs"));
    }
    for lib in libs {
        let text = std::fs::read_to_string(&lib).unwrap_or_else(|e| panic!("read {}: {e}", lib.display()));
        let doc: String = text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n").to_lowercase();
        assert!(
            doc.contains("owns") && doc.contains("may not import"),
            "{}: the crate doc must say what the crate owns and what it may not import",
            lib.display()
        );
    }
}

/// A fake graph: the rules as they stand, then one breach of each kind.
fn fake() -> Graph {
    let mut g = Graph::default();
    for r in RULES {
        g.members.insert(r.krate.to_owned());
        for d in r.may_use {
            g.edge(r.krate, d, false);
        }
    }
    g.edge("tapio-runtime", "aya", false);
    g.edge("tapio-runtime", "tokio", false);
    g.edge("tapio-features", "aya", false);
    g.edge("aya", "libc", false);
    g
}

#[test]
fn the_checker_passes_a_graph_that_keeps_the_rules() {
    assert_eq!(check(&fake(), RULES), Vec::<String>::new());
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut g = fake();
    g.edge("tapio-object", "tapio-features", false);
    let breaches = check(&g, RULES);
    assert!(
        breaches.iter().any(|b| b.starts_with("cycle between workspace crates: ") && b.contains("tapio-features -> tapio-object -> tapio-features")),
        "{breaches:?}"
    );
    // A test-only edge closes a cycle too: cargo would build it, but the layering is gone.
    let mut g = fake();
    g.edge("tapio-bundle", "tapio-load", true);
    assert!(check(&g, RULES).iter().any(|b| b.starts_with("cycle between workspace crates: ")));
}

/// One breach each: the edges added to the rules' own graph, and the line the checker must give.
#[rstest::rstest]
#[case::forbidden_directly(&[("tapio-decode", "aya", false)], "tapio-decode: depends on aya, which its rule forbids")]
#[case::workspace_crate_not_in_may_use(&[("tapio-testkit", "tapio-runtime", false)], "tapio-testkit: dependency on tapio-runtime is not in its rule's may_use")]
#[case::forbidden_through_a_workspace_crate(&[("tapio-testkit", "tapio-runtime", false)], "tapio-testkit: depends on tokio, which its rule forbids")]
#[case::forbidden_through_another_crate(&[("tapio-features", "helper", false), ("helper", "anyhow", false)], "tapio-features: depends on anyhow, which its rule forbids")]
#[case::dev_dependency_not_in_tests_may_use(&[("tapio-object", "tapio-decode", true)], "tapio-object: dev-dependency on tapio-decode is not in its rule's may_use")]
#[case::abi_takes_not_even_serde(&[("tapio-abi", "serde", false)], "tapio-abi: depends on serde, which its rule forbids")]
#[case::catalog_takes_no_aya(&[("tapio-catalog", "aya", false)], "tapio-catalog: depends on aya, which its rule forbids")]
fn the_checker_finds_forbidden_crates_directly_and_through_another(#[case] edges: &[(&str, &str, bool)], #[case] want: &str) {
    let mut g = fake();
    for &(from, to, dev_only) in edges {
        g.edge(from, to, dev_only);
    }
    let breaches = check(&g, RULES);
    assert!(breaches.iter().any(|b| b == want), "missing {want:?} in {breaches:?}");
}

/// A dev-dependency its rule's `tests_may_use` names is no breach.
#[test]
fn the_checker_allows_what_tests_may_use() {
    let mut g = fake();
    g.edge("tapio-object", "tapio-bundle", true);
    let breaches = check(&g, RULES);
    assert!(!breaches.iter().any(|b| b.contains("tapio-object: dev-dependency on tapio-bundle")), "{breaches:?}");
}

#[test]
fn the_checker_wants_a_rule_for_every_crate() {
    let mut g = fake();
    g.members.insert("tapio-new".to_owned());
    assert!(check(&g, RULES).iter().any(|b| b.starts_with("tapio-new: no rule")));
}
