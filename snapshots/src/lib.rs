//! The decoded-event snapshots and the insta layer the verifier matrix compares them with.
//!
//! This package's directory is the top-level `snapshots/`: the data is
//! `snapshots/<monitor>/<scenario>.snap`, one snapshot shared by every kernel, in insta's file
//! format, written and compared by the insta crate (`assert_json_snapshot!` under [`settings`]).
//! Because `snapshots/` is a package's directory, `cargo insta pending-snapshots`, `review`
//! and `accept` find the `.snap.new` files a matrix run leaves here.
//!
//! Where a kernel legitimately differs, `<scenario>@<kernel>.snap` (insta's snapshot suffix)
//! holds that kernel's events, and its insta metadata says why: `info: {kernel, reason}`. A
//! difference is explained where it is stored, never absorbed by loosening the shared snapshot.
//!
//! # Pending entries, one per drifted kernel
//! A thin layer on insta decides which name a drift is stored under:
//! - a kernel with a variant compares with it; a drift leaves `<scenario>@<kernel>.snap.new`,
//!   keeping the variant's reason;
//! - a kernel without one compares with the shared snapshot; a drift leaves
//!   `<scenario>@<kernel>.snap.new` too (never the shared `.snap.new`, which every drifted
//!   kernel of a run would overwrite), with `info.reason` empty. Accepted, it becomes that
//!   kernel's variant, which the matrix rejects until its reason is written. Where every kernel
//!   agrees on the new events, the shared snapshot is what changes instead:
//!   `cargo xtask verifier-matrix --accept-snapshots` (or move the accepted file over
//!   `<scenario>.snap`);
//! - a scenario with no snapshot at all leaves the shared `<scenario>.snap.new`.
//!
//! # Redactions and filters
//! The guest's normaliser (`tapio_load::snapshot`) turns ids into the role a process plays,
//! which needs what only the run knows (which pid is the agent). On top of that, every
//! snapshot goes through one central table of insta selector redactions ([`REDACTIONS`]),
//! each of which checks the value before it redacts it (a `cgroup_id` must be an integer, a
//! `ts_ns` non-zero) and accepts the guest's token for it, so a raw run-specific value can never
//! be stored, and one central table of text filters ([`FILTERS`]).

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use insta::{internals::Content, Comparator, DefaultComparator, Settings, Snapshot};
use serde_json::Value;
use thiserror::Error;

/// The top-level directory of the snapshots, relative to the workspace.
pub const DIR: &str = "snapshots";

/// What a snapshot comparison found wrong.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The events differ from the stored snapshot.
    #[error("snapshot {name} drifted on kernel {kernel} (review: cargo insta review; pending: {}; a legitimate kernel difference is a variant {} with an `info.reason`):\n{diff}", pending.display(), variant.display())]
    Drifted { name: String, kernel: String, pending: PathBuf, variant: PathBuf, diff: String },
    /// No snapshot is stored for the scenario yet.
    #[error("snapshot {name}: none stored yet (kernel {kernel}); review: cargo insta review (pending: {})", pending.display())]
    New { name: String, kernel: String, pending: PathBuf },
    /// A per-kernel variant without `info.reason` in its metadata.
    #[error("snapshot {name}: variant {} has no `info.reason`: say why kernel {kernel} differs, or, if every kernel now produces these events, make them the shared snapshot {} and delete the variant", variant.display(), shared.display())]
    NoReason { name: String, kernel: String, variant: PathBuf, shared: PathBuf },
    /// A value failed the check of its redaction.
    #[error("snapshot {name} on kernel {kernel}: {message}")]
    Check { name: String, kernel: String, message: String },
    /// The guest's body is not JSON.
    #[error("snapshot {name}: the body is not JSON")]
    Body { name: String, #[source] source: serde_json::Error },
    /// A stored file insta cannot read, or one it could not write.
    #[error("snapshot {name}: {}: {message}", path.display())]
    File { name: String, path: PathBuf, message: String },
}

/// The shared snapshot file of one (monitor, scenario).
pub fn snap_path(workspace: &Path, monitor: &str, scenario: &str) -> PathBuf {
    workspace.join(DIR).join(monitor).join(format!("{scenario}.snap"))
}

/// The per-kernel variant of one (monitor, scenario): used instead of the shared file when present.
pub fn variant_path(workspace: &Path, monitor: &str, scenario: &str, kernel: &str) -> PathBuf {
    workspace.join(DIR).join(monitor).join(format!("{scenario}@{kernel}.snap"))
}

/// The pending file insta writes beside a snapshot file.
pub fn pending_path(snap: &Path) -> PathBuf {
    snap.with_extension("snap.new")
}

/// One value check of [`REDACTIONS`]: the JSON of the value in, the redacted value out, or why
/// the value cannot be what the field holds.
type Check = fn(&Value, &str) -> Result<Value, String>;

/// Process ids: an integer (redacted to `[pid]`), the guest's role (`[pid:<role>]`), the task a
/// softirq interrupted (`[task:interrupted]`), or 0 (no process: kept, it is a fact).
fn check_pid(v: &Value, field: &str) -> Result<Value, String> {
    match v {
        Value::Number(n) if n.as_u64() == Some(0) => Ok(v.clone()),
        Value::Number(n) if n.as_u64().is_some() => Ok(Value::from("[pid]")),
        Value::String(s) if (s.starts_with("[pid:") && s.ends_with(']')) || s == "[task:interrupted]" || s == "[pid]" => {
            Ok(v.clone())
        }
        _ => Err(format!("{field} must be an integer or a role, not {v}")),
    }
}

/// Ids allocated at run time (cgroups, namespaces): an integer, shown as `[<field>]`.
fn check_id(v: &Value, field: &str) -> Result<Value, String> {
    let token = format!("[{field}]");
    match v {
        Value::Number(n) if n.as_u64().is_some() => Ok(Value::String(token)),
        Value::String(s) if *s == token => Ok(v.clone()),
        _ => Err(format!("{field} must be an integer, not {v}")),
    }
}

/// Timestamps and durations: a non-zero integer, shown as `[<field>]`.
fn check_nonzero(v: &Value, field: &str) -> Result<Value, String> {
    let token = format!("[{field}]");
    match v {
        Value::Number(n) if n.as_u64().is_some_and(|x| x > 0) => Ok(Value::String(token)),
        Value::String(s) if *s == token => Ok(v.clone()),
        _ => Err(format!("{field} must be a non-zero integer, not {v}")),
    }
}

/// Ports: a 16-bit integer (kept: a fixed port is part of the scenario) or the guest's role.
fn check_port(v: &Value, field: &str) -> Result<Value, String> {
    match v {
        Value::Number(n) if n.as_u64().is_some_and(|p| p <= u64::from(u16::MAX)) => Ok(v.clone()),
        Value::String(s) if s.starts_with("[port:") && s.ends_with(']') => Ok(v.clone()),
        _ => Err(format!("{field} must be a 16-bit port or a role, not {v}")),
    }
}

/// User-space addresses: 0 is kept (no address), any other integer is `[addr]`.
fn check_addr(v: &Value, field: &str) -> Result<Value, String> {
    match v {
        Value::Number(n) if n.as_u64() == Some(0) => Ok(v.clone()),
        Value::Number(n) if n.as_u64().is_some() => Ok(Value::from("[addr]")),
        Value::String(s) if s == "[addr]" => Ok(v.clone()),
        _ => Err(format!("{field} must be an integer address, not {v}")),
    }
}

/// The central table of selector redactions: every snapshot is the JSON array of one
/// scenario's events, so each selector names a field of every event.
pub const REDACTIONS: &[(&str, Check)] = &[
    ("[].pid", check_pid),
    ("[].tgid", check_pid),
    ("[].ppid", check_pid),
    ("[].child_tgid", check_pid),
    ("[].target_pid", check_pid),
    ("[].cgroup_id", check_id),
    ("[].pid_ns", check_id),
    ("[].mnt_ns", check_id),
    ("[].ts_ns", check_nonzero),
    ("[].duration_ns", check_nonzero),
    ("[].latency_ns", check_nonzero),
    ("[].sport", check_port),
    ("[].dport", check_port),
    ("[].addr", check_addr),
];

/// The central table of text filters (regex, replacement), applied to the serialized snapshot:
/// what differs per boot or per build wherever it appears in text (an error message, a verifier
/// log line), never a field [`REDACTIONS`] already covers.
pub const FILTERS: &[(&str, &str)] = &[
    // Kernel addresses (x86-64 kernel half).
    (r"\b0xffff[0-9a-f]{12}\b", "[kaddr]"),
    // The verifier's instruction count moves with the compiler and the kernel.
    (r"processed \d+ insns", "processed [N] insns"),
    // Pids in text (`pid 1234`, `pid=1234`).
    (r"\b(pid|tgid)([ =])\d+\b", "$1$2[pid]"),
    // Nanosecond timestamps in text (`ts_ns=1234`).
    (r"\b(ts_ns|time_ns)([ =])\d+\b", "$1$2[ts_ns]"),
];

/// Applies one check of [`REDACTIONS`] to insta's view of a value.
fn redact(check: Check, field: &'static str, content: Content) -> Content {
    let json = content_to_json(&content);
    match check(&json, field) {
        Ok(v) if v == json => content,
        Ok(Value::String(s)) => Content::from(s),
        Ok(v) => Content::from(v.to_string()),
        Err(why) => panic!("{CHECK_FAILED}: {why}"),
    }
}

/// The prefix of a panic raised by a failed redaction check (told apart from a drift).
const CHECK_FAILED: &str = "snapshot redaction check failed";

fn content_to_json(c: &Content) -> Value {
    match c.resolve_inner() {
        Content::Bool(b) => Value::Bool(*b),
        Content::U8(n) => Value::from(*n),
        Content::U16(n) => Value::from(*n),
        Content::U32(n) => Value::from(*n),
        Content::U64(n) => Value::from(*n),
        Content::I8(n) => Value::from(*n),
        Content::I16(n) => Value::from(*n),
        Content::I32(n) => Value::from(*n),
        Content::I64(n) => Value::from(*n),
        Content::F32(n) => Value::from(*n),
        Content::F64(n) => Value::from(*n),
        Content::String(s) => Value::from(s.as_str()),
        Content::None | Content::Unit => Value::Null,
        other => other.as_str().map_or(Value::Null, Value::from),
    }
}

/// The insta settings every snapshot is compared under: stored in `dir`, named by the scenario
/// alone, with the central redactions and filters.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::new();
    s.set_snapshot_path(dir);
    s.set_prepend_module_to_snapshot(false);
    for (selector, check) in REDACTIONS {
        let field: &'static str = selector.rsplit('.').next().unwrap_or(selector);
        let check = *check;
        s.add_dynamic_redaction(selector, move |content, _| redact(check, field, content));
    }
    for (regex, replacement) in FILTERS {
        s.add_filter(regex, *replacement);
    }
    s
}

/// The outcome of one insta assertion.
enum Asserted {
    Match,
    /// The events differ from the stored snapshot; the new snapshot's text.
    Differs(String),
    /// No snapshot is stored under the name.
    NoneStored,
    CheckFailed(String),
}

/// insta's own comparison, recording its verdict and the new text: whether an assertion
/// matched is read here, not from whether it panicked (`cargo insta test` sets
/// `INSTA_FORCE_PASS`, so a drift does not panic there).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Option<(bool, String)>>>);

impl Recorder {
    fn record(&self, pass: bool, test: &Snapshot) -> bool {
        let text = test.contents().as_text().map(ToString::to_string).unwrap_or_default();
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((pass, text));
        pass
    }
}

impl Comparator for Recorder {
    fn matches(&self, reference: &Snapshot, test: &Snapshot) -> bool {
        self.record(DefaultComparator.matches(reference, test), test)
    }

    fn matches_fully(&self, reference: &Snapshot, test: &Snapshot) -> bool {
        self.record(DefaultComparator.matches_fully(reference, test), test)
    }

    fn dyn_clone(&self) -> Box<dyn Comparator> {
        Box::new(self.clone())
    }
}

/// Runs insta's assertion of `events` as snapshot `name` (with `suffix`, `info` and
/// `description` as metadata) in `dir`. insta writes the `.snap.new` on a difference (as
/// `INSTA_UPDATE` and `.config/insta.yaml` say) and panics, unless `INSTA_FORCE_PASS`; the
/// panic is caught here.
fn assert_events(dir: &Path, name: &str, suffix: Option<&str>, info: Option<&Content>, description: Option<&str>, events: &Value) -> Asserted {
    let mut s = settings(dir);
    if let Some(suffix) = suffix {
        s.set_snapshot_suffix(suffix);
    }
    if let Some(info) = info {
        s.set_raw_info(info);
    }
    if let Some(d) = description {
        s.set_description(d);
    }
    let recorder = Recorder::default();
    s.set_comparator(Box::new(recorder.clone()));
    let outcome = s.bind(|| catch_unwind(AssertUnwindSafe(|| insta::assert_json_snapshot!(name, events))));
    if let Err(payload) = outcome {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        if let Some(i) = msg.find(CHECK_FAILED) {
            return Asserted::CheckFailed(msg[i + CHECK_FAILED.len()..].trim_start_matches(": ").to_owned());
        }
        if !msg.starts_with("snapshot assertion for ") {
            return Asserted::CheckFailed(format!("insta: {msg}"));
        }
    }
    let verdict = recorder.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    match verdict {
        Some((true, _)) => Asserted::Match,
        Some((false, new)) => Asserted::Differs(new),
        None => Asserted::NoneStored,
    }
}

/// Whether a panic is one [`compare`] raises through insta (a drift or a failed check), for a
/// panic hook that keeps them off the terminal: the comparison reports them itself.
pub fn is_snapshot_panic(message: &str) -> bool {
    message.starts_with("snapshot assertion for ") || message.contains(CHECK_FAILED)
}

/// One string field of a snapshot's `info` metadata.
pub fn info_field<'a>(info: &'a Content, key: &str) -> Option<&'a str> {
    match info.resolve_inner() {
        Content::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).and_then(|(_, v)| v.as_str()),
        Content::Struct(_, fields) => fields.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// The non-empty `info.reason` of a stored variant.
pub fn variant_reason(snapshot: &Snapshot) -> Option<&str> {
    snapshot.metadata().private_info().and_then(|i| info_field(i, "reason")).map(str::trim).filter(|r| !r.is_empty())
}

fn text_of(path: &Path) -> String {
    Snapshot::from_file(path)
        .ok()
        .and_then(|s| s.contents().as_text().map(ToString::to_string))
        .unwrap_or_default()
}

/// The stored snapshot against the new events: the changed lines with three of context (a
/// snapshot is hundreds of lines; the report shows what moved).
fn diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header("stored", "this run").to_string()
}

/// Accepts a pending file the way `cargo insta accept` does: insta rewrites it as the snapshot.
fn accept_pending(name: &str, pending: &Path, target: &Path) -> Result<(), SnapshotError> {
    let file = |message: String| SnapshotError::File { name: name.to_owned(), path: pending.to_owned(), message };
    let snapshot = Snapshot::from_file(pending)
        .map_err(|e| file(format!("{e} (insta writes no pending file with INSTA_UPDATE=no)")))?;
    snapshot.save(target).map_err(|e| file(e.to_string()))?;
    std::fs::remove_file(pending).map_err(|e| file(e.to_string()))
}

/// Compares the events one kernel produced for (monitor, scenario) with the stored snapshot,
/// through insta. `body` is the guest's normalised JSON array. On a drift it leaves one pending
/// entry for this kernel (see the crate doc) and returns the difference; with `accept` it
/// stores the events instead, as `cargo insta accept` would.
pub fn compare(workspace: &Path, kernel: &str, monitor: &str, scenario: &str, body: &str, accept: bool) -> Result<(), SnapshotError> {
    let shared_name = format!("{monitor}/{scenario}");
    let events: Value = serde_json::from_str(body).map_err(|source| SnapshotError::Body { name: shared_name.clone(), source })?;
    let dir = workspace.join(DIR).join(monitor);
    let shared = snap_path(workspace, monitor, scenario);
    let variant = variant_path(workspace, monitor, scenario, kernel);
    let check = |message: String, name: &str| SnapshotError::Check { name: name.to_owned(), kernel: kernel.to_owned(), message };

    if variant.exists() {
        let name = format!("{monitor}/{scenario}@{kernel}");
        let stored = Snapshot::from_file(&variant)
            .map_err(|e| SnapshotError::File { name: name.clone(), path: variant.clone(), message: e.to_string() })?;
        if variant_reason(&stored).is_none() {
            return Err(SnapshotError::NoReason { name, kernel: kernel.to_owned(), variant, shared });
        }
        let old = text_of(&variant);
        let info = stored.metadata().private_info().cloned();
        let pending = pending_path(&variant);
        return match assert_events(&dir, scenario, Some(kernel), info.as_ref(), stored.metadata().description(), &events) {
            Asserted::Match => Ok(()),
            Asserted::CheckFailed(why) => Err(check(why, &name)),
            Asserted::Differs(_) | Asserted::NoneStored if accept => accept_pending(&name, &pending, &variant),
            // The variant was read above; insta finding none means it went away meanwhile.
            Asserted::NoneStored => Err(SnapshotError::File { name, path: variant, message: "vanished during the comparison".to_owned() }),
            Asserted::Differs(new) => {
                Err(SnapshotError::Drifted { name, kernel: kernel.to_owned(), pending, variant, diff: diff(&old, &new) })
            }
        };
    }

    let old = text_of(&shared);
    let own_pending = pending_path(&variant);
    match assert_events(&dir, scenario, None, None, None, &events) {
        Asserted::Match => {
            // A drift an earlier run left for this kernel is resolved.
            let _ = std::fs::remove_file(&own_pending);
            Ok(())
        }
        Asserted::CheckFailed(why) => Err(check(why, &shared_name)),
        Asserted::Differs(_) | Asserted::NoneStored if accept => accept_pending(&shared_name, &pending_path(&shared), &shared),
        Asserted::NoneStored => {
            Err(SnapshotError::New { name: shared_name, kernel: kernel.to_owned(), pending: pending_path(&shared) })
        }
        Asserted::Differs(new) => {
            // The shared `.snap.new` would be overwritten by the next drifted kernel: this
            // kernel's drift is stored under its own name, for its own review.
            let _ = std::fs::remove_file(pending_path(&shared));
            let info = Content::Map(vec![
                (Content::from("kernel"), Content::from(kernel)),
                (Content::from("reason"), Content::from("")),
            ]);
            let description = format!(
                "Kernel {kernel} drifted from the shared snapshot {scenario}.snap. Accepted, this is kernel {kernel}'s variant: \
                 write in info.reason why the kernel differs. If every kernel drifted alike, change the shared snapshot instead."
            );
            let _ = assert_events(&dir, scenario, Some(kernel), Some(&info), Some(&description), &events);
            Err(SnapshotError::Drifted { name: shared_name, kernel: kernel.to_owned(), pending: own_pending, variant, diff: diff(&old, &new) })
        }
    }
}

/// What [`audit`] found wrong with the stored snapshots.
#[derive(Debug, Default, PartialEq)]
pub struct Audit {
    /// `.snap.new` / `.pending-snap` files left for review.
    pub pending: Vec<PathBuf>,
    /// Variants for a kernel the matrix never runs (neither a manifest line it boots nor the host).
    pub stale: Vec<PathBuf>,
    /// Variants without `info.reason`.
    pub unreasoned: Vec<PathBuf>,
    /// Files insta cannot read as a snapshot, with why.
    pub unreadable: Vec<(PathBuf, String)>,
    /// The live snapshots: (monitor, scenario, kernel of a variant), every one of which is
    /// re-asserted through insta by [`reassert`].
    pub live: Vec<(String, String, Option<String>)>,
}

impl Audit {
    /// Every problem, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.pending.iter().map(|p| format!("pending snapshot left for review: {} (cargo insta review)", p.display())));
        out.extend(self.stale.iter().map(|p| format!("unreferenced snapshot: {} names a kernel the matrix does not run", p.display())));
        out.extend(self.unreasoned.iter().map(|p| format!("variant without info.reason: {}", p.display())));
        out.extend(self.unreadable.iter().map(|(p, why)| format!("not an insta snapshot: {}: {why}", p.display())));
        out
    }
}

/// Checks the stored snapshots of `workspace` against the kernels the matrix runs
/// (`live_kernels`: the variant keys of the manifest's lines and of the host): no pending
/// files, no variant for any other kernel, every variant with its reason, every file insta's.
pub fn audit(workspace: &Path, live_kernels: &[String]) -> Audit {
    let mut audit = Audit::default();
    let Ok(monitors) = std::fs::read_dir(workspace.join(DIR)) else { return audit };
    let mut monitors: Vec<_> = monitors.flatten().map(|d| d.path()).filter(|p| p.is_dir()).collect();
    monitors.sort();
    for dir in monitors {
        let monitor = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut files: Vec<_> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|f| f.path()).collect();
        files.sort();
        for path in files {
            let fname = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if fname.ends_with(".snap.new") || fname.ends_with(".pending-snap") {
                audit.pending.push(path);
                continue;
            }
            let Some(stem) = fname.strip_suffix(".snap") else { continue };
            let snapshot = match Snapshot::from_file(&path) {
                Ok(s) => s,
                Err(e) => {
                    audit.unreadable.push((path, e.to_string()));
                    continue;
                }
            };
            match stem.split_once('@') {
                None => audit.live.push((monitor.clone(), stem.to_owned(), None)),
                Some((scenario, kernel)) => {
                    if variant_reason(&snapshot).is_none() {
                        audit.unreasoned.push(path);
                    } else if !live_kernels.iter().any(|k| k == kernel) {
                        audit.stale.push(path);
                    } else {
                        audit.live.push((monitor.clone(), scenario.to_owned(), Some(kernel.to_owned())));
                    }
                }
            }
        }
    }
    audit
}

/// Re-asserts every live snapshot through insta with its own stored events: proves each file
/// is the exact insta form [`compare`] writes (with `INSTA_REQUIRE_FULL_MATCH`, its metadata
/// too), and marks each as referenced for `cargo insta test --unreferenced=reject`, which then
/// rejects exactly the files [`audit`] left out (a stale variant). Returns the failures.
pub fn reassert(workspace: &Path, audit: &Audit) -> Vec<String> {
    let mut failures = Vec::new();
    for (monitor, scenario, kernel) in &audit.live {
        let path = match kernel {
            Some(k) => variant_path(workspace, monitor, scenario, k),
            None => snap_path(workspace, monitor, scenario),
        };
        let body = text_of(&path);
        // A shared snapshot is re-asserted as the kernel "shared" would be: no variant, its file.
        let result = compare(workspace, kernel.as_deref().unwrap_or("shared"), monitor, scenario, &body, false);
        if let Err(e) = result {
            failures.push(e.to_string());
        }
    }
    // The audit found nothing pending, so whatever is pending now this re-assertion wrote, under
    // names no matrix run uses (`@shared`): the failures above carry the diffs.
    for pending in audit_pending(workspace) {
        let _ = std::fs::remove_file(pending);
    }
    failures
}

fn audit_pending(workspace: &Path) -> Vec<PathBuf> {
    audit(workspace, &[]).pending
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    #[rstest]
    #[case::pid_integer(check_pid, json!(1234), Ok(json!("[pid]")))]
    #[case::pid_zero_is_a_fact(check_pid, json!(0), Ok(json!(0)))]
    #[case::pid_role(check_pid, json!("[pid:agent]"), Ok(json!("[pid:agent]")))]
    #[case::pid_interrupted(check_pid, json!("[task:interrupted]"), Ok(json!("[task:interrupted]")))]
    #[case::pid_text(check_pid, json!("1234"), Err(()))]
    #[case::pid_negative(check_pid, json!(-1), Err(()))]
    #[case::cgroup_integer(check_id, json!(77), Ok(json!("[f]")))]
    #[case::cgroup_token(check_id, json!("[f]"), Ok(json!("[f]")))]
    #[case::cgroup_text(check_id, json!("77"), Err(()))]
    #[case::ts_nonzero(check_nonzero, json!(5), Ok(json!("[f]")))]
    #[case::ts_zero(check_nonzero, json!(0), Err(()))]
    #[case::port(check_port, json!(53), Ok(json!(53)))]
    #[case::port_role(check_port, json!("[port:client]"), Ok(json!("[port:client]")))]
    #[case::port_too_big(check_port, json!(70000), Err(()))]
    #[case::addr_zero(check_addr, json!(0), Ok(json!(0)))]
    #[case::addr(check_addr, json!(140_000_000_u64), Ok(json!("[addr]")))]
    #[case::addr_text(check_addr, json!("x"), Err(()))]
    fn redactions_check_the_value(#[case] check: Check, #[case] value: Value, #[case] expected: Result<Value, ()>) {
        assert_eq!(check(&value, "f").map_err(|_| ()), expected);
    }

    #[rstest]
    #[case::kernel_address("at 0xffffffff81234567 in", "at [kaddr] in")]
    #[case::insns("processed 1234 insns (limit 1000000)", "processed [N] insns (limit 1000000)")]
    #[case::pid("child pid 4321 exited", "child pid [pid] exited")]
    #[case::ts("ts_ns=123456789", "ts_ns=[ts_ns]")]
    #[case::untouched("dport 53", "dport 53")]
    fn filters_rewrite_text(#[case] text: &str, #[case] expected: &str) {
        // The table as insta applies it: to the stored text of a snapshot.
        let dir = tempfile::tempdir().unwrap();
        compare(dir.path(), "6.1", "kernel", "f", &json!([{"detail": text}]).to_string(), true).unwrap();
        let stored = Snapshot::from_file(&snap_path(dir.path(), "kernel", "f")).unwrap();
        let stored = stored.contents().as_text().unwrap().to_string();
        assert!(stored.contains(&format!("\"detail\": \"{expected}\"")), "{stored}");
    }

    fn events(n: u64) -> String {
        serde_json::to_string_pretty(&json!([{"event": "exec", "pid": "[pid:leaf]", "n": n}])).unwrap()
    }

    #[test]
    fn a_drift_leaves_one_pending_entry_per_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        assert!(matches!(compare(ws, "6.1", "process", "s", &events(1), false), Err(SnapshotError::New { .. })));
        compare(ws, "6.1", "process", "s", &events(1), true).unwrap();
        assert!(!pending_path(&snap_path(ws, "process", "s")).exists());
        compare(ws, "6.1", "process", "s", &events(1), false).unwrap();
        for kernel in ["5.10", "6.12"] {
            let err = compare(ws, kernel, "process", "s", &events(2), false).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("drifted on kernel {kernel}")) && text.contains("-    \"n\": 1") && text.contains("+    \"n\": 2"), "{text}");
        }
        assert!(!pending_path(&snap_path(ws, "process", "s")).exists(), "no shared .snap.new to overwrite");
        for kernel in ["5.10", "6.12"] {
            let pending = pending_path(&variant_path(ws, "process", "s", kernel));
            let snapshot = Snapshot::from_file(&pending).unwrap();
            assert_eq!(snapshot.metadata().private_info().and_then(|i| info_field(i, "kernel")), Some(kernel));
        }
        // The kernel's events match again: its pending entry goes.
        compare(ws, "5.10", "process", "s", &events(1), false).unwrap();
        assert!(!pending_path(&variant_path(ws, "process", "s", "5.10")).exists());
        assert!(pending_path(&variant_path(ws, "process", "s", "6.12")).exists());
    }

    #[test]
    fn a_variant_needs_a_reason_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        compare(ws, "6.1", "network", "s", &events(1), true).unwrap();
        // A drift accepted as it is pending becomes a variant without a reason: rejected.
        let _ = compare(ws, "5.10", "network", "s", &events(2), false);
        let pending = pending_path(&variant_path(ws, "network", "s", "5.10"));
        accept_pending("t", &pending, &variant_path(ws, "network", "s", "5.10")).unwrap();
        let err = compare(ws, "5.10", "network", "s", &events(2), false).unwrap_err();
        assert!(matches!(err, SnapshotError::NoReason { .. }), "{err}");
        let text = std::fs::read_to_string(variant_path(ws, "network", "s", "5.10")).unwrap();
        std::fs::write(variant_path(ws, "network", "s", "5.10"), text.replace("reason: \"\"", "reason: old layout")).unwrap();
        compare(ws, "5.10", "network", "s", &events(2), false).unwrap();
        compare(ws, "6.1", "network", "s", &events(1), false).unwrap();
        let err = compare(ws, "5.10", "network", "s", &events(3), false).unwrap_err().to_string();
        assert!(err.contains("network/s@5.10 drifted on kernel 5.10"), "{err}");
        let pending = Snapshot::from_file(&pending_path(&variant_path(ws, "network", "s", "5.10"))).unwrap();
        assert_eq!(variant_reason(&pending), Some("old layout"));
    }

    #[test]
    fn a_raw_value_is_checked_then_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let raw = json!([{"pid": 4242, "cgroup_id": 9, "ts_ns": 17}]).to_string();
        compare(ws, "6.1", "process", "raw", &raw, true).unwrap();
        let stored = std::fs::read_to_string(snap_path(ws, "process", "raw")).unwrap();
        assert!(stored.contains("\"pid\": \"[pid]\"") && stored.contains("\"[cgroup_id]\"") && stored.contains("\"[ts_ns]\""), "{stored}");
        let bad = json!([{"pid": 4242, "cgroup_id": "nine", "ts_ns": 17}]).to_string();
        let err = compare(ws, "6.1", "process", "raw", &bad, false).unwrap_err();
        assert!(matches!(&err, SnapshotError::Check { message, .. } if message.contains("cgroup_id must be an integer")), "{err}");
    }
}
