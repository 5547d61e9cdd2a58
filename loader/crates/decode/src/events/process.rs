//! The process monitor's records (probes/include/process.h) and their decoding.

use serde::Serialize;

use super::{c_string, read_record, Body, DecodeError, DecodeOptions, Event, TapioHeader};
// The record mirrors and their C constants (probes/include/process.h).
use tapio_abi::process::*;

/// Where `filename` and `args` start in an exec record.
const EXEC_FILENAME_OFFSET: usize = std::mem::offset_of!(ProcessExecEvent, filename);
const EXEC_ARGS_OFFSET: usize = std::mem::offset_of!(ProcessExecEvent, args);


/// The process fields of an output record.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ProcessBody {
    Exec { ppid: u32, pid_ns: u32, filename: String, argv: Vec<String>, argv_truncated: bool },
    Fork { ppid: u32, child_tgid: u32, pid_ns: u32 },
    Exit {
        ppid: u32,
        pid_ns: u32,
        /// The code passed to exit(), or 128 + signal as a shell reports it.
        exit_code: u32,
        /// The terminating signal, when a signal ended the process.
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<u32>,
        duration_ns: u64,
    },
}

/// Splits the kernel's NUL-separated argv block, keeping at most `max` entries.
fn split_argv(block: &[u8], max: usize) -> (Vec<String>, bool) {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    let mut argv: Vec<String> = Vec::new();
    let mut more = false;
    for arg in block.split(|&b| b == 0) {
        if argv.len() == max {
            more = true;
            break;
        }
        argv.push(String::from_utf8_lossy(arg).into_owned());
    }
    if block.is_empty() {
        argv.clear();
    }
    (argv, more)
}

/// Decodes a process record whose header is already read.
pub fn decode(h: &TapioHeader, bytes: &[u8], options: &DecodeOptions) -> Result<Event, DecodeError> {
    let base: ProcessEvent = read_record(bytes, "process_event")?;
    let (name, body) = match h.kind {
        PROCESS_EXEC => {
            // The probe sends the record cut after its `args_size` argv bytes (a full-size record,
            // as older probes sent, decodes the same).
            let args_size = (base.args_size as usize).min(PROCESS_ARGS_LEN);
            let need = EXEC_ARGS_OFFSET + args_size;
            if bytes.len() < need {
                return Err(DecodeError::Short { what: "process_exec_event", len: bytes.len(), need });
            }
            let filename = &bytes[EXEC_FILENAME_OFFSET..EXEC_ARGS_OFFSET];
            let (argv, cut) = split_argv(&bytes[EXEC_ARGS_OFFSET..need], options.argv_max);
            let truncated = cut || base.flags & PROCESS_F_ARGS_TRUNCATED != 0;
            let body = ProcessBody::Exec {
                ppid: base.ppid,
                pid_ns: base.pid_ns,
                filename: c_string(filename),
                argv,
                argv_truncated: truncated,
            };
            ("exec", body)
        }
        PROCESS_FORK => {
            ("fork", ProcessBody::Fork { ppid: base.ppid, child_tgid: base.child_tgid, pid_ns: base.pid_ns })
        }
        PROCESS_EXIT => {
            // The kernel keeps a wait status: exit code in bits 8..16, signal in bits 0..7.
            let status = base.exit_code;
            let signal = status & 0x7f;
            let (exit_code, signal) =
                if signal == 0 { ((status >> 8) & 0xff, None) } else { (128 + signal, Some(signal)) };
            let body = ProcessBody::Exit {
                ppid: base.ppid,
                pid_ns: base.pid_ns,
                exit_code,
                signal,
                duration_ns: base.duration_ns,
            };
            ("exit", body)
        }
        kind => return Err(DecodeError::UnknownKind { monitor: "process", kind }),
    };
    Ok(Event::from_header(h, "process", name, Body::Process(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_split_and_cap() {
        assert_eq!(split_argv(b"ls\0-l\0/tmp\0", 8), (vec!["ls".into(), "-l".into(), "/tmp".into()], false));
        assert_eq!(split_argv(b"a\0b\0c\0", 2), (vec!["a".into(), "b".into()], true));
        assert_eq!(split_argv(b"", 2), (vec![], false));
        // A block cut by the kernel's buffer ends without a NUL: the partial arg is kept.
        assert_eq!(split_argv(b"a\0bc", 4), (vec!["a".into(), "bc".into()], false));
    }

    /// A record cut after its argv bytes, as the probe sends it, decodes; one cut inside them
    /// is refused.
    #[test]
    fn exec_record_cut_after_its_argv() {
        let h = TapioHeader { monitor: 1, kind: PROCESS_EXEC, ..Default::default() };
        let argv = b"/bin/true\0a\0b\0";
        let mut bytes = vec![0u8; EXEC_ARGS_OFFSET + argv.len()];
        let args_size_at = std::mem::offset_of!(ProcessEvent, args_size);
        bytes[args_size_at..args_size_at + 4].copy_from_slice(&(argv.len() as u32).to_le_bytes());
        bytes[EXEC_FILENAME_OFFSET..EXEC_FILENAME_OFFSET + 9].copy_from_slice(b"/bin/true");
        bytes[EXEC_ARGS_OFFSET..].copy_from_slice(argv);
        let e = decode(&h, &bytes, &DecodeOptions::default()).expect("decode a cut exec record");
        match e.body {
            Body::Process(ProcessBody::Exec { filename, argv, argv_truncated, .. }) => {
                assert_eq!(filename, "/bin/true");
                assert_eq!(argv, ["/bin/true", "a", "b"]);
                assert!(!argv_truncated);
            }
            other => panic!("not an exec: {other:?}"),
        }
        let err = decode(&h, &bytes[..bytes.len() - 1], &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Short { what: "process_exec_event", .. }), "{err}");
    }

    #[test]
    fn short_record_is_refused() {
        let h = TapioHeader { monitor: 1, kind: PROCESS_EXEC, ..Default::default() };
        let bytes = [0u8; 100];
        let err = decode(&h, &bytes, &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Short { what: "process_exec_event", .. }), "{err}");
    }
}
