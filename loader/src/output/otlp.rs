//! The `otlp` sink: events as OTLP log records, sent over gRPC to a collector's `LogsService`.
//!
//! Each event becomes one `LogRecord`: its body is the event's JSON line (the same bytes the
//! `stdout` and `file` sinks write), its `event_name` is `tapio.<monitor>.<event>`, and its
//! attributes follow the OpenTelemetry semantic conventions where one exists ([`attribute_name`]:
//! `process.pid`, `process.parent_pid`, `process.executable.path`, `process.command_line`,
//! `container.id`, `k8s.pod.uid`, `k8s.pod.name`, ...), every other field under `tapio.<field>`.
//! The resource carries `service.name`, `service.version` and `host.name`.
//!
//! Batching: records are sent `batch_events` at a time, or `BATCH_DELAY` after the first one
//! waiting. Retry: a transient failure (unavailable, deadline exceeded, resource exhausted,
//! aborted, cancelled, and transport errors) is retried with exponential backoff from 100 ms to
//! 5 s, as long as it takes; meanwhile the sink's queue fills and its `when_full` applies. A
//! permanent refusal (an invalid argument, ...) drops the batch and counts it.
//!
//! The exporter runs on the sink's own thread with a current-thread tokio runtime of its own, so
//! a slow collector never holds the run loop's runtime.

use std::{
    io,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{logs_service_client::LogsServiceClient, ExportLogsServiceRequest},
    common::v1::{any_value::Value as Any, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use serde_json::Value;

use crate::{events::Event, output::sink::SinkCounters};

/// Records per export request by default.
pub const DEFAULT_BATCH_EVENTS: usize = 512;
/// How long a record may wait for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_millis(200);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// `SEVERITY_NUMBER_INFO`.
const SEVERITY_INFO: i32 = 9;

/// An `otlp` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpOptions {
    /// `http://host:port` of the collector's gRPC receiver (plaintext).
    pub endpoint: String,
    pub batch_events: usize,
    /// Deadline of one export request.
    pub timeout: Duration,
}

/// The semantic-convention name of an event field, or None for `tapio.<field>`.
pub fn attribute_name(field: &str) -> Option<&'static str> {
    Some(match field {
        "tgid" => "process.pid",
        "pid" => "thread.id",
        "comm" => "process.executable.name",
        "ppid" => "process.parent_pid",
        "filename" => "process.executable.path",
        "argv" => "process.command_args",
        "exit_code" => "process.exit.code",
        "container_id" => "container.id",
        "container_runtime" => "container.runtime",
        "container_name" => "container.name",
        "container_image" => "container.image.name",
        "pod_uid" => "k8s.pod.uid",
        "pod_name" => "k8s.pod.name",
        "pod_namespace" => "k8s.namespace.name",
        "qname" => "dns.question.name",
        _ => return None,
    })
}

fn any(value: &Value) -> Option<AnyValue> {
    let v = match value {
        Value::Null => return None,
        Value::Bool(b) => Any::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Any::IntValue(i),
            // u64 past i64::MAX (kernel addresses, cgroup ids): exact as a string.
            None if n.is_u64() => Any::StringValue(n.to_string()),
            None => Any::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Any::StringValue(s.clone()),
        Value::Array(items) => Any::ArrayValue(ArrayValue { values: items.iter().filter_map(any).collect() }),
        Value::Object(map) => Any::KvlistValue(KeyValueList {
            values: map.iter().map(|(k, v)| kv(k, any(v))).collect(),
        }),
    };
    Some(AnyValue { value: Some(v) })
}

fn string(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Any::StringValue(s.into())) })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue { key: key.to_owned(), value, ..KeyValue::default() }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC now: what turns the kernel's `ts_ns` into wall time.
fn boot_offset_ns() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    now.saturating_sub(crate::dns::monotonic_ns())
}

/// One event as a log record. `offset_ns` turns `ts_ns` (CLOCK_MONOTONIC) into Unix time.
pub fn record(event: &Event, offset_ns: u64, observed_ns: u64) -> LogRecord {
    let line = serde_json::to_string(event).unwrap_or_default();
    let Ok(Value::Object(fields)) = serde_json::to_value(event) else {
        return LogRecord { body: string(line), ..LogRecord::default() };
    };
    let mut attributes = Vec::with_capacity(fields.len() + 4);
    for (key, value) in &fields {
        match (key.as_str(), value) {
            ("ts_ns" | "monitor" | "event", _) => {}
            ("uid", v) => attributes.push(kv("user.id", string(v.to_string()))),
            ("argv", Value::Array(args)) => {
                let line: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
                attributes.push(kv("process.command_line", string(line.join(" "))));
                attributes.push(kv("process.command_args", any(value)));
            }
            // `transport` is the dns monitor's udp/tcp; `protocol` the network monitor's.
            ("transport" | "protocol", Value::String(s)) => attributes.push(kv("network.transport", string(s.to_ascii_lowercase()))),
            ("ip_version", Value::Number(n)) => attributes.push(kv("network.type", string(format!("ipv{n}")))),
            ("saddr", _) => attributes.push(kv("source.address", any(value))),
            ("sport", _) => attributes.push(kv("source.port", any(value))),
            ("daddr", _) => attributes.push(kv("destination.address", any(value))),
            ("dport", _) => attributes.push(kv("destination.port", any(value))),
            (key, value) => match attribute_name(key) {
                Some(name) => attributes.push(kv(name, any(value))),
                None => attributes.push(kv(&format!("tapio.{key}"), any(value))),
            },
        }
    }
    attributes.push(kv("tapio.monitor", string(event.monitor)));
    attributes.push(kv("tapio.event", string(event.event)));
    LogRecord {
        time_unix_nano: event.ts_ns.saturating_add(offset_ns),
        observed_time_unix_nano: observed_ns,
        severity_number: SEVERITY_INFO,
        severity_text: "INFO".to_owned(),
        event_name: format!("tapio.{}.{}", event.monitor, event.event),
        body: string(line),
        attributes,
        ..LogRecord::default()
    }
}

/// The node's name, as `host.name`.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    crate::events::c_string(&buf)
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", string("tapio-load")),
            kv("service.version", string(env!("CARGO_PKG_VERSION"))),
            kv("host.name", string(host_name())),
        ],
        ..Resource::default()
    }
}

/// Whether a failed export is worth retrying: the OTLP specification's retryable codes, plus
/// `Unknown`, which is how tonic reports some transport failures (a connection reset while the
/// collector restarts). `Internal` is not retried: a collector that fails a batch that way fails
/// it again, and retrying it would stall the sink for good.
fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(status.code(), Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Cancelled | Unknown | OutOfRange | DataLoss)
}

/// The sink's backend: batches records and exports them with retry.
pub struct OtlpBackend {
    options: OtlpOptions,
    runtime: tokio::runtime::Runtime,
    client: LogsServiceClient<tonic::transport::Channel>,
    resource: Resource,
    pending: Vec<LogRecord>,
    /// When the oldest pending record came.
    since: Option<Instant>,
}

impl OtlpBackend {
    /// Checks the endpoint and builds a lazy channel: a collector that is down at start is
    /// retried like one that goes down later, and the agent starts all the same.
    pub fn new(options: OtlpOptions) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let endpoint = tonic::transport::Endpoint::from_shared(options.endpoint.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("endpoint {}: {e}", options.endpoint)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(options.timeout);
        let channel = {
            let _guard = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(Self { client: LogsServiceClient::new(channel), runtime, resource: resource(), pending: Vec::new(), since: None, options })
    }

    /// Sends what is pending, retrying transient failures with backoff until accepted. `give_up`
    /// bounds the retries (at shutdown); None: as long as it takes.
    fn export(&mut self, counters: &SinkCounters, give_up: Option<Instant>) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len() as u64;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "tapio-load".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }),
                    log_records: std::mem::take(&mut self.pending),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        self.since = None;
        let mut backoff = BACKOFF_FIRST;
        loop {
            let mut client = self.client.clone();
            let result = self.runtime.block_on(client.export(request.clone()));
            match result {
                Ok(response) => {
                    let rejected = response.into_inner().partial_success.map_or(0, |p| p.rejected_log_records.max(0) as u64);
                    counters.sent.fetch_add(n - rejected.min(n), Relaxed);
                    counters.dropped.fetch_add(rejected.min(n), Relaxed);
                    return Ok(());
                }
                Err(status) if retryable(&status) && give_up.is_none_or(|t| Instant::now() + backoff < t) => {
                    let retries = counters.retries.fetch_add(1, Relaxed) + 1;
                    if retries.is_power_of_two() {
                        tracing::warn!(endpoint = %self.options.endpoint, retries, code = ?status.code(), "otlp: export failed, retrying: {}", status.message());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(status) => {
                    counters.dropped.fetch_add(n, Relaxed);
                    tracing::warn!(endpoint = %self.options.endpoint, records = n, code = ?status.code(), "otlp: export refused, records dropped: {}", status.message());
                    return Ok(());
                }
            }
        }
    }
}

impl crate::output::sink::Backend for OtlpBackend {
    fn write(&mut self, batch: &[Event], counters: &SinkCounters) -> io::Result<()> {
        let offset = boot_offset_ns();
        let observed = crate::dns::monotonic_ns().saturating_add(offset);
        for event in batch {
            self.pending.push(record(event, offset, observed));
            self.since.get_or_insert_with(Instant::now);
            if self.pending.len() >= self.options.batch_events {
                self.export(counters, None)?;
            }
        }
        if self.since.is_some_and(|t| t.elapsed() >= BATCH_DELAY) {
            self.export(counters, None)?;
        }
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(BATCH_DELAY / 4)
    }

    fn tick(&mut self, counters: &SinkCounters) -> io::Result<()> {
        if self.since.is_some_and(|t| t.elapsed() >= BATCH_DELAY) {
            self.export(counters, None)?;
        }
        Ok(())
    }

    fn close(&mut self, counters: &SinkCounters) -> io::Result<()> {
        // The run loop gives every sink a bounded grace at shutdown; retry within it only.
        self.export(counters, Some(Instant::now() + Duration::from_secs(4)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{process::ProcessBody, Body};

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Any> {
        r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    #[test]
    fn an_exec_carries_the_semantic_conventions() {
        let mut event = crate::output::sink::tests::event(42);
        event.ts_ns = 1_000;
        event.uid = 1000;
        event.body = Body::Process(ProcessBody::Exec {
            ppid: 7,
            pid_ns: 1,
            filename: "/bin/echo".into(),
            argv: vec!["echo".into(), "hi there".into()],
            argv_truncated: false,
        });
        event.event = "exec";
        let r = record(&event, 5_000, 9);
        assert_eq!((r.time_unix_nano, r.observed_time_unix_nano), (6_000, 9));
        assert_eq!(r.event_name, "tapio.process.exec");
        assert_eq!(attr(&r, "process.pid"), Some(&Any::IntValue(42)));
        assert_eq!(attr(&r, "process.parent_pid"), Some(&Any::IntValue(7)));
        assert_eq!(attr(&r, "process.executable.path"), Some(&Any::StringValue("/bin/echo".into())));
        assert_eq!(attr(&r, "process.command_line"), Some(&Any::StringValue("echo hi there".into())));
        assert_eq!(attr(&r, "user.id"), Some(&Any::StringValue("1000".into())));
        assert_eq!(attr(&r, "tapio.cgroup_id"), Some(&Any::IntValue(1)));
        assert_eq!(attr(&r, "container.id"), None, "a host process has no container fields");
        let body = match r.body.and_then(|b| b.value) {
            Some(Any::StringValue(s)) => s,
            other => panic!("body {other:?}"),
        };
        assert_eq!(body, serde_json::to_string(&event).unwrap(), "the body is the JSON line");
    }

    #[test]
    fn container_fields_map_to_container_and_k8s() {
        let mut event = crate::output::sink::tests::event(1);
        use crate::attribution::parse::{Attribution, Qos, Runtime};
        let attribution = Attribution {
            container_id: Some("4a3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccd".into()),
            container_runtime: Some(Runtime::Containerd),
            pod_uid: Some("7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b".into()),
            qos: Some(Qos::Burstable),
            pod_name: Some("web-7d9f".into()),
            pod_namespace: Some("shop".into()),
            container_name: Some("nginx".into()),
            container_image: Some("nginx:1.27".into()),
            pod_labels: [("app".to_owned(), "web".to_owned())].into(),
        };
        event.container = Some(std::sync::Arc::new(attribution));
        let r = record(&event, 0, 0);
        assert_eq!(attr(&r, "container.id"), Some(&Any::StringValue("4a3f0c1d2e5b6a7980c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccd".into())));
        assert_eq!(attr(&r, "container.runtime"), Some(&Any::StringValue("containerd".into())));
        assert_eq!(attr(&r, "k8s.pod.uid"), Some(&Any::StringValue("7f3c9a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b".into())));
        assert_eq!(attr(&r, "tapio.qos"), Some(&Any::StringValue("burstable".into())));
        assert_eq!(attr(&r, "k8s.pod.name"), Some(&Any::StringValue("web-7d9f".into())));
        assert_eq!(attr(&r, "k8s.namespace.name"), Some(&Any::StringValue("shop".into())));
        assert_eq!(attr(&r, "container.name"), Some(&Any::StringValue("nginx".into())));
        assert_eq!(attr(&r, "container.image.name"), Some(&Any::StringValue("nginx:1.27".into())));
    }
}
