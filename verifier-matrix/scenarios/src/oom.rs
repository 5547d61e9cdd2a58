//! kernel/oom_kill: in a cgroup with `memory.max` of 8 MiB, a victim touches 6 MiB and waits;
//! then a second process touches 4 MiB, and its allocation makes the kernel kill the larger one.
//! The kernel monitor must name the victim (pid, process, comm, uid and the cgroup it was killed
//! in) on every kernel, in the record of the task that ran into the limit (issue 15, item 4:
//! before 6.8 `mark_victim` gives the pid alone, and the probe takes the rest from the SIGKILL
//! the killing task sends just before it; the victim being another task tests exactly that).

use std::{
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tapio_decode::events::Body;
use tapio_runtime::monitors::LoadedMonitor;

use super::{check, collect, current_exe, discard, monitor, EVENT_WAIT};
use crate::Outcome;

const SCENARIO: &str = "kernel.oom_kill";

fn hog(procs: &Path, mib: usize, after: &str) -> std::io::Result<Child> {
    Command::new(current_exe())
        .args(["memory-hog", &procs.display().to_string(), &mib.to_string(), after])
        .stdout(Stdio::piped())
        .spawn()
}

/// Waits up to `limit` for `child` to end; kills it past that.
fn reap(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn run(out: &mut Outcome, loaded: &mut [LoadedMonitor]) {
    let Some(m) = monitor(out, loaded, "kernel", SCENARIO) else { return };
    let cg = match tapio_testkit::workload::MemCgroup::create("tapio-oom", 8 << 20) {
        Ok(cg) => cg,
        Err(e) => return check(out, &format!("{SCENARIO}.setup"), false, format!("a cgroup with a memory limit: {e}")),
    };
    let Some(cgroup_id) = cg.expected_v2_id else {
        return check(out, &format!("{SCENARIO}.setup"), false, format!("{}: no cgroup v2 id to expect", cg.dir.display()));
    };
    discard(m);
    let procs = cg.procs();
    let mut victim = match hog(&procs, 6, "wait") {
        Ok(c) => c,
        Err(e) => return check(out, &format!("{SCENARIO}.setup"), false, format!("spawn the victim: {e}")),
    };
    let victim_pid = victim.id();
    let ready = victim.stdout.take().and_then(|o| BufReader::new(o).lines().next()).and_then(Result::ok);
    let killer = (ready.as_deref() == Some("ready")).then(|| hog(&procs, 4, "exit"));
    let (killer_pid, killer_status) = match killer {
        Some(Ok(mut k)) => (Some(k.id()), reap(&mut k, Duration::from_secs(60))),
        _ => (None, None),
    };
    let victim_status = reap(&mut victim, Duration::from_secs(10));
    let got = collect(
        m,
        |e| e.event == "oom_kill",
        |events| events.iter().any(|e| victim_of(&e.body) == Some(victim_pid)),
        EVENT_WAIT,
    );
    drop(cg);
    // The victim's comm: the agent's file name (`init` in a VM), as the kernel cuts it.
    let exe = current_exe();
    let name = Path::new(&exe).file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let comm: String = name.chars().take(15).collect();
    let values = got.values();
    let event = values.iter().find(|e| e["victim_pid"] == victim_pid);
    let pass = victim_status.is_some_and(|s| s.signal() == Some(libc::SIGKILL))
        // The killer may be killed in turn: the victim's memory is freed asynchronously (the OOM
        // reaper), and the killer's next allocation can meet the limit again before that.
        && killer_status.is_some_and(|s| s.success() || s.signal() == Some(libc::SIGKILL))
        && got.errors.is_empty()
        && event.is_some_and(|e| {
            e["pid"] == killer_pid.unwrap_or(0)
                && e["victim_tgid"] == victim_pid
                && e["victim_comm"] == comm.as_str()
                && e["victim_cgroup_id"] == cgroup_id
                && e["victim_uid"] == 0
        });
    check(
        out,
        SCENARIO,
        pass,
        format!(
            "victim {victim_pid} ({victim_status:?}), killer {killer_pid:?} ({killer_status:?}), cgroup {cgroup_id}; event: {event:?}; errors: {:?}",
            got.errors
        ),
    );
}

fn victim_of(body: &Body) -> Option<u32> {
    match body {
        Body::Kernel(k) => serde_json::to_value(k).ok()?["victim_pid"].as_u64().map(|p| p as u32),
        _ => None,
    }
}
