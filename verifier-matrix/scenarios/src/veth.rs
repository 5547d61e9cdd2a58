//! The veth pair the network/tcp_veth and xdp/veth_prefixes scenarios run across: one end in the
//! agent's network namespace ("root": the VM's only one, or the host's on the host row), the
//! other in a namespace made for the scenario.
//!
//! The pair is built so that nothing but the scenario's own packets crosses it, which keeps
//! packet counts exact: both ends are `IFF_NOARP` (no ARP, no neighbour discovery, no duplicate
//! address detection, and no solicited-node multicast group to report over MLD) with IPv6
//! address generation off (no link-local address, so no router solicitation). A NOARP link sends
//! every unicast frame to its own hardware address, so both ends carry the same one: what one end
//! sends is addressed to the other.
//!
//! The peer is created directly inside the scenario's namespace, so from the first moment the
//! pair exists it goes away with that namespace: if the agent dies, the kernel tears down the
//! namespace, its veth end and with it the root end. Normally [`VethPair`]'s drop deletes it.

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::Duration,
};

use tapio_matrix_protocol::Line;

use crate::{
    netlink::{NetNs, Netlink},
    Outcome,
};

/// Where the harness packs the booted kernel's veth module (verifier-matrix/src/matrix.rs,
/// `GUEST_MODULES`), and where it writes why there is none.
const VETH_MODULE: &str = "/lib/modules/veth.ko";
const VETH_MISSING: &str = "/lib/modules/veth.missing";
/// The end inside the scenario's namespace: a fixed name, since the namespace is new.
pub const NS_IF: &str = "veth-ns";
/// Both ends' hardware address: locally administered, unicast.
const MAC: [u8; 6] = [0x02, 0x74, 0x61, 0x70, 0x69, 0x6f];
/// No link takes longer to be ready than this (a guard, not a wait).
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the pair could not be made.
pub enum Unavailable {
    /// The kernel has no veth and the harness said why (no module to pack): a skip.
    Kernel(String),
    /// Anything else: a failure.
    Failed(String),
}

/// Loads the veth module the harness packed, if it packed one. `Ok(None)`: nothing to load (the
/// host row, or a kernel whose veth is built in); `Ok(Some(why))`: the harness packed none and
/// says why; an error other than "already loaded" is a failure.
fn load_module() -> Result<Option<String>, String> {
    if !Path::new(VETH_MODULE).exists() {
        return Ok(std::fs::read_to_string(VETH_MISSING).ok().map(|s| s.trim().to_owned()));
    }
    let file = std::fs::File::open(VETH_MODULE).map_err(|e| format!("open {VETH_MODULE}: {e}"))?;
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated parameter string; flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("finit_module {VETH_MODULE}: {e}"));
        }
    }
    Ok(None)
}

/// A veth pair across a new network namespace, with addresses on both ends, up and ready.
pub struct VethPair {
    pub ns: NetNs,
    /// The root end's name (unique per agent process: the host row shares the host's namespace).
    pub root_if: String,
    root: Netlink,
    root_index: u32,
}

impl VethPair {
    /// Makes the pair: `root_addrs` on the root end, `ns_addrs` on the namespace's end, each an
    /// (address, prefix length). Returns when both links are up and every address is assigned.
    pub fn create(tag: &str, root_addrs: &[(IpAddr, u8)], ns_addrs: &[(IpAddr, u8)]) -> Result<Self, Unavailable> {
        let failed = |e: crate::netlink::Error| Unavailable::Failed(e.to_string());
        let missing = load_module().map_err(Unavailable::Failed)?;
        let ns = NetNs::new().map_err(failed)?;
        let root_if = format!("tapio{tag}{}", std::process::id());
        let mut root = Netlink::open().map_err(failed)?;
        // Subscribed before the links go up, so their readiness notifications are not missed.
        let mut root_events = Netlink::open_groups(libc::RTMGRP_LINK as u32).map_err(failed)?;
        if let Err(e) = root.create_veth(&root_if, NS_IF, ns.as_fd(), MAC) {
            return Err(match (e.errno(), missing) {
                (Some(libc::EOPNOTSUPP), Some(why)) => Unavailable::Kernel(format!("veth unavailable: {why}; {e}")),
                _ => Unavailable::Failed(e.to_string()),
            });
        }
        let root_index = match root.link_index(&root_if) {
            Ok(i) => i,
            Err(e) => return Err(failed(e)), // the namespace's drop takes the pair with it
        };
        let mut pair = Self { ns, root_if, root, root_index };
        pair.configure(&mut root_events, root_addrs, ns_addrs).map_err(failed)?;
        Ok(pair)
    }

    /// Links up (root end first: the namespace's end is ready once it has a carrier, which
    /// needs its peer up), then the addresses.
    fn configure(&mut self, root_events: &mut Netlink, root_addrs: &[(IpAddr, u8)], ns_addrs: &[(IpAddr, u8)]) -> crate::netlink::Result<()> {
        let flags = (libc::IFF_UP | libc::IFF_NOARP) as u32;
        self.root.no_ipv6_autoconf(self.root_index)?;
        self.root.set_flags(self.root_index, flags, flags)?;
        self.ns.run(|| -> crate::netlink::Result<()> {
            let mut nl = Netlink::open()?;
            let mut events = Netlink::open_groups(libc::RTMGRP_LINK as u32)?;
            let index = nl.link_index(NS_IF)?;
            nl.no_ipv6_autoconf(index)?;
            nl.set_flags(index, flags, flags)?;
            events.wait_oper_up(index, LINK_UP_TIMEOUT)?;
            for &(a, len) in ns_addrs {
                nl.add_address(index, a, len)?;
            }
            Ok(())
        })??;
        root_events.wait_oper_up(self.root_index, LINK_UP_TIMEOUT)?;
        for &(a, len) in root_addrs {
            self.root.add_address(self.root_index, a, len)?;
        }
        Ok(())
    }
}

impl Drop for VethPair {
    /// Deletes the root end, and with it the namespace's end; the namespace goes with its fd.
    fn drop(&mut self) {
        if let Err(e) = self.root.delete_link(self.root_index) {
            eprintln!("tapio-guest: veth {}: {e}", self.root_if);
        }
    }
}

/// Makes the pair for `scenario`, or reports why not: a skip line when the kernel has no veth
/// (with the harness's reason), a failed check otherwise.
pub fn pair_or_report(out: &mut Outcome, scenario: &str, tag: &str, root_addrs: &[(IpAddr, u8)], ns_addrs: &[(IpAddr, u8)]) -> Option<VethPair> {
    match VethPair::create(tag, root_addrs, ns_addrs) {
        Ok(p) => Some(p),
        Err(Unavailable::Kernel(why)) => {
            out.line(&Line::skip(scenario, why, tapio_matrix_protocol::Needs::one("veth")));
            None
        }
        Err(Unavailable::Failed(why)) => {
            super::check(out, &format!("{scenario}.veth"), false, why);
            None
        }
    }
}
