//! The verifier matrix's guest agent.
//!
//! Inside a VM it is `/init`: it mounts what the loader needs, loads and attaches every monitor of
//! the bundle, runs the process workload, checks the decoded events, writes one JSON line per
//! result to the dedicated results port (`/dev/ttyS1`, `/dev/hvc0` on arm64), and powers the VM off. On the host row it
//! runs the same checks as a plain process and writes the lines to stdout.
//!
//! The workload needs no shell: the agent re-executes itself (`/proc/self/exe exit-with N tag`),
//! so the initramfs holds nothing but this binary and the kernel modules the tests use.

mod checks;
mod fallbacks;
mod faults;
mod report;
mod setup;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The scenarios' actors (`exit-with`, `threads-exit`, `security-actor`, `security-ns-actor`,
    // `security-mount-actor`, `advanced-flood`, `memory-hog`): tapio_scenarios::actor.
    if let Some(code) = tapio_scenarios::actor(&args) {
        return code;
    }
    // `scenario <monitor>.<scenario>`: that one scenario, its monitors only, lines to stdout:
    // what the host tests run (tests/scenarios.rs).
    if args.get(1).map(String::as_str) == Some("scenario") {
        let mut out = report::Reporter::stdout();
        let code = checks::run_one(&mut out, args.get(2).map_or("", String::as_str));
        out.line(&tapio_matrix_protocol::Line::Done);
        out.flush();
        return code;
    }
    let in_vm = std::process::id() == 1;
    let mut out = if in_vm {
        setup::prepare_vm();
        report::Reporter::results_port()
    } else {
        report::Reporter::stdout()
    };
    // --- tapio.bare: the matrix benchmark's reference boot (verifier-matrix/benches/
    // matrix_overhead.rs). The same kernel, initramfs and mounts, then straight to the end: no
    // monitor is loaded, so its wall time is what booting to a trivial init costs.
    if in_vm && std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.split_whitespace().any(|w| w == "tapio.bare")) {
        out.line(&tapio_matrix_protocol::Line::Done);
        out.flush();
        setup::power_off();
    }
    // --- end tapio.bare
    out.line(&report::kernel_info());
    faults::hang_if_asked();
    checks::run_all(&mut out);
    out.line(&tapio_matrix_protocol::Line::Done);
    out.flush();
    if in_vm {
        setup::power_off();
    }
    ExitCode::SUCCESS
}
