//! The network and kernel monitors through the agent: what is about `tapio-load` itself. What the
//! programs record for real TCP connections (every state change, bytes on close, the owner, the
//! kernel monitor's socket cgroup, `connect_attempt` and `accept_return` with the caller and the
//! acceptor as the owner of the accepted socket) is the shared scenario network.tcp_loopback
//! (kernel.tcp_loopback for the kernel monitor), and the OOM kill is kernel.oom_kill
//! (tapio-scenarios, run on this kernel by verifier-matrix/guest/tests/scenarios.rs and in every
//! VM of the matrix).
//!
//! Here: a connection's records reach the agent's JSON output from both monitors, the start-up
//! log names each attach path (or why an optional event is unavailable, and then none comes), the
//! agent exits 0 on SIGTERM and leaves no program loaded; and `tapio-load plan` names each
//! alternative network path or the kernel's reason.

mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{kernel_lock, skip_unless_root, Loader};
use rstest::rstest;
use serde_json::Value;
use tapio_runtime::monitors::{self, AttachPoint};

/// One connection over 127.0.0.1, closed by the client first; returns (client, server).
fn exchange() -> (SocketAddr, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind listener");
    let server = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server).expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"ping").unwrap();
    drop(client);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
    (client_addr, server)
}

fn tuple_is(e: &Value, local: SocketAddr, peer: SocketAddr) -> bool {
    e["saddr"] == local.ip().to_string()
        && e["sport"] == local.port()
        && e["daddr"] == peer.ip().to_string()
        && e["dport"] == peer.port()
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

#[test]
fn network_and_kernel_monitors_through_the_agent() {
    if skip_unless_root("network_and_kernel_monitors_through_the_agent") {
        return;
    }
    let _serial = kernel_lock();
    let loader = Loader::start(&["--monitors", "network,kernel"]);
    let (client, server) = exchange();

    // The last record this test causes: the kernel monitor's close of the server's socket.
    let mut events = Vec::new();
    let last = loader.wait_for(&mut events, Duration::from_secs(5), |e| {
        e["monitor"] == "kernel" && e["event"] == "close" && tuple_is(e, server, client)
    });
    let (rest, stderr, status) = loader.finish();
    events.extend(rest);
    assert!(last.is_some(), "the kernel monitor's server close never reached stdout; stderr:\n{stderr}");
    assert!(
        events.iter().any(|e| e["monitor"] == "network" && e["event"] == "connect" && tuple_is(e, client, server)),
        "the network monitor's connect never reached stdout"
    );
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
