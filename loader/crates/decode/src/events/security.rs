//! The security monitor's records (probes/include/security.h) and their decoding.

use serde::Serialize;

use super::{c_string, read_record, Body, DecodeError, Event, TapioHeader};
// The record mirrors and their C constants (probes/include/security.h).
use tapio_abi::security::*;


/// Any of a mount record's strings cut to its field.
const MOUNT_TRUNCATED: u32 = SECURITY_F_SOURCE_TRUNCATED | SECURITY_F_TARGET_TRUNCATED | SECURITY_F_FSTYPE_TRUNCATED;


/// `enum security_syscall`, index = value.
const SYSCALLS: [&str; 21] = [
    "",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "capset",
    "ptrace",
    "process_vm_writev",
    "setns",
    "unshare",
    "mount",
    "init_module",
    "finit_module",
    "fsopen",
    "fsmount",
    "open_tree",
    "move_mount",
    "open_tree_attr",
    "fsconfig",
];

/// Capability names by bit (include/uapi/linux/capability.h).
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `bit`, or `CAP_<bit>` for one newer than this table.
pub fn capability_name(bit: u32) -> String {
    CAPS.get(bit as usize).map_or_else(|| format!("CAP_{bit}"), |n| (*n).to_owned())
}

/// Names of the capabilities set in `mask`, lowest bit first.
pub fn capability_names(mask: u64) -> Vec<String> {
    (0..64).filter(|b| mask & (1 << b) != 0).map(capability_name).collect()
}

/// A ptrace request by name, for the ones the probe reports.
pub fn ptrace_request_name(request: u64) -> String {
    match request {
        4 => "PTRACE_POKETEXT".to_owned(),
        5 => "PTRACE_POKEDATA".to_owned(),
        6 => "PTRACE_POKEUSER".to_owned(),
        16 => "PTRACE_ATTACH".to_owned(),
        0x4206 => "PTRACE_SEIZE".to_owned(),
        other => other.to_string(),
    }
}

/// The `CLONE_NEW*` namespaces named by `flags` (include/uapi/linux/sched.h).
pub fn namespace_names(flags: u64) -> Vec<&'static str> {
    const NS: [(u64, &str); 8] = [
        (0x0002_0000, "mnt"),
        (0x0200_0000, "cgroup"),
        (0x0400_0000, "uts"),
        (0x0800_0000, "ipc"),
        (0x1000_0000, "user"),
        (0x2000_0000, "pid"),
        (0x4000_0000, "net"),
        (0x0000_0080, "time"),
    ];
    NS.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect()
}

fn id(v: u32) -> Option<u32> {
    (v != SECURITY_ID_UNCHANGED).then_some(v)
}

/// The kind-specific fields of a security record.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SecurityDetail {
    /// setuid/setreuid/setresuid: the requested real, effective and saved uid (absent when the
    /// caller left one unchanged); the gid calls fill the `new_*gid` fields instead.
    Ids {
        old_uid: u32,
        old_euid: u32,
        old_suid: u32,
        old_gid: u32,
        old_egid: u32,
        old_sgid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_uid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_euid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_suid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_gid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_egid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_sgid: Option<u32>,
    },
    /// capset: the caller's capability sets before, the sets it asked for, and what that adds.
    Caps {
        old_uid: u32,
        old_euid: u32,
        /// capset's header pid: 0 (or the caller) on every kernel since 2.6.25.
        target_pid: u32,
        old_cap_effective: u64,
        old_cap_permitted: u64,
        /// Absent when the data could not be read from the caller's memory.
        #[serde(skip_serializing_if = "Option::is_none")]
        new_cap_effective: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_cap_permitted: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new_cap_inheritable: Option<u64>,
        /// Effective capabilities requested that the caller did not have.
        caps_gained: Vec<String>,
    },
    Ptrace { request: String, target_pid: u32, addr: u64 },
    VmWritev { target_pid: u32, local_iovcnt: u64, remote_iovcnt: u64 },
    Setns {
        fd: i64,
        /// The namespace type the caller required (0: any).
        nstype: u64,
        namespaces: Vec<&'static str>,
    },
    Unshare { flags: u64, namespaces: Vec<&'static str> },
    Mount { source: String, target: String, fstype: String, flags: u64, truncated: bool },
    /// move_mount: `target` is to_path as given (relative to `to_dfd` unless absolute; -100 is
    /// `AT_FDCWD`). With an empty from_path the mount is from_dfd's, and where the monitor saw
    /// that fd made, `source` and `fstype` are that mount's and `detached_by` names the syscall
    /// (`fsmount`, `open_tree`, `open_tree_attr`); else `source` is from_path and `detached_by`
    /// is null.
    MoveMount {
        source: String,
        target: String,
        fstype: String,
        /// MOVE_MOUNT_*.
        flags: u64,
        truncated: bool,
        from_dfd: i64,
        to_dfd: i64,
        detached_by: Option<&'static str>,
    },
    /// fsmount (`fs_fd`, `attr_flags`: MOUNT_ATTR_*; `source` is fsconfig's, `fstype` fsopen's,
    /// both empty when the monitor did not see the context made) or open_tree with
    /// OPEN_TREE_CLONE (`dfd`; `source` is the path copied, `fstype` empty). `result` is the new
    /// mount's fd.
    DetachedMount {
        source: String,
        fstype: String,
        /// FSMOUNT_* for fsmount; OPEN_TREE_* and AT_* for open_tree.
        flags: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        attr_flags: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fs_fd: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dfd: Option<i64>,
        truncated: bool,
    },
    InitModule { len: u64 },
    /// A capable() check: the capability, whether it was checked against a non-initial user
    /// namespace, whether the verdict (`result`) was seen (tracepoint, fexit) or not (kprobe), and
    /// whether `cap_opts` was seen (fexit, kprobe) or not (the tracepoint does not carry it).
    Capability { capability: String, user_ns: bool, verdict_known: bool, cap_opts: u64, opts_known: bool },
    FinitModule { fd: i64, flags: u64 },
}

/// The security fields of an output record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecurityBody {
    pub syscall: &'static str,
    /// The syscall's return value: 0 (or a count) on success, `-errno` on failure.
    pub result: i64,
    /// Outside the initial mount namespace or the initial pid namespace.
    pub in_container: bool,
    pub mnt_ns: u32,
    pub pid_ns_level: u32,
    #[serde(flatten)]
    pub detail: SecurityDetail,
}

/// Decodes a security record whose header is already read.
pub fn decode(h: &TapioHeader, bytes: &[u8]) -> Result<Event, DecodeError> {
    let e: SecurityEvent = read_record(bytes, "security_event")?;
    let unknown = DecodeError::UnknownKind { monitor: "security", kind: h.kind };
    if h.kind == SECURITY_CAPABILITY {
        let detail = SecurityDetail::Capability {
            capability: capability_name(e.arg0 as u32),
            user_ns: e.flags & SECURITY_F_USER_NS != 0,
            verdict_known: e.flags & SECURITY_F_RESULT_UNKNOWN == 0,
            cap_opts: e.arg1,
            opts_known: e.flags & SECURITY_F_OPTS_UNKNOWN == 0,
        };
        let body = SecurityBody {
            // No syscall: the hook is the kernel's capability check itself.
            syscall: "cap_capable",
            result: e.ret,
            in_container: e.flags & SECURITY_F_IN_CONTAINER != 0,
            mnt_ns: e.mnt_ns,
            pid_ns_level: e.pid_ns_level,
            detail,
        };
        return Ok(Event::from_header(h, "security", "capability", Body::Security(body)));
    }
    let syscall = SYSCALLS.get(e.syscall as usize).copied().filter(|s| !s.is_empty()).ok_or(unknown)?;
    let gid_call = matches!(syscall, "setgid" | "setregid" | "setresgid");
    let (name, detail) = match h.kind {
        SECURITY_CRED_CHANGE if syscall == "capset" => {
            let read = e.flags & SECURITY_F_CAPS_UNREAD == 0;
            let detail = SecurityDetail::Caps {
                old_uid: e.old_uid,
                old_euid: e.old_euid,
                target_pid: e.target_pid,
                old_cap_effective: e.old_cap_effective,
                old_cap_permitted: e.old_cap_permitted,
                new_cap_effective: read.then_some(e.new_cap_effective),
                new_cap_permitted: read.then_some(e.new_cap_permitted),
                new_cap_inheritable: read.then_some(e.new_cap_inheritable),
                caps_gained: if read {
                    capability_names(e.new_cap_effective & !e.old_cap_effective)
                } else {
                    Vec::new()
                },
            };
            ("cred_change", detail)
        }
        SECURITY_CRED_CHANGE => {
            let [a, b, c] = e.new_id.map(id);
            let (u, g) = if gid_call { ([None; 3], [a, b, c]) } else { ([a, b, c], [None; 3]) };
            let detail = SecurityDetail::Ids {
                old_uid: e.old_uid,
                old_euid: e.old_euid,
                old_suid: e.old_suid,
                old_gid: e.old_gid,
                old_egid: e.old_egid,
                old_sgid: e.old_sgid,
                new_uid: u[0],
                new_euid: u[1],
                new_suid: u[2],
                new_gid: g[0],
                new_egid: g[1],
                new_sgid: g[2],
            };
            ("cred_change", detail)
        }
        SECURITY_PTRACE => (
            "ptrace",
            SecurityDetail::Ptrace { request: ptrace_request_name(e.arg0), target_pid: e.target_pid, addr: e.arg1 },
        ),
        SECURITY_VM_WRITEV => (
            "process_vm_writev",
            SecurityDetail::VmWritev { target_pid: e.target_pid, local_iovcnt: e.arg0, remote_iovcnt: e.arg1 },
        ),
        SECURITY_SETNS => (
            "setns",
            SecurityDetail::Setns { fd: e.arg1 as i32 as i64, nstype: e.arg0, namespaces: namespace_names(e.arg0) },
        ),
        SECURITY_UNSHARE => ("unshare", SecurityDetail::Unshare { flags: e.arg0, namespaces: namespace_names(e.arg0) }),
        SECURITY_MOUNT if syscall == "move_mount" => {
            let m: SecurityMountEvent = read_record(bytes, "security_mount_event")?;
            let detail = SecurityDetail::MoveMount {
                source: c_string(&m.source),
                target: c_string(&m.target),
                fstype: c_string(&m.fstype),
                flags: e.arg0,
                truncated: e.flags & MOUNT_TRUNCATED != 0,
                from_dfd: i64::from(m.from_dfd),
                to_dfd: i64::from(m.to_dfd),
                detached_by: SYSCALLS.get(m.origin as usize).copied().filter(|s| !s.is_empty()),
            };
            ("mount", detail)
        }
        SECURITY_DETACHED_MOUNT if matches!(syscall, "fsmount" | "open_tree" | "open_tree_attr") => {
            let m: SecurityMountEvent = read_record(bytes, "security_mount_event")?;
            let fsmount = syscall == "fsmount";
            let fd = Some(i64::from(m.from_dfd));
            let detail = SecurityDetail::DetachedMount {
                source: c_string(&m.source),
                fstype: c_string(&m.fstype),
                flags: e.arg0,
                attr_flags: fsmount.then_some(e.arg1),
                fs_fd: fd.filter(|_| fsmount),
                dfd: fd.filter(|_| !fsmount),
                truncated: e.flags & MOUNT_TRUNCATED != 0,
            };
            ("detached_mount", detail)
        }
        SECURITY_MOUNT => {
            let m: SecurityMountEvent = read_record(bytes, "security_mount_event")?;
            let cut = MOUNT_TRUNCATED;
            let detail = SecurityDetail::Mount {
                source: c_string(&m.source),
                target: c_string(&m.target),
                fstype: c_string(&m.fstype),
                flags: e.arg0,
                truncated: e.flags & cut != 0,
            };
            ("mount", detail)
        }
        SECURITY_MODULE_LOAD if syscall == "init_module" => ("module_load", SecurityDetail::InitModule { len: e.arg0 }),
        SECURITY_MODULE_LOAD => {
            ("module_load", SecurityDetail::FinitModule { fd: e.arg0 as i32 as i64, flags: e.arg1 })
        }
        kind => return Err(DecodeError::UnknownKind { monitor: "security", kind }),
    };
    let body = SecurityBody {
        syscall,
        result: e.ret,
        in_container: e.flags & SECURITY_F_IN_CONTAINER != 0,
        mnt_ns: e.mnt_ns,
        pid_ns_level: e.pid_ns_level,
        detail,
    };
    Ok(Event::from_header(h, "security", name, Body::Security(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, syscall: u32, f: impl FnOnce(&mut SecurityEvent)) -> Vec<u8> {
        let mut e = SecurityEvent {
            hdr: TapioHeader { monitor: 5, kind, ..Default::default() },
            syscall,
            new_id: [SECURITY_ID_UNCHANGED; 3],
            ..Default::default()
        };
        f(&mut e);
        // SAFETY: SecurityEvent is repr(C) plain data with no padding bytes.
        unsafe { std::slice::from_raw_parts((&e as *const SecurityEvent).cast::<u8>(), size_of::<SecurityEvent>()) }
            .to_vec()
    }

    #[test]
    fn capability_names_the_capability() {
        let bytes = record(SECURITY_CAPABILITY, 0, |e| {
            e.arg0 = 21;
            e.ret = -1;
            e.flags = SECURITY_F_USER_NS;
        });
        let v = serde_json::to_value(decode(&read_record(&bytes, "h").unwrap(), &bytes).unwrap()).unwrap();
        assert_eq!(v["event"], "capability");
        assert_eq!(v["capability"], "CAP_SYS_ADMIN");
        assert_eq!(v["result"], -1);
        assert_eq!(v["user_ns"], true);
        assert_eq!(v["verdict_known"], true);
    }

    #[test]
    fn setresgid_fills_gid_fields_only() {
        let bytes = record(SECURITY_CRED_CHANGE, 6, |e| e.new_id = [1, SECURITY_ID_UNCHANGED, 3]);
        let ev = decode(&read_record(&bytes, "h").unwrap(), &bytes).unwrap();
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["event"], "cred_change");
        assert_eq!(v["syscall"], "setresgid");
        assert_eq!(v["new_gid"], 1);
        assert!(v.get("new_egid").is_none() && v.get("new_uid").is_none(), "{v}");
        assert_eq!(v["new_sgid"], 3);
    }

    #[test]
    fn capset_names_gained_caps() {
        let bytes = record(SECURITY_CRED_CHANGE, 7, |e| {
            e.old_cap_effective = 1 << 7;
            e.new_cap_effective = (1 << 7) | (1 << 21);
        });
        let v = serde_json::to_value(decode(&read_record(&bytes, "h").unwrap(), &bytes).unwrap()).unwrap();
        assert_eq!(v["caps_gained"], serde_json::json!(["CAP_SYS_ADMIN"]));
    }

    #[test]
    fn mount_record_must_be_whole() {
        let bytes = record(SECURITY_MOUNT, 12, |_| {});
        let err = decode(&read_record(&bytes, "h").unwrap(), &bytes).unwrap_err();
        assert!(matches!(err, DecodeError::Short { what: "security_mount_event", .. }), "{err}");
    }

    fn mount_record(kind: u8, syscall: u32, f: impl FnOnce(&mut SecurityMountEvent)) -> Vec<u8> {
        let base = SecurityEvent {
            hdr: TapioHeader { monitor: 5, kind, ..Default::default() },
            syscall,
            new_id: [SECURITY_ID_UNCHANGED; 3],
            ..Default::default()
        };
        let mut m = SecurityMountEvent {
            base,
            source: [0; 128],
            target: [0; 256],
            fstype: [0; 32],
            from_dfd: 0,
            to_dfd: 0,
            origin: 0,
            _pad0: 0,
        };
        f(&mut m);
        // SAFETY: SecurityMountEvent is repr(C) plain data with no padding bytes.
        unsafe { std::slice::from_raw_parts((&m as *const SecurityMountEvent).cast::<u8>(), size_of::<SecurityMountEvent>()) }
            .to_vec()
    }

    fn put(dst: &mut [u8], s: &str) {
        dst[..s.len()].copy_from_slice(s.as_bytes());
    }

    /// move_mount is a `mount` event; the mount it attaches came from fsmount, named with the
    /// context's source and fstype.
    #[test]
    fn move_mount_names_the_mount_it_attaches() {
        let bytes = mount_record(SECURITY_MOUNT, 18, |m| {
            put(&mut m.target, "/mnt/x");
            put(&mut m.source, "/dev/sda1");
            put(&mut m.fstype, "ext4");
            m.from_dfd = 5;
            m.to_dfd = -100;
            m.origin = 16;
            m.base.arg0 = 4;
        });
        let v = serde_json::to_value(decode(&read_record(&bytes, "h").unwrap(), &bytes).unwrap()).unwrap();
        assert_eq!(v["event"], "mount");
        assert_eq!(v["syscall"], "move_mount");
        assert_eq!((v["target"].as_str(), v["source"].as_str(), v["fstype"].as_str()), (Some("/mnt/x"), Some("/dev/sda1"), Some("ext4")));
        assert_eq!((v["from_dfd"].as_i64(), v["to_dfd"].as_i64(), v["flags"].as_u64()), (Some(5), Some(-100), Some(4)));
        assert_eq!(v["detached_by"], "fsmount");
        let unseen = mount_record(SECURITY_MOUNT, 18, |m| put(&mut m.target, "/mnt/y"));
        let v = serde_json::to_value(decode(&read_record(&unseen, "h").unwrap(), &unseen).unwrap()).unwrap();
        assert!(v["detached_by"].is_null(), "an fd not seen made: {v}");
    }

    /// fsmount and open_tree(OPEN_TREE_CLONE) are `detached_mount` events, each with its own fd field.
    #[test]
    fn detached_mounts_carry_their_fd() {
        let fsmount = mount_record(SECURITY_DETACHED_MOUNT, 16, |m| {
            put(&mut m.fstype, "tmpfs");
            m.from_dfd = 3;
            m.base.arg1 = 0x2;
            m.base.ret = 4;
        });
        let v = serde_json::to_value(decode(&read_record(&fsmount, "h").unwrap(), &fsmount).unwrap()).unwrap();
        assert_eq!((v["event"].as_str(), v["syscall"].as_str(), v["fstype"].as_str()), (Some("detached_mount"), Some("fsmount"), Some("tmpfs")));
        assert_eq!((v["fs_fd"].as_i64(), v["attr_flags"].as_u64(), v["result"].as_i64()), (Some(3), Some(2), Some(4)));
        assert!(v.get("dfd").is_none() && v.get("target").is_none(), "{v}");
        let clone = mount_record(SECURITY_DETACHED_MOUNT, 17, |m| {
            put(&mut m.source, "/srv");
            m.from_dfd = -100;
            m.base.arg0 = 1;
        });
        let v = serde_json::to_value(decode(&read_record(&clone, "h").unwrap(), &clone).unwrap()).unwrap();
        assert_eq!((v["event"].as_str(), v["syscall"].as_str(), v["source"].as_str()), (Some("detached_mount"), Some("open_tree"), Some("/srv")));
        assert_eq!(v["dfd"], -100);
        assert!(v.get("fs_fd").is_none() && v.get("attr_flags").is_none(), "{v}");
        let wrong = mount_record(SECURITY_DETACHED_MOUNT, 12, |_| {});
        assert!(decode(&read_record(&wrong, "h").unwrap(), &wrong).is_err(), "mount(2) is never a detached mount");
    }

    #[test]
    fn names() {
        assert_eq!(ptrace_request_name(0x4206), "PTRACE_SEIZE");
        assert_eq!(namespace_names(0x0402_0000), vec!["mnt", "uts"]);
        assert_eq!(capability_name(63), "CAP_63");
    }
}
