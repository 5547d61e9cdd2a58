//! Progress for long work: every stage sends an event to one printer thread.
//!
//! Plain lines always (a terminal and a CI log read the same); in CI (`CI` set) each kernel's
//! console goes in a collapsible group so a failing boot can be read in full.

use std::{
    sync::mpsc::{channel, Sender},
    thread::JoinHandle,
    time::Duration,
};

/// What the harness reports while it works.
#[derive(Debug)]
pub enum Progress {
    Stage(String),
    BootStart { line: String, accel: String },
    /// One console line of a booting kernel (printed only when verbose).
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
        let handle = std::thread::spawn(move || {
            for p in rx {
                match p {
                    Progress::Stage(s) => eprintln!("==> {s}"),
                    Progress::BootStart { line, accel } => eprintln!("[{line}] booting ({accel})"),
                    Progress::Boot { line, text } if verbose => eprintln!("[{line}] | {text}"),
                    Progress::Boot { .. } => {}
                    Progress::BootEnd { line, verdict, wall, console } => {
                        eprintln!("[{line}] {verdict} in {:.1} s", wall.as_secs_f64());
                        if ci {
                            eprintln!("::group::console of kernel {line}");
                            eprintln!("{console}");
                            eprintln!("::endgroup::");
                        }
                    }
                }
            }
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
