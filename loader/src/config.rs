//! The `tapio-load run` configuration: a TOML file, overridden by `TAPIO_<KEY>` environment
//! variables, overridden by command-line flags (defaults < file < environment < flags).
//!
//! Every layer is read into the same [`Partial`] (all keys optional, unknown keys refused), the
//! layers are merged key by key, and the result is validated once into a [`Config`]. Errors name
//! the key and say what was expected, because an operator reading a crash-looping pod's log has
//! nothing else to go on.
//!
//! [`KEYS`] is the one table describing each key; `tapio-load config reference` prints it as the
//! Markdown in docs/operations.md, and tests check the table, the struct and the document agree.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

use tapio_abi::advanced::ADVANCED_BATCH_MAX;
use tapio_runtime::filter::{comm_key, KeySet, Mode};

use crate::{
    output::sink::SinkSpec,
    filter::{Filters, Names, PathPattern, Scope},
    monitors::{self, advanced, advanced::AdvancedOptions},
};

/// Where `metrics_address` points when nothing says otherwise: loopback, so the endpoint is not
/// exposed beyond the node unless an operator chooses to.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";

/// Why a configuration was refused. Every message starts with the key (or file) at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config {path}: read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, has an unknown key or a value of the wrong type.
    #[error("config {path}: {key}{message}")]
    Parse { path: PathBuf, key: String, message: String },
    /// An environment variable could not be read as its key's type.
    #[error("environment {var}: expected {expected}, got `{value}`")]
    Env { var: String, expected: &'static str, value: String },
    /// A key that nothing would read with this configuration.
    #[error("config key {key}: refused: nothing reads it: {why}")]
    Unread { key: String, why: String },
    /// A value of the right type that cannot work.
    #[error("config key {key}: expected {expected}, got {got}")]
    Invalid { key: String, expected: String, got: String },
}

/// The type of a key, as the reference prints it and as environment values are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    String,
    StringList,
    IntegerList,
    /// `true` or `false` (`1`/`0` in the environment too).
    Boolean,
    /// A table of monitor name to a rate in [0, 1].
    RateTable,
    /// A table of syscall name to a rate in [0, 1].
    SyscallRateTable,
    /// An array of sink tables (`[[sinks]]`); an inline TOML array in the environment.
    Sinks,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Integer => "integer",
            Kind::String => "string",
            Kind::StringList => "list of strings",
            Kind::IntegerList => "list of integers",
            Kind::Boolean => "boolean",
            Kind::RateTable => "table of monitor = rate",
            Kind::SyscallRateTable => "table of syscall = rate",
            Kind::Sinks => "array of sink tables",
        }
    }
}

/// One configuration key, as documented.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub key: &'static str,
    pub kind: Kind,
    /// The default as it would be written in the file (`-` when unset means "none").
    pub default: &'static str,
    /// The `tapio-load run` flag, if there is one.
    pub flag: Option<&'static str>,
    /// A valid example value in TOML syntax (tests load every example).
    pub example: &'static str,
    pub doc: &'static str,
}

/// Every key the file accepts. The environment variable of a key is `TAPIO_` + its name in
/// upper case; lists are comma-separated there, the rate table is `monitor=rate,...`.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "monitors", kind: Kind::StringList, default: "[\"process\"]", flag: Some("--monitors"), example: "[\"process\", \"advanced\"]", doc: "Monitors to load and attach, by name; an unknown name is refused with the list of known ones." },
    KeyDoc { key: "dns_ports", kind: Kind::IntegerList, default: "[53]", flag: Some("--dns-ports"), example: "[53, 5353]", doc: "UDP/TCP ports whose traffic the dns monitor parses, and whose UDP flows the network monitor reports; at most 4, each 1-65535." },
    KeyDoc { key: "argv_max", kind: Kind::Integer, default: "32", flag: Some("--argv-max"), example: "16", doc: "At most this many argv entries per exec event; more sets argv_truncated. At least 1. Reloaded on SIGHUP." },
    KeyDoc { key: "dns_timeout_ms", kind: Kind::Integer, default: "5000", flag: Some("--dns-timeout-ms"), example: "2000", doc: "Milliseconds a dns query waits for its response before a timeout event. At least 1. Reloaded on SIGHUP." },
    KeyDoc { key: "ring_size", kind: Kind::Integer, default: "-", flag: Some("--ring-size"), example: "262144", doc: "Ring buffer size in bytes per monitor: a power of two and a multiple of 4096. Unset keeps the object's size." },
    KeyDoc { key: "delivery", kind: Kind::String, default: "\"batched\"", flag: Some("--delivery"), example: "\"immediate\"", doc: "When records wake the reader. `batched`: without a wake-up until the buffer is a quarter full, the reader draining on a timer that backs off from 0.5 ms to `delivery_bound_ms` while idle. `immediate`: a wake-up per record and no timer (costs the kernel about 4 µs more per record)." },
    KeyDoc { key: "delivery_bound_ms", kind: Kind::Integer, default: "10", flag: Some("--delivery-bound-ms"), example: "20", doc: "Under `batched`, the reader's drain timer never waits longer than this less 2 ms, so a record reaches the output within this many milliseconds of its emission however quiet the node is. 1-1000." },
    KeyDoc { key: "btf", kind: Kind::String, default: "-", flag: Some("--btf"), example: "\"/var/lib/tapio/vmlinux.btf\"", doc: "BTF file to relocate against instead of /sys/kernel/btf/vmlinux." },
    KeyDoc { key: "btf_dir", kind: Kind::String, default: "-", flag: Some("--btf-dir"), example: "\"/var/lib/tapio/btf\"", doc: "Directory of `<kernel release>.btf` files, used when the kernel has no /sys/kernel/btf/vmlinux and `btf` is unset." },
    KeyDoc { key: "output", kind: Kind::String, default: "\"stdout\"", flag: Some("--output-file"), example: "\"/var/log/tapio/events.jsonl\"", doc: "Where JSON lines go: `stdout` or a file path." },
    KeyDoc { key: "output_queue_events", kind: Kind::Integer, default: "16384", flag: None, example: "65536", doc: "Events that may wait for the output writer thread, 64-1048576. When the reader of the output stalls, batches beyond this are dropped and counted in `tapio_output_dropped_total`; the loader, `/healthz` and the metrics keep answering." },
    KeyDoc { key: "sinks", kind: Kind::Sinks, default: "-", flag: None, example: "[{ kind = \"stdout\" }, { kind = \"file\", path = \"/var/log/tapio/events.jsonl\", max_bytes = 104857600, keep = 5 }, { kind = \"otlp\", endpoint = \"http://127.0.0.1:4317\", when_full = \"drop\" }]", doc: "Where events go, every sink seeing the same events after the same filters: `[[sinks]]` tables, each with `kind` = `stdout`, `file` (`path`, `max_bytes` (0: never rotate, default 104857600), `keep` rotated files (default 5)) or `otlp` (`endpoint` http://host:port, `batch_events` 1-65536 (default 512), `timeout_ms` (default 10000)), and `name`, `queue_events` (64-1048576, default `output_queue_events`), `when_full` = `drop` (default: drop and count) or `block` (wait, so the kernel's buffers drop instead). Unset: one `stdout` sink, or the `output` file. See Exports." },
    KeyDoc { key: "metrics_address", kind: Kind::String, default: "\"127.0.0.1:9464\"", flag: Some("--metrics-address"), example: "\"0.0.0.0:9464\"", doc: "Address of the Prometheus endpoint (/metrics, /healthz), or `off`." },
    KeyDoc { key: "pin_path", kind: Kind::String, default: "-", flag: Some("--pin-path"), example: "\"/sys/fs/bpf/tapio\"", doc: "bpffs directory where links and maps are pinned so programs stay attached across restarts; a start that finds pins there adopts them. Unset: nothing outlives the loader." },
    KeyDoc { key: "strict", kind: Kind::Boolean, default: "false", flag: Some("--strict"), example: "true", doc: "A monitor that fails to load or attach stops the loader (exit 1). Unset: the loader runs the monitors that did load, reports each failure with the kernel's reason (log, `/healthz`, `tapio_monitor_failed`) and exits only when none loaded." },
    KeyDoc { key: "in_container_fallback", kind: Kind::Boolean, default: "false", flag: None, example: "true", doc: "Before 6.18 the security monitor's `in_container` compares each mount namespace with pid 1's, read from `/proc/1/ns/mnt` (needs CAP_SYS_PTRACE in a container). Unset, an unreadable reference fails the security monitor with the reason; true, it runs and decides `in_container` by the pid namespace alone. 6.18+ has a fixed reference and never needs it." },
    KeyDoc { key: "cri_socket", kind: Kind::String, default: "-", flag: None, example: "\"/run/k3s/containerd/containerd.sock\"", doc: "The node's CRI runtime socket, asked once per new container for its pod name, namespace, container name and image (`pod_name`, `pod_namespace`, `container_name`, `container_image`, `pod_labels`). Unset: the first socket found of /run/containerd/containerd.sock, /run/crio/crio.sock and the same under /var/run; none found, events carry no names. `off`: never asked." },
    KeyDoc { key: "sampling", kind: Kind::RateTable, default: "{}", flag: None, example: "{ advanced = 0.5 }", doc: "Fraction of events kept, 0.0-1.0 (1.0 when absent), per monitor that samples: only `advanced` does (in the kernel, before the buffer); a rate for another monitor is refused, since nothing would read it." },
    KeyDoc { key: "syscall_sampling", kind: Kind::SyscallRateTable, default: "{}", flag: None, example: "{ read = 0.1, write = 0.5 }", doc: "The advanced monitor's kept fraction per watched syscall (`read`, `write`, `openat`, `close`), 0.0-1.0, overriding `sampling.advanced` for that syscall. Reloaded live." },
    KeyDoc { key: "dedup_window_ms", kind: Kind::Integer, default: "0", flag: None, example: "500", doc: "The advanced monitor reports identical events within this window once (with a suppressed count); 0 disables. At most 60000. Reloaded live." },
    KeyDoc { key: "batch_size", kind: Kind::Integer, default: "64", flag: None, example: "32", doc: "The advanced monitor's events per ring record, 1-64 (a record's capacity). Reloaded live." },
    KeyDoc { key: "flush_interval_ms", kind: Kind::Integer, default: "100", flag: None, example: "50", doc: "The advanced monitor sends a partial record at most this long after its first event, 1-10000. Reloaded live." },
    KeyDoc { key: "filter_include_uids", kind: Kind::IntegerList, default: "-", flag: None, example: r#"[0, 65534]"#, doc: "Keep only events of these user ids (the task's real uid), filtered in the kernel by the process and security monitors, in the agent for the others. At most 256. Refused together with `filter_exclude_uids`. Reloaded live." },
    KeyDoc { key: "filter_exclude_uids", kind: Kind::IntegerList, default: "-", flag: None, example: r#"[0, 65534]"#, doc: "Drop events of these user ids (the task's real uid), filtered in the kernel by the process and security monitors, in the agent for the others. At most 256. Reloaded live." },
    KeyDoc { key: "filter_include_comms", kind: Kind::StringList, default: "-", flag: None, example: r#"["sshd", "kubelet"]"#, doc: "Keep only events of these comms (the task's name, up to 15 bytes; longer names are cut as the kernel cuts them), filtered in the kernel by the process and security monitors, in the agent for the others. At most 256. Refused together with `filter_exclude_comms`. Reloaded live." },
    KeyDoc { key: "filter_exclude_comms", kind: Kind::StringList, default: "-", flag: None, example: r#"["sshd", "kubelet"]"#, doc: "Drop events of these comms (the task's name, up to 15 bytes; longer names are cut as the kernel cuts them), filtered in the kernel by the process and security monitors, in the agent for the others. At most 256. Reloaded live." },
    KeyDoc { key: "filter_include_namespaces", kind: Kind::StringList, default: "-", flag: None, example: r#"["kube-system"]"#, doc: "Keep only events of these Kubernetes namespaces (the attribution's `pod_namespace`). The kernel excludes the cgroups the agent has found out (as it learns each pod's names); the agent applies it to every event. Refused together with `filter_exclude_namespaces`. Reloaded live." },
    KeyDoc { key: "filter_exclude_namespaces", kind: Kind::StringList, default: "-", flag: None, example: r#"["kube-system"]"#, doc: "Drop events of these Kubernetes namespaces (the attribution's `pod_namespace`). Resolved to cgroup ids the kernel filters as the agent learns each pod's names; also applied in the agent. Reloaded live." },
    KeyDoc { key: "filter_include_pod_labels", kind: Kind::StringList, default: "-", flag: None, example: r#"["app=web"]"#, doc: "Keep only events of these pod labels as `key=value` (the attribution's `pod_labels`); an event matches when its pod has any of them. Resolved to cgroup ids like namespaces. Refused together with `filter_exclude_pod_labels`. Reloaded live." },
    KeyDoc { key: "filter_exclude_pod_labels", kind: Kind::StringList, default: "-", flag: None, example: r#"["app=web"]"#, doc: "Drop events of these pod labels as `key=value` (the attribution's `pod_labels`); an event matches when its pod has any of them. Resolved to cgroup ids like namespaces. Reloaded live." },
    KeyDoc { key: "filter_include_container_names", kind: Kind::StringList, default: "-", flag: None, example: r#"["istio-proxy"]"#, doc: "Keep only events of these container names (the attribution's `container_name`). Resolved to cgroup ids like namespaces. Refused together with `filter_exclude_container_names`. Reloaded live." },
    KeyDoc { key: "filter_exclude_container_names", kind: Kind::StringList, default: "-", flag: None, example: r#"["istio-proxy"]"#, doc: "Drop events of these container names (the attribution's `container_name`). Resolved to cgroup ids like namespaces. Reloaded live." },
    KeyDoc { key: "filter_include_binaries", kind: Kind::StringList, default: "-", flag: None, example: r#"["/usr/bin/curl", "/opt/app/*"]"#, doc: "Keep only events of these executable paths, exact or a prefix ending in `*`; applied in the agent to events that carry the executable (exec). Refused together with `filter_exclude_binaries`. Reloaded live." },
    KeyDoc { key: "filter_exclude_binaries", kind: Kind::StringList, default: "-", flag: None, example: r#"["/usr/bin/curl", "/opt/app/*"]"#, doc: "Drop events of these executable paths, exact or a prefix ending in `*`; applied in the agent to events that carry the executable (exec). Reloaded live." },
    KeyDoc { key: "filter_scope", kind: Kind::String, default: "\"all\"", flag: None, example: "\"containers\"", doc: "Host vs container: `all`, `host` (processes outside any pod or container cgroup) or `containers` (only those inside one; needs attribution). Resolved to a cgroup id set the kernel filters. Reloaded live." },
];

/// One layer (file, environment or flags): every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partial {
    pub monitors: Option<Vec<String>>,
    pub dns_ports: Option<Vec<i64>>,
    pub argv_max: Option<i64>,
    pub dns_timeout_ms: Option<i64>,
    pub ring_size: Option<i64>,
    pub delivery: Option<String>,
    pub delivery_bound_ms: Option<i64>,
    pub btf: Option<PathBuf>,
    pub btf_dir: Option<PathBuf>,
    pub output: Option<String>,
    pub output_queue_events: Option<i64>,
    pub sinks: Option<Vec<SinkPartial>>,
    pub metrics_address: Option<String>,
    pub pin_path: Option<PathBuf>,
    pub strict: Option<bool>,
    pub in_container_fallback: Option<bool>,
    pub cri_socket: Option<String>,
    pub sampling: Option<BTreeMap<String, f64>>,
    pub syscall_sampling: Option<BTreeMap<String, f64>>,
    pub dedup_window_ms: Option<i64>,
    pub batch_size: Option<i64>,
    pub flush_interval_ms: Option<i64>,
    pub filter_include_uids: Option<Vec<i64>>,
    pub filter_exclude_uids: Option<Vec<i64>>,
    pub filter_include_comms: Option<Vec<String>>,
    pub filter_exclude_comms: Option<Vec<String>>,
    pub filter_include_namespaces: Option<Vec<String>>,
    pub filter_exclude_namespaces: Option<Vec<String>>,
    pub filter_include_pod_labels: Option<Vec<String>>,
    pub filter_exclude_pod_labels: Option<Vec<String>>,
    pub filter_include_container_names: Option<Vec<String>>,
    pub filter_exclude_container_names: Option<Vec<String>>,
    pub filter_include_binaries: Option<Vec<String>>,
    pub filter_exclude_binaries: Option<Vec<String>>,
    pub filter_scope: Option<String>,
}

impl Partial {
    /// `over`'s keys win; the rate tables merge per entry.
    pub fn merge(self, over: Partial) -> Partial {
        fn tables(base: Option<BTreeMap<String, f64>>, top: Option<BTreeMap<String, f64>>) -> Option<BTreeMap<String, f64>> {
            match (base, top) {
                (Some(mut base), Some(top)) => {
                    base.extend(top);
                    Some(base)
                }
                (base, top) => top.or(base),
            }
        }
        let sampling = tables(self.sampling, over.sampling);
        let syscall_sampling = tables(self.syscall_sampling, over.syscall_sampling);
        Partial {
            monitors: over.monitors.or(self.monitors),
            dns_ports: over.dns_ports.or(self.dns_ports),
            argv_max: over.argv_max.or(self.argv_max),
            dns_timeout_ms: over.dns_timeout_ms.or(self.dns_timeout_ms),
            ring_size: over.ring_size.or(self.ring_size),
            delivery: over.delivery.or(self.delivery),
            delivery_bound_ms: over.delivery_bound_ms.or(self.delivery_bound_ms),
            btf: over.btf.or(self.btf),
            btf_dir: over.btf_dir.or(self.btf_dir),
            output: over.output.or(self.output),
            output_queue_events: over.output_queue_events.or(self.output_queue_events),
            sinks: over.sinks.or(self.sinks),
            metrics_address: over.metrics_address.or(self.metrics_address),
            pin_path: over.pin_path.or(self.pin_path),
            strict: over.strict.or(self.strict),
            in_container_fallback: over.in_container_fallback.or(self.in_container_fallback),
            cri_socket: over.cri_socket.or(self.cri_socket),
            sampling,
            syscall_sampling,
            dedup_window_ms: over.dedup_window_ms.or(self.dedup_window_ms),
            batch_size: over.batch_size.or(self.batch_size),
            flush_interval_ms: over.flush_interval_ms.or(self.flush_interval_ms),
            filter_include_uids: over.filter_include_uids.or(self.filter_include_uids),
            filter_exclude_uids: over.filter_exclude_uids.or(self.filter_exclude_uids),
            filter_include_comms: over.filter_include_comms.or(self.filter_include_comms),
            filter_exclude_comms: over.filter_exclude_comms.or(self.filter_exclude_comms),
            filter_include_namespaces: over.filter_include_namespaces.or(self.filter_include_namespaces),
            filter_exclude_namespaces: over.filter_exclude_namespaces.or(self.filter_exclude_namespaces),
            filter_include_pod_labels: over.filter_include_pod_labels.or(self.filter_include_pod_labels),
            filter_exclude_pod_labels: over.filter_exclude_pod_labels.or(self.filter_exclude_pod_labels),
            filter_include_container_names: over.filter_include_container_names.or(self.filter_include_container_names),
            filter_exclude_container_names: over.filter_exclude_container_names.or(self.filter_exclude_container_names),
            filter_include_binaries: over.filter_include_binaries.or(self.filter_include_binaries),
            filter_exclude_binaries: over.filter_exclude_binaries.or(self.filter_exclude_binaries),
            filter_scope: over.filter_scope.or(self.filter_scope),
        }
    }
}

/// Which CRI socket names the containers (the `cri_socket` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriSocket {
    /// The first of tapio-cri's default sockets that exists.
    Probe,
    /// Never asked: events carry no names.
    Off,
    Path(PathBuf),
}

/// One `[[sinks]]` table as written: every key optional, unknown keys refused; validated by
/// [`Config::from_partial`], which refuses a key the sink's kind does not read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkPartial {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub queue_events: Option<i64>,
    pub when_full: Option<String>,
    pub path: Option<PathBuf>,
    pub max_bytes: Option<i64>,
    pub keep: Option<i64>,
    pub endpoint: Option<String>,
    pub batch_events: Option<i64>,
    pub timeout_ms: Option<i64>,
}

/// Default size at which a `file` sink rotates.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of rotated files a `file` sink keeps.
pub const DEFAULT_FILE_KEEP: usize = 5;

/// Validates the `[[sinks]]` tables; `queue_events` is the default bound of each queue.
fn sinks(tables: &[SinkPartial], queue_events: u64) -> Result<Vec<SinkSpec>, ConfigError> {
    use crate::output::sink::{SinkKind, WhenFull};
    if tables.is_empty() {
        return Err(invalid("sinks", "at least one sink", "an empty list"));
    }
    let mut out: Vec<SinkSpec> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let at = |key: &str| format!("sinks[{i}].{key}");
        let unread = |key: &str, kind: &str| ConfigError::Unread { key: at(key), why: format!("a sink of kind `{kind}` does not read it") };
        let kind_name = t.kind.as_deref().ok_or_else(|| invalid(&at("kind"), "`stdout`, `file` or `otlp`", "nothing"))?;
        let file_keys = [("path", t.path.is_some()), ("max_bytes", t.max_bytes.is_some()), ("keep", t.keep.is_some())];
        let otlp_keys = [("endpoint", t.endpoint.is_some()), ("batch_events", t.batch_events.is_some()), ("timeout_ms", t.timeout_ms.is_some())];
        let refuse = |keys: &[(&str, bool)]| match keys.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(unread(key, kind_name)),
            None => Ok(()),
        };
        let kind = match kind_name {
            "stdout" => {
                refuse(&file_keys)?;
                refuse(&otlp_keys)?;
                SinkKind::Stdout
            }
            "file" => {
                refuse(&otlp_keys)?;
                let path = t.path.clone().filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| invalid(&at("path"), "a file path", "nothing"))?;
                SinkKind::File {
                    path,
                    max_bytes: in_range(&at("max_bytes"), t.max_bytes, DEFAULT_FILE_MAX_BYTES as i64, 0, i64::MAX)? as u64,
                    keep: in_range(&at("keep"), t.keep, DEFAULT_FILE_KEEP as i64, 0, 1000)? as usize,
                    truncate: false,
                }
            }
            "otlp" => {
                refuse(&file_keys)?;
                let endpoint = t.endpoint.clone().ok_or_else(|| invalid(&at("endpoint"), "http://host:port", "nothing"))?;
                let valid = endpoint.strip_prefix("http://").is_some_and(|rest| !rest.is_empty()) && endpoint.parse::<tonic::transport::Uri>().is_ok();
                if !valid {
                    return Err(invalid(&at("endpoint"), "http://host:port (plaintext gRPC)", format!("`{endpoint}`")));
                }
                SinkKind::Otlp(crate::output::otlp::OtlpOptions {
                    endpoint,
                    batch_events: in_range(&at("batch_events"), t.batch_events, crate::output::otlp::DEFAULT_BATCH_EVENTS as i64, 1, 65_536)? as usize,
                    timeout: std::time::Duration::from_millis(in_range(&at("timeout_ms"), t.timeout_ms, 10_000, 1, 600_000)? as u64),
                })
            }
            other => return Err(invalid(&at("kind"), "`stdout`, `file` or `otlp`", format!("`{other}`"))),
        };
        let when_full = match t.when_full.as_deref() {
            None | Some("drop") => WhenFull::Drop,
            Some("block") => WhenFull::Block,
            Some(other) => return Err(invalid(&at("when_full"), "`drop` or `block`", format!("`{other}`"))),
        };
        let name = match &t.name {
            Some(name) if name.is_empty() => return Err(invalid(&at("name"), "a name", "an empty string")),
            Some(name) => name.clone(),
            None => {
                let same = out.iter().filter(|s| s.kind.name() == kind.name()).count();
                if same == 0 { kind.name().to_owned() } else { format!("{}-{}", kind.name(), same + 1) }
            }
        };
        if out.iter().any(|s| s.name == name) {
            return Err(invalid(&at("name"), "a name no other sink has", format!("`{name}`")));
        }
        if let SinkKind::File { path, .. } = &kind {
            if out.iter().any(|s| matches!(&s.kind, SinkKind::File { path: p, .. } if p == path)) {
                return Err(invalid(&at("path"), "a file no other sink writes", path.display()));
            }
        }
        let queue_events = in_range(&at("queue_events"), t.queue_events, queue_events as i64, 64, 1 << 20)? as u64;
        out.push(SinkSpec { name, kind, queue_events, when_full });
    }
    Ok(out)
}

/// Where events are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub monitors: Vec<&'static monitors::MonitorSpec>,
    pub dns_ports: Vec<u16>,
    pub argv_max: usize,
    pub dns_timeout_ms: u64,
    pub ring_size: Option<u32>,
    /// The delivery policy and the reader's bound (crate::transport).
    pub delivery: crate::transport::Delivery,
    pub btf: Option<PathBuf>,
    pub btf_dir: Option<PathBuf>,
    pub output: Output,
    /// Bound of the output writer's queue, in events (crate::output::sink), and the default
    /// bound of every sink's.
    pub output_queue_events: u64,
    /// The sinks (crate::output::sink): `[[sinks]]`, else one from `output`.
    pub sinks: Vec<SinkSpec>,
    /// None: `off`.
    pub metrics_address: Option<SocketAddr>,
    /// Whether some layer set `metrics_address`: then failing to bind it is fatal, while a
    /// busy default port only warns (several loaders on one host, as in tests, must coexist).
    pub metrics_address_explicit: bool,
    /// `--pin-path`: see crate::pin.
    pub pin_path: Option<PathBuf>,
    /// A monitor that fails stops the run (else: degrade, see crate::run).
    pub strict: bool,
    /// See the `in_container_fallback` key.
    pub in_container_fallback: bool,
    /// See the `cri_socket` key.
    pub cri_socket: CriSocket,
    pub sampling: BTreeMap<String, f64>,
    /// The advanced monitor's rate per watched syscall, by name.
    pub syscall_sampling: BTreeMap<String, f64>,
    pub dedup_window_ms: u64,
    pub batch_size: u32,
    pub flush_interval_ms: u64,
    /// The source filters (crate::filter).
    pub filters: crate::filter::Filters,
}

fn invalid(key: &str, expected: impl Into<String>, got: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), expected: expected.into(), got: got.to_string() }
}

fn in_range(key: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(key, format!("an integer from {min} to {max}"), v));
    }
    Ok(v)
}

fn known_monitors() -> String {
    monitors::MONITORS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

impl Config {
    /// Validates a merged layer, filling defaults.
    pub fn from_partial(p: Partial) -> Result<Config, ConfigError> {
        let filters = filters(&p)?;
        // A name filter with the CRI socket off could never match: no event would carry names.
        if p.cri_socket.as_deref() == Some("off") {
            for (what, names) in [("namespaces", &filters.namespace), ("pod_labels", &filters.pod_label), ("container_names", &filters.container_name)] {
                if let Some(names) = names {
                    let side = if names.mode == Mode::Include { "include" } else { "exclude" };
                    return Err(ConfigError::Unread {
                        key: format!("filter_{side}_{what}"),
                        why: "cri_socket is `off`, so no event carries the pod and container names it matches".to_owned(),
                    });
                }
            }
        }
        let names = p.monitors.unwrap_or_else(|| vec!["process".to_owned()]);
        if names.is_empty() {
            return Err(invalid("monitors", format!("at least one of {}", known_monitors()), "[]"));
        }
        let monitors = names
            .iter()
            .map(|n| {
                monitors::monitor(n)
                    .ok_or_else(|| invalid("monitors", format!("one of {}", known_monitors()), format!("unknown monitor `{n}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let raw_ports = p.dns_ports.unwrap_or_else(|| vec![i64::from(monitors::dns::DEFAULT_DNS_PORT)]);
        if raw_ports.is_empty() || raw_ports.len() > 4 {
            return Err(invalid("dns_ports", "1 to 4 ports", format!("{} ports", raw_ports.len())));
        }
        let dns_ports = raw_ports
            .iter()
            .map(|&port| u16::try_from(port).ok().filter(|&p| p != 0).ok_or_else(|| invalid("dns_ports", "ports from 1 to 65535", port)))
            .collect::<Result<Vec<_>, _>>()?;

        let argv_max = in_range("argv_max", p.argv_max, 32, 1, 4096)? as usize;
        let dns_timeout_ms = in_range("dns_timeout_ms", p.dns_timeout_ms, 5000, 1, 3_600_000)? as u64;
        let ring_size = match p.ring_size {
            None => None,
            Some(size) => {
                let ok = size >= 4096 && size <= i64::from(u32::MAX) && (size as u64).is_power_of_two();
                if !ok {
                    return Err(invalid("ring_size", "a power of two, at least 4096 (a page multiple), in bytes", size));
                }
                Some(size as u32)
            }
        };
        let policy = match p.delivery.as_deref() {
            None => crate::transport::DeliveryPolicy::default(),
            Some(name) => name.parse().map_err(|_| invalid("delivery", "`batched` or `immediate`", format!("`{name}`")))?,
        };
        let default_bound = crate::transport::DEFAULT_BOUND.as_millis() as i64;
        let delivery = crate::transport::Delivery {
            policy,
            bound_ms: in_range("delivery_bound_ms", p.delivery_bound_ms, default_bound, 1, 1000)? as u64,
        };
        let output = match p.output.as_deref() {
            None | Some("stdout") | Some("-") => Output::Stdout,
            Some("") => return Err(invalid("output", "`stdout` or a file path", "an empty string")),
            Some(path) => Output::File(PathBuf::from(path)),
        };
        let metrics_address_explicit = p.metrics_address.is_some();
        let metrics_address = match p.metrics_address.as_deref().unwrap_or(DEFAULT_METRICS_ADDRESS) {
            "off" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|_| invalid("metrics_address", "host:port with an IP address (e.g. 127.0.0.1:9464) or `off`", format!("`{addr}`")))?),
        };
        let output_queue_events =
            in_range("output_queue_events", p.output_queue_events, crate::output::sink::DEFAULT_QUEUE_EVENTS as i64, 64, 1 << 20)? as u64;
        let advanced = monitors::advanced::SPEC.name;
        let sampling = p.sampling.clone().unwrap_or_default();
        for (monitor, &rate) in &sampling {
            let key = format!("sampling.{monitor}");
            if monitors::monitor(monitor).is_none() {
                return Err(invalid(&key, format!("a monitor name ({})", known_monitors()), format!("unknown monitor `{monitor}`")));
            }
            if monitor != advanced {
                return Err(ConfigError::Unread {
                    key,
                    why: format!("the {monitor} monitor does not sample; only the advanced monitor samples its events (in the kernel)"),
                });
            }
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(&key, "a rate from 0.0 to 1.0", rate));
            }
        }
        let syscall_sampling = p.syscall_sampling.clone().unwrap_or_default();
        for (syscall, &rate) in &syscall_sampling {
            let key = format!("syscall_sampling.{syscall}");
            if monitors::advanced::watched_syscall(syscall).is_none() {
                let names: Vec<&str> = monitors::advanced::WATCHED.iter().map(|(n, _)| *n).collect();
                return Err(invalid(&key, format!("a syscall the advanced monitor watches ({})", names.join(", ")), format!("`{syscall}`")));
            }
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(&key, "a rate from 0.0 to 1.0", rate));
            }
        }
        // The advanced monitor's keys do nothing unless it runs: refused, so that a setting an
        // operator believes in is never silently inert.
        if !monitors.iter().any(|m| m.name == advanced) {
            let set = [
                ("sampling.advanced", sampling.contains_key(advanced)),
                ("syscall_sampling", p.syscall_sampling.is_some()),
                ("dedup_window_ms", p.dedup_window_ms.is_some()),
                ("batch_size", p.batch_size.is_some()),
                ("flush_interval_ms", p.flush_interval_ms.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
                return Err(ConfigError::Unread {
                    key: (*key).to_owned(),
                    why: "only the advanced monitor reads it, and `monitors` does not include advanced".to_owned(),
                });
            }
        }
        let sinks = match &p.sinks {
            None => vec![SinkSpec::legacy(
                match &output {
                    Output::Stdout => None,
                    Output::File(path) => Some(path.clone()),
                },
                output_queue_events,
            )],
            Some(_) if p.output.is_some() => {
                return Err(ConfigError::Unread { key: "output".into(), why: "`sinks` is set: add a `file` or `stdout` sink there instead".into() })
            }
            Some(tables) => sinks(tables, output_queue_events)?,
        };
        Ok(Config {
            filters,
            monitors,
            dns_ports,
            argv_max,
            dns_timeout_ms,
            ring_size,
            delivery,
            btf: p.btf,
            btf_dir: p.btf_dir,
            output,
            output_queue_events,
            sinks,
            metrics_address,
            metrics_address_explicit,
            pin_path: match p.pin_path {
                Some(path) if path.as_os_str().is_empty() => return Err(invalid("pin_path", "a directory on a bpffs", "an empty string")),
                other => other,
            },
            strict: p.strict.unwrap_or(false),
            in_container_fallback: p.in_container_fallback.unwrap_or(false),
            cri_socket: match p.cri_socket.as_deref() {
                None => CriSocket::Probe,
                Some("off") => CriSocket::Off,
                Some("") => return Err(invalid("cri_socket", "a socket path or `off`", "an empty string")),
                Some(path) => CriSocket::Path(PathBuf::from(path)),
            },
            sampling,
            syscall_sampling,
            dedup_window_ms: in_range("dedup_window_ms", p.dedup_window_ms, 0, 0, 60_000)? as u64,
            batch_size: in_range("batch_size", p.batch_size, ADVANCED_BATCH_MAX as i64, 1, ADVANCED_BATCH_MAX as i64)? as u32,
            flush_interval_ms: in_range("flush_interval_ms", p.flush_interval_ms, 100, 1, 10_000)? as u64,
        })
    }

    /// The BTF file to relocate against: `btf`, else `<btf_dir>/<release>.btf` when the kernel
    /// has no BTF of its own, else None (the kernel's).
    pub fn btf_path(&self, release: &str) -> Option<PathBuf> {
        if let Some(btf) = &self.btf {
            return Some(btf.clone());
        }
        let dir = self.btf_dir.as_ref()?;
        if Path::new("/sys/kernel/btf/vmlinux").exists() {
            return None;
        }
        Some(dir.join(format!("{release}.btf")))
    }
}

/// One include/exclude pair of keys: at most one may be set.
fn pair<T: Clone>(name: &str, include: &Option<Vec<T>>, exclude: &Option<Vec<T>>) -> Result<Option<(Mode, Vec<T>)>, ConfigError> {
    match (include, exclude) {
        (Some(_), Some(_)) => Err(invalid(
            &format!("filter_include_{name}"),
            format!("either filter_include_{name} or filter_exclude_{name}, not both"),
            "both set",
        )),
        (Some(keys), None) => Ok(Some((Mode::Include, keys.clone()))),
        (None, Some(keys)) => Ok(Some((Mode::Exclude, keys.clone()))),
        (None, None) => Ok(None),
    }
}

fn key_of(mode: Mode, name: &str) -> String {
    format!("filter_{}_{name}", if mode == Mode::Include { "include" } else { "exclude" })
}

fn names(name: &str, include: &Option<Vec<String>>, exclude: &Option<Vec<String>>) -> Result<Option<Names>, ConfigError> {
    let Some((mode, values)) = pair(name, include, exclude)? else { return Ok(None) };
    if let Some(empty) = values.iter().find(|v| v.is_empty()) {
        return Err(invalid(&key_of(mode, name), "non-empty names", format!("`{empty}`")));
    }
    Ok(Some(Names { mode, values: values.into_iter().collect() }))
}

/// The `filter_*` keys, validated.
fn filters(p: &Partial) -> Result<Filters, ConfigError> {
    let uid = match pair("uids", &p.filter_include_uids, &p.filter_exclude_uids)? {
        None => None,
        Some((mode, uids)) => {
            let key = key_of(mode, "uids");
            let keys = uids
                .iter()
                .map(|&u| u32::try_from(u).map_err(|_| invalid(&key, "uids from 0 to 4294967295", u)))
                .collect::<Result<BTreeSet<u32>, _>>()?;
            if keys.len() > tapio_runtime::filter::UID_MAX {
                return Err(invalid(&key, format!("at most {} uids", tapio_runtime::filter::UID_MAX), keys.len()));
            }
            Some(KeySet { mode, keys })
        }
    };
    let comm = match pair("comms", &p.filter_include_comms, &p.filter_exclude_comms)? {
        None => None,
        Some((mode, comms)) => {
            let key = key_of(mode, "comms");
            if let Some(bad) = comms.iter().find(|c| c.is_empty() || c.contains('\0')) {
                return Err(invalid(&key, "non-empty comms without NUL", format!("{bad:?}")));
            }
            let keys: BTreeSet<[u8; 16]> = comms.iter().map(|c| comm_key(c)).collect();
            if keys.len() > tapio_runtime::filter::COMM_MAX {
                return Err(invalid(&key, format!("at most {} comms", tapio_runtime::filter::COMM_MAX), keys.len()));
            }
            Some(KeySet { mode, keys })
        }
    };
    let scope = match p.filter_scope.as_deref() {
        None | Some("all") => Scope::All,
        Some("host") => Scope::Host,
        Some("containers") => Scope::Containers,
        Some(other) => return Err(invalid("filter_scope", "`all`, `host` or `containers`", format!("`{other}`"))),
    };
    let pod_label = names("pod_labels", &p.filter_include_pod_labels, &p.filter_exclude_pod_labels)?;
    if let Some(labels) = &pod_label {
        if let Some(bad) = labels.values.iter().find(|l| !matches!(l.split_once('='), Some((k, _)) if !k.is_empty())) {
            return Err(invalid(&key_of(labels.mode, "pod_labels"), "labels as `key=value`", format!("`{bad}`")));
        }
    }
    let binary = match pair("binaries", &p.filter_include_binaries, &p.filter_exclude_binaries)? {
        None => None,
        Some((mode, paths)) => {
            if let Some(bad) = paths.iter().find(|b| !b.starts_with('/')) {
                return Err(invalid(&key_of(mode, "binaries"), "absolute paths, a trailing `*` for a prefix", format!("`{bad}`")));
            }
            Some((mode, paths.iter().map(|b| PathPattern::parse(b)).collect()))
        }
    };
    Ok(Filters {
        uid,
        comm,
        scope,
        namespace: names("namespaces", &p.filter_include_namespaces, &p.filter_exclude_namespaces)?,
        pod_label,
        container_name: names("container_names", &p.filter_include_container_names, &p.filter_exclude_container_names)?,
        binary,
    })
}

/// Turns a toml error into one line naming the key: the message, plus the key found at the
/// error's position (toml reports a type error's position, not its key).
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e
        .message()
        .trim()
        .replace('\n', " ")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number");
    let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let key = e
        .span()
        .and_then(|span| key_at(text, span.start))
        .filter(|key| !message.contains(&format!("`{}`", key.rsplit('.').next().unwrap_or(key))))
        .map(|key| format!("key {key}: "))
        .unwrap_or_default();
    let path = match line {
        Some(line) => PathBuf::from(format!("{}:{line}", path.display())),
        None => path.to_owned(),
    };
    ConfigError::Parse { path, key, message }
}

/// The dotted key whose value is at byte `offset`: the `key =` on that line, prefixed by the
/// last `[table]` header above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let table = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')).map(str::trim));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// Reads one file layer.
pub fn read_file(path: &Path) -> Result<Partial, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_str(path, &text)
}

/// Parses one file layer from text (`path` only names it in errors).
pub fn parse_str(path: &Path, text: &str) -> Result<Partial, ConfigError> {
    toml::from_str(text).map_err(|e| parse_error(path, text, &e))
}

/// The environment layer: `TAPIO_<KEY>` for each key of [`KEYS`]; other variables are ignored
/// (`TAPIO_LOG` belongs to logging).
pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Partial, ConfigError> {
    let mut table = toml::Table::new();
    for (var, value) in vars {
        let Some(doc) = var.strip_prefix("TAPIO_").and_then(|k| KEYS.iter().find(|d| d.key.eq_ignore_ascii_case(k))) else {
            continue;
        };
        let bad = |expected: &'static str| ConfigError::Env { var: var.clone(), expected, value: value.clone() };
        let int = |s: &str| s.trim().parse::<i64>().map(toml::Value::Integer);
        let items = || value.split(',').map(str::trim).filter(|s| !s.is_empty());
        let parsed = match doc.kind {
            Kind::Integer => int(&value).map_err(|_| bad("an integer"))?,
            Kind::String => toml::Value::String(value.clone()),
            Kind::Boolean => match value.trim() {
                "true" | "1" => toml::Value::Boolean(true),
                "false" | "0" => toml::Value::Boolean(false),
                _ => return Err(bad("true or false")),
            },
            Kind::StringList => toml::Value::Array(items().map(|s| toml::Value::String(s.to_owned())).collect()),
            Kind::IntegerList => toml::Value::Array(
                items().map(int).collect::<Result<_, _>>().map_err(|_| bad("comma-separated integers"))?,
            ),
            // An inline TOML array of tables: `[{ kind = "otlp", endpoint = "http://..." }]`.
            Kind::Sinks => toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| bad("an inline TOML array of sink tables"))?,
            Kind::RateTable | Kind::SyscallRateTable => {
                let mut rates = toml::Table::new();
                let (form, numeric) = match doc.kind {
                    Kind::RateTable => ("monitor=rate,...", "monitor=rate,... with numeric rates"),
                    _ => ("syscall=rate,...", "syscall=rate,... with numeric rates"),
                };
                for item in items() {
                    let (name, rate) = item.split_once('=').ok_or_else(|| bad(form))?;
                    let rate = rate.trim().parse::<f64>().map_err(|_| bad(numeric))?;
                    rates.insert(name.trim().to_owned(), toml::Value::Float(rate));
                }
                toml::Value::Table(rates)
            }
        };
        table.insert(doc.key.to_owned(), parsed);
    }
    Partial::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
        path: PathBuf::from("(environment)"),
        key: String::new(),
        message: e.to_string(),
    })
}

/// Merges defaults < file < environment < flags and validates the result.
pub fn resolve(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Partial,
) -> Result<Config, ConfigError> {
    let file = file.map(read_file).transpose()?.unwrap_or_default();
    Config::from_partial(file.merge(from_env(env)?).merge(flags))
}

/// What SIGHUP re-reads: the file, under the environment and flags captured at start (they
/// keep precedence over the file after a reload, as they did at start).
#[derive(Debug, Clone)]
pub struct Reload {
    pub file: PathBuf,
    pub overrides: Partial,
}

impl Reload {
    /// Reads and validates the file again; on error the caller keeps the previous values.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::from_partial(read_file(&self.file)?.merge(self.overrides.clone()))
    }
}

/// The configuration reference as Markdown, generated from [`KEYS`]; docs/operations.md holds
/// exactly this text (a test checks it).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| Key | Type | Default | Environment | Flag | Meaning |\n|---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | `TAPIO_{}` | {} | {} |\n",
            k.key,
            k.kind.describe(),
            k.default,
            k.key.to_ascii_uppercase(),
            k.flag.map_or_else(|| "-".to_owned(), |f| format!("`{f}`")),
            k.doc,
        ));
    }
    out
}

/// The advanced monitor's options (tapio-runtime's `monitors::advanced`) that the
/// configuration keys give (`sampling.advanced`, `syscall_sampling`, `dedup_window_ms`,
/// `batch_size`, `flush_interval_ms`); the rest keep their defaults.
pub fn advanced_options(c: &Config) -> AdvancedOptions {
    AdvancedOptions {
        batch_size: c.batch_size,
        flush_interval: std::time::Duration::from_millis(c.flush_interval_ms),
        dedup_window: std::time::Duration::from_millis(c.dedup_window_ms),
        sampling: c.sampling.get(advanced::SPEC.name).copied().unwrap_or(1.0),
        // Validated by crate::config: every name is a watched syscall.
        rates: c.syscall_sampling.iter().filter_map(|(name, &rate)| Some((advanced::watched_syscall(name)?, rate))).collect(),
        ..AdvancedOptions::default()
    }
}

/// A reload (SIGHUP or a change of the watched file): applies the re-read configuration to every
/// loaded advanced object. A failed map write only warns; the running values stay.
pub fn reload_advanced<'a>(objects: impl IntoIterator<Item = &'a aya::Ebpf>, config: &Config) {
    let options = advanced_options(config);
    for ebpf in objects {
        if ebpf.map(advanced::CONFIG_MAP).is_none() {
            continue;
        }
        match advanced::apply(ebpf, &options) {
            Ok(()) => tracing::info!(
                batch_size = options.batch_size,
                sampling = options.sampling,
                syscall_sampling = ?config.syscall_sampling,
                dedup_window_ms = options.dedup_window.as_millis() as u64,
                "reload: advanced monitor reconfigured"
            ),
            Err(e) => tracing::warn!("reload: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        Config::from_partial(parse_str(Path::new("t.toml"), text)?)
    }

    /// `sinks` replaces `output`, which is refused beside it, and a filter's include and exclude
    /// keys refuse each other: each combination is checked apart, every other key with it.
    #[rstest]
    fn every_documented_key_accepts_its_example(
        #[values("filter_include_", "filter_exclude_")] side: &str,
        #[values("sinks", "output")] apart: &str,
    ) {
        let text: String =
            KEYS.iter().filter(|k| !k.key.starts_with(side) && k.key != apart).map(|k| format!("{} = {}\n", k.key, k.example)).collect();
        check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn every_field_is_documented() {
        // serde lists every field it accepts in the unknown-field message.
        let e = parse_str(Path::new("t.toml"), "zzz = 1").unwrap_err().to_string();
        let fields: Vec<&str> = e.split('`').skip(3).step_by(2).collect();
        let keys: Vec<&str> = KEYS.iter().map(|k| k.key).collect();
        assert_eq!(fields, keys, "{e}");
    }

    #[test]
    fn defaults() {
        let c = check("").unwrap();
        assert_eq!(c.argv_max, 32);
        assert_eq!(c.dns_ports, vec![53]);
        assert_eq!(c.metrics_address, Some(DEFAULT_METRICS_ADDRESS.parse().unwrap()));
        assert!(!c.metrics_address_explicit);
        assert_eq!(c.output, Output::Stdout);
        assert_eq!(c.delivery, crate::transport::Delivery::default());
        assert_eq!(c.delivery.policy, crate::transport::DeliveryPolicy::Batched);
        assert!(c.delivery.bound_ms <= 20, "the default bound is documented as at most 20 ms");
        assert_eq!(KEYS.iter().find(|k| k.key == "delivery_bound_ms").map(|k| k.default), Some(c.delivery.bound_ms.to_string().as_str()));
    }

    #[rstest]
    #[case("colour = 1", "colour")]
    #[case("argv_max = \"many\"", "argv_max")]
    #[case("argv_max = 0", "argv_max")]
    #[case("ring_size = -4096", "ring_size")]
    #[case("ring_size = 5000", "ring_size")]
    #[case("monitors = [\"nope\"]", "monitors")]
    #[case("dns_ports = [0]", "dns_ports")]
    #[case("metrics_address = \"localhost\"", "metrics_address")]
    #[case("[sampling]\ndns = 1.5", "sampling.dns")]
    #[case("[sampling]\nnope = 0.5", "sampling.nope")]
    #[case("[sampling]\ndns = \"half\"", "sampling.dns")]
    #[case("monitors = [\"advanced\"]\nbatch_size = 0", "batch_size")]
    #[case("monitors = [\"advanced\"]\nbatch_size = 65", "batch_size")]
    #[case("monitors = [\"advanced\"]\n[syscall_sampling]\nexecve = 0.5", "syscall_sampling.execve")]
    #[case("monitors = [\"advanced\"]\n[syscall_sampling]\nread = 2.0", "syscall_sampling.read")]
    #[case("output_queue_events = 1", "output_queue_events")]
    #[case("strict = \"yes\"", "strict")]
    #[case("[[sinks]]\npath = \"/x\"", "sinks[0].kind")]
    #[case("[[sinks]]\nkind = \"kafka\"", "sinks[0].kind")]
    #[case("[[sinks]]\nkind = \"stdout\"\n[[sinks]]\nkind = \"file\"", "sinks[1].path")]
    #[case("[[sinks]]\nkind = \"otlp\"", "sinks[0].endpoint")]
    #[case("[[sinks]]\nkind = \"otlp\"\nendpoint = \"collector:4317\"", "sinks[0].endpoint")]
    #[case("[[sinks]]\nkind = \"stdout\"\nwhen_full = \"wait\"", "sinks[0].when_full")]
    #[case("[[sinks]]\nkind = \"stdout\"\nqueue_events = 1", "sinks[0].queue_events")]
    #[case("[[sinks]]\nkind = \"stdout\"\ncolour = 1", "colour")]
    #[case("[[sinks]]\nkind = \"file\"\npath = \"/a\"\n[[sinks]]\nkind = \"file\"\npath = \"/a\"", "sinks[1].path")]
    #[case("sinks = []", "sinks")]
    #[case("monitors = [\"advanced\"]\ndedup_window_ms = -1", "dedup_window_ms")]
    #[case("delivery = \"lazy\"", "delivery")]
    #[case("delivery_bound_ms = 0", "delivery_bound_ms")]
    #[case("delivery_bound_ms = 5000", "delivery_bound_ms")]
    fn bad_configurations_name_their_key(#[case] text: &str, #[case] key: &str) {
        let e = check(text).expect_err(text).to_string();
        assert!(e.contains(key), "{text:?}: {e}");
        assert!(!e.contains('\n'), "{text:?}: one line expected: {e}");
    }

    /// A key nothing would read is refused with the reason: sampling for a monitor that does not
    /// sample, and the advanced monitor's keys when it is not asked for.
    #[rstest]
    #[case("monitors = [\"process\"]\n[sampling]\nprocess = 1.0", "sampling.process", "the process monitor does not sample")]
    #[case("monitors = [\"dns\", \"advanced\"]\n[sampling]\ndns = 0.5", "sampling.dns", "only the advanced monitor samples")]
    #[case("[sampling]\nadvanced = 0.5", "sampling.advanced", "`monitors` does not include advanced")]
    #[case("dedup_window_ms = 500", "dedup_window_ms", "only the advanced monitor reads it")]
    #[case("batch_size = 32", "batch_size", "only the advanced monitor reads it")]
    #[case("flush_interval_ms = 50", "flush_interval_ms", "only the advanced monitor reads it")]
    #[case("[syscall_sampling]\nread = 0.5", "syscall_sampling", "only the advanced monitor reads it")]
    #[case("[[sinks]]\nkind = \"stdout\"\npath = \"/x\"", "sinks[0].path", "a sink of kind `stdout` does not read it")]
    #[case("[[sinks]]\nkind = \"file\"\npath = \"/x\"\nendpoint = \"http://a:1\"", "sinks[0].endpoint", "a sink of kind `file` does not read it")]
    #[case("[[sinks]]\nkind = \"otlp\"\nendpoint = \"http://a:1\"\nkeep = 2", "sinks[0].keep", "a sink of kind `otlp` does not read it")]
    #[case("output = \"/x\"\n[[sinks]]\nkind = \"stdout\"", "output", "`sinks` is set")]
    fn keys_nothing_reads_are_refused_with_the_reason(#[case] text: &str, #[case] key: &str, #[case] why: &str) {
        let e = check(text).expect_err(text).to_string();
        assert!(e.starts_with(&format!("config key {key}: refused: nothing reads it: ")) && e.contains(why), "{text:?}: {e}");
    }

    /// The keys nothing reads without the advanced monitor are read, and applied, with it.
    #[test]
    fn the_advanced_keys_apply_with_the_advanced_monitor() {
        // The same keys with the advanced monitor asked for are read, and applied.
        let c = check("monitors = [\"advanced\"]\ndedup_window_ms = 500\nbatch_size = 32\n[sampling]\nadvanced = 0.5\n[syscall_sampling]\nread = 0.1\n").unwrap();
        let options = advanced_options(&c);
        assert_eq!((options.batch_size, options.sampling), (32, 0.5));
        assert_eq!(options.rates.get(&(libc::SYS_read as u32)), Some(&0.1));
        assert_eq!(options.kernel_config(1).batch_size, 32);
    }

    /// Without `sinks`, one sink reproduces what `output` always did; `[[sinks]]` gives each
    /// sink its kind, bound and choice, the bound defaulting to `output_queue_events`.
    #[test]
    fn sinks_default_to_the_output_and_read_their_tables() {
        use crate::output::sink::{SinkKind, WhenFull};
        let c = check("").unwrap();
        assert_eq!(c.sinks, vec![SinkSpec::legacy(None, 16_384)]);
        let c = check("output = \"/tmp/e.jsonl\"\noutput_queue_events = 64").unwrap();
        assert_eq!(c.sinks, vec![SinkSpec::legacy(Some("/tmp/e.jsonl".into()), 64)]);
        let c = check(
            "output_queue_events = 128\n[[sinks]]\nkind = \"stdout\"\n[[sinks]]\nkind = \"file\"\npath = \"/a\"\nmax_bytes = 4096\nkeep = 2\nwhen_full = \"block\"\n[[sinks]]\nkind = \"otlp\"\nname = \"collector\"\nendpoint = \"http://127.0.0.1:4317\"\nqueue_events = 1024",
        )
        .unwrap();
        let names: Vec<&str> = c.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["stdout", "file", "collector"]);
        assert_eq!(c.sinks[1].kind, SinkKind::File { path: "/a".into(), max_bytes: 4096, keep: 2, truncate: false });
        assert_eq!((c.sinks[1].when_full, c.sinks[1].queue_events), (WhenFull::Block, 128));
        assert_eq!((c.sinks[2].when_full, c.sinks[2].queue_events), (WhenFull::Drop, 1024));
        let env = from_env([("TAPIO_SINKS".to_owned(), "[{ kind = \"otlp\", endpoint = \"http://10.0.0.1:4317\" }]".to_owned())]).unwrap();
        let c = Config::from_partial(env).unwrap();
        assert!(matches!(&c.sinks[0].kind, SinkKind::Otlp(o) if o.endpoint == "http://10.0.0.1:4317"));
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let file = parse_str(Path::new("t"), "monitors = [\"advanced\"]\nargv_max = 4\ndns_timeout_ms = 10\nbatch_size = 7").unwrap();
        let env = from_env([
            ("TAPIO_ARGV_MAX".to_owned(), "5".to_owned()),
            ("TAPIO_DNS_TIMEOUT_MS".to_owned(), "11".to_owned()),
            ("TAPIO_LOG".to_owned(), "debug".to_owned()),
        ])
        .unwrap();
        let flags = Partial { argv_max: Some(6), ..Partial::default() };
        let c = Config::from_partial(file.merge(env).merge(flags)).unwrap();
        assert_eq!((c.argv_max, c.dns_timeout_ms, c.batch_size, c.flush_interval_ms), (6, 11, 7, 100));
    }

    #[test]
    fn env_lists_and_rates() {
        let env = from_env([
            ("TAPIO_MONITORS".to_owned(), "process,advanced".to_owned()),
            ("TAPIO_SAMPLING".to_owned(), "advanced=0.5".to_owned()),
            ("TAPIO_SYSCALL_SAMPLING".to_owned(), "read=0.1, close=0".to_owned()),
            ("TAPIO_STRICT".to_owned(), "true".to_owned()),
        ])
        .unwrap();
        let c = Config::from_partial(env).unwrap();
        assert_eq!(c.monitors.iter().map(|m| m.name).collect::<Vec<_>>(), ["process", "advanced"]);
        assert_eq!(c.sampling["advanced"], 0.5);
        assert_eq!((c.syscall_sampling["read"], c.syscall_sampling["close"]), (0.1, 0.0));
        assert!(c.strict);
        let e = from_env([("TAPIO_ARGV_MAX".to_owned(), "x".to_owned())]).unwrap_err().to_string();
        assert!(e.contains("TAPIO_ARGV_MAX"), "{e}");
    }

    /// The security monitor's fallback is an explicit choice: off unless a layer sets it.
    #[test]
    fn name_filters_are_refused_with_the_cri_socket_off() {
        let e = check("cri_socket = \"off\"\nfilter_include_namespaces = [\"prod\"]\n").unwrap_err().to_string();
        assert!(e.contains("filter_include_namespaces") && e.contains("cri_socket is `off`"), "{e}");
        check("cri_socket = \"off\"\nfilter_exclude_uids = [0]\n").expect("a uid filter needs no names");
    }

    #[test]
    fn cri_socket_is_probed_unless_set_or_off() {
        let env = |v: &str| [("TAPIO_CRI_SOCKET".to_owned(), v.to_owned())];
        assert_eq!(resolve(None, Vec::new(), Partial::default()).unwrap().cri_socket, CriSocket::Probe);
        assert_eq!(resolve(None, env("off"), Partial::default()).unwrap().cri_socket, CriSocket::Off);
        assert_eq!(
            resolve(None, env("/run/k3s/containerd/containerd.sock"), Partial::default()).unwrap().cri_socket,
            CriSocket::Path("/run/k3s/containerd/containerd.sock".into())
        );
        assert!(resolve(None, env(""), Partial::default()).is_err(), "an empty path is refused");
    }

    #[test]
    fn in_container_fallback_is_off_unless_set() {
        let c = resolve(None, Vec::new(), Partial::default()).expect("defaults resolve");
        assert!(!c.in_container_fallback);
        let c = resolve(None, [("TAPIO_IN_CONTAINER_FALLBACK".to_owned(), "true".to_owned())], Partial::default()).expect("env");
        assert!(c.in_container_fallback);
    }

    #[test]
    fn operations_doc_holds_the_generated_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let doc = std::fs::read_to_string(path).expect("docs/operations.md");
        assert!(
            doc.contains(&reference_markdown()),
            "docs/operations.md is out of date: replace its configuration table with `tapio-load config reference`"
        );
    }

    // --- filters ---
    fn filters_of(text: &str) -> Filters {
        check(text).unwrap_or_else(|e| panic!("{text}: {e}")).filters
    }

    #[rstest]
    #[case::none("", Filters::default())]
    #[case::exclude_uids("filter_exclude_uids = [0, 65534]", Filters { uid: Some(KeySet { mode: Mode::Exclude, keys: [0, 65534].into() }), ..Default::default() })]
    #[case::include_uids("filter_include_uids = [1000]", Filters { uid: Some(KeySet { mode: Mode::Include, keys: [1000].into() }), ..Default::default() })]
    #[case::comms_cut_as_the_kernel_cuts("filter_exclude_comms = [\"a-very-long-command-name\"]", Filters { comm: Some(KeySet { mode: Mode::Exclude, keys: [comm_key("a-very-long-com")].into() }), ..Default::default() })]
    #[case::scope_host("filter_scope = \"host\"", Filters { scope: Scope::Host, ..Default::default() })]
    #[case::scope_containers("filter_scope = \"containers\"", Filters { scope: Scope::Containers, ..Default::default() })]
    #[case::scope_all("filter_scope = \"all\"", Filters::default())]
    #[case::namespaces("filter_exclude_namespaces = [\"kube-system\"]", Filters { namespace: Some(Names { mode: Mode::Exclude, values: ["kube-system".to_owned()].into() }), ..Default::default() })]
    #[case::labels("filter_include_pod_labels = [\"app=web\", \"tier=\"]", Filters { pod_label: Some(Names { mode: Mode::Include, values: ["app=web".to_owned(), "tier=".to_owned()].into() }), ..Default::default() })]
    #[case::container_names("filter_include_container_names = [\"app\"]", Filters { container_name: Some(Names { mode: Mode::Include, values: ["app".to_owned()].into() }), ..Default::default() })]
    #[case::binaries("filter_exclude_binaries = [\"/usr/bin/curl\", \"/opt/app/*\"]", Filters { binary: Some((Mode::Exclude, [PathPattern::Exact("/usr/bin/curl".to_owned()), PathPattern::Prefix("/opt/app/".to_owned())].into())), ..Default::default() })]
    fn filter_keys_parse(#[case] text: &str, #[case] want: Filters) {
        assert_eq!(filters_of(text), want);
    }

    #[rstest]
    #[case::both_modes("filter_include_uids = [1]\nfilter_exclude_uids = [2]", "config key filter_include_uids: expected either filter_include_uids or filter_exclude_uids, not both, got both set")]
    #[case::negative_uid("filter_exclude_uids = [-1]", "config key filter_exclude_uids: expected uids from 0 to 4294967295, got -1")]
    #[case::empty_comm("filter_exclude_comms = [\"\"]", "config key filter_exclude_comms: expected non-empty comms without NUL, got \"\"")]
    #[case::bad_scope("filter_scope = \"pods\"", "config key filter_scope: expected `all`, `host` or `containers`, got `pods`")]
    #[case::bad_label("filter_include_pod_labels = [\"app\"]", "config key filter_include_pod_labels: expected labels as `key=value`, got `app`")]
    #[case::relative_binary("filter_exclude_binaries = [\"curl\"]", "config key filter_exclude_binaries: expected absolute paths, a trailing `*` for a prefix, got `curl`")]
    #[case::empty_namespace("filter_exclude_namespaces = [\"\"]", "config key filter_exclude_namespaces: expected non-empty names, got ``")]
    #[case::unknown_key("filter_exclude_pods = [\"x\"]", "filter_exclude_pods")]
    fn filter_keys_refused(#[case] text: &str, #[case] message: &str) {
        let e = check(text).expect_err(text).to_string();
        assert!(e.contains(message), "{e}");
    }

    #[test]
    fn too_many_uids_are_refused() {
        let uids: Vec<String> = (0..=tapio_runtime::filter::UID_MAX).map(|u| u.to_string()).collect();
        let e = check(&format!("filter_exclude_uids = [{}]", uids.join(", "))).expect_err("257 uids").to_string();
        assert!(e.contains("at most 256 uids"), "{e}");
    }

    #[test]
    fn filter_lists_come_from_the_environment() {
        let p = from_env([("TAPIO_FILTER_EXCLUDE_COMMS".to_owned(), "sshd, kubelet".to_owned())]).expect("env");
        let f = Config::from_partial(p).expect("valid").filters;
        assert_eq!(f.comm.map(|s| s.keys), Some([comm_key("sshd"), comm_key("kubelet")].into()));
    }
}
