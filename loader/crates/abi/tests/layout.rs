//! Every record mirror of this crate has the layout recorded in each compiled object's own BTF,
//! in every architecture's bundle.

use tapio_object::{btf::StructLayout, inspect::object_btf, layout::{check, check_objects, LayoutError}, mirror_layout};
use tapio_bundle::OBJECTS;
use tapio_abi::{
    advanced::{AdvancedBatch, AdvancedEntry},
    cgroup_watch::CgroupWatchEvent,
    dns::{DnsEvent, DnsMsgEvent},
    kernel::{KernelOomEvent, KernelSockEvent},
    network::{NetworkEvent, TapioFlow},
    process::{ProcessEvent, ProcessExecEvent},
    security::{SecurityEvent, SecurityMountEvent},
    TapioHeader,
};

fn mirrors() -> Vec<(&'static str, StructLayout)> {
    vec![
        (
            "process",
            mirror_layout!("tapio_header", TapioHeader { ts_ns, pid, tgid, cgroup_id, uid, monitor, kind, _pad0, comm }),
        ),
        (
            "process",
            mirror_layout!("process_event", ProcessEvent {
                hdr, ppid, child_tgid, pid_ns, exit_code, duration_ns, args_size, flags
            }),
        ),
        ("process", mirror_layout!("process_exec_event", ProcessExecEvent { base, filename, args })),
        (
            "dns",
            mirror_layout!("tapio_flow", TapioFlow {
                saddr, daddr, sport, dport, ip_version, protocol, _pad0
            }),
        ),
        (
            "dns",
            mirror_layout!("dns_event", DnsEvent {
                hdr, flow, dns_id, dns_flags, qdcount, ancount, msg_len, cap_len, direction, _pad0, tail_off, flags
            }),
        ),
        ("dns", mirror_layout!("dns_msg_event", DnsMsgEvent { base, msg })),
        (
            "network",
            mirror_layout!("tapio_flow", TapioFlow {
                saddr, daddr, sport, dport, ip_version, protocol, _pad0
            }),
        ),
        (
            "network",
            mirror_layout!("network_event", NetworkEvent {
                hdr, flow, bytes_sent, bytes_received, oldstate, newstate, _pad0, flags, result, repeats
            }),
        ),
        (
            "kernel",
            mirror_layout!("tapio_flow", TapioFlow {
                saddr, daddr, sport, dport, ip_version, protocol, _pad0
            }),
        ),
        (
            "kernel",
            mirror_layout!("kernel_sock_event", KernelSockEvent {
                hdr, flow, oldstate, newstate, _pad0, flags
            }),
        ),
        (
            "kernel",
            mirror_layout!("kernel_oom_event", KernelOomEvent {
                hdr, victim_cgroup_id, victim_pid, victim_tgid, victim_uid, flags, victim_comm
            }),
        ),
        (
            "security",
            mirror_layout!("security_event", SecurityEvent {
                hdr, syscall, flags, ret, old_uid, old_euid, old_suid, old_gid, old_egid, old_sgid, new_id,
                target_pid, old_cap_effective, old_cap_permitted, new_cap_effective, new_cap_permitted,
                new_cap_inheritable, arg0, arg1, mnt_ns, pid_ns_level
            }),
        ),
        (
            "security",
            mirror_layout!("security_mount_event", SecurityMountEvent {
                base, source, target, fstype, from_dfd, to_dfd, origin, _pad0
            }),
        ),
        (
            "advanced",
            mirror_layout!("advanced_entry", AdvancedEntry {
                ts_ns, pid, tgid, cgroup_id, uid, nr, arg0, suppressed, numa_node, cpu, comm
            }),
        ),
        (
            "advanced",
            mirror_layout!("advanced_batch", AdvancedBatch { hdr, count, cpu, first_ts_ns, events }),
        ),
        (
            "cgroup_watch",
            mirror_layout!("cgroup_watch_event", CgroupWatchEvent {
                hdr, cgroup_id, level, flags, path
            }),
        ),
    ]
}

/// Every architecture's bundle (the tests embed both): the records are fixed-width with explicit
/// padding, so the mirrors compiled here have the layout an aarch64 agent's have, and the arm64
/// objects must agree with them as the x86_64 ones do.
#[rstest::rstest]
fn rust_mirrors_match_object_btf(#[values(tapio_bundle::Arch::X86_64, tapio_bundle::Arch::Arm64)] arch: tapio_bundle::Arch) {
    let objects = tapio_bundle::objects_for(arch).expect("all-arches embeds every bundle");
    let checked = check_objects(objects.iter().map(|o| (o.monitor, o.file, o.bytes)), &mirrors())
        .unwrap_or_else(|e| panic!("{arch} {e}"));
    assert!(checked >= 6, "{arch}: checked only {checked} struct layouts");
}

/// A mirror whose field drifted (exit_code widened to u64) is caught, naming the field.
#[test]
fn mismatched_mirror_is_caught() {
    #[repr(C)]
    struct DriftedProcessEvent {
        hdr: TapioHeader,
        ppid: u32,
        child_tgid: u32,
        pid_ns: u32,
        exit_code: u64,
        duration_ns: u64,
        args_size: u32,
        flags: u32,
    }
    let object = OBJECTS.iter().find(|o| o.monitor == "process").unwrap();
    let btf = object_btf(object.file, object.bytes).unwrap();
    let drifted = mirror_layout!("process_event", DriftedProcessEvent {
        hdr, ppid, child_tgid, pid_ns, exit_code, duration_ns, args_size, flags
    });
    let err = check(&btf, &drifted).expect_err("a drifted mirror must not pass");
    assert!(matches!(err, LayoutError::Size { .. } | LayoutError::Field { .. }), "{err}");
    // With equal sizes the first differing field is named.
    #[repr(C)]
    struct SwappedProcessEvent {
        hdr: TapioHeader,
        child_tgid: u32,
        ppid: u32,
        pid_ns: u32,
        exit_code: u32,
        duration_ns: u64,
        args_size: u32,
        flags: u32,
    }
    let swapped = mirror_layout!("process_event", SwappedProcessEvent {
        hdr, child_tgid, ppid, pid_ns, exit_code, duration_ns, args_size, flags
    });
    let err = check(&btf, &swapped).expect_err("swapped fields must not pass");
    let msg = err.to_string();
    assert!(matches!(err, LayoutError::Field { index: 1, .. }), "{msg}");
    assert!(msg.contains("child_tgid") && msg.contains("ppid"), "{msg}");
}
