//! The sinks on the running kernel: the real agent with a `stdout`, a rotating `file` and an
//! `otlp` sink, driven by real execs (one in a cgroup made in kubelet's layout), against an OTLP
//! receiver built here from the official proto definitions (opentelemetry-proto's generated
//! `LogsService` server, served by tonic). Every sink gets the same events; the log records carry
//! the semantic-convention attributes; a receiver that is down costs only its own sink (`drop`),
//! or holds the run loop until it is back, losing nothing (`block`).

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use common::{http_get, kernel_lock, sample, skip_unless_root, Loader};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value::Value as Any, KeyValue},
    logs::v1::LogRecord,
};
use serde_json::Value;

/// What the receiver got: every request, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportLogsServiceRequest>>>);

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(&self, request: tonic::Request<ExportLogsServiceRequest>) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Received {
    fn records(&self) -> Vec<LogRecord> {
        self.0.lock().unwrap().iter().flat_map(|r| &r.resource_logs).flat_map(|r| &r.scope_logs).flat_map(|s| s.log_records.clone()).collect()
    }

    fn resource_attribute(&self, key: &str) -> Option<Any> {
        let requests = self.0.lock().unwrap();
        let resource = requests.first()?.resource_logs.first()?.resource.as_ref()?;
        value(&resource.attributes, key)
    }
}

/// An OTLP/gRPC receiver on `addr`, on a thread of its own, until dropped.
struct Receiver {
    received: Received,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(addr: SocketAddr) -> Self {
        let received = Received::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let service = LogsServiceServer::new(received.clone());
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let server = tonic::transport::Server::builder().add_service(service).serve_with_shutdown(addr, async {
                    let _ = stopped.await;
                });
                let _ = ready_tx.send(());
                server.await.expect("receiver serves");
            });
        });
        ready.recv_timeout(Duration::from_secs(5)).expect("receiver started");
        // The listener is bound once a connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "receiver on {addr} not listening");
            thread::sleep(Duration::from_millis(20));
        }
        Self { received, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn value(attributes: &[KeyValue], key: &str) -> Option<Any> {
    attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.clone()
}

fn body(record: &LogRecord) -> Value {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Any::StringValue(line)) => serde_json::from_str(line).unwrap_or_else(|e| panic!("body is not a JSON line ({e}): {line}")),
        other => panic!("body is not a string: {other:?}"),
    }
}

fn is_exec_of(e: &Value, marker: &str) -> bool {
    e["event"] == "exec" && e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == marker))
}

/// Every line of the file sink's active and rotated files, oldest first.
fn file_lines(path: &Path) -> (Vec<Value>, usize) {
    let mut files: Vec<PathBuf> = (1..1000).map(|n| PathBuf::from(format!("{}.{n}", path.display()))).filter(|p| p.exists()).collect();
    let rotated = files.len();
    files.reverse();
    files.push(path.to_owned());
    let lines = files
        .iter()
        .flat_map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).lines().map(str::to_owned).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("file line is not whole JSON ({e}): {l}")))
        .collect();
    (lines, rotated)
}

/// A cgroup in kubelet's systemd layout under the v2 hierarchy, removed when dropped.
struct PodCgroup {
    made: Vec<PathBuf>,
    dir: PathBuf,
}

impl PodCgroup {
    fn make(rel: &str) -> Self {
        let mut dir = tapio_features::cgroup2::mounted_root().expect("mountinfo").expect("a cgroup v2 hierarchy");
        let mut made = Vec::new();
        for component in rel.split('/') {
            dir.push(component);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                made.push(dir.clone());
            }
        }
        Self { made, dir }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        while let Some(dir) = self.made.pop() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Runs `/bin/echo <marker>` (in `cgroup` when given) and returns its pid.
fn exec(marker: &str, cgroup: Option<&Path>) -> u32 {
    let mut child = match cgroup {
        None => Command::new("/bin/echo").arg(marker).stdout(std::process::Stdio::null()).spawn().expect("spawn echo"),
        Some(dir) => Command::new("/bin/sh")
            .args(["-c", &format!("echo $$ > '{}/cgroup.procs' && exec /bin/echo {marker}", dir.display())])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn sh"),
    };
    let pid = child.id();
    assert!(child.wait().expect("wait").success(), "exec of {marker}");
    pid
}

fn config(dir: &Path, metrics_port: u16, sinks: &str) -> PathBuf {
    let path = dir.join("tapio.toml");
    std::fs::write(&path, format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{metrics_port}\"\n{sinks}")).expect("write config");
    path
}

/// stdout, a rotating file and OTLP get the same events in the same order; the OTLP records carry
/// the semantic-convention attributes, container fields included.
#[test]
fn every_sink_gets_the_same_events_and_otlp_carries_the_conventions() {
    if skip_unless_root("every_sink_gets_the_same_events_and_otlp_carries_the_conventions") {
        return;
    }
    let _serial = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let receiver = Receiver::start(addr);
    let file = dir.path().join("events.jsonl");
    let cfg = config(
        dir.path(),
        common::free_port(),
        &format!(
            "[[sinks]]\nkind = \"stdout\"\n[[sinks]]\nkind = \"file\"\npath = \"{}\"\nmax_bytes = 8192\nkeep = 999\nwhen_full = \"block\"\n[[sinks]]\nkind = \"otlp\"\nendpoint = \"http://{addr}\"\nbatch_events = 16\nwhen_full = \"block\"\n",
            file.display()
        ),
    );
    let nonce = std::process::id();
    let id = format!("{nonce:08x}{}", "feed".repeat(14));
    let uid = format!("{nonce:08x}-0000-4abc-8def-0123456789ab");
    let pod = PodCgroup::make(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    ));
    let loader = Loader::start(&["--config", cfg.to_str().expect("utf-8")]);

    let mut pids = BTreeMap::new();
    for i in 0..200 {
        let marker = format!("tapio-export-{nonce}-{i}");
        pids.insert(marker.clone(), exec(&marker, None));
    }
    let pod_marker = format!("tapio-export-{nonce}-pod");
    let pod_pid = exec(&pod_marker, Some(&pod.dir));
    let mut stdout = Vec::new();
    loader.wait_for(&mut stdout, Duration::from_secs(20), |e| is_exec_of(e, &pod_marker)).unwrap_or_else(|| panic!("no exec of {pod_marker} on stdout"));
    let (rest, stderr, status) = loader.finish();
    stdout.extend(rest);
    assert!(status.success(), "tapio-load: {status}\n{stderr}");
    drop(pod);

    // The same events, in the same order, in every sink.
    let records = receiver.received.records();
    let bodies: Vec<Value> = records.iter().map(body).collect();
    let (lines, rotated) = file_lines(&file);
    assert!(rotated >= 3, "the file sink rotated {rotated} times at 8 KiB for {} events", lines.len());
    assert_eq!(lines.len(), stdout.len(), "file sink and stdout differ in count");
    assert!(lines == stdout, "the file sink's lines differ from stdout's");
    assert_eq!(bodies.len(), stdout.len(), "OTLP receiver and stdout differ in count\n{stderr}");
    assert!(bodies == stdout, "the OTLP records' bodies differ from stdout's lines");

    // Semantic conventions on the records of our execs.
    let of = |marker: &str| {
        records.iter().find(|r| is_exec_of(&body(r), marker)).unwrap_or_else(|| panic!("no OTLP record of the exec of {marker}"))
    };
    let me = i64::from(std::process::id());
    for (marker, &pid) in &pids {
        let r = of(marker);
        assert_eq!(r.event_name, "tapio.process.exec");
        assert_eq!(value(&r.attributes, "process.pid"), Some(Any::IntValue(i64::from(pid))), "{marker}");
        assert_eq!(value(&r.attributes, "process.parent_pid"), Some(Any::IntValue(me)), "{marker}");
        assert_eq!(value(&r.attributes, "process.executable.path"), Some(Any::StringValue("/bin/echo".into())));
        assert_eq!(value(&r.attributes, "process.command_line"), Some(Any::StringValue(format!("/bin/echo {marker}"))));
        assert_eq!(value(&r.attributes, "user.id"), Some(Any::StringValue("0".into())));
        assert_eq!(value(&r.attributes, "container.id"), None, "a host process has no container fields");
        assert!(r.time_unix_nano > 1_600_000_000_000_000_000, "time_unix_nano {} is not Unix time", r.time_unix_nano);
    }
    let r = of(&pod_marker);
    assert_eq!(value(&r.attributes, "process.pid"), Some(Any::IntValue(i64::from(pod_pid))));
    assert_eq!(value(&r.attributes, "container.id"), Some(Any::StringValue(id.clone())));
    assert_eq!(value(&r.attributes, "container.runtime"), Some(Any::StringValue("containerd".into())));
    assert_eq!(value(&r.attributes, "k8s.pod.uid"), Some(Any::StringValue(uid.clone())));
    assert_eq!(value(&r.attributes, "tapio.qos"), Some(Any::StringValue("burstable".into())));
    let mut host = [0u8; 256];
    // SAFETY: host is writable for its length.
    assert_eq!(unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) }, 0);
    let host = String::from_utf8_lossy(&host[..host.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
    assert_eq!(receiver.received.resource_attribute("host.name"), Some(Any::StringValue(host)));
    assert_eq!(receiver.received.resource_attribute("service.name"), Some(Any::StringValue("tapio-load".into())));
    println!("exports: {} events in stdout, {} file lines over {} rotated files, {} OTLP records", stdout.len(), lines.len(), rotated, records.len());
}

/// Execs until `done` says so or 30 s pass; returns the markers run.
fn exec_until(nonce: &str, mut done: impl FnMut() -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut markers = Vec::new();
    while !done() && Instant::now() < deadline {
        for _ in 0..20 {
            let marker = format!("tapio-down-{nonce}-{}", markers.len());
            exec(&marker, None);
            markers.push(marker);
        }
    }
    markers
}

/// A receiver that is down: under `drop` its sink drops and counts while stdout loses nothing;
/// under `block` the run loop waits (stdout too) and, once the receiver is up, both get every
/// event.
#[test]
fn a_receiver_that_is_down_drops_or_blocks_as_configured() {
    if skip_unless_root("a_receiver_that_is_down_drops_or_blocks_as_configured") {
        return;
    }
    let _serial = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");

    // drop: nothing listens on the endpoint.
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let port = common::free_port();
    let cfg = config(
        dir.path(),
        port,
        &format!("[[sinks]]\nkind = \"stdout\"\n[[sinks]]\nkind = \"otlp\"\nendpoint = \"http://{addr}\"\nqueue_events = 64\nbatch_events = 16\n"),
    );
    let loader = Loader::start(&["--config", cfg.to_str().expect("utf-8")]);
    let otlp = "{sink=\"otlp\",kind=\"otlp\"}";
    let markers = exec_until("drop", || sample(&http_get(port, "/metrics").1, &format!("tapio_sink_dropped_total{otlp}")).unwrap_or(0.0) > 0.0);
    let page = http_get(port, "/metrics").1;
    let mut stdout = Vec::new();
    let last = markers.last().expect("some execs").clone();
    loader.wait_for(&mut stdout, Duration::from_secs(20), |e| is_exec_of(e, &last)).unwrap_or_else(|| panic!("stdout lost the exec of {last}"));
    let (rest, stderr, _) = loader.finish();
    stdout.extend(rest);
    let dropped = sample(&page, &format!("tapio_sink_dropped_total{otlp}")).unwrap_or(0.0);
    assert!(dropped > 0.0, "{} execs with the receiver down and a 64-event queue dropped nothing:\n{page}\n{stderr}", markers.len());
    assert!(sample(&page, &format!("tapio_sink_retries_total{otlp}")).unwrap_or(0.0) > 0.0, "no retry counted:\n{page}");
    assert_eq!(sample(&page, "tapio_sink_dropped_total{sink=\"stdout\""), Some(0.0), "stdout dropped:\n{page}");
    assert_eq!(sample(&page, &format!("tapio_sink_sent_total{otlp}")), Some(0.0), "{page}");
    for marker in &markers {
        assert!(stdout.iter().any(|e| is_exec_of(e, marker)), "stdout lost the exec of {marker} while the receiver was down");
    }

    // block: the receiver comes up only once the loop has waited.
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let port = common::free_port();
    let cfg = config(
        dir.path(),
        port,
        &format!("[[sinks]]\nkind = \"stdout\"\n[[sinks]]\nkind = \"otlp\"\nendpoint = \"http://{addr}\"\nqueue_events = 64\nbatch_events = 16\nwhen_full = \"block\"\n"),
    );
    let loader = Loader::start(&["--config", cfg.to_str().expect("utf-8")]);
    let mut markers = exec_until("block", || {
        let page = http_get(port, "/metrics").1;
        sample(&page, &format!("tapio_sink_retries_total{otlp}")).unwrap_or(0.0) > 0.0
            && sample(&page, &format!("tapio_sink_queued_events{otlp}")).unwrap_or(0.0) > 0.0
    });
    // Three events an exec, well past the 64 the queue holds: the loop must wait before the last.
    for i in 0..50 {
        let marker = format!("tapio-down-block-more-{i}");
        exec(&marker, None);
        markers.push(marker);
    }
    // The loop waits: /healthz still answers, and stdout stops short of the last exec.
    let (status, _) = http_get(port, "/healthz");
    assert_eq!(status, 200);
    let mut stdout = Vec::new();
    let last = markers.last().expect("some execs").clone();
    assert!(loader.wait_for(&mut stdout, Duration::from_secs(1), |e| is_exec_of(e, &last)).is_none(), "stdout was not held by a full block sink");
    let receiver = Receiver::start(addr);
    loader.wait_for(&mut stdout, Duration::from_secs(30), |e| is_exec_of(e, &last)).unwrap_or_else(|| panic!("stdout never got the exec of {last}"));
    // The backlog drains through the receiver (backoff at most 5 s, then 16 records a request).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !receiver.received.records().iter().any(|r| is_exec_of(&body(r), &last)) {
        assert!(Instant::now() < deadline, "the receiver never got the exec of {last}");
        thread::sleep(Duration::from_millis(100));
    }
    let (rest, stderr, status) = loader.finish();
    stdout.extend(rest);
    assert!(status.success(), "{stderr}");
    // Up to our last exec, the receiver got exactly what stdout got, in order: nothing was lost
    // while the loop waited. (After SIGTERM a full `block` sink drops, so the tail may differ.)
    let bodies: Vec<Value> = receiver.received.records().iter().map(body).collect();
    let upto = bodies.iter().position(|e| is_exec_of(e, &last)).expect("the last exec") + 1;
    assert!(stdout.len() >= upto && bodies[..upto] == stdout[..upto], "block: the receiver's first {upto} events differ from stdout's");
    for marker in &markers {
        assert!(bodies[..upto].iter().any(|e| is_exec_of(e, marker)), "block lost the exec of {marker}");
    }
    println!("block: {} execs, the loop held until the receiver came up, {upto} events in both", markers.len());
}

/// A real DNS exchange (dig against dnsmasq) through the OTLP sink: the query's record carries
/// the question, the transport and the peers under their semantic-convention names, with dig's
/// pid.
#[test]
fn otlp_dns_records_carry_the_question_and_the_peers() {
    if skip_unless_root("otlp_dns_records_carry_the_question_and_the_peers") {
        return;
    }
    let _serial = kernel_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let receiver = Receiver::start(addr);
    let path = dir.path().join("tapio.toml");
    std::fs::write(
        &path,
        format!("monitors = [\"dns\"]\nmetrics_address = \"off\"\n[[sinks]]\nkind = \"stdout\"\n[[sinks]]\nkind = \"otlp\"\nendpoint = \"http://{addr}\"\nwhen_full = \"block\"\n"),
    )
    .expect("write config");
    let _server = common::dnsmasq::Dnsmasq::start(&["--address=/tapio-export.test/10.9.8.7"]);
    let loader = Loader::start(&["--config", path.to_str().expect("utf-8")]);
    let child = Command::new("dig")
        .args(["@127.0.0.1", "-p", "53", "tapio-export.test", "A", "+short", "+tries=1", "+time=2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dig (Debian package dnsutils)");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait dig");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.9.8.7"), "dig answered {}", String::from_utf8_lossy(&out.stdout));
    let (stdout, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    let records = receiver.received.records();
    let bodies: Vec<Value> = records.iter().map(body).collect();
    assert!(bodies == stdout, "the receiver got {} events, stdout {}", bodies.len(), stdout.len());
    let query = records
        .iter()
        .find(|r| r.event_name == "tapio.dns.query" && value(&r.attributes, "process.pid") == Some(Any::IntValue(i64::from(pid))))
        .unwrap_or_else(|| panic!("no OTLP record of dig's query among {} records", records.len()));
    assert_eq!(value(&query.attributes, "dns.question.name"), Some(Any::StringValue("tapio-export.test".into())));
    assert_eq!(value(&query.attributes, "network.transport"), Some(Any::StringValue("udp".into())));
    assert_eq!(value(&query.attributes, "network.type"), Some(Any::StringValue("ipv4".into())));
    assert_eq!(value(&query.attributes, "destination.address"), Some(Any::StringValue("127.0.0.1".into())));
    assert_eq!(value(&query.attributes, "destination.port"), Some(Any::IntValue(53)));
}
