//! The network and kernel monitors on the running kernel, through the agent: real TCP
//! connections over 127.0.0.1 and ::1 with known byte counts. The OOM kill in a memory-limited
//! cgroup (victim pid, comm, uid and cgroup, and the killer) is the shared scenario
//! kernel.oom_kill (tapio-scenarios, run on this kernel by verifier-matrix/guest/tests/scenarios.rs
//! and in every VM of the matrix); this file's TCP test keeps the agent's side for the kernel
//! monitor (exit 0 on SIGTERM, no `kernel_` program left loaded).

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{kernel_lock, skip_unless_root, Loader};
use rstest::rstest;
use serde_json::Value;
use tapio_runtime::monitors::{self, AttachPoint};

/// One connection made by the test: both ends' addresses and what each side wrote.
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    client_wrote: u64,
    server_wrote: u64,
}

/// Connects to a listener on `ip`, sends `up` bytes one way and `down` back, then closes both ends
/// in order (client first) so every byte is read and no RST cuts the counters short.
fn exchange(ip: IpAddr, up: usize, down: usize) -> Conn {
    let listener = TcpListener::bind((ip, 0)).expect("bind listener");
    let server = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server).expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");
    let client_addr = client.local_addr().unwrap();
    client.write_all(&vec![b'u'; up]).unwrap();
    let mut buf = vec![0u8; up];
    accepted.read_exact(&mut buf).unwrap();
    accepted.write_all(&vec![b'd'; down]).unwrap();
    let mut buf = vec![0u8; down];
    client.read_exact(&mut buf).unwrap();
    drop(client);
    // Wait for the client's FIN so the server's close is an orderly one.
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(accepted);
    drop(listener);
    Conn { client: client_addr, server, client_wrote: up as u64, server_wrote: down as u64 }
}

fn tuple_is(e: &Value, local: SocketAddr, peer: SocketAddr) -> bool {
    e["saddr"] == local.ip().to_string()
        && e["sport"] == local.port()
        && e["daddr"] == peer.ip().to_string()
        && e["dport"] == peer.port()
}

fn find<'a>(events: &'a [Value], monitor: &str, event: &str, local: SocketAddr, peer: SocketAddr) -> &'a Value {
    events
        .iter()
        .find(|e| e["monitor"] == monitor && e["event"] == event && tuple_is(e, local, peer))
        .unwrap_or_else(|| {
            let ours: Vec<&Value> = events.iter().filter(|e| e["monitor"] == monitor).collect();
            panic!("no {monitor} {event} for {local} -> {peer} among {} {monitor} events: {ours:#?}", ours.len())
        })
}

/// A byte counter from `tcp_sock`: the payload plus at most a SYN and a FIN (sequence space).
fn assert_bytes(e: &Value, field: &str, payload: u64) {
    let got = e[field].as_u64().unwrap_or_else(|| panic!("{field} missing: {e}"));
    assert!((payload..=payload + 2).contains(&got), "{field} = {got}, expected {payload} payload bytes (+ SYN/FIN): {e}");
}

/// Which path of a network program group this kernel allows, by the loader's own feature gates:
/// Ok(the program's attach path) for the first that passes, Err(each path's reason) when none does.
fn group_path(group: &str) -> Result<(&'static str, String), Vec<(String, String)>> {
    let group = monitors::GROUPS.iter().find(|g| g.monitor == "network" && g.name == group).expect("a network group");
    let spec = monitors::monitor("network").expect("the network monitor");
    let mut reasons = Vec::new();
    for name in group.programs {
        let p = spec.programs.iter().find(|p| p.name == *name).expect("a group program is in the monitor");
        match tapio_runtime::plan::attach_path(&p.attach) {
            Ok(path) => return Ok((p.name, path)),
            Err(why) => reasons.push((p.attach.describe(), why)),
        }
    }
    Err(reasons)
}

/// The optional events of one connection: `connect_attempt` and `accept_return` where this kernel
/// has a path for them (fexit or kprobe), and the acceptor as the owner of the inbound socket.
fn check_call_events(events: &[Value], c: &Conn, ip_version: u64) {
    let me = std::process::id() as u64;
    if let Ok((program, _)) = group_path("connect_attempt") {
        let e = find(events, "network", "connect_attempt", c.client, c.server);
        assert_eq!((e["tgid"].as_u64(), &e["owner_known"], &e["ip_version"]), (Some(me), &Value::Bool(true), &ip_version.into()), "{e}");
        assert!(e.get("newstate").is_none(), "a call, not a transition: {e}");
        if program.ends_with("fexit") {
            assert_eq!(e["result"], 0, "fexit sees tcp_connect's return: {e}");
        } else {
            assert!(e.get("result").is_none(), "a kprobe cannot see the return value: {e}");
        }
    }
    if group_path("accept_return").is_ok() {
        let e = find(events, "network", "accept_return", c.server, c.client);
        assert_eq!((e["tgid"].as_u64(), &e["owner_known"], &e["ip_version"]), (Some(me), &Value::Bool(true), &ip_version.into()), "{e}");
        // From accept() on, the inbound socket's softirq transitions carry the acceptor: the
        // client's FIN (ESTABLISHED -> CLOSE_WAIT) arrives after this test's accept() returned.
        let wait = events
            .iter()
            .find(|x| x["event"] == "state_change" && x["newstate"] == "CLOSE_WAIT" && tuple_is(x, c.server, c.client))
            .unwrap_or_else(|| panic!("no CLOSE_WAIT for {} -> {}", c.server, c.client));
        assert_eq!((wait["tgid"].as_u64(), &wait["owner_known"]), (Some(me), &Value::Bool(true)), "{wait}");
    }
}

fn check_connection(events: &[Value], c: &Conn, ip_version: u64) {
    let me = std::process::id() as u64;
    // Outbound: connect() ran in this process, which the probe remembers for later events.
    let connect = find(events, "network", "connect", c.client, c.server);
    assert_eq!(connect["ip_version"], ip_version, "{connect}");
    assert_eq!(connect["protocol"], "tcp", "{connect}");
    assert_eq!(connect["tgid"], me, "connect is attributed to the connecting process: {connect}");
    assert_eq!(connect["owner_known"], true, "{connect}");
    assert_eq!(connect["oldstate"], "SYN_SENT");
    assert_eq!(connect["newstate"], "ESTABLISHED");
    // Inbound: completed in softirq, so only the tuple is asserted, not the task.
    let accept = find(events, "network", "accept", c.server, c.client);
    assert_eq!(accept["ip_version"], ip_version, "{accept}");
    assert_eq!(accept["oldstate"], "SYN_RECV");

    let client_close = find(events, "network", "close", c.client, c.server);
    assert_eq!(client_close["tgid"], me, "{client_close}");
    assert_bytes(client_close, "bytes_sent", c.client_wrote);
    assert_bytes(client_close, "bytes_received", c.server_wrote);
    let server_close = find(events, "network", "close", c.server, c.client);
    assert_eq!(server_close["tgid"], me, "the accepted socket's owner is remembered at close(): {server_close}");
    assert_bytes(server_close, "bytes_sent", c.server_wrote);
    assert_bytes(server_close, "bytes_received", c.client_wrote);

    // The kernel monitor: the same lifecycle, attributed to the sockets' own cgroup, which is
    // the cgroup this process (the connecting task) is in.
    let cgroup = &connect["cgroup_id"];
    for (event, local, peer) in [
        ("connect", c.client, c.server),
        ("accept", c.server, c.client),
        ("close", c.client, c.server),
        ("close", c.server, c.client),
    ] {
        let k = find(events, "kernel", event, local, peer);
        assert_eq!(k["ip_version"], ip_version, "{k}");
        assert_eq!(k["protocol"], "tcp", "{k}");
        assert_eq!(k["sock_cgroup"], true, "this kernel (5.15+) has sk_cgrp_data.cgroup: {k}");
        assert_eq!(&k["cgroup_id"], cgroup, "kernel {event} carries the socket's cgroup: {k}");
    }
}

#[test]
fn tcp_lifecycle_over_ipv4_and_ipv6() {
    if skip_unless_root("tcp_lifecycle_over_ipv4_and_ipv6") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "network,kernel"]);
    let v4 = exchange(IpAddr::V4(Ipv4Addr::LOCALHOST), 1000, 333);
    let v6 = exchange(IpAddr::V6(Ipv6Addr::LOCALHOST), 4096, 77);

    // The last record this test causes: the kernel monitor's close of the IPv6 server socket.
    let mut events = Vec::new();
    let last = loader.wait_for(&mut events, Duration::from_secs(5), |e| {
        e["monitor"] == "kernel" && e["event"] == "close" && tuple_is(e, v6.server, v6.client)
    });
    let (rest, stderr, status) = loader.finish();
    events.extend(rest);
    assert!(last.is_some(), "the IPv6 server close never arrived; stderr:\n{stderr}");
    assert!(status.success(), "tapio-load exits 0 on SIGTERM: {status}; stderr:\n{stderr}");
    assert!(stderr.contains("tracepoint:sock/inet_sock_set_state"), "attach path logged: {stderr}");
    // connect_attempt and accept_return: the start-up log names the path taken, or says the event
    // is unavailable with each path's reason (on a kernel without fentry and kprobes, e.g. this
    // project's CI host: fexit refused with EPERM, no CONFIG_KPROBES), and then no such event comes.
    for (group, event) in [("connect_attempt", "connect_attempt"), ("accept_return", "accept_return")] {
        match group_path(group) {
            Ok((program, path)) => {
                assert!(stderr.contains(&format!("program=\"{program}\" path={path}")), "{group} via {path} logged: {stderr}")
            }
            Err(reasons) => {
                let why = reasons.iter().map(|(path, why)| format!("{path}: {why}")).collect::<Vec<_>>().join("; ");
                let line = format!("monitor network: {group}: unavailable: {why}");
                assert!(stderr.contains(&line), "expected `{line}` in stderr:\n{stderr}");
                assert!(!events.iter().any(|e| e["event"] == event), "no {event} without a path");
                common::skip_for_kernel(&format!("{event} events"), &common::needs_of("network", group), format!("unavailable on this kernel: {why}"));
            }
        }
    }

    check_connection(&events, &v4, 4);
    check_connection(&events, &v6, 6);
    check_call_events(&events, &v4, 4);
    check_call_events(&events, &v6, 6);
    for prefix in ["network_", "kernel_"] {
        let left = common::programs_left_after(prefix, Duration::from_secs(2));
        assert!(left.is_empty(), "programs left loaded after exit: {left:?}");
    }
}

/// `plan` names, for each alternative network program, the path it would take or why it cannot:
/// what the kernel itself answered (an errno or the absence of the kprobe PMU), never a guess.
#[rstest]
#[case("network_connect_fexit", AttachPoint::Fexit { function: "tcp_connect" })]
#[case("network_connect_kprobe", AttachPoint::Kprobe { function: "tcp_connect" })]
#[case("network_accept_fexit", AttachPoint::Fexit { function: "inet_csk_accept" })]
#[case("network_accept_kretprobe", AttachPoint::Kretprobe { function: "inet_csk_accept" })]
fn plan_names_each_network_path_or_the_kernel_reason(#[case] name: &str, #[case] attach: AttachPoint) {
    if skip_unless_root("plan_names_each_network_path_or_the_kernel_reason") {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapio-load"))
        .args(["plan", "--json", "--monitors", "network"])
        .output()
        .expect("run tapio-load plan");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan --json is JSON");
    let programs = plan["programs"].as_array().expect("programs");
    let entry = |name: &str| {
        programs.iter().find(|p| p["program"] == name).unwrap_or_else(|| panic!("{name} missing from the plan: {plan}"))
    };
    assert_eq!(entry("network_set_state")["path"], "tracepoint:sock/inet_sock_set_state");
    let gate = if matches!(attach, AttachPoint::Fexit { .. }) { "fentry" } else { "kprobe" };
    let gate = tapio_features::features::probe(gate).unwrap_or_else(|| panic!("a {gate} gate")).status;
    let e = entry(name);
    match gate {
        tapio_features::features::FeatureStatus::Present => assert_eq!(e["path"], attach.describe(), "{e}"),
        tapio_features::features::FeatureStatus::Absent { reason } => {
            let why = e["unavailable"].as_str().unwrap_or_else(|| panic!("{name}: absent gate, yet a path: {e}"));
            assert!(why.contains("unsupported") && why.contains(reason.as_str()), "{name}: {why}");
        }
        tapio_features::features::FeatureStatus::Error { message, .. } => {
            let why = e["unavailable"].as_str().unwrap_or_else(|| panic!("{name}: failed gate, yet a path: {e}"));
            assert!(why.contains("probe failed") && why.contains(message.as_str()), "{name}: {why}");
        }
    }
}
