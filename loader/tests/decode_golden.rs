//! The JSON output of recorded records is what it was: decodes `fixtures/records.hex` (raw ring
//! records, see `fixtures/make_records.py`) as the run loop does (cgroup_watch records feed
//! attribution, the rest decode, gain their container fields, pass the DNS ordering stage and
//! correlator) and compares the JSON lines with `fixtures/records.golden.jsonl`.
//!
//! The golden file was written before the loader was split into crates (issue 16), so a refactor
//! that changes a byte of output fails here. `TAPIO_REGEN_GOLDEN=1` rewrites it: only for an
//! intended change of the output, reviewed line by line.

use std::{path::PathBuf, time::Duration};

use tapio_decode::{attribution::Attributor, dns::order::Sequencer, events};
use tapio_runtime::monitors::cgroup_watch;
use tapio_load::output::json::JsonLines;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn unhex(line: &str) -> Vec<u8> {
    (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex")).collect()
}

/// The output for the recorded records: one line per event or per record that failed to decode.
fn render() -> String {
    let text = std::fs::read_to_string(fixture("records.hex")).expect("read records.hex");
    let mut attributor = Attributor::new(16);
    let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice";
    let container = "cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
    assert!(attributor.insert(0x1001, &format!("{pod}/{container}")));
    assert!(attributor.insert(0x2001, pod));
    let options = events::DecodeOptions::default();
    let mut dns = Sequencer::new(Duration::from_secs(5), 64, Duration::from_millis(30));
    let buffer = Shared::default();
    let mut out = JsonLines::new(buffer.clone());
    let mut errors = Vec::new();
    let mut last_ts = 0;
    for (i, line) in text.lines().enumerate() {
        let record = unhex(line.trim());
        if let Some(mkdir) = cgroup_watch::decode(&record) {
            match mkdir {
                Ok(mkdir) => {
                    attributor.observe(&mkdir);
                }
                Err(e) => errors.push(format!("record {i}: {e}")),
            }
            continue;
        }
        match events::decode_all(&record, &options) {
            Ok(decoded) => {
                let mut ordered = Vec::new();
                for mut event in decoded {
                    last_ts = last_ts.max(event.ts_ns);
                    attributor.annotate(&mut event);
                    dns.push(event, &mut ordered);
                }
                dns.advance(last_ts, &mut ordered);
                for event in &ordered {
                    out.write(event).expect("write");
                }
            }
            Err(e) => errors.push(format!("record {i}: {e}")),
        }
    }
    let mut ordered = Vec::new();
    dns.flush(last_ts + 60_000_000_000, &mut ordered);
    for event in &ordered {
        out.write(event).expect("write");
    }
    out.flush().expect("flush");
    drop(out);
    let json = String::from_utf8(buffer.0.borrow().clone()).expect("utf-8");
    format!("{json}--- decode errors ---\n{}\n", errors.join("\n"))
}

/// The writer JsonLines owns, still readable here.
#[derive(Clone, Default)]
struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn recorded_records_decode_to_the_golden_json() {
    let got = render();
    let golden = fixture("records.golden.jsonl");
    if std::env::var_os("TAPIO_REGEN_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&golden).expect("read records.golden.jsonl (TAPIO_REGEN_GOLDEN=1 writes it)");
    if got != want {
        let first = got.lines().zip(want.lines()).position(|(g, w)| g != w).unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "decoded output differs from records.golden.jsonl at line {}:\n got: {}\nwant: {}",
            first + 1,
            got.lines().nth(first).unwrap_or("<end>"),
            want.lines().nth(first).unwrap_or("<end>")
        );
    }
}
