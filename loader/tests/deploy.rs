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

/// `tapio-load config check` on a file: its exit status and output.
fn config_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tapio.toml");
    std::fs::write(&file, text).expect("write the ConfigMap's file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["config", "check"])
        .arg(&file)
        // `config check` applies TAPIO_<KEY> too: the test's own environment must not.
        .env_clear()
        .output()
        .expect("run tapio-load config check");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The shipped ConfigMap passes `config check`, which refuses keys nothing reads: every key in
/// it is acted on.
#[test]
fn configmap_passes_config_check() {
    let text = configmap_toml();
    let (ok, out) = config_check(&text);
    assert!(ok && out.trim() == "ok", "tapio-load config check refused the shipped ConfigMap:\n{out}\n{text}");
    let partial = tapio_load::config::parse_str(Path::new("daemonset.yaml:tapio.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    tapio_load::config::Config::from_partial(partial).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

/// The ConfigMap's commented advanced block is valid once uncommented with the advanced monitor
/// enabled, as its comment says, and without it is refused with the reason.
#[test]
fn configmap_advanced_block_works_as_its_comment_says() {
    let text = configmap_toml();
    let uncommented: String = text
        .lines()
        .map(|l| {
            let body = l.strip_prefix("# ").unwrap_or(l);
            let is_setting = body.starts_with('[') || body.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '));
            if l.starts_with("# ") && is_setting { body.to_owned() } else { l.to_owned() }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.contains("[syscall_sampling]"), "no advanced block in the ConfigMap:\n{text}");
    let (ok, out) = config_check(&uncommented);
    assert!(!ok && out.contains("refused: nothing reads it"), "advanced keys without the advanced monitor must be refused:\n{out}");
    let enabled = uncommented.replacen("monitors = [\"process\", \"dns\"]", "monitors = [\"process\", \"dns\", \"advanced\"]", 1);
    let (ok, out) = config_check(&enabled);
    assert!(ok, "the advanced block with the advanced monitor enabled:\n{out}\n{enabled}");
    let c = tapio_load::config::Config::from_partial(tapio_load::config::parse_str(Path::new("t"), &enabled).expect("parse")).expect("valid");
    assert!(!c.sampling.is_empty() && !c.syscall_sampling.is_empty(), "the block shows the sampling rates");
}

/// The manifest states its seccomp profile (a kubelet with SeccompDefault would otherwise apply
/// the runtime's default, which refuses bpf(2) to this capability set), with the reason.
#[test]
fn daemonset_states_its_seccomp_profile() {
    let lines: Vec<&str> = DAEMONSET.lines().collect();
    let at = lines.iter().position(|l| l.trim() == "seccompProfile:").expect("a seccompProfile in the container's securityContext");
    assert_eq!(lines.get(at + 1).map(|l| l.trim()), Some("type: Unconfined"), "{}", lines[at..].join("\n"));
    let reason: String = lines[..at].iter().rev().take_while(|l| l.trim().starts_with('#')).copied().collect();
    assert!(reason.contains("bpf(2)") && reason.contains("EPERM"), "the profile's reason is missing above it");
    assert!(OPERATIONS.contains("seccompProfile"), "docs/operations.md does not explain the seccomp profile");
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

/// `(name, path)` of each `- name:` item followed by a `key:` line, in the order they appear.
fn named_paths(key: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = DAEMONSET.lines().map(str::trim).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("- name: ") else { continue };
        let path = lines[i + 1..].iter().take(3).find_map(|l| l.strip_prefix(key));
        if let Some(path) = path {
            out.push((name.to_owned(), path.trim().to_owned()));
        }
    }
    out
}

#[test]
fn daemonset_mounts_the_nodes_cgroup_root_and_the_cri_socket_directories() {
    let mounts = named_paths("mountPath: ");
    let host_paths = named_paths("path: ");
    let mount = |name: &str| mounts.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_str());
    let host = |name: &str| host_paths.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_str());
    // The node's hierarchy, beside (not over) the pod's own /sys/fs/cgroup: the loader tells
    // them apart by their roots in mountinfo (tapio_features::cgroup2).
    assert_eq!(host("cgroup"), Some("/sys/fs/cgroup"));
    assert_eq!(mount("cgroup"), Some("/host/sys/fs/cgroup"));
    // Every probed CRI socket under /run is inside a directory the pod mounts at the same path.
    for socket in tapio_cri::DEFAULT_SOCKETS.iter().filter(|s| s.starts_with("/run/")) {
        let dir = Path::new(socket).parent().unwrap().to_str().unwrap();
        let (name, _) = mounts.iter().find(|(_, p)| p == dir).unwrap_or_else(|| panic!("{socket}: its directory {dir} is not mounted"));
        assert_eq!(host(name), Some(dir), "{socket}: the volume {name} is not the node's {dir}");
    }
    // Each of these mounts says why it is there, in the comment above it.
    let lines: Vec<&str> = DAEMONSET.lines().collect();
    for name in ["cgroup", "containerd"] {
        let at = lines.iter().position(|l| l.trim() == format!("- name: {name}")).unwrap();
        assert!(lines[at - 1].trim_start().starts_with('#'), "volumeMount {name} has no comment giving its reason");
    }
}
