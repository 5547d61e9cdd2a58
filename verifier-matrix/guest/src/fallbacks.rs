//! Fallback paths the normal run does not take on this kernel, each proved here on purpose:
//! the perf-buffer transport (taken before 5.8) and the kprobe capability path (taken where
//! fentry is missing). Where a kernel cannot run a path at all, the check says so and is skipped.

use serde_json::json;
use tapio_load::{
    bundle::Transport,
    events::{self, DecodeOptions},
    monitors::{self, LoadOptions},
};

use crate::report::Reporter;

/// The process monitor from its perf object: one exec, its events read from per-CPU buffers.
pub fn perf_transport(out: &mut Reporter, btf: Option<&aya::Btf>) {
    let options = LoadOptions { transport: Some(Transport::Perf), ..Default::default() };
    let Some(spec) = monitors::monitor("process") else { return };
    let mut m = match monitors::load(spec, btf, &options) {
        Ok(m) => m,
        Err(e) => {
            out.line(&json!({ "kind": "check", "name": "fallback.perf", "pass": false, "detail": e.to_string() }));
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
        "kind": "check", "name": "fallback.perf", "pass": pass,
        "detail": format!("{} events over perf, exec seen {exec}, exit seen {exit}, lost {}", seen.len(), m.events.lost),
    }));
}

/// The capability events through the kprobe path alone, even where fexit would win.
pub fn kprobe_capability(out: &mut Reporter, btf: Option<&aya::Btf>) {
    let Some(spec) = monitors::monitor("security") else { return };
    let Some(program) = spec.programs.iter().find(|p| p.name == "sec_capable_kprobe") else { return };
    if let Err(why) = tapio_load::plan::attach_path(&program.attach) {
        out.line(&json!({ "kind": "skip", "name": "fallback.kprobe", "reason": why }));
        return;
    }
    let result = (|| -> Result<(usize, bool), String> {
        let options = LoadOptions::default();
        let mut ebpf = monitors::open(spec, btf, &options).map_err(|e| e.to_string())?;
        monitors::load_program(&mut ebpf, spec.name, program, btf).map_err(|e| e.to_string())?;
        monitors::attach_program(&mut ebpf, spec.name, program).map_err(|e| e.to_string())?;
        let map = ebpf.take_map("events").ok_or("no events map")?;
        let mut source = tapio_load::transport::EventSource::open(map, options.transport()).map_err(|e| e.to_string())?;
        let name = b"tapio-kprobe";
        // SAFETY: name is a valid buffer of the given length; sethostname checks CAP_SYS_ADMIN.
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        let me = std::process::id();
        let decode = DecodeOptions::default();
        let mut count = 0;
        let mut seen = false;
        while let Some(record) = source.next() {
            count += 1;
            if let Ok(e) = events::decode(&record, &decode) {
                let v = serde_json::to_value(&e).expect("events serialize");
                seen |= v["event"] == "capability"
                    && v["tgid"] == me
                    && v["capability"] == "CAP_SYS_ADMIN"
                    && v["verdict_known"] == false;
            }
        }
        Ok((count, seen))
    })();
    let (pass, detail) = match result {
        Ok((count, seen)) => (seen, format!("{count} records through kprobe:cap_capable, CAP_SYS_ADMIN seen {seen}")),
        Err(e) => (false, e),
    };
    out.line(&json!({ "kind": "check", "name": "fallback.kprobe", "pass": pass, "detail": detail }));
}
