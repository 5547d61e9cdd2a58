//! DNS in user space: the wire decoding of captured messages ([`wire`], crate::dns_wire) and the correlator that
//! matches responses to queries and reports queries left unanswered.
//!
//! Why matching happens here and not in BPF: a timeout is the absence of an event, which only a
//! clock outside the kernel can notice; keeping the pending queries where the clock is avoids a
//! second copy of the state and a periodic walk of a kernel map. The state is bounded like an LRU
//! hash: at most `capacity` pending queries, the oldest dropped (and counted) first, so a flood of
//! unanswered queries costs a fixed amount of memory.

pub mod order;
pub use crate::dns_wire as wire;

pub use order::Sequencer;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::Duration,
};

use crate::events::{Body, Event};

pub use crate::events::dns::DEFAULT_TIMEOUT;
/// Default bound on queries waiting at once.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

/// Where [`Correlator::publish`] puts the table's size, bound and evictions: the agent's metrics
/// counters implement it, so decoding needs no metrics code.
pub trait DnsGauges {
    /// Pending queries, the bound on them and the queries evicted so far.
    fn set_dns_inflight(&self, inflight: u64, capacity: u64, evicted: u64);
}

impl<T: DnsGauges + ?Sized> DnsGauges for std::sync::Arc<T> {
    fn set_dns_inflight(&self, inflight: u64, capacity: u64, evicted: u64) {
        (**self).set_dns_inflight(inflight, capacity, evicted);
    }
}

/// What a query and its response share: the process, the DNS id and the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchKey {
    pub tgid: u32,
    pub dns_id: u16,
    /// The far end of the socket: the server for a client, the client for a server.
    pub peer: IpAddr,
    pub peer_port: u16,
}

struct Pending {
    seq: u64,
    query: Event,
}

/// Matches responses to queries and turns queries left unanswered into `timeout` events.
pub struct Correlator {
    window_ns: u64,
    capacity: usize,
    pending: HashMap<MatchKey, Pending>,
    /// (deadline, key, seq) in arrival order; the window is fixed, so also in deadline order.
    /// Entries whose seq no longer matches `pending` are stale (answered or replaced).
    order: VecDeque<(u64, MatchKey, u64)>,
    next_seq: u64,
    evicted: u64,
}

impl Correlator {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            pending: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            evicted: 0,
        }
    }

    /// Changes the window for queries seen from now on (SIGHUP reload); waiting queries keep
    /// their deadline. After a shrink, a new query's timeout may be reported up to one old
    /// window late (the deadline queue is ordered by arrival), but is stamped with its own
    /// deadline, so no event is lost or misdated.
    pub fn set_window(&mut self, window: Duration) {
        self.window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    }

    /// Queries waiting for a response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queries dropped unanswered because `capacity` were already waiting.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The bound on queries waiting at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies the table's size, bound and evictions into the metrics counters, so a scrape
    /// reads them without touching the correlator (which lives on the run loop's task).
    pub fn publish(&self, counters: &impl DnsGauges) {
        counters.set_dns_inflight(self.pending.len() as u64, self.capacity as u64, self.evicted);
    }

    /// Looks at one decoded event: a dns query is remembered, a dns response gets its
    /// `latency_ns` from the matching query. Other events pass untouched.
    pub fn observe(&mut self, event: &mut Event) {
        let Body::Dns(body) = &mut event.body else { return };
        let key = MatchKey { tgid: event.tgid, dns_id: body.dns_id, peer: body.peer, peer_port: body.peer_port };
        match event.event {
            "query" => {
                // A retransmission with the same id replaces the earlier query: the response
                // answers the latest one, and the earlier one was not left unanswered.
                let seq = self.next_seq;
                self.next_seq += 1;
                self.pending.insert(key, Pending { seq, query: event.clone() });
                self.order.push_back((event.ts_ns.saturating_add(self.window_ns), key, seq));
                self.enforce_capacity();
            }
            "response" => {
                if let Some(p) = self.pending.remove(&key) {
                    body.latency_ns = Some(Some(event.ts_ns.saturating_sub(p.query.ts_ns)));
                }
            }
            _ => {}
        }
    }

    /// Drops the oldest pending queries beyond `capacity`, and stale order entries beyond twice
    /// that, so neither structure grows without bound.
    fn enforce_capacity(&mut self) {
        while self.pending.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some((_, key, seq)) = self.order.pop_front() else { break };
            if self.pending.get(&key).is_some_and(|p| p.seq == seq) {
                self.pending.remove(&key);
                self.evicted += 1;
            }
        }
    }

    /// Queries whose window ended at or before `now_ns` (CLOCK_MONOTONIC, the clock of the
    /// events' `ts_ns`), as `timeout` events stamped with the end of their window.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(&(deadline, key, seq)) = self.order.front() {
            if deadline > now_ns {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&key).is_none_or(|p| p.seq != seq) {
                continue;
            }
            let Some(p) = self.pending.remove(&key) else { continue };
            let mut e = p.query;
            e.event = "timeout";
            e.ts_ns = deadline;
            out.push(e);
        }
        out
    }
}

/// CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_ns` reads, for [`Correlator::expire`].
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::dns::test_event;

    #[test]
    fn response_gets_latency_and_clears_the_query() {
        let mut c = Correlator::new(Duration::from_secs(5), 8);
        let mut q = test_event("query", 100, 7, 1000);
        c.observe(&mut q);
        let mut r = test_event("response", 100, 7, 1500);
        c.observe(&mut r);
        let Body::Dns(b) = &r.body else { unreachable!() };
        assert_eq!(b.latency_ns, Some(Some(500)));
        assert_eq!(c.pending(), 0);
        assert!(c.expire(u64::MAX).is_empty());
    }

    /// A query of process 100, id 7, is not answered by a response of another process or id.
    #[rstest::rstest]
    #[case::other_process(101, 7)]
    #[case::other_id(100, 8)]
    fn other_process_or_id_does_not_match(#[case] tgid: u32, #[case] id: u16) {
        let mut c = Correlator::new(Duration::from_secs(5), 8);
        c.observe(&mut test_event("query", 100, 7, 1000));
        let mut r = test_event("response", tgid, id, 1500);
        c.observe(&mut r);
        let Body::Dns(b) = &r.body else { unreachable!() };
        assert_eq!(b.latency_ns, Some(None), "an unmatched response has latency_ns: null");
        assert_eq!(c.pending(), 1);
    }

    #[test]
    fn unanswered_query_times_out_once() {
        let mut c = Correlator::new(Duration::from_nanos(1000), 8);
        c.observe(&mut test_event("query", 100, 7, 1000));
        assert!(c.expire(1999).is_empty());
        let t = c.expire(2000);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].event, t[0].ts_ns), ("timeout", 2000));
        assert!(c.expire(u64::MAX).is_empty());
    }

    #[test]
    fn flood_is_bounded() {
        let mut c = Correlator::new(Duration::from_secs(5), 4);
        for id in 0..100u16 {
            c.observe(&mut test_event("query", 100, id, 1000 + id as u64));
        }
        assert_eq!(c.pending(), 4);
        assert_eq!(c.evicted(), 96);
        assert!(c.order.len() <= 8);
        // The newest survive.
        let t = c.expire(u64::MAX);
        let ids: Vec<u16> = t
            .iter()
            .map(|e| match &e.body {
                Body::Dns(b) => b.dns_id,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, vec![96, 97, 98, 99]);
        // Retransmissions of one id do not grow the order queue past its bound either.
        for ts in 0..100 {
            c.observe(&mut test_event("query", 100, 1, ts));
        }
        assert_eq!(c.pending(), 1);
        assert!(c.order.len() <= 8);
    }
}
