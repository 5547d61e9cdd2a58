//! Fallback paths the normal run does not take on this kernel, each proved here on purpose:
//! the perf-buffer transport (taken before 5.8), and the kprobe paths of the capability and of the
//! network monitor's connect_attempt / accept_return events (taken where fentry is missing).
//! Where a kernel cannot run a path at all, the check says so and is skipped.

use serde_json::json;
use tapio_bundle::Transport;
use tapio_decode::events::{self, DecodeOptions};
use tapio_runtime::monitors::{self, LoadOptions};

use tapio_matrix_protocol::Line;

use crate::report::Reporter;

/// The process monitor from its perf object: one exec, its events read from per-CPU buffers.
pub fn perf_transport(out: &mut Reporter, btf: Option<&aya::Btf>) {
    let options = LoadOptions { transport: Some(Transport::Perf), ..Default::default() };
    let Some(spec) = monitors::monitor("process") else { return };
    let mut m = match monitors::load(spec, btf, &options) {
        Ok(m) => m,
        Err(e) => {
            out.line(&Line::check("fallback.perf", false, e.to_string()));
            return;
        }
    };
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/init".to_owned());
    let status = std::process::Command::new(&exe).args(["exit-with", "9", "tapio-perf-leaf"]).status();
    let decode = DecodeOptions::default();
    let mut seen = Vec::new();
    while let Some(record) = m.events.next() {
        if let Ok(e) = events::decode(&record, &decode) {
            seen.push(serde_json::to_value(&e).expect("events serialize"));
        }
    }
    let exec = seen.iter().any(|e| e["event"] == "exec" && e["argv"][3] == "tapio-perf-leaf");
    let exit = seen.iter().any(|e| e["event"] == "exit" && e["exit_code"] == 9);
    let pass = status.is_ok_and(|s| s.code() == Some(9)) && exec && exit && m.events.lost == 0;
    out.line(&Line::check(
        "fallback.perf",
        pass,
        format!("{} events over perf, exec seen {exec}, exit seen {exit}, lost {}", seen.len(), m.events.lost),
    ));
}

/// The dns monitor from its perf object: one UDP query and its response on loopback. On the
/// packet path the perf build sends each message straight from the packet, after the record
/// (BPF_F_CTXLEN, DNS_F_SKB_TAIL): both must decode with their question.
pub fn perf_dns(out: &mut Reporter, btf: Option<&aya::Btf>) {
    let options = LoadOptions { transport: Some(Transport::Perf), ..Default::default() };
    let Some(spec) = monitors::monitor("dns") else { return };
    let mut m = match monitors::load(spec, btf, &options) {
        Ok(m) => m,
        Err(e) => {
            out.line(&Line::check("fallback.perf_dns", false, e.to_string()));
            return;
        }
    };
    let path = if m.fallbacks.is_empty() { "packet" } else { "syscalls" };
    let exchange = (|| -> std::io::Result<u16> {
        let server = std::thread::spawn(|| -> std::io::Result<()> {
            let sock = std::net::UdpSocket::bind("127.0.0.9:53")?;
            sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            let mut buf = [0u8; 512];
            let (n, from) = sock.recv_from(&mut buf)?;
            buf[2] |= 0x80;
            sock.send_to(&buf[..n], from).map(|_| ())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
        client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut q = vec![0x7e, 0x57, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["perf", "tapio", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        client.send_to(&q, "127.0.0.9:53")?;
        let mut buf = [0u8; 512];
        client.recv(&mut buf)?;
        server.join().map_err(|_| std::io::Error::other("responder panicked"))??;
        Ok(client.local_addr()?.port())
    })();
    let decode = DecodeOptions::default();
    let mut seen = Vec::new();
    let _ = m.events.wait(std::time::Duration::from_secs(2));
    std::thread::sleep(std::time::Duration::from_millis(20));
    while let Some(record) = m.events.next() {
        match events::decode(&record, &decode) {
            Ok(e) => seen.push(serde_json::to_value(&e).expect("events serialize")),
            Err(e) => seen.push(json!({ "decode_error": e.to_string() })),
        }
    }
    let port = exchange.as_ref().ok().copied();
    let ours: Vec<&serde_json::Value> = seen.iter().filter(|e| e["dns_id"] == 0x7e57).collect();
    let complete = |kind: &str| ours.iter().any(|e| e["event"] == kind && e["qname"] == "perf.tapio.test" && e["truncated"] == false);
    let pass = port.is_some() && complete("query") && complete("response") && seen.iter().all(|e| e.get("decode_error").is_none());
    out.line(&Line::check(
        "fallback.perf_dns",
        pass,
        format!("{path} path over perf; exchange {exchange:?}; events: {ours:?}; lost {}", m.events.lost),
    ));
}

/// The capability events through the kprobe path alone, even where fexit would win.
pub fn kprobe_capability(out: &mut Reporter, btf: Option<&aya::Btf>) {
    let Some(spec) = monitors::monitor("security") else { return };
    let Some(program) = spec.programs.iter().find(|p| p.name == "sec_capable_kprobe") else { return };
    if let Err(why) = tapio_runtime::plan::attach_path(&program.attach) {
        out.line(&Line::skip("fallback.kprobe", why, program.attach.needs_list()));
        return;
    }
    let result = (|| -> Result<(usize, bool), String> {
        let options = LoadOptions::default();
        let mut ebpf = monitors::open(spec, btf, &options).map_err(|e| e.to_string())?;
        monitors::load_program(&mut ebpf, spec.name, program, btf).map_err(|e| e.to_string())?;
        monitors::attach_program(&mut ebpf, spec.name, program).map_err(|e| e.to_string())?;
        let map = ebpf.take_map("events").ok_or("no events map")?;
        let mut source = tapio_runtime::transport::EventSource::open(map, options.transport(), &options.delivery).map_err(|e| e.to_string())?;
        let name = b"tapio-kprobe";
        // SAFETY: name is a valid buffer of the given length; sethostname checks CAP_SYS_ADMIN.
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        let me = std::process::id();
        let decode = DecodeOptions::default();
        let mut count = 0;
        let mut seen = false;
        while let Some(record) = source.next() {
            count += 1;
            if let Ok(e) = events::decode(&record, &decode) {
                let v = serde_json::to_value(&e).expect("events serialize");
                seen |= v["event"] == "capability"
                    && v["tgid"] == me
                    && v["capability"] == "CAP_SYS_ADMIN"
                    && v["verdict_known"] == false;
            }
        }
        Ok((count, seen))
    })();
    let (pass, detail) = match result {
        Ok((count, seen)) => (seen, format!("{count} records through kprobe:cap_capable, CAP_SYS_ADMIN seen {seen}")),
        Err(e) => (false, e),
    };
    out.line(&Line::check("fallback.kprobe", pass, detail));
}

/// The network monitor's `connect_attempt` and `accept_return` through `kprobe:tcp_connect` and
/// `kretprobe:inet_csk_accept` alone, even where fexit would win: one loopback connection, whose
/// two records are in the buffer once connect() and accept() have returned (both probes run
/// inside those calls).
pub fn kprobe_network(out: &mut Reporter, btf: Option<&aya::Btf>) {
    const NAME: &str = "fallback.kprobe_network";
    let Some(spec) = monitors::monitor("network") else { return };
    let programs: Vec<_> =
        spec.programs.iter().filter(|p| matches!(p.name, "network_connect_kprobe" | "network_accept_kretprobe")).collect();
    for p in &programs {
        if let Err(why) = tapio_runtime::plan::attach_path(&p.attach) {
            out.line(&Line::skip(NAME, format!("{}: {why}", p.attach.describe()), p.attach.needs_list()));
            return;
        }
    }
    let result = (|| -> Result<(bool, String), String> {
        let options = LoadOptions::default();
        let mut ebpf = monitors::open(spec, btf, &options).map_err(|e| e.to_string())?;
        for p in &programs {
            monitors::load_program(&mut ebpf, spec.name, p, btf).map_err(|e| e.to_string())?;
            monitors::attach_program(&mut ebpf, spec.name, p).map_err(|e| e.to_string())?;
        }
        let map = ebpf.take_map("events").ok_or("no events map")?;
        let mut source = tapio_runtime::transport::EventSource::open(map, options.transport(), &options.delivery).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| format!("loopback connection: {e}");
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
        let server = listener.local_addr().map_err(io)?.port();
        let client = std::net::TcpStream::connect(("127.0.0.1", server)).map_err(io)?;
        let (_conn, _) = listener.accept().map_err(io)?;
        let client_port = client.local_addr().map_err(io)?.port();
        let me = std::process::id();
        let decode = DecodeOptions::default();
        let mut seen = Vec::new();
        while let Some(record) = source.next() {
            if let Ok(e) = events::decode(&record, &decode) {
                seen.push(serde_json::to_value(&e).expect("events serialize"));
            }
        }
        let ours = |e: &&serde_json::Value, event: &str, sport: u16, dport: u16| {
            e["event"] == event && e["sport"] == sport && e["dport"] == dport && e["tgid"] == me && e["owner_known"] == true
        };
        // The kprobe runs before tcp_connect, so no return value: `result` must be absent.
        let connect = seen.iter().find(|e| ours(e, "connect_attempt", client_port, server) && e.get("result").is_none());
        let accept = seen.iter().find(|e| ours(e, "accept_return", server, client_port));
        let pass = connect.is_some() && accept.is_some();
        let mut detail = format!(
            "{} records through kprobe:tcp_connect and kretprobe:inet_csk_accept (client port {client_port}, server port {server}); connect_attempt {}; accept_return {}",
            seen.len(),
            connect.map_or("missing".to_owned(), ToString::to_string),
            accept.map_or("missing".to_owned(), ToString::to_string),
        );
        if !pass {
            detail.push_str(&format!("; every record: {seen:?}"));
        }
        Ok((pass, detail))
    })();
    let (pass, detail) = result.unwrap_or_else(|e| (false, e));
    out.line(&Line::check(NAME, pass, detail));
}
