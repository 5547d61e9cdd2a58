//! The `file` sink: JSON lines appended to a file, rotated by size, with a fixed number of rotated
//! files kept.
//!
//! Rotation happens between lines, never inside one: before a line that would take the file past
//! `max_bytes`, the file is flushed, fsynced and closed, the rotated files shift up by one
//! (`events.jsonl.1` becomes `.2`, ...; the one past `keep` is removed), the file is renamed to
//! `events.jsonl.1` and a new one is created. Every line is therefore whole in exactly one file,
//! and a reader that follows the renames (`tail -F`, a log shipper) loses nothing.
//!
//! Durability: lines reach the kernel at the end of every batch (a crash of the agent loses
//! nothing written); a rotated file is fsynced before its rename, so a node crash can lose at
//! most the active file's lines since its last rotation, never a rotated file's.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::events::Event;

/// JSON lines to `path`, rotated at `max_bytes` (0: never), keeping `keep` rotated files.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    /// Bytes in the active file, including what is buffered.
    size: u64,
    line: Vec<u8>,
    rotations: u64,
}

fn open_append(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::with_capacity(64 * 1024, file), size))
}

/// `events.jsonl` → `events.jsonl.<n>`.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    /// Opens (or creates) `path` for appending: a restarted agent continues the file.
    pub fn open(path: PathBuf, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let (out, size) = open_append(&path)?;
        Ok(Self { path, max_bytes, keep, out, size, line: Vec::with_capacity(1024), rotations: 0 })
    }

    /// Files rotated since open.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Writes a batch of events, rotating between lines as needed, then flushes to the kernel.
    pub fn write_batch(&mut self, batch: &[Event]) -> io::Result<()> {
        for event in batch {
            self.line.clear();
            serde_json::to_writer(&mut self.line, event)?;
            self.line.push(b'\n');
            let len = self.line.len() as u64;
            // A line longer than the limit gets a file of its own rather than being cut.
            if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
                self.rotate()?;
            }
            self.out.write_all(&self.line)?;
            self.size += len;
        }
        self.out.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            match fs::remove_file(rotated(&self.path, self.keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..self.keep).rev() {
                match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let (out, size) = open_append(&self.path)?;
        // The old writer is empty (flushed above): dropping it only closes the rotated file.
        self.out = out;
        self.size = size;
        self.rotations += 1;
        // The renames are durable once the directory is.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        tracing::debug!(path = %self.path.display(), rotations = self.rotations, "file sink: rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::output::sink::tests::event;

    /// Every line of the active and the rotated files, by the event's pid, with the file sizes.
    fn read_all(path: &Path, keep: usize) -> (BTreeMap<u32, usize>, Vec<u64>) {
        let mut seen = BTreeMap::new();
        let mut sizes = Vec::new();
        for file in std::iter::once(path.to_owned()).chain((1..=keep).map(|n| rotated(path, n))) {
            let Ok(text) = fs::read_to_string(&file) else { continue };
            sizes.push(text.len() as u64);
            assert!(text.is_empty() || text.ends_with('\n'), "{}: a partial last line", file.display());
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not a whole JSON line ({e}): {line}", file.display()));
                *seen.entry(v["pid"].as_u64().expect("pid") as u32).or_insert(0) += 1;
            }
        }
        (seen, sizes)
    }

    /// Rotating several times loses and repeats nothing: with room for every file, each event is
    /// in exactly one file and the counts match.
    #[test]
    fn rotation_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(path.clone(), 4096, 1000).unwrap();
        let n = 3000u32;
        for chunk in (0..n).collect::<Vec<_>>().chunks(37) {
            file.write_batch(&chunk.iter().map(|&i| event(i)).collect::<Vec<_>>()).unwrap();
        }
        assert!(file.rotations() >= 10, "only {} rotations", file.rotations());
        let (seen, sizes) = read_all(&path, 1000);
        assert_eq!(seen.len(), n as usize, "events missing");
        assert!(seen.values().all(|&c| c == 1), "an event in more than one line");
        assert_eq!(sizes.len() as u64, file.rotations() + 1);
        assert!(sizes.iter().all(|&s| s <= 4096), "a file past max_bytes: {sizes:?}");
    }

    /// Retention keeps `keep` rotated files: the oldest events go, the newest remain whole, and a
    /// reopened file continues where it was.
    #[test]
    fn retention_removes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(path.clone(), 2048, 3).unwrap();
        let n = 2000u32;
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            file.write_batch(&chunk.iter().map(|&i| event(i)).collect::<Vec<_>>()).unwrap();
        }
        assert!(file.rotations() > 3);
        assert!(!rotated(&path, 4).exists(), "a fourth rotated file was kept");
        let (seen, _) = read_all(&path, 3);
        let kept: Vec<u32> = seen.keys().copied().collect();
        assert!(seen.values().all(|&c| c == 1));
        let first = kept[0];
        assert!(first > 0, "the oldest events were not removed");
        assert_eq!(kept, (first..n).collect::<Vec<_>>(), "the kept events are not the newest, contiguous");
        // The oldest kept file is `.3`, and it starts at the first kept event.
        let oldest = fs::read_to_string(rotated(&path, 3)).unwrap();
        let v: serde_json::Value = serde_json::from_str(oldest.lines().next().unwrap()).unwrap();
        assert_eq!(v["pid"].as_u64(), Some(u64::from(first)));
        drop(file);
        let before = fs::metadata(&path).unwrap().len();
        let mut again = RotatingFile::open(path.clone(), 2048, 3).unwrap();
        again.write_batch(&[event(n)]).unwrap();
        assert!(fs::metadata(&path).unwrap().len() > before || again.rotations() == 1, "a reopened file was truncated");
    }
}
