//! Diagnostics on stderr: human-readable text (the default) or JSON lines with structured
//! fields (`--log-format json`), for a container log that events and diagnostics share.
//!
//! In JSON each line is one object: `timestamp`, `level`, `target`, `message` and the event's
//! own fields at the top level (`monitor`, `program`, `path`, `errno`, ...), so a log pipeline
//! can select on them without parsing the message.

use std::sync::OnceLock;

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format `{other}`: expected `text` or `json`")),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format [`init`] installed (text when nothing did, as in library use).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Installs the global subscriber: `filter` (the `TAPIO_LOG` directives, default `info`) and
/// `format`, writing to stderr.
pub fn init(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
