//! Container and pod attribution on the running kernel: cgroups made in kubelet's exact layouts
//! (both cgroup drivers) under the v2 hierarchy, and real podman containers (runc) from a locally
//! imported image, one of them exiting within 100 ms.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{kernel_lock, skip_unless_root, Loader};
use common::cgroups::{exec_in, v2_root, Cgroups};
use serde_json::Value;

const CONTAINER_FIELDS: [&str; 4] = ["container_id", "container_runtime", "pod_uid", "qos"];

fn exec_with(events: &[Value], marker: &str) -> Value {
    events
        .iter()
        .find(|e| e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker)))
        .unwrap_or_else(|| panic!("no exec of {marker} among {} events", events.len()))
        .clone()
}

struct Layout {
    name: &'static str,
    /// `{UID}` (dashes), `{UID_}` (underscores) and `{ID}` are replaced.
    path: &'static str,
    runtime: &'static str,
    qos: &'static str,
}

const LAYOUTS: &[Layout] = &[
    Layout {
        name: "systemd-containerd",
        path: "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope",
        runtime: "containerd",
        qos: "burstable",
    },
    Layout {
        name: "systemd-crio",
        path: "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope",
        runtime: "cri-o",
        qos: "besteffort",
    },
    Layout {
        name: "systemd-docker-guaranteed",
        path: "kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope",
        runtime: "docker",
        qos: "guaranteed",
    },
    Layout { name: "cgroupfs-burstable", path: "kubepods/burstable/pod{UID}/{ID}", runtime: "cri", qos: "burstable" },
    Layout { name: "cgroupfs-besteffort", path: "kubepods/besteffort/pod{UID}/{ID}", runtime: "cri", qos: "besteffort" },
    Layout { name: "cgroupfs-guaranteed", path: "kubepods/pod{UID}/{ID}", runtime: "cri", qos: "guaranteed" },
];

/// A distinct 64-hex container id and pod uid per case and run.
fn ids(case: usize) -> (String, String) {
    let seed = format!("{:08x}{:04x}", std::process::id(), case);
    let id = format!("{seed}{}", "c0ffee".repeat(10))[..64].to_owned();
    let uid = format!("{}-{}-4{}-8{}-{}", &seed[..8], &seed[8..12], "abc", "def", "0123456789ab");
    (id, uid)
}

/// Each kubelet layout, for both drivers: one cgroup made before the loader starts (found by the
/// scan), the others after (announced by the cgroup_mkdir tracepoint) and removed right after
/// their one process exits. Every exec carries its pod uid, QoS, full container id and runtime;
/// a host exec carries none of the fields.
#[test]
fn kubelet_layouts_attribute_process_events() {
    if skip_unless_root("kubelet_layouts_attribute_process_events") {
        return;
    }
    let _serial = kernel_lock();
    let root = v2_root();
    let nonce = std::process::id();
    let mut cgroups = Cgroups::default();
    let path_of = |i: usize, l: &Layout| {
        let (id, uid) = ids(i);
        (l.path.replace("{UID_}", &uid.replace('-', "_")).replace("{UID}", &uid).replace("{ID}", &id), id, uid)
    };
    // Made before the start: only the scan can know it.
    let (early_rel, ..) = path_of(0, &LAYOUTS[0]);
    let early = cgroups.make(&root, &early_rel);

    let loader = Loader::start(&["--monitors", "process"]);
    exec_in(&early, &format!("tapio-attr-{nonce}-0"));
    for (i, layout) in LAYOUTS.iter().enumerate().skip(1) {
        let (rel, ..) = path_of(i, layout);
        let mut short = Cgroups::default();
        let dir = short.make(&root, &rel);
        exec_in(&dir, &format!("tapio-attr-{nonce}-{i}"));
        short.remove_all(); // gone before the loader's next drain
    }
    exec_in(&root, &format!("tapio-attr-{nonce}-host"));
    let (events, stderr, status) = loader.finish();
    cgroups.remove_all();
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");

    for (i, layout) in LAYOUTS.iter().enumerate() {
        let (_, id, uid) = path_of(i, layout);
        let e = exec_with(&events, &format!("tapio-attr-{nonce}-{i}"));
        assert_eq!(e["container_id"], id.as_str(), "{}: {e}", layout.name);
        assert_eq!(e["container_id"].as_str().map(str::len), Some(64), "{}: never truncated", layout.name);
        assert_eq!(e["container_runtime"], layout.runtime, "{}: {e}", layout.name);
        assert_eq!(e["pod_uid"], uid.as_str(), "{}: {e}", layout.name);
        assert_eq!(e["qos"], layout.qos, "{}: {e}", layout.name);
    }
    let host = exec_with(&events, &format!("tapio-attr-{nonce}-host"));
    for field in CONTAINER_FIELDS {
        assert!(host.get(field).is_none(), "a host process has no {field}: {host}");
    }
}

/// Builds a one-binary image (a static C program) and imports it into podman; None when the
/// tools are missing (the caller says SKIP).
fn podman_image(dir: &Path) -> Result<String, String> {
    for tool in ["podman", "runc", "gcc"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| !o.status.success()).unwrap_or(true) {
            return Err(format!("{tool} not installed"));
        }
    }
    let src = dir.join("hello.c");
    std::fs::write(&src, "#include <stdlib.h>\n#include <unistd.h>\nint main(int c, char **v) { if (c > 1) usleep(atoi(v[1]) * 1000); return 0; }\n").unwrap();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let out = Command::new("gcc").args(["-static", "-O2", "-o"]).arg(rootfs.join("hello")).arg(&src).output().unwrap();
    if !out.status.success() {
        return Err(format!("gcc -static: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let image = format!("localhost/tapio-attr-test:{}", std::process::id());
    let out = Command::new("sh")
        .args(["-c", &format!("tar -C '{}' -c . | podman import - {image}", rootfs.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    Ok(image)
}

/// Runs `/hello <sleep_ms>` in a container; returns its full id and how long `podman run` took.
fn podman_run(image: &str, dir: &Path, sleep_ms: u32) -> (String, Duration) {
    let cidfile = dir.join(format!("cid-{sleep_ms}"));
    let started = Instant::now();
    let out = Command::new("podman")
        .args(["run", "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--rm", "--cidfile"])
        .arg(&cidfile)
        .args([image, "/hello", &sleep_ms.to_string()])
        .output()
        .expect("podman run");
    let took = started.elapsed();
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let id = std::fs::read_to_string(&cidfile).expect("cidfile").trim().to_owned();
    assert_eq!(id.len(), 64, "podman's full id: {id}");
    (id, took)
}

/// Real podman containers (runc, cgroupfs manager: `/libpod_parent/libpod-<id>`) made after the
/// loader started: their exec and exit carry the full id and runtime `podman`, including a
/// container whose process exits at once (it lives well under 100 ms inside the container).
/// conmon, the runtime's monitor, is not the container.
#[test]
fn podman_containers_carry_their_full_id() {
    if skip_unless_root("podman_containers_carry_their_full_id") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = match podman_image(dir.path()) {
        Ok(image) => image,
        Err(why) => {
            println!("SKIP podman_containers_carry_their_full_id: {why}");
            return;
        }
    };
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "process"]);
    let (short, short_took) = podman_run(&image, dir.path(), 0);
    let (long, _) = podman_run(&image, dir.path(), 300);
    let (events, stderr, status) = loader.finish();
    let _ = Command::new("podman").args(["rmi", "-f", &image]).output();
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    println!("podman run of the short container took {short_took:?} (create, start, exit, remove)");

    for (id, what) in [(&short, "short-lived"), (&long, "300 ms")] {
        let mine: Vec<&Value> = events.iter().filter(|e| e["container_id"] == id.as_str()).collect();
        let exec = mine
            .iter()
            .find(|e| e["event"] == "exec" && e["filename"] == "/hello")
            .unwrap_or_else(|| panic!("{what} container {id}: no exec of /hello attributed; its events: {mine:?}"));
        assert_eq!(exec["container_runtime"], "podman", "{exec}");
        assert!(exec.get("pod_uid").is_none() && exec.get("qos").is_none(), "podman outside Kubernetes has no pod: {exec}");
        assert!(mine.iter().any(|e| e["event"] == "exit" && e["tgid"] == exec["tgid"]), "{what}: the exit of /hello is attributed too");
        // The short container's /hello: exec to exit in the kernel's own clock.
        if what == "short-lived" {
            let exit = mine.iter().find(|e| e["event"] == "exit" && e["tgid"] == exec["tgid"]).unwrap();
            let lived = exit["ts_ns"].as_u64().unwrap() - exec["ts_ns"].as_u64().unwrap();
            println!("short container: /hello lived {} us from exec to exit", lived / 1000);
            assert!(lived < 100_000_000, "the short container's process lives under 100 ms: {lived} ns");
        }
    }
    for e in events.iter().filter(|e| e["comm"] == "conmon") {
        assert!(e.get("container_id").is_none(), "conmon is the runtime's, not the container's: {e}");
    }
}
