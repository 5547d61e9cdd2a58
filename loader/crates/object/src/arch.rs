//! Which architecture an object was built for, read offline from the object alone.
//!
//! The bundle's build (`loader/crates/bundle/build.rs`) compiles every probe once per architecture
//! and writes the architecture's name into each object as an ELF note: section
//! [`NOTE_SECTION`], owner [`NOTE_OWNER`], type [`NOTE_TYPE_ARCH`], the name NUL-terminated as
//! its descriptor (`readelf -n` shows it). The note is the record, not the code's evidence,
//! because most objects hold no evidence: only a program that reads registers (a kprobe, a
//! kretprobe, the raw `sys_enter` tracepoint) differs between the builds, and the process, kernel,
//! dns or xdp_filter objects come out of both with the same BTF. The build is the one place that
//! knows which bundle an object belongs to, as it passes the `-D__TARGET_ARCH_*`.
//!
//! Where the code does show an architecture, it is read too and must agree with the note, so an
//! object built with the wrong define under the right note (or copied into the wrong bundle) is
//! caught:
//! - the register frame in the object's BTF: x86's `pt_regs` has `di`, `orig_ax`; arm64's is
//!   `user_pt_regs` (what bpf_tracing.h casts a kprobe's context to), `pt_regs` with `orig_x0`,
//!   or libbpf's `pt_regs___arm64` flavour (a syscall's first argument);
//! - a kprobe or fentry target that is a syscall wrapper: `__x64_sys_*` and `__ia32_sys_*` exist
//!   only on x86 kernels, `__arm64_sys_*` only on arm64 ones (the prefixes the kernel's
//!   `arch/*/include/asm/syscall_wrapper.h` gives them);
//! - a syscall tracepoint of a syscall only x86-64 has ([`X86_64_ONLY_SYSCALLS`]: `open`,
//!   `creat`, ...): arm64 uses the generic table, which has only their `*at` and other successors,
//!   and the kernel registers no `syscalls:sys_enter_<name>` event for a syscall its table lacks
//!   (`init_syscall_trace` in kernel/trace/trace_syscalls.c), so such a program cannot attach
//!   there and the arm64 build must leave it out.
//!
//! The architecture is tapio-kernel-gates' `Arch`, the type tapio-bundle keys its objects by;
//! this crate's tests check every embedded object's note against the bundle it is in.

use std::fmt;

use object::{Object as _, ObjectSection as _};
use serde::Serialize;

use crate::btf::{Btf, Type};

/// The section of the architecture note.
pub const NOTE_SECTION: &str = ".note.tapio.arch";
/// The note's owner (its `name`), without the NUL.
pub const NOTE_OWNER: &[u8] = b"tapio";
/// The note type of the architecture note.
pub const NOTE_TYPE_ARCH: u32 = 1;

/// An architecture an object can be built for: tapio-kernel-gates' one [`Arch`] type, whose
/// [`Arch::name`] is what the note holds.
pub use tapio_kernel_gates::Arch;

/// The architecture a note names, by the note's spelling only ([`Arch::name`]): the build writes
/// nothing else, so `amd64` or `aarch64` in a note is an invalid note, not an alias.
pub fn from_note_name(name: &str) -> Option<Arch> {
    Arch::ALL.into_iter().find(|a| a.name() == name)
}

/// What the note says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Note {
    /// A well-formed note naming a known architecture.
    Arch { arch: Arch },
    /// No note: an object not built by tapio-bundle's build (or built before notes existed).
    Absent,
    /// A note that cannot be read, or names an architecture this crate does not know.
    Invalid { detail: String },
}

/// One thing in the object's code that only one architecture's build produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub arch: Arch,
    /// What was found, e.g. `BTF struct user_pt_regs` or `kprobe target __arm64_sys_setns`.
    pub what: String,
}

/// An object's architecture: its note and the evidence in its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchInfo {
    pub note: Note,
    pub evidence: Vec<Evidence>,
}

impl ArchInfo {
    /// The architecture the object is for: the note's, or with no note the evidence's when all
    /// of it agrees. None when unknown or contradicted.
    pub fn arch(&self) -> Option<Arch> {
        let from_evidence = || {
            let first = self.evidence.first()?.arch;
            self.evidence.iter().all(|e| e.arch == first).then_some(first)
        };
        match &self.note {
            Note::Arch { arch } => self.evidence.iter().all(|e| e.arch == *arch).then_some(*arch),
            Note::Absent => from_evidence(),
            Note::Invalid { .. } => None,
        }
    }

    /// What is wrong, one line each: evidence of another architecture than the note's, a note
    /// that cannot be read; and when an architecture is `expected` (the object is to be part of
    /// that architecture's bundle), a note that is missing or names another one.
    pub fn problems(&self, expected: Option<Arch>) -> Vec<String> {
        let mut out = Vec::new();
        let claimed = match &self.note {
            Note::Arch { arch } => Some(*arch),
            Note::Absent => {
                if expected.is_some() {
                    out.push(format!("no architecture note ({NOTE_SECTION})"));
                }
                None
            }
            Note::Invalid { detail } => {
                out.push(format!("architecture note {NOTE_SECTION}: {detail}"));
                None
            }
        };
        if let (Some(claimed), Some(expected)) = (claimed, expected) {
            if claimed != expected {
                out.push(format!("built for {claimed}, expected {expected}"));
            }
        }
        if let Some(against) = claimed.or(expected) {
            for e in self.evidence.iter().filter(|e| e.arch != against) {
                out.push(format!("{} is {} code, not {against}", e.what, e.arch));
            }
        }
        out
    }
}

impl fmt::Display for ArchInfo {
    /// `arm64`, `arm64 (no note; from its code)`, `unknown (...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.note, self.arch()) {
            (Note::Arch { .. }, Some(arch)) => write!(f, "{arch}"),
            (Note::Arch { arch }, None) => write!(f, "{arch} (contradicted by its code)"),
            (Note::Absent, Some(arch)) => write!(f, "{arch} (no note; from its code)"),
            (Note::Absent, None) => f.write_str("unknown (no note)"),
            (Note::Invalid { detail }, _) => write!(f, "unknown (bad note: {detail})"),
        }
    }
}

/// Reads the architecture note of an ELF object.
pub fn read_note(elf: &object::File<'_>) -> Note {
    let Some(section) = elf.section_by_name(NOTE_SECTION) else { return Note::Absent };
    match section.data() {
        Ok(data) => parse_note(data),
        Err(e) => Note::Invalid { detail: e.to_string() },
    }
}

/// Parses the contents of the note section (one note).
pub fn parse_note(data: &[u8]) -> Note {
    let invalid = |detail: String| Note::Invalid { detail };
    let word = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let (Some(namesz), Some(descsz), Some(kind)) = (word(0), word(4), word(8)) else {
        return invalid(format!("{} bytes, shorter than a note header", data.len()));
    };
    let name_end = 12 + namesz;
    let desc_start = 12 + namesz.div_ceil(4) * 4;
    let (Some(name), Some(desc)) = (data.get(12..name_end), data.get(desc_start..desc_start + descsz)) else {
        return invalid(format!("note sizes {namesz}/{descsz} overrun its {} bytes", data.len()));
    };
    if name.strip_suffix(&[0]) != Some(NOTE_OWNER) || kind as u32 != NOTE_TYPE_ARCH {
        return invalid(format!("owner {:?} type {kind}, expected tapio type {NOTE_TYPE_ARCH}", String::from_utf8_lossy(name)));
    }
    let text = String::from_utf8_lossy(desc.strip_suffix(&[0]).unwrap_or(desc)).into_owned();
    match from_note_name(&text) {
        Some(arch) => Note::Arch { arch },
        None => invalid(format!("unknown architecture {text:?}")),
    }
}

/// The architecture a syscall wrapper's name belongs to (`__x64_sys_setns`, `__arm64_sys_setns`).
pub fn syscall_wrapper_arch(function: &str) -> Option<Arch> {
    const PREFIXES: &[(&str, Arch)] = &[
        ("__x64_sys_", Arch::X86_64),
        ("__ia32_sys_", Arch::X86_64),
        ("__ia32_compat_sys_", Arch::X86_64),
        ("__x64_compat_sys_", Arch::X86_64),
        ("__arm64_sys_", Arch::Arm64),
        ("__arm64_compat_sys_", Arch::Arm64),
    ];
    PREFIXES.iter().find(|(p, _)| function.starts_with(p)).map(|&(_, arch)| arch)
}

/// Syscalls in x86-64's table (arch/x86/entry/syscalls/syscall_64.tbl) that arm64's, the generic
/// one (include/uapi/asm-generic/unistd.h), does not have: the legacy calls it replaced (`open` by
/// `openat`, `fork` by `clone`, `poll` by `ppoll`, ...) and x86's own. Checked against both uapi
/// headers (`__NR_<name>` in x86_64's asm/unistd_64.h and not in asm-generic/unistd.h).
pub const X86_64_ONLY_SYSCALLS: &[&str] = &[
    "open", "creat", "fork", "vfork", "pipe", "dup2", "poll", "select", "access", "chmod", "chown",
    "lchown", "mkdir", "rmdir", "link", "unlink", "symlink", "readlink", "rename", "mknod", "utime",
    "utimes", "futimesat", "epoll_wait", "epoll_create", "inotify_init", "eventfd", "signalfd",
    "getdents", "alarm", "pause", "time", "uselib", "ustat", "sysfs", "arch_prctl", "iopl",
    "ioperm", "modify_ldt", "getpgrp",
];

/// The evidence in an object's BTF: which register frame it declares.
pub fn btf_evidence(btf: &Btf) -> Vec<Evidence> {
    let mut out = Vec::new();
    for t in btf.types() {
        let Type::Struct { name, members, .. } = t else { continue };
        let has = |field: &str| members.iter().any(|m| m.name == field);
        let arch = match name.as_str() {
            "user_pt_regs" | "pt_regs___arm64" => Some(Arch::Arm64),
            "pt_regs" if has("di") || has("orig_ax") => Some(Arch::X86_64),
            "pt_regs" if has("orig_x0") || has("user_regs") => Some(Arch::Arm64),
            _ => None,
        };
        if let Some(arch) = arch {
            let what = format!("BTF struct {name}");
            if !out.iter().any(|e: &Evidence| e.what == what) {
                out.push(Evidence { arch, what });
            }
        }
    }
    out
}

/// The evidence in an object's attach targets: (program type, target) pairs as `inspect`
/// classifies sections. Kprobes and fentry/fexit name kernel functions (a syscall wrapper is an
/// architecture's own); a syscall tracepoint names a syscall, which only some tables have.
pub fn target_evidence<'a>(targets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Evidence> {
    targets
        .into_iter()
        .filter_map(|(kind, target)| {
            if kind.starts_with("kprobe") || kind.starts_with("tracing (f") {
                let arch = syscall_wrapper_arch(target)?;
                return Some(Evidence { arch, what: format!("{kind} target {target}") });
            }
            let event = target.strip_prefix("syscalls/")?;
            let name = event.strip_prefix("sys_enter_").or_else(|| event.strip_prefix("sys_exit_"))?;
            X86_64_ONLY_SYSCALLS.contains(&name).then(|| Evidence {
                arch: Arch::X86_64,
                what: format!("{kind} {target} (arm64 has no {name} syscall)"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(owner: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(owner);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v.extend_from_slice(desc);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }

    /// Syscall wrappers are told apart by their arch prefix; the generic names are nobody's.
    #[test]
    fn syscall_wrappers_name_their_architecture() {
        assert_eq!(syscall_wrapper_arch("__x64_sys_setns"), Some(Arch::X86_64));
        assert_eq!(syscall_wrapper_arch("__ia32_sys_setuid16"), Some(Arch::X86_64));
        assert_eq!(syscall_wrapper_arch("__arm64_sys_setns"), Some(Arch::Arm64));
        assert_eq!(syscall_wrapper_arch("__se_sys_setns"), None);
        assert_eq!(syscall_wrapper_arch("tcp_connect"), None);
        let found = target_evidence([("kprobe", "__x64_sys_openat"), ("tracepoint", "syscalls/sys_enter_openat")]);
        assert_eq!(found, vec![Evidence { arch: Arch::X86_64, what: "kprobe target __x64_sys_openat".into() }]);
    }

    /// A syscall tracepoint of a syscall arm64's table lacks is x86-64 code; its `*at` successor
    /// is nobody's.
    #[test]
    fn x86_only_syscall_tracepoints_are_x86_code() {
        let found = target_evidence([
            ("tracepoint", "syscalls/sys_enter_open"),
            ("tracepoint", "syscalls/sys_exit_creat"),
            ("tracepoint", "syscalls/sys_enter_openat"),
            ("tracepoint", "syscalls/sys_enter_setns"),
            ("tracepoint", "sched/sched_process_exec"),
        ]);
        let what: Vec<&str> = found.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            what,
            ["tracepoint syscalls/sys_enter_open (arm64 has no open syscall)", "tracepoint syscalls/sys_exit_creat (arm64 has no creat syscall)"]
        );
        assert!(found.iter().all(|e| e.arch == Arch::X86_64));
    }

    /// The note's evidence check: agreement, contradiction, and an expected architecture.
    #[test]
    fn problems_name_what_disagrees() {
        let arm = |evidence| ArchInfo { note: Note::Arch { arch: Arch::Arm64 }, evidence };
        let x86_code = Evidence { arch: Arch::X86_64, what: "kprobe target __x64_sys_setns".into() };
        assert!(arm(vec![]).problems(Some(Arch::Arm64)).is_empty());
        assert_eq!(arm(vec![]).problems(Some(Arch::X86_64)), vec!["built for arm64, expected x86_64"]);
        let bad = arm(vec![x86_code.clone()]);
        assert_eq!(bad.arch(), None);
        assert_eq!(bad.problems(None), vec!["kprobe target __x64_sys_setns is x86_64 code, not arm64"]);
        let unnoted = ArchInfo { note: Note::Absent, evidence: vec![x86_code] };
        assert_eq!(unnoted.arch(), Some(Arch::X86_64));
        assert_eq!(unnoted.to_string(), "x86_64 (no note; from its code)");
        assert!(unnoted.problems(None).is_empty(), "an object from elsewhere may have no note");
        assert_eq!(
            unnoted.problems(Some(Arch::X86_64)),
            vec![format!("no architecture note ({NOTE_SECTION})")],
            "a bundle's object must have one"
        );
    }

    /// The x86-64-only list agrees with the uapi headers the bundle is built with (ci/setup.sh
    /// installs both): each name is an x86-64 syscall and not in the generic table arm64 uses.
    #[test]
    fn x86_only_syscalls_agree_with_the_uapi_headers() {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (run ci/setup.sh)"));
        let x86 = read("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
        let generic = ["/usr/aarch64-linux-gnu/include/asm-generic/unistd.h", "/usr/include/asm-generic/unistd.h"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(|p| read(p))
            .expect("asm-generic/unistd.h (run ci/setup.sh)");
        for name in X86_64_ONLY_SYSCALLS {
            assert!(x86.contains(&format!("#define __NR_{name} ")), "{name} is not an x86-64 syscall");
            for prefix in ["__NR_", "__NR3264_"] {
                assert!(!generic.contains(&format!("#define {prefix}{name} ")), "{name} is in the generic table ({prefix})");
            }
        }
    }

    /// The note's byte layout, as build.rs writes it, parses; a foreign owner does not.
    #[test]
    fn note_bytes_parse() {
        let parse = |bytes: Vec<u8>| parse_note(&bytes);
        assert_eq!(parse(note(b"tapio\0", 1, b"arm64\0")), Note::Arch { arch: Arch::Arm64 });
        assert_eq!(parse(note(b"tapio\0", 1, b"x86_64\0")), Note::Arch { arch: Arch::X86_64 });
        assert!(matches!(parse(note(b"GNU\0", 1, b"arm64\0")), Note::Invalid { .. }));
        assert!(matches!(parse(note(b"tapio\0", 1, b"riscv64\0")), Note::Invalid { .. }));
        assert!(matches!(parse(vec![1, 2]), Note::Invalid { .. }));
    }
}
