//! `make bench`: what the monitors cost, measured beside the tools users would pick instead, on
//! this machine and in this run (issue 9, and the DNS/network figures of issue 5).
//!
//! Kernel figures come from the kernel's own accounting (`kernel.bpf_stats_enabled`: per-program
//! `run_time_ns` and `run_cnt`), read through `bpftool -j prog show` before and after a workload;
//! every figure is the difference, so whatever ran before the workload does not count. Programs
//! are attributed to a process by the BPF fds it holds (`/proc/<pid>/fdinfo`), never by name, so
//! another copy of the same programs loaded by a concurrent test is not mixed in.
//!
//! Prints one `BENCH <name>: <value> <unit> (reference: ..., target: ...)` line per figure and
//! writes `docs/benchmarks.md` and `target/bench/results.json`. Needs root for the kernel
//! figures; the user-space decode figure runs without it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tapio_abi::{
    process::{ProcessEvent, ProcessExecEvent, PROCESS_EXEC, PROCESS_EXIT, PROCESS_FORK},
    TapioHeader, MONITOR_PROCESS,
};
use tapio_decode::events::{self, DecodeOptions};
use tapio_load::output::json::JsonLines;

/// Execs in the process workload.
const EXECS: u32 = 2000;
/// DNS query+response pairs: `DIG_RUNS` dig invocations of `DIG_NAMES` queries each.
const DIG_RUNS: u32 = 5;
const DIG_NAMES: u32 = 100;
/// Loopback TCP connect+close cycles.
const CONNECTS: u32 = 1000;
/// dnsmasq listens here: loopback, port 53 (the dns monitor's default), but not 127.0.0.1, so a
/// concurrent `cargo test` whose dnsmasq binds 127.0.0.1:53 is not disturbed.
const DNS_ADDR: &str = "127.0.0.9";
const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One measured figure, as printed and as stored in results.json.
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    reference: String,
    target: String,
    /// None: no target for this figure; Some(met).
    met: Option<bool>,
    note: String,
}

impl Figure {
    fn print(&self) {
        println!(
            "BENCH {}: {:.1} {} (reference: {}, target: {})",
            self.name, self.value, self.unit, self.reference, self.target
        );
    }
}

fn main() -> Result<()> {
    let started = Instant::now();
    let mut figures = Vec::new();
    let mut missing = Vec::new();

    let report = |figures: &mut Vec<Figure>, new: Vec<Figure>| {
        for f in &new {
            f.print();
        }
        figures.extend(new);
    };
    report(&mut figures, decode_throughput()?);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP kernel_cost kernel figures: needs root (CAP_BPF, CAP_PERFMON, sysctl write)");
        missing.push("kernel figures: not run as root".to_owned());
    } else {
        let _stats = StatsSysctl::enable()?;
        report(&mut figures, exec_cost_rounds()?);
        let (f, notes) = dns_network_memory()?;
        report(&mut figures, f);
        missing.extend(notes);
    }
    // Measured by their own benches in the same `make bench`: xdp_filter per packet
    // (docs/benchmarks-xdp.md), batched vs unbatched with P99 latency (docs/benchmarks-advanced.md),
    // decode through the real ring and its drop count (docs/benchmarks-ring.md), delivery latency
    // per policy (docs/benchmarks-delivery.md), matrix wall time vs bare boot (docs/benchmarks-matrix.md).

    let root = workspace_root();
    let bench_dir = target_dir().join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("create {}", bench_dir.display()))?;
    let results = json!({
        "date": now_utc(),
        "machine": machine(),
        "wall_s": started.elapsed().as_secs_f64(),
        "figures": figures.iter().map(|f| json!({
            "name": f.name, "value": f.value, "unit": f.unit, "reference": f.reference,
            "target": f.target, "met": f.met, "note": f.note,
        })).collect::<Vec<_>>(),
        "missing": missing,
    });
    let results_path = bench_dir.join("results.json");
    fs::write(&results_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("write {}", results_path.display()))?;
    let doc_path = root.join("docs/benchmarks.md");
    fs::create_dir_all(root.join("docs"))?;
    // The node-tax section belongs to node_tax.rs, which `make bench` runs after this one: kept
    // as it is, so this bench alone never deletes it.
    let old = fs::read_to_string(&doc_path).unwrap_or_default();
    let node_tax = match (old.find("<!-- node-tax:"), old.find("<!-- /node-tax -->")) {
        (Some(a), Some(b)) if b > a => format!("\n{}\n", &old[a..b + "<!-- /node-tax -->".len()]),
        _ => String::new(),
    };
    fs::write(&doc_path, markdown(&results, &figures, &missing) + &node_tax)
        .with_context(|| format!("write {}", doc_path.display()))?;
    println!("bench: wrote {} and {}", doc_path.display(), results_path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Process exec cost, beside execsnoop.

/// Rounds of the exec measurement, each with a fresh tapio-load and execsnoop.
const EXEC_ROUNDS: usize = 3;

/// [`exec_cost`] `EXEC_ROUNDS` times; each figure is the median, its note gives the range. Kernel
/// run times on a shared virtual machine vary from round to round (mostly the wakeup path).
fn exec_cost_rounds() -> Result<Vec<Figure>> {
    let rounds: Vec<Vec<Figure>> = (0..EXEC_ROUNDS).map(|_| exec_cost()).collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (i, first) in rounds[0].iter().enumerate() {
        let mut values: Vec<f64> = rounds.iter().map(|r| r[i].value).collect();
        values.sort_by(|a, b| a.total_cmp(b));
        let median = values[values.len() / 2];
        let median_round = rounds.iter().find(|r| r[i].value == median).unwrap_or(&rounds[0]);
        let f = &median_round[i];
        let range = format!("median of {EXEC_ROUNDS} rounds, range {:.0}-{:.0}", values[0], values[values.len() - 1]);
        out.push(Figure {
            name: first.name.clone(),
            value: median,
            unit: first.unit,
            reference: f.reference.clone(),
            target: f.target.clone(),
            met: f.met,
            note: if f.note.is_empty() { range } else { format!("{range}; {}", f.note) },
        });
    }
    Ok(out)
}

/// Our process monitor and execsnoop attached at once to the same `EXECS` execs of
/// `/bin/true a b c`; ns per program run from the kernel's accounting.
fn exec_cost() -> Result<Vec<Figure>> {
    let execsnoop = find_tool("execsnoop", "libbpf-tools")?;
    let loader = Loader::start(&["process"])?;
    let snoop = Execsnoop::start(&execsnoop)?;
    let floors = Floors::attach("sched", "sched_process_exec")?;
    let ours = bpf_fds(loader.pid())?.0;
    let theirs = bpf_fds(snoop.pid())?.0;
    if ours.is_empty() || theirs.is_empty() {
        bail!("exec: no BPF programs held by tapio-load ({ours:?}) or execsnoop ({theirs:?})");
    }
    let before = prog_stats()?;
    for i in 0..EXECS {
        let status = Command::new("/bin/true")
            .args(["a", "b", "c"])
            .status()
            .with_context(|| format!("exec workload: spawn /bin/true (#{i})"))?;
        if !status.success() {
            bail!("exec workload: /bin/true exited with {status}");
        }
    }
    let after = prog_stats()?;
    drop(floors.attachments);
    drop(snoop);
    drop(loader);

    let delta = |ids: &BTreeSet<u32>| -> BTreeMap<String, (u64, u64)> {
        ids.iter()
            .filter_map(|id| {
                let (a, b) = (after.get(id)?, before.get(id)?);
                Some((a.name.clone(), (a.run_time_ns - b.run_time_ns, a.run_cnt - b.run_cnt)))
            })
            .collect()
    };
    let ours_ids = ours.clone();
    let ours = delta(&ours);
    let theirs = delta(&theirs);
    let per = |(t, c): (u64, u64)| if c == 0 { 0.0 } else { t as f64 / c as f64 };
    let find = |m: &BTreeMap<String, (u64, u64)>, key: &str| -> Result<(u64, u64)> {
        m.iter()
            .find(|(n, _)| n.contains(key))
            .map(|(_, v)| *v)
            .with_context(|| format!("exec: no program matching {key} among {:?}", m.keys().collect::<Vec<_>>()))
    };
    let exec = find(&ours, "process_exec")?;
    let fork = find(&ours, "process_fork")?;
    let exit = find(&ours, "process_exit")?;
    let s_enter = find(&theirs, "enter")?;
    let s_exit = find(&theirs, "exit")?;
    let snoop_total = per(s_enter) + per(s_exit);
    let reference = format!("execsnoop entry+exit {snoop_total:.0} ns/exec in this run");
    let ours_total = per(exec) + per(fork) + per(exit);
    let insns = |key: &str| {
        after.values().find(|p| p.name == key && ours_ids.contains(&p.id)).map_or(0, |p| p.xlated_insns)
    };
    let counts = format!(
        "run_cnt over {EXECS} execs: exec {} fork {} exit {}; execsnoop enter {} exit {}; xlated insns: exec {} fork {} exit {}",
        exec.1, fork.1, exit.1, s_enter.1, s_exit.1,
        insns("process_exec"), insns("process_fork"), insns("process_exit")
    );
    let floor = |id: u32| {
        after.get(&id).zip(before.get(&id)).map_or(0.0, |(a, b)| per((a.run_time_ns - b.run_time_ns, a.run_cnt - b.run_cnt)))
    };
    let (f_empty, f_wake, f_nowake) = (floor(floors.empty), floor(floors.wakeup), floor(floors.no_wakeup));
    let f = |name: &str, v: f64, reference: String, target: &str, met: Option<bool>, note: &str| Figure {
        name: name.to_owned(),
        value: v,
        unit: "ns/event",
        reference,
        target: target.to_owned(),
        met,
        note: note.to_owned(),
    };
    Ok(vec![
        f("exec.process_exec", per(exec), reference.clone(), "<= 2000 ns incl. argv", Some(per(exec) <= 2000.0), &counts),
        f("exec.process_fork", per(fork), reference.clone(), "none", None, "one run per fork/clone of a process"),
        f("exec.process_exit", per(exit), reference.clone(), "none", None, "one run per task exit"),
        f(
            "exec.tapio_exec_fork_exit",
            ours_total,
            reference.clone(),
            "<= 2000 ns (issue 13: one fork, one exec with argv, one exit)",
            Some(ours_total <= 2000.0),
            "what one spawn+exec+exit of a short process costs the process monitor",
        ),
        f(
            "exec.floor_empty_program",
            f_empty,
            "same tracepoint (sched_process_exec), same run".into(),
            "floor",
            None,
            "a two-instruction program (r0 = 0; exit): the tracepoint + bpf_stats overhead alone",
        ),
        f(
            "exec.floor_ringbuf_output_wakeup",
            f_wake,
            "same tracepoint, same run".into(),
            "floor",
            None,
            "bpf_ringbuf_output of 8 bytes with BPF_RB_FORCE_WAKEUP: what a record costs when a reader is waiting",
        ),
        f(
            "exec.floor_ringbuf_output_no_wakeup",
            f_nowake,
            "same tracepoint, same run".into(),
            "floor",
            None,
            "bpf_ringbuf_output of 8 bytes with BPF_RB_NO_WAKEUP",
        ),
        f("exec.execsnoop_enter", per(s_enter), "issue 9: about 3100 ns".into(), "reference only", None, ""),
        f("exec.execsnoop_exit", per(s_exit), "issue 9: about 10200 ns".into(), "reference only", None, ""),
        f(
            "exec.ratio_process_exec_vs_execsnoop",
            if snoop_total > 0.0 { per(exec) / snoop_total } else { 0.0 },
            reference,
            "< 1",
            Some(snoop_total > 0.0 && per(exec) < snoop_total),
        "process_exec ns / execsnoop (entry+exit) ns; unit is a ratio",
        ),
    ]
    .into_iter()
    .map(|mut fig| {
        if fig.name.contains("ratio") {
            fig.unit = "x";
        }
        fig
    })
    .collect())
}

// ---------------------------------------------------------------------------------------------
// 2 and 4. DNS and network cost, memory, with every monitor attached.

fn dns_network_memory() -> Result<(Vec<Figure>, Vec<String>)> {
    let mut figures = Vec::new();
    let notes = Vec::new();
    let dig = find_tool("dig", "dnsutils")?;
    let dnsmasq = find_tool("dnsmasq", "dnsmasq")?;
    // Every monitor the loader knows, so the memory figure is "everything attached".
    let all: Vec<&str> = tapio_runtime::monitors::MONITORS.iter().map(|m| m.name).collect();
    let loader = Loader::start(&all)?;
    let pid = loader.pid();

    // Memory first, right after start: resident set and the maps it holds.
    let rss_kb = proc_status_kb(pid, "VmRSS")?;
    let (progs, fd_maps) = bpf_fds(pid)?;
    let stats = prog_stats()?;
    let mut map_ids = fd_maps;
    for id in &progs {
        if let Some(p) = stats.get(id) {
            map_ids.extend(p.map_ids.iter().copied());
        }
    }
    let maps = map_memlock()?;
    let mut map_bytes = 0u64;
    let mut biggest: Vec<(u64, String)> = Vec::new();
    for id in &map_ids {
        if let Some((name, bytes)) = maps.get(id) {
            map_bytes += bytes;
            biggest.push((*bytes, name.clone()));
        }
    }
    biggest.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = biggest.iter().take(4).map(|(b, n)| format!("{n} {} KiB", b / 1024)).collect();
    let rss_mb = rss_kb as f64 / 1024.0;
    figures.push(Figure {
        name: "memory.rss_all_monitors".into(),
        value: rss_mb,
        unit: "MiB",
        reference: "none measured (VmRSS after 'streaming events')".into(),
        target: "< 40 MiB".into(),
        met: Some(rss_mb < 40.0),
        note: format!("{} programs attached; monitors {}", progs.len(), all.join(",")),
    });
    figures.push(Figure {
        name: "memory.bpf_maps_all_monitors".into(),
        value: map_bytes as f64 / (1024.0 * 1024.0),
        unit: "MiB",
        reference: "bytes_memlock of the maps its programs use".into(),
        target: "none".into(),
        met: None,
        note: format!("{} maps; largest: {}", map_ids.len(), top.join(", ")),
    });

    // DNS: dig against dnsmasq on loopback port 53.
    let dns_server = Dnsmasq::start(&dnsmasq)?;
    let dns_ids: BTreeSet<u32> =
        progs.iter().copied().filter(|id| stats.get(id).is_some_and(|p| p.name.starts_with("dns_"))).collect();
    if dns_ids.is_empty() {
        bail!("dns: tapio-load holds no dns_* program");
    }
    // The network monitor's udp_flow programs: the packet path (network_skb_*, and the owner
    // program network_sock_create, whose name the kernel cuts to 15 characters) or the syscall
    // fallback (network_udp_*).
    let udp_ids: BTreeSet<u32> = progs
        .iter()
        .copied()
        .filter(|id| {
            stats.get(id).is_some_and(|p| {
                p.name.starts_with("network_udp_") || p.name.starts_with("network_skb_") || p.name.starts_with("network_sock_c")
            })
        })
        .collect();
    // Every program but the advanced monitor's: it watches every syscall of every process by
    // design (its own cost is node_tax's), so it is no cost of a DNS exchange or a connection.
    let all_ids: BTreeSet<u32> =
        progs.iter().copied().filter(|id| stats.get(id).is_some_and(|p| !p.name.starts_with("advanced_"))).collect();
    let before = prog_stats()?;
    let dns_start = Instant::now();
    let mut pairs = 0u64;
    for run in 0..DIG_RUNS {
        let names: Vec<String> = (0..DIG_NAMES).map(|i| format!("q{run}-{i}.bench.test")).collect();
        let out = Command::new(&dig)
            .arg(format!("@{DNS_ADDR}"))
            .args(["+tries=1", "+time=2"])
            .args(&names)
            .output()
            .with_context(|| format!("spawn {}", dig.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        pairs += text.matches("status: NOERROR").count() as u64;
    }
    let after = prog_stats()?;
    let dns_window = dns_start.elapsed();
    drop(dns_server);
    // The read/write programs also run for every other read and write on the machine: measure
    // them over a window of the same length with no DNS traffic, to subtract. This is a
    // measurement window, not synchronisation.
    let idle_before = prog_stats()?;
    thread::sleep(dns_window);
    let idle_after = prog_stats()?;
    if pairs == 0 {
        bail!("dns: dig got no answer from dnsmasq on {DNS_ADDR}:53");
    }
    let (dns_ns, dns_cnt) = sum_delta(&before, &after, &dns_ids);
    let (idle_ns, idle_cnt) = sum_delta(&idle_before, &idle_after, &dns_ids);
    let per_pair = dns_ns as f64 / pairs as f64;
    let corrected = dns_ns.saturating_sub(idle_ns) as f64 / pairs as f64;
    figures.push(Figure {
        name: "dns.per_pair_minus_background".into(),
        value: corrected,
        unit: "ns/pair",
        reference: format!(
            "background over an equal idle window ({:.2} s): {idle_cnt} runs, {} ns",
            dns_window.as_secs_f64(),
            idle_ns
        ),
        target: "none set".into(),
        met: None,
        note: format!(
            "{} dns_* runs per pair after subtraction; still includes dig's own non-DNS reads and writes",
            fmt1(dns_cnt.saturating_sub(idle_cnt) as f64 / pairs as f64)
        ),
    });
    figures.push(Figure {
        name: "dns.per_query_response_pair".into(),
        value: per_pair,
        unit: "ns/pair",
        reference: format!("{} dns_* runs per pair", fmt1(dns_cnt as f64 / pairs as f64)),
        target: "none set".into(),
        met: None,
        note: format!(
            "{pairs} pairs ({DIG_RUNS} dig runs x {DIG_NAMES} names); sum of every dns_* program's run time in the \
             window, including their runs on unrelated read/write syscalls of dig, dnsmasq and the system"
        ),
    });

    let (all_ns, all_cnt) = sum_delta(&before, &after, &all_ids);
    let all_per_pair = all_ns as f64 / pairs as f64;
    figures.push(Figure {
        name: "dns.all_programs_per_pair".into(),
        value: all_per_pair,
        unit: "ns/pair",
        reference: format!("issue 13 baseline: 28794 dns + 38997 udp_flow ns/pair; {} runs per pair", fmt1(all_cnt as f64 / pairs as f64)),
        target: "<= 3000 ns/pair".into(),
        met: Some(all_per_pair <= 3000.0),
        note: format!(
            "{pairs} pairs; every tapio-load program but the advanced monitor's (all monitors attached) in the window, so it \
             also holds the process monitor's runs for each dig spawn and everything else the node did meanwhile"
        ),
    });

    let (udp_ns, udp_cnt) = sum_delta(&before, &after, &udp_ids);
    figures.push(Figure {
        name: "network.udp_flow_per_dns_pair".into(),
        value: udp_ns as f64 / pairs as f64,
        unit: "ns/pair",
        reference: format!("{} udp_flow program runs per pair", fmt1(udp_cnt as f64 / pairs as f64)),
        target: "none set".into(),
        met: None,
        note: format!(
            "{pairs} pairs, same window as dns.per_query_response_pair; {} udp_flow programs (packet path, or the syscall \
             fallback), including their runs on the system's other traffic",
            udp_ids.len()
        ),
    });

    // Network: loopback TCP connect + close.
    // Every tapio-load program but the advanced monitor's (as for DNS above): the state-change
    // tracepoints and the packet path's cgroup_skb programs, which see each segment of the
    // handshake and the close on both ends.
    let net_ids = all_ids.clone();
    let listener = TcpListener::bind("127.0.0.1:0").context("network: bind loopback listener")?;
    let addr = listener.local_addr()?;
    let before = prog_stats()?;
    let acceptor = thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..CONNECTS {
            let (s, _) = listener.accept()?;
            drop(s);
        }
        Ok(())
    });
    for _ in 0..CONNECTS {
        let s = TcpStream::connect(addr).context("network: connect loopback")?;
        drop(s);
    }
    acceptor.join().map_err(|_| anyhow::anyhow!("network: acceptor panicked"))?.context("network: accept")?;
    let after = prog_stats()?;
    let (net_ns, net_cnt) = sum_delta(&before, &after, &net_ids);
    let names: Vec<String> = net_ids.iter().filter_map(|id| after.get(id).map(|p| p.name.clone())).collect();
    figures.push(Figure {
        name: "network.per_tcp_connect".into(),
        value: net_ns as f64 / CONNECTS as f64,
        unit: "ns/connect",
        reference: format!("issue 13 baseline 24261 ns; {} program runs per connect+close", fmt1(net_cnt as f64 / CONNECTS as f64)),
        target: "<= 3000 ns/connect".into(),
        met: Some(net_ns as f64 / CONNECTS as f64 <= 3000.0),
        note: format!(
            "{CONNECTS} loopback connect+accept+close; every tapio-load program but advanced_*; those that ran: {}",
            names.iter().filter(|n| net_ran(&before, &after, n)).cloned().collect::<Vec<_>>().join(", ")
        ),
    });

    let hwm_kb = proc_status_kb(pid, "VmHWM")?;
    figures.push(Figure {
        name: "memory.rss_peak_after_workloads".into(),
        value: hwm_kb as f64 / 1024.0,
        unit: "MiB",
        reference: "VmHWM after the exec/dns/network workloads".into(),
        target: "< 40 MiB".into(),
        met: Some((hwm_kb as f64 / 1024.0) < 40.0),
        note: String::new(),
    });
    drop(loader);
    Ok((figures, notes))
}

/// Whether the program called `name` ran between the two snapshots.
fn net_ran(before: &BTreeMap<u32, ProgStat>, after: &BTreeMap<u32, ProgStat>, name: &str) -> bool {
    after.iter().any(|(id, a)| a.name == name && before.get(id).is_some_and(|b| a.run_cnt > b.run_cnt))
}

fn sum_delta(before: &BTreeMap<u32, ProgStat>, after: &BTreeMap<u32, ProgStat>, ids: &BTreeSet<u32>) -> (u64, u64) {
    ids.iter()
        .filter_map(|id| Some((after.get(id)?, before.get(id)?)))
        .fold((0, 0), |(t, c), (a, b)| (t + a.run_time_ns - b.run_time_ns, c + a.run_cnt - b.run_cnt))
}

// ---------------------------------------------------------------------------------------------
// 3. User-space decode throughput.

/// A synthetic producer: process records built from the repr(C) mirrors, each copied as the
/// ring drain copies it, decoded and written as JSON lines to a sink, on this one thread.
fn decode_throughput() -> Result<Vec<Figure>> {
    let exec = exec_record();
    let fork = plain_record(PROCESS_FORK);
    let exit = plain_record(PROCESS_EXIT);
    let mix: [&[u8]; 3] = [&exec, &fork, &exit];
    let exec_only: [&[u8]; 1] = [&exec];
    let mut out = Vec::new();
    for (name, records) in [("decode.process_mix_events_per_s", &mix[..]), ("decode.process_exec_events_per_s", &exec_only[..])] {
        let rate = decode_rate(records)?;
        out.push(Figure {
            name: name.to_owned(),
            value: rate,
            unit: "events/s",
            reference: "none (one core, synthetic producer, no ring; best of 3 x 1 s)".into(),
            target: ">= 1000000 events/s".into(),
            met: Some(rate >= 1_000_000.0),
            note: if records.len() == 3 {
                "exec (argv '/bin/true a b c'), fork, exit in turn; record copied, decoded, JSON to io::sink".into()
            } else {
                "exec records only (the largest record, 1360 bytes)".into()
            },
        });
    }
    Ok(out)
}

/// The best of three one-second runs: the machine may be shared, and interference only ever
/// lowers a throughput figure.
fn decode_rate(records: &[&[u8]]) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..3 {
        best = best.max(decode_rate_once(records)?);
    }
    Ok(best)
}

/// Events per second over at least one second of decoding `records` in turn.
fn decode_rate_once(records: &[&[u8]]) -> Result<f64> {
    let options = DecodeOptions::default();
    let mut sink = JsonLines::new(std::io::sink());
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..64 {
            // A batch of 64, flushed after, as the run loop flushes per batch.
            let record = records[(n % records.len() as u64) as usize].to_vec();
            let event = events::decode(&record, &options).context("decode synthetic record")?;
            sink.write(&event)?;
            n += 1;
        }
        sink.flush()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn header(kind: u8) -> TapioHeader {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"true");
    TapioHeader {
        ts_ns: 123_456_789,
        pid: 4242,
        tgid: 4242,
        cgroup_id: 7777,
        uid: 0,
        monitor: MONITOR_PROCESS,
        kind,
        _pad0: 0,
        comm,
    }
}

fn plain_record(kind: u8) -> Vec<u8> {
    let e = ProcessEvent { hdr: header(kind), ppid: 1, child_tgid: 4243, exit_code: 0, duration_ns: 1000, ..Default::default() };
    as_bytes(&e)
}

fn exec_record() -> Vec<u8> {
    let args = b"/bin/true\0a\0b\0c\0";
    let mut e = ProcessExecEvent {
        base: ProcessEvent { hdr: header(PROCESS_EXEC), ppid: 1, args_size: args.len() as u32, ..Default::default() },
        filename: [0; 256],
        args: [0; 1024],
    };
    e.filename[..9].copy_from_slice(b"/bin/true");
    e.args[..args.len()].copy_from_slice(args);
    as_bytes(&e)
}

/// The bytes of a mirror record, as the kernel would emit them.
fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: T is one of the events mirrors: repr(C), integers and byte arrays only, with
    // explicit padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Processes under test.

/// `tapio-load run --monitors ...` with stdout discarded, ready once it says "streaming events".
struct Loader(Child);

impl Loader {
    fn start(monitors: &[&str]) -> Result<Self> {
        let bin = env!("CARGO_BIN_EXE_tapio-load");
        let mut child = Command::new(bin)
            .args(["run", "--monitors", &monitors.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {bin}"))?;
        let stderr = child.stderr.take().context("tapio-load stderr")?;
        let mut loader = Self(child);
        let seen = wait_for_line(stderr, "streaming events", Duration::from_secs(60));
        if let Err(log) = seen {
            let _ = loader.0.kill();
            bail!("tapio-load run --monitors {} did not start streaming; stderr:\n{log}", monitors.join(","));
        }
        Ok(loader)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM lets it detach and drain.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// libbpf-tools `execsnoop`, line-buffered through `stdbuf`, ready once its header is printed
/// (it prints it after attaching).
struct Execsnoop(Child);

impl Execsnoop {
    fn start(path: &Path) -> Result<Self> {
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn stdbuf -oL execsnoop (stdbuf is in coreutils)")?;
        let stdout = child.stdout.take().context("execsnoop stdout")?;
        let mut snoop = Self(child);
        if let Err(log) = wait_for_line(stdout, "PCOMM", Duration::from_secs(30)) {
            let _ = snoop.0.kill();
            bail!("execsnoop printed no header (did it attach?); output:\n{log}");
        }
        Ok(snoop)
    }

    fn pid(&self) -> u32 {
        // stdbuf execs execsnoop in place: same pid.
        self.0.id()
    }
}

impl Drop for Execsnoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq answering `*.bench.test` on `DNS_ADDR`:53, ready once it says its cache is cleared.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(path: &Path) -> Result<Self> {
        let mut child = Command::new(path)
            .args(["--no-daemon", "--port=53", "--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file="])
            .arg(format!("--listen-address={DNS_ADDR}"))
            .arg("--address=/bench.test/10.9.9.9")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", path.display()))?;
        let stderr = child.stderr.take().context("dnsmasq stderr")?;
        let mut server = Self(child);
        if let Err(log) = wait_for_line(stderr, "cleared cache", Duration::from_secs(10)) {
            let _ = server.0.kill();
            bail!("dnsmasq did not start on {DNS_ADDR}:53 (port taken?):\n{log}");
        }
        Ok(server)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `stream` on a thread until a line contains `needle` (Ok) or the stream ends or the
/// timeout passes (Err with what was read). The thread keeps draining afterwards so the child
/// never blocks on a full pipe.
fn wait_for_line(stream: impl std::io::Read + Send + 'static, needle: &'static str, timeout: Duration) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    thread::spawn(move || {
        let mut seen = String::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.is_some() {
                seen.push_str(&line);
                seen.push('\n');
            }
            if line.contains(needle) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Ok(()));
                }
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(format!("(no '{needle}' within {timeout:?})")),
    }
}

fn find_tool(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: install {package} (ci/setup.sh)"))
}

// ---------------------------------------------------------------------------------------------
// Floors: minimal programs on the same tracepoint, loaded through bpf(2) directly so the bench
// needs no extra object file. They tell what any program on this machine pays before doing work.

/// The floor programs' ids and the fds that keep them attached.
struct Floors {
    empty: u32,
    wakeup: u32,
    no_wakeup: u32,
    attachments: Vec<std::os::fd::OwnedFd>,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_FUNC_RINGBUF_OUTPUT: i32 = 130;
const BPF_RB_NO_WAKEUP: i32 = 1;
const BPF_RB_FORCE_WAKEUP: i32 = 2;
/// `_IOW('$', 8, __u32)` and `_IO('$', 0)` from linux/perf_event.h.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// `bpf(cmd, attr)`; the attr is a zeroed 128-byte union with the given fields written in.
fn bpf_sys(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: attr is a valid, fully initialised bpf_attr-sized buffer for the call's duration.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8], off: usize, bytes: &[u8]) {
    attr[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Loads a tracepoint program from `insns`, named `name`.
fn load_floor(name: &str, insns: &[[u8; 8]]) -> Result<std::os::fd::OwnedFd> {
    let code: Vec<u8> = insns.concat();
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_PROG_TYPE_TRACEPOINT.to_le_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_le_bytes());
    put(&mut attr, 8, &(code.as_ptr() as u64).to_le_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_le_bytes());
    put(&mut attr, 24, &1u32.to_le_bytes());
    put(&mut attr, 28, &(log.len() as u32).to_le_bytes());
    put(&mut attr, 32, &(log.as_mut_ptr() as u64).to_le_bytes());
    put(&mut attr, 48, &name.as_bytes()[..name.len().min(15)]);
    bpf_sys(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        anyhow::anyhow!("floor program {name}: load: {e}\n{}", String::from_utf8_lossy(&log[..end]))
    })
}

/// Attaches `prog` to tracepoint `category/name` through perf_event_open + SET_BPF.
fn attach_tracepoint(prog: &std::os::fd::OwnedFd, category: &str, name: &str) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let id_path = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(|root| format!("{root}/events/{category}/{name}/id"))
        .find(|p| Path::new(p).exists())
        .with_context(|| format!("tracepoint {category}/{name}: no id under tracefs"))?;
    let id: u64 = fs::read_to_string(&id_path)?.trim().parse().with_context(|| format!("parse {id_path}"))?;
    // struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type, size, config, sample_period.
    let mut attr = [0u8; 64];
    put(&mut attr, 0, &2u32.to_le_bytes()); // PERF_TYPE_TRACEPOINT
    put(&mut attr, 4, &64u32.to_le_bytes());
    put(&mut attr, 8, &id.to_le_bytes());
    put(&mut attr, 16, &1u64.to_le_bytes());
    // SAFETY: attr is a valid perf_event_attr of the size it declares.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1, 0, -1, PERF_FLAG_FD_CLOEXEC) };
    if fd < 0 {
        bail!("tracepoint {category}/{name}: perf_event_open: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nothing else.
    let event = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: ioctls on our own perf event fd with an int argument.
    let rc = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) };
    if rc != 0 {
        bail!("tracepoint {category}/{name}: attach: {}", std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) };
    Ok(event)
}

/// The `prog_id` of a program fd of this process.
fn prog_id(fd: &std::os::fd::OwnedFd) -> Result<u32> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    fs::read_to_string(&path)?
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        .with_context(|| format!("{path}: no prog_id"))
}

impl Floors {
    /// Loads and attaches the empty program and two `bpf_ringbuf_output` programs (forced
    /// wakeup, no wakeup) on one 4 MiB ring nobody reads: room for 250k 16-byte records, so the
    /// ring does not fill during the workload.
    fn attach(category: &str, name: &str) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &BPF_MAP_TYPE_RINGBUF.to_le_bytes());
        put(&mut attr, 12, &(4u32 << 20).to_le_bytes());
        let ring = bpf_sys(BPF_MAP_CREATE, &mut attr).context("floor ring buffer: create")?;
        let ret0 = [insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
        let output = |flags: i32| -> Vec<[u8; 8]> {
            vec![
                insn(0x18, 1, 1, 0, ring.as_raw_fd()), // r1 = &ring (BPF_PSEUDO_MAP_FD)
                insn(0, 0, 0, 0, 0),
                insn(0x7a, 10, 0, -8, 0),    // *(u64 *)(r10 - 8) = 0
                insn(0xbf, 2, 10, 0, 0),     // r2 = r10
                insn(0x07, 2, 0, 0, -8),     // r2 += -8
                insn(0xb7, 3, 0, 0, 8),      // r3 = 8
                insn(0xb7, 4, 0, 0, flags),  // r4 = flags
                insn(0x85, 0, 0, 0, BPF_FUNC_RINGBUF_OUTPUT),
                insn(0xb7, 0, 0, 0, 0),
                insn(0x95, 0, 0, 0, 0),
            ]
        };
        let empty = load_floor("floor_empty", &ret0)?;
        let wakeup = load_floor("floor_rb_wake", &output(BPF_RB_FORCE_WAKEUP))?;
        let no_wakeup = load_floor("floor_rb_nowake", &output(BPF_RB_NO_WAKEUP))?;
        let ids = (prog_id(&empty)?, prog_id(&wakeup)?, prog_id(&no_wakeup)?);
        let mut attachments = Vec::new();
        for prog in [&empty, &wakeup, &no_wakeup] {
            attachments.push(attach_tracepoint(prog, category, name)?);
        }
        // The perf events hold the programs and the programs hold the ring.
        attachments.extend([empty, wakeup, no_wakeup, ring]);
        Ok(Self { empty: ids.0, wakeup: ids.1, no_wakeup: ids.2, attachments })
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel accounting.

/// Sets `kernel.bpf_stats_enabled=1`, restoring the previous value on drop.
struct StatsSysctl(String);

impl StatsSysctl {
    fn enable() -> Result<Self> {
        let old = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("{STATS_SYSCTL}: kernel.bpf_stats_enabled unavailable"))?;
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("{STATS_SYSCTL}: enable BPF run-time statistics"))?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for StatsSysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(STATS_SYSCTL, &self.0) {
            eprintln!("bench: could not restore kernel.bpf_stats_enabled={}: {e}", self.0);
        }
    }
}

/// One program's line of `bpftool -j prog show`.
struct ProgStat {
    id: u32,
    name: String,
    /// Instructions after the verifier's rewrites (`bytes_xlated` / 8).
    xlated_insns: u64,
    run_time_ns: u64,
    run_cnt: u64,
    map_ids: Vec<u32>,
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .context("bpftool not found: install bpftool (ci/setup.sh); it lives in /usr/sbin")?;
    if !out.status.success() {
        bail!("bpftool {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("bpftool {}: output is not JSON", args.join(" ")))
}

fn prog_stats() -> Result<BTreeMap<u32, ProgStat>> {
    let all = bpftool(&["-j", "prog", "show"])?;
    let mut out = BTreeMap::new();
    for p in all.as_array().context("bpftool prog show: not an array")? {
        let Some(id) = p["id"].as_u64() else { continue };
        out.insert(
            id as u32,
            ProgStat {
                id: id as u32,
                name: p["name"].as_str().unwrap_or("").to_owned(),
                xlated_insns: p["bytes_xlated"].as_u64().unwrap_or(0) / 8,
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                map_ids: p["map_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_u64().map(|v| v as u32)).collect())
                    .unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// Map id -> (name, bytes_memlock).
fn map_memlock() -> Result<BTreeMap<u32, (String, u64)>> {
    let all = bpftool(&["-j", "map", "show"])?;
    Ok(all
        .as_array()
        .context("bpftool map show: not an array")?
        .iter()
        .filter_map(|m| {
            Some((
                m["id"].as_u64()? as u32,
                (m["name"].as_str().unwrap_or("").to_owned(), m["bytes_memlock"].as_u64().unwrap_or(0)),
            ))
        })
        .collect())
}

/// The BPF program ids and map ids whose fds `pid` holds, from `/proc/<pid>/fdinfo`.
fn bpf_fds(pid: u32) -> Result<(BTreeSet<u32>, BTreeSet<u32>)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut progs = BTreeSet::new();
    let mut maps = BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else { continue };
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next().and_then(|v| v.parse::<u32>().ok())) {
                (Some("prog_id:"), Some(id)) => {
                    progs.insert(id);
                }
                (Some("map_id:"), Some(id)) => {
                    maps.insert(id);
                }
                _ => {}
            }
        }
    }
    Ok((progs, maps))
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("/proc/{pid}/status: no {field}"))
}

// ---------------------------------------------------------------------------------------------
// Report.

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("loader/ has a parent").to_path_buf()
}

/// The cargo target directory: this bench runs from `<target>/release/deps/`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn now_utc() -> String {
    command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_default();
    json!({
        "nproc": command_line("nproc", &[]),
        "kernel": command_line("uname", &["-r"]),
        "cpu": cpu,
        "loadavg_at_end": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
        "bpftool": command_line("bpftool", &["version"]).lines().next().unwrap_or("").to_owned(),
    })
}

fn fmt1(v: f64) -> String {
    format!("{v:.1}")
}

fn markdown(results: &Value, figures: &[Figure], missing: &[String]) -> String {
    let m = &results["machine"];
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `make bench` (`loader/benches/kernel_cost.rs`); do not edit by hand. The same \
         figures are in `target/bench/results.json`.\n"
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- date: {}", results["date"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- kernel: {}", m["kernel"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- CPUs (`nproc`): {}", m["nproc"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- CPU: {}", m["cpu"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- load average at the end (other work on the machine): {}", m["loadavg_at_end"].as_str().unwrap_or(""));
    let _ = writeln!(s, "- {}\n", m["bpftool"].as_str().unwrap_or(""));
    let _ = writeln!(s, "## Method\n");
    let _ = writeln!(
        s,
        "- Kernel cost: `kernel.bpf_stats_enabled=1` for the run (the old value is restored), \
         per-program `run_time_ns` and `run_cnt` from `bpftool -j prog show` before and after each \
         workload, figures are the differences. Programs are attributed to `tapio-load` or \
         `execsnoop` by the BPF fds each process holds (`/proc/<pid>/fdinfo`). The statistics \
         themselves add two clock reads per program run, equally to both sides.\n\
         - Exec ({EXEC_ROUNDS} rounds, median reported): `tapio-load run --monitors process` and libbpf-tools `execsnoop` (argv captured \
         by both) attached at once; {EXECS} sequential spawns of `/bin/true a b c`. Each program's \
         figure is its run time divided by its own run count (per exec for the exec programs).\n\
         - DNS: `tapio-load run` with every monitor it knows (`monitors::MONITORS`); dnsmasq on {DNS_ADDR}:53 \
         (loopback, the monitor's default port; not 127.0.0.1 so concurrent tests keep theirs); \
         {DIG_RUNS} `dig` runs of {DIG_NAMES} names each. Figure: summed run time of every `dns_*` \
         program in the window divided by the answered pairs. The read/write syscall programs run \
         on every read and write on the machine, so this includes dig's and dnsmasq's other I/O.\n\
         - Network: same run; {CONNECTS} loopback TCP connect, accept, close. Figure: run time of \
         `network_set_state` + `kernel_sock_state` per connection (both ends' state changes).\n\
         - Decode: one thread; synthetic `process_exec_event`/`process_event` records built from \
         the `#[repr(C)]` mirrors, each copied as the ring drain copies it, then \
         `events::decode` and `output::json::JsonLines` to `std::io::sink()`, flushed per 64. No \
         ring buffer and no kernel in this loop: it bounds the user-space side only.\n\
         - Memory: `VmRSS` of `tapio-load` with every monitor right after it prints \
         \"streaming events\", `VmHWM` after the workloads, and the `bytes_memlock` of the maps \
         its fds and its programs reference (`bpftool -j map show`).\n"
    );
    let _ = writeln!(s, "## Figures\n");
    let _ = writeln!(s, "| figure | value | unit | reference | target | met | notes |");
    let _ = writeln!(s, "|---|---:|---|---|---|---|---|");
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {} | {} | {} | {} |",
            f.name, f.value, f.unit, f.reference, f.target, met, f.note
        );
    }
    let _ = writeln!(s, "\n## Missed targets\n");
    let missed: Vec<&Figure> = figures.iter().filter(|f| f.met == Some(false)).collect();
    if missed.is_empty() {
        let _ = writeln!(s, "None in this run.");
    }
    for f in missed {
        let _ = writeln!(s, "- `{}`: {:.1} {} against {}. {}", f.name, f.value, f.unit, f.target, bound(f, figures));
    }
    let _ = writeln!(s, "\n## Not measured yet\n");
    if missing.is_empty() {
        let _ = writeln!(s, "Nothing in this run.");
    }
    for m in missing {
        let _ = writeln!(s, "- {m}");
    }
    let _ = writeln!(s, "\n## Other figures of `make bench`\n");
    let _ = writeln!(s, "- xdp_filter per packet beside the empty-program floor and xdp-tools' xdp-filter: `docs/benchmarks-xdp.md`");
    let _ = writeln!(s, "- batched vs unbatched throughput, CPU, memory and P99 kernel-to-user latency: `docs/benchmarks-advanced.md`");
    let _ = writeln!(s, "- decode through the real ring (BPF_PROG_TEST_RUN producer) in events/s, with its drop count: `docs/benchmarks-ring.md`");
    let _ = writeln!(s, "- delivery latency P50/P99/max at 10, 1,000 and 100,000 records/s for both delivery policies and transports, reader CPU, drops: `docs/benchmarks-delivery.md`");
    let _ = writeln!(s, "- matrix wall time per kernel vs the bare boot of the same kernel: `docs/benchmarks-matrix.md`");
    s
}

/// What bounds a missed figure, for the report.
fn bound(f: &Figure, all: &[Figure]) -> String {
    let get = |name: &str| all.iter().find(|g| g.name == name).map_or(0.0, |g| g.value);
    if f.name == "exec.process_exec" {
        format!(
            "Over by {:.0} ns ({:.1}x the target). Measured on the same tracepoint in the same run: \
             an empty program costs {:.0} ns, an 8-byte `bpf_ringbuf_output` {:.0} ns without a \
             wakeup and {:.0} ns with one. `process_exec` submits with flags 0 to a ring whose \
             reader is waiting, so every record pays the wakeup (irq_work; on this virtual machine \
             probably a self-IPI that exits to the hypervisor: inferred, not profiled); the 2 us target is out of reach while each event wakes the \
             reader. What is left after the wakeup (about {:.0} ns) is the header helpers, the \
             CO-RE reads, the filename and argv copies and the 1360-byte record copy. The fix to \
             measure next is issue 9's batching: `BPF_RB_NO_WAKEUP` with a forced wakeup every N \
             records or on a timer. `bpftool prog profile` needs fentry, which this kernel \
             refuses, so no per-instruction profile here.",
            f.value - 2000.0,
            f.value / 2000.0,
            get("exec.floor_empty_program"),
            get("exec.floor_ringbuf_output_no_wakeup"),
            get("exec.floor_ringbuf_output_wakeup"),
            (f.value - get("exec.floor_ringbuf_output_wakeup")).max(0.0),
        )
    } else if f.name == "exec.tapio_exec_fork_exit" {
        format!(
            "Over by {:.0} ns. Three programs run per spawn (exec, fork, exit), each paying the \
             empty-program floor ({:.0} ns here, mostly bpf_stats' own clock reads) and a record \
             ({:.0} ns for 8 bytes without a wake-up; the exec record carries the argv). What is \
             left is the header helpers (pid, uid, cgroup, comm: ~30-40 ns each on this VM), the \
             CO-RE reads of the task (40-70 ns each) and the first read of the new image's user \
             memory (argv, ~500 ns after exec). tp_btf programs, which read task fields without \
             helpers, load here and would save an estimated ~1 us (not built).",
            f.value - 2000.0,
            get("exec.floor_empty_program"),
            get("exec.floor_ringbuf_output_no_wakeup"),
        )
    } else if f.name == "dns.all_programs_per_pair" {
        format!(
            "Over by {:.0} ns. A loopback pair is four packets, each seen by the dns and the \
             network packet programs (egress at the sender, ingress at the receiver), plus each \
             socket's creation (sock_create, ~1 us: the owner's helpers and an LRU insert) and the \
             dedup insert of each new udp_flow (LRU). Each message is a 624-byte record copied \
             twice (packet to scratch, scratch to ring). dig uses a fresh socket and port per \
             query, so every pair pays the socket creation and the flow insert.",
            f.value - 3000.0
        )
    } else if f.name == "network.per_tcp_connect" {
        format!(
            "Over by {:.0} ns. Both ends' state changes are ~20 records per connect+close \
             (network and kernel monitors, one per transition), each at least the record floor \
             ({:.0} ns) on top of the run floor ({:.0} ns); network_set_state, 1-2 us a run, is \
             most of it: its LRU owner map (BPF_F_NO_COMMON_LRU halves that on this 2-CPU VM but \
             splits the map's capacity per CPU, so not taken). The packet programs cost ~90 ns a \
             packet here (direct-access pre-filter), 24 runs per connect.",
            f.value - 3000.0,
            get("exec.floor_ringbuf_output_no_wakeup"),
            get("exec.floor_empty_program"),
        )
    } else if f.name.starts_with("decode.") {
        format!(
            "Short by {:.0} events/s. Bounded by per-event allocation (argv strings, comm) and \
             serde_json formatting; profile with `perf record` on this bench.",
            1_000_000.0 - f.value
        )
    } else if f.name.starts_with("memory.") {
        format!("Over by {:.1} MiB.", f.value - 40.0)
    } else {
        String::new()
    }
}
