//! The security monitor: credential changes, ptrace and process_vm_writev, setns and unshare,
//! mounts (`mount(2)` and the new mount API) and module loads, each flagged `in_container`
//! (probes/security.bpf.c).
//!
//! Needs only syscall tracepoints: `syscalls/sys_enter_*` and `sys_exit_*` exist since 2.6.37
//! (<https://github.com/torvalds/linux/blob/v2.6.37/include/trace/events/syscalls.h>, with
//! `CONFIG_FTRACE_SYSCALLS`); user memory is read with `bpf_probe_read_user` (5.5,
//! <https://github.com/torvalds/linux/commit/6ae08ae3dea2cfa03dd3665a3c8475c2d429ef47>). No loops
//! and no global data. The tracepoints do not fire for 32-bit compat syscalls on a 64-bit kernel.
//!
//! The new mount API ([`NEW_MOUNT_API`], 5.2+; util-linux 2.39+ mounts with it): `move_mount`
//! is reported as a `mount` event with its target path and, when the mount came from an fd this
//! monitor saw made, the source and fstype of that mount and the syscall that made it (`fsmount`
//! after `fsopen`/`fsconfig`, or `open_tree(OPEN_TREE_CLONE)`: a bind mount). `fsmount` and
//! `open_tree(OPEN_TREE_CLONE)` are reported as `detached_mount` events: such a mount is usable
//! through its fd without ever being attached. `open_tree_attr` (6.15+) is [`OPEN_TREE_ATTR`].
//! `mount_setattr` (5.12+, changes the attributes of mounts already there) is not watched.
//!
//! `capability` events: from the `capability:cap_capable` tracepoint where the kernel has it
//! (6.14+, traced at the end of `cap_capable()` with its verdict;
//! <https://github.com/torvalds/linux/blob/v6.14/include/trace/events/capability.h>), attached as
//! a raw tracepoint (4.17+: no perf buffer is filled before the program runs); else fexit (5.5+,
//! with the verdict; <https://github.com/torvalds/linux/commit/fec56f5890d93fc2ed74166c397dc186b1c25951>);
//! else a kprobe (no verdict). The three build the same record; the tracepoint alone lacks
//! `cap_capable()`'s `opts`, and says so (`opts_known: false`). [`CAPABILITY_GROUP`] lists them
//! best first; the tracepoint costs nothing where no capability is checked, where fexit and kprobe
//! patch the function. On a kernel with none of the three the loader reports the capability events
//! unavailable with each reason and runs the rest.
//!
//! What the syscall tracepoints cost, and why they stay: attaching any `syscalls/*` tracepoint
//! sets `TIF_SYSCALL_TRACEPOINT` on every task, which sends every syscall of the node through the
//! slow entry path (measured on 6.18 by `benches/node_tax.rs`: +85 ns per `getppid`, +44 ns per
//! `dd` read or write, whatever the syscall). The hooks that would avoid it do not cover these
//! events here: no subsystem tracepoint fires for setuid/capset/ptrace/process_vm_writev/setns/
//! unshare/mount; `module:module_load` fires only for a module that loaded (a refused
//! `init_module`, the interesting case, is not seen; and this project's CI host has no module
//! support at all); BPF-LSM hooks (`task_fix_setuid`, `capset`, `ptrace_access_check`,
//! `sb_mount`, `kernel_load_data`) and fentry need BPF trampolines, which that host refuses
//! (EPERM at load, while `tp_btf` loads), and it has no kprobes. A kernel that allows BPF-LSM
//! could take those paths first through [`crate::ProgramGroup`]s, as `capability` does; that is
//! not done yet. The new mount API's tracepoints add no slow path of their own: the monitor has
//! put every syscall on it already, and past it the kernel runs a syscall's programs only when
//! that syscall's bit is set (`perf_syscall_enter` in kernel/trace/trace_syscalls.c), so other
//! syscalls pay nothing for them; `fsconfig`, the one called per mount option, returns at once
//! unless it sets a `source` on a context this monitor saw made.
//!
//! The loader writes the initial mount namespace into the `security_config` map after load
//! (tapio-runtime's `monitors::security`); the probe compares each caller's against it.


use crate::{AttachPoint, MonitorSpec, ProgramSpec};

/// The alternative paths to `capability` events, best first.
pub const CAPABILITY_GROUP: crate::ProgramGroup = crate::ProgramGroup {
    monitor: "security",
    name: "capability",
    programs: &["sec_capable_tp", "sec_capable_fexit", "sec_capable_kprobe"],
};

/// `init_module` events: a kernel built without `CONFIG_MODULES` has no `init_module` syscall
/// (it is `sys_ni_syscall`), hence no tracepoints, and no module can be loaded there at all. The
/// rest of the monitor runs without them.
pub const INIT_MODULE: crate::OptionalPrograms = crate::OptionalPrograms {
    monitor: "security",
    name: "init_module",
    programs: &["sec_exit_init_module", "sec_enter_init_module"],
    missing_when: "built without CONFIG_MODULES: no module can be loaded",
};

/// `finit_module` events, as [`INIT_MODULE`].
pub const FINIT_MODULE: crate::OptionalPrograms = crate::OptionalPrograms {
    monitor: "security",
    name: "finit_module",
    programs: &["sec_exit_finit_module", "sec_enter_finit_module"],
    missing_when: "built without CONFIG_MODULES: no module can be loaded",
};

/// The new mount API: `fsopen`, `fsconfig`, `fsmount`, `open_tree` and `move_mount`, all added
/// in 5.2 (<https://github.com/torvalds/linux/blob/v5.2/fs/fsopen.c>,
/// <https://github.com/torvalds/linux/blob/v5.2/fs/namespace.c>). A kernel without them (or
/// without their tracepoints) mounts through `mount(2)` only, which the rest of the monitor
/// watches. `fsopen` and `fsconfig` send nothing: they fill what the monitor remembers of an fs
/// context (its fstype, and the `source` the kernel took).
pub const NEW_MOUNT_API: crate::OptionalPrograms = crate::OptionalPrograms {
    monitor: "security",
    name: "new_mount_api",
    programs: &[
        "sec_exit_fsopen",
        "sec_exit_fsconfig",
        "sec_exit_fsmount",
        "sec_exit_open_tree",
        "sec_exit_move_mount",
        "sec_enter_fsopen",
        "sec_enter_fsconfig",
        "sec_enter_fsmount",
        "sec_enter_open_tree",
        "sec_enter_move_mount",
    ],
    missing_when: "the new mount API is 5.2+: before it, mounts are made with mount(2) alone",
};

/// `open_tree_attr` (6.15+, <https://github.com/torvalds/linux/blob/v6.15/fs/namespace.c>):
/// `open_tree` with mount attributes set on the copy, reported as `open_tree` is.
pub const OPEN_TREE_ATTR: crate::OptionalPrograms = crate::OptionalPrograms {
    monitor: "security",
    name: "open_tree_attr",
    programs: &["sec_exit_open_tree_attr", "sec_enter_open_tree_attr"],
    missing_when: "open_tree_attr is 6.15+: before it, detached bind mounts are made with open_tree alone",
};

/// The security monitor's programs. Exits come first so that a record parked by an entry always
/// has its exit attached.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "security",
    programs: &[
        enter("sec_exit_setuid", "sys_exit_setuid"),
        enter("sec_exit_setgid", "sys_exit_setgid"),
        enter("sec_exit_setreuid", "sys_exit_setreuid"),
        enter("sec_exit_setregid", "sys_exit_setregid"),
        enter("sec_exit_setresuid", "sys_exit_setresuid"),
        enter("sec_exit_setresgid", "sys_exit_setresgid"),
        enter("sec_exit_capset", "sys_exit_capset"),
        enter("sec_exit_ptrace", "sys_exit_ptrace"),
        enter("sec_exit_process_vm_writev", "sys_exit_process_vm_writev"),
        enter("sec_exit_setns", "sys_exit_setns"),
        enter("sec_exit_unshare", "sys_exit_unshare"),
        enter("sec_exit_mount", "sys_exit_mount"),
        enter("sec_exit_init_module", "sys_exit_init_module"),
        enter("sec_exit_finit_module", "sys_exit_finit_module"),
        enter("sec_exit_fsopen", "sys_exit_fsopen"),
        enter("sec_exit_fsconfig", "sys_exit_fsconfig"),
        enter("sec_exit_fsmount", "sys_exit_fsmount"),
        enter("sec_exit_open_tree", "sys_exit_open_tree"),
        enter("sec_exit_open_tree_attr", "sys_exit_open_tree_attr"),
        enter("sec_exit_move_mount", "sys_exit_move_mount"),
        enter("sec_enter_setuid", "sys_enter_setuid"),
        enter("sec_enter_setgid", "sys_enter_setgid"),
        enter("sec_enter_setreuid", "sys_enter_setreuid"),
        enter("sec_enter_setregid", "sys_enter_setregid"),
        enter("sec_enter_setresuid", "sys_enter_setresuid"),
        enter("sec_enter_setresgid", "sys_enter_setresgid"),
        enter("sec_enter_capset", "sys_enter_capset"),
        enter("sec_enter_ptrace", "sys_enter_ptrace"),
        enter("sec_enter_process_vm_writev", "sys_enter_process_vm_writev"),
        enter("sec_enter_setns", "sys_enter_setns"),
        enter("sec_enter_unshare", "sys_enter_unshare"),
        enter("sec_enter_mount", "sys_enter_mount"),
        enter("sec_enter_init_module", "sys_enter_init_module"),
        enter("sec_enter_finit_module", "sys_enter_finit_module"),
        enter("sec_enter_fsopen", "sys_enter_fsopen"),
        enter("sec_enter_fsconfig", "sys_enter_fsconfig"),
        enter("sec_enter_fsmount", "sys_enter_fsmount"),
        enter("sec_enter_open_tree", "sys_enter_open_tree"),
        enter("sec_enter_open_tree_attr", "sys_enter_open_tree_attr"),
        enter("sec_enter_move_mount", "sys_enter_move_mount"),
        ProgramSpec { name: "sec_capable_tp", attach: AttachPoint::RawTracePoint { name: "cap_capable" } },
        ProgramSpec { name: "sec_capable_fexit", attach: AttachPoint::Fexit { function: "cap_capable" } },
        ProgramSpec { name: "sec_capable_kprobe", attach: AttachPoint::Kprobe { function: "cap_capable" } },
    ],
};

/// A program on the syscall tracepoint `syscalls/<name>`.
const fn enter(program: &'static str, name: &'static str) -> ProgramSpec {
    ProgramSpec { name: program, attach: AttachPoint::TracePoint { category: "syscalls", name } }
}
