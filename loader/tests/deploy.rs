//! The deployment files agree with the code: the ConfigMap's configuration is valid, and the
//! DaemonSet is not privileged and adds exactly the capabilities docs/operations.md documents.

use std::path::Path;

const DAEMONSET: &str = include_str!("../deploy/kubernetes/daemonset.yaml");
const OPERATIONS: &str = include_str!("../../docs/operations.md");

/// The block scalar under `tapio.toml: |`, de-indented.
fn configmap_toml() -> String {
    let mut lines = DAEMONSET.lines().skip_while(|l| l.trim() != "tapio.toml: |").skip(1);
    let first = lines.next().expect("tapio.toml block in the ConfigMap");
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent))
        .map(|l| l.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect()
}

#[test]
fn configmap_configuration_is_valid() {
    let text = configmap_toml();
    let partial = tapio_load::config::parse_str(Path::new("daemonset.yaml:tapio.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let config = tapio_load::config::Config::from_partial(partial).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(!config.sampling.is_empty(), "the ConfigMap should show the sampling rates");
}

#[test]
fn daemonset_is_unprivileged_with_the_documented_capabilities() {
    assert!(DAEMONSET.contains("privileged: false"), "the container must not be privileged");
    assert!(!DAEMONSET.contains("privileged: true"));
    assert!(DAEMONSET.contains("drop: [\"ALL\"]"), "capabilities must drop ALL first");
    let add = DAEMONSET
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: "))
        .expect("capabilities add line");
    let mut added: Vec<&str> = add.trim_matches(|c| c == '[' || c == ']').split(',').map(|c| c.trim().trim_matches('"')).collect();
    added.sort_unstable();
    assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"]);
    for cap in added {
        assert!(OPERATIONS.contains(&format!("`CAP_{cap}`")), "docs/operations.md does not document CAP_{cap}");
    }
}
