//! The shipped DaemonSet's security context, run for real: the static `tapio-load` in podman
//! (runc, Debian's), from an image imported from a local rootfs (no registry), with hostPID, the
//! manifest's capability set, a read-only root, no-new-privileges and the manifest's read-only
//! mounts. Under podman's default seccomp profile map creation fails with EPERM (why the manifest
//! states `seccompProfile: Unconfined`); with seccomp off, `/healthz` answers 200, events flow,
//! and `in_container` is right for a host process and for one in its own mount namespace.
//!
//! A second case runs it as a Kubernetes node would on cgroup v2: the container in a cgroup
//! namespace of its own (`--cgroupns private`), with the node's `/sys/fs/cgroup` mounted where the
//! DaemonSet mounts it; a pod's cgroup made before the agent starts is found by the start scan,
//! so a process in it carries the pod's fields.
//!
//! Needs the static binary: `cargo build --release --locked -p tapio-load --bin tapio-load
//! --target x86_64-unknown-linux-musl` (or TAPIO_STATIC_BINARY=path), and podman with runc.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

const IMAGE: &str = "localhost/tapio-load:daemonset-test";
const IMAGE_CGROUPNS: &str = "localhost/tapio-load:daemonset-cgroupns-test";

/// The capabilities the DaemonSet adds after dropping ALL (tests/deploy.rs checks the manifest).
const CAPS: &str = "BPF,PERFMON,NET_ADMIN,SYS_RESOURCE";

fn static_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TAPIO_STATIC_BINARY") {
        return Some(PathBuf::from(path));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("x86_64-unknown-linux-musl/release/tapio-load");
    path.exists().then_some(path)
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman").args(args).output().unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
}

/// `podman run` with the DaemonSet's security context; `extra` before the image.
fn run_args<'a>(name: &'a str, config_dir: &'a str, out_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    run_args_of(IMAGE, name, config_dir, out_dir, extra)
}

fn run_args_of<'a>(image: &'a str, name: &'a str, config_dir: &'a str, out_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run", "--name", name, "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        "--pid", "host", "--network", "host", "--cap-drop", "ALL", "--cap-add", CAPS, "--read-only",
        "--security-opt", "no-new-privileges",
        "-v", "/sys/kernel/btf:/sys/kernel/btf:ro", "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro",
        "-v", "/sys/fs/bpf:/sys/fs/bpf",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-v", config_dir, "-v", out_dir, image, "run", "--config", "/etc/tapio/tapio.toml", "--output-file", "/out/events.jsonl"]);
    args
}

/// Removes the test's containers, then its image.
struct Cleanup {
    image: &'static str,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = Command::new("podman").args(["rm", "-f", "-t", "2", name]).output();
        }
        let _ = Command::new("podman").args(["rmi", "-f", self.image]).output();
    }
}

/// Skips (returning `None`) without root, podman or the static binary; else imports an image
/// holding only the static binary (from a rootfs tarball: no registry) as `image`.
fn setup(test: &str, image: &'static str, dir: &Path) -> Option<Cleanup> {
    if common::skip_unless_root(test) {
        return None;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        println!("SKIP {test}: podman not installed (apt-get install podman runc)");
        return None;
    }
    let Some(binary) = static_binary() else {
        println!("SKIP {test}: no static tapio-load (cargo build --release --locked -p tapio-load --bin tapio-load --target x86_64-unknown-linux-musl)");
        return None;
    };
    let rootfs = dir.join("rootfs");
    for d in ["usr/bin", "etc/tapio", "out", "proc", "sys", "dev", "tmp", "host/sys/fs/cgroup", "run/containerd", "run/crio"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    std::fs::copy(&binary, rootfs.join("usr/bin/tapio-load")).expect("copy the static binary");
    let tar = dir.join("rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().expect("tar");
    assert!(status.success());
    let cleanup = Cleanup { image, containers: Vec::new() };
    let out = podman(&["import", "--change", "ENTRYPOINT [\"/usr/bin/tapio-load\"]", tar.to_str().expect("utf-8"), image]);
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    Some(cleanup)
}

/// Polls `/healthz` until it answers (the agent is up), for at most 30 s.
fn wait_healthy(port: u16, name: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(h) = common::http_get_within(port, "/healthz", Duration::from_secs(2)) {
            return h;
        }
        assert!(Instant::now() < deadline, "no /healthz within 30 s: {}", String::from_utf8_lossy(&podman(&["logs", name]).stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mount_event(events: &Path, target: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(events).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "mount" && e["target"] == target)
        .map(|mut e| {
            common::relative_in_container(std::slice::from_mut(&mut e));
            e
        })
}

#[test]
fn the_daemonset_security_context_runs_under_podman() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cleanup) = setup("the_daemonset_security_context_runs_under_podman", IMAGE, dir.path()) else { return };
    let _kernel = common::kernel_lock();
    // The manifest mounts the node's tracefs into the pod (hostPath /sys/kernel/tracing): a node
    // has it mounted, and the read-only, capability-limited container cannot mount it itself.
    tapio_features::tracefs::ensure_mounted().expect("mount tracefs on the host, as a node has it");

    let port = common::free_port();
    let config = dir.path().join("config");
    let events = dir.path().join("out");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::create_dir_all(&events).expect("out dir");
    std::fs::write(config.join("tapio.toml"), format!("monitors = [\"process\", \"security\"]\nmetrics_address = \"127.0.0.1:{port}\"\n")).expect("config");
    let config_mount = format!("{}:/etc/tapio:ro", config.display());
    let out_mount = format!("{}:/out", events.display());

    // podman's default seccomp profile: bpf(2) refused.
    let name = format!("tapio-ds-default-{}", std::process::id());
    cleanup.containers.push(name.clone());
    let out = podman(&run_args(&name, &config_mount, &out_mount, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no monitor could start") && stderr.contains("Operation not permitted (os error 1)"), "default seccomp:\n{stderr}");

    // seccomp off, as the manifest states.
    let name = format!("tapio-ds-{}", std::process::id());
    cleanup.containers.push(name.clone());
    let mut args = run_args(&name, &config_mount, &out_mount, &["--security-opt", "seccomp=unconfined"]);
    args.insert(1, "-d");
    let out = podman(&args);
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let health = wait_healthy(port, &name);
    assert_eq!(health.0, 200, "/healthz in the DaemonSet's context: {}", health.1);
    let (_, page) = common::http_get(port, "/metrics");
    assert!(page.lines().any(|l| l.starts_with("tapio_mount_ns_reference{source=")), "the in_container reference is not in the metrics:\n{page}");

    let host = dir.path().join("mnt-host");
    let own = dir.path().join("mnt-own-ns");
    std::fs::create_dir_all(&host).expect("dir");
    std::fs::create_dir_all(&own).expect("dir");
    let (host_s, own_s) = (host.to_str().expect("utf-8"), own.to_str().expect("utf-8"));
    assert!(Command::new("mount").args(["-t", "tmpfs", "none", host_s]).status().expect("mount").success());
    let _ = Command::new("umount").arg(host_s).status();
    // A process in its own mount namespace, as a container's is.
    let status = Command::new("unshare").args(["-m", "--propagation", "private", "mount", "-t", "tmpfs", "none", own_s]).status().expect("unshare");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let events_file = events.join("events.jsonl");
    let (host_event, own_event) = loop {
        let found = (mount_event(&events_file, host_s), mount_event(&events_file, own_s));
        if (found.0.is_some() && found.1.is_some()) || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = String::from_utf8_lossy(&podman(&["logs", &name]).stderr).into_owned();
    let host_event = host_event.unwrap_or_else(|| panic!("no mount event for the host mount:\n{logs}"));
    let own_event = own_event.unwrap_or_else(|| panic!("no mount event for the namespaced mount:\n{logs}"));
    assert_eq!(host_event["in_container"], false, "a host process's mount: {host_event}\n{logs}");
    assert_eq!(own_event["in_container"], true, "a mount in its own namespace: {own_event}");
    let out = podman(&["stop", "-t", "10", &name]);
    assert!(out.status.success(), "podman stop: {}", String::from_utf8_lossy(&out.stderr));
    println!("DaemonSet context under podman: default seccomp refused (EPERM), unconfined /healthz 200, host mount in_container=false, own-namespace mount true");
}

#[test]
fn in_its_own_cgroup_namespace_the_agent_attributes_through_the_nodes_cgroup_mount() {
    let test = "in_its_own_cgroup_namespace_the_agent_attributes_through_the_nodes_cgroup_mount";
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cleanup) = setup(test, IMAGE_CGROUPNS, dir.path()) else { return };
    let _kernel = common::kernel_lock();
    tapio_features::tracefs::ensure_mounted().expect("mount tracefs on the host, as a node has it");
    // A pod made before the agent starts: only the start scan of the node's hierarchy can know it.
    let nonce = std::process::id();
    let uid = format!("3f2a9c4e-{:04x}-4d6b-9e1f-8a7b6c5d4e3f", nonce & 0xffff);
    let id = format!("{:064x}", u64::from(nonce) * 0x9e37_79b9);
    let mut cgroups = common::cgroups::Cgroups::default();
    let pod = cgroups.make(&common::cgroups::v2_root(), &format!("kubepods/burstable/pod{uid}/{id}"));

    let port = common::free_port();
    let config = dir.path().join("config");
    let events = dir.path().join("out");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::create_dir_all(&events).expect("out dir");
    std::fs::write(config.join("tapio.toml"), format!("monitors = [\"process\"]\ncri_socket = \"off\"\nmetrics_address = \"127.0.0.1:{port}\"\n")).expect("config");
    let config_mount = format!("{}:/etc/tapio:ro", config.display());
    let out_mount = format!("{}:/out", events.display());
    let name = format!("tapio-ds-cgroupns-{nonce}");
    cleanup.containers.push(name.clone());
    // As on a cgroup v2 Kubernetes node: a cgroup namespace of the container's own, and the node's
    // /sys/fs/cgroup where the DaemonSet mounts it (tests/deploy.rs checks the manifest's path).
    let extra = ["--security-opt", "seccomp=unconfined", "--cgroupns", "private", "-v", "/sys/fs/cgroup:/host/sys/fs/cgroup:ro"];
    let mut args = run_args_of(IMAGE_CGROUPNS, &name, &config_mount, &out_mount, &extra);
    args.insert(1, "-d");
    let out = podman(&args);
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let health = wait_healthy(port, &name);
    assert_eq!(health.0, 200, "/healthz in a cgroup namespace of its own: {}", health.1);

    let marker = format!("tapio-cgroupns-{nonce}");
    common::cgroups::exec_in(&pod, &marker);
    let events_file = events.join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exec = loop {
        let found = std::fs::read_to_string(&events_file).ok().and_then(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker.as_str())))
        });
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = String::from_utf8_lossy(&podman(&["logs", &name]).stderr).into_owned();
    let exec = exec.unwrap_or_else(|| panic!("no exec event for {marker}:\n{logs}"));
    assert_eq!(exec["pod_uid"], uid.as_str(), "the pod made before start, seen from a private cgroup namespace: {exec}\n{logs}");
    assert_eq!(exec["container_id"], id.as_str(), "{exec}");
    assert!(logs.contains("/host/sys/fs/cgroup"), "the agent should say it scanned the node's mount:\n{logs}");
    let out = podman(&["stop", "-t", "10", &name]);
    assert!(out.status.success(), "podman stop: {}", String::from_utf8_lossy(&out.stderr));
    println!("private cgroup namespace: the start scan used the node's mount; pod {uid} attributed");
}
