//! Puts DNS events back in kernel time order before the [`Correlator`] sees them, and expires
//! queries by event time.
//!
//! Why: the perf transport (every kernel before 5.8, or `--transport perf`) has one buffer per
//! CPU, and a drain pass reads them one after the other. A query sent on CPU 1 and its response
//! received on CPU 0 within one pass come out response first: the response found no query, went
//! out without `latency_ns`, and the query later timed out although it had been answered. The
//! ring buffer keeps one order, but a record can still wait in it for up to the delivery bound,
//! so a deadline compared with the wall clock can pass before the response that beat it is read.
//!
//! How: DNS events are held, ordered by `ts_ns` (ties by arrival), until the watermark passes
//! them. The watermark is the monotonic clock (the clock of `ts_ns`) less [`hold_for`] the
//! delivery policy: the reader drains every buffer at least once per delivery bound, so by then
//! every record stamped before the watermark has been read. Released events meet the correlator
//! in time order, and a query expires only when the watermark passes its deadline, with every
//! event stamped before the deadline already matched. Other monitors' events pass straight
//! through: only DNS correlation depends on the order.
//!
//! An event that arrives behind the watermark anyway (a reader stalled past the hold) is matched
//! at once, as before this stage, and counted in [`Sequencer::late`]. The held set is bounded
//! like the correlator: past `capacity` the oldest event is released early.

use std::{cmp::Reverse, collections::BinaryHeap, time::Duration};

use super::{Correlator, DnsGauges};
use crate::events::{Body, Event};

/// How far the watermark trails the clock under a delivery `bound` (`Delivery::bound` in
/// tapio-runtime's transport): two delivery bounds (the drain
/// timer's longest sleep, and as much again for the run loop to take the batch) plus 10 ms for
/// scheduling. 30 ms at the default 10 ms bound: that is what ordering adds to a DNS event's
/// output latency.
pub fn hold_for(bound: Duration) -> Duration {
    bound * 2 + Duration::from_millis(10)
}

/// One held event, ordered by kernel time, then by arrival.
struct Held {
    ts_ns: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.ts_ns, self.seq) == (other.ts_ns, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts_ns, self.seq).cmp(&(other.ts_ns, other.seq))
    }
}

/// The ordering stage and the correlator behind it (the run loop's one DNS state).
pub struct Sequencer {
    correlator: Correlator,
    hold_ns: u64,
    capacity: usize,
    held: BinaryHeap<Reverse<Held>>,
    next_seq: u64,
    /// Every event at or before it has been released; it never goes back.
    watermark: u64,
    late: u64,
}

impl Sequencer {
    /// A correlator with `window` and `capacity` ([`Correlator::new`]) behind a watermark that
    /// trails the clock by `hold`.
    pub fn new(window: Duration, capacity: usize, hold: Duration) -> Self {
        Self {
            correlator: Correlator::new(window, capacity),
            hold_ns: u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            held: BinaryHeap::new(),
            next_seq: 0,
            watermark: 0,
            late: 0,
        }
    }

    /// The correlator, for its counters and its window.
    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// Changes the correlation window (SIGHUP reload): see [`Correlator::set_window`].
    pub fn set_window(&mut self, window: Duration) {
        self.correlator.set_window(window);
    }

    /// Copies the correlator's counters into the metrics ([`Correlator::publish`]).
    pub fn publish(&self, counters: &impl DnsGauges) {
        self.correlator.publish(counters);
    }

    /// DNS events waiting for the watermark.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// DNS events that arrived behind the watermark and were matched out of order.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Takes one decoded event. A DNS query or response is held for ordering; anything else is
    /// appended to `out` at once.
    pub fn push(&mut self, event: Event, out: &mut Vec<Event>) {
        if !matches!(event.body, Body::Dns(_)) {
            out.push(event);
            return;
        }
        if event.ts_ns <= self.watermark {
            // Behind the watermark: its place in the order is gone; match it now.
            self.late += 1;
            let mut event = event;
            self.correlator.observe(&mut event);
            out.push(event);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held.push(Reverse(Held { ts_ns: event.ts_ns, seq, event }));
        while self.held.len() > self.capacity {
            let Some(Reverse(oldest)) = self.held.pop() else { break };
            self.watermark = self.watermark.max(oldest.ts_ns);
            self.release(oldest, out);
        }
    }

    /// Moves the watermark to `now_ns` (CLOCK_MONOTONIC) less the hold and appends to `out`, in
    /// kernel time order, every held event it passed (matched) and every query whose window
    /// ended by then (`timeout`, stamped with its deadline).
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.advance_to(now_ns.saturating_sub(self.hold_ns), out);
    }

    /// Releases everything held and every pending query's timeout that falls before
    /// `now_ns`: for the end of a run, when no record is still on its way.
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let last = self.held.iter().map(|Reverse(h)| h.ts_ns).max().unwrap_or(0);
        self.advance_to(last.max(now_ns), out);
    }

    fn advance_to(&mut self, watermark: u64, out: &mut Vec<Event>) {
        self.watermark = self.watermark.max(watermark);
        while self.held.peek().is_some_and(|Reverse(h)| h.ts_ns <= self.watermark) {
            let Some(Reverse(h)) = self.held.pop() else { break };
            self.release(h, out);
        }
        out.extend(self.correlator.expire(self.watermark));
    }

    /// Matches one event in its turn: first the queries whose window ended before it.
    fn release(&mut self, h: Held, out: &mut Vec<Event>) {
        out.extend(self.correlator.expire(h.ts_ns.saturating_sub(1)));
        let mut event = h.event;
        self.correlator.observe(&mut event);
        out.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::dns::test_event;

    const MS: u64 = 1_000_000;

    fn latency(e: &Event) -> Option<Option<u64>> {
        match &e.body {
            Body::Dns(b) => b.latency_ns,
            _ => unreachable!(),
        }
    }

    /// The perf transport's failure: the response's CPU buffer is drained before the query's.
    #[test]
    fn response_drained_before_its_query_still_gets_its_latency() {
        let mut s = Sequencer::new(Duration::from_millis(100), 64, Duration::from_millis(30));
        let mut out = Vec::new();
        // One drain pass: CPU 0 (the response, at 1.5 ms) then CPU 1 (the query, at 1 ms).
        s.push(test_event("response", 100, 7, 1_500_000), &mut out);
        s.push(test_event("query", 100, 7, 1_000_000), &mut out);
        assert!(out.is_empty(), "held until the watermark passes");
        s.advance(1_500_000 + 30 * MS, &mut out);
        let kinds: Vec<_> = out.iter().map(|e| (e.event, e.ts_ns)).collect();
        assert_eq!(kinds, [("query", 1_000_000), ("response", 1_500_000)]);
        assert_eq!(latency(&out[1]), Some(Some(500_000)));
        // Nothing times out afterwards.
        out.clear();
        s.advance(10_000 * MS, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(s.late(), 0);
    }

    /// Expiry by event time: a response stamped before the deadline but read after it (it waited
    /// in its buffer) still answers its query, and no timeout is reported.
    #[test]
    fn a_response_read_after_the_deadline_but_stamped_before_it_matches() {
        let mut s = Sequencer::new(Duration::from_millis(100), 64, Duration::from_millis(30));
        let mut out = Vec::new();
        s.push(test_event("query", 100, 7, 10 * MS), &mut out);
        // The wall clock passes the deadline (110 ms) before the response is read...
        s.advance(125 * MS, &mut out);
        assert_eq!(out.iter().map(|e| e.event).collect::<Vec<_>>(), ["query"]);
        // ...and the response, stamped at 105 ms, comes in at 125 ms.
        s.push(test_event("response", 100, 7, 105 * MS), &mut out);
        s.advance(200 * MS, &mut out);
        assert_eq!(out.iter().map(|e| e.event).collect::<Vec<_>>(), ["query", "response"]);
        assert_eq!(latency(&out[1]), Some(Some(95 * MS)));
    }

    /// A response stamped after the deadline does not match: the timeout comes first, in order.
    #[test]
    fn timeouts_take_their_place_in_event_time() {
        let mut s = Sequencer::new(Duration::from_millis(100), 64, Duration::from_millis(30));
        let mut out = Vec::new();
        s.push(test_event("query", 100, 7, 10 * MS), &mut out);
        s.push(test_event("response", 100, 7, 150 * MS), &mut out);
        s.push(test_event("query", 100, 8, 140 * MS), &mut out);
        s.advance(400 * MS, &mut out);
        let seen: Vec<_> = out.iter().map(|e| (e.event, e.ts_ns / MS)).collect();
        assert_eq!(seen, [("query", 10), ("timeout", 110), ("query", 140), ("response", 150), ("timeout", 240)]);
        assert_eq!(latency(&out[3]), Some(None));
    }

    #[test]
    fn other_monitors_pass_straight_through_and_late_events_are_counted() {
        let mut s = Sequencer::new(Duration::from_millis(100), 64, Duration::from_millis(30));
        let mut out = Vec::new();
        let mut other = test_event("query", 1, 1, 5);
        other.monitor = "process";
        other.event = "fork";
        other.body = Body::Process(crate::events::process::ProcessBody::Fork { ppid: 1, child_tgid: 2, pid_ns: 3 });
        s.push(other, &mut out);
        assert_eq!(out.len(), 1);
        s.advance(1000 * MS, &mut out);
        s.push(test_event("response", 100, 7, 500 * MS), &mut out);
        assert_eq!((out.len(), s.late()), (2, 1));
    }

    #[test]
    fn held_events_are_bounded_and_flush_releases_them() {
        let mut s = Sequencer::new(Duration::from_secs(5), 4, Duration::from_millis(30));
        let mut out = Vec::new();
        for id in 0..10u16 {
            s.push(test_event("query", 100, id, 1000 + u64::from(id)), &mut out);
        }
        assert_eq!((s.held(), out.len()), (4, 6));
        assert!(out.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
        s.flush(0, &mut out);
        assert_eq!((s.held(), out.len()), (0, 10));
    }
}
