//! Where a program of the catalog attaches on this kernel, or why it cannot: tracefs lists its
//! tracepoint, /proc/kallsyms its kernel function, the feature probes its program type. Used by
//! loading (crate::monitors), `check` and `plan`.

use std::path::Path;

use super::AttachPoint;
use crate::features;

const TRACEFS_EVENTS: &[&str] = &["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"];

/// Whether tracefs lists a tracepoint; `category` None searches every category (raw tracepoints).
pub fn tracepoint_exists(category: Option<&str>, name: &str) -> bool {
    TRACEFS_EVENTS.iter().map(Path::new).any(|events| match category {
        Some(c) => events.join(c).join(name).is_dir(),
        None => std::fs::read_dir(events)
            .map(|dirs| dirs.flatten().any(|d| d.path().join(name).is_dir()))
            .unwrap_or(false),
    })
}

pub(crate) fn feature_gate(name: &str) -> Result<(), String> {
    match features::probe(name) {
        Some(f) => match f.status {
            features::FeatureStatus::Present => Ok(()),
            features::FeatureStatus::Absent { reason } => Err(format!("{name} unsupported (requires >= {}): {reason}", f.since)),
            features::FeatureStatus::Error { message, .. } => Err(format!("{name} probe failed: {message}")),
        },
        None => Err(format!("no probe named {name}")),
    }
}

/// Whether a kernel function can be attached to: listed in /proc/kallsyms.
fn kernel_function_exists(function: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .map(|s| s.lines().any(|l| l.split_whitespace().nth(2) == Some(function)))
        .unwrap_or(false)
}

/// The path one program takes here, or the reason it cannot attach (feature gates only; the
/// load and attach themselves may still be refused).
pub fn attach_path(attach: &AttachPoint) -> Result<String, String> {
    choose(attach)
}

/// The path one program takes here, or the reason it cannot attach.
pub(crate) fn choose(attach: &AttachPoint) -> Result<String, String> {
    match attach {
        AttachPoint::TracePoint { category, name } => {
            if tracepoint_exists(Some(category), name) {
                Ok(attach.describe())
            } else {
                Err(format!("tracepoint {category}/{name} does not exist in this kernel"))
            }
        }
        AttachPoint::RawTracePoint { name } => {
            feature_gate("raw tracepoint")?;
            if tracepoint_exists(None, name) {
                Ok(attach.describe())
            } else {
                Err(format!("tracepoint {name} does not exist in this kernel"))
            }
        }
        AttachPoint::Fexit { function } | AttachPoint::Kprobe { function } | AttachPoint::Kretprobe { function } => {
            // kretprobes come with kprobes (CONFIG_KPROBES): one gate for both.
            feature_gate(if matches!(attach, AttachPoint::Fexit { .. }) { "fentry" } else { "kprobe" })?;
            if kernel_function_exists(function) {
                Ok(attach.describe())
            } else {
                Err(format!("kernel function {function} not in /proc/kallsyms"))
            }
        }
        // The program types themselves are proven by loading them; what can be missing up front
        // is the hierarchy, which `run` mounts where the node has none.
        AttachPoint::CgroupSkb { .. } | AttachPoint::CgroupSockCreate => match crate::cgroup2::mounted_root() {
            Ok(Some(root)) => Ok(format!("{} on {}", attach.describe(), root.display())),
            Ok(None) => Ok(format!("{} on {} (mounted by run: the node has no cgroup2 mount)", attach.describe(), crate::cgroup2::OWN_MOUNT)),
            Err(e) => Err(e.to_string()),
        },
    }
}
