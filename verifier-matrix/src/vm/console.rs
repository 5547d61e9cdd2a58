//! Finds kernel splats (panics, oopses, BUGs, WARNs, lockups, RCU stalls, hung tasks) in a
//! guest's console text.
//!
//! A probe that loads and attaches but makes the kernel WARN is a failure the matrix must
//! report, and the guest agent cannot always see it itself (the splat may happen in another
//! context, or be the reason the agent died). So the host scans the console: each splat is the
//! header line plus the lines that follow it (registers, `Call Trace:`) up to the kernel's
//! `---[ end ... ]---` marker, the next splat header, or a line cap.
//!
//! Headers are only recognised at the start of a kernel message (after the optional
//! `[    1.234567]` timestamp), so an agent line that merely mentions "WARNING:" mid-text is
//! not a splat. The agent should still avoid starting its own lines with these words.

use serde::{Deserialize, Serialize};

/// What kind of splat a header line announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplatKind {
    /// `Kernel panic - not syncing: ...`
    Panic,
    /// `Oops: ...` and `general protection fault...` / `kernel BUG at ...` style faults.
    Oops,
    /// `BUG: ...` (NULL dereference, sleeping in atomic, KASAN, bad page state, ...).
    Bug,
    /// `WARNING: CPU: ... at file:line` and lockdep's `WARNING: possible ...` reports.
    Warning,
    /// `watchdog: BUG: soft lockup - CPU#N stuck for Ns!`
    SoftLockup,
    /// `watchdog: Watchdog detected hard LOCKUP on cpu N`
    HardLockup,
    /// `rcu: INFO: rcu_sched self-detected stall on CPU` and friends.
    RcuStall,
    /// `INFO: task foo:123 blocked for more than N seconds.`
    HungTask,
    /// `UBSAN: ...` undefined-behaviour reports.
    Ubsan,
}

impl SplatKind {
    /// Whether this splat ends the guest (the run cannot have finished normally).
    pub fn is_fatal(self) -> bool {
        matches!(self, SplatKind::Panic)
    }
}

impl std::fmt::Display for SplatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            SplatKind::Panic => "panic",
            SplatKind::Oops => "oops",
            SplatKind::Bug => "bug",
            SplatKind::Warning => "warning",
            SplatKind::SoftLockup => "soft lockup",
            SplatKind::HardLockup => "hard lockup",
            SplatKind::RcuStall => "rcu stall",
            SplatKind::HungTask => "hung task",
            SplatKind::Ubsan => "ubsan",
        };
        f.write_str(s)
    }
}

/// One splat found in the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    pub kind: SplatKind,
    /// The header without its timestamp, e.g. `WARNING: CPU: 1 PID: 97 at kernel/bpf/...`.
    pub first_line: String,
    /// The header and the lines that belong to it, timestamps kept, newline-separated.
    pub excerpt: String,
    /// Zero-based index of the header line in the console text.
    pub line: usize,
}

/// Lines kept per splat at most; a full oops with modules list and trace fits comfortably.
const MAX_EXCERPT_LINES: usize = 80;

/// Strips a leading printk timestamp (`[   12.345678] `) and a `printk caller` tag
/// (`[    T1] `) if present, and trailing `\r`.
pub fn strip_timestamp(line: &str) -> &str {
    let mut s = line.trim_end_matches('\r');
    for _ in 0..2 {
        let t = s.trim_start();
        if let Some(rest) = t.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                let inner = &rest[..end];
                let is_time = !inner.is_empty()
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == ' ');
                let is_caller = {
                    let i = inner.trim_start();
                    (i.starts_with('T') || i.starts_with('C'))
                        && i.len() > 1
                        && i[1..].chars().all(|c| c.is_ascii_digit())
                };
                if is_time || is_caller {
                    s = rest[end + 1..]
                        .strip_prefix(' ')
                        .unwrap_or(&rest[end + 1..]);
                    continue;
                }
            }
        }
        break;
    }
    s
}

/// Classifies a (timestamp-stripped) line as a splat header.
pub fn classify(msg: &str) -> Option<SplatKind> {
    // Order matters: the lockup reports start with prefixes that also contain "BUG:".
    if msg.starts_with("Kernel panic - not syncing") {
        return Some(SplatKind::Panic);
    }
    if msg.starts_with("watchdog: BUG: soft lockup") || msg.starts_with("BUG: soft lockup") {
        return Some(SplatKind::SoftLockup);
    }
    if msg.starts_with("watchdog: Watchdog detected hard LOCKUP")
        || msg.starts_with("Watchdog detected hard LOCKUP")
        || msg.starts_with("NMI watchdog: Watchdog detected hard LOCKUP")
    {
        return Some(SplatKind::HardLockup);
    }
    if (msg.starts_with("rcu: INFO: ") || msg.starts_with("INFO: rcu_")) && msg.contains("stall") {
        return Some(SplatKind::RcuStall);
    }
    if msg.starts_with("INFO: task ") && msg.contains("blocked for more than") {
        return Some(SplatKind::HungTask);
    }
    if msg.starts_with("Oops: ")
        || msg.starts_with("general protection fault")
        || msg.starts_with("kernel BUG at ")
        || msg.starts_with("invalid opcode: ")
        || msg.starts_with("double fault: ")
    {
        return Some(SplatKind::Oops);
    }
    if msg.starts_with("BUG: ") {
        return Some(SplatKind::Bug);
    }
    if msg.starts_with("WARNING: ") {
        return Some(SplatKind::Warning);
    }
    if msg.starts_with("UBSAN: ") {
        return Some(SplatKind::Ubsan);
    }
    None
}

/// The kernel closes most splats with `---[ end trace <id> ]---` or
/// `---[ end Kernel panic - not syncing: ... ]---`.
fn is_end_marker(msg: &str) -> bool {
    msg.starts_with("---[ end ")
}

/// Scans console text and returns every splat in order.
///
/// An oops that follows its own `BUG:` line (the usual NULL-dereference shape: `BUG: kernel
/// NULL pointer dereference`, `#PF: ...`, `Oops: 0000 [#1] ...`) is reported as two splats,
/// a `Bug` with the fault description and an `Oops` with registers and trace; callers that
/// want one entry per incident can group by proximity of `line`.
pub fn scan(console: &str) -> Vec<Splat> {
    let lines: Vec<&str> = console.lines().collect();
    let mut splats = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let msg = strip_timestamp(lines[i]);
        let Some(kind) = classify(msg) else {
            i += 1;
            continue;
        };
        let start = i;
        let mut end = i + 1; // exclusive
        while end < lines.len() && end - start < MAX_EXCERPT_LINES {
            let m = strip_timestamp(lines[end]);
            if classify(m).is_some() {
                break;
            }
            end += 1;
            if is_end_marker(m) {
                break;
            }
        }
        let excerpt = lines[start..end]
            .iter()
            .map(|l| l.trim_end_matches('\r'))
            .collect::<Vec<_>>()
            .join("\n");
        splats.push(Splat {
            kind,
            first_line: msg.trim_end().to_owned(),
            excerpt,
            line: start,
        });
        i = end;
    }
    splats
}

/// Whether the console shows that the guest asked for power-off (as opposed to a reset or
/// a panic-triggered reboot). Printed by `kernel_power_off()` on every kernel we target.
pub fn shows_power_off(console: &str) -> bool {
    console
        .lines()
        .any(|l| strip_timestamp(l).starts_with("reboot: Power down"))
}

/// Whether the console contains a kernel panic.
pub fn shows_panic(console: &str) -> bool {
    console
        .lines()
        .any(|l| classify(strip_timestamp(l)) == Some(SplatKind::Panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARN: &str = "\
[    5.101010] tapio-agent: loading probes
[    5.204242] ------------[ cut here ]------------
[    5.204250] WARNING: CPU: 1 PID: 97 at kernel/bpf/verifier.c:12345 do_check_common+0x1b2/0x1c0
[    5.204301] Modules linked in: bpf_testmod(OE)
[    5.204320] CPU: 1 PID: 97 Comm: init Tainted: G           OE      6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
[    5.204330] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.3-debian-1.16.3-2 04/01/2014
[    5.204340] RIP: 0010:do_check_common+0x1b2/0x1c0
[    5.204399] Call Trace:
[    5.204401]  <TASK>
[    5.204410]  bpf_check+0x1f01/0x2a40
[    5.204420]  bpf_prog_load+0x5d2/0x8f0
[    5.204430]  __sys_bpf+0x9a3/0x1d40
[    5.204440]  do_syscall_64+0x58/0xc0
[    5.204450]  entry_SYSCALL_64_after_hwframe+0x64/0xce
[    5.204460]  </TASK>
[    5.204470] ---[ end trace 0000000000000000 ]---
[    5.300000] tapio-agent: probe tcp_connect attached
";

    const NULL_DEREF_PANIC: &str = "\
[    7.000100] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    7.000110] #PF: supervisor read access in kernel mode
[    7.000120] #PF: error_code(0x0000) - not-present page
[    7.000130] PGD 0 P4D 0
[    7.000140] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    7.000150] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
[    7.000160] RIP: 0010:bpf_prog_run_array+0x41/0x90
[    7.000170] Call Trace:
[    7.000180]  <TASK>
[    7.000190]  trace_call_bpf+0x6a/0xe0
[    7.000200]  </TASK>
[    7.000210] ---[ end trace 0000000000000000 ]---
[    7.000220] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009
[    7.000230] Kernel Offset: disabled
[    7.000240] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009 ]---
";

    #[test]
    fn warning_with_call_trace() {
        let s = scan(WARN);
        assert_eq!(s.len(), 1, "{s:#?}");
        let w = &s[0];
        assert_eq!(w.kind, SplatKind::Warning);
        assert_eq!(w.line, 2);
        assert!(w
            .first_line
            .starts_with("WARNING: CPU: 1 PID: 97 at kernel/bpf/verifier.c"));
        assert!(w.excerpt.contains("Call Trace:"));
        assert!(w.excerpt.contains("bpf_prog_load+0x5d2/0x8f0"));
        assert!(w.excerpt.ends_with("---[ end trace 0000000000000000 ]---"));
        assert!(!w.excerpt.contains("tcp_connect attached"));
        assert!(!w.kind.is_fatal());
    }

    #[test]
    fn null_deref_oops_then_panic() {
        let s = scan(NULL_DEREF_PANIC);
        let kinds: Vec<SplatKind> = s.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SplatKind::Bug, SplatKind::Oops, SplatKind::Panic]);
        assert!(s[0].excerpt.contains("#PF: supervisor read access"));
        assert!(s[1].first_line.starts_with("Oops: 0000 [#1]"));
        assert!(s[1].excerpt.contains("trace_call_bpf"));
        assert_eq!(
            s[2].first_line,
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009"
        );
        assert!(s[2].excerpt.contains("---[ end Kernel panic"));
        assert!(shows_panic(NULL_DEREF_PANIC));
        assert!(!shows_power_off(NULL_DEREF_PANIC));
    }

    #[test]
    fn lockups_and_stalls() {
        let text = "\
[   48.120000] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [init:1]
[   48.120010] Modules linked in:
[   48.120020] RIP: 0010:bpf_loop+0x40/0x80
[   60.000000] rcu: INFO: rcu_preempt self-detected stall on CPU
[   60.000010] rcu: \t1-....: (21002 ticks this GP) idle=f2c/1/0x4000000000000000
[   61.000000] watchdog: Watchdog detected hard LOCKUP on cpu 0
[   62.000000] INFO: task kworker/0:1:15 blocked for more than 120 seconds.
[   62.000010]       Not tainted 6.1.0-56-cloud-amd64 #1
";
        let kinds: Vec<SplatKind> = scan(text).iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SplatKind::SoftLockup,
                SplatKind::RcuStall,
                SplatKind::HardLockup,
                SplatKind::HungTask
            ]
        );
    }

    #[test]
    fn gpf_kernel_bug_and_sleeping_bug() {
        let text = "\
[    3.000000] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI
[    3.000010] RIP: 0010:__list_del_entry_valid+0x1d/0x60
[    4.000000] kernel BUG at mm/slub.c:379!
[    4.000010] invalid opcode: 0000 [#2] PREEMPT SMP NOPTI
[    5.000000] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580
[    5.000010] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 1, name: init
[    6.000000] UBSAN: shift-out-of-bounds in kernel/bpf/verifier.c:9000:20
";
        let s = scan(text);
        let kinds: Vec<SplatKind> = s.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SplatKind::Oops,
                SplatKind::Oops,
                SplatKind::Oops,
                SplatKind::Bug,
                SplatKind::Ubsan
            ]
        );
        assert!(s[3].excerpt.contains("in_atomic(): 1"));
    }

    #[test]
    fn clean_boot_has_no_splats_and_mentions_are_ignored() {
        let text = "\
[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)
[    0.267914] printk: console [ttyS0] enabled
[    0.500000] Freeing unused kernel image (initmem) memory: 2000K
[    3.160298] Run /init as init process
tapio-agent: note: no WARNING: lines expected here
tapio-agent: BUG: reporting is done by the host
[    3.226980] reboot: Power down
";
        // The agent's second line starts with "tapio-agent:", not "BUG:", so it is ignored.
        assert!(scan(text).is_empty());
        assert!(shows_power_off(text));
        assert!(!shows_panic(text));
    }

    #[test]
    fn untimestamped_and_crlf_lines() {
        let text = "WARNING: CPU: 0 PID: 1 at lib/foo.c:1 f+0x0/0x10\r\nCall Trace:\r\n";
        let s = scan(text);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].first_line,
            "WARNING: CPU: 0 PID: 1 at lib/foo.c:1 f+0x0/0x10"
        );
        assert_eq!(
            s[0].excerpt,
            "WARNING: CPU: 0 PID: 1 at lib/foo.c:1 f+0x0/0x10\nCall Trace:"
        );
    }

    #[test]
    fn excerpt_is_capped() {
        let mut text = String::from("[    1.000000] WARNING: CPU: 0 PID: 1 at x.c:1 f\n");
        for i in 0..500 {
            text.push_str(&format!("[    1.000001]  frame_{i}+0x0/0x10\n"));
        }
        let s = scan(&text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].excerpt.lines().count(), MAX_EXCERPT_LINES);
    }

    #[test]
    fn timestamp_stripping() {
        assert_eq!(strip_timestamp("[    1.234567] hello"), "hello");
        assert_eq!(strip_timestamp("[    1.234567][    T1] hello\r"), "hello");
        assert_eq!(strip_timestamp("[agent] hello"), "[agent] hello");
        assert_eq!(strip_timestamp("plain"), "plain");
    }
}
