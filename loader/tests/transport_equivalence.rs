//! The same workload decodes to the same events whichever fallback the loader takes: ring buffer
//! or perf buffer, the kernel's BTF or a minimized external BTF file.
//!
//! Events are normalised (ids become roles, ports become `server`/`client`, timestamps dropped)
//! and compared as sets, so only a real difference in what was captured or decoded fails.

mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use common::{kernel_lock, skip_unless_root, Loader};
use serde_json::Value;
use tapio_testkit::snapshot::{normalize, Roles};

/// Runs the workload under one configuration and returns its normalised events.
fn capture(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--monitors", "process,network", "--metrics-address", "off"];
    args.extend_from_slice(extra);
    let loader = Loader::start(&args);

    let status = Command::new("/bin/sh").args(["-c", "exit 3", "tapio-equivalence"]).status().expect("run sh");
    assert_eq!(status.code(), Some(3));
    let mut seen = Vec::new();
    let sh_exit = loader.wait_for(&mut seen, Duration::from_secs(5), |e| {
        e["event"] == "exit" && e["exit_code"] == 3 && e["comm"] == "sh"
    });
    let sh = sh_exit.expect("exit of sh never arrived").event["tgid"].as_u64().unwrap();

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let server_port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (mut accepted, _) = listener.accept().unwrap();
    client.write_all(&[7u8; 100]).unwrap();
    let mut buf = [0u8; 100];
    accepted.read_exact(&mut buf).unwrap();
    drop(client);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
    drop(accepted);
    let server_close = loader.wait_for(&mut seen, Duration::from_secs(5), |e| {
        e["monitor"] == "network" && e["event"] == "close" && e["sport"] == server_port
    });
    assert!(server_close.is_some(), "server close never arrived");
    let (rest, stderr, status) = loader.finish();
    assert!(status.success(), "{stderr}");
    seen.extend(rest);

    let me = u64::from(std::process::id());
    let ours = |e: &&Value| {
        let ports = [server_port, client_port];
        let port_of = |k: &str| e[k].as_u64().is_some_and(|p| ports.contains(&(p as u16)));
        (e["monitor"] == "process" && (e["tgid"] == sh || e["child_tgid"] == sh))
            || (e["monitor"] == "network" && port_of("sport") && port_of("dport"))
    };
    let picked: Vec<Value> = seen.iter().filter(ours).cloned().collect();
    let roles = Roles {
        pids: vec![(me, "test".to_owned()), (sh, "sh".to_owned())],
        exe: "/bin/sh".to_owned(),
        ports: vec![(server_port, "server".to_owned()), (client_port, "client".to_owned())],
        ..Default::default()
    };
    normalize(&picked, &roles).expect("normalise").iter().map(Value::to_string).collect()
}

/// Where a case's arguments name the minimized BTF file, which the case writes first.
const MIN_BTF: &str = "<minimized BTF>";

/// Each fallback against ring buffer + the kernel's BTF, captured again in the same case.
#[rstest::rstest]
#[case::perf_buffer(&["--transport", "perf"])]
#[case::minimized_btf(&["--transport", "ringbuf", "--btf", MIN_BTF])]
#[case::perf_buffer_and_minimized_btf(&["--transport", "perf", "--btf", MIN_BTF])]
fn ringbuf_perf_and_minimized_btf_agree(#[case] extra: &[&str]) {
    if skip_unless_root("ringbuf_perf_and_minimized_btf_agree") {
        return;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        common::skip_for_kernel("ringbuf_perf_and_minimized_btf_agree", &tapio_kernel_gates::Needs::one("vmlinux btf"), "no /sys/kernel/btf/vmlinux to minimize");
        return;
    }
    let _serial = kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let min = dir.path().join("min.btf");
    if extra.contains(&MIN_BTF) {
        let out = Command::new(env!("CARGO_BIN_EXE_tapio-load"))
            .args(["btf", "minimize", "--from", "/sys/kernel/btf/vmlinux", "--out"])
            .arg(&min)
            .output()
            .expect("run btf minimize");
        assert!(out.status.success(), "btf minimize: {}", String::from_utf8_lossy(&out.stderr));
    }
    let min = min.to_str().unwrap();
    let extra: Vec<&str> = extra.iter().map(|&a| if a == MIN_BTF { min } else { a }).collect();

    let reference = capture(&["--transport", "ringbuf"]);
    assert!(reference.iter().any(|e| e.contains("\"exec\"")), "no exec captured: {reference:#?}");
    assert!(reference.iter().any(|e| e.contains("\"connect\"")), "no connect captured: {reference:#?}");
    let got = capture(&extra);
    assert_eq!(got, reference, "{extra:?} decoded different events than ring buffer + kernel BTF");
}
