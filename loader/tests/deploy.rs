//! The deployment files agree with the code: the ConfigMap's configuration is valid, the
//! DaemonSet is not privileged and adds exactly the capabilities docs/operations.md documents,
//! and the image is built for every architecture the probes are, the DaemonSet running only there.

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
}

/// Each of these mounts says why it is there, in the comment above it.
#[rstest::rstest]
fn daemonset_mounts_give_their_reason(#[values("cgroup", "containerd")] name: &str) {
    let lines: Vec<&str> = DAEMONSET.lines().collect();
    let at = lines.iter().position(|l| l.trim() == format!("- name: {name}")).unwrap_or_else(|| panic!("no volumeMount {name}"));
    assert!(lines[at - 1].trim_start().starts_with('#'), "volumeMount {name} has no comment giving its reason");
}

const CONTAINERFILE: &str = include_str!("../deploy/Containerfile");
const SETUP: &str = include_str!("../../ci/setup.sh");

/// Kubernetes' (and Debian's, and the image platforms') name of a bundle architecture.
fn kubernetes_arch(arch: tapio_bundle::Arch) -> &'static str {
    match arch {
        tapio_bundle::Arch::X86_64 => "amd64",
        tapio_bundle::Arch::Arm64 => "arm64",
    }
}

/// The Containerfile's architectures: each `TARGETARCH) target=<rust target> ;;` arm.
fn containerfile_targets() -> Vec<(String, String)> {
    CONTAINERFILE
        .lines()
        .filter_map(|l| {
            let (arch, rest) = l.trim().split_once(") target=")?;
            let target = rest.split_whitespace().next()?;
            Some((arch.to_owned(), target.to_owned()))
        })
        .collect()
}

/// The image is built for every architecture the probes are built for, each through the Rust
/// target of that architecture, which ci/setup.sh installs; the build stage runs on the
/// builder's platform and cross-compiles (no emulated compiler), the final stage is empty.
#[test]
fn containerfile_builds_every_architecture() {
    let targets = containerfile_targets();
    let mut arches: Vec<&str> = targets.iter().map(|(a, _)| a.as_str()).collect();
    arches.sort_unstable();
    let mut expected: Vec<&str> = tapio_bundle::Arch::ALL.iter().map(|&a| kubernetes_arch(a)).collect();
    expected.sort_unstable();
    assert_eq!(arches, expected, "the Containerfile's TARGETARCH arms");
    for (arch, target) in &targets {
        let bundle = tapio_bundle::Arch::ALL.into_iter().find(|&a| kubernetes_arch(a) == arch).expect("a bundle architecture");
        let rust_arch = target.split('-').next().unwrap_or_default();
        assert_eq!(rust_arch.parse::<tapio_bundle::Arch>(), Ok(bundle), "{arch} builds {target}");
        assert!(target.ends_with("-unknown-linux-musl"), "{arch}: {target} is not a static musl target");
        assert!(SETUP.contains(target.as_str()), "ci/setup.sh does not add the rustup target {target}");
    }
    let froms: Vec<&str> = CONTAINERFILE.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].starts_with("FROM --platform=$BUILDPLATFORM ") && froms[0].ends_with(" AS build"), "{}", froms[0]);
    assert_eq!(froms[1], "FROM scratch", "the final stage is the target platform's empty image");
    assert!(CONTAINERFILE.lines().any(|l| l.trim() == "ARG TARGETARCH"), "TARGETARCH must be declared in the build stage");
    assert!(CONTAINERFILE.contains("--target \"$target\"") && CONTAINERFILE.contains("target/$target/release/tapio-load"));
    // aarch64 links with rust-lld on any builder (.cargo/config.toml); the Containerfile sets it
    // for the other target when it is cross-built.
    let cargo_config = include_str!("../../.cargo/config.toml");
    assert!(cargo_config.contains("[target.aarch64-unknown-linux-musl]\nlinker = \"rust-lld\""), "{cargo_config}");
}

/// The DaemonSet may only be scheduled on nodes whose architecture the image has (a required
/// node affinity on kubernetes.io/arch, the Containerfile's architectures exactly), and runs one
/// image reference for all of them (the multi-arch index).
#[test]
fn daemonset_runs_only_on_the_image_architectures() {
    let lines: Vec<&str> = DAEMONSET.lines().map(str::trim).collect();
    let required = lines
        .iter()
        .position(|l| *l == "requiredDuringSchedulingIgnoredDuringExecution:")
        .expect("a required node affinity in the DaemonSet");
    let key = lines[required..].iter().position(|l| *l == "- key: kubernetes.io/arch").expect("a kubernetes.io/arch expression") + required;
    assert_eq!(lines[key + 1], "operator: In", "{}", lines[key..].join("\n"));
    let values = lines[key + 2].strip_prefix("values: ").expect("the values of the arch expression");
    let mut allowed: Vec<&str> = values.trim_matches(|c| c == '[' || c == ']').split(',').map(|v| v.trim().trim_matches('"')).collect();
    allowed.sort_unstable();
    let mut built: Vec<String> = containerfile_targets().into_iter().map(|(a, _)| a).collect();
    built.sort_unstable();
    assert_eq!(allowed, built, "the DaemonSet's architectures and the image's");
    assert!(!DAEMONSET.contains("preferredDuringScheduling"), "a preference would still place the pod on another architecture");
    let images: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("image: ")).collect();
    assert_eq!(images.len(), 1, "one image reference (the multi-arch index) for every node: {images:?}");
    assert!(OPERATIONS.contains("--platform linux/amd64,linux/arm64"), "docs/operations.md does not say how to build the index");
    assert!(OPERATIONS.contains("kubernetes.io/arch"), "docs/operations.md does not explain the node affinity");
}
