//! The perf-buffer transport, proved on every kernel: the process monitor loaded from its perf
//! object, one exec, and its events read back from the per-CPU buffers.

use serde_json::json;
use tapio_load::{
    bundle::Transport,
    events::{self, DecodeOptions},
    monitors::{self, LoadOptions},
};

use crate::report::Reporter;

pub fn check(out: &mut Reporter, btf: Option<&aya::Btf>) {
    let options = LoadOptions { transport: Some(Transport::Perf), ..Default::default() };
    let Some(spec) = monitors::monitor("process") else { return };
    let mut m = match monitors::load(spec, btf, &options) {
        Ok(m) => m,
        Err(e) => {
            out.line(&json!({ "kind": "check", "name": "transport.perf", "pass": false, "detail": e.to_string() }));
            return;
        }
    };
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/init".to_owned());
    let status = std::process::Command::new(&exe).args(["exit-with", "9", "tapio-perf-leaf"]).status();
    let decode = DecodeOptions::default();
    let mut seen = Vec::new();
    while let Some(record) = m.events.next() {
        if let Ok(e) = events::decode(&record, &decode) {
            seen.push(serde_json::to_value(&e).expect("events serialize"));
        }
    }
    let exec = seen.iter().any(|e| e["event"] == "exec" && e["argv"][3] == "tapio-perf-leaf");
    let exit = seen.iter().any(|e| e["event"] == "exit" && e["exit_code"] == 9);
    let pass = status.is_ok_and(|s| s.code() == Some(9)) && exec && exit && m.events.lost == 0;
    out.line(&json!({
        "kind": "check", "name": "transport.perf", "pass": pass,
        "detail": format!("{} events over perf, exec seen {exec}, exit seen {exit}, lost {}", seen.len(), m.events.lost),
    }));
}
