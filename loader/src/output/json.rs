//! JSON lines: one event object per line, flushed per batch so readers see events promptly.

use std::io::{self, Write};

use crate::events::Event;

/// Writes events as JSON lines to any writer (stdout or a file).
pub struct JsonLines<W: Write> {
    out: io::BufWriter<W>,
    written: u64,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out: io::BufWriter::new(out), written: 0 }
    }

    /// Buffers one event; call [`Self::flush`] after a batch.
    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}
