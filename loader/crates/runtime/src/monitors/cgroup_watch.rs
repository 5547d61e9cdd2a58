//! cgroup_watch, the cgroup-creation watcher that feeds container attribution: its program is
//! the catalog's (`tapio_catalog::cgroup_watch`, re-exported here), its records' decoding
//! tapio-decode's.

pub use tapio_catalog::cgroup_watch::SPEC;
// The record's decoding is pure, in tapio-decode (attribution reads it there); its mirror is
// tapio-abi's `cgroup_watch::CgroupWatchEvent`.
pub use crate::events::cgroup_watch::{decode, Mkdir};
