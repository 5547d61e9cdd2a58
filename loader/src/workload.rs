//! Workloads the real-kernel tests (through `tapio-scenario`) and the verifier matrix's guests
//! (through the agent re-executing itself) both run, so each is written once.

use std::{
    sync::{Arc, Barrier},
    thread,
    time::Duration,
};

const GROUP_CODE: i32 = 3;
const LEADER_CODE: i32 = 4;
const THREAD_CODE: i32 = 9;

/// How the threads of [`threads_exit`] end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadsExit {
    /// Every thread calls exit_group(3) at once: the wait status is the group's code, 3.
    Group,
    /// Every thread calls exit(2) (the thread's own exit) at once, the extra threads with 9 and
    /// the leader with 4. The process ends with its last thread; wait() reports the leader's
    /// code before 6.0 and, since synchronize_group_exit() (6.0), the code of the last thread
    /// to start exiting, so either.
    Each,
}

impl ThreadsExit {
    pub fn name(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Each => "each",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Group, Self::Each].into_iter().find(|m| m.name() == s)
    }

    /// The exit codes wait() may report for the process.
    pub fn wait_codes(self) -> &'static [i32] {
        match self {
            Self::Group => &[GROUP_CODE],
            Self::Each => &[LEADER_CODE, THREAD_CODE],
        }
    }
}

/// A process that lives `late` with one thread, then starts `threads` more, and has all of them
/// end at the same instant as `mode` says. The threads started late make the last thread out
/// much younger than the process (its exit's `duration_ns` must be the process's age), and
/// threads exiting together race to be the last (the exit must be reported once). Never returns.
pub fn threads_exit(threads: usize, late: Duration, mode: ThreadsExit) -> ! {
    thread::sleep(late);
    let barrier = Arc::new(Barrier::new(threads + 1));
    for _ in 0..threads {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            end(mode, THREAD_CODE)
        });
    }
    barrier.wait();
    end(mode, LEADER_CODE)
}

fn end(mode: ThreadsExit, own_code: i32) -> ! {
    let (call, code) = match mode {
        ThreadsExit::Group => (libc::SYS_exit_group, GROUP_CODE),
        ThreadsExit::Each => (libc::SYS_exit, own_code),
    };
    loop {
        // SAFETY: exit and exit_group end the thread or the process; nothing is touched after.
        unsafe { libc::syscall(call, code) };
    }
}

/// What [`memory_hog`] does once it holds its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHog {
    /// Says `ready` on stdout and waits to be killed.
    Wait,
    /// Exits 0.
    Exit,
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`, then touches `mib`
/// MiB of memory, 1 MiB at a time (killed on the way if the cgroup's `memory.max` is smaller),
/// then does what `after` says. Exits 1 if it cannot join the cgroup.
pub fn memory_hog(procs: &std::path::Path, mib: usize, after: AfterHog) -> ! {
    use std::io::Write;
    if std::fs::write(procs, std::process::id().to_string()).is_err() {
        std::process::exit(1);
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        // Written, not just allocated: untouched pages are never charged.
        held.push(vec![0x5a; 1 << 20]);
        std::hint::black_box(&held);
    }
    match after {
        AfterHog::Exit => std::process::exit(0),
        AfterHog::Wait => {
            let _ = writeln!(std::io::stdout(), "ready");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::park();
            }
        }
    }
}
