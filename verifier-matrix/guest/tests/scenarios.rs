//! Every scenario of tapio-scenarios on this kernel, one test each: the same code the matrix
//! guest runs in every VM, run here as the matrix's host row runs it. Each test runs
//! `tapio-guest scenario <name>` (its monitors only, lines on stdout), so the scenario's actors
//! re-execute the same binary and its events name the same executable as in a VM. Every check
//! must pass, every skip must be explained by this kernel (tapio_kernel_gates::judge), and every
//! snapshot must match the stored one in `snapshots/`, this kernel's variant where one exists.
//!
//! Loads BPF programs: needs root. The cases run one at a time even under the default parallel
//! libtest (`make test`): two scenarios may use the same fixed port (dns on 53) or watch the same
//! monitor, so [`SERIAL`] holds each run.

#[path = "../../../loader/tests/common/skip.rs"]
mod skip;

use std::{path::Path, process::Command, sync::Mutex};

use rstest::rstest;
use skip::{skip, unless_root, Why};
use tapio_matrix_protocol::Line;

/// One scenario at a time in this process.
static SERIAL: Mutex<()> = Mutex::new(());

/// The workspace root, where `snapshots/` is.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("verifier-matrix/guest is two levels down")
}

/// `major.minor` of the running kernel: the key of its snapshot variants (`tcp_veth@6.18.snap`).
fn kernel_key() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("read the kernel release");
    let v = tapio_kernel_gates::KernelVersion::parse(&release).expect("a kernel release starts with major.minor");
    format!("{}.{}", v.major, v.minor)
}

#[rstest]
#[case::process_exec_chain("process.exec_chain")]
#[case::process_lineage("process.lineage")]
#[case::security_capability("security.capability")]
#[case::network_tcp_loopback("network.tcp_loopback")]
#[case::kernel_oom_kill("kernel.oom_kill")]
#[case::dns_udp_tcp("dns.udp_tcp")]
#[case::network_udp_dns("network.udp_dns")]
#[case::security_cred_ns("security.cred_ns")]
#[case::security_ns_caps_module("security.ns_caps_module")]
#[case::security_mount_api("security.mount_api")]
#[case::dns_hostile("dns.hostile")]
#[case::advanced_flood_dedup("advanced.flood_dedup")]
#[case::network_tcp_veth("network.tcp_veth")]
#[case::xdp_veth_prefixes("xdp.veth_prefixes")]
#[case::xdp_test_run("xdp.test_run")]
fn scenario(#[case] name: &str) {
    let test = format!("scenario {name}");
    if unless_root(&test, "loads the scenario's monitors") {
        return;
    }
    // A case that panicked poisons the lock; the next one still runs alone.
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = Command::new(env!("CARGO_BIN_EXE_tapio-guest")).args(["scenario", name]).output().expect("run tapio-guest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tapio-guest scenario {name}: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Line> = stdout
        .lines()
        .map(|l| Line::parse(l).unwrap_or_else(|e| panic!("scenario {name}: malformed line {l:?}: {e}")))
        .collect();
    assert_eq!(lines.last(), Some(&Line::Done), "scenario {name}: output cut off:\n{stdout}");

    let facts = tapio_features::features::kernel_facts();
    let mut problems = Vec::new();
    let (mut checks, mut snapshots) = (0, 0);
    for line in &lines {
        match line {
            Line::Check { name: check, pass, detail } => {
                checks += 1;
                println!("{} {check}: {detail}", if *pass { "PASS" } else { "FAIL" });
                if !pass {
                    problems.push(format!("check {check} failed: {detail}"));
                }
            }
            Line::Skip { name: skipped, reason, needs } => {
                skip(&format!("{test}: {skipped}"), Why::kernel(reason.clone(), needs, &facts));
            }
            Line::Snapshot { monitor, scenario, body } => {
                snapshots += 1;
                if let Err(e) = tapio_snapshots::compare(workspace(), &kernel_key(), monitor, scenario, body, false) {
                    problems.push(e.to_string());
                }
            }
            Line::Monitor { monitor, error, .. } => problems.push(format!("monitor {monitor} did not load: {error}")),
            Line::Setup { error } => problems.push(format!("setup: {error}")),
            _ => {}
        }
    }
    println!("scenario {name}: {checks} checks, {snapshots} snapshots");
    assert!(checks + snapshots > 0 || lines.iter().any(|l| matches!(l, Line::Skip { .. })), "scenario {name} reported nothing:\n{stdout}");
    assert!(problems.is_empty(), "scenario {name}:\n{}", problems.join("\n"));
}

/// The cases above are every scenario of the library, so a new one gets its host test.
#[test]
fn every_scenario_has_a_host_test() {
    let source = include_str!("scenarios.rs");
    let missing: Vec<&str> =
        tapio_scenarios::SCENARIOS.iter().map(|s| s.name()).filter(|n| !source.contains(&format!("(\"{n}\")]"))).collect();
    assert!(missing.is_empty(), "scenarios without a host test case: {missing:?}");
}
