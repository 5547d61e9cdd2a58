//! The run's attribution stage (issue 17): the cgroup id -> pod and container map, the watcher
//! that announces new cgroups, the CRI runtime's names, and the batches held while a container's
//! names are on their way. The run loop owns one [`Attribution`] when `attribution` is on and
//! never touches its parts.

use std::{collections::VecDeque, time::Duration};

use tracing::{info, warn};

use super::{load, RunOptions};
use crate::{
    attribution::Attributor,
    events::cgroup_watch::Mkdir,
    events::Event,
    monitors::{self, LoadedMonitor},
    output::metrics::Counters,
    transport::EventSource,
};

/// An event of a container whose CRI names are on their way waits at most this long for them.
/// A healthy runtime answers in a few milliseconds; past the bound the batch goes out with what
/// is known (its later events carry the names).
const NAME_HOLD: Duration = Duration::from_millis(250);
/// How often held batches are looked at while there are any.
pub(super) const HOLD_POLL: Duration = Duration::from_millis(5);

/// A batch waiting for names.
struct Held {
    deadline: tokio::time::Instant,
    events: Vec<Event>,
}

/// Attribution while the run streams.
pub(super) struct Attribution {
    attributor: Attributor,
    /// The cgroup watcher's object (cgroup:cgroup_mkdir): its records are in the run's streamer;
    /// dropping the object detaches it. None: it did not load, cgroups made after start are not
    /// attributed.
    watcher: Option<aya::Ebpf>,
    /// Pod and container names, asked once per new container id on a task of their own.
    cri: Option<tapio_cri::Resolver>,
    /// Batches held for a container's CRI names, oldest first (see [`Attribution::hold`]).
    held: VecDeque<Held>,
}

impl Attribution {
    /// Starts attribution when `options.attribution` asks for it: the watcher first, its records
    /// streaming beside the monitors' (pushed onto `sources`), then the scan of the hierarchy, so
    /// a cgroup made in between is announced rather than missed; then the CRI client. Nothing
    /// here stops the run: what cannot start is logged and the events carry less.
    pub(super) fn start(options: &RunOptions, counters: &Counters, sources: &mut Vec<EventSource>) -> Option<Self> {
        let mut attributor = Attributor::new(options.attribution?);
        let watcher = match load::external_btf(options.btf.as_ref()).map_err(|e| e.to_string()).and_then(|external| {
            monitors::load(&monitors::cgroup_watch::SPEC, load::target(external.as_ref()), &options.load)
                .map_err(|e| crate::errors::chain(&e))
        }) {
            Ok(LoadedMonitor { ebpf, events, .. }) => {
                sources.push(events);
                Some(ebpf)
            }
            Err(e) => {
                warn!("attribution: cgroup watcher not running ({e}); cgroups made after start are not attributed");
                None
            }
        };
        match crate::cgroup2::mounted_root() {
            Ok(Some(root)) => {
                let found = attributor.scan(&root);
                info!(root = %root.display(), pod_and_container_cgroups = found, watcher = watcher.is_some(), "attribution: scanned the cgroup v2 hierarchy");
            }
            Ok(None) => warn!("attribution: no cgroup v2 hierarchy mounted; no container fields"),
            Err(e) => warn!("attribution: {e}"),
        }
        // An event goes out with what is known when it is written and never waits for the
        // runtime longer than NAME_HOLD (docs/operations.md).
        let cri = match options.cri_socket.as_ref() {
            Some(socket) => {
                let r = tapio_cri::Resolver::spawn(socket, tapio_cri::DEFAULT_CAPACITY);
                info!(socket = %socket.display(), "attribution: pod and container names from the CRI runtime");
                let _ = counters.cri.set(r.stats());
                Some(r)
            }
            None => {
                info!("attribution: no CRI socket (none found, or `cri_socket = \"off\"`); no pod or container names");
                None
            }
        };
        Some(Self { attributor, watcher, cri, held: VecDeque::new() })
    }

    /// The map, for the filters' cgroup sets.
    pub(super) fn attributor(&self) -> &Attributor {
        &self.attributor
    }

    /// A cgroup the watcher announced. Returns whether it is a pod's or a container's (only
    /// those change the filters' cgroup sets).
    pub(super) fn observe(&mut self, mkdir: &Mkdir) -> bool {
        self.attributor.observe(mkdir)
    }

    /// Whether a batch is waiting for names: the loop then looks again every [`HOLD_POLL`].
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Puts the pod and container fields on `batch` and returns what may go out now, in order
    /// (see [`Attribution::hold`]); `all`: release everything (the run ends). The bool says
    /// whether a container got its names since the last call.
    pub(super) fn settle(&mut self, mut batch: Vec<Event>, all: bool) -> (Vec<Event>, bool) {
        let named = self.name_containers();
        batch.iter_mut().for_each(|event| self.attributor.annotate(event));
        (self.hold(batch, all), named)
    }

    /// Asks the runtime about the containers the attributor met since the last call, and gives
    /// the map the answers that have come (never waits: see tapio_cri::Resolver). Returns whether
    /// any container got its names, so the filters' cgroup sets are recomputed.
    fn name_containers(&mut self) -> bool {
        let new = self.attributor.take_new_containers();
        let Some(cri) = self.cri.as_mut() else { return false };
        for id in &new {
            cri.ask(id);
        }
        let mut named = false;
        for (id, names) in cri.answers() {
            named = true;
            self.attributor.name(&id, |at| {
                at.pod_name = names.pod_name.clone();
                at.pod_namespace = names.pod_namespace.clone();
                at.container_name = names.container_name.clone();
                at.container_image = names.container_image.clone();
                at.pod_labels = names.pod_labels.clone();
            });
        }
        named
    }

    /// Holds `batch` while one of its events is of a container whose names are being asked for
    /// (at most [`NAME_HOLD`]); returns what may go out now, in order: batches behind a held one
    /// wait behind it. `all`: release everything. Without a CRI socket, or with no lookup in
    /// flight and nothing held, the batch passes straight through.
    fn hold(&mut self, batch: Vec<Event>, all: bool) -> Vec<Event> {
        let Some(cri) = self.cri.as_ref() else { return batch };
        if self.held.is_empty() && (cri.in_flight() == 0 || all) {
            return batch;
        }
        let waiting = |events: &[Event]| {
            events.iter().any(|e| e.container.as_ref().and_then(|c| c.container_id.as_deref()).is_some_and(|id| cri.pending(id)))
        };
        if !batch.is_empty() {
            if self.held.is_empty() && !waiting(&batch) {
                return batch;
            }
            self.held.push_back(Held { deadline: tokio::time::Instant::now() + NAME_HOLD, events: batch });
        }
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        while let Some(front) = self.held.front() {
            if !all && front.deadline > now && waiting(&front.events) {
                break;
            }
            let mut events = self.held.pop_front().map(|h| h.events).unwrap_or_default();
            events.iter_mut().for_each(|e| self.attributor.refresh(e));
            out.append(&mut events);
        }
        out
    }

    /// The run is over: no more names are asked for.
    pub(super) fn stop_naming(&mut self) {
        self.cri = None;
    }

    /// Logs what attribution did over the run.
    pub(super) fn report(&self) {
        let st = self.attributor.stats();
        info!(scanned = st.scanned, announced = st.announced, evicted = st.evicted, attributed = st.attributed, held = self.attributor.len(), "attribution");
    }

    /// Detaches the watcher.
    pub(super) fn detach(&mut self) {
        self.watcher = None;
    }
}
