//! `make bench`, XDP part: xdp_filter's nanoseconds per packet through `BPF_PROG_TEST_RUN`, beside
//! the floor of the method (an empty XDP program) and xdp-tools' `xdp-filter` holding an
//! equivalent rule, all measured in this run (issue 6 item 4, issue 9 item 3).
//!
//! Method: one 64-byte UDP/IPv4 frame, `repeat` = 10,000,000 per `BPF_PROG_TEST_RUN` call, the
//! kernel's own mean per run (`duration`). Each program is run `ROUNDS` times, interleaved so a
//! noisy moment hits every program alike; the figure is the median, the note gives the range.
//! xdp-filter is loaded on a veth in a namespace this bench makes; what runs there is libxdp's
//! dispatcher, which calls xdp-filter's program, so that is the program tested (as on a NIC).
//!
//! Prints `BENCH xdp.<name>: ...` lines and writes `target/bench/xdp.json` and
//! `docs/benchmarks-xdp.md` (its own file: kernel_cost regenerates docs/benchmarks.md).

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tapio_runtime::monitors::xdp_filter::{
    test_run, udp4_frame, FilterOptions, MatchMode, XdpFilter, XDP_DROP, XDP_PASS,
};

const REPEAT: u32 = 10_000_000;
const ROUNDS: usize = 5;
const FRAME_LEN: usize = 64;
/// The one IPv4 rule: our prefix, and the address xdp-filter (exact addresses only) gets.
const RULE_PREFIX: &str = "10.232.0.0/16";
const RULE_ADDR: &str = "10.232.0.1";
/// Reference figures measured on this machine when the issue was filed.
const FLOOR_REF_NS: f64 = 25.0;
const XDP_TOOLS_REF_NS: f64 = 121.0;
const TARGET_NS: f64 = 50.0;

struct Figure {
    name: String,
    value: f64,
    reference: String,
    target: String,
    met: Option<bool>,
    note: String,
}

impl Figure {
    fn print(&self) {
        println!(
            "BENCH xdp.{}: {:.1} ns/packet (reference: {}, target: {})",
            self.name, self.value, self.reference, self.target
        );
    }
}

/// `bpf(BPF_PROG_LOAD)` of `r0 = XDP_PASS; exit`: the cheapest XDP program there is.
fn load_empty_xdp() -> Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    // mov64 r0, XDP_PASS (opcode 0xb7, imm 2); exit (0x95): two 8-byte instructions.
    let insns: [u64; 2] = [0xb7 | (u64::from(XDP_PASS) << 32), 0x95];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"xdp_empty");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix whose pointers outlive the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, std::mem::size_of::<ProgLoadAttr>() as u32)
    };
    if fd < 0 {
        bail!("load empty XDP program: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// xdp-filter loaded on a veth inside a namespace of its own; unloaded and deleted on drop.
struct XdpToolsFilter {
    ns: String,
    iface: String,
    prog_fd: OwnedFd,
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl XdpToolsFilter {
    fn start() -> Result<Self> {
        let ns = format!("tapio-xdpbench-{}", std::process::id());
        let iface = "xbench0".to_owned();
        run("ip", &["netns", "add", &ns])?;
        let mut this = Self { ns, iface, prog_fd: load_empty_xdp()? };
        let ns = this.ns.clone();
        run("ip", &["-n", &ns, "link", "add", &this.iface, "type", "veth", "peer", "name", "xbench1"])?;
        run("ip", &["-n", &ns, "link", "set", &this.iface, "up"])?;
        run("ip", &["-n", &ns, "link", "set", "xbench1", "up"])?;
        // `ip netns exec` gives each command a fresh mount namespace without bpffs, and every
        // bpffs mount is a new instance: so mount it, load, add the rule and ask bpftool in one
        // shell. The attachment outlives the shell; deleting the namespace removes it.
        let script = format!(
            "mount -t bpf bpf /sys/fs/bpf && xdp-filter load --mode skb --features ipv4 {iface} \
             && xdp-filter ip --mode src,dst {RULE_ADDR} && bpftool -j net show dev {iface}",
            iface = this.iface
        );
        let out = run("ip", &["netns", "exec", &ns, "sh", "-c", &script])?;
        let net: Value = serde_json::from_str(out.lines().last().unwrap_or("")).context("bpftool net show: JSON")?;
        let id = net[0]["xdp"][0]["id"]
            .as_u64()
            .with_context(|| format!("no XDP program on {} in bpftool's answer: {net}", this.iface))? as u32;
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .with_context(|| format!("program id {id} not found"))?;
        // BPF_PROG_GET_FD_BY_ID, through aya.
        this.prog_fd = info.fd().context("BPF_PROG_GET_FD_BY_ID")?.as_fd().try_clone_to_owned()?;
        Ok(this)
    }
}

impl Drop for XdpToolsFilter {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "exec", &self.ns, "xdp-filter", "unload", &self.iface]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Runs every program `ROUNDS` times, interleaved; returns each program's sorted samples.
fn measure(programs: &[(&str, BorrowedFd<'_>, &[u8], u32)]) -> Result<Vec<Vec<f64>>> {
    let mut samples = vec![Vec::new(); programs.len()];
    for _ in 0..ROUNDS {
        for (i, (name, fd, frame, want)) in programs.iter().enumerate() {
            let r = test_run(*fd, frame, REPEAT).with_context(|| format!("test run {name}"))?;
            if r.retval != *want {
                bail!("{name}: returned {} where {want} was expected", r.retval);
            }
            samples[i].push(f64::from(r.duration_ns));
        }
    }
    for s in &mut samples {
        s.sort_by(|a, b| a.total_cmp(b));
    }
    Ok(samples)
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP xdp_cost: needs root (CAP_BPF, CAP_NET_ADMIN) for BPF_PROG_TEST_RUN and xdp-filter");
        return Ok(());
    }
    let pass_frame = udp4_frame(Ipv4Addr::new(10, 231, 0, 1), Ipv4Addr::new(10, 231, 0, 2), FRAME_LEN);
    let drop_frame = udp4_frame(Ipv4Addr::new(10, 232, 0, 1), Ipv4Addr::new(10, 231, 0, 2), FRAME_LEN);
    let block = vec![RULE_PREFIX.parse()?];
    let both = XdpFilter::load(None, &FilterOptions { blocks: block.clone(), match_mode: MatchMode::Both, steer_cpus: None })?;
    let src = XdpFilter::load(None, &FilterOptions { blocks: block, match_mode: MatchMode::Src, steer_cpus: None })?;
    let empty = load_empty_xdp()?;
    let tools = match XdpToolsFilter::start() {
        Ok(t) => Some(t),
        Err(e) => {
            println!("SKIP xdp.xdp_tools_filter: {e:#}");
            None
        }
    };

    let mut programs: Vec<(&str, BorrowedFd<'_>, &[u8], u32)> = vec![
        ("empty_floor", empty.as_fd(), &pass_frame, XDP_PASS),
        ("xdp_filter", both.program_fd()?, &pass_frame, XDP_PASS),
        ("xdp_filter_drop", both.program_fd()?, &drop_frame, XDP_DROP),
        ("xdp_filter_src_only", src.program_fd()?, &pass_frame, XDP_PASS),
    ];
    if let Some(t) = &tools {
        programs.push(("xdp_tools_filter", t.prog_fd.as_fd(), &pass_frame, XDP_PASS));
        programs.push(("xdp_tools_filter_drop", t.prog_fd.as_fd(), &drop_frame, XDP_DROP));
    }
    let samples = measure(&programs)?;
    let median = |name: &str| -> Option<f64> {
        programs.iter().position(|p| p.0 == name).map(|i| samples[i][samples[i].len() / 2])
    };
    let floor = median("empty_floor").unwrap_or(f64::NAN);
    let tools_pass = median("xdp_tools_filter");
    let vs_tools = |v: f64| match tools_pass {
        Some(t) => format!("xdp-tools xdp-filter {t:.1} ns this run ({XDP_TOOLS_REF_NS:.0} when filed)"),
        None => format!("xdp-tools xdp-filter not measured ({XDP_TOOLS_REF_NS:.0} when filed); {:.1} over floor", v - floor),
    };

    let mut figures = Vec::new();
    for (i, (name, ..)) in programs.iter().enumerate() {
        let s = &samples[i];
        let value = s[s.len() / 2];
        let range = format!("median of {ROUNDS} runs of {REPEAT} repeats, range {:.0}-{:.0}", s[0], s[s.len() - 1]);
        let (reference, target, met, what) = match *name {
            "empty_floor" => (
                format!("{FLOOR_REF_NS:.0} ns when filed"),
                "none (the floor of the method)".to_owned(),
                None,
                "r0 = XDP_PASS; exit",
            ),
            "xdp_filter" => (
                format!("floor {floor:.1} ns, {}", vs_tools(value)),
                format!("<= {TARGET_NS:.0} ns"),
                Some(value <= TARGET_NS),
                "one /16 rule, source and destination looked up (the default), packet passes",
            ),
            "xdp_filter_drop" => (
                format!("floor {floor:.1} ns"),
                format!("<= {TARGET_NS:.0} ns"),
                Some(value <= TARGET_NS),
                "same, packet from the blocked prefix (one lookup, then drop)",
            ),
            "xdp_filter_src_only" => (
                format!("floor {floor:.1} ns"),
                format!("<= {TARGET_NS:.0} ns"),
                Some(value <= TARGET_NS),
                "--match src: one lookup, packet passes",
            ),
            "xdp_tools_filter" => (
                format!("{XDP_TOOLS_REF_NS:.0} ns when filed; floor {floor:.1} ns"),
                "none (reference)".to_owned(),
                None,
                "xdp-filter -f ipv4, `ip 10.232.0.1 -m src,dst`, through libxdp's dispatcher, packet passes",
            ),
            _ => (format!("floor {floor:.1} ns"), "none (reference)".to_owned(), None, "same, packet from the blocked address"),
        };
        let f = Figure { name: (*name).to_owned(), value, reference, target, met, note: format!("{what}; {range}") };
        f.print();
        figures.push(f);
    }
    drop(tools);
    write_outputs(&figures)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("loader/ has a parent").to_path_buf()
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target")
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    run(cmd, args).map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn write_outputs(figures: &[Figure]) -> Result<()> {
    let date = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let kernel = command_line("uname", &["-r"]);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_default();
    let nproc = command_line("nproc", &[]);
    let xdp_tools = command_line("xdp-filter", &["--version"]);
    let results = json!({
        "date": date,
        "machine": { "kernel": kernel, "cpu": cpu, "nproc": nproc, "xdp_tools": xdp_tools },
        "method": format!("BPF_PROG_TEST_RUN, {FRAME_LEN}-byte UDP/IPv4 frame, repeat {REPEAT}, median of {ROUNDS} interleaved runs"),
        "figures": figures.iter().map(|f| json!({
            "name": format!("xdp.{}", f.name), "value": f.value, "unit": "ns/packet",
            "reference": f.reference, "target": f.target, "met": f.met, "note": f.note,
        })).collect::<Vec<_>>(),
    });
    let bench_dir = target_dir().join("bench");
    fs::create_dir_all(&bench_dir)?;
    let json_path = bench_dir.join("xdp.json");
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;

    let mut md = String::new();
    writeln!(md, "# XDP filter benchmark\n")?;
    writeln!(md, "Written by `make bench` (`loader/benches/xdp_cost.rs`); do not edit by hand. Kept apart from")?;
    writeln!(md, "`docs/benchmarks.md`, which the kernel_cost bench regenerates.\n")?;
    writeln!(md, "- Date: {date}")?;
    writeln!(md, "- Machine: {cpu}, {nproc} CPUs, kernel {kernel}; {xdp_tools}")?;
    writeln!(md, "- Method: `BPF_PROG_TEST_RUN` on a {FRAME_LEN}-byte UDP/IPv4 frame, repeat {REPEAT}; the kernel's mean")?;
    writeln!(md, "  per run. Every program runs {ROUNDS} times, interleaved; the figure is the median. The empty")?;
    writeln!(md, "  program is the floor of the method (the test-run loop itself). xdp-filter is loaded on a veth")?;
    writeln!(md, "  in a namespace with one equivalent rule (it takes exact addresses, not prefixes); the program")?;
    writeln!(md, "  tested is the one bpftool shows on that interface, libxdp's dispatcher, as a NIC would run it.\n")?;
    writeln!(md, "| figure | ns/packet | reference | target | met | what |")?;
    writeln!(md, "|---|---:|---|---|---|---|")?;
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        writeln!(md, "| xdp.{} | {:.1} | {} | {} | {met} | {} |", f.name, f.value, f.reference, f.target, f.note)?;
    }
    let md_path = workspace_root().join("docs/benchmarks-xdp.md");
    fs::create_dir_all(workspace_root().join("docs"))?;
    fs::write(&md_path, md)?;
    println!("bench: wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
