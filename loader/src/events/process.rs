//! The process monitor's records (probes/include/process.h) and their decoding.

use serde::Serialize;

use super::{c_string, read_record, Body, DecodeError, DecodeOptions, Event, TapioHeader};

pub const PROCESS_EXEC: u8 = 1;
pub const PROCESS_FORK: u8 = 2;
pub const PROCESS_EXIT: u8 = 3;

pub const PROCESS_F_ARGS_TRUNCATED: u32 = 0x1;
pub const PROCESS_F_FILENAME_TRUNCATED: u32 = 0x2;

/// Mirror of `struct process_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEvent {
    pub hdr: TapioHeader,
    pub ppid: u32,
    pub child_tgid: u32,
    pub pid_ns: u32,
    pub exit_code: u32,
    pub duration_ns: u64,
    pub args_size: u32,
    pub flags: u32,
}

/// Lengths of `process_exec_event`'s `filename` and `args` buffers.
const EXEC_FILENAME_LEN: usize = 256;
const EXEC_ARGS_LEN: usize = 1024;

/// Mirror of `struct process_exec_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcessExecEvent {
    pub base: ProcessEvent,
    pub filename: [u8; EXEC_FILENAME_LEN],
    pub args: [u8; EXEC_ARGS_LEN],
}

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
            // The strings are read where they lie: copying the whole 1360-byte record to read a
            // few dozen bytes of it was the decoder's largest single cost.
            let need = std::mem::size_of::<ProcessExecEvent>();
            if bytes.len() < need {
                return Err(DecodeError::Short { what: "process_exec_event", len: bytes.len(), need });
            }
            let field = |offset: usize, len: usize| &bytes[offset..offset + len];
            let filename = field(std::mem::offset_of!(ProcessExecEvent, filename), EXEC_FILENAME_LEN);
            let args = field(std::mem::offset_of!(ProcessExecEvent, args), EXEC_ARGS_LEN);
            let size = (base.args_size as usize).min(args.len());
            let (argv, cut) = split_argv(&args[..size], options.argv_max);
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

    #[test]
    fn short_record_is_refused() {
        let h = TapioHeader { monitor: 1, kind: PROCESS_EXEC, ..Default::default() };
        let bytes = [0u8; 100];
        let err = decode(&h, &bytes, &DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Short { what: "process_exec_event", .. }), "{err}");
    }
}
