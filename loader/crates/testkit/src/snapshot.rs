//! Normalises decoded events so one snapshot holds for every kernel and every run.
//!
//! Ids become the role a process plays in the scenario (`[pid:leaf]`), timestamps are dropped,
//! and values that differ per run are redacted only after they are checked: a redacted id must
//! be an integer, a duration must be positive, a timestamp non-zero and in order, a cgroup the
//! one the scenario ran in. A failed check is an error, never a silent pass.

use serde_json::{Map, Value};
use thiserror::Error;

/// A value that should have been redacted did not have the shape the redaction asserts.
#[derive(Debug, Error, PartialEq)]
#[error("snapshot: event {index} field {field}: {problem} (event: {event})")]
pub struct NormalizeError {
    pub index: usize,
    pub field: String,
    pub problem: &'static str,
    pub event: String,
}

/// How to name the processes and ports of one scenario run.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// (process id, role) pairs: the scenario's own processes.
    pub pids: Vec<(u64, String)>,
    /// The workload's executable path, shown as `[exe]` in filename and argv.
    pub exe: String,
    /// (port, role) pairs: the ephemeral ports the scenario bound or was given, shown as
    /// `[port:role]` in `sport`/`dport`. Ports not listed (53, 0 of an unconnected socket) stay as
    /// they are: they are fixed by the scenario, and an unexpected one must show up as drift.
    pub ports: Vec<(u16, String)>,
    /// The cgroup v2 ids the scenario's processes ran in. When given, every event's `cgroup_id`
    /// that names a task or socket of the scenario must be one of them (still shown redacted); an
    /// event whose task is whatever the kernel interrupted is exempt, unless its cgroup is the
    /// socket's.
    pub cgroups: Vec<u64>,
}

/// How far a record's `ts_ns` may be behind the one read before it. Records are stamped before
/// they are committed, so two CPUs can commit in the other order: by the time between the stamp
/// and the commit, microseconds, or as long as the host deschedules an emulated CPU (TCG) in
/// between. Past this, the order is a bug, not a race.
pub const TS_SKEW_NS: u64 = 100_000_000;

impl Roles {
    fn role(&self, pid: u64) -> Value {
        // Pid 0 is not a process of the scenario but a fact (no target, the idle task): kept.
        if pid == 0 {
            return Value::from(0);
        }
        Value::String(
            self.pids.iter().find(|(p, _)| *p == pid).map_or_else(|| "[pid:other]".to_owned(), |(_, r)| format!("[pid:{r}]")),
        )
    }

    fn port(&self, port: u16) -> Value {
        self.ports.iter().find(|(p, _)| *p == port).map_or_else(|| Value::from(port), |(_, r)| Value::String(format!("[port:{r}]")))
    }
}

const ID_FIELDS: &[&str] = &["pid", "tgid", "ppid", "child_tgid", "target_pid"];
const PORT_FIELDS: &[&str] = &["sport", "dport"];
const POSITIVE_FIELDS: &[&str] = &["duration_ns", "latency_ns"];
/// Namespace inode numbers are allocated at run time (only the initial ones are fixed, and only
/// since 6.18), so they are checked and redacted like cgroup ids.
const INTEGER_FIELDS: &[&str] = &["cgroup_id", "pid_ns", "mnt_ns"];
/// User-space addresses (ptrace's `addr`) move with ASLR: non-zero ones are redacted; 0 (the
/// requests that take no address) is kept.
const ADDRESS_FIELDS: &[&str] = &["addr"];
/// Syscall numbers differ per architecture (close is 3 on x86-64, 57 on arm64), so the ones the
/// scenarios make are shown by name, from the table of the architecture this code is built for
/// (the guest's: it runs on the kernel it reports). A number not here stays a number, and shows
/// as drift.
const SYSCALL_NAMES: &[(libc::c_long, &str)] = &[
    (libc::SYS_read, "read"),
    (libc::SYS_write, "write"),
    (libc::SYS_openat, "openat"),
    (libc::SYS_close, "close"),
];

/// The task fields of an event whose task is not attributable (see [`unattributed`]).
const TASK_FIELDS: &[&str] = &["pid", "tgid", "comm", "uid"];

/// Whether an event's task fields name whatever task the kernel happened to be running rather than
/// the owner of what the event describes: a network event without a known owner
/// (`owner_known: false`, e.g. an accept completed in softirq), or a kernel-monitor socket event
/// (that monitor attributes sockets by their cgroup, never by task). Which task that is depends
/// on scheduling (the caller, another thread, ksoftirqd), so its fields are checked, then shown as
/// `[task:interrupted]`.
fn unattributed(obj: &Map<String, Value>) -> bool {
    obj.get("owner_known") == Some(&Value::Bool(false))
        || (obj.get("monitor").and_then(Value::as_str) == Some("kernel") && obj.contains_key("sock_cgroup"))
}

/// Normalises `events` (output-contract JSON objects) and sorts them into a stable order.
pub fn normalize(events: &[Value], roles: &Roles) -> Result<Vec<Value>, NormalizeError> {
    let exe_comm: String = roles.exe.rsplit('/').next().unwrap_or_default().chars().take(15).collect();
    let mut out = Vec::with_capacity(events.len());
    let mut last_ts = 0u64;
    for (index, event) in events.iter().enumerate() {
        let fail = |field: &str, problem| NormalizeError { index, field: field.to_owned(), problem, event: event.to_string() };
        let Some(obj) = event.as_object() else {
            return Err(fail("", "not an object"));
        };
        let mut n = Map::new();
        let unowned = unattributed(obj);
        // The socket's own cgroup names the scenario even when the task does not. The xdp
        // monitor's records are the loader's counters: no task, cgroup 0 by contract.
        let cgroup_is_ours = (!unowned || obj.get("sock_cgroup") == Some(&Value::Bool(true)))
            && obj.get("monitor").and_then(Value::as_str) != Some("xdp");
        // A `timeout` is the loader's, stamped with its query's deadline and written when the
        // window ends, after records stamped later: in order in event time, not in the list.
        let synthesized = obj.get("event").and_then(Value::as_str) == Some("timeout");
        for (k, v) in obj {
            let k = k.as_str();
            let value = if k == "ts_ns" {
                let ts = v.as_u64().filter(|&t| t > 0).ok_or_else(|| fail(k, "must be a non-zero integer"))?;
                if synthesized {
                    continue;
                }
                if ts.saturating_add(TS_SKEW_NS) < last_ts {
                    return Err(fail(k, "earlier than the record before it by more than TS_SKEW_NS"));
                }
                last_ts = last_ts.max(ts);
                continue;
            } else if k == "cgroup_id" && !roles.cgroups.is_empty() && cgroup_is_ours {
                let id = v.as_u64().ok_or_else(|| fail(k, "must be an integer"))?;
                if !roles.cgroups.contains(&id) {
                    return Err(fail(k, "not a cgroup the scenario ran in"));
                }
                Value::String(format!("[{k}]"))
            } else if unowned && TASK_FIELDS.contains(&k) {
                if k != "comm" {
                    v.as_u64().ok_or_else(|| fail(k, "id is not an integer"))?;
                }
                Value::String("[task:interrupted]".to_owned())
            } else if ID_FIELDS.contains(&k) {
                roles.role(v.as_u64().ok_or_else(|| fail(k, "id is not an integer"))?)
            } else if PORT_FIELDS.contains(&k) {
                let port = v.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| fail(k, "port is not a 16-bit integer"))?;
                roles.port(port)
            } else if ADDRESS_FIELDS.contains(&k) {
                match v.as_u64() {
                    Some(0) => Value::from(0),
                    Some(_) => Value::String(format!("[{k}]")),
                    None => return Err(fail(k, "address is not an integer")),
                }
            } else if POSITIVE_FIELDS.contains(&k) {
                match v.as_u64() {
                    Some(x) if x > 0 => Value::String(format!("[{k}]")),
                    _ => return Err(fail(k, "must be a positive integer")),
                }
            } else if k == "syscall_nr" {
                let nr = v.as_i64().ok_or_else(|| fail(k, "must be an integer"))?;
                #[expect(clippy::useless_conversion, reason = "c_long is i64 only on 64-bit targets; the conversion keeps this portable")]
                let named = SYSCALL_NAMES.iter().find(|(n, _)| i64::from(*n) == nr);
                match named {
                    Some((_, name)) => Value::String(format!("[syscall:{name}]")),
                    None => v.clone(),
                }
            } else if INTEGER_FIELDS.contains(&k) {
                v.as_u64().ok_or_else(|| fail(k, "must be an integer"))?;
                Value::String(format!("[{k}]"))
            } else if (k == "filename" && v.as_str() == Some(roles.exe.as_str()))
                || (k == "comm" && !exe_comm.is_empty() && v.as_str() == Some(exe_comm.as_str()))
            {
                Value::String("[exe]".to_owned())
            } else if k == "argv" {
                let args = v.as_array().ok_or_else(|| fail(k, "argv is not an array"))?;
                Value::Array(
                    args.iter()
                        .map(|a| if a.as_str() == Some(roles.exe.as_str()) { Value::String("[exe]".to_owned()) } else { a.clone() })
                        .collect(),
                )
            } else {
                v.clone()
            };
            n.insert(k.to_owned(), value);
        }
        out.push(Value::Object(n));
    }
    // Kernel order differs between CPUs and runs; the sorted text is what is compared.
    out.sort_by_key(|v| v.to_string());
    Ok(out)
}

/// The text stored in a snapshot: one pretty JSON array.
pub fn render(events: &[Value]) -> String {
    serde_json::to_string_pretty(events).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn roles() -> Roles {
        Roles {
            pids: vec![(10, "agent".into()), (11, "leaf".into())],
            exe: "/init".into(),
            ports: vec![(40001, "client".into())],
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn syscall_numbers_of_this_architecture_are_named_and_others_kept() {
        let e = |nr: libc::c_long| json!({"monitor": "advanced", "event": "syscall", "ts_ns": 1, "syscall_nr": nr});
        let out = normalize(&[e(libc::SYS_close), e(999)], &Roles::default()).unwrap();
        let names: Vec<&Value> = out.iter().map(|v| &v["syscall_nr"]).collect();
        assert!(names.contains(&&json!("[syscall:close]")), "{out:?}");
        assert!(names.contains(&&json!(999)), "an unknown number must stay visible: {out:?}");
        let bad = normalize(&[json!({"ts_ns": 1, "syscall_nr": "x"})], &Roles::default()).unwrap_err();
        assert_eq!(bad.field, "syscall_nr");
    }

    #[test]
    fn ids_become_roles_and_values_are_checked() {
        let events = vec![json!({"ts_ns": 5, "pid": 11, "tgid": 11, "ppid": 10, "comm": "init", "filename": "/init",
            "argv": ["/init", "x"], "cgroup_id": 1, "duration_ns": 3})];
        let n = normalize(&events, &roles()).unwrap();
        assert_eq!(n[0], json!({"pid": "[pid:leaf]", "tgid": "[pid:leaf]", "ppid": "[pid:agent]", "comm": "[exe]",
            "filename": "[exe]", "argv": ["[exe]", "x"], "cgroup_id": "[cgroup_id]", "duration_ns": "[duration_ns]"}));
    }

    #[test]
    fn redactions_assert() {
        let zero = vec![json!({"duration_ns": 0})];
        assert_eq!(normalize(&zero, &roles()).unwrap_err().field, "duration_ns");
        let text = vec![json!({"pid": "12"})];
        assert_eq!(normalize(&text, &roles()).unwrap_err().problem, "id is not an integer");
    }

    #[test]
    fn ports_become_roles_and_unowned_tasks_are_redacted() {
        let owned = json!({"monitor": "network", "owner_known": true, "pid": 10, "tgid": 10, "comm": "init", "uid": 0,
            "sport": 40001, "dport": 53, "addr": 0});
        let unowned = json!({"monitor": "network", "owner_known": false, "pid": 99, "tgid": 99, "comm": "ksoftirqd/0",
            "uid": 0, "sport": 0, "dport": 40001, "target_pid": 0});
        let n = normalize(&[owned, unowned], &roles()).unwrap();
        assert_eq!(n[1], json!({"monitor": "network", "owner_known": false, "pid": "[task:interrupted]",
            "tgid": "[task:interrupted]", "comm": "[task:interrupted]", "uid": "[task:interrupted]", "sport": 0,
            "dport": "[port:client]", "target_pid": 0}));
        assert_eq!(n[0], json!({"monitor": "network", "owner_known": true, "pid": "[pid:agent]", "tgid": "[pid:agent]",
            "comm": "[exe]", "uid": 0, "sport": "[port:client]", "dport": 53, "addr": 0}));
        let bad_port = vec![json!({"sport": 70000})];
        assert_eq!(normalize(&bad_port, &roles()).unwrap_err().problem, "port is not a 16-bit integer");
        let text_pid = vec![json!({"monitor": "kernel", "sock_cgroup": true, "pid": "x"})];
        assert_eq!(normalize(&text_pid, &roles()).unwrap_err().field, "pid");
        let addr = vec![json!({"addr": 140_000_000_u64})];
        assert_eq!(normalize(&addr, &roles()).unwrap()[0], json!({"addr": "[addr]"}));
    }

    /// issue 15, item 10: a zero or out-of-order timestamp and a cgroup other than the scenario's
    /// fail, where they used to be redacted unseen.
    #[test]
    fn timestamps_and_cgroups_are_checked_before_they_are_dropped() {
        let mut r = roles();
        r.cgroups = vec![7];
        let ok = vec![json!({"ts_ns": 100, "cgroup_id": 7}), json!({"ts_ns": 200, "cgroup_id": 7})];
        assert_eq!(normalize(&ok, &r).unwrap(), vec![json!({"cgroup_id": "[cgroup_id]"}); 2]);
        let zero = vec![json!({"ts_ns": 0, "cgroup_id": 7})];
        assert_eq!(normalize(&zero, &r).unwrap_err().problem, "must be a non-zero integer");
        let backwards = vec![json!({"ts_ns": 5 * TS_SKEW_NS}), json!({"ts_ns": TS_SKEW_NS})];
        assert_eq!(normalize(&backwards, &r).unwrap_err().index, 1);
        let skewed = vec![json!({"ts_ns": 1000}), json!({"ts_ns": 900})];
        assert!(normalize(&skewed, &r).is_ok(), "two CPUs may commit in the other order");
        let foreign = vec![json!({"ts_ns": 1, "cgroup_id": 8})];
        assert_eq!(normalize(&foreign, &r).unwrap_err().problem, "not a cgroup the scenario ran in");
        // Whatever task a softirq interrupted may be in any cgroup, unless the socket's is given.
        let interrupted = json!({"ts_ns": 1, "monitor": "network", "owner_known": false, "cgroup_id": 8, "pid": 1});
        assert!(normalize(&[interrupted], &r).is_ok());
        let sock = json!({"ts_ns": 1, "monitor": "kernel", "sock_cgroup": true, "cgroup_id": 8, "pid": 1});
        assert_eq!(normalize(&[sock], &r).unwrap_err().field, "cgroup_id");
    }
}
