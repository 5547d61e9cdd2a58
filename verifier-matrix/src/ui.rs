//! Progress for long work: every stage sends an event to one printer thread.
//!
//! On a terminal (and not in CI) each booting kernel has a spinner showing its elapsed time and
//! latest console line (indicatif), and the stage and verdict lines are printed above the
//! spinners. Off a terminal, plain lines only. In CI (`CI` set) each kernel's console goes in a collapsible
//! group (`::group::`) so a failing boot can be read in full.

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::mpsc::{channel, Sender},
    thread::JoinHandle,
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// What the harness reports while it works.
#[derive(Debug)]
pub enum Progress {
    Stage(String),
    BootStart { line: String, accel: String },
    /// One console line of a booting kernel (printed only when verbose; on a terminal it is also
    /// the kernel's spinner message).
    Boot { line: String, text: String },
    BootEnd { line: String, verdict: String, wall: Duration, console: String },
}

/// The printer thread and the way to reach it.
pub struct Ui {
    tx: Option<Sender<Progress>>,
    handle: Option<JoinHandle<()>>,
}

impl Ui {
    pub fn start(verbose: bool) -> Self {
        let (tx, rx) = channel::<Progress>();
        let ci = std::env::var_os("CI").is_some();
        let mut out = if !ci && std::io::stderr().is_terminal() { Printer::terminal() } else { Printer::Plain };
        let handle = std::thread::spawn(move || {
            for p in rx {
                match p {
                    Progress::Stage(s) => out.line(format!("==> {s}")),
                    Progress::BootStart { line, accel } => out.boot_start(line, accel),
                    Progress::Boot { line, text } => {
                        out.console(&line, &text);
                        if verbose {
                            out.line(format!("[{line}] | {text}"));
                        }
                    }
                    Progress::BootEnd { line, verdict, wall, console } => {
                        out.boot_end(&line);
                        out.line(format!("[{line}] {verdict} in {:.1} s", wall.as_secs_f64()));
                        if ci {
                            eprintln!("::group::console of kernel {line}");
                            eprintln!("{console}");
                            eprintln!("::endgroup::");
                        }
                    }
                }
            }
            out.clear();
        });
        Self { tx: Some(tx), handle: Some(handle) }
    }

    pub fn sender(&self) -> Sender<Progress> {
        self.tx.clone().expect("ui running")
    }

    pub fn send(&self, p: Progress) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(p);
        }
    }

    /// Waits until every queued line is printed.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where the printer thread writes: plain lines, or lines above one spinner per booting kernel.
enum Printer {
    Plain,
    Terminal { bars: MultiProgress, booting: HashMap<String, ProgressBar> },
}

impl Printer {
    fn terminal() -> Self {
        Printer::Terminal { bars: MultiProgress::new(), booting: HashMap::new() }
    }

    /// A line that stays: above the spinners on a terminal.
    fn line(&self, text: String) {
        match self {
            Printer::Terminal { bars, .. } if bars.println(&text).is_ok() => {}
            _ => eprintln!("{text}"),
        }
    }

    fn boot_start(&mut self, line: String, accel: String) {
        match self {
            Printer::Plain => eprintln!("[{line}] booting ({accel})"),
            Printer::Terminal { bars, booting } => {
                let bar = bars.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("{spinner} [{prefix}] {elapsed:>4} {wide_msg}") {
                    bar.set_style(style);
                }
                bar.set_prefix(line.clone());
                bar.set_message(format!("booting ({accel})"));
                bar.enable_steady_tick(Duration::from_millis(120));
                booting.insert(line, bar);
            }
        }
    }

    /// The latest console line of a booting kernel, as its spinner's message.
    fn console(&self, line: &str, text: &str) {
        if let Printer::Terminal { booting, .. } = self {
            if let Some(bar) = booting.get(line) {
                bar.set_message(text.to_owned());
            }
        }
    }

    fn boot_end(&mut self, line: &str) {
        if let Printer::Terminal { bars, booting } = self {
            if let Some(bar) = booting.remove(line) {
                bar.finish_and_clear();
                bars.remove(&bar);
            }
        }
    }

    /// Removes spinners left by boots that ended without a `BootEnd` (QEMU could not start).
    fn clear(&mut self) {
        if let Printer::Terminal { bars, booting } = self {
            for (_, bar) in booting.drain() {
                bar.finish_and_clear();
                bars.remove(&bar);
            }
        }
    }
}
