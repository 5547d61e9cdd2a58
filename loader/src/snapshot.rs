//! Normalises decoded events so one snapshot holds for every kernel and every run.
//!
//! Ids become the role a process plays in the scenario (`[pid:leaf]`), timestamps are dropped,
//! and values that differ per run are redacted only after they are checked: a redacted id must
//! be an integer, a duration must be positive. A failed check is an error, never a silent pass.

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

/// How to name the processes of one scenario run.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// (process id, role) pairs: the scenario's own processes.
    pub pids: Vec<(u64, String)>,
    /// The workload's executable path, shown as `[exe]` in filename and argv.
    pub exe: String,
}

impl Roles {
    fn role(&self, pid: u64) -> String {
        self.pids.iter().find(|(p, _)| *p == pid).map_or_else(|| "[pid:other]".to_owned(), |(_, r)| format!("[pid:{r}]"))
    }
}

const ID_FIELDS: &[&str] = &["pid", "tgid", "ppid", "child_tgid"];
const POSITIVE_FIELDS: &[&str] = &["duration_ns", "latency_ns"];
const INTEGER_FIELDS: &[&str] = &["cgroup_id", "pid_ns"];

/// Normalises `events` (output-contract JSON objects) and sorts them into a stable order.
pub fn normalize(events: &[Value], roles: &Roles) -> Result<Vec<Value>, NormalizeError> {
    let exe_comm: String = roles.exe.rsplit('/').next().unwrap_or_default().chars().take(15).collect();
    let mut out = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let fail = |field: &str, problem| NormalizeError { index, field: field.to_owned(), problem, event: event.to_string() };
        let Some(obj) = event.as_object() else {
            return Err(fail("", "not an object"));
        };
        let mut n = Map::new();
        for (k, v) in obj {
            let k = k.as_str();
            let value = if k == "ts_ns" {
                continue;
            } else if ID_FIELDS.contains(&k) {
                Value::String(roles.role(v.as_u64().ok_or_else(|| fail(k, "id is not an integer"))?))
            } else if POSITIVE_FIELDS.contains(&k) {
                match v.as_u64() {
                    Some(x) if x > 0 => Value::String(format!("[{k}]")),
                    _ => return Err(fail(k, "must be a positive integer")),
                }
            } else if INTEGER_FIELDS.contains(&k) {
                v.as_u64().ok_or_else(|| fail(k, "must be an integer"))?;
                Value::String(format!("[{k}]"))
            } else if k == "filename" && v.as_str() == Some(roles.exe.as_str()) {
                Value::String("[exe]".to_owned())
            } else if k == "comm" && !exe_comm.is_empty() && v.as_str() == Some(exe_comm.as_str()) {
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
        Roles { pids: vec![(10, "agent".into()), (11, "leaf".into())], exe: "/init".into() }
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
}
