//! `make bench`, attribution part (issue 17): what container and pod attribution costs the agent.
//!
//! - **ns per event added**: one event's user-space path as the run loop takes it (decode the
//!   record, annotate it from the cgroup map, write it as a JSON line to `io::sink`) with an
//!   attributor of 10,000 containers, beside the same path with attribution off, measured in the
//!   same run and interleaved (off, on, off, on, ...) so that a noisy neighbour hits both. Two
//!   cases: a host process's event (a map miss: the common case on a node) and a container's
//!   event, which also writes the container fields (with and without the CRI names).
//! - **memory per 10,000 containers**: the heap the map holds for 10,000 container cgroups in
//!   kubelet's systemd layout (64-hex ids), counted by this binary's allocator (live bytes, not
//!   resident pages, so the figure is exact and repeatable), with and without the CRI names.
//! - **naming**: the time to give 10,000 containers their CRI names, one answer at a time, as
//!   the run loop applies them.
//!
//! Prints `BENCH attribution.*` lines and writes `target/bench/attribution.json` and
//! `docs/benchmarks-attribution.md`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    fmt::Write as _,
    hint::black_box,
    sync::atomic::{AtomicIsize, Ordering},
    time::Instant,
};

use anyhow::{Context, Result};
use serde_json::json;
use tapio_abi::{
    process::{ProcessEvent, ProcessExecEvent, PROCESS_EXEC},
    TapioHeader, MONITOR_PROCESS,
};
use tapio_decode::{
    attribution::{Attributor, DEFAULT_CAPACITY},
    events::{self, DecodeOptions},
};
use tapio_load::output::json::JsonLines;

/// Counts the bytes live on the heap, so the map's memory is measured exactly.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONTAINERS: u64 = 10_000;
/// Events per timed round, and rounds per case (best of, interleaved with the baseline).
const EVENTS: u64 = 200_000;
const ROUNDS: usize = 7;
/// cgroup ids of the containers are 1..=CONTAINERS; a host event's is past them.
const HOST_CGROUP: u64 = 1_000_000;

fn container_path(i: u64) -> (String, String) {
    let uid = format!("{i:08x}-1b4d-4e8f-9a6b-0c1d2e3f4a5b");
    let id = format!("{:064x}", i * 0x9e37_79b9_7f4a_7c15);
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    );
    (path, id)
}

/// An attributor holding `CONTAINERS` containers, optionally named as a CRI answer names them.
fn filled(named: bool) -> Attributor {
    let mut a = Attributor::new(DEFAULT_CAPACITY);
    let mut ids = Vec::new();
    for i in 1..=CONTAINERS {
        let (path, id) = container_path(i);
        a.insert(i, &path);
        ids.push(id);
    }
    if named {
        for (i, id) in ids.iter().enumerate() {
            a.name(id, |at| name_one(at, i));
        }
    }
    a
}

/// What a CRI answer typically carries: names of a deployment's pod, an image, two labels.
fn name_one(a: &mut tapio_decode::attribution::Attribution, i: usize) {
    a.pod_name = Some(format!("checkout-7d9f8b6c5d-{i:05}"));
    a.pod_namespace = Some("shop".to_owned());
    a.container_name = Some("checkout".to_owned());
    a.container_image = Some("registry.internal/shop/checkout:1.42.0".to_owned());
    a.pod_labels.insert("app".to_owned(), "checkout".to_owned());
    a.pod_labels.insert("pod-template-hash".to_owned(), "7d9f8b6c5d".to_owned());
}

fn exec_record(cgroup_id: u64) -> Vec<u8> {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"true");
    let hdr = TapioHeader { ts_ns: 123_456_789, pid: 4242, tgid: 4242, cgroup_id, uid: 0, monitor: MONITOR_PROCESS, kind: PROCESS_EXEC, _pad0: 0, comm };
    let args = b"/bin/true\0a\0b\0c\0";
    let mut e = ProcessExecEvent { base: ProcessEvent { hdr, ppid: 1, args_size: args.len() as u32, ..Default::default() }, filename: [0; 256], args: [0; 1024] };
    e.filename[..9].copy_from_slice(b"/bin/true");
    e.args[..args.len()].copy_from_slice(args);
    // SAFETY: a repr(C) mirror of integers and byte arrays with explicit padding fields.
    unsafe { std::slice::from_raw_parts((&e as *const ProcessExecEvent).cast::<u8>(), std::mem::size_of::<ProcessExecEvent>()) }.to_vec()
}

/// ns per event for decode (+ annotate) + JSON, over `EVENTS` events.
fn per_event_ns(record: &[u8], attributor: Option<&mut Attributor>) -> Result<f64> {
    let options = DecodeOptions::default();
    let mut sink = JsonLines::new(std::io::sink());
    let mut attributor = attributor;
    let start = Instant::now();
    for n in 0..EVENTS {
        let mut event = events::decode(record, &options).context("decode the synthetic record")?;
        if let Some(a) = attributor.as_deref_mut() {
            a.annotate(&mut event);
        }
        sink.write(black_box(&event))?;
        if n % 64 == 63 {
            sink.flush()?;
        }
    }
    sink.flush()?;
    Ok(start.elapsed().as_nanos() as f64 / EVENTS as f64)
}

/// Best-of-`ROUNDS` of the baseline and of the case, interleaved.
fn compare(record: &[u8], attributor: &mut Attributor) -> Result<(f64, f64)> {
    let (mut base, mut with) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        base = base.min(per_event_ns(record, None)?);
        with = with.min(per_event_ns(record, Some(attributor))?);
    }
    Ok((base, with))
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() -> Result<()> {
    let mut figures = Vec::new();
    let mut table = String::new();

    // Memory first, before anything else is on the heap.
    let before = live();
    let plain = filled(false);
    let plain_bytes = (live() - before) as f64;
    let before = live();
    let started = Instant::now();
    let named = filled(true);
    let fill_and_name = started.elapsed();
    let named_bytes = (live() - before) as f64;
    let started = Instant::now();
    let _unnamed_again = filled(false);
    let fill_only = started.elapsed();
    drop(_unnamed_again);
    let naming_ms = (fill_and_name.saturating_sub(fill_only)).as_secs_f64() * 1e3;

    let mut plain = plain;
    let mut named = named;
    let host = exec_record(HOST_CGROUP);
    let container = exec_record(CONTAINERS / 2);
    let (base_host, host_ns) = compare(&host, &mut plain)?;
    let (base_ctr, ctr_ns) = compare(&container, &mut plain)?;
    let (base_named, named_ns) = compare(&container, &mut named)?;

    let rows: [(&str, f64, f64, &str); 3] = [
        ("host_event_ns_added", base_host, host_ns, "a host process's exec event: a map miss"),
        ("container_event_ns_added", base_ctr, ctr_ns, "a container's exec event: container_id, runtime, pod_uid, qos written"),
        ("named_container_event_ns_added", base_named, named_ns, "as above plus the CRI names (pod, namespace, container, image, 2 labels)"),
    ];
    let _ = writeln!(table, "| figure | without attribution | with (10,000 containers) | added | ratio |\n|---|---|---|---|---|");
    for (name, base, with, note) in rows {
        let added = with - base;
        println!("BENCH attribution.{name}: {added:.1} ns/event (baseline {base:.1} ns/event without attribution, {with:.1} with; {note})");
        let _ = writeln!(table, "| {name} ({note}) | {base:.1} ns | {with:.1} ns | {added:+.1} ns | {:.2}x |", with / base);
        figures.push(json!({"name": format!("attribution.{name}"), "value": added, "unit": "ns/event", "baseline_ns": base, "with_ns": with, "note": note}));
    }
    for (name, bytes, note) in [
        ("memory_10k_containers", plain_bytes, "cgroup id -> attribution, kubelet systemd layout, 64-hex ids"),
        ("memory_10k_named_containers", named_bytes, "the same with the CRI names"),
    ] {
        println!("BENCH attribution.{name}: {:.0} KiB ({:.0} bytes per container; {note})", bytes / 1024.0, bytes / CONTAINERS as f64);
        let _ = writeln!(table, "| {name} ({note}) | | {:.0} KiB | {:.0} B per container | |", bytes / 1024.0, bytes / CONTAINERS as f64);
        figures.push(json!({"name": format!("attribution.{name}"), "value": bytes, "unit": "bytes", "per_container": bytes / CONTAINERS as f64, "note": note}));
    }
    println!("BENCH attribution.naming_10k_ms: {naming_ms:.1} ms (10,000 CRI answers applied one at a time)");
    let _ = writeln!(table, "| naming_10k (10,000 CRI answers applied one at a time) | | {naming_ms:.1} ms | | |");
    figures.push(json!({"name": "attribution.naming_10k_ms", "value": naming_ms, "unit": "ms"}));

    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::create_dir_all(workspace.join("target/bench")).context("target/bench")?;
    std::fs::write(workspace.join("target/bench/attribution.json"), serde_json::to_vec_pretty(&figures)?).context("write attribution.json")?;
    let doc = format!(
        "# Attribution cost\n\nWritten by `make bench` (`loader/benches/attribution.rs`); one run, figures in the same \
         process, the baseline interleaved with each case (best of {ROUNDS} rounds of {EVENTS} events). The per-event \
         path is decode, annotate, JSON line to `io::sink`, as the run loop takes it. Memory is the heap the map \
         holds (counted by the bench's allocator).\n\n{table}"
    );
    std::fs::write(workspace.join("docs/benchmarks-attribution.md"), doc).context("write docs/benchmarks-attribution.md")?;
    Ok(())
}
