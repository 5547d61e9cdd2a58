//! The shipped DaemonSet's security context, run for real: the static `tapio-load` in podman
//! (runc, Debian's), from an image imported from a local rootfs (no registry), with hostPID, the
//! manifest's capability set, a read-only root, no-new-privileges and the manifest's read-only
//! mounts. Under podman's default seccomp profile map creation fails with EPERM (why the manifest
//! states `seccompProfile: Unconfined`); with seccomp off, `/healthz` answers 200, events flow,
//! and `in_container` is right for a host process and for one in its own mount namespace.
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
    let mut args = vec![
        "run", "--name", name, "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        "--pid", "host", "--network", "host", "--cap-drop", "ALL", "--cap-add", CAPS, "--read-only",
        "--security-opt", "no-new-privileges",
        "-v", "/sys/kernel/btf:/sys/kernel/btf:ro", "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro",
        "-v", "/sys/fs/bpf:/sys/fs/bpf",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-v", config_dir, "-v", out_dir, IMAGE, "run", "--config", "/etc/tapio/tapio.toml", "--output-file", "/out/events.jsonl"]);
    args
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("podman").args(["rm", "-f", "-t", "2", name]).output();
        }
        let _ = Command::new("podman").args(["rmi", "-f", IMAGE]).output();
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
    if common::skip_unless_root("the_daemonset_security_context_runs_under_podman") {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        println!("SKIP the_daemonset_security_context_runs_under_podman: podman not installed (apt-get install podman runc)");
        return;
    }
    let Some(binary) = static_binary() else {
        println!("SKIP the_daemonset_security_context_runs_under_podman: no static tapio-load (cargo build --release --locked -p tapio-load --bin tapio-load --target x86_64-unknown-linux-musl)");
        return;
    };
    let _kernel = common::kernel_lock();
    // The manifest mounts the node's tracefs into the pod (hostPath /sys/kernel/tracing): a node
    // has it mounted, and the read-only, capability-limited container cannot mount it itself.
    tapio_features::tracefs::ensure_mounted().expect("mount tracefs on the host, as a node has it");
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    for d in ["usr/bin", "etc/tapio", "out", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    std::fs::copy(&binary, rootfs.join("usr/bin/tapio-load")).expect("copy the static binary");
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().expect("tar");
    assert!(status.success());
    let mut cleanup = Cleanup(Vec::new());
    let out = podman(&["import", "--change", "ENTRYPOINT [\"/usr/bin/tapio-load\"]", tar.to_str().expect("utf-8"), IMAGE]);
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));

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
    cleanup.0.push(name.clone());
    let out = podman(&run_args(&name, &config_mount, &out_mount, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no monitor could start") && stderr.contains("Operation not permitted (os error 1)"), "default seccomp:\n{stderr}");

    // seccomp off, as the manifest states.
    let name = format!("tapio-ds-{}", std::process::id());
    cleanup.0.push(name.clone());
    let mut args = run_args(&name, &config_mount, &out_mount, &["--security-opt", "seccomp=unconfined"]);
    args.insert(1, "-d");
    let out = podman(&args);
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(h) = common::http_get_within(port, "/healthz", Duration::from_secs(2)) {
            break h;
        }
        assert!(Instant::now() < deadline, "no /healthz within 30 s: {}", String::from_utf8_lossy(&podman(&["logs", &name]).stderr));
        std::thread::sleep(Duration::from_millis(200));
    };
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
