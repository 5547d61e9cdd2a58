//! tapio-catalog: the monitors as data. Which programs each monitor has and where each attaches
//! ([`MonitorSpec`], [`ProgramSpec`], [`AttachPoint`]), which programs are alternative paths to
//! one capability ([`GROUPS`], [`ALTERNATIVES`]) or may be missing from a kernel
//! ([`OPTIONAL`]), and what a kernel needs for each ([`needs_of`]). One module per monitor,
//! named as its `.bpf.c`, says its programs and why they attach where they do.
//!
//! Why at the bottom: the runtime loads from it, the plan, the verifier check and the bundle lint
//! judge against it, the agent names monitors and checks configuration with it, and the harness's
//! guest and scenarios read it; none of them should have to build the loader (aya, tokio) to
//! know what a monitor is. So it is plain data and small functions over it.
//!
//! Owns: the catalog of monitors (this module and one module per monitor) and the attach points'
//! kernel features (named as tapio-kernel-gates names them).
//!
//! May import: tapio-kernel-gates. May not import: aya, aya-obj, object, tokio, anyhow, clap, or
//! any other tapio crate. The rules live in one table, `loader/tests/crate_rules.rs`.

pub mod advanced;
pub mod cgroup_watch;
pub mod dns;
pub mod kernel;
pub mod network;
pub mod process;
pub mod security;

use tapio_kernel_gates as gates;

/// Where one program attaches.
#[derive(Debug, Clone, Copy)]
pub enum AttachPoint {
    /// A classic tracepoint, `category/name` under tracefs `events/`.
    TracePoint { category: &'static str, name: &'static str },
    /// A raw tracepoint (4.17+): the tracepoint's own arguments, no tracefs format.
    RawTracePoint { name: &'static str },
    /// fexit on a kernel function (5.5+, needs the kernel's own BTF): arguments and return value.
    Fexit { function: &'static str },
    /// kprobe on a kernel function (needs CONFIG_KPROBES): arguments only.
    Kprobe { function: &'static str },
    /// kretprobe on a kernel function (CONFIG_KPROBES, as kprobes): the return value only.
    Kretprobe { function: &'static str },
    /// cgroup_skb on the cgroup v2 root (4.10+): every packet a local socket sends (egress) or
    /// receives (ingress), in any network namespace; never an unrelated syscall.
    CgroupSkb { egress: bool },
    /// cgroup/sock_create on the cgroup v2 root (4.10+): runs in the process calling socket().
    CgroupSockCreate,
}

impl AttachPoint {
    /// The path as `plan` and the start-up log print it (`tracepoint:sched/sched_process_exec`).
    pub fn describe(&self) -> String {
        match self {
            Self::TracePoint { category, name } => format!("tracepoint:{category}/{name}"),
            Self::RawTracePoint { name } => format!("raw_tracepoint:{name}"),
            Self::Fexit { function } => format!("fexit:{function}"),
            Self::Kprobe { function } => format!("kprobe:{function}"),
            Self::Kretprobe { function } => format!("kretprobe:{function}"),
            Self::CgroupSkb { egress: true } => "cgroup_skb:egress".to_owned(),
            Self::CgroupSkb { egress: false } => "cgroup_skb:ingress".to_owned(),
            Self::CgroupSockCreate => "cgroup_sock:sock_create".to_owned(),
        }
    }

    /// The ELF section the object puts such a program in.
    pub fn section(&self) -> String {
        match self {
            Self::TracePoint { category, name } => format!("tracepoint/{category}/{name}"),
            Self::RawTracePoint { name } => format!("raw_tracepoint/{name}"),
            Self::Fexit { function } => format!("fexit/{function}"),
            Self::Kprobe { function } => format!("kprobe/{function}"),
            Self::Kretprobe { function } => format!("kretprobe/{function}"),
            Self::CgroupSkb { egress: true } => "cgroup_skb/egress".to_owned(),
            Self::CgroupSkb { egress: false } => "cgroup_skb/ingress".to_owned(),
            Self::CgroupSockCreate => "cgroup/sock_create".to_owned(),
        }
    }

    /// The kernel features (tapio_kernel_gates names) this attach point needs, for the skip judge:
    /// what a kernel must lack, or refuse, for the program to be unavailable there.
    pub fn needs(&self) -> &'static [&'static str] {
        match self {
            Self::TracePoint { category: "syscalls", name } if name.ends_with("init_module") => {
                &["syscall tracepoints", "module syscall tracepoints"]
            }
            Self::TracePoint { category: "syscalls", name } if name.ends_with("open_tree_attr") => {
                &["syscall tracepoints", "open_tree_attr syscall"]
            }
            Self::TracePoint { category: "syscalls", name }
                if ["fsopen", "fsconfig", "fsmount", "open_tree", "move_mount"].iter().any(|s| name.ends_with(s)) =>
            {
                &["syscall tracepoints", "new mount API syscalls"]
            }
            Self::TracePoint { category: "syscalls", .. } => &["syscall tracepoints"],
            Self::TracePoint { category: "capability", name: "cap_capable" } => &["cap_capable tracepoint"],
            Self::TracePoint { .. } => &["tracepoint"],
            Self::RawTracePoint { name: "cap_capable" } => &["raw tracepoint", "cap_capable tracepoint"],
            Self::RawTracePoint { .. } => &["raw tracepoint"],
            Self::Fexit { .. } => &["fentry"],
            Self::Kprobe { .. } | Self::Kretprobe { .. } => &["kprobe"],
            Self::CgroupSkb { .. } => &["cgroup skb"],
            Self::CgroupSockCreate => &["cgroup sock"],
        }
    }

    /// [`AttachPoint::needs`] as the judge's one-path [`gates::Needs`].
    pub fn needs_list(&self) -> gates::Needs {
        gates::Needs::all(self.needs())
    }

    /// Whether the program runs on a syscall tracepoint, which puts every syscall of every task
    /// on the tracing slow path while it is attached.
    pub fn is_syscall_tracepoint(&self) -> bool {
        matches!(self, Self::TracePoint { category: "syscalls", .. } | Self::RawTracePoint { name: "sys_enter" | "sys_exit" })
    }
}

/// One way to one capability: programs that only work together.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSet {
    /// As reports show it (`packet`, `syscalls`).
    pub label: &'static str,
    pub programs: &'static [&'static str],
}

/// A capability with alternative sets of programs, best first: the first set whose every program
/// loads and attaches is kept, the rest are not loaded. A set that fails half-way is unloaded
/// whole, so no program of it is left running without its partners.
#[derive(Debug, Clone, Copy)]
pub struct Alternatives {
    pub monitor: &'static str,
    /// The capability's name, as reports show it (`dns_messages`, `udp_flow`).
    pub name: &'static str,
    pub sets: &'static [ProgramSet],
}

/// Every capability with alternative program sets.
pub const ALTERNATIVES: &[Alternatives] = &[dns::MESSAGES, network::UDP_FLOW];

/// The alternatives a program belongs to, and the index of its set.
pub fn alternatives_of(monitor: &str, program: &str) -> Option<(&'static Alternatives, usize)> {
    ALTERNATIVES.iter().filter(|a| a.monitor == monitor).find_map(|a| {
        a.sets.iter().position(|s| s.programs.contains(&program)).map(|i| (a, i))
    })
}

/// Programs that are alternative paths to one capability, tried in order; the first that loads
/// and attaches wins, and the capability is unavailable only when every path is.
#[derive(Debug, Clone, Copy)]
pub struct ProgramGroup {
    pub monitor: &'static str,
    /// The capability's name, as reports show it (`capability`, `connect_attempt`, ...).
    pub name: &'static str,
    /// Program names, best path first.
    pub programs: &'static [&'static str],
}

/// Every group of alternative programs.
pub const GROUPS: &[ProgramGroup] = &[
    security::CAPABILITY_GROUP,
    network::CONNECT_ATTEMPT_GROUP,
    network::ACCEPT_RETURN_GROUP,
    advanced::SYSCALL_GROUP,
];

/// The group a program belongs to, if it is one of several alternative paths.
pub fn group_of(monitor: &str, program: &str) -> Option<&'static ProgramGroup> {
    GROUPS.iter().find(|g| g.monitor == monitor && g.programs.contains(&program))
}

/// Programs a monitor runs without on a kernel that lacks their tracepoints: one capability,
/// left out whole when any of them is missing (an entry without its exit would park records that
/// nothing takes), and reported unavailable under its name with the reason.
#[derive(Debug, Clone, Copy)]
pub struct OptionalPrograms {
    pub monitor: &'static str,
    /// The capability's name, as reports show it (`udp_flow`, `init_module`, ...).
    pub name: &'static str,
    /// Program names; each attaches to a classic tracepoint.
    pub programs: &'static [&'static str],
    /// Why a kernel may lack the tracepoints, for the reason (`built without CONFIG_MODULES`).
    pub missing_when: &'static str,
}

/// Every set of optional programs.
pub const OPTIONAL: &[OptionalPrograms] =
    &[security::INIT_MODULE, security::FINIT_MODULE, security::NEW_MOUNT_API, security::OPEN_TREE_ATTR];

/// Why `set` of `spec` cannot run, if `exists(category, name)` lacks any of its tracepoints.
pub fn optional_unavailable(spec: &MonitorSpec, set: &OptionalPrograms, exists: impl Fn(&str, &str) -> bool) -> Option<String> {
    let missing: Vec<String> = spec
        .programs
        .iter()
        .filter(|p| set.programs.contains(&p.name))
        .filter_map(|p| match p.attach {
            AttachPoint::TracePoint { category, name } if !exists(category, name) => Some(format!("{category}/{name}")),
            _ => None,
        })
        .collect();
    match missing.len() {
        0 => None,
        1 => Some(format!("tracepoint {} does not exist in this kernel ({})", missing[0], set.missing_when)),
        _ => Some(format!("tracepoints {} do not exist in this kernel ({})", missing.join(", "), set.missing_when)),
    }
}

/// One program of a monitor and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub attach: AttachPoint,
}

/// A program on the syscall tracepoint `syscalls/<name>` (`sys_enter_*` / `sys_exit_*`, since
/// 2.6.37 with `CONFIG_FTRACE_SYSCALLS`).
pub const fn syscall(program: &'static str, name: &'static str) -> ProgramSpec {
    ProgramSpec { name: program, attach: AttachPoint::TracePoint { category: "syscalls", name } }
}

/// A monitor: its name (as in `--monitors`) and its programs.
#[derive(Debug, Clone, Copy)]
pub struct MonitorSpec {
    pub name: &'static str,
    pub programs: &'static [ProgramSpec],
}

/// Every monitor `tapio-load` knows.
pub const MONITORS: &[MonitorSpec] = &[process::SPEC, network::SPEC, kernel::SPEC, dns::SPEC, security::SPEC, advanced::SPEC];

/// What the kernel must have for `name` of `spec` to run, where `name` is a program or a
/// capability that `load` may report unavailable: a group of alternative programs (any one path
/// will do), a capability with alternative program sets (any one set, each needing all its
/// programs' features), or a set of optional programs (all of them).
pub fn needs_of(spec: &MonitorSpec, name: &str) -> gates::Needs {
    let attach = |program: &str| spec.programs.iter().find(|p| p.name == program).map(|p| p.attach.needs()).unwrap_or(&[]);
    let union = |programs: &[&str]| {
        let mut all: Vec<String> = Vec::new();
        for f in programs.iter().flat_map(|p| attach(p)) {
            if !all.iter().any(|a| a == f) {
                all.push((*f).to_owned());
            }
        }
        all
    };
    if let Some(g) = GROUPS.iter().find(|g| g.monitor == spec.name && g.name == name) {
        return gates::Needs(g.programs.iter().map(|p| union(&[p])).collect());
    }
    if let Some(a) = ALTERNATIVES.iter().find(|a| a.monitor == spec.name && a.name == name) {
        return gates::Needs(a.sets.iter().map(|s| union(s.programs)).collect());
    }
    if let Some(o) = OPTIONAL.iter().find(|o| o.monitor == spec.name && o.name == name) {
        return gates::Needs(vec![union(o.programs)]);
    }
    gates::Needs(vec![union(&[name])])
}

/// Finds a monitor by name.
pub fn monitor(name: &str) -> Option<&'static MonitorSpec> {
    MONITORS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each capability `load` may report unavailable needs, in the judge's terms: a group
    /// is any of its paths, a set of optional programs all of its features.
    #[test]
    fn unavailable_capabilities_name_their_features() {
        let needs = |monitor: &str, name: &str| needs_of(monitor_spec(monitor), name);
        assert_eq!(needs("network", "connect_attempt"), gates::Needs::any(&[&["fentry"], &["kprobe"]]));
        assert_eq!(needs("network", "accept_return"), gates::Needs::any(&[&["fentry"], &["kprobe"]]));
        assert_eq!(
            needs("security", "init_module"),
            gates::Needs::all(&["syscall tracepoints", "module syscall tracepoints"])
        );
        assert_eq!(
            needs("security", "capability"),
            gates::Needs::any(&[&["raw tracepoint", "cap_capable tracepoint"], &["fentry"], &["kprobe"]])
        );
        assert_eq!(
            needs("security", "new_mount_api"),
            gates::Needs::all(&["syscall tracepoints", "new mount API syscalls"])
        );
        assert_eq!(
            needs("security", "open_tree_attr"),
            gates::Needs::all(&["syscall tracepoints", "open_tree_attr syscall"])
        );
        assert_eq!(needs("network", "udp_flow"), gates::Needs::any(&[&["cgroup sock", "cgroup skb"], &["syscall tracepoints"]]));
        // Every feature any program needs is in the table.
        for m in MONITORS {
            for p in m.programs {
                for f in p.attach.needs() {
                    assert!(gates::gate(f).is_some(), "{}/{}: {f} not in gates::GATES", m.name, p.name);
                }
            }
        }
    }

    fn monitor_spec(name: &str) -> &'static MonitorSpec {
        MONITORS.iter().find(|m| m.name == name).expect("a monitor")
    }

    #[test]
    fn every_optional_program_is_a_tracepoint_of_its_monitor() {
        for set in OPTIONAL {
            let spec = monitor(set.monitor).unwrap_or_else(|| panic!("optional {}: no monitor {}", set.name, set.monitor));
            for name in set.programs {
                let p = spec.programs.iter().find(|p| p.name == *name).unwrap_or_else(|| panic!("optional {}: {name} not in {}", set.name, set.monitor));
                assert!(matches!(p.attach, AttachPoint::TracePoint { .. }), "optional {}: {name} is no tracepoint", set.name);
            }
        }
    }

    /// Each alternative set names programs of its monitor, no program is in two sets, and
    /// every program of a monitor with alternatives is in one set or none of them.
    #[test]
    fn alternative_sets_are_disjoint_programs_of_their_monitor() {
        for alt in ALTERNATIVES {
            let spec = monitor(alt.monitor).unwrap_or_else(|| panic!("{}: no monitor {}", alt.name, alt.monitor));
            let mut seen = Vec::new();
            for set in alt.sets {
                assert!(!set.programs.is_empty(), "{}/{} is empty", alt.name, set.label);
                for name in set.programs {
                    assert!(spec.programs.iter().any(|p| p.name == *name), "{}/{}: {name} not in {}", alt.name, set.label, alt.monitor);
                    assert!(!seen.contains(name), "{}: {name} in two sets", alt.name);
                    seen.push(*name);
                }
            }
        }
    }

    /// The node-tax promise: the dns and network monitors' preferred paths put no syscall on the
    /// tracing slow path; syscall tracepoints are only ever a fallback.
    #[test]
    fn preferred_paths_of_dns_and_network_avoid_syscall_tracepoints() {
        for alt in ALTERNATIVES {
            let spec = monitor(alt.monitor).expect("monitor");
            let best = &alt.sets[0];
            for name in best.programs {
                let p = spec.programs.iter().find(|p| p.name == *name).expect("program");
                assert!(!p.attach.is_syscall_tracepoint(), "{}/{}: {name} is on {}", alt.name, best.label, p.attach.describe());
            }
        }
    }

    /// The other half of the promise: every syscall tracepoint the dns and network monitors
    /// carry is in a fallback set, never in a preferred one nor outside any set.
    #[rstest::rstest]
    fn syscall_tracepoints_of_dns_and_network_are_only_fallbacks(#[values(&dns::SPEC, &network::SPEC)] m: &MonitorSpec) {
        for p in m.programs.iter().filter(|p| p.attach.is_syscall_tracepoint()) {
            let (_, set) = alternatives_of(m.name, p.name).unwrap_or_else(|| panic!("{} is a syscall tracepoint outside any fallback", p.name));
            assert!(set > 0, "{} is a syscall tracepoint in a preferred set", p.name);
        }
    }

    /// One missing tracepoint is enough to leave the whole set out.
    #[test]
    fn one_missing_tracepoint_leaves_the_set_out() {
        let why = optional_unavailable(&security::SPEC, &security::INIT_MODULE, |_: &str, name: &str| name != "sys_exit_init_module")
            .expect("init_module unavailable");
        assert_eq!(why, "tracepoint syscalls/sys_exit_init_module does not exist in this kernel (built without CONFIG_MODULES: no module can be loaded)");
    }

    /// The new mount API is left out whole when any of its tracepoints is missing.
    #[test]
    fn a_kernel_without_move_mount_leaves_the_new_mount_api_out() {
        let why = optional_unavailable(&security::SPEC, &security::NEW_MOUNT_API, |_: &str, name: &str| !name.contains("move_mount"))
            .expect("new_mount_api unavailable");
        assert!(why.starts_with("tracepoints syscalls/sys_exit_move_mount, syscalls/sys_enter_move_mount do not exist"), "{why}");
        assert!(optional_unavailable(&security::SPEC, &security::NEW_MOUNT_API, |_: &str, _: &str| true).is_none());
    }

    #[test]
    fn every_group_program_is_in_its_monitor() {
        for g in GROUPS {
            let spec = monitor(g.monitor).unwrap_or_else(|| panic!("group {}: no monitor {}", g.name, g.monitor));
            for name in g.programs {
                assert!(spec.programs.iter().any(|p| p.name == *name), "group {}: {name} not in {}", g.name, g.monitor);
            }
        }
    }
}
