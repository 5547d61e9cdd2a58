//! What happens to decoded events between the buffers and the sinks, in this order: the dns
//! ordering stage (kernel time order behind a watermark, queries matched to responses, timeouts:
//! crate::dns), attribution (pod and container fields, batches held for CRI names:
//! [`super::attribution`]), then the source filters (crate::filter), after attribution so that
//! names apply. The run loop feeds every decoded event in and sends what [`Stages::release`]
//! gives back; it holds no stage's state itself.

use crate::{
    dns::{self, Sequencer},
    events::{cgroup_watch::Mkdir, Event},
    filter,
    output::metrics::{Counters, SharedObjects},
};

use super::attribution::Attribution;

pub(super) struct Stages {
    pub(super) dns: Sequencer,
    /// What the dns stage let through, waiting for [`Stages::release`].
    ordered: Vec<Event>,
    pub(super) attribution: Option<Attribution>,
    pub(super) filtering: filter::Active,
}

impl Stages {
    pub(super) fn new(dns: Sequencer, attribution: Option<Attribution>, filtering: filter::Active) -> Self {
        Self { dns, ordered: Vec::new(), attribution, filtering }
    }

    /// A decoded event: dns events wait for the watermark; the rest pass.
    pub(super) fn push(&mut self, event: Event) {
        self.dns.push(event, &mut self.ordered);
    }

    /// Lets through what the watermark has passed by now, with the timeouts that fell due.
    pub(super) fn advance(&mut self) {
        self.dns.advance(dns::monotonic_ns(), &mut self.ordered);
    }

    /// The run is over and no record is on its way: the watermark lets everything through.
    pub(super) fn flush(&mut self) {
        self.dns.flush(dns::monotonic_ns(), &mut self.ordered);
    }

    /// A cgroup the watcher announced (not an event: it only updates the map). Only a pod's or
    /// a container's cgroup changes the filters' cgroup sets.
    pub(super) fn observe(&mut self, mkdir: &Mkdir) {
        if let Some(a) = self.attribution.as_mut() {
            self.filtering.dirty |= a.observe(mkdir) && self.filtering.filters.by_cgroup();
        }
    }

    /// What may go out now, attributed and filtered, in order. `all`: nothing is held back for
    /// names (the run ends). Attribution runs after the whole pass was pushed, so the
    /// announcement of a cgroup drained later in the pass than its first event's record (another
    /// ring) is applied all the same.
    pub(super) fn release(&mut self, all: bool) -> Vec<Event> {
        let mut out = std::mem::take(&mut self.ordered);
        if let Some(a) = self.attribution.as_mut() {
            let (settled, named) = a.settle(out, all);
            out = settled;
            self.filtering.dirty |= named && self.filtering.filters.by_cgroup();
        }
        self.filtering.retain(&mut out);
        out
    }

    /// Rewrites the kernel half of the filters in place if the cgroup sets or the filters
    /// changed (no program is detached).
    pub(super) fn sync_filters(&mut self, objects: &SharedObjects) {
        if self.filtering.dirty {
            let attributor = self.attribution.as_ref().map(Attribution::attributor);
            self.filtering.sync(objects.iter().map(|(n, e)| (*n, e)), attributor);
        }
    }

    /// Whether a batch waits for CRI names.
    pub(super) fn holding(&self) -> bool {
        self.attribution.as_ref().is_some_and(Attribution::holding)
    }

    /// metrics: tapio_dns_inflight*.
    pub(super) fn publish(&self, counters: &Counters) {
        self.dns.publish(counters);
    }
}
