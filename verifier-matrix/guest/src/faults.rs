//! Faults the harness can ask for on the kernel command line, to prove it reports them and goes
//! on: `tapio.fixture=rejected` loads a program the verifier must refuse; `tapio.hang` never
//! finishes (the harness must time the guest out).

use tapio_bundle::FIXTURE_REJECTED;
use tapio_runtime::monitors::log_tail;

use crate::report::Reporter;

fn cmdline_has(word: &str) -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.split_whitespace().any(|w| w == word))
}

/// Hangs forever when asked to: the harness's timeout is what ends this guest.
pub fn hang_if_asked() {
    if cmdline_has("tapio.hang") {
        eprintln!("tapio-guest: tapio.hang: hanging on purpose");
        loop {
            std::thread::park();
        }
    }
}

/// Loads the rejected fixture when asked to and reports the verdict like any other program.
pub fn rejected_fixture_if_asked(out: &mut Reporter, btf: Option<&aya::Btf>) {
    if !cmdline_has("tapio.fixture=rejected") {
        return;
    }
    let mut loader = aya::EbpfLoader::new();
    loader.btf(btf);
    let verdict = loader.load(FIXTURE_REJECTED).map_err(|e| e.to_string()).and_then(|mut ebpf| {
        let program: &mut aya::programs::TracePoint = ebpf
            .program_mut("fixture_rejected")
            .ok_or("fixture_rejected missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        program.load().map_err(|e| match e {
            aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
                format!("verifier rejected it: {io_error}\nverifier log (tail):\n{}", log_tail(&verifier_log.to_string(), 8))
            }
            other => other.to_string(),
        })
    });
    out.line(&tapio_matrix_protocol::Line::Verifier {
        monitor: "fixture".to_owned(),
        program: "fixture_rejected".to_owned(),
        accepted: verdict.is_ok(),
        verified_insns: None,
        load_us: None,
        error: verdict.err(),
        skipped: None,
        needs: Default::default(),
    });
}
