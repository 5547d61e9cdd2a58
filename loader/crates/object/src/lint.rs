//! `tapio-load lint --min-kernel <version>`: offline portability check of the objects alone.
//!
//! The verifier matrix proves a build on real kernels, but booting twenty kernels takes minutes;
//! this lint answers in milliseconds, on any machine, which helper, map type, program type,
//! attach type, instruction budget, loop, bpf-to-bpf call, global-data use or BTF kind a given
//! kernel lacks, each with the first upstream version that has it. It reads the same ELF as
//! `inspect` and never touches the kernel.
//!
//! Some gaps are not failures because aya closes them at load time: it rewrites
//! `bpf_probe_read_{kernel,user}{,_str}` to `bpf_probe_read{,_str}` before 5.5, and sanitizes BTF
//! kinds the kernel does not know (FUNC/FUNC_PROTO, VAR/DATASEC, FLOAT, DECL_TAG, TYPE_TAG,
//! ENUM64) before loading an object's BTF. Those are reported as [`Severity::Rewritten`] notes.
//! A global-data map nothing uses is also a note (aya skips creating it); a program that reads
//! global data is a failure, since aya then has no map to point the instruction at.
//!
//! Loops are found as the kernel finds them: `check_cfg` in kernel/bpf/verifier.c walks the
//! program depth first and, before 5.3, rejects an edge to an instruction still on the walk's
//! stack ("back-edge from insn X to Y"). A backward jump that closes no cycle (clang often places
//! a shared `return` block before its users) is a cross edge there and loads on 4.19, so only
//! real cycles are findings.
//!
//! A program that is one of several alternative paths to a capability (`tapio_catalog::GROUPS`) and
//! whose program or attach type needs a newer kernel is not meant for that kernel when another
//! path of its group is available there: the loader takes that path. It is reported once, as a
//! [`Severity::Skipped`] note (`skipped: needs >= 5.5`), and not linted further.
//!
//! Each object's architecture (the note the bundle's build writes, checked against the register
//! frame and syscall-wrapper targets in its code: `tapio_object::arch`) is reported beside it.
//! When the objects are meant for one architecture (a bundle, or `--arch`), an object without the
//! note, with another architecture's, or whose code contradicts it is an [`ArchProblem`], and the
//! lint fails: such an object would read the wrong registers or attach to functions the kernel
//! does not have.

use std::{collections::BTreeMap, fmt};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use serde::Serialize;
use thiserror::Error;

use crate::{
    arch::Arch,
    btf_minimize::{kind, RawBtf},
    helpers::helper_name,
    inspect::{self, classify_section, map_type_name},
};

/// Why the lint could not run.
#[derive(Debug, Error)]
pub enum LintError {
    #[error("lint: bad kernel version {0:?} (expected MAJOR.MINOR, e.g. 4.19)")]
    Version(String),
    #[error("lint {file}: not a valid BPF ELF object: {detail}")]
    Elf { file: String, detail: String },
    #[error("lint {file}: .BTF: {source}")]
    Btf {
        file: String,
        #[source]
        source: crate::btf_minimize::RawBtfError,
    },
    /// The object's architecture could not be read (its ELF or BTF is malformed).
    #[error("lint {file}: architecture: {source}")]
    Arch {
        file: String,
        #[source]
        source: inspect::InspectError,
    },
}

/// An upstream kernel version, compared as (major, minor); serialized as "5.8", as the spec writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parses "4.19", "5.8.0" or a release string such as "5.10.0-21-amd64" (patch and suffix
    /// are ignored: features land in minor releases).
    pub fn parse(s: &str) -> Result<Self, LintError> {
        let bad = || LintError::Version(s.to_owned());
        let mut parts = s.trim().splitn(3, '.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor_text = parts.next().ok_or_else(bad)?;
        let digits: String = minor_text.chars().take_while(char::is_ascii_digit).collect();
        let minor = digits.parse().map_err(|_| bad())?;
        Ok(Self { major, minor })
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

const fn v(major: u32, minor: u32) -> KernelVersion {
    KernelVersion::new(major, minor)
}

/// First upstream kernel of each helper, indexed by helper id (`enum bpf_func_id`).
///
/// Committed data, like `helpers::HELPER_NAMES`, so the lint gives the same answer everywhere.
/// Sources: the kernel commit that added each helper to `include/uapi/linux/bpf.h`, as collected
/// in bcc's `docs/kernel-versions.md`. Every helper the bundle calls was checked against that
/// list; entries past id 181 (`bpf_loop`) are from the uapi header's history and less carefully
/// checked.
pub const HELPER_SINCE: &[KernelVersion] = &[
    v(0, 0),   // 0 unspec
    v(3, 19),  // 1 map_lookup_elem
    v(3, 19),  // 2 map_update_elem
    v(3, 19),  // 3 map_delete_elem
    v(4, 1),   // 4 probe_read
    v(4, 1),   // 5 ktime_get_ns
    v(4, 1),   // 6 trace_printk
    v(4, 1),   // 7 get_prandom_u32
    v(4, 1),   // 8 get_smp_processor_id
    v(4, 1),   // 9 skb_store_bytes
    v(4, 1),   // 10 l3_csum_replace
    v(4, 1),   // 11 l4_csum_replace
    v(4, 2),   // 12 tail_call
    v(4, 2),   // 13 clone_redirect
    v(4, 2),   // 14 get_current_pid_tgid
    v(4, 2),   // 15 get_current_uid_gid
    v(4, 2),   // 16 get_current_comm
    v(4, 3),   // 17 get_cgroup_classid
    v(4, 3),   // 18 skb_vlan_push
    v(4, 3),   // 19 skb_vlan_pop
    v(4, 3),   // 20 skb_get_tunnel_key
    v(4, 3),   // 21 skb_set_tunnel_key
    v(4, 3),   // 22 perf_event_read
    v(4, 4),   // 23 redirect
    v(4, 4),   // 24 get_route_realm
    v(4, 4),   // 25 perf_event_output
    v(4, 5),   // 26 skb_load_bytes
    v(4, 6),   // 27 get_stackid
    v(4, 6),   // 28 csum_diff
    v(4, 6),   // 29 skb_get_tunnel_opt
    v(4, 6),   // 30 skb_set_tunnel_opt
    v(4, 8),   // 31 skb_change_proto
    v(4, 8),   // 32 skb_change_type
    v(4, 8),   // 33 skb_under_cgroup
    v(4, 8),   // 34 get_hash_recalc
    v(4, 8),   // 35 get_current_task
    v(4, 8),   // 36 probe_write_user
    v(4, 9),   // 37 current_task_under_cgroup
    v(4, 9),   // 38 skb_change_tail
    v(4, 9),   // 39 skb_pull_data
    v(4, 9),   // 40 csum_update
    v(4, 9),   // 41 set_hash_invalid
    v(4, 10),  // 42 get_numa_node_id
    v(4, 10),  // 43 skb_change_head
    v(4, 10),  // 44 xdp_adjust_head
    v(4, 11),  // 45 probe_read_str
    v(4, 12),  // 46 get_socket_cookie
    v(4, 12),  // 47 get_socket_uid
    v(4, 13),  // 48 set_hash
    v(4, 13),  // 49 setsockopt
    v(4, 13),  // 50 skb_adjust_room
    v(4, 14),  // 51 redirect_map
    v(4, 14),  // 52 sk_redirect_map
    v(4, 14),  // 53 sock_map_update
    v(4, 15),  // 54 xdp_adjust_meta
    v(4, 15),  // 55 perf_event_read_value
    v(4, 15),  // 56 perf_prog_read_value
    v(4, 15),  // 57 getsockopt
    v(4, 16),  // 58 override_return
    v(4, 16),  // 59 sock_ops_cb_flags_set
    v(4, 17),  // 60 msg_redirect_map
    v(4, 17),  // 61 msg_apply_bytes
    v(4, 17),  // 62 msg_cork_bytes
    v(4, 17),  // 63 msg_pull_data
    v(4, 17),  // 64 bind
    v(4, 18),  // 65 xdp_adjust_tail
    v(4, 18),  // 66 skb_get_xfrm_state
    v(4, 18),  // 67 get_stack
    v(4, 18),  // 68 skb_load_bytes_relative
    v(4, 18),  // 69 fib_lookup
    v(4, 18),  // 70 sock_hash_update
    v(4, 18),  // 71 msg_redirect_hash
    v(4, 18),  // 72 sk_redirect_hash
    v(4, 18),  // 73 lwt_push_encap
    v(4, 18),  // 74 lwt_seg6_store_bytes
    v(4, 18),  // 75 lwt_seg6_adjust_srh
    v(4, 18),  // 76 lwt_seg6_action
    v(4, 18),  // 77 rc_repeat
    v(4, 18),  // 78 rc_keydown
    v(4, 18),  // 79 skb_cgroup_id
    v(4, 18),  // 80 get_current_cgroup_id
    v(4, 19),  // 81 get_local_storage
    v(4, 19),  // 82 sk_select_reuseport
    v(4, 19),  // 83 skb_ancestor_cgroup_id
    v(4, 20),  // 84 sk_lookup_tcp
    v(4, 20),  // 85 sk_lookup_udp
    v(4, 20),  // 86 sk_release
    v(4, 20),  // 87 map_push_elem
    v(4, 20),  // 88 map_pop_elem
    v(4, 20),  // 89 map_peek_elem
    v(4, 20),  // 90 msg_push_data
    v(5, 0),   // 91 msg_pop_data
    v(5, 0),   // 92 rc_pointer_rel
    v(5, 1),   // 93 spin_lock
    v(5, 1),   // 94 spin_unlock
    v(5, 1),   // 95 sk_fullsock
    v(5, 1),   // 96 tcp_sock
    v(5, 1),   // 97 skb_ecn_set_ce
    v(5, 1),   // 98 get_listener_sock
    v(5, 2),   // 99 skc_lookup_tcp
    v(5, 2),   // 100 tcp_check_syncookie
    v(5, 2),   // 101 sysctl_get_name
    v(5, 2),   // 102 sysctl_get_current_value
    v(5, 2),   // 103 sysctl_get_new_value
    v(5, 2),   // 104 sysctl_set_new_value
    v(5, 2),   // 105 strtol
    v(5, 2),   // 106 strtoul
    v(5, 2),   // 107 sk_storage_get
    v(5, 2),   // 108 sk_storage_delete
    v(5, 3),   // 109 send_signal
    v(5, 3),   // 110 tcp_gen_syncookie
    v(5, 5),   // 111 skb_output
    v(5, 5),   // 112 probe_read_user
    v(5, 5),   // 113 probe_read_kernel
    v(5, 5),   // 114 probe_read_user_str
    v(5, 5),   // 115 probe_read_kernel_str
    v(5, 5),   // 116 tcp_send_ack
    v(5, 5),   // 117 send_signal_thread
    v(5, 5),   // 118 jiffies64
    v(5, 6),   // 119 read_branch_records
    v(5, 7),   // 120 get_ns_current_pid_tgid
    v(5, 6),   // 121 xdp_output
    v(5, 7),   // 122 get_netns_cookie
    v(5, 7),   // 123 get_current_ancestor_cgroup_id
    v(5, 7),   // 124 sk_assign
    v(5, 8),   // 125 ktime_get_boot_ns
    v(5, 7),   // 126 seq_printf
    v(5, 7),   // 127 seq_write
    v(5, 8),   // 128 sk_cgroup_id
    v(5, 8),   // 129 sk_ancestor_cgroup_id
    v(5, 8),   // 130 ringbuf_output
    v(5, 8),   // 131 ringbuf_reserve
    v(5, 8),   // 132 ringbuf_submit
    v(5, 8),   // 133 ringbuf_discard
    v(5, 8),   // 134 ringbuf_query
    v(5, 8),   // 135 csum_level
    v(5, 9),   // 136 skc_to_tcp6_sock
    v(5, 9),   // 137 skc_to_tcp_sock
    v(5, 9),   // 138 skc_to_tcp_timewait_sock
    v(5, 9),   // 139 skc_to_tcp_request_sock
    v(5, 9),   // 140 skc_to_udp6_sock
    v(5, 9),   // 141 get_task_stack
    v(5, 10),  // 142 load_hdr_opt
    v(5, 10),  // 143 store_hdr_opt
    v(5, 10),  // 144 reserve_hdr_opt
    v(5, 10),  // 145 inode_storage_get
    v(5, 10),  // 146 inode_storage_delete
    v(5, 10),  // 147 d_path
    v(5, 10),  // 148 copy_from_user
    v(5, 10),  // 149 snprintf_btf
    v(5, 10),  // 150 seq_printf_btf
    v(5, 10),  // 151 skb_cgroup_classid
    v(5, 10),  // 152 redirect_neigh
    v(5, 10),  // 153 per_cpu_ptr
    v(5, 10),  // 154 this_cpu_ptr
    v(5, 10),  // 155 redirect_peer
    v(5, 11),  // 156 task_storage_get
    v(5, 11),  // 157 task_storage_delete
    v(5, 11),  // 158 get_current_task_btf
    v(5, 11),  // 159 bprm_opts_set
    v(5, 11),  // 160 ktime_get_coarse_ns
    v(5, 11),  // 161 ima_inode_hash
    v(5, 11),  // 162 sock_from_file
    v(5, 12),  // 163 check_mtu
    v(5, 13),  // 164 for_each_map_elem
    v(5, 13),  // 165 snprintf
    v(5, 14),  // 166 sys_bpf
    v(5, 14),  // 167 btf_find_by_name_kind
    v(5, 14),  // 168 sys_close
    v(5, 15),  // 169 timer_init
    v(5, 15),  // 170 timer_set_callback
    v(5, 15),  // 171 timer_start
    v(5, 15),  // 172 timer_cancel
    v(5, 15),  // 173 get_func_ip
    v(5, 15),  // 174 get_attach_cookie
    v(5, 15),  // 175 task_pt_regs
    v(5, 16),  // 176 get_branch_snapshot
    v(5, 16),  // 177 trace_vprintk
    v(5, 16),  // 178 skc_to_unix_sock
    v(5, 16),  // 179 kallsyms_lookup_name
    v(5, 17),  // 180 find_vma
    v(5, 17),  // 181 loop
    v(5, 17),  // 182 strncmp
    v(5, 17),  // 183 get_func_arg
    v(5, 17),  // 184 get_func_ret
    v(5, 17),  // 185 get_func_arg_cnt
    v(5, 18),  // 186 get_retval
    v(5, 18),  // 187 set_retval
    v(5, 18),  // 188 xdp_get_buff_len
    v(5, 18),  // 189 xdp_load_bytes
    v(5, 18),  // 190 xdp_store_bytes
    v(5, 18),  // 191 copy_from_user_task
    v(5, 18),  // 192 skb_set_tstamp
    v(5, 18),  // 193 ima_file_hash
    v(5, 19),  // 194 kptr_xchg
    v(5, 19),  // 195 map_lookup_percpu_elem
    v(5, 19),  // 196 skc_to_mptcp_sock
    v(5, 19),  // 197 dynptr_from_mem
    v(5, 19),  // 198 ringbuf_reserve_dynptr
    v(5, 19),  // 199 ringbuf_submit_dynptr
    v(5, 19),  // 200 ringbuf_discard_dynptr
    v(5, 19),  // 201 dynptr_read
    v(5, 19),  // 202 dynptr_write
    v(5, 19),  // 203 dynptr_data
    v(6, 0),   // 204 tcp_raw_gen_syncookie_ipv4
    v(6, 0),   // 205 tcp_raw_gen_syncookie_ipv6
    v(6, 0),   // 206 tcp_raw_check_syncookie_ipv4
    v(6, 0),   // 207 tcp_raw_check_syncookie_ipv6
    v(6, 1),   // 208 ktime_get_tai_ns
    v(6, 1),   // 209 user_ringbuf_drain
    v(6, 2),   // 210 cgrp_storage_get
    v(6, 2),   // 211 cgrp_storage_delete
];

/// Helpers aya replaces on kernels before 5.5 (see `aya_obj::Object::sanitize_functions`):
/// (helper id, the older helper it becomes).
const REWRITTEN_HELPERS: &[(i32, &str)] = &[
    (112, "bpf_probe_read"),
    (113, "bpf_probe_read"),
    (114, "bpf_probe_read_str"),
    (115, "bpf_probe_read_str"),
];

/// First upstream kernel of each map type, indexed by `enum bpf_map_type` (names as in
/// `inspect::map_type_name`).
pub const MAP_TYPE_SINCE: &[KernelVersion] = &[
    v(0, 0),   // unspec
    v(3, 19),  // hash
    v(3, 19),  // array
    v(4, 2),   // prog_array
    v(4, 3),   // perf_event_array
    v(4, 6),   // percpu_hash
    v(4, 6),   // percpu_array
    v(4, 6),   // stack_trace
    v(4, 8),   // cgroup_array
    v(4, 10),  // lru_hash
    v(4, 10),  // lru_percpu_hash
    v(4, 11),  // lpm_trie
    v(4, 12),  // array_of_maps
    v(4, 12),  // hash_of_maps
    v(4, 14),  // devmap
    v(4, 14),  // sockmap
    v(4, 15),  // cpumap
    v(4, 18),  // xskmap
    v(4, 18),  // sockhash
    v(4, 19),  // cgroup_storage
    v(4, 19),  // reuseport_sockarray
    v(4, 20),  // percpu_cgroup_storage
    v(4, 20),  // queue
    v(4, 20),  // stack
    v(5, 2),   // sk_storage
    v(5, 4),   // devmap_hash
    v(5, 6),   // struct_ops
    v(5, 8),   // ringbuf
    v(5, 10),  // inode_storage
    v(5, 11),  // task_storage
    v(5, 16),  // bloom_filter
    v(6, 1),   // user_ringbuf
    v(6, 2),   // cgrp_storage
];

/// First upstream kernel of each program type, by the name `inspect::classify_section` gives,
/// and of the attach type a section implies where that is a separate gate.
fn program_type_since(program_type: &str) -> Option<(KernelVersion, Option<(&'static str, KernelVersion)>)> {
    Some(match program_type {
        "socket_filter" => (v(3, 19), None),
        "kprobe" | "kprobe (return)" => (v(4, 1), None),
        "sched_cls" => (v(4, 1), None),
        "tracepoint" => (v(4, 7), None),
        "xdp" => (v(4, 8), None),
        "perf_event" => (v(4, 9), None),
        "cgroup_skb" | "cgroup/skb" => (v(4, 10), None),
        "sockops" => (v(4, 13), None),
        "sk_skb" => (v(4, 14), None),
        "sk_msg" => (v(4, 17), None),
        "raw_tracepoint" => (v(4, 17), None),
        "tracing (tp_btf)" => (v(5, 5), Some(("BPF_TRACE_RAW_TP", v(5, 5)))),
        "tracing (fentry)" => (v(5, 5), Some(("BPF_TRACE_FENTRY", v(5, 5)))),
        "tracing (fexit)" => (v(5, 5), Some(("BPF_TRACE_FEXIT", v(5, 5)))),
        "fmod_ret" => (v(5, 5), Some(("BPF_MODIFY_RETURN", v(5, 7)))),
        "lsm" => (v(5, 7), Some(("BPF_LSM_MAC", v(5, 7)))),
        "kprobe.multi" | "kretprobe.multi" => (v(4, 1), Some(("BPF_TRACE_KPROBE_MULTI", v(5, 18)))),
        "iter" => (v(5, 5), Some(("BPF_TRACE_ITER", v(5, 8)))),
        "sk_lookup" => (v(5, 9), None),
        // The packet path of the dns and network monitors: cgroup_skb/{ingress,egress} and
        // cgroup/sock_create (cgroup_skb is listed above), all in 4.10.
        "cgroup" => (v(4, 10), Some(("BPF_CGROUP_INET_SOCK_CREATE", v(4, 10)))),
        "syscall" => (v(5, 14), None),
        _ => return None,
    })
}

/// First upstream kernel of each BTF kind an object may carry.
fn btf_kind_since(k: u32) -> KernelVersion {
    match k {
        kind::FUNC | kind::FUNC_PROTO => v(5, 0),
        kind::VAR | kind::DATASEC => v(5, 2),
        kind::FLOAT => v(5, 13),
        kind::DECL_TAG => v(5, 16),
        kind::TYPE_TAG => v(5, 17),
        kind::ENUM64 => v(6, 0),
        _ => v(4, 18),
    }
}

/// Programs over this many instructions need 5.2 (`BPF_MAXINSNS` before the 1M limit).
pub const OLD_MAX_INSNS: usize = 4096;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    Helper,
    MapType,
    ProgramType,
    AttachType,
    InstructionCount,
    Loop,
    BpfToBpfCall,
    GlobalData,
    BtfKind,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Helper => "helper",
            Self::MapType => "map type",
            Self::ProgramType => "program type",
            Self::AttachType => "attach type",
            Self::InstructionCount => "instruction count",
            Self::Loop => "loop",
            Self::BpfToBpfCall => "bpf-to-bpf call",
            Self::GlobalData => "global data",
            Self::BtfKind => "btf kind",
        })
    }
}

/// Whether a finding stops the object from loading on the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The kernel lacks it and nothing replaces it: the program (or object) will not load.
    Missing,
    /// The kernel lacks it but aya rewrites or drops it at load time: fine, worth knowing.
    Rewritten,
    /// The program is an alternative path for newer kernels; on this kernel the loader takes
    /// another path of its group, so the program is not linted against it.
    Skipped,
}

/// One thing a kernel lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub object: String,
    /// The program, or None for object-wide findings (maps, BTF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    pub gate: Gate,
    /// The helper, map type, kind, ... concerned.
    pub name: String,
    /// First upstream kernel that has it.
    pub since: KernelVersion,
    pub severity: Severity,
    pub detail: String,
}

/// An object that is not what its architecture's bundle needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchProblem {
    pub object: String,
    pub detail: String,
}

/// The lint of a set of objects against one kernel version.
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    pub min_kernel: KernelVersion,
    /// The architecture the objects are meant for, when they are meant for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    pub objects: Vec<String>,
    /// Each object's architecture, as `inspect` shows it (`arm64`, `unknown (no note)`).
    pub object_arches: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
    pub arch_problems: Vec<ArchProblem>,
}

impl LintReport {
    /// Findings that stop something from loading.
    pub fn missing(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Missing).count()
    }

    /// Whether the objects fail the lint (exit status 1): a missing feature or an object built
    /// for another architecture.
    pub fn failed(&self) -> bool {
        self.missing() > 0 || !self.arch_problems.is_empty()
    }
}

/// The kernel's `check_cfg` walk (kernel/bpf/verifier.c, 4.19): depth first from instruction 0,
/// fall-through before branch; an edge to an instruction still on the stack is a back-edge, i.e.
/// a loop, which verifiers before 5.3 reject. Returns each back-edge as (from, to).
///
/// `insns` are (opcode, offset) pairs of one function. Calls fall through (helpers and bpf-to-bpf
/// callees return); `ld_imm64` takes two slots. Edges out of the function are ignored.
fn loop_back_edges(insns: &[(u8, i16)]) -> Vec<(usize, usize)> {
    const NEW: u8 = 0;
    const ON_STACK: u8 = 1;
    const DONE: u8 = 2;
    let successors = |i: usize| -> [Option<usize>; 2] {
        let (code, off) = insns[i];
        let class = code & 0x07;
        let op = code & 0xf0;
        let target = || usize::try_from(i as i64 + 1 + i64::from(off)).ok();
        if code == 0x18 {
            [Some(i + 2), None]
        } else if class == 0x05 || class == 0x06 {
            match op {
                0x90 => [None, None],         // exit
                0x80 => [Some(i + 1), None], // call
                0x00 => [target(), None],    // ja
                _ => [Some(i + 1), target()],
            }
        } else {
            [Some(i + 1), None]
        }
    };
    let mut state = vec![NEW; insns.len()];
    let mut edges = Vec::new();
    if insns.is_empty() {
        return edges;
    }
    // (instruction, index of the next successor to visit)
    let mut stack = vec![(0usize, 0usize)];
    state[0] = ON_STACK;
    while let Some(top) = stack.last_mut() {
        let (node, next) = *top;
        let succ = successors(node);
        if next >= succ.len() {
            state[node] = DONE;
            stack.pop();
            continue;
        }
        top.1 += 1;
        let Some(w) = succ[next].filter(|&w| w < insns.len()) else { continue };
        match state[w] {
            NEW => {
                state[w] = ON_STACK;
                stack.push((w, 0));
            }
            ON_STACK => edges.push((node, w)),
            _ => {}
        }
    }
    edges.sort_unstable();
    edges
}

/// The monitor an object file belongs to: its name up to the first dot (`security.perf.bpf.o`).
fn monitor_of(file: &str) -> &str {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.split('.').next().unwrap_or(base)
}

/// The first kernel a program's type and attach type both exist on, or None when unknown.
fn program_needs(program_type: &str) -> Option<KernelVersion> {
    program_type_since(program_type).map(|(since, attach)| attach.map_or(since, |(_, a)| since.max(a)))
}

/// Another path of `program`'s group (`tapio_catalog::GROUPS`) that kernel `min` can take, judged by
/// `needs` (the first kernel each program of the object needs), or None.
fn alternative_on(
    monitor: &str,
    program: &str,
    needs: &BTreeMap<String, Option<KernelVersion>>,
    min: KernelVersion,
) -> Option<&'static str> {
    let group = tapio_catalog::group_of(monitor, program)?;
    group
        .programs
        .iter()
        .copied()
        .find(|&other| other != program && matches!(needs.get(other), Some(Some(since)) if *since <= min))
}

const BPF_PSEUDO_CALL: u8 = 1;
const BPF_PSEUDO_MAP_VALUE: u8 = 2;

fn is_global_data_section(name: &str) -> bool {
    [".rodata", ".data", ".bss"].iter().any(|p| name == *p || name.starts_with(&format!("{p}.")))
}

/// Lints one object's bytes against kernel `min`.
pub fn lint_object(file: &str, bytes: &[u8], min: KernelVersion) -> Result<Vec<Finding>, LintError> {
    let elf_err = |detail: String| LintError::Elf { file: file.to_owned(), detail };
    let (elf, parsed) = crate::inspect::parse(bytes).map_err(elf_err)?;
    let mut findings = Vec::new();
    let mut add = |program: Option<&str>, gate, name: String, since, severity, detail: String| {
        findings.push(Finding {
            object: file.to_owned(),
            program: program.map(str::to_owned),
            gate,
            name,
            since,
            severity,
            detail,
        });
    };

    // Object-wide: maps.
    let mut map_names: Vec<&String> = parsed.maps.keys().collect();
    map_names.sort();
    for name in map_names {
        let map = &parsed.maps[name];
        if name.starts_with('.') {
            if min < v(5, 2) {
                add(None, Gate::GlobalData, name.clone(), v(5, 2), Severity::Rewritten,
                    format!("global-data map {name}: aya does not create it before 5.2 (fails only if a program reads it)"));
            }
            continue;
        }
        let t = map.map_type();
        let since = MAP_TYPE_SINCE.get(t as usize).copied().unwrap_or(v(99, 0));
        if since > min {
            add(None, Gate::MapType, map_type_name(t), since, Severity::Missing,
                format!("map {name} is a {} map (requires >= {since})", map_type_name(t)));
        }
    }

    // Object-wide: BTF kinds (aya sanitizes them all before loading the object's BTF).
    if let Some(section) = elf.section_by_name(".BTF") {
        let data = section.data().map_err(|e| elf_err(e.to_string()))?;
        let btf = RawBtf::parse(data).map_err(|source| LintError::Btf { file: file.to_owned(), source })?;
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for t in &btf.types {
            *counts.entry(t.kind()).or_default() += 1;
        }
        for (k, n) in counts {
            let since = btf_kind_since(k);
            if since > min {
                add(None, Gate::BtfKind, kind::name(k).to_owned(), since, Severity::Rewritten,
                    format!("{n} BTF_KIND_{} types: aya sanitizes them for kernels without it", kind::name(k)));
            }
        }
    }

    // Per program.
    let mut programs: Vec<(&String, &aya_obj::Program)> = parsed.programs.iter().collect();
    programs.sort_by_key(|(name, _)| name.as_str());
    let section_of = |program: &aya_obj::Program| {
        let section = elf.section_by_index(object::SectionIndex(program.section_index)).ok();
        let name = section.as_ref().and_then(|s| s.name().ok()).unwrap_or("").to_owned();
        (section, name)
    };
    let needs: BTreeMap<String, Option<KernelVersion>> = programs
        .iter()
        .map(|(name, program)| ((*name).clone(), program_needs(&classify_section(&section_of(program).1).0)))
        .collect();
    for (name, program) in programs {
        let p = Some(name.as_str());
        let (section, section_name) = section_of(program);
        let Some(function) = parsed.functions.get(&program.function_key()) else {
            return Err(elf_err(format!("program {name} has no code")));
        };
        let (program_type, _) = classify_section(&section_name);
        if let Some(since) = needs[name.as_str()].filter(|since| *since > min) {
            if let Some(other) = alternative_on(monitor_of(file), name, &needs, min) {
                add(p, Gate::ProgramType, program_type.clone(), since, Severity::Skipped,
                    format!("skipped: needs >= {since} (section {section_name}); on {min} the loader takes {other}, another path of its group"));
                continue;
            }
        }
        match program_type_since(&program_type) {
            Some((since, attach)) => {
                if since > min {
                    add(p, Gate::ProgramType, program_type.clone(), since, Severity::Missing,
                        format!("section {section_name}: program type {program_type} requires >= {since}"));
                }
                if let Some((attach_name, since)) = attach {
                    if since > min {
                        add(p, Gate::AttachType, attach_name.to_owned(), since, Severity::Missing,
                            format!("section {section_name}: attach type {attach_name} requires >= {since}"));
                    }
                }
            }
            None => add(p, Gate::ProgramType, program_type.clone(), v(99, 0), Severity::Missing,
                format!("section {section_name}: program type unknown to the lint")),
        }

        let insns = &function.instructions;
        if insns.len() > OLD_MAX_INSNS && min < v(5, 2) {
            add(p, Gate::InstructionCount, insns.len().to_string(), v(5, 2), Severity::Missing,
                format!("{} instructions, over the {OLD_MAX_INSNS} limit before 5.2", insns.len()));
        }
        let mut helpers: BTreeMap<i32, usize> = BTreeMap::new();
        let mut calls = 0;
        let mut map_value_loads = 0;
        for insn in insns {
            if insn.code == 0x85 {
                match insn.src_reg() {
                    0 => *helpers.entry(insn.imm).or_default() += 1,
                    BPF_PSEUDO_CALL => calls += 1,
                    _ => {}
                }
            } else if insn.code == 0x18 && insn.src_reg() == BPF_PSEUDO_MAP_VALUE {
                map_value_loads += 1;
            }
        }
        for (&id, &uses) in &helpers {
            let helper = helper_name(id).map_or_else(|| format!("helper#{id}"), str::to_owned);
            let since = usize::try_from(id).ok().and_then(|i| HELPER_SINCE.get(i)).copied().unwrap_or(v(99, 0));
            if since <= min {
                continue;
            }
            match REWRITTEN_HELPERS.iter().find(|(h, _)| *h == id) {
                Some((_, older)) if min >= v(4, 11) || *older == "bpf_probe_read" => {
                    add(p, Gate::Helper, helper, since, Severity::Rewritten,
                        format!("{uses} calls; aya rewrites them to {older} on kernels before {since}"));
                }
                _ => add(p, Gate::Helper, helper.clone(), since, Severity::Missing,
                    format!("{uses} calls to {helper} (requires >= {since})")),
            }
        }
        if min < v(5, 3) {
            let code: Vec<(u8, i16)> = insns.iter().map(|i| (i.code, i.off)).collect();
            let back_edges = loop_back_edges(&code);
            if !back_edges.is_empty() {
                let shown: Vec<String> = back_edges.iter().take(5).map(|(f, t)| format!("{f} to {t}")).collect();
                add(p, Gate::Loop, format!("{} back-edges", back_edges.len()), v(5, 3), Severity::Missing,
                    format!("loops: back-edge from insn {}{} (bounded loops need >= 5.3)",
                        shown.join(", "), if back_edges.len() > 5 { ", ..." } else { "" }));
            }
        }
        if calls > 0 && min < v(4, 16) {
            add(p, Gate::BpfToBpfCall, format!("{calls} calls"), v(4, 16), Severity::Missing,
                format!("{calls} bpf-to-bpf calls (requires >= 4.16)"));
        }
        if min < v(5, 2) {
            // Clang leaves global-data loads as ld_imm64 with a relocation against the data
            // section; linked objects may carry BPF_PSEUDO_MAP_VALUE already.
            let start = function.section_offset as u64;
            let end = start + (insns.len() * 8) as u64;
            let mut reads: BTreeMap<String, usize> = BTreeMap::new();
            if let Some(section) = &section {
                for (offset, reloc) in section.relocations() {
                    if offset < start || offset >= end {
                        continue;
                    }
                    let object::RelocationTarget::Symbol(sym) = reloc.target() else { continue };
                    let Ok(symbol) = elf.symbol_by_index(sym) else { continue };
                    let Some(target_section) = symbol.section_index().and_then(|i| elf.section_by_index(i).ok()) else { continue };
                    let target_name = target_section.name().unwrap_or("");
                    if is_global_data_section(target_name) {
                        *reads.entry(target_name.to_owned()).or_default() += 1;
                    }
                }
            }
            if map_value_loads > 0 {
                *reads.entry("BPF_PSEUDO_MAP_VALUE".to_owned()).or_default() += map_value_loads;
            }
            for (data, uses) in reads {
                add(p, Gate::GlobalData, data.clone(), v(5, 2), Severity::Missing,
                    format!("{uses} loads from {data} (global data requires >= 5.2)"));
            }
        }
    }
    Ok(findings)
}

/// Lints `objects` (name, bytes) against kernel `min`, and, when they are meant for one
/// architecture, against `arch`.
pub fn lint(objects: &[(String, &[u8])], min: KernelVersion, arch: Option<Arch>) -> Result<LintReport, LintError> {
    let mut findings = Vec::new();
    let mut object_arches = BTreeMap::new();
    let mut arch_problems = Vec::new();
    for (file, bytes) in objects {
        findings.extend(lint_object(file, bytes, min)?);
        let info = inspect::inspect(file, bytes).map_err(|source| LintError::Arch { file: file.clone(), source })?;
        object_arches.insert(file.clone(), info.arch.to_string());
        arch_problems.extend(info.arch.problems(arch).into_iter().map(|detail| ArchProblem { object: file.clone(), detail }));
    }
    Ok(LintReport {
        min_kernel: min,
        arch,
        objects: objects.iter().map(|(f, _)| f.clone()).collect(),
        object_arches,
        findings,
        arch_problems,
    })
}

/// The report as text: one line per finding, then a summary.
pub fn render_text(report: &LintReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for f in &report.findings {
        let tag = match f.severity {
            Severity::Missing => "MISSING",
            Severity::Rewritten | Severity::Skipped => "note",
        };
        let _ = writeln!(
            out,
            "{tag:<7} {}{}: {} {} (since {}): {}",
            f.object,
            f.program.as_deref().map(|p| format!(" {p}")).unwrap_or_default(),
            f.gate,
            f.name,
            f.since,
            f.detail
        );
    }
    for p in &report.arch_problems {
        let _ = writeln!(out, "ARCH    {}: {}", p.object, p.detail);
    }
    // One line per architecture: which objects are built for it.
    let mut by_arch: BTreeMap<&str, usize> = BTreeMap::new();
    for a in report.object_arches.values() {
        *by_arch.entry(a.as_str()).or_default() += 1;
    }
    for (a, n) in &by_arch {
        let _ = writeln!(out, "arch    {a}: {n} objects");
    }
    let notes = report.findings.len() - report.missing();
    let _ = writeln!(
        out,
        "lint --min-kernel {}{}: {} objects, {} missing, {} arch problems, {} notes: {}",
        report.min_kernel,
        report.arch.map(|a| format!(" --arch {a}")).unwrap_or_default(),
        report.objects.len(),
        report.missing(),
        report.arch_problems.len(),
        notes,
        if report.failed() { "FAIL" } else { "clean" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle;

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(KernelVersion::parse("4.19").unwrap(), v(4, 19));
        assert_eq!(KernelVersion::parse("5.10.0-21-amd64").unwrap(), v(5, 10));
        assert_eq!(KernelVersion::parse("6.18.44-fc-v782").unwrap(), v(6, 18));
        assert!(KernelVersion::parse("five").is_err());
        assert!(v(4, 19) < v(5, 2) && v(5, 10) > v(5, 8));
    }

    #[test]
    fn tables_cover_every_helper_and_map_type_name() {
        assert_eq!(HELPER_SINCE.len(), crate::helpers::HELPER_NAMES.len());
        assert_eq!(MAP_TYPE_SINCE.len(), 33);
        assert_eq!(map_type_name(27), "ringbuf");
        assert_eq!(MAP_TYPE_SINCE[27], v(5, 8));
        assert_eq!(helper_name(130), Some("bpf_ringbuf_output"));
        assert_eq!(HELPER_SINCE[130], v(5, 8));
        assert_eq!(HELPER_SINCE[80], v(4, 18));
        assert_eq!(HELPER_SINCE[181], v(5, 17));
        assert_eq!(HELPER_SINCE[125], v(5, 8));
    }

    #[test]
    fn ringbuf_objects_fail_on_old_kernels_naming_the_gate() {
        let obj = bundle::object("process", bundle::Transport::Ringbuf).unwrap();
        let findings = lint_object(obj.file, obj.bytes, v(4, 19)).unwrap();
        let helper = findings.iter().find(|f| f.gate == Gate::Helper && f.name == "bpf_ringbuf_output").unwrap();
        assert_eq!((helper.since, helper.severity), (v(5, 8), Severity::Missing));
        let map = findings.iter().find(|f| f.gate == Gate::MapType && f.name == "ringbuf").unwrap();
        assert_eq!(map.since, v(5, 8));
    }

    /// (opcode, offset) shorthands for [`loop_back_edges`].
    const MOV: (u8, i16) = (0xb7, 0); // r = imm
    const EXIT: (u8, i16) = (0x95, 0);
    const fn jeq(off: i16) -> (u8, i16) {
        (0x15, off) // if r == imm goto off
    }
    const fn ja(off: i16) -> (u8, i16) {
        (0x05, off)
    }

    #[test]
    fn a_backward_jump_that_closes_no_cycle_is_not_a_loop() {
        // 0: if r1 == 0 goto 3   1: r0 = 0   2: exit   3: r0 = 1   4: goto 1 (back to the shared
        // return block: a backward jump, as clang lays out `return` blocks, but no cycle)
        let code = [jeq(2), MOV, EXIT, MOV, ja(-4)];
        assert_eq!(loop_back_edges(&code), vec![]);
        // ld_imm64 takes two slots; the second is never a jump target.
        // 0-1: r1 = imm64   2: if r1 == 0 goto 4   3: exit   4: goto 3
        assert_eq!(loop_back_edges(&[(0x18, 0), (0, 0), jeq(1), EXIT, ja(-2)]), vec![]);
    }

    #[test]
    fn a_cycle_is_a_loop_as_the_kernel_reports_it() {
        // 0: r0 = 0   1: r0 += 1   2: if r0 == 8 goto 4   3: goto 1   4: exit
        let code = [MOV, (0x07, 0), jeq(1), ja(-3), EXIT];
        assert_eq!(loop_back_edges(&code), vec![(3, 1)]);
        // clang's layout of `for (i = 0; i < 8; i++)` with unroll(disable): the body sits after
        // the latch, so the edge that closes the loop is a forward jump (3 to 5), and the two
        // backward jumps (6 and 7 to 2) close nothing the kernel has not walked already.
        // 0: r = 0  1: goto 5  2: r += 1  3: if r == 8 goto 5  4: exit  5: body  6: if r == 0 goto 2  7: goto 2
        let code = [MOV, ja(3), (0x07, 0), jeq(1), EXIT, MOV, jeq(-5), ja(-6)];
        assert_eq!(loop_back_edges(&code), vec![(3, 5)]);
        // A conditional loop back to itself.
        assert_eq!(loop_back_edges(&[MOV, jeq(-1), EXIT]), vec![(1, 1)]);
    }

    #[test]
    fn an_alternative_for_newer_kernels_is_skipped_when_its_group_has_a_path() {
        let needs: BTreeMap<String, Option<KernelVersion>> = [
            ("sec_capable_fexit".to_owned(), Some(v(5, 5))),
            ("sec_capable_kprobe".to_owned(), Some(v(4, 1))),
            ("sec_enter_setuid".to_owned(), Some(v(4, 7))),
        ]
        .into_iter()
        .collect();
        assert_eq!(alternative_on("security", "sec_capable_fexit", &needs, v(4, 19)), Some("sec_capable_kprobe"));
        // No path of the group exists on the kernel: nothing to take instead.
        assert_eq!(alternative_on("security", "sec_capable_fexit", &needs, v(4, 0)), None);
        // Programs outside every group have no alternative.
        assert_eq!(alternative_on("security", "sec_enter_setuid", &needs, v(4, 19)), None);
        assert_eq!(alternative_on("process", "sec_capable_fexit", &needs, v(4, 19)), None);
        assert_eq!(monitor_of("/tmp/x/security.perf.bpf.o"), "security");
    }

    #[test]
    fn the_fexit_capability_path_is_a_note_at_4_19_and_linted_from_5_5() {
        let obj = bundle::object("security", bundle::Transport::Perf).unwrap();
        let at_4_19 = lint_object(obj.file, obj.bytes, v(4, 19)).unwrap();
        let fexit: Vec<_> = at_4_19.iter().filter(|f| f.program.as_deref() == Some("sec_capable_fexit")).collect();
        assert_eq!(fexit.len(), 1, "{fexit:?}");
        assert_eq!((fexit[0].severity, fexit[0].since), (Severity::Skipped, v(5, 5)));
        assert!(fexit[0].detail.starts_with("skipped: needs >= 5.5"), "{}", fexit[0].detail);
        assert!(!at_4_19
            .iter()
            .any(|f| f.program.as_deref() == Some("sec_capable_kprobe") && f.severity == Severity::Missing));
        let at_5_5 = lint_object(obj.file, obj.bytes, v(5, 5)).unwrap();
        assert!(!at_5_5.iter().any(|f| f.severity == Severity::Skipped));
    }
}
