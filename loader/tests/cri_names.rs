//! Pod and container names from a real containerd (Debian's package, its CRI plugin): the test
//! starts its own containerd (config, root, state and socket under a temporary directory, so it
//! meets no other containerd), imports a one-binary image built here (no registry; the same
//! static binary is the pause image), runs a pod sandbox and a container through CRI calls
//! (tapio-cri's client) and checks that the container's events carry its pod name, namespace,
//! container name and image.
//!
//! The sandbox uses the node's network namespace, as a `hostNetwork` pod does, so no CNI plugin
//! is needed; cgroups are kubelet's cgroupfs layout (`/kubepods/besteffort/pod<uid>/<id>`), made
//! by runc in the v1 hierarchies and the v2 one of this hybrid host.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{kernel_lock, skip, skip_unless_root, Loader};
use serde_json::Value;
use tapio_cri::api;

const IMAGE: &str = "localhost/tapio-cri-test:1";
const POD: &str = "tapio-web-0";
const NAMESPACE: &str = "tapio-test";
const CONTAINER: &str = "worker";

/// The image's one binary: with no argument it waits for SIGTERM (the pause process); with
/// `loop` it execs itself with `tick` every 100 ms, which the process monitor sees.
const HELLO_C: &str = r#"#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void bye(int s) { (void)s; _exit(0); }
int main(int c, char **v) {
  signal(SIGTERM, bye);
  signal(SIGINT, bye);
  if (c > 1 && !strcmp(v[1], "tick")) return 0;
  if (c > 1 && !strcmp(v[1], "loop")) {
    for (;;) {
      pid_t p = fork();
      if (p == 0) { char *a[] = {"/hello", "tick", 0}; execv("/hello", a); _exit(127); }
      waitpid(p, 0, 0);
      usleep(100000);
    }
  }
  for (;;) pause();
}
"#;

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path)).unwrap_or_else(|e| panic!("{e}"));
    out.split_whitespace().next().expect("sha256sum prints the digest").to_owned()
}

/// Writes `bytes` as a blob of the OCI layout at `oci`; returns (digest hex, size).
fn blob(oci: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = oci.join("blob.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let digest = sha256(&tmp);
    std::fs::rename(&tmp, oci.join("blobs/sha256").join(&digest)).unwrap();
    (digest, bytes.len())
}

/// An OCI image layout tarball of one uncompressed layer holding `/hello`, named [`IMAGE`].
fn image_tarball(dir: &Path) -> Result<PathBuf, String> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(dir.join("hello.c"), HELLO_C).unwrap();
    run(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(rootfs.join("hello")).arg(dir.join("hello.c")))?;
    let oci = dir.join("oci");
    std::fs::create_dir_all(oci.join("blobs/sha256")).unwrap();
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(dir.join("layer.tar")).arg("hello"))?;
    let (layer, layer_size) = blob(&oci, &std::fs::read(dir.join("layer.tar")).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer}")] },
    });
    let (config, config_size) = blob(&oci, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config}"), "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer}"), "size": layer_size }],
    });
    let (manifest, manifest_size) = blob(&oci, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest}"),
            "size": manifest_size,
            // containerd names the imported image after this annotation.
            "annotations": { "io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1" },
        }],
    });
    std::fs::write(oci.join("index.json"), index.to_string()).unwrap();
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tarball = dir.join("image.tar");
    run(Command::new("tar").arg("-C").arg(&oci).arg("-cf").arg(&tarball).args(["oci-layout", "index.json", "blobs"]))?;
    Ok(tarball)
}

/// A containerd of the test's own; SIGTERM and wait on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    /// Whether /run/containerd was there before: the shim makes /run/containerd/s whatever the
    /// configuration says (containerd 1.6 hard-codes it), and the test removes what it made.
    run_dir_existed: bool,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        let d = dir.display();
        // The snapshotter is `native` (plain copies), which works on any filesystem the temporary
        // directory is on; apparmor is off (the host may not have it); the CRI plugin's CNI
        // directories are empty ones of the test's: host-network sandboxes need no CNI. runc's
        // state goes under the directory too, not in /run/containerd/runc where a node's own
        // containerd keeps its. `restrict_oom_score_adj`: kubelet gives a sandbox an
        // oom_score_adj of -998, and lowering one needs CAP_SYS_RESOURCE, which root lacks in
        // some sandboxes (this test VM's root has every capability but that one): runc's init
        // then dies writing /proc/self/oom_score_adj ("can't get final child's PID from pipe:
        // EOF"). Restricted, containerd clamps the value to its own, as it does when it runs in
        // a user namespace.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let run_dir_existed = Path::new("/run/containerd").exists();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            // runc is in /usr/sbin, which a non-login PATH may lack.
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        Self { child, socket: dir.join("containerd.sock"), run_dir_existed }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        // SAFETY: signalling our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ctr").arg("-a").arg(&self.socket).args(["-n", "k8s.io"]).args(args))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        if !self.run_dir_existed {
            // Only empty directories go: a containerd started meanwhile keeps its own.
            for dir in ["/run/containerd/s", "/run/containerd/fifo", "/run/containerd"] {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Removes the pod's cgroup (kubelet's job) in every hierarchy, and the `kubepods` levels above
/// it that the test made.
struct PodCgroups {
    rel: String,
    made: Vec<PathBuf>,
}

impl PodCgroups {
    /// Notes which levels of `rel` are missing now in any hierarchy (runc will make them).
    fn new(rel: &str) -> Self {
        let mut made = Vec::new();
        for mount in hierarchies() {
            let mut dir = mount.clone();
            for c in rel.split('/').filter(|c| !c.is_empty()) {
                dir.push(c);
                if !dir.exists() {
                    made.push(dir.clone());
                }
            }
        }
        Self { rel: rel.to_owned(), made }
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        // Deepest first; a level another test uses at the same time is not empty and stays.
        self.made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in &self.made {
            let deadline = Instant::now() + Duration::from_secs(2);
            while dir.exists() && std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = &self.rel;
    }
}

/// Every mounted cgroup hierarchy (v1 controllers and v2).
fn hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

fn namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Node as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The pod and container kubelet would ask for, with kubelet's labels.
fn pod_config(uid: &str) -> api::PodSandboxConfig {
    let labels = HashMap::from([
        ("app".to_owned(), "tapio-web".to_owned()),
        ("io.kubernetes.pod.name".to_owned(), POD.to_owned()),
        ("io.kubernetes.pod.namespace".to_owned(), NAMESPACE.to_owned()),
        ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
    ]);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata { name: POD.to_owned(), uid: uid.to_owned(), namespace: NAMESPACE.to_owned(), attempt: 0 }),
        // No hostname: a host-network sandbox shares the node's UTS namespace, as kubelet's
        // hostNetwork pods do (runc refuses a hostname without a private one).
        labels,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(api::LinuxSandboxSecurityContext { namespace_options: Some(namespaces()), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(uid: &str) -> api::ContainerConfig {
    let labels = HashMap::from([
        ("io.kubernetes.container.name".to_owned(), CONTAINER.to_owned()),
        ("io.kubernetes.pod.name".to_owned(), POD.to_owned()),
        ("io.kubernetes.pod.namespace".to_owned(), NAMESPACE.to_owned()),
        ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
    ]);
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: CONTAINER.to_owned(), attempt: 0 }),
        image: Some(api::ImageSpec { image: IMAGE.to_owned(), ..Default::default() }),
        command: vec!["/hello".to_owned()],
        args: vec!["loop".to_owned()],
        labels,
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext { namespace_options: Some(namespaces()), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until the CRI plugin answers `Version` on `socket`.
async fn wait_ready(client: &mut tapio_cri::Client, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.runtime().version(api::VersionRequest { version: "v1".to_owned() }).await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => {
                panic!("containerd's CRI plugin never answered: {e}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn tools_missing() -> Option<String> {
    ["containerd", "ctr", "containerd-shim-runc-v2", "gcc", "sha256sum", "tar"]
        .into_iter()
        .chain(std::iter::once("runc"))
        .find(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|tool| format!("{tool} not installed (ci/setup.sh installs it)"))
}

/// A containerd of the test's own with the test image imported, and a CRI client whose
/// connection lives on a runtime of the test's. Fields drop in order: client, runtime, containerd.
struct Cri {
    client: tapio_cri::Client,
    rt: tokio::runtime::Runtime,
    containerd: Containerd,
    log: PathBuf,
}

impl Cri {
    fn start(dir: &Path) -> Self {
        let tarball = image_tarball(dir).unwrap_or_else(|e| panic!("building the image: {e}"));
        let containerd = Containerd::start(dir);
        let log = dir.join("containerd.log");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut client = {
            let _in_runtime = rt.enter();
            tapio_cri::Client::new(&containerd.socket)
        };
        rt.block_on(wait_ready(&mut client, &log));
        containerd
            .ctr(&["images", "import", "--snapshotter", "native", tarball.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("importing the image: {e}"));
        Self { client, rt, containerd, log }
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Display) -> ! {
        panic!("{what}: {e}; containerd log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Runs the pod sandbox and its container through CRI calls, as kubelet does: (sandbox id,
    /// container id).
    fn run_pod(&mut self, uid: &str) -> (String, String) {
        let sandbox = self.rt.block_on(self.client.runtime().run_pod_sandbox(api::RunPodSandboxRequest { config: Some(pod_config(uid)), runtime_handler: String::new() }));
        let sandbox = sandbox.unwrap_or_else(|e| self.fail("RunPodSandbox", &e)).into_inner().pod_sandbox_id;
        let created = self.rt.block_on(self.client.runtime().create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config(uid)),
            sandbox_config: Some(pod_config(uid)),
        }));
        let id = created.unwrap_or_else(|e| self.fail("CreateContainer", &e)).into_inner().container_id;
        let started = self.rt.block_on(self.client.runtime().start_container(api::StartContainerRequest { container_id: id.clone() }));
        started.unwrap_or_else(|e| self.fail("StartContainer", &e));
        (sandbox, id)
    }

    /// Tears the pod down as kubelet does, so the shims exit with the sandbox.
    fn tear_down(&mut self, sandbox: &str, id: &str) -> Result<(), tonic::Status> {
        self.rt.block_on(async {
            let r = self.client.runtime();
            r.stop_container(api::StopContainerRequest { container_id: id.to_owned(), timeout: 0 }).await?;
            r.remove_container(api::RemoveContainerRequest { container_id: id.to_owned() }).await?;
            r.stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: sandbox.to_owned() }).await?;
            r.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: sandbox.to_owned() }).await?;
            Ok(())
        })
    }
}

/// A pod sandbox and a container run through containerd's CRI after the loader started: the
/// container's execs carry its pod name, namespace, container name, image and pod labels beside
/// the cgroup's pod uid, QoS and full id; the pause process's exit carries the pod's names and no
/// container name.
#[test]
fn containerd_pod_events_carry_pod_and_container_names() {
    const TEST: &str = "containerd_pod_events_carry_pod_and_container_names";
    if skip_unless_root(TEST) {
        return;
    }
    if let Some(why) = tools_missing() {
        skip::skip(TEST, skip::Why::Environment(why));
        return;
    }
    let dir = tempfile::Builder::new().prefix("tapio-cri-").tempdir().unwrap();
    let mut cri = Cri::start(dir.path());

    let uid = format!("{:08x}-7a91-4c3e-8d2f-{:012x}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_micros() as u64 & 0xffff_ffff_ffff);
    let _cgroups = PodCgroups::new(&format!("kubepods/besteffort/pod{uid}"));
    let _serial = kernel_lock();
    let config = dir.path().join("tapio.toml");
    std::fs::write(&config, format!("monitors = [\"process\"]\nmetrics_address = \"off\"\ncri_socket = \"{}\"\n", cri.containerd.socket.display())).unwrap();
    let loader = Loader::start(&["--config", config.to_str().unwrap()]);
    let (sandbox, id) = cri.run_pod(&uid);

    // The names arrive once the loader's lookup has been answered: wait for a named tick.
    let mut seen = Vec::new();
    let named = loader.wait_for(&mut seen, Duration::from_secs(20), |e| {
        e["event"] == "exec" && e["container_id"] == id.as_str() && e.get("pod_name").is_some()
    });

    // Torn down as kubelet does (the pause process's exit is an event too).
    let stop = cri.tear_down(&sandbox, &id);
    std::thread::sleep(Duration::from_millis(300));
    let (rest, stderr, status) = loader.finish();
    stop.unwrap_or_else(|e| cri.fail("tearing the pod down", &e));
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    seen.extend(rest);

    let mine: Vec<&Value> = seen.iter().filter(|e| e["container_id"] == id.as_str()).collect();
    let Some(named) = named else {
        panic!("no exec of container {id} carried names within 20 s; its events: {mine:?}; loader stderr:\n{stderr}")
    };
    let e = &named.event;
    assert_eq!(e["filename"], "/hello", "{e}");
    assert_eq!(e["pod_name"], POD, "{e}");
    assert_eq!(e["pod_namespace"], NAMESPACE, "{e}");
    assert_eq!(e["container_name"], CONTAINER, "{e}");
    assert_eq!(e["container_image"], IMAGE, "{e}");
    assert_eq!(e["pod_labels"], serde_json::json!({ "app": "tapio-web" }), "kubelet's own labels are not the pod's: {e}");
    assert_eq!(e["pod_uid"], uid.as_str(), "{e}");
    assert_eq!(e["qos"], "besteffort", "{e}");
    assert_eq!(e["container_runtime"], "cri", "kubelet's cgroupfs layout names no runtime: {e}");
    let unnamed = mine.iter().filter(|e| e.get("pod_name").is_none()).count();
    println!("container {id}: {} events, {unnamed} without names", mine.len());
    // The container's first exec (runc's init becoming `/hello loop`) waited for the answer
    // (the run loop holds a batch up to 250 ms for a lookup in flight) rather than going out
    // without names.
    let first = mine
        .iter()
        .find(|e| e["event"] == "exec" && e["argv"] == serde_json::json!(["/hello", "loop"]))
        .unwrap_or_else(|| panic!("no exec of the container's entrypoint: {mine:?}"));
    assert_eq!(first["pod_name"], POD, "the entrypoint's exec is named: {first}");
    assert_eq!(first["container_name"], CONTAINER, "{first}");

    // The sandbox's own cgroup (the pause process): the pod's names, no container name.
    let pause: Vec<&Value> = seen.iter().filter(|e| e["container_id"] == sandbox.as_str()).collect();
    let exit = pause
        .iter()
        .find(|e| e["event"] == "exit" && e.get("pod_name").is_some())
        .unwrap_or_else(|| panic!("the pause process's exit, named: sandbox {sandbox}'s events: {pause:?}"));
    assert_eq!(exit["pod_name"], POD, "{exit}");
    assert_eq!(exit["pod_namespace"], NAMESPACE, "{exit}");
    assert!(exit.get("container_name").is_none(), "a sandbox is no container: {exit}");
}

/// `filter_exclude_namespaces` with a real containerd pod: once the runtime has named the pod,
/// its container's cgroup is in the kernel's exclude set, and the process monitor's own drop
/// counter (`tapio_filter_dropped_total{filter="cgroup",where="kernel"}`) rises while the
/// container keeps exec'ing; no event of the namespace reaches the output (those before the names
/// are dropped by the agent's filter).
#[test]
fn an_excluded_namespace_is_dropped_in_the_kernel() {
    const TEST: &str = "an_excluded_namespace_is_dropped_in_the_kernel";
    if skip_unless_root(TEST) {
        return;
    }
    if let Some(why) = tools_missing() {
        skip::skip(TEST, skip::Why::Environment(why));
        return;
    }
    let dir = tempfile::Builder::new().prefix("tapio-cri-ns-").tempdir().unwrap();
    let mut cri = Cri::start(dir.path());
    let uid = format!("{:08x}-5b2e-4f1a-9c3d-{:012x}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_micros() as u64 & 0xffff_ffff_ffff);
    let _cgroups = PodCgroups::new(&format!("kubepods/besteffort/pod{uid}"));
    let _serial = kernel_lock();
    let port = common::free_port();
    let config = dir.path().join("tapio.toml");
    std::fs::write(
        &config,
        format!(
            "monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\ncri_socket = \"{}\"\nfilter_exclude_namespaces = [\"{NAMESPACE}\"]\n",
            cri.containerd.socket.display()
        ),
    )
    .unwrap();
    let loader = Loader::start(&["--config", config.to_str().unwrap()]);
    let kernel_drops = |page: &str| {
        common::sample(page, "tapio_filter_dropped_total{filter=\"cgroup\",where=\"kernel\",monitor=\"process\"}").unwrap_or(0.0)
    };
    let before = kernel_drops(&common::http_get(port, "/metrics").1);

    let (sandbox, id) = cri.run_pod(&uid);

    // The container execs every 100 ms: ten of them dropped in the kernel shows the set holds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (_, page) = common::http_get(port, "/metrics");
        if kernel_drops(&page) >= before + 10.0 || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stop = cri.tear_down(&sandbox, &id);
    let (events, stderr, status) = loader.finish();
    stop.unwrap_or_else(|e| cri.fail("tearing the pod down", &e));
    assert!(status.success(), "tapio-load exits 0: {status}; stderr:\n{stderr}");
    let dropped = kernel_drops(&page) - before;
    assert!(dropped >= 10.0, "the namespace's container was not dropped in the kernel ({dropped} drops in 20 s):\n{page}\nstderr:\n{stderr}");
    let leaked: Vec<&Value> = events.iter().filter(|e| e["pod_namespace"] == NAMESPACE).collect();
    assert!(leaked.is_empty(), "events of the excluded namespace were output: {leaked:?}");
    println!("namespace {NAMESPACE}: {dropped} execs of container {id} dropped in the kernel, none output");
}
