//! `tapio-load plan`: what would run on this kernel, decided by probing, before anything loads.
//!
//! Per program: the attach path it would take, or `unavailable` with the reason. Per run: the
//! event transport and where the BTF for CO-RE comes from.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    bundle::Transport,
    monitors::{
        alternatives_of,
        attach_path::{choose, feature_gate},
        AttachPoint, MonitorSpec, ProgramSpec, ALTERNATIVES,
    },
    transport::Delivery,
};

// Where a program attaches and the kernel's release are found below the catalog, so the
// monitors need not import the plan; re-exported here, where callers have always found them.
pub use crate::monitors::attach_path::{attach_path, tracepoint_exists};
pub use tapio_features::kernel::release as kernel_release;

/// Where CO-RE relocations get the kernel's types from.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum BtfSource {
    /// `/sys/kernel/btf/vmlinux`.
    Kernel,
    /// An external file (`--btf`, or `<btf-dir>/<release>.btf`).
    File(PathBuf),
    /// None found: nothing can load.
    Missing(String),
}

impl BtfSource {
    pub fn describe(&self) -> String {
        match self {
            Self::Kernel => "kernel".to_owned(),
            Self::File(p) => p.display().to_string(),
            Self::Missing(why) => format!("missing: {why}"),
        }
    }
}

/// Picks the BTF source: an explicit file, the kernel's own, then `<dir>/<release>.btf`.
pub fn btf_source(explicit: Option<&Path>, btf_dir: Option<&Path>, release: &str) -> BtfSource {
    if let Some(file) = explicit {
        return BtfSource::File(file.to_owned());
    }
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        return BtfSource::Kernel;
    }
    if let Some(dir) = btf_dir {
        let candidate = dir.join(format!("{release}.btf"));
        if candidate.exists() {
            return BtfSource::File(candidate);
        }
        return BtfSource::Missing(format!(
            "no /sys/kernel/btf/vmlinux and no {} (generate one with `tapio-load btf minimize`)",
            candidate.display()
        ));
    }
    BtfSource::Missing("no /sys/kernel/btf/vmlinux; pass --btf FILE or --btf-dir DIR".to_owned())
}

/// One program's planned attach path, or why it has none.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedProgram {
    pub monitor: &'static str,
    pub program: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// A fallback path in use: why the better sets of its capability cannot run here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// A fallback path not used because a better set of its capability runs: which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<String>,
}

/// The whole plan for the running kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub kernel: String,
    pub transport: Transport,
    /// The delivery policy in force and its bound (crate::transport).
    pub delivery: Delivery,
    /// The same, in words, for this transport.
    pub delivery_detail: String,
    pub btf: String,
    /// The security monitor's `in_container` reference: the initial mount namespace's inode and
    /// where it came from, or why it cannot be read (crate::monitors::security::initial_mount_ns).
    pub in_container_reference: String,
    pub programs: Vec<PlannedProgram>,
}


/// Plans `monitors` for the running kernel with the given BTF source.
pub fn plan(monitors: &[&'static MonitorSpec], btf: &BtfSource, delivery: Delivery) -> Plan {
    let transport = if feature_gate("ring buffer").is_ok() { Transport::Ringbuf } else { Transport::Perf };
    let mut programs = Vec::new();
    let decide = |p: &ProgramSpec| match btf {
        BtfSource::Missing(why) => Err(format!("no BTF for CO-RE: {why}")),
        BtfSource::File(_) if matches!(p.attach, AttachPoint::Fexit { .. }) => Err("fexit needs the kernel's own BTF, not a file".to_owned()),
        _ => choose(&p.attach),
    };
    for m in monitors {
        // Per capability with alternative sets: the first set whose every program has its path.
        let taken: Vec<(&'static str, usize, String)> = ALTERNATIVES
            .iter()
            .filter(|a| a.monitor == m.name)
            .filter_map(|a| {
                let mut reasons = Vec::new();
                for (i, set) in a.sets.iter().enumerate() {
                    let missing: Vec<String> = set
                        .programs
                        .iter()
                        .filter_map(|name| m.programs.iter().find(|p| p.name == *name))
                        .filter_map(|p| decide(p).err().map(|why| format!("{}: {why}", p.name)))
                        .collect();
                    if missing.is_empty() {
                        return Some((a.name, i, reasons.join("; ")));
                    }
                    reasons.push(format!("{} path: {}", set.label, missing.join("; ")));
                }
                None
            })
            .collect();
        for p in m.programs {
            let mut planned = PlannedProgram { monitor: m.name, program: p.name, path: None, unavailable: None, fallback: None, standby: None };
            match decide(p) {
                Ok(path) => planned.path = Some(path),
                Err(why) => planned.unavailable = Some(why),
            }
            if let Some((alt, set)) = alternatives_of(m.name, p.name) {
                match taken.iter().find(|(name, ..)| *name == alt.name) {
                    Some((_, chosen, _)) if set > *chosen => {
                        planned.standby = Some(format!("{} path taken for {}", alt.sets[*chosen].label, alt.name));
                        planned.path = None;
                        planned.unavailable = None;
                    }
                    Some((_, chosen, why)) if set == *chosen && !why.is_empty() => planned.fallback = Some(why.clone()),
                    _ => {}
                }
            }
            programs.push(planned);
        }
    }
    let in_container_reference = match crate::monitors::security::initial_mount_ns() {
        Ok((inum, from)) => format!("mnt ns {inum} ({from})"),
        Err(e) => format!("unreadable: {e}"),
    };
    Plan {
        kernel: kernel_release(),
        transport,
        delivery,
        delivery_detail: delivery.describe(transport),
        btf: btf.describe(),
        in_container_reference,
        programs,
    }
}

/// The plan as an aligned table.
pub fn render_text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = format!("kernel {}  transport {}  btf {}\n", plan.kernel, plan.transport, plan.btf);
    let _ = writeln!(out, "delivery {}", plan.delivery_detail);
    let _ = writeln!(out, "in_container reference {}", plan.in_container_reference);
    for p in &plan.programs {
        let what = match (&p.path, &p.unavailable, &p.standby) {
            (Some(path), _, _) => match &p.fallback {
                Some(why) => format!("{path} (fallback: {why})"),
                None => path.clone(),
            },
            (None, _, Some(why)) => format!("standby: {why}"),
            (None, Some(why), _) => format!("unavailable: {why}"),
            (None, None, None) => "unavailable".to_owned(),
        };
        let _ = writeln!(out, "  {:<10} {:<24} {}", p.monitor, p.program, what);
    }
    out
}
