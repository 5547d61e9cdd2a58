//! The kernel features tapio's programs and checks depend on, and the one judge of a skip.
//!
//! Each feature ([`Gate`]) has a name, the first upstream kernel that has it, and the config
//! options without which a kernel of any version lacks it. Anything that cannot run (a program
//! reported unavailable, a skipped check, a skipped host test) names what it [`Needs`]; [`judge`]
//! then decides, from facts of the running kernel ([`KernelFacts`]), whether the kernel explains
//! it. As cilium/ebpf's `checkVersion` does: on a kernel at or above the feature's first version, a
//! skip is a failure unless the kernel explains it, and an explanation is always one of
//! [`Explanation`]'s facts:
//!
//! * the kernel is older than the feature ([`Explanation::BelowVersion`]);
//! * a config option the feature needs is off in the kernel's own config
//!   ([`Explanation::ConfigOff`]);
//! * a minimal probe of the feature, run as root, was refused with a permission error
//!   ([`Explanation::RuntimeRefusal`]): lockdown, an LSM or a sysctl says no. That is policy, not a
//!   missing feature, and the two stay distinct ([`ProbeAnswer::Refused`] against
//!   [`ProbeAnswer::Unsupported`]).
//!
//! The table is data and this crate decides only: the probes themselves are tapio-features'
//! `features` module, which takes its names and versions from here; the guest agent, the
//! harness's report and the host tests' skip helper all judge through [`judge`].
//!
//! Owns: the feature table ([`GATES`]), [`Needs`], the kernel's facts, [`judge`], and the one
//! [`Arch`] type every crate names an architecture with (module `arch`). May import:
//! serde and flate2 only (it reads `/proc/config.gz`). May not import: any other tapio crate,
//! aya, aya-obj, object, tokio or anyhow, so the harness and the protocol crate can share it. The
//! rules live in one table, `loader/tests/crate_rules.rs`.

use std::{collections::BTreeMap, fmt, io::Read as _, path::Path};

use serde::{Deserialize, Serialize};

mod arch;
pub use arch::{Arch, UnknownArch};

// ---------------------------------------------------------------------------------------------
// Versions.

/// A kernel version, `major.minor.patch`, as parsed from a release string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    /// `major.minor.0`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor, patch: 0 }
    }

    /// The leading `a.b[.c]` of a release (`6.1.0-50-cloud-amd64`, `7.3.4+deb13-cloud-amd64`,
    /// `5.8`); `None` without at least `a.b`.
    pub fn parse(release: &str) -> Option<Self> {
        let head = release.trim().split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
        let mut parts = head.split('.').map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(Self { major, minor, patch })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a kernel version: {s}")))
    }
}

// ---------------------------------------------------------------------------------------------
// The table.

/// One kernel feature: its name, the first upstream version that has it, and the config options
/// it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Stable, human-readable name: the key of [`gate`], of tapio-load's `features::probe` (for
    /// the probed ones) and of every [`Needs`].
    pub name: &'static str,
    /// First upstream kernel (x86-64) that has it, `major.minor`.
    pub since: &'static str,
    /// Options that must be on (`y` or `m`) for any kernel to have it: one of them off in the
    /// kernel's config explains the feature's absence.
    pub config: &'static [&'static str],
    /// Where `since` comes from: the upstream commit (title, and hash where recorded) or release.
    pub source: &'static str,
}

impl Gate {
    /// [`Gate::since`] as a version (every entry parses: a unit test says so).
    pub fn version(&self) -> KernelVersion {
        KernelVersion::parse(self.since).unwrap_or(KernelVersion::new(0, 0))
    }

    /// The first version on `arch`: [`ARCH_SINCE`]'s entry where the architecture got the
    /// feature later than x86-64, else [`Gate::version`]. An unknown architecture is judged by
    /// x86-64's versions.
    pub fn version_on(&self, arch: Option<Arch>) -> KernelVersion {
        ARCH_SINCE
            .iter()
            .find(|a| a.gate == self.name && Some(a.arch) == arch)
            .and_then(|a| KernelVersion::parse(a.since))
            .unwrap_or_else(|| self.version())
    }
}

/// A feature that came to an architecture later than to x86-64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchSince {
    pub gate: &'static str,
    pub arch: Arch,
    pub since: &'static str,
    pub source: &'static str,
}

/// Where an architecture's first version differs from [`Gate::since`] (x86-64's).
pub const ARCH_SINCE: &[ArchSince] = &[
    // arm64 has had a BPF trampoline since 6.0 ("bpf, arm64: Add bpf trampoline for arm64",
    // efc9909fdce0), but attaching it to a kernel function needs ftrace direct calls, which
    // arm64 gained in 6.4; before that the attach fails with ENOTSUPP (seen on Debian's
    // 6.1 cloud-arm64 kernel in the matrix).
    ArchSince { gate: "fentry", arch: Arch::Arm64, since: "6.4", source: "6.4: \"arm64: ftrace: Add direct call support\" (2aa6ac03516d)" },
    // BPF LSM programs attach through the same trampoline.
    ArchSince { gate: "lsm", arch: Arch::Arm64, since: "6.4", source: "6.4: \"arm64: ftrace: Add direct call support\" (2aa6ac03516d)" },
];

const fn g(name: &'static str, since: &'static str, config: &'static [&'static str], source: &'static str) -> Gate {
    Gate { name, since, config, source }
}

/// Every feature, probed or not. The first block is tapio-load's probes (`features::PROBES`, in
/// its order); the second is what programs and checks need besides.
pub const GATES: &[Gate] = &[
    // --- probed by tapio-load `features`.
    g("perf event array", "4.3", &["CONFIG_BPF_EVENTS"], "4.3: \"bpf: introduce BPF_MAP_TYPE_PERF_EVENT_ARRAY map\""),
    g("bpf_perf_event_output", "4.4", &["CONFIG_BPF_EVENTS"], "4.4: \"bpf: introduce bpf_perf_event_output() helper\""),
    g("xdp", "4.8", &[], "4.8: \"bpf: add XDP prog type for early driver filter\""),
    g("lru hash", "4.10", &[], "4.10: \"bpf: Add BPF_MAP_TYPE_LRU_HASH\""),
    g("generic xdp", "4.12", &[], "4.12: \"net: Generic XDP\""),
    g("bpf_redirect_map", "4.14", &[], "4.14: \"bpf: add bpf_redirect_map helper routine\""),
    g("cpumap", "4.15", &[], "4.15: \"bpf: introduce new bpf cpu map type BPF_MAP_TYPE_CPUMAP\""),
    g("bpf-to-bpf calls", "4.16", &[], "4.16: \"bpf: introduce function calls (function boundaries)\""),
    g("raw tracepoint", "4.17", &["CONFIG_BPF_EVENTS"], "4.17: \"bpf: introduce BPF_RAW_TRACEPOINT\" (c4f6699dfcb8)"),
    g("btf", "4.18", &[], "4.18: \"bpf: btf: Introduce BPF Type Format (BTF)\""),
    g("btf func info", "5.0", &[], "5.0: \"bpf: Introduce bpf_func_info\""),
    g("btf var+datasec", "5.2", &[], "5.2: \"bpf: add bpf support for BTF_KIND_VAR and BTF_KIND_DATASEC\""),
    g("large programs", "5.2", &[], "5.2: \"bpf: increase complexity limit and maximum program size\""),
    g("global data", "5.2", &[], "5.2: \"bpf: implement lookup-free direct value access for maps\""),
    g("bounded loops", "5.3", &[], "5.3: \"bpf: introduce bounded loops\""),
    g("vmlinux btf", "5.4", &["CONFIG_DEBUG_INFO_BTF"], "5.4: \"btf: expose BTF info through sysfs\" (341dfcf8d78e)"),
    g("bpf_probe_read_kernel", "5.5", &[], "5.5: \"bpf: Add probe_read_{user, kernel} and probe_read_{user, kernel}_str helpers\""),
    // x86-64 first (arm64 only in 6.0). The trampoline replaces the `__fentry__` call that
    // CONFIG_FUNCTION_TRACER compiles into every function; the target's type comes from
    // vmlinux BTF; the trampoline is JITed.
    g(
        "fentry",
        "5.5",
        &["CONFIG_DEBUG_INFO_BTF", "CONFIG_BPF_JIT", "CONFIG_FUNCTION_TRACER"],
        "5.5: \"bpf: Introduce BPF trampoline\" (fec56f5890d9)",
    ),
    g("tp_btf", "5.5", &["CONFIG_DEBUG_INFO_BTF"], "5.5: \"bpf: attach raw_tp program with BTF via type name\""),
    g("lsm", "5.7", &["CONFIG_BPF_LSM"], "5.7: \"bpf: Introduce BPF_PROG_TYPE_LSM\""),
    // The probe links a cgroup_skb program: bpf_link for cgroups.
    g("bpf_link", "5.7", &["CONFIG_CGROUP_BPF"], "5.7: \"bpf: Implement bpf_link-based cgroup BPF program attachment\" (af6eea57437a)"),
    g("ring buffer", "5.8", &[], "5.8: \"bpf: Implement BPF ring buffer and verifier support for it\" (457f44363a88)"),
    g("bpf_ktime_get_boot_ns", "5.8", &[], "5.8: \"bpf: add bpf_ktime_get_boot_ns()\""),
    g("cpumap program", "5.9", &[], "5.9: \"cpumap: add the possibility to attach an eBPF program to cpumap\""),
    g("module btf", "5.11", &["CONFIG_DEBUG_INFO_BTF_MODULES"], "5.11: \"bpf: Load and verify kernel module BTFs\""),
    g("bpf_get_current_task_btf", "5.11", &["CONFIG_DEBUG_INFO_BTF"], "5.11: \"bpf: Add bpf_get_current_task_btf helper\""),
    g("bloom filter", "5.16", &[], "5.16: \"bpf: Add bloom filter map implementation\""),
    g("bpf_loop", "5.17", &[], "5.17: \"bpf: Add bpf_loop helper\""),
    g("kprobe_multi", "5.18", &["CONFIG_FPROBE"], "5.18: \"bpf: Add multi kprobe link\""),
    // kretprobes come with kprobes: one gate for both. The probe opens a kprobe perf event.
    g(
        "kprobe",
        "4.1",
        &["CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS"],
        "4.1: \"tracing, perf: Implement BPF programs attached to kprobes\" (2541517c32be)",
    ),
    // --- needed by programs and checks, not probed.
    g("tracepoint", "4.7", &["CONFIG_BPF_EVENTS"], "4.7: \"perf, bpf: allow bpf programs attach to tracepoints\" (98b5c2c65c29)"),
    // syscalls/sys_enter_* and sys_exit_* exist only with CONFIG_FTRACE_SYSCALLS.
    g(
        "syscall tracepoints",
        "4.7",
        &["CONFIG_BPF_EVENTS", "CONFIG_FTRACE_SYSCALLS"],
        "4.7: \"perf, bpf: allow bpf programs attach to tracepoints\" (98b5c2c65c29)",
    ),
    // init_module and finit_module exist (and so do their syscall tracepoints) only with
    // CONFIG_MODULES.
    g(
        "module syscall tracepoints",
        "4.7",
        &["CONFIG_BPF_EVENTS", "CONFIG_FTRACE_SYSCALLS", "CONFIG_MODULES"],
        "4.7: \"perf, bpf: allow bpf programs attach to tracepoints\" (98b5c2c65c29)",
    ),
    // fsopen, fsconfig, fsmount, open_tree and move_mount (and so their syscall tracepoints)
    // came together in 5.2.
    g(
        "new mount API syscalls",
        "5.2",
        &["CONFIG_BPF_EVENTS", "CONFIG_FTRACE_SYSCALLS"],
        "5.2: \"vfs: syscall: Add move_mount(2) to move mounts around\" (2db154b3ea8e)",
    ),
    g(
        "open_tree_attr syscall",
        "6.15",
        &["CONFIG_BPF_EVENTS", "CONFIG_FTRACE_SYSCALLS"],
        "6.15: \"fs: add open_tree_attr()\"",
    ),
    g("cap_capable tracepoint", "6.14", &["CONFIG_BPF_EVENTS"], "6.14: \"capability: add trace event for cap_capable\""),
    g("cgroup skb", "4.10", &["CONFIG_CGROUP_BPF"], "4.10: \"bpf: add new prog type for cgroup socket filtering\" (0e33661de493)"),
    g("cgroup sock", "4.10", &["CONFIG_CGROUP_BPF"], "4.10: \"bpf: Add new cgroup attach type to enable sock modifications\""),
    g(
        "bpf_get_current_cgroup_id",
        "4.18",
        &["CONFIG_CGROUPS"],
        "4.18: \"bpf: implement bpf_get_current_cgroup_id() helper\" (bf6fa2c893c5)",
    ),
    // The veth pairs of the packet-path scenarios.
    g("veth", "2.6", &["CONFIG_VETH"], "2.6.24: \"[VETH]: Core implementation\""),
];

/// The feature called `name`.
pub fn gate(name: &str) -> Option<&'static Gate> {
    GATES.iter().find(|g| g.name == name)
}

// ---------------------------------------------------------------------------------------------
// Needs.

/// What a program, a capability or a check needs: any one of the paths, each of which needs all
/// of its features. `[["fentry"], ["kprobe"]]` is "fentry, or else kprobes";
/// `[["syscall tracepoints", "module syscall tracepoints"]]` is one path with two features.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Needs(pub Vec<Vec<String>>);

impl Needs {
    /// One path needing every feature of `features`.
    pub fn all(features: &[&str]) -> Self {
        Self(vec![features.iter().map(|f| (*f).to_owned()).collect()])
    }

    /// One feature.
    pub fn one(feature: &str) -> Self {
        Self::all(&[feature])
    }

    /// Alternative paths, any of which would do.
    pub fn any(paths: &[&[&str]]) -> Self {
        Self(paths.iter().map(|p| p.iter().map(|f| (*f).to_owned()).collect()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }
}

impl fmt::Display for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<String> = self.0.iter().map(|p| p.join(" + ")).collect();
        f.write_str(&paths.join(" or "))
    }
}

// ---------------------------------------------------------------------------------------------
// Facts of the kernel.

/// A kernel's build configuration: `CONFIG_X=value` lines; `# CONFIG_X is not set` and options
/// not listed at all (their dependencies are off) are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    options: BTreeMap<String, String>,
    /// Where it was read from, for the report.
    pub source: String,
}

impl KernelConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str, source: impl Into<String>) -> Self {
        let options = text
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .filter(|(k, _)| k.starts_with("CONFIG_"))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Self { options, source: source.into() }
    }

    /// Reads a config file, gzip-compressed (`/proc/config.gz`) or plain.
    pub fn read(path: &Path) -> Result<Self, std::io::Error> {
        let bytes = std::fs::read(path)?;
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut s)?;
            s
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Ok(Self::parse(&text, path.display().to_string()))
    }

    /// The running kernel's config: `/proc/config.gz` (CONFIG_IKCONFIG_PROC), else
    /// `/boot/config-<release>` as distributions install it; `None` when neither is readable.
    pub fn running(release: &str) -> Option<Self> {
        [std::path::PathBuf::from("/proc/config.gz"), Path::new("/boot").join(format!("config-{release}"))]
            .iter()
            .find_map(|p| Self::read(p).ok())
    }

    /// Whether `option` is built in or a module.
    pub fn is_on(&self, option: &str) -> bool {
        matches!(self.options.get(option).map(String::as_str), Some("y" | "m"))
    }
}

/// What a feature's minimal probe, run as root, answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ProbeAnswer {
    /// The minimal program loaded (or the map was created, the link made).
    Supported,
    /// The kernel's own "not supported" (unknown map or program type, unknown helper, ...).
    Unsupported { reason: String },
    /// A permission error as root (`EPERM`/`EACCES`): policy refuses what the kernel has
    /// (lockdown, an LSM, a sysctl). Not "unsupported".
    Refused { errno: i32, message: String },
    /// Any other error: the probe could not decide.
    Failed { errno: i32, message: String },
}

/// What is known about one kernel: its version, its config, and its features' probe answers.
#[derive(Debug, Clone, Default)]
pub struct KernelFacts {
    pub running: Option<KernelVersion>,
    /// The kernel's architecture, for [`ARCH_SINCE`]; `None` judges by x86-64's versions.
    pub arch: Option<Arch>,
    /// `None` when the kernel's config could not be had: then no option explains anything.
    pub config: Option<KernelConfig>,
    /// Probe answers by feature name; only a root process's answers belong here.
    pub probes: BTreeMap<String, ProbeAnswer>,
}

// ---------------------------------------------------------------------------------------------
// The judge.

/// A fact of the kernel that explains why a feature is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Explanation {
    /// The kernel is older than the feature's first version.
    BelowVersion { need: KernelVersion, running: KernelVersion },
    /// A config option the feature needs is off in the kernel's config.
    ConfigOff { option: String },
    /// The feature's minimal probe, as root, was refused with a permission error.
    RuntimeRefusal { probe: String, errno: i32 },
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BelowVersion { need, running } => write!(f, "requires >= {need}, running {running}"),
            Self::ConfigOff { option } => write!(f, "{option} is off in the kernel's config"),
            Self::RuntimeRefusal { probe, errno } => {
                write!(f, "runtime policy refuses {probe}: {} from its minimal probe as root", errno_name(*errno))
            }
        }
    }
}

/// One path of a [`Needs`], explained: the feature it lacks and the fact that says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excuse {
    pub feature: String,
    pub explanation: Explanation,
}

impl fmt::Display for Excuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.feature, self.explanation)
    }
}

/// The judge's answer for one skip or unavailable program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "judgement", rename_all = "snake_case")]
pub enum Judgement {
    /// Every path is explained by the kernel, one excuse per path: the skip stands.
    Explained { excuses: Vec<Excuse> },
    /// Nothing explains it: the skip fails.
    Unexplained { why: String },
}

impl Judgement {
    pub fn is_explained(&self) -> bool {
        matches!(self, Self::Explained { .. })
    }
}

impl fmt::Display for Judgement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explained { excuses } => {
                let all: Vec<String> = excuses.iter().map(ToString::to_string).collect();
                write!(f, "explained: {}", all.join("; "))
            }
            Self::Unexplained { why } => write!(f, "UNEXPLAINED: {why}"),
        }
    }
}

/// Decides whether the kernel of `facts` explains that `needs` cannot be met. Each path is
/// explained by the first of its features the kernel is too old for, has configured off, or
/// refuses at run time; all paths must be explained. A need naming no feature, an unknown
/// feature, or an unknown kernel version is unexplained.
pub fn judge(needs: &Needs, facts: &KernelFacts) -> Judgement {
    if needs.is_empty() {
        return Judgement::Unexplained { why: "names no kernel feature it depends on".to_owned() };
    }
    let Some(running) = facts.running else {
        return Judgement::Unexplained { why: "the kernel's version is unknown".to_owned() };
    };
    let mut excuses = Vec::new();
    for path in &needs.0 {
        let mut problems = Vec::new();
        let mut excuse = None;
        for name in path {
            let Some(gate) = gate(name) else {
                problems.push(format!("unknown kernel feature `{name}`"));
                continue;
            };
            match explain(gate, running, facts) {
                Ok(e) => {
                    excuse = Some(Excuse { feature: gate.name.to_owned(), explanation: e });
                    break;
                }
                Err(why) => problems.push(why),
            }
        }
        match excuse {
            Some(e) => excuses.push(e),
            None => return Judgement::Unexplained { why: problems.join("; ") },
        }
    }
    Judgement::Explained { excuses }
}

/// The fact that explains `gate` missing on `running`, or why there is none.
fn explain(gate: &Gate, running: KernelVersion, facts: &KernelFacts) -> Result<Explanation, String> {
    let need = gate.version_on(facts.arch);
    if running < need {
        return Ok(Explanation::BelowVersion { need, running });
    }
    if let Some(option) = facts.config.as_ref().and_then(|c| gate.config.iter().find(|o| !c.is_on(o))) {
        return Ok(Explanation::ConfigOff { option: (*option).to_owned() });
    }
    let probe = facts.probes.get(gate.name);
    if let Some(ProbeAnswer::Refused { errno, .. }) = probe {
        return Ok(Explanation::RuntimeRefusal { probe: gate.name.to_owned(), errno: *errno });
    }
    let config = match (&facts.config, gate.config.is_empty()) {
        (None, _) => "config unknown".to_owned(),
        (Some(_), true) => "no config option gates it".to_owned(),
        (Some(c), false) => format!("{} on in {}", gate.config.join(", "), c.source),
    };
    let probe = match probe {
        None => "not probed".to_owned(),
        Some(ProbeAnswer::Supported) => "probe: supported".to_owned(),
        Some(ProbeAnswer::Unsupported { reason }) => format!("probe: unsupported ({reason})"),
        Some(ProbeAnswer::Refused { .. }) => unreachable!("handled above"),
        Some(ProbeAnswer::Failed { errno, message }) => format!("probe failed ({}): {message}", errno_name(*errno)),
    };
    Err(format!("{} is in every kernel since {need} (running {running}) and nothing explains its absence ({config}; {probe})", gate.name))
}

/// `EPERM` for 1, and so on for the errnos a probe meets.
pub fn errno_name(errno: i32) -> String {
    match errno {
        1 => "EPERM".into(),
        2 => "ENOENT".into(),
        9 => "EBADF".into(),
        13 => "EACCES".into(),
        14 => "EFAULT".into(),
        16 => "EBUSY".into(),
        22 => "EINVAL".into(),
        28 => "ENOSPC".into(),
        95 => "EOPNOTSUPP".into(),
        524 => "ENOTSUPP".into(),
        n => format!("errno {n}"),
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const EPERM: i32 = 1;

    fn facts(running: &str, config: Option<&str>, probes: &[(&str, ProbeAnswer)]) -> KernelFacts {
        KernelFacts {
            running: KernelVersion::parse(running),
            arch: None,
            config: config.map(|c| KernelConfig::parse(c, "test config")),
            probes: probes.iter().map(|(n, a)| ((*n).to_owned(), a.clone())).collect(),
        }
    }

    /// A Debian-like config: everything on but kprobes, fprobe and modules, as on this project's
    /// CI host.
    const HOST_LIKE: &str = "CONFIG_BPF_EVENTS=y\nCONFIG_DEBUG_INFO_BTF=y\nCONFIG_BPF_JIT=y\nCONFIG_FUNCTION_TRACER=y\n\
        # CONFIG_KPROBES is not set\n# CONFIG_MODULES is not set\nCONFIG_FTRACE_SYSCALLS=y\nCONFIG_CGROUP_BPF=y\nCONFIG_VETH=m\n";

    fn refused() -> ProbeAnswer {
        ProbeAnswer::Refused { errno: EPERM, message: "prog load: Operation not permitted".into() }
    }

    /// arm64 attaches fentry only from 6.4: on 6.1 the same ENOTSUPP that fails an x86 row is
    /// explained there by the version; on 6.12 nothing explains it on either architecture.
    #[test]
    fn arm64_fentry_is_judged_by_arm64s_first_version() {
        let unsupported = || vec![("fentry", ProbeAnswer::Unsupported { reason: "attach: os error 524".into() })];
        let on = |arch, release: &str| {
            let mut f = facts(release, Some(HOST_LIKE), &unsupported());
            f.arch = arch;
            judge(&Needs::one("fentry"), &f)
        };
        let arm = on(Some(Arch::Arm64), "6.1.0-50-cloud-arm64");
        assert_eq!(arm.to_string(), "explained: fentry: requires >= 6.4, running 6.1");
        assert!(!on(Some(Arch::X86_64), "6.1.0-50-cloud-amd64").is_explained());
        assert!(!on(None, "6.1.0").is_explained(), "an unknown architecture is judged as x86-64");
        assert!(!on(Some(Arch::Arm64), "6.12.117").is_explained());
        assert!(ARCH_SINCE.iter().all(|a| gate(a.gate).is_some_and(|g| KernelVersion::parse(a.since).is_some_and(|v| v > g.version()))));
    }

    #[test]
    fn every_gate_has_a_version_a_source_and_a_unique_name() {
        let mut names: Vec<_> = GATES.iter().map(|g| g.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GATES.len(), "duplicate gate names");
        for g in GATES {
            assert!(KernelVersion::parse(g.since).is_some(), "{}: since {:?}", g.name, g.since);
            assert!(g.source.starts_with(g.since), "{}: {}", g.name, g.source);
            assert!(g.config.iter().all(|o| o.starts_with("CONFIG_")), "{}", g.name);
        }
    }

    #[rstest]
    #[case("6.1.0-50-cloud-amd64", KernelVersion { major: 6, minor: 1, patch: 0 })]
    #[case("7.3.4+deb13-cloud-amd64", KernelVersion { major: 7, minor: 3, patch: 4 })]
    #[case("6.18.44-fc-v1300", KernelVersion { major: 6, minor: 18, patch: 44 })]
    #[case("5.8", KernelVersion::new(5, 8))]
    #[case("5.10.0-32-rt-amd64", KernelVersion::new(5, 10))]
    fn versions_parse(#[case] release: &str, #[case] want: KernelVersion) {
        assert_eq!(KernelVersion::parse(release), Some(want));
    }

    #[rstest]
    // Below the feature's first version: the skip stands, and says by how much.
    #[case::below_version(Needs::one("ring buffer"), facts("5.4.0-1", None, &[]), Some("ring buffer: requires >= 5.8, running 5.4"))]
    // At the first version, nothing known: fails.
    #[case::at_version_unexplained(Needs::one("ring buffer"), facts("5.8.0", None, &[]), None)]
    // Above it, config known and on, probe present: fails.
    #[case::above_version_probe_present(Needs::one("fentry"), facts("6.1.0-50-cloud-amd64", Some(HOST_LIKE), &[("fentry", ProbeAnswer::Supported)]), None)]
    // "Unsupported" on a kernel that should have it is no explanation (the probe is wrong).
    #[case::unsupported_is_no_excuse(Needs::one("ring buffer"), facts("6.1.0", Some(HOST_LIKE), &[("ring buffer", ProbeAnswer::Unsupported { reason: "EINVAL".into() })]), None)]
    // A config option off explains it, by name.
    #[case::config_off(Needs::one("kprobe"), facts("6.18.44", Some(HOST_LIKE), &[]), Some("kprobe: CONFIG_KPROBES is off in the kernel's config"))]
    #[case::modules_off(Needs::all(&["syscall tracepoints", "module syscall tracepoints"]), facts("6.18.44", Some(HOST_LIKE), &[]), Some("module syscall tracepoints: CONFIG_MODULES is off in the kernel's config"))]
    // A permission refusal as root explains it, named as policy.
    #[case::runtime_refusal(Needs::one("fentry"), facts("6.18.44", Some(HOST_LIKE), &[("fentry", refused())]), Some("fentry: runtime policy refuses fentry: EPERM from its minimal probe as root"))]
    // Any other probe error does not.
    #[case::probe_error_is_no_excuse(Needs::one("fentry"), facts("6.18.44", Some(HOST_LIKE), &[("fentry", ProbeAnswer::Failed { errno: 16, message: "busy".into() })]), None)]
    // Alternatives: every path must be explained (this host: fentry refused, no kprobes).
    #[case::every_path_explained(Needs::any(&[&["fentry"], &["kprobe"]]), facts("6.18.44", Some(HOST_LIKE), &[("fentry", refused())]), Some("fentry: runtime policy refuses fentry: EPERM from its minimal probe as root; kprobe: CONFIG_KPROBES is off in the kernel's config"))]
    #[case::one_path_unexplained(Needs::any(&[&["fentry"], &["kprobe"]]), facts("6.18.44", Some(HOST_LIKE), &[]), None)]
    // A skip that names nothing, or names what the table lacks, or a kernel of unknown version.
    #[case::names_nothing(Needs::default(), facts("6.1.0", None, &[]), None)]
    #[case::unknown_feature(Needs::one("teleport"), facts("6.1.0", None, &[]), None)]
    #[case::unknown_version(Needs::one("ring buffer"), facts("garbage", None, &[]), None)]
    fn judge_table(#[case] needs: Needs, #[case] facts: KernelFacts, #[case] explained: Option<&str>) {
        let j = judge(&needs, &facts);
        match (explained, &j) {
            (Some(want), Judgement::Explained { excuses }) => {
                let got: Vec<String> = excuses.iter().map(ToString::to_string).collect();
                assert_eq!(got.join("; "), want);
            }
            (None, Judgement::Unexplained { why }) => assert!(!why.is_empty()),
            _ => panic!("want {explained:?}, got {j}"),
        }
    }

    #[test]
    fn unexplained_says_what_was_checked() {
        let j = judge(&Needs::one("fentry"), &facts("6.1.0", Some(HOST_LIKE), &[("fentry", ProbeAnswer::Supported)]));
        assert_eq!(
            j.to_string(),
            "UNEXPLAINED: fentry is in every kernel since 5.5 (running 6.1) and nothing explains its absence \
             (CONFIG_DEBUG_INFO_BTF, CONFIG_BPF_JIT, CONFIG_FUNCTION_TRACER on in test config; probe: supported)"
        );
    }

    #[rstest]
    fn config_reads_plain_and_gzip(#[values("config", "config.gz")] name: &str) {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("tapio-gates-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let bytes = if name.ends_with(".gz") {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(HOST_LIKE.as_bytes()).unwrap();
            enc.finish().unwrap()
        } else {
            HOST_LIKE.as_bytes().to_vec()
        };
        std::fs::write(&path, bytes).unwrap();
        let c = KernelConfig::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(c.is_on("CONFIG_VETH") && c.is_on("CONFIG_BPF_EVENTS"));
        assert!(!c.is_on("CONFIG_KPROBES") && !c.is_on("CONFIG_MODULES") && !c.is_on("CONFIG_NEVER_HEARD_OF"));
    }

    #[test]
    fn judgements_round_trip_as_json() {
        let j = judge(&Needs::any(&[&["fentry"], &["kprobe"]]), &facts("6.18.44", Some(HOST_LIKE), &[("fentry", refused())]));
        let json = serde_json::to_value(&j).unwrap();
        assert_eq!(json["judgement"], "explained");
        assert_eq!(json["excuses"][0]["explanation"], serde_json::json!({"kind": "runtime_refusal", "probe": "fentry", "errno": 1}));
        assert_eq!(json["excuses"][1]["explanation"], serde_json::json!({"kind": "config_off", "option": "CONFIG_KPROBES"}));
        assert_eq!(serde_json::from_value::<Judgement>(json).unwrap(), j);
    }
}
