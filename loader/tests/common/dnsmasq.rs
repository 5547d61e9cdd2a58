//! A real DNS server for the DNS tests: Debian's `dnsmasq` on port 53 of 127.0.0.1 and ::1 (the
//! monitor's default port), answering only from the records a test gives it.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread,
};

/// A running `dnsmasq`; killed and reaped on drop.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Starts it with `records` (dnsmasq options such as `--address=/tapio.test/10.1.2.3`) and
    /// returns once it says it serves, or panics with what it printed.
    pub fn start(records: &[&str]) -> Self {
        let mut child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--port=53",
                "--listen-address=127.0.0.1",
                "--listen-address=::1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
            ])
            .args(records)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dnsmasq (Debian package dnsmasq-base)");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("cleared cache") || (line.contains("started") && line.contains("cachesize")) {
                break;
            }
            if line.contains("failed") {
                let _ = child.kill();
                panic!("dnsmasq could not start (is port 53 taken?):\n{seen}");
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        Self(child)
    }

    /// Its process id: the tgid of the events of its own sends and receives.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
