//! Pure parsing: a cgroup v2 path (from the hierarchy's root) to the container and pod it
//! belongs to. No I/O, so every layout is a table test.
//!
//! Layouts recognised (component by component, so a prefix such as k3s' or kind's parent cgroups
//! changes nothing):
//!
//! | who | path |
//! |---|---|
//! | kubelet, systemd driver | `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_with_underscores>.slice/<runtime scope>` |
//! | kubelet, cgroupfs driver | `/kubepods[/<qos>]/pod<uid>/<64 hex>` (CRI-O: `crio-<64 hex>`) |
//! | containerd's systemd cgroup outside systemd (kind, k3s in a container) | `.../kubepods-<qos>-pod<uid>.slice:cri-containerd:<64 hex>` |
//! | runtime scopes (systemd driver) | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope` |
//! | docker, cgroupfs driver | `/docker/<64 hex>` |
//! | podman, cgroupfs manager | `/libpod_parent/libpod-<64 hex>` |
//!
//! Guaranteed pods have no QoS level in the path (`kubepods.slice/kubepods-pod<uid>.slice`):
//! their QoS is `guaranteed`. The monitors' conmon (`libpod-conmon-<id>.scope`,
//! `crio-conmon-<id>.scope`, `/libpod_parent/conmon`) is the runtime's, not the container's: it
//! gets no container (it stays in the pod, when there is one). The deepest container component
//! wins, so a cgroup a container makes below its own (systemd in a container, docker in docker)
//! is attributed to the innermost container.

use std::fmt;

use serde::Serialize;

/// The runtime a cgroup path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    Docker,
    Podman,
    /// kubelet's cgroupfs driver names no runtime (`/kubepods/<qos>/pod<uid>/<id>`): some CRI
    /// runtime (containerd, or docker through cri-dockerd).
    Cri,
}

impl Runtime {
    /// As the output names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Cri => "cri",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod's QoS class, from its parent cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }

    fn from_level(s: &str) -> Option<Self> {
        match s {
            "burstable" => Some(Self::Burstable),
            "besteffort" => Some(Self::BestEffort),
            _ => None,
        }
    }
}

/// What a cgroup path says about the cgroup: a container, a pod, or both. At least one is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Parsed {
    /// The full 64 hex characters, lowercase, never truncated.
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// The pod's uid as the API server spells it (dashes, or the 32-hex hash of a static pod).
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
}

/// A container id: exactly 64 hex characters.
fn container_id(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// A pod uid: a dashed UUID (36), or the 32-hex config hash kubelet gives static pods.
fn pod_uid(s: &str) -> Option<String> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match s.len() {
        32 => hex(s),
        36 => s.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && hex(&s.replace('-', "")),
        _ => false,
    };
    ok.then(|| s.to_ascii_lowercase())
}

/// A pod's QoS class and uid.
type Pod = (Qos, String);

/// `kubepods[-<qos>]-pod<uid>.slice` (systemd driver; the uid's dashes are underscores there).
fn systemd_pod(component: &str) -> Option<Pod> {
    let rest = component.strip_prefix("kubepods-")?.strip_suffix(".slice")?;
    let (qos, uid) = match rest.split_once("-pod") {
        Some((level, uid)) => (Qos::from_level(level)?, uid),
        None => (Qos::Guaranteed, rest.strip_prefix("pod")?),
    };
    Some((qos, pod_uid(&uid.replace('_', "-"))?))
}

/// A systemd scope of a runtime: `<prefix>-<64 hex>.scope`.
fn runtime_scope(component: &str) -> Option<(Runtime, String)> {
    let rest = component.strip_suffix(".scope")?;
    [("cri-containerd-", Runtime::Containerd), ("crio-", Runtime::CriO), ("docker-", Runtime::Docker), ("libpod-", Runtime::Podman)]
        .into_iter()
        .find_map(|(prefix, runtime)| Some((runtime, container_id(rest.strip_prefix(prefix)?)?)))
}

/// Parses a cgroup v2 path from the hierarchy's root (`/a/b`). None: not a pod's or a container's
/// cgroup (a host cgroup).
pub fn parse(path: &str) -> Option<Parsed> {
    let mut parsed = Parsed { container_id: None, runtime: None, pod_uid: None, qos: None };
    // Whether the component before this one is `kubepods` (cgroupfs driver) or the QoS level
    // under it, and whether it is `docker` or `libpod_parent`.
    let mut parent = "";
    let mut grandparent = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let in_kubepods = parent == "kubepods" || grandparent == "kubepods";
        if let Some((qos, uid)) = systemd_pod(component) {
            parsed = Parsed { container_id: None, runtime: None, pod_uid: Some(uid), qos: Some(qos) };
        } else if let Some((runtime, id)) = runtime_scope(component) {
            parsed.container_id = Some(id);
            parsed.runtime = Some(runtime);
        } else if let Some((pod, runtime, id)) = colon_form(component) {
            parsed = Parsed { container_id: Some(id), runtime: Some(runtime), pod_uid: pod.as_ref().map(|p| p.1.clone()), qos: pod.map(|p| p.0) };
        } else if let Some(uid) = component.strip_prefix("pod").filter(|_| in_kubepods).and_then(pod_uid) {
            // cgroupfs driver: /kubepods/pod<uid> (guaranteed) or /kubepods/<qos>/pod<uid>
            let qos = if parent == "kubepods" { Some(Qos::Guaranteed) } else { Qos::from_level(parent) };
            if qos.is_some() {
                parsed = Parsed { container_id: None, runtime: None, pod_uid: Some(uid), qos };
            }
        } else if parsed.pod_uid.is_some() && parent.starts_with("pod") && in_kubepods_pod(grandparent) {
            // cgroupfs driver, the container under its pod: `<id>` or CRI-O's `crio-<id>`
            if let Some(id) = container_id(component) {
                parsed.container_id = Some(id);
                parsed.runtime = Some(Runtime::Cri);
            } else if let Some(id) = component.strip_prefix("crio-").and_then(container_id) {
                parsed.container_id = Some(id);
                parsed.runtime = Some(Runtime::CriO);
            }
        } else if parent == "docker" {
            if let Some(id) = container_id(component) {
                parsed.container_id = Some(id);
                parsed.runtime = Some(Runtime::Docker);
            }
        } else if parent == "libpod_parent" {
            if let Some(id) = component.strip_prefix("libpod-").and_then(container_id) {
                parsed.container_id = Some(id);
                parsed.runtime = Some(Runtime::Podman);
            }
        }
        grandparent = parent;
        parent = component;
    }
    (parsed.container_id.is_some() || parsed.pod_uid.is_some()).then_some(parsed)
}

/// Whether `c` is the cgroupfs driver's parent of a pod: `kubepods` or a QoS level under it.
fn in_kubepods_pod(c: &str) -> bool {
    c == "kubepods" || Qos::from_level(c).is_some()
}

/// containerd's systemd-style cgroup path when it cannot ask systemd (kind, k3s in a container):
/// `<slice>:<prefix>:<id>` as one directory name, e.g.
/// `kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`.
fn colon_form(component: &str) -> Option<(Option<Pod>, Runtime, String)> {
    let mut parts = component.splitn(3, ':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    let runtime = match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        _ => return None,
    };
    Some((systemd_pod(slice), runtime, container_id(id)?))
}

/// The container fields of an event: what [`parse`] found, as the output names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// 64 hex characters, never truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<Runtime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<Qos>,
    /// The names below come from the node's CRI runtime (tapio-cri), once it has answered for
    /// this container; absent until then, and for a runtime that is not a CRI one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    /// The pod's own labels (without kubelet's `io.kubernetes.pod.*`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pod_labels: std::collections::BTreeMap<String, String>,
}

impl From<Parsed> for Attribution {
    fn from(p: Parsed) -> Self {
        Self {
            container_id: p.container_id,
            container_runtime: p.runtime,
            pod_uid: p.pod_uid,
            qos: p.qos,
            pod_name: None,
            pod_namespace: None,
            container_name: None,
            container_image: None,
            pod_labels: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const ID: &str = "4a3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccd";
    const UID: &str = "7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b";

    fn c(runtime: Runtime, pod: Option<Qos>) -> Option<Parsed> {
        Some(Parsed {
            container_id: Some(ID.to_owned()),
            runtime: Some(runtime),
            pod_uid: pod.map(|_| UID.to_owned()),
            qos: pod,
        })
    }

    fn pod(qos: Qos) -> Option<Parsed> {
        Some(Parsed { container_id: None, runtime: None, pod_uid: Some(UID.to_owned()), qos: Some(qos) })
    }

    #[rstest]
    // kubelet, systemd driver: each runtime, each QoS class
    #[case::systemd_containerd_burstable(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope",
        c(Runtime::Containerd, Some(Qos::Burstable)))]
    #[case::systemd_crio_besteffort(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice/crio-{ID}.scope",
        c(Runtime::CriO, Some(Qos::BestEffort)))]
    #[case::systemd_docker_guaranteed(
        "/kubepods.slice/kubepods-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice/docker-{ID}.scope",
        c(Runtime::Docker, Some(Qos::Guaranteed)))]
    #[case::systemd_pod_level(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice",
        pod(Qos::Burstable))]
    #[case::systemd_crio_conmon_is_the_pod_not_a_container(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice/crio-conmon-{ID}.scope",
        pod(Qos::BestEffort))]
    #[case::systemd_below_the_container_scope(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope/init.scope",
        c(Runtime::Containerd, Some(Qos::Burstable)))]
    // kubelet, cgroupfs driver
    #[case::cgroupfs_burstable("/kubepods/burstable/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b/{ID}", c(Runtime::Cri, Some(Qos::Burstable)))]
    #[case::cgroupfs_besteffort("/kubepods/besteffort/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b/{ID}", c(Runtime::Cri, Some(Qos::BestEffort)))]
    #[case::cgroupfs_guaranteed("/kubepods/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b/{ID}", c(Runtime::Cri, Some(Qos::Guaranteed)))]
    #[case::cgroupfs_crio("/kubepods/burstable/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b/crio-{ID}", c(Runtime::CriO, Some(Qos::Burstable)))]
    #[case::cgroupfs_pod_level("/kubepods/besteffort/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b", pod(Qos::BestEffort))]
    // k3s and kind: kubelet's tree below another parent, containerd's colon form
    #[case::k3s_prefix("/k3s/kubepods/burstable/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b/{ID}", c(Runtime::Cri, Some(Qos::Burstable)))]
    #[case::colon_form(
        "/system.slice/containerd.service/kubepods-burstable-pod7f3c9a2e_1b4d_4e8f_9a6b_0c1d2e3f4a5b.slice:cri-containerd:{ID}",
        c(Runtime::Containerd, Some(Qos::Burstable)))]
    // docker and podman outside Kubernetes
    #[case::docker_cgroupfs("/docker/{ID}", c(Runtime::Docker, None))]
    #[case::docker_systemd("/system.slice/docker-{ID}.scope", c(Runtime::Docker, None))]
    #[case::podman_systemd("/machine.slice/libpod-{ID}.scope", c(Runtime::Podman, None))]
    #[case::podman_systemd_container_subgroup("/machine.slice/libpod-{ID}.scope/container", c(Runtime::Podman, None))]
    #[case::podman_cgroupfs("/libpod_parent/libpod-{ID}", c(Runtime::Podman, None))]
    #[case::podman_conmon_cgroupfs("/libpod_parent/conmon", None)]
    #[case::podman_conmon_systemd("/machine.slice/libpod-conmon-{ID}.scope", None)]
    // host cgroups
    #[case::root("/", None)]
    #[case::system_service("/system.slice/ssh.service", None)]
    #[case::user_session("/user.slice/user-0.slice/session-3.scope", None)]
    #[case::kubepods_itself("/kubepods.slice/kubepods-burstable.slice", None)]
    // never a truncated or malformed id
    #[case::short_id("/docker/4a3f0c1d2e5b", None)]
    #[case::id_of_63("/system.slice/docker-4a3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbcc.scope", None)]
    #[case::not_hex("/libpod_parent/libpod-zz3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccd", None)]
    #[case::pod_dir_outside_kubepods("/other/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b/{ID}", None)]
    fn layouts(#[case] path: &str, #[case] expected: Option<Parsed>) {
        let path = path.replace("{ID}", ID);
        assert_eq!(parse(&path), expected, "{path}");
    }

    #[test]
    fn static_pod_uid_is_a_32_hex_hash() {
        let p = parse("/kubepods/burstable/pod0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(p.pod_uid.as_deref(), Some("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn upper_case_ids_are_lowercased() {
        let p = parse(&format!("/docker/{}", ID.to_ascii_uppercase())).unwrap();
        assert_eq!(p.container_id.as_deref(), Some(ID));
    }
}
