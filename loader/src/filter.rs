//! Source filters (issue 17 item 3): include or exclude events by uid, comm, host or container,
//! namespace, pod label, container name and binary path.
//!
//! Where each applies:
//! - in the kernel, before any read of the event (probes/include/filter.bpf.h, through
//!   `tapio_runtime::filter`): uid, comm, and cgroup id sets. Host vs container, namespace, pod
//!   label and container name are turned into a set of leaf cgroup ids the agent resolves from
//!   attribution (the cgroup scan at start and the watcher's `cgroup_mkdir` records after);
//! - in the agent, on every decoded event: everything above again (the fallback for monitors
//!   whose programs do not consult the kernel filter, for cgroups not resolved yet, and for
//!   filters a reload adds to objects loaded without the kernel filter), and binary path, which
//!   only exec events carry.
//!
//! Names (`pod_namespace`, `container_name`, `pod_labels`) are read from the attribution record
//! as it serialises, so they apply as soon as the record carries them. A filter on a name the
//! record does not carry yet neither keeps nor drops in the kernel: the agent decides.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicU64, Ordering},
};

use tapio_runtime::filter::{comm_key, KernelFilter, KeySet, Mode};

use crate::events::{process::ProcessBody, Body, Event};

/// Which processes are watched at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    All,
    /// Only processes outside any container (no container attribution).
    Host,
    /// Only processes in a pod's or a container's cgroup.
    Containers,
}

/// A list of strings that keeps or drops its matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub mode: Mode,
    pub values: BTreeSet<String>,
}

impl Names {
    fn drops(&self, matched: bool) -> bool {
        match self.mode {
            Mode::Include => !matched,
            Mode::Exclude => matched,
        }
    }
}

/// A binary path pattern: exact, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
            None => PathPattern::Exact(s.to_owned()),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// The configured filters, validated (crate::config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub uid: Option<KeySet<u32>>,
    pub comm: Option<KeySet<[u8; 16]>>,
    pub scope: Scope,
    pub namespace: Option<Names>,
    /// `key=value` pairs; an event matches when its pod has any of them.
    pub pod_label: Option<Names>,
    pub container_name: Option<Names>,
    pub binary: Option<(Mode, BTreeSet<PathPattern>)>,
}

/// The filters by name, as the metrics label them.
pub const NAMES: &[&str] = &["uid", "comm", "scope", "namespace", "pod_label", "container_name", "binary"];

impl Filters {
    /// Whether any filter is configured.
    pub fn any(&self) -> bool {
        *self != Filters::default()
    }

    /// Whether any filter resolves to a set of cgroup ids.
    pub fn by_cgroup(&self) -> bool {
        self.scope != Scope::All || self.namespace.is_some() || self.pod_label.is_some() || self.container_name.is_some()
    }

    /// The kernel's part, with the cgroup set resolved over `known` (leaf cgroup id and its
    /// attribution as JSON: every pod and container cgroup the agent knows of).
    pub fn kernel(&self, known: impl IntoIterator<Item = (u64, serde_json::Value)>) -> KernelFilter {
        let cgroup = self.by_cgroup().then(|| {
            // Always an exclusion of the cgroups decidedly out, never an inclusion of those
            // known to be in: a container's cgroup reaches this set only after the agent has
            // drained its cgroup_mkdir record, and an include set would drop its first events
            // (the entrypoint's exec) in that gap. Excluding only what is decided loses nothing:
            // what the kernel lets through (a new cgroup, a host process under an include
            // filter) the agent still judges.
            let keys = known
                .into_iter()
                .filter(|(_, record)| matches!(self.judge_container(Some(record)), Verdict::Drop(_)))
                .map(|(id, _)| id)
                .collect();
            KeySet { mode: Mode::Exclude, keys }
        });
        KernelFilter { uid: self.uid.clone(), comm: self.comm.clone(), cgroup }
    }

    /// The cgroup-level verdict for a process whose attribution is `record` (None: a host process).
    fn judge_container(&self, record: Option<&serde_json::Value>) -> Verdict {
        match (self.scope, record.is_some()) {
            (Scope::Host, true) => return Verdict::Drop("scope"),
            (Scope::Containers, false) => return Verdict::Drop("scope"),
            _ => {}
        }
        let mut unknown = false;
        let str_field = |key: &str| record.and_then(|r| r.get(key)).and_then(|v| v.as_str()).map(str::to_owned);
        for (name, filter, value) in [
            ("namespace", &self.namespace, str_field("pod_namespace")),
            ("container_name", &self.container_name, str_field("container_name")),
        ] {
            let Some(filter) = filter else { continue };
            match value {
                Some(v) => {
                    if filter.drops(filter.values.contains(&v)) {
                        return Verdict::Drop(name);
                    }
                }
                // A host process has no namespace: an include drops it, an exclude keeps it.
                None if record.is_none() => {
                    if filter.mode == Mode::Include {
                        return Verdict::Drop(name);
                    }
                }
                None => unknown = true,
            }
        }
        if let Some(filter) = &self.pod_label {
            match record.map(|r| r.get("pod_labels")) {
                Some(Some(serde_json::Value::Object(labels))) => {
                    let matched = labels.iter().any(|(k, v)| v.as_str().is_some_and(|v| filter.values.contains(&format!("{k}={v}"))));
                    if filter.drops(matched) {
                        return Verdict::Drop("pod_label");
                    }
                }
                Some(_) => unknown = true,
                None => {
                    if filter.mode == Mode::Include {
                        return Verdict::Drop("pod_label");
                    }
                }
            }
        }
        if unknown {
            Verdict::Unknown
        } else {
            Verdict::Keep
        }
    }

    /// The agent's verdict on one decoded (and attributed) event: the filter that drops it.
    pub fn judge(&self, event: &Event) -> Option<&'static str> {
        if self.uid.as_ref().is_some_and(|s| s.drops(&event.uid)) {
            return Some("uid");
        }
        if self.comm.as_ref().is_some_and(|s| s.drops(&comm_key(&event.comm))) {
            return Some("comm");
        }
        if self.by_cgroup() {
            let record = event.container.as_ref().and_then(|a| serde_json::to_value(&**a).ok());
            if let Verdict::Drop(name) = self.judge_container(record.as_ref()) {
                return Some(name);
            }
        }
        if let Some((mode, patterns)) = &self.binary {
            if let Body::Process(ProcessBody::Exec { filename, .. }) = &event.body {
                let matched = patterns.iter().any(|p| p.matches(filename));
                if (*mode == Mode::Include) != matched {
                    return Some("binary");
                }
            }
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    Drop(&'static str),
    /// A name filter whose field the record does not carry (yet).
    Unknown,
}

/// The agent's drops per filter, for the metrics.
#[derive(Debug, Default)]
pub struct AgentDrops {
    counts: BTreeMap<&'static str, AtomicU64>,
}

impl AgentDrops {
    pub fn new() -> Self {
        Self { counts: NAMES.iter().map(|&n| (n, AtomicU64::new(0))).collect() }
    }

    pub fn count(&self, filter: &'static str) {
        if let Some(c) = self.counts.get(filter) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, filter: &str) -> u64 {
        self.counts.get(filter).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
    }
}

/// The filters as the run loop holds them: the configured ones, the agent's drop counters, and
/// whether the kernel half is on in the loaded objects (decided at load, see
/// probes/include/filter.bpf.h).
pub struct Active {
    pub filters: Filters,
    pub drops: std::sync::Arc<AgentDrops>,
    pub kernel_on: bool,
    /// The cgroup set must be resolved again (a cgroup appeared, the filters changed).
    pub dirty: bool,
}

impl Active {
    /// Drops from `events` what the filters drop, counting each by the filter that dropped it.
    pub fn retain(&self, events: &mut Vec<Event>) {
        if !self.filters.any() {
            return;
        }
        events.retain(|e| match self.filters.judge(e) {
            Some(name) => {
                self.drops.count(name);
                false
            }
            None => true,
        });
    }

    /// The kernel half over what `attributor` knows.
    pub fn kernel(&self, attributor: Option<&crate::attribution::Attributor>) -> KernelFilter {
        let known: Vec<(u64, serde_json::Value)> = match attributor {
            Some(a) if self.filters.by_cgroup() => {
                a.entries().filter_map(|(id, rec)| Some((id, serde_json::to_value(&**rec).ok()?))).collect()
            }
            _ => Vec::new(),
        };
        self.filters.kernel(known)
    }

    /// Writes the kernel half into every loaded object that carries it, in place.
    pub fn sync<'a>(&mut self, objects: impl IntoIterator<Item = (&'a str, &'a aya::Ebpf)>, attributor: Option<&crate::attribution::Attributor>) {
        self.dirty = false;
        if !self.kernel_on {
            return;
        }
        let kernel = self.kernel(attributor);
        for (name, ebpf) in objects {
            if !tapio_runtime::filter::carried(ebpf) {
                continue;
            }
            if let Err(e) = tapio_runtime::filter::apply(ebpf, &kernel) {
                tracing::warn!(monitor = name, "filter: {e}; the agent still applies every filter");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rstest::rstest;
    use serde_json::json;

    use super::*;
    use crate::attribution::parse::Attribution;

    fn names(mode: Mode, values: &[&str]) -> Option<Names> {
        Some(Names { mode, values: values.iter().map(|s| (*s).to_owned()).collect() })
    }

    /// An attribution record as the CRI names will serialise it (pod_name, pod_namespace,
    /// container_name, container_image, pod_labels beside the cgroup's fields).
    fn record(namespace: &str, container: &str, labels: serde_json::Value) -> serde_json::Value {
        json!({
            "container_id": "4a3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccd",
            "container_runtime": "containerd",
            "pod_uid": "7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b",
            "pod_name": "web-0",
            "pod_namespace": namespace,
            "container_name": container,
            "container_image": "web:1",
            "pod_labels": labels,
        })
    }

    /// The cgroup fields only: the names are not known (yet).
    fn unnamed() -> serde_json::Value {
        json!({ "container_id": "ab".repeat(32), "container_runtime": "containerd", "pod_uid": "u" })
    }

    #[rstest]
    #[case::no_filter(Filters::default(), Some(record("prod", "app", json!({}))), Verdict::Keep)]
    #[case::exclude_namespace_hit(Filters { namespace: names(Mode::Exclude, &["kube-system"]), ..Default::default() }, Some(record("kube-system", "coredns", json!({}))), Verdict::Drop("namespace"))]
    #[case::exclude_namespace_miss(Filters { namespace: names(Mode::Exclude, &["kube-system"]), ..Default::default() }, Some(record("prod", "app", json!({}))), Verdict::Keep)]
    #[case::exclude_namespace_host(Filters { namespace: names(Mode::Exclude, &["kube-system"]), ..Default::default() }, None, Verdict::Keep)]
    #[case::include_namespace_host(Filters { namespace: names(Mode::Include, &["prod"]), ..Default::default() }, None, Verdict::Drop("namespace"))]
    #[case::include_namespace_unnamed(Filters { namespace: names(Mode::Include, &["prod"]), ..Default::default() }, Some(unnamed()), Verdict::Unknown)]
    #[case::include_container_hit(Filters { container_name: names(Mode::Include, &["app"]), ..Default::default() }, Some(record("prod", "app", json!({}))), Verdict::Keep)]
    #[case::include_container_miss(Filters { container_name: names(Mode::Include, &["app"]), ..Default::default() }, Some(record("prod", "istio-proxy", json!({}))), Verdict::Drop("container_name"))]
    #[case::exclude_container_hit(Filters { container_name: names(Mode::Exclude, &["istio-proxy"]), ..Default::default() }, Some(record("prod", "istio-proxy", json!({}))), Verdict::Drop("container_name"))]
    #[case::label_include_hit(Filters { pod_label: names(Mode::Include, &["app=web"]), ..Default::default() }, Some(record("prod", "app", json!({"app": "web", "tier": "1"}))), Verdict::Keep)]
    #[case::label_include_miss(Filters { pod_label: names(Mode::Include, &["app=web"]), ..Default::default() }, Some(record("prod", "app", json!({"app": "db"}))), Verdict::Drop("pod_label"))]
    #[case::label_exclude_hit(Filters { pod_label: names(Mode::Exclude, &["app=web"]), ..Default::default() }, Some(record("prod", "app", json!({"app": "web"}))), Verdict::Drop("pod_label"))]
    #[case::label_unnamed(Filters { pod_label: names(Mode::Exclude, &["app=web"]), ..Default::default() }, Some(unnamed()), Verdict::Unknown)]
    #[case::scope_host_container(Filters { scope: Scope::Host, ..Default::default() }, Some(unnamed()), Verdict::Drop("scope"))]
    #[case::scope_host_host(Filters { scope: Scope::Host, ..Default::default() }, None, Verdict::Keep)]
    #[case::scope_containers_host(Filters { scope: Scope::Containers, ..Default::default() }, None, Verdict::Drop("scope"))]
    fn container_verdicts(#[case] filters: Filters, #[case] record: Option<serde_json::Value>, #[case] verdict: Verdict) {
        assert_eq!(filters.judge_container(record.as_ref()), verdict);
    }

    /// The kernel's cgroup set is always an exclusion of what is decidedly out, also for include
    /// filters: a cgroup the kernel set does not hold yet (a container just made, or one whose
    /// names are late) passes to the agent, so none of its events is lost in the kernel.
    #[rstest]
    #[case::exclude_namespace(Filters { namespace: names(Mode::Exclude, &["kube-system"]), ..Default::default() }, Mode::Exclude, &[1])]
    #[case::include_namespace(Filters { namespace: names(Mode::Include, &["kube-system"]), ..Default::default() }, Mode::Exclude, &[2])]
    #[case::host_scope(Filters { scope: Scope::Host, ..Default::default() }, Mode::Exclude, &[1, 2, 3])]
    #[case::containers_but_not_proxies(Filters { scope: Scope::Containers, container_name: names(Mode::Exclude, &["istio-proxy"]), ..Default::default() }, Mode::Exclude, &[2])]
    fn kernel_cgroup_sets(#[case] filters: Filters, #[case] mode: Mode, #[case] ids: &[u64]) {
        let known = vec![(1, record("kube-system", "coredns", json!({}))), (2, record("prod", "istio-proxy", json!({}))), (3, unnamed())];
        let kernel = filters.kernel(known);
        let set = kernel.cgroup.expect("a cgroup set");
        assert_eq!(set.mode, mode);
        assert_eq!(set.keys, ids.iter().copied().collect());
    }

    #[test]
    fn uid_and_comm_alone_need_no_cgroup_set() {
        let filters = Filters { uid: Some(KeySet { mode: Mode::Exclude, keys: [0].into() }), ..Default::default() };
        assert_eq!(filters.kernel(Vec::new()).cgroup, None);
    }

    fn exec(uid: u32, comm: &str, filename: &str, container: Option<Attribution>) -> Event {
        Event {
            ts_ns: 1,
            monitor: "process",
            event: "exec",
            pid: 10,
            tgid: 10,
            comm: comm.to_owned(),
            cgroup_id: 42,
            uid,
            container: container.map(Arc::new),
            body: Body::Process(ProcessBody::Exec { ppid: 1, pid_ns: 0, filename: filename.to_owned(), argv: Vec::new(), argv_truncated: false }),
        }
    }

    fn container() -> Attribution {
        Attribution {
            container_id: Some("ab".repeat(32)),
            container_runtime: None,
            pod_uid: None,
            qos: None,
            pod_name: None,
            pod_namespace: None,
            container_name: None,
            container_image: None,
            pod_labels: Default::default(),
        }
    }

    /// A container whose CRI names have arrived.
    fn named(namespace: &str, name: &str) -> Attribution {
        Attribution {
            pod_name: Some("web-0".into()),
            pod_namespace: Some(namespace.into()),
            container_name: Some(name.into()),
            pod_labels: [("app".to_owned(), "web".to_owned())].into(),
            ..container()
        }
    }

    #[rstest]
    #[case::kept(Filters::default(), exec(0, "sh", "/bin/sh", None), None)]
    #[case::uid(Filters { uid: Some(KeySet { mode: Mode::Include, keys: [1000].into() }), ..Default::default() }, exec(0, "sh", "/bin/sh", None), Some("uid"))]
    #[case::comm(Filters { comm: Some(KeySet { mode: Mode::Exclude, keys: [comm_key("sh")].into() }), ..Default::default() }, exec(0, "sh", "/bin/sh", None), Some("comm"))]
    #[case::binary_exact(Filters { binary: Some((Mode::Exclude, [PathPattern::parse("/bin/sh")].into())), ..Default::default() }, exec(0, "sh", "/bin/sh", None), Some("binary"))]
    #[case::binary_exact_is_not_prefix(Filters { binary: Some((Mode::Exclude, [PathPattern::parse("/bin/s")].into())), ..Default::default() }, exec(0, "sh", "/bin/sh", None), None)]
    #[case::binary_prefix(Filters { binary: Some((Mode::Include, [PathPattern::parse("/opt/app/*")].into())), ..Default::default() }, exec(0, "sh", "/bin/sh", None), Some("binary"))]
    #[case::binary_prefix_hit(Filters { binary: Some((Mode::Include, [PathPattern::parse("/opt/app/*")].into())), ..Default::default() }, exec(0, "run", "/opt/app/run", None), None)]
    #[case::scope_host(Filters { scope: Scope::Host, ..Default::default() }, exec(0, "sh", "/bin/sh", Some(container())), Some("scope"))]
    #[case::scope_containers(Filters { scope: Scope::Containers, ..Default::default() }, exec(0, "sh", "/bin/sh", Some(container())), None)]
    // Today's records carry no names: an exclude keeps, an include waits for them (drops nothing
    // it cannot judge); once the CRI names land the same filter decides.
    #[case::namespace_not_known_yet(Filters { namespace: names(Mode::Include, &["prod"]), ..Default::default() }, exec(0, "sh", "/bin/sh", Some(container())), None)]
    // With the names from the runtime, the same filters decide on the real attribution record.
    #[case::namespace_other(Filters { namespace: names(Mode::Include, &["prod"]), ..Default::default() }, exec(0, "sh", "/bin/sh", Some(named("dev", "app"))), Some("namespace"))]
    #[case::namespace_kept(Filters { namespace: names(Mode::Include, &["prod"]), ..Default::default() }, exec(0, "sh", "/bin/sh", Some(named("prod", "app"))), None)]
    #[case::container_name_excluded(Filters { container_name: names(Mode::Exclude, &["sidecar"]), ..Default::default() }, exec(0, "sh", "/bin/sh", Some(named("prod", "sidecar"))), Some("container_name"))]
    fn agent_verdicts(#[case] filters: Filters, #[case] event: Event, #[case] dropped_by: Option<&'static str>) {
        assert_eq!(filters.judge(&event), dropped_by);
    }

    #[test]
    fn retain_counts_each_drop_by_its_filter() {
        let active = Active {
            filters: Filters { comm: Some(KeySet { mode: Mode::Exclude, keys: [comm_key("noisy")].into() }), ..Default::default() },
            drops: Arc::new(AgentDrops::new()),
            kernel_on: false,
            dirty: false,
        };
        let mut events = vec![exec(0, "noisy", "/bin/noisy", None), exec(0, "sh", "/bin/sh", None), exec(0, "noisy", "/bin/noisy", None)];
        active.retain(&mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(active.drops.get("comm"), 2);
        assert_eq!(active.drops.get("uid"), 0);
    }
}
