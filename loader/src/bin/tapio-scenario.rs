//! A deterministic workload for the loader's tests.
//!
//! `threads-exit <threads> <late_ms> <group|each>`: [`tapio_testkit::workload::threads_exit`], a
//! process whose threads all end at once. (The process tree with a traced child and an exec from
//! a non-leader thread is the shared scenario process.lineage, in tapio-scenarios.)

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("threads-exit") => {
            let threads = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
            let late = std::time::Duration::from_millis(args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0));
            let mode = args.get(4).and_then(|m| tapio_testkit::workload::ThreadsExit::parse(m));
            match mode {
                Some(mode) => tapio_testkit::workload::threads_exit(threads, late, mode),
                None => {
                    eprintln!("usage: tapio-scenario threads-exit <threads> <late_ms> <group|each>");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("usage: tapio-scenario threads-exit <threads> <late_ms> <group|each>");
            ExitCode::from(2)
        }
    }
}
