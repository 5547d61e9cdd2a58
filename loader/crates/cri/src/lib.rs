//! Pod and container names from the node's CRI runtime service (containerd, CRI-O): a gRPC client
//! of `runtime.v1.RuntimeService` over the runtime's unix socket ([`Client`]), and a [`Resolver`]
//! that asks it once per new container id, off the event path, and keeps the answers in a bounded
//! cache.
//!
//! Owns: the socket paths probed by default, the CRI calls and what they are turned into
//! ([`Names`]). May not import: any other tapio crate (it knows container ids as strings; the
//! agent puts the names on its events), and no Kubernetes API server client: everything comes
//! from the node's runtime.
//!
//! One lookup is `ContainerStatus` (verbose off: labels, metadata name, image), then
//! `ListContainers` filtered by the id (the pod sandbox id, which the status lacks), then
//! `PodSandboxStatus` (pod name, namespace, labels), the last cached per sandbox. An id that is a
//! sandbox's own (the pause process has a cgroup of its own) is answered by `PodSandboxStatus`
//! alone, with no container name.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

pub use k8s_cri::v1 as api;
use api::runtime_service_client::RuntimeServiceClient;
use thiserror::Error;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Uri};

/// Sockets probed in order when none is configured: containerd's, then CRI-O's, under `/run`
/// and under its older alias `/var/run` (a node whose `/var/run` is not the `/run` symlink).
pub const DEFAULT_SOCKETS: &[&str] =
    &["/run/containerd/containerd.sock", "/run/crio/crio.sock", "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock"];

/// One CRI call may take at most this long; a runtime that hangs costs a lookup, not the agent.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Container ids whose answer (names, or "not known") is remembered at most; past it the oldest
/// go first and would be asked again.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Ids waiting for a lookup at most; beyond it a new id is not asked (counted as a failure).
const QUEUE: usize = 1024;

/// kubelet's labels on a container and on its sandbox (pkg/kubelet/types/labels.go).
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The first of [`DEFAULT_SOCKETS`] that exists and is a socket.
pub fn probe_socket() -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    DEFAULT_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
}

/// What the runtime says about a container (or a sandbox). Empty strings are None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    /// None for a sandbox's own id.
    pub container_name: Option<String>,
    /// As the runtime reports it (a reference such as `nginx:1.27`, possibly with its registry, or an id).
    pub container_image: Option<String>,
    /// The pod's labels (the sandbox's, without kubelet's own `io.kubernetes.pod.*`).
    pub pod_labels: BTreeMap<String, String>,
}

/// A failed CRI call (a connection that cannot be made shows here too: the client connects lazily).
#[derive(Debug, Error)]
pub enum CriError {
    #[error("cri: {call} {id}: {source}")]
    Call {
        call: &'static str,
        id: String,
        #[source]
        source: Box<tonic::Status>,
    },
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A client of the runtime service on one unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    inner: RuntimeServiceClient<Channel>,
}

impl Client {
    /// A client of the socket at `path`. The connection is made at the first call (and again
    /// after the runtime restarts), so a runtime that is not up yet is not an error here. Call
    /// it within a tokio runtime: the connection's task is spawned on it.
    pub fn new(path: &Path) -> Self {
        let socket = path.to_path_buf();
        // The URI is required by the HTTP/2 layer and never dialled: the connector below is.
        let endpoint = Endpoint::from_static("http://localhost").connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT);
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }));
        Self { inner: RuntimeServiceClient::new(channel) }
    }

    /// The generated client, for calls beyond the names (the tests run pods with it).
    pub fn runtime(&mut self) -> &mut RuntimeServiceClient<Channel> {
        &mut self.inner
    }

    /// The pod of sandbox `id`: its names and labels. None: the runtime does not know it.
    pub async fn pod(&mut self, id: &str) -> Result<Option<Names>, CriError> {
        let request = api::PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: false };
        let status = match self.inner.pod_sandbox_status(request).await {
            Ok(r) => r.into_inner().status,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(CriError::Call { call: "PodSandboxStatus", id: id.to_owned(), source: Box::new(s) }),
        };
        let Some(status) = status else { return Ok(None) };
        let meta = status.metadata.unwrap_or_default();
        let mut labels: BTreeMap<String, String> = status.labels.into_iter().collect();
        let pod_name = nonempty(&meta.name).or_else(|| labels.get(POD_NAME).cloned());
        let pod_namespace = nonempty(&meta.namespace).or_else(|| labels.get(POD_NAMESPACE).cloned());
        for kubelet in [POD_NAME, POD_NAMESPACE, POD_UID] {
            labels.remove(kubelet);
        }
        Ok(Some(Names { pod_name, pod_namespace, container_name: None, container_image: None, pod_labels: labels }))
    }

    /// The sandbox a container belongs to.
    async fn sandbox_of(&mut self, id: &str) -> Result<Option<String>, CriError> {
        let filter = api::ContainerFilter { id: id.to_owned(), ..Default::default() };
        let list = self
            .inner
            .list_containers(api::ListContainersRequest { filter: Some(filter) })
            .await
            .map_err(|s| CriError::Call { call: "ListContainers", id: id.to_owned(), source: Box::new(s) })?;
        Ok(list.into_inner().containers.into_iter().find(|c| c.id == id).and_then(|c| nonempty(&c.pod_sandbox_id)))
    }

    /// The container's status: its names from kubelet's labels (or its metadata) and image.
    /// None: the runtime knows no container `id`.
    async fn container(&mut self, id: &str) -> Result<Option<Names>, CriError> {
        let request = api::ContainerStatusRequest { container_id: id.to_owned(), verbose: false };
        let status = match self.inner.container_status(request).await {
            Ok(r) => r.into_inner().status,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(CriError::Call { call: "ContainerStatus", id: id.to_owned(), source: Box::new(s) }),
        };
        let Some(status) = status else { return Ok(None) };
        let label = |k: &str| status.labels.get(k).and_then(|v| nonempty(v));
        let container_name = label(CONTAINER_NAME).or_else(|| status.metadata.as_ref().and_then(|m| nonempty(&m.name)));
        let container_image = status.image.as_ref().and_then(|i| nonempty(&i.image)).or_else(|| nonempty(&status.image_ref));
        Ok(Some(Names { pod_name: label(POD_NAME), pod_namespace: label(POD_NAMESPACE), container_name, container_image, pod_labels: BTreeMap::new() }))
    }

    /// Everything about container (or sandbox) `id`, without a cache. None: unknown to the runtime.
    pub async fn names(&mut self, id: &str) -> Result<Option<Names>, CriError> {
        let mut pods = PodCache::default();
        self.names_cached(id, &mut pods).await
    }

    async fn names_cached(&mut self, id: &str, pods: &mut PodCache) -> Result<Option<Names>, CriError> {
        let Some(mut names) = self.container(id).await? else {
            // Not a container: perhaps the sandbox itself (its pause process).
            return self.pod(id).await;
        };
        if let Some(sandbox) = self.sandbox_of(id).await? {
            let pod = match pods.get(&sandbox) {
                Some(pod) => Some(pod),
                None => {
                    let pod = self.pod(&sandbox).await?;
                    if let Some(pod) = &pod {
                        pods.put(sandbox, pod.clone());
                    }
                    pod
                }
            };
            if let Some(pod) = pod {
                names.pod_name = pod.pod_name.or(names.pod_name);
                names.pod_namespace = pod.pod_namespace.or(names.pod_namespace);
                names.pod_labels = pod.pod_labels;
            }
        }
        Ok(Some(names))
    }
}

/// Sandboxes' answers, bounded (a pod's containers share one).
#[derive(Default)]
struct PodCache {
    by_id: HashMap<String, Names>,
    order: VecDeque<String>,
}

impl PodCache {
    const CAPACITY: usize = 4096;

    fn get(&self, id: &str) -> Option<Names> {
        self.by_id.get(id).cloned()
    }

    fn put(&mut self, id: String, names: Names) {
        if self.by_id.insert(id.clone(), names).is_none() {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
    }
}

/// The resolver's counters, for the metrics (`tapio_cri_*`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups made (one per new container id, and per retry of one not listed yet).
    pub lookups: AtomicU64,
    /// Ids asked again that the cache answered without a call.
    pub cache_hits: AtomicU64,
    /// Lookups that failed (the runtime unreachable or erring, or the queue full).
    pub failures: AtomicU64,
    /// Ids the runtime still did not know after every attempt (a container of another runtime,
    /// or one already removed).
    pub unknown: AtomicU64,
}

/// Attempts at most for an id the runtime does not know yet: a sandbox's cgroup (its pause
/// process) is made while RunPodSandbox runs, before containerd lists the sandbox, so the first
/// answer about it is "not found". Retried after 100, 200, 400 and 800 ms.
const ATTEMPTS: u32 = 5;
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Asks the runtime about new container ids on a task of its own and hands the answers back.
/// The caller never waits on gRPC: [`Resolver::ask`] queues, [`Resolver::answers`] takes what
/// has come, [`Resolver::pending`] says whether an answer is still on its way.
pub struct Resolver {
    socket: PathBuf,
    /// Ids asked (answered or not yet), oldest first, bounded: each id is asked once.
    asked: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    /// Ids asked whose final answer has not come back yet.
    in_flight: HashSet<String>,
    requests: mpsc::Sender<(String, u32)>,
    /// (id, names); None: the runtime gave none (unknown after every attempt, or a failure).
    answers: mpsc::UnboundedReceiver<(String, Option<Names>)>,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Resolver {
    /// Starts the lookup task on the current tokio runtime, for the socket at `socket`.
    pub fn spawn(socket: &Path, capacity: usize) -> Self {
        let mut client = Client::new(socket);
        let (requests, mut queue) = mpsc::channel::<(String, u32)>(QUEUE);
        let retry = requests.clone();
        let (reply, answers) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let counters = stats.clone();
        let task = tokio::spawn(async move {
            let mut pods = PodCache::default();
            while let Some((id, attempt)) = queue.recv().await {
                counters.lookups.fetch_add(1, Ordering::Relaxed);
                let answer = match client.names_cached(&id, &mut pods).await {
                    Ok(Some(names)) => Some(names),
                    Ok(None) if attempt + 1 < ATTEMPTS => {
                        // Not listed yet (a sandbox being made): ask again a little later,
                        // without holding up the ids queued behind it.
                        let (retry, reply, counters) = (retry.clone(), reply.clone(), counters.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(RETRY_FIRST * 2u32.pow(attempt)).await;
                            // A full queue must not leave the id in flight for good (its events
                            // would be held on every pass): it is answered "no names" instead.
                            if let Err(e) = retry.try_send((id, attempt + 1)) {
                                let (id, _) = e.into_inner();
                                counters.failures.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(container_id = %id, "cri: lookup queue full; this container's events carry no names");
                                let _ = reply.send((id, None));
                            }
                        });
                        continue;
                    }
                    Ok(None) => {
                        counters.unknown.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(container_id = %id, "cri: the runtime knows no such container");
                        None
                    }
                    Err(e) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(container_id = %id, "{e}");
                        None
                    }
                };
                if reply.send((id, answer)).is_err() {
                    return;
                }
            }
        });
        Self {
            socket: socket.to_path_buf(),
            asked: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            in_flight: HashSet::new(),
            requests,
            answers,
            stats,
            task,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Queues a lookup of `id` unless it was asked before (a cache hit). Never waits.
    pub fn ask(&mut self, id: &str) {
        if self.asked.contains(id) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.requests.try_send((id.to_owned(), 0)).is_err() {
            // Full (or the task gone): not remembered, so a later sighting asks again.
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.asked.insert(id.to_owned());
        self.in_flight.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.asked.remove(&old);
            }
        }
    }

    /// Whether the answer about `id` is still on its way (asked, not yet answered).
    pub fn pending(&self, id: &str) -> bool {
        self.in_flight.contains(id)
    }

    /// Ids asked and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The names that have come since the last call: (container id, names). Ids the runtime
    /// had no names for are no longer [`Resolver::pending`] either.
    pub fn answers(&mut self) -> Vec<(String, Names)> {
        let mut out = Vec::new();
        while let Ok((id, answer)) = self.answers.try_recv() {
            self.in_flight.remove(&id);
            if let Some(names) = answer {
                out.push((id, names));
            }
        }
        out
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_no_default() {
        // The probe only accepts sockets: a regular file at a default path is not one.
        assert!(DEFAULT_SOCKETS.iter().all(|p| p.ends_with(".sock")));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_that_is_not_there_is_a_failure_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Resolver::spawn(&dir.path().join("absent.sock"), 4);
        r.ask("a");
        r.ask("a");
        let stats = r.stats();
        let started = std::time::Instant::now();
        while stats.failures.load(Ordering::Relaxed) == 0 {
            assert!(started.elapsed() < CALL_TIMEOUT * 3, "no failure counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.lookups.load(Ordering::Relaxed), 1);
        assert_eq!(stats.cache_hits.load(Ordering::Relaxed), 1);
        while r.pending("a") {
            assert!(r.answers().is_empty());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
