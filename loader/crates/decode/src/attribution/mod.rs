//! Container and pod attribution, decided from the cgroup: cgroup id -> cgroup v2 path -> runtime,
//! full container id, pod uid and QoS class ([`parse`]).
//!
//! The id -> path map is filled twice over: a scan of the v2 hierarchy at start (a directory's
//! inode number is its cgroup id, 5.5+), and the records of the cgroup_watch program
//! (tapio-runtime's monitors::cgroup_watch), which announces each cgroup as it is made, before any task
//! can run in it. The run loop applies the watcher's records of a drain pass before it attributes
//! that pass's events, so a container whose whole life fits in one pass is still attributed.
//!
//! Only pod and container cgroups are kept: a host cgroup costs nothing, and an event whose
//! cgroup is not in the map is a host event and gets no container fields. The map is bounded
//! ([`DEFAULT_CAPACITY`]); past it the oldest entries go first.

pub mod parse;

use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::Arc,
};

pub use parse::{Attribution, Qos, Runtime};

use crate::events::{cgroup_watch::Mkdir, Event};

/// Pod and container cgroups remembered at most (about 520 bytes each, 1.2 KB with the CRI names:
/// docs/benchmarks-attribution.md).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Directory levels the scan descends at most (kubelet's deepest layout is 4 below the root).
const SCAN_DEPTH: usize = 16;

/// How the map was filled and used, for the metrics and the end-of-run log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Pod and container cgroups found by the scan at start.
    pub scanned: u64,
    /// Pod and container cgroups announced by the watcher.
    pub announced: u64,
    /// Entries dropped to stay within the capacity.
    pub evicted: u64,
    /// Events that got container fields.
    pub attributed: u64,
}

/// The index key of a container id.
fn key(container_id: &str) -> u64 {
    use std::hash::BuildHasher;
    // Fixed keys: the index lives in one process, and a fixed hasher needs no seed per map.
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(container_id)
}

/// The cgroup id -> attribution map.
#[derive(Debug)]
pub struct Attributor {
    by_id: HashMap<u64, Arc<Attribution>>,
    /// Container id (by its hash, so the 64-hex string is not held twice) -> its cgroup ids, so
    /// that a CRI answer names a container's cgroups without walking the whole map (10,000
    /// answers over 10,000 containers took 0.7 s that way). A collision only costs a comparison.
    by_container: HashMap<u64, Vec<u64>>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
    capacity: usize,
    stats: Stats,
    /// Container ids seen for the first time since [`Attributor::take_new_containers`] (for
    /// the CRI lookup, which asks about each once).
    new_containers: Vec<String>,
}

impl Attributor {
    pub fn new(capacity: usize) -> Self {
        Self { by_id: HashMap::new(), by_container: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1), stats: Stats::default(), new_containers: Vec::new() }
    }

    /// Records what `path` says about cgroup `id`; a host cgroup is not kept. Returns whether
    /// the cgroup is a pod's or a container's.
    pub fn insert(&mut self, id: u64, path: &str) -> bool {
        let Some(parsed) = parse::parse(path) else { return false };
        // Only a CRI runtime's containers are asked about: a pod's (any runtime kubelet drives,
        // cri-dockerd's docker included) or one of containerd's or CRI-O's. Plain docker and
        // podman know no CRI, and asking would only hold their events for nothing.
        let cri = parsed.pod_uid.is_some() || matches!(parsed.runtime, Some(Runtime::Containerd | Runtime::CriO | Runtime::Cri));
        if let (Some(container), true) = (&parsed.container_id, cri) {
            self.new_containers.push(container.clone());
        }
        let attribution: Attribution = parsed.into();
        if let Some(container) = &attribution.container_id {
            self.by_container.entry(key(container)).or_default().push(id);
        }
        match self.by_id.insert(id, Arc::new(attribution)) {
            Some(replaced) => self.unindex(id, &replaced),
            None => {
                self.order.push_back(id);
                while self.order.len() > self.capacity {
                    if let Some(old) = self.order.pop_front() {
                        if let Some(gone) = self.by_id.remove(&old) {
                            self.unindex(old, &gone);
                        }
                        self.stats.evicted += 1;
                    }
                }
            }
        }
        true
    }

    /// Forgets that cgroup `id` was `old`'s container's (once: a re-inserted id was indexed again).
    fn unindex(&mut self, id: u64, old: &Attribution) {
        let Some(container) = &old.container_id else { return };
        let k = key(container);
        if let Some(ids) = self.by_container.get_mut(&k) {
            if let Some(at) = ids.iter().position(|&x| x == id) {
                ids.swap_remove(at);
            }
            if ids.is_empty() {
                self.by_container.remove(&k);
            }
        }
    }

    /// A cgroup the watcher announced.
    /// Returns whether the cgroup is a pod's or a container's (and so was recorded): a host
    /// cgroup (a systemd scope, a session) changes nothing a caller derives from the map.
    pub fn observe(&mut self, mkdir: &Mkdir) -> bool {
        if mkdir.truncated {
            tracing::debug!(cgroup_id = mkdir.cgroup_id, path = %mkdir.path, "cgroup path longer than the record: attributed from its beginning");
        }
        let recorded = self.insert(mkdir.cgroup_id, &mkdir.path);
        if recorded {
            self.stats.announced += 1;
        }
        recorded
    }

    /// What is known of cgroup `id`; None: a host cgroup (or one not seen).
    pub fn lookup(&self, id: u64) -> Option<&Arc<Attribution>> {
        self.by_id.get(&id)
    }

    /// Every pod and container cgroup known, with its attribution (the source filters resolve
    /// their cgroup id sets over these).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Arc<Attribution>)> {
        self.by_id.iter().map(|(id, a)| (*id, a))
    }

    /// Gives `event` its container fields when its cgroup is a pod's or a container's.
    pub fn annotate(&mut self, event: &mut Event) {
        if let Some(a) = self.by_id.get(&event.cgroup_id) {
            event.container = Some(a.clone());
            self.stats.attributed += 1;
        }
    }

    /// Gives an annotated `event` what its cgroup's entry says now (names that came after it was
    /// annotated); not counted again.
    pub fn refresh(&self, event: &mut Event) {
        if event.container.is_some() {
            if let Some(a) = self.by_id.get(&event.cgroup_id) {
                event.container = Some(a.clone());
            }
        }
    }

    /// Walks the v2 hierarchy mounted at `root` and records every pod and container cgroup in it.
    /// Unreadable directories are skipped (a cgroup removed during the walk). Returns how many
    /// were recorded.
    pub fn scan(&mut self, root: &Path) -> u64 {
        let mut found = 0;
        let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                if !kind.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = format!("{rel}/{name}");
                if let Ok(meta) = entry.metadata() {
                    if self.insert(meta.ino(), &path) {
                        found += 1;
                    }
                }
                if depth + 1 < SCAN_DEPTH {
                    stack.push((entry.path(), path, depth + 1));
                }
            }
        }
        self.stats.scanned += found;
        found
    }

    /// The container ids recorded since the last call, for the runtime to be asked about.
    pub fn take_new_containers(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_containers)
    }

    /// Gives every cgroup of container `container_id` what `name` sets (the runtime's names):
    /// events annotated from now on carry them. Returns how many cgroups were updated. Linear in
    /// the container's cgroups (through the container index), once per container answered.
    pub fn name(&mut self, container_id: &str, name: impl Fn(&mut Attribution)) -> usize {
        let Some(ids) = self.by_container.get(&key(container_id)) else { return 0 };
        let mut updated = 0;
        for id in ids {
            if let Some(a) = self.by_id.get_mut(id).filter(|a| a.container_id.as_deref() == Some(container_id)) {
                name(Arc::make_mut(a));
                updated += 1;
            }
        }
        updated
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccd";

    #[test]
    fn host_cgroups_are_not_kept_and_get_no_fields() {
        let mut a = Attributor::new(8);
        assert!(!a.insert(1, "/system.slice/ssh.service"));
        assert!(a.insert(2, &format!("/docker/{ID}")));
        assert_eq!(a.len(), 1);
        let mut host = crate::events::dns::test_event("query", 1, 1, 1);
        host.cgroup_id = 1;
        a.annotate(&mut host);
        let json = serde_json::to_value(&host).unwrap();
        for field in ["container_id", "container_runtime", "pod_uid", "qos", "pod_name", "pod_namespace", "container_name", "container_image", "pod_labels"] {
            assert!(json.get(field).is_none(), "{field} on a host event: {json}");
        }
        let mut inside = host.clone();
        inside.cgroup_id = 2;
        a.annotate(&mut inside);
        let json = serde_json::to_value(&inside).unwrap();
        assert_eq!(json["container_id"], ID);
        assert_eq!(json["container_runtime"], "docker");
        assert!(json.get("pod_uid").is_none(), "{json}");
    }

    #[test]
    fn runtime_names_reach_the_container_s_events_and_no_other() {
        let mut a = Attributor::new(8);
        let uid = "7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b";
        assert!(a.insert(1, &format!("/kubepods/besteffort/pod{uid}/{ID}")));
        assert!(a.insert(2, &format!("/kubepods/besteffort/pod{uid}")));
        assert!(a.insert(3, &format!("/libpod_parent/libpod-{}", "b".repeat(64))));
        assert_eq!(a.take_new_containers(), vec![ID.to_owned()], "only CRI containers are asked about, not pods or podman's");
        assert!(a.take_new_containers().is_empty());
        let mut e = crate::events::dns::test_event("query", 1, 1, 1);
        e.cgroup_id = 1;
        a.annotate(&mut e);
        let before = serde_json::to_value(&e).unwrap();
        for field in ["pod_name", "pod_namespace", "container_name", "container_image", "pod_labels"] {
            assert!(before.get(field).is_none(), "{field} before the runtime answered: {before}");
        }
        let named = a.name(ID, |at| {
            at.pod_name = Some("web-0".into());
            at.pod_namespace = Some("shop".into());
            at.container_name = Some("nginx".into());
            at.container_image = Some("nginx:1.27".into());
            at.pod_labels.insert("app".into(), "web".into());
        });
        assert_eq!(named, 1, "the pod's own cgroup has no container id");
        a.refresh(&mut e);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["pod_name"], "web-0");
        assert_eq!(json["pod_namespace"], "shop");
        assert_eq!(json["container_name"], "nginx");
        assert_eq!(json["container_image"], "nginx:1.27");
        assert_eq!(json["pod_labels"], serde_json::json!({"app": "web"}));
        assert_eq!(json["container_id"], ID);
        assert_eq!(a.stats().attributed, 1, "a refresh is not counted again");
        let mut host = crate::events::dns::test_event("query", 1, 1, 1);
        host.cgroup_id = 99;
        a.annotate(&mut host);
        a.refresh(&mut host);
        assert!(host.container.is_none());
    }

    #[test]
    fn naming_reaches_every_cgroup_of_the_container_and_survives_eviction_and_reinsertion() {
        let mut a = Attributor::new(3);
        a.insert(1, &format!("/docker/{ID}"));
        a.insert(2, &format!("/system.slice/docker-{ID}.scope"));
        a.insert(3, "/docker/1111111111111111111111111111111111111111111111111111111111111111");
        assert_eq!(a.name(ID, |at| at.container_name = Some("web".into())), 2);
        assert_eq!(a.lookup(2).unwrap().container_name.as_deref(), Some("web"));
        // Re-inserting an id does not count it twice; evicting one leaves the other named.
        a.insert(2, &format!("/system.slice/docker-{ID}.scope"));
        a.insert(4, "/docker/2222222222222222222222222222222222222222222222222222222222222222");
        assert!(a.lookup(1).is_none(), "the oldest went");
        assert_eq!(a.name(ID, |at| at.pod_name = Some("p".into())), 1);
        assert_eq!(a.name("no-such-container", |_| unreachable!()), 0);
        // Every container id still indexed has a live cgroup.
        assert!(a.by_container.values().all(|ids| !ids.is_empty() && ids.iter().all(|id| a.by_id.contains_key(id))));
    }

    #[test]
    fn the_oldest_entries_go_past_the_capacity() {
        let mut a = Attributor::new(2);
        for id in 1..=3u64 {
            a.insert(id, &format!("/docker/{ID}"));
        }
        assert_eq!(a.len(), 2);
        assert!(a.lookup(1).is_none());
        assert!(a.lookup(3).is_some());
        assert_eq!(a.stats().evicted, 1);
    }

    #[test]
    fn the_scan_reads_ids_from_inode_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let pod = dir.path().join("kubepods/besteffort/pod7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b");
        std::fs::create_dir_all(pod.join(ID)).unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/cron.service")).unwrap();
        let mut a = Attributor::new(16);
        assert_eq!(a.scan(dir.path()), 2, "the pod and its container");
        let ino = std::fs::metadata(pod.join(ID)).unwrap().ino();
        let got = a.lookup(ino).expect("container by inode");
        assert_eq!(got.container_id.as_deref(), Some(ID));
        assert_eq!(got.qos, Some(Qos::BestEffort));
    }
}
