//! The kernel half of the source filters (probes/include/filter.h, filter.bpf.h): the key sets
//! the kernel knows about the current task (uid, comm, cgroup v2 id) and the one-slot flags word
//! that turns each on. [`install`] fills them between load and attach, so a filter holds from the
//! first event; [`apply`] rewrites them in place on reload, leaving every program and link as it
//! is. Which monitors consult them: the objects that carry the maps (see [`CONFIG_MAP`]); the
//! agent applies the same filters to every other event.

use std::{collections::BTreeSet, os::fd::AsFd};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError},
    Ebpf, EbpfLoader, Pod,
};
use thiserror::Error;

/// The flags word (struct tapio_filter_config).
pub const CONFIG_MAP: &str = "tapio_filter_config";
pub const UID_MAP: &str = "tapio_filter_uid";
pub const COMM_MAP: &str = "tapio_filter_comm";
pub const CGROUP_MAP: &str = "tapio_filter_cgroup";
/// The ring build's `const volatile` master switch.
pub const ENABLE_GLOBAL: &str = "tapio_filter_on";

/// `TAPIO_FILTER_*` (probes/include/filter.h).
pub const F_UID: u32 = 0x1;
pub const F_COMM: u32 = 0x2;
pub const F_CGROUP: u32 = 0x4;
pub const F_UID_INCLUDE: u32 = 0x10;
pub const F_COMM_INCLUDE: u32 = 0x20;
pub const F_CGROUP_INCLUDE: u32 = 0x40;
/// Capacities of the key sets (`TAPIO_FILTER_*_MAX`).
pub const UID_MAX: usize = 256;
pub const COMM_MAX: usize = 256;
pub const CGROUP_MAX: usize = 16384;
/// Bytes of a comm key (`TAPIO_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// The `stats` slots of the drops, by filter (`enum tapio_stat` in probes/include/common.h).
pub const STAT_SLOTS: [(&str, u32); 3] = [("uid", 2), ("comm", 3), ("cgroup", 4)];

/// Mirror of `struct tapio_filter_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterConfig {
    pub flags: u32,
    pub _pad0: u32,
}

// SAFETY: repr(C), two u32, no padding.
unsafe impl Pod for FilterConfig {}

/// Whether a key set keeps only its members or drops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Include,
    Exclude,
}

/// One filtered key: its mode and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet<T: Ord> {
    pub mode: Mode,
    pub keys: BTreeSet<T>,
}

impl<T: Ord> KeySet<T> {
    /// Whether this set drops `key`.
    pub fn drops(&self, key: &T) -> bool {
        match self.mode {
            Mode::Include => !self.keys.contains(key),
            Mode::Exclude => self.keys.contains(key),
        }
    }
}

/// What the kernel filters. None: that key is not filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFilter {
    pub uid: Option<KeySet<u32>>,
    pub comm: Option<KeySet<[u8; COMM_LEN]>>,
    pub cgroup: Option<KeySet<u64>>,
}

impl KernelFilter {
    /// Whether any key is filtered.
    pub fn any(&self) -> bool {
        self.uid.is_some() || self.comm.is_some() || self.cgroup.is_some()
    }

    /// The flags word for the kernel.
    pub fn flags(&self) -> u32 {
        let bits = |set: Option<Mode>, on: u32, include: u32| match set {
            None => 0,
            Some(Mode::Exclude) => on,
            Some(Mode::Include) => on | include,
        };
        bits(self.uid.as_ref().map(|s| s.mode), F_UID, F_UID_INCLUDE)
            | bits(self.comm.as_ref().map(|s| s.mode), F_COMM, F_COMM_INCLUDE)
            | bits(self.cgroup.as_ref().map(|s| s.mode), F_CGROUP, F_CGROUP_INCLUDE)
    }

    /// Whether the kernel would drop an event of this uid, comm and cgroup id (the agent's
    /// fallback where the kernel did not filter).
    pub fn drops(&self, uid: u32, comm: &str, cgroup_id: u64) -> Option<&'static str> {
        if self.uid.as_ref().is_some_and(|s| s.drops(&uid)) {
            return Some("uid");
        }
        if self.comm.as_ref().is_some_and(|s| s.drops(&comm_key(comm))) {
            return Some("comm");
        }
        if self.cgroup.as_ref().is_some_and(|s| s.drops(&cgroup_id)) {
            return Some("cgroup");
        }
        None
    }
}

/// A comm as the kernel's 16-byte key: truncated to 15 bytes, NUL-padded.
pub fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// Why the filter maps could not be written.
#[derive(Debug, Error)]
pub enum FilterError {
    #[error("filter map {map}: not in the object")]
    Missing { map: &'static str },
    #[error("filter map {map}: duplicate fd: {source}")]
    Fd {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("filter map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("filter map {map}: {count} keys, at most {max}")]
    TooMany { map: &'static str, count: usize, max: usize },
}

/// Whether an object carries the filter (its monitor's programs consult it).
pub fn carried(ebpf: &Ebpf) -> bool {
    ebpf.map(CONFIG_MAP).is_some()
}

/// Sets the ring build's master switch before load: on when the start configuration filters in
/// the kernel. Objects without the global ignore it (aya's `must_exist = false`).
pub fn set_global<'a>(loader: &mut EbpfLoader<'a>, on: &'a u32) {
    loader.override_global(ENABLE_GLOBAL, on, false);
}

fn owned(ebpf: &Ebpf, map: &'static str) -> Result<MapData, FilterError> {
    let data = match ebpf.map(map).ok_or(FilterError::Missing { map })? {
        Map::Array(d) | Map::HashMap(d) => d,
        _ => return Err(FilterError::Missing { map }),
    };
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|source| FilterError::Fd { map, source })?;
    MapData::from_fd(fd).map_err(|source| FilterError::Map { map, source })
}

/// Makes a hash map's keys exactly `want`: new keys first, then the stale ones go, so a key that
/// stays is never absent for an instant.
fn sync<K: Pod + Ord>(ebpf: &Ebpf, map: &'static str, want: &BTreeSet<K>, max: usize) -> Result<(), FilterError> {
    if want.len() > max {
        return Err(FilterError::TooMany { map, count: want.len(), max });
    }
    let err = |source| FilterError::Map { map, source };
    let mut hash = HashMap::<_, K, u8>::try_from(Map::HashMap(owned(ebpf, map)?)).map_err(err)?;
    let have: BTreeSet<K> = hash.keys().collect::<Result<_, _>>().map_err(err)?;
    for key in want.difference(&have) {
        hash.insert(*key, 1, 0).map_err(err)?;
    }
    for key in have.difference(want) {
        match hash.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(err(source)),
        }
    }
    Ok(())
}

/// Writes `filter` into an object's maps in place (at load and on reload). A key whose mode
/// changes, or that is turned off, is first switched off (off lets every event through to the
/// agent, which still judges it); then the key sets are written; then the final flags. So no event
/// is judged by a mode against the keys of another (an include flag over an emptied set would
/// drop everything for a moment). A key that is not filtered has its set emptied.
pub fn apply(ebpf: &Ebpf, filter: &KernelFilter) -> Result<(), FilterError> {
    let err = |source| FilterError::Map { map: CONFIG_MAP, source };
    let mut config = Array::<_, FilterConfig>::try_from(Map::Array(owned(ebpf, CONFIG_MAP)?)).map_err(err)?;
    let old = config.get(&0, 0).map_err(err)?.flags;
    let new = filter.flags();
    let interim = interim_flags(old, new);
    if interim != old {
        config.set(0, FilterConfig { flags: interim, _pad0: 0 }, 0).map_err(err)?;
    }
    let none = BTreeSet::new();
    sync(ebpf, UID_MAP, filter.uid.as_ref().map_or(&none, |s| &s.keys), UID_MAX)?;
    let no_comm = BTreeSet::new();
    sync(ebpf, COMM_MAP, filter.comm.as_ref().map_or(&no_comm, |s| &s.keys), COMM_MAX)?;
    let no_cgroup = BTreeSet::new();
    sync(ebpf, CGROUP_MAP, filter.cgroup.as_ref().map_or(&no_cgroup, |s| &s.keys), CGROUP_MAX)?;
    config.set(0, FilterConfig { flags: new, _pad0: 0 }, 0).map_err(err)
}

/// The flags to hold while the key sets are rewritten: each key keeps its bits only where its
/// mode is the same before and after; any other key is off meanwhile.
fn interim_flags(old: u32, new: u32) -> u32 {
    [F_UID | F_UID_INCLUDE, F_COMM | F_COMM_INCLUDE, F_CGROUP | F_CGROUP_INCLUDE]
        .iter()
        .filter(|&&mask| old & mask == new & mask)
        .fold(0, |flags, &mask| flags | (old & mask))
}

/// The kernel's drops per filter (`uid`, `comm`, `cgroup`), summed over CPUs.
pub fn drops(ebpf: &Ebpf) -> Vec<(&'static str, u64)> {
    STAT_SLOTS.iter().map(|&(name, slot)| (name, crate::monitors::stat(ebpf, slot).unwrap_or(0))).collect()
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// While the sets are rewritten a key whose mode changes is off, never judged by its new
    /// mode against its old keys; a key whose mode stays keeps filtering.
    #[rstest]
    #[case::same(F_UID, F_UID, F_UID)]
    #[case::include_to_off(F_CGROUP | F_CGROUP_INCLUDE, 0, 0)]
    #[case::exclude_to_include(F_UID, F_UID | F_UID_INCLUDE, 0)]
    #[case::off_to_include(0, F_COMM | F_COMM_INCLUDE, 0)]
    #[case::one_changes_one_stays(F_UID | F_COMM, F_UID | F_COMM | F_COMM_INCLUDE, F_UID)]
    fn interim_flags_switch_off_what_changes(#[case] old: u32, #[case] new: u32, #[case] interim: u32) {
        assert_eq!(interim_flags(old, new), interim);
    }

    fn set<T: Ord + Clone>(mode: Mode, keys: &[T]) -> KeySet<T> {
        KeySet { mode, keys: keys.iter().cloned().collect() }
    }

    #[rstest]
    #[case::none(KernelFilter::default(), 0)]
    #[case::uid_exclude(KernelFilter { uid: Some(set(Mode::Exclude, &[0])), ..Default::default() }, F_UID)]
    #[case::uid_include(KernelFilter { uid: Some(set(Mode::Include, &[0])), ..Default::default() }, F_UID | F_UID_INCLUDE)]
    #[case::all(KernelFilter {
        uid: Some(set(Mode::Exclude, &[1])),
        comm: Some(set(Mode::Include, &[comm_key("sh")])),
        cgroup: Some(set(Mode::Exclude, &[7])),
    }, F_UID | F_COMM | F_COMM_INCLUDE | F_CGROUP)]
    fn flags_word(#[case] filter: KernelFilter, #[case] flags: u32) {
        assert_eq!(filter.flags(), flags);
    }

    #[rstest]
    #[case::short("sh", b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0")]
    #[case::truncated("a-very-long-command-name", b"a-very-long-com\0")]
    fn comm_keys(#[case] comm: &str, #[case] key: &[u8; 16]) {
        assert_eq!(&comm_key(comm), key);
    }

    #[test]
    fn agent_fallback_matches_the_kernel_rule() {
        let f = KernelFilter { uid: Some(set(Mode::Include, &[1000])), comm: Some(set(Mode::Exclude, &[comm_key("noisy")])), cgroup: None };
        assert_eq!(f.drops(0, "sh", 1), Some("uid"));
        assert_eq!(f.drops(1000, "noisy", 1), Some("comm"));
        assert_eq!(f.drops(1000, "sh", 1), None);
    }
}
