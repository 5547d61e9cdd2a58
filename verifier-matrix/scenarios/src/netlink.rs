//! Just enough rtnetlink for the veth scenarios (issue 7): a network namespace, a veth pair with
//! one end in it, addresses, link flags and state. Hand-written on libc because the guest is a
//! static `/init` with no shell, no `ip` binary and no async runtime.
//!
//! Every change asks for an ACK and returns only once the kernel answered it, so when a call
//! returns the work is done: the link exists, the address is assigned and its prefix route is in
//! the table. The one step the kernel finishes later on its own is a link's readiness (carrier,
//! operstate and qdisc are set by the linkwatch worker after `IFF_UP`); [`Netlink::wait_oper_up`]
//! waits for the kernel's notification of it rather than for a guessed delay.
//!
//! Message layouts: `include/uapi/linux/netlink.h` (`nlmsghdr`, `nlattr`, `nlmsgerr`),
//! `rtnetlink.h` (`ifinfomsg`), `if_addr.h` (`ifaddrmsg`), `if_link.h` and `veth.h` (attributes).
//! Request building and reply parsing are plain byte work, unit tested without a kernel.

use std::{
    ffi::CStr,
    fs::File,
    io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

/// `RTM_GETLINK` (rtnetlink.h); libc has the others of the family.
const RTM_GETLINK: u16 = 18;
/// `VETH_INFO_PEER` (veth.h): the peer's `ifinfomsg` and attributes, nested in `IFLA_INFO_DATA`.
const VETH_INFO_PEER: u16 = 1;
/// `IFLA_INET6_ADDR_GEN_MODE` (if_link.h), inside `IFLA_AF_SPEC` / `AF_INET6`.
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
/// `IN6_ADDR_GEN_MODE_NONE`: the kernel makes no link-local address for the link.
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
/// `NLA_F_NESTED`: marks an attribute whose payload is more attributes.
const NLA_F_NESTED: u16 = 1 << 15;
/// `NLMSGERR_ATTR_MSG` (netlink.h): the extended ACK's text, when the kernel gives one.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The fixed headers: `nlmsghdr` 16 bytes, `ifinfomsg` 16, `ifaddrmsg` 8, `nlattr` 4.
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
/// The transmit and receive queues each end of a veth pair gets (see [`Netlink::create_veth`]).
pub const VETH_QUEUES: u32 = 1;
/// No reply may take longer than this: a guard against a lost message, not a synchronisation.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A failed netlink step: what was being done, the errno, and the kernel's own words when it
/// sent an extended ACK (`Unknown device type`, `Invalid prefix for given prefix length`).
#[derive(Debug)]
pub struct Error {
    what: String,
    source: io::Error,
    kernel_says: Option<String>,
}

impl Error {
    fn new(what: &str, source: io::Error) -> Self {
        Self { what: what.to_owned(), source, kernel_says: None }
    }

    /// The errno, when the failure was the kernel's answer or a syscall's.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)?;
        match &self.kernel_says {
            Some(t) => write!(f, " ({t})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn context(what: &str, e: io::Error) -> Error {
    Error::new(what, e)
}

/// One rtnetlink request being built: the `nlmsghdr`, a family header, then attributes.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
    /// Offsets of the nested attributes still open.
    open: Vec<usize>,
}

impl Message {
    /// A request of type `kind` with `NLM_F_REQUEST | NLM_F_ACK` and the extra `flags`.
    pub fn new(kind: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Self { buf, open: Vec::new() }
    }

    /// Appends `struct ifinfomsg` (family, type, index, flags, change).
    pub fn ifinfomsg(mut self, family: u8, index: i32, flags: u32, change: u32) -> Self {
        self.push_ifinfomsg(family, index, flags, change);
        self
    }

    fn push_ifinfomsg(&mut self, family: u8, index: i32, flags: u32, change: u32) {
        self.buf.extend_from_slice(&[family, 0, 0, 0]); // family, pad, ifi_type (u16)
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
    }

    /// Appends `struct ifaddrmsg` (family, prefix length, flags, scope, index).
    pub fn ifaddrmsg(mut self, family: u8, prefix_len: u8, flags: u8, index: u32) -> Self {
        self.buf.extend_from_slice(&[family, prefix_len, flags, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// Appends one attribute, padded to four bytes.
    pub fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        self.push_attr(kind, data);
        self
    }

    fn push_attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// A NUL-terminated string attribute (interface names, link kinds).
    pub fn attr_str(self, kind: u16, s: &str) -> Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    /// Opens a nested attribute; [`end`](Self::end) closes the last one opened.
    pub fn begin(mut self, kind: u16) -> Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Opens a nested attribute whose payload starts with an `ifinfomsg` (`VETH_INFO_PEER`).
    /// `NLA_F_NESTED` stays off there: the payload is not attributes only, and veth reads it
    /// without a nested-attribute check.
    fn begin_peer(mut self, index: i32) -> Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&VETH_INFO_PEER.to_ne_bytes());
        self.push_ifinfomsg(libc::AF_UNSPEC as u8, index, 0, 0);
        self
    }

    pub fn end(mut self) -> Self {
        let start = self.open.pop().expect("end() without begin()");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The finished message with its length and sequence number filled in.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.open.is_empty(), "nested attribute left open");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message of a reply: its header fields and payload (after the 16-byte header).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a datagram read from a netlink socket into its messages.
pub fn messages(buf: &[u8]) -> io::Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("netlink message length {len} of {}", rest.len())));
        }
        out.push(Reply {
            kind: u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes")),
            flags: u16::from_ne_bytes(rest[6..8].try_into().expect("2 bytes")),
            seq: u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes")),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        rest = &rest[align4(len).min(rest.len())..];
    }
    Ok(out)
}

/// The attributes in `buf` as (type without flags, payload) pairs.
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((u16::from_ne_bytes([rest[2], rest[3]]) & !NLA_F_NESTED, &rest[4..len]));
        rest = &rest[align4(len).min(rest.len())..];
    }
    out
}

/// What an `NLMSG_ERROR` payload carries: Ok for an ACK, else the errno and, when the reply has
/// `NLM_F_ACK_TLVS`, the kernel's extended-ACK text.
pub fn ack_result(what: &str, reply: &Reply<'_>) -> Result<()> {
    let code = reply
        .payload
        .get(0..4)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| Error::new(what, io::Error::new(io::ErrorKind::InvalidData, "short NLMSG_ERROR")))?;
    if code == 0 {
        return Ok(());
    }
    let mut e = Error::new(what, io::Error::from_raw_os_error(-code));
    if reply.flags & libc::NLM_F_ACK_TLVS as u16 != 0 {
        // NETLINK_CAP_ACK: only the request's header is echoed after the code, then the TLVs.
        e.kernel_says = reply
            .payload
            .get(4 + NLMSG_HDRLEN..)
            .and_then(|tlvs| attrs(tlvs).into_iter().find(|(k, _)| *k == NLMSGERR_ATTR_MSG))
            .and_then(|(_, v)| CStr::from_bytes_until_nul(v).ok())
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|t| !t.is_empty());
    }
    Err(e)
}

/// An rtnetlink socket. It acts in the network namespace of the thread that opened it, whatever
/// thread uses it later.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// A socket for requests (no multicast groups).
    pub fn open() -> Result<Self> {
        Self::open_groups(0)
    }

    /// A socket that also hears the rtnetlink multicast `groups` (`RTMGRP_LINK`, ...).
    pub fn open_groups(groups: u32) -> Result<Self> {
        // SAFETY: socket takes integers; the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(context("netlink socket", io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = groups;
        // SAFETY: sa is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32)
        };
        if rc != 0 {
            return Err(context("netlink bind", io::Error::last_os_error()));
        }
        let one: libc::c_int = 1;
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            // SAFETY: an int option of the right size. Kernels before 4.12 lack EXT_ACK: their
            // errors then come without the text, so a failure here is ignored.
            unsafe {
                libc::setsockopt(fd.as_raw_fd(), libc::SOL_NETLINK, opt, (&one as *const libc::c_int).cast(), 4);
            }
        }
        let tv = libc::timeval { tv_sec: REPLY_TIMEOUT.as_secs() as _, tv_usec: 0 };
        // SAFETY: a timeval option of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Self { fd, seq: 0 })
    }

    fn send(&mut self, msg: Message) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = msg.finish(self.seq);
        // SAFETY: bytes is a valid buffer; the kernel is the destination (default address).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, format!("no netlink reply within {REPLY_TIMEOUT:?}"))
            } else {
                e
            });
        }
        Ok(n as usize)
    }

    /// Sends `msg` and waits for its ACK; returns the payloads of the replies that came before
    /// it (a GET's answer). `what` names the request in errors.
    pub fn request(&mut self, what: &str, msg: Message) -> Result<Vec<Vec<u8>>> {
        let seq = self.send(msg).map_err(|e| context(what, e))?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut replies = Vec::new();
        loop {
            let n = self.recv(&mut buf).map_err(|e| context(what, e))?;
            for m in messages(&buf[..n]).map_err(|e| context(what, e))? {
                if m.seq != seq {
                    continue; // a notification or an older request's leftover
                }
                if m.kind == libc::NLMSG_ERROR as u16 {
                    return ack_result(what, &m).map(|()| replies);
                }
                replies.push(m.payload.to_vec());
            }
        }
    }

    /// Creates a veth pair: `name` in this socket's namespace, `peer` in the namespace `peer_ns`
    /// refers to, both with the hardware address `mac` and with [`VETH_QUEUES`] transmit and
    /// receive queue each.
    ///
    /// Unasked, each end is made with one queue of each kind per possible CPU (drivers/net/veth.c,
    /// `veth_get_num_queues`). Later kernels then put only the first of each in use
    /// (`veth_init_queues`; the matrix's 6.1 has it, its 5.10 does not); on 5.10 all are, and a
    /// sender's flow hash picks the queue, and with it the ring and NAPI instance, that takes
    /// the frame on the other end. With one queue a frame sent after another is also received
    /// after it: one ring, drained in order by one NAPI instance (and with XDP on the receiving
    /// end, judged by its program in that order), which the counts of the xdp scenario rely on.
    /// The peer's queue counts are its own attributes, after its `ifinfomsg` in
    /// `VETH_INFO_PEER`: veth makes the peer from those alone.
    pub fn create_veth(&mut self, name: &str, peer: &str, peer_ns: BorrowedFd<'_>, mac: [u8; 6]) -> Result<()> {
        let queues = VETH_QUEUES.to_ne_bytes();
        let msg = Message::new(libc::RTM_NEWLINK, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16)
            .ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0)
            .attr_str(libc::IFLA_IFNAME, name)
            .attr(libc::IFLA_ADDRESS, &mac)
            .attr(libc::IFLA_NUM_TX_QUEUES, &queues)
            .attr(libc::IFLA_NUM_RX_QUEUES, &queues)
            .begin(libc::IFLA_LINKINFO)
            .attr_str(libc::IFLA_INFO_KIND, "veth")
            .begin(libc::IFLA_INFO_DATA)
            .begin_peer(0)
            .attr_str(libc::IFLA_IFNAME, peer)
            .attr(libc::IFLA_ADDRESS, &mac)
            .attr(libc::IFLA_NUM_TX_QUEUES, &queues)
            .attr(libc::IFLA_NUM_RX_QUEUES, &queues)
            .attr(libc::IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes())
            .end()
            .end()
            .end();
        self.request(&format!("create veth {name} (peer {peer})"), msg).map(drop)
    }

    /// The index of the link called `name` in this socket's namespace.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        let msg = Message::new(RTM_GETLINK, 0).ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0).attr_str(libc::IFLA_IFNAME, name);
        let replies = self.request(&format!("get link {name}"), msg)?;
        replies
            .iter()
            .find_map(|p| link_state(p).map(|s| s.index))
            .ok_or_else(|| Error::new(&format!("get link {name}"), io::Error::new(io::ErrorKind::InvalidData, "no link in the reply")))
    }

    /// Sets the interface flags in `change` to their values in `flags` (`IFF_UP`, `IFF_NOARP`).
    pub fn set_flags(&mut self, index: u32, flags: u32, change: u32) -> Result<()> {
        let msg = Message::new(libc::RTM_NEWLINK, 0).ifinfomsg(libc::AF_UNSPEC as u8, index as i32, flags, change);
        self.request(&format!("set flags {flags:#x}/{change:#x} on link {index}"), msg).map(drop)
    }

    /// Turns off IPv6 address generation on a link: no link-local address, and with it no
    /// duplicate address detection and no router solicitation from the link.
    pub fn no_ipv6_autoconf(&mut self, index: u32) -> Result<()> {
        let msg = Message::new(libc::RTM_NEWLINK, 0)
            .ifinfomsg(libc::AF_UNSPEC as u8, index as i32, 0, 0)
            .begin(libc::IFLA_AF_SPEC)
            .begin(libc::AF_INET6 as u16)
            .attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE])
            .end()
            .end();
        self.request(&format!("addrgenmode none on link {index}"), msg).map(drop)
    }

    /// Assigns `addr/prefix_len` to a link. IPv6 addresses are added with `IFA_F_NODAD`: usable
    /// at once, with no duplicate address detection to wait for.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let (family, bytes, flags) = match addr {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 0),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), libc::IFA_F_NODAD as u8),
        };
        let msg = Message::new(libc::RTM_NEWADDR, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16)
            .ifaddrmsg(family, prefix_len, flags, index)
            .attr(libc::IFA_LOCAL, &bytes)
            .attr(libc::IFA_ADDRESS, &bytes);
        self.request(&format!("add address {addr}/{prefix_len} to link {index}"), msg).map(drop)
    }

    /// Deletes a link (for a veth end, the peer goes with it).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let msg = Message::new(libc::RTM_DELLINK, 0).ifinfomsg(libc::AF_UNSPEC as u8, index as i32, 0, 0);
        self.request(&format!("delete link {index}"), msg).map(drop)
    }

    /// The link's state as the kernel reports it now (the tests read flags and names with it).
    #[cfg(test)]
    pub fn link(&mut self, index: u32) -> Result<LinkState> {
        let msg = Message::new(RTM_GETLINK, 0).ifinfomsg(libc::AF_UNSPEC as u8, index as i32, 0, 0);
        let replies = self.request(&format!("get link {index}"), msg)?;
        replies
            .iter()
            .find_map(|p| link_state(p))
            .ok_or_else(|| Error::new(&format!("get link {index}"), io::Error::new(io::ErrorKind::InvalidData, "no link in the reply")))
    }

    /// Waits until link `index` is operationally up. On a socket opened with `RTMGRP_LINK`:
    /// it asks for the link's state and then reads the answer and the notifications that follow
    /// it; the subscription predates the question, so a change between the two is not missed.
    ///
    /// The kernel sets a link's operstate in its linkwatch worker, after `IFF_UP` and the
    /// carrier, and in the same step gives the link its qdisc; until then the link drops what
    /// is sent over it, so this, not the ACK of `IFF_UP`, is when it is ready for traffic.
    pub fn wait_oper_up(&mut self, index: u32, timeout: Duration) -> Result<()> {
        let what = format!("wait for link {index} to be up");
        let msg = Message::new(RTM_GETLINK, 0).ifinfomsg(libc::AF_UNSPEC as u8, index as i32, 0, 0);
        self.send(msg).map_err(|e| context(&what, e))?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 32 * 1024];
        let mut last = None;
        while Instant::now() < deadline {
            let n = match self.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                Err(e) => return Err(context(&what, e)),
            };
            for m in messages(&buf[..n]).map_err(|e| context(&what, e))? {
                if m.kind == libc::NLMSG_ERROR as u16 {
                    ack_result(&what, &m)?;
                    continue;
                }
                if m.kind != libc::RTM_NEWLINK {
                    continue;
                }
                if let Some(s) = link_state(m.payload).filter(|s| s.index == index) {
                    if s.operstate == Some(libc::IF_OPER_UP as u8) {
                        return Ok(());
                    }
                    last = Some(s);
                }
            }
        }
        Err(Error::new(&what, io::Error::new(io::ErrorKind::TimedOut, format!("not up within {timeout:?}; last state {last:?}"))))
    }
}

/// What an `RTM_NEWLINK` payload says about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub flags: u32,
    pub name: Option<String>,
    /// `IF_OPER_*` (RFC 2863): 6 is up.
    pub operstate: Option<u8>,
    /// The transmit and receive queues the link was made with (`IFLA_NUM_TX_QUEUES`,
    /// `IFLA_NUM_RX_QUEUES`).
    pub tx_queues: Option<u32>,
    pub rx_queues: Option<u32>,
}

/// Parses an `RTM_NEWLINK` payload: `ifinfomsg`, then attributes.
pub fn link_state(payload: &[u8]) -> Option<LinkState> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?) as u32;
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let mut state = LinkState { index, flags, name: None, operstate: None, tx_queues: None, rx_queues: None };
    let u32_of = |v: &[u8]| v.get(0..4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
    for (kind, value) in attrs(&payload[IFINFOMSG_LEN..]) {
        match kind {
            libc::IFLA_IFNAME => state.name = CStr::from_bytes_until_nul(value).ok().map(|s| s.to_string_lossy().into_owned()),
            libc::IFLA_OPERSTATE => state.operstate = value.first().copied(),
            libc::IFLA_NUM_TX_QUEUES => state.tx_queues = u32_of(value),
            libc::IFLA_NUM_RX_QUEUES => state.rx_queues = u32_of(value),
            _ => {}
        }
    }
    Some(state)
}

/// A network namespace, held open by its fd: it lives as long as this value (or anything still
/// inside it). Network namespaces are per thread, so the agent enters one only on short-lived
/// threads ([`run`](Self::run)) and every other thread stays where it was.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// A new, empty network namespace (only a down `lo`), made on a thread of its own.
    pub fn new() -> Result<Self> {
        std::thread::spawn(|| {
            // SAFETY: unshare takes flags; CLONE_NEWNET moves only the calling thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(context("unshare(CLONE_NEWNET)", io::Error::last_os_error()));
            }
            let file = File::open("/proc/thread-self/ns/net").map_err(|e| context("open /proc/thread-self/ns/net", e))?;
            Ok(Self { fd: file.into() })
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// The namespace the calling thread is in (the tests compare namespaces with it).
    #[cfg(test)]
    pub fn current() -> Result<Self> {
        let file = File::open("/proc/thread-self/ns/net").map_err(|e| context("open /proc/thread-self/ns/net", e))?;
        Ok(Self { fd: file.into() })
    }

    /// Runs `f` on a thread inside this namespace and returns its result. What `f` creates there
    /// (sockets, netlink sockets, attached programs) keeps the namespace wherever it is used.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: fd is a network namespace fd; setns moves only this thread.
                if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(context("setns(CLONE_NEWNET)", io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The inode that identifies this namespace.
    #[cfg(test)]
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(File::from(self.fd.try_clone()?).metadata()?.ino())
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};

    use super::*;

    #[test]
    fn requests_have_the_kernel_layout() {
        let bytes = Message::new(libc::RTM_NEWLINK, libc::NLM_F_CREATE as u16)
            .ifinfomsg(0, 7, libc::IFF_UP as u32, libc::IFF_UP as u32)
            .attr_str(libc::IFLA_IFNAME, "ab")
            .begin(libc::IFLA_LINKINFO)
            .attr(libc::IFLA_INFO_KIND, b"x")
            .end()
            .finish(9);
        // nlmsghdr 16 + ifinfomsg 16 + "ab\0" (4 + 3, padded to 8) + linkinfo (4 + 4 + 1 -> 12)
        assert_eq!(bytes.len(), 16 + 16 + 8 + 12);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), libc::RTM_NEWLINK);
        let flags = u16::from_ne_bytes(bytes[6..8].try_into().unwrap());
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        assert_eq!(i32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 7);
        let top = attrs(&bytes[32..]);
        assert_eq!(top[0], (libc::IFLA_IFNAME, &b"ab\0"[..]));
        assert_eq!(top[1].0, libc::IFLA_LINKINFO);
        // The nested attribute's length covers its children with their padding (as iproute2's
        // addattr_nest_end counts it), and its type carries NLA_F_NESTED.
        assert_eq!(u16::from_ne_bytes(bytes[40..42].try_into().unwrap()), 4 + 8);
        assert_ne!(u16::from_ne_bytes(bytes[42..44].try_into().unwrap()) & NLA_F_NESTED, 0);
        assert_eq!(attrs(top[1].1), vec![(libc::IFLA_INFO_KIND, &b"x"[..])]);
    }

    #[test]
    fn acks_and_errors_decode() {
        let reply = |flags: u16, payload: &'static [u8]| Reply { kind: libc::NLMSG_ERROR as u16, flags, seq: 1, payload };
        assert!(ack_result("x", &reply(0, &[0, 0, 0, 0])).is_ok());
        let mut nack = (-libc::EOPNOTSUPP).to_ne_bytes().to_vec();
        nack.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        let text = b"Unknown device type\0";
        nack.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        nack.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        nack.extend_from_slice(text);
        let nack: &'static [u8] = Vec::leak(nack);
        let e = ack_result("create veth a", &reply(libc::NLM_F_ACK_TLVS as u16, nack)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP), "{e}");
        assert!(e.to_string().starts_with("create veth a: ") && e.to_string().ends_with("(Unknown device type)"), "{e}");
        // Without NLM_F_ACK_TLVS what follows the code is the echoed request, not text.
        let e = ack_result("x", &reply(0, nack)).unwrap_err();
        assert!(!e.to_string().contains("Unknown"), "{e}");
        assert!(ack_result("x", &reply(0, &[1, 2])).is_err());
    }

    fn skip_unless_root(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP {test}: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to make namespaces and links");
            return true;
        }
        false
    }

    /// The whole path the scenarios take, on the running kernel: a namespace, a veth pair across
    /// it, addresses, readiness, a TCP connection over each family, and nothing left behind.
    #[test]
    fn veth_pair_across_a_namespace_carries_tcp_and_is_cleaned_up() {
        if skip_unless_root("veth_pair_across_a_namespace_carries_tcp_and_is_cleaned_up") {
            return;
        }
        let ns = NetNs::new().expect("new namespace");
        let here = NetNs::current().expect("current namespace");
        assert_ne!(ns.inode().unwrap(), here.inode().unwrap(), "the new namespace is another one");
        let root_if = format!("tnlt{}", std::process::id());
        let mac = [0x02, 0x74, 0x6e, 0x6c, 0x00, 0x01];
        let mut root = Netlink::open().expect("netlink");
        let mut events = Netlink::open_groups(libc::RTMGRP_LINK as u32).expect("netlink events");
        root.create_veth(&root_if, "peer0", ns.as_fd(), mac).expect("create veth");
        // From here on, a panic must still delete the pair: the guard does it.
        struct Guard(String);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Ok(mut nl) = Netlink::open() {
                    if let Ok(i) = nl.link_index(&self.0) {
                        let _ = nl.delete_link(i);
                    }
                }
            }
        }
        let guard = Guard(root_if.clone());
        let root_index = root.link_index(&root_if).expect("root end index");
        let (mut inside, mut inside_events, ns_index) = ns
            .run(|| {
                let mut nl = Netlink::open().expect("netlink in the namespace");
                let ev = Netlink::open_groups(libc::RTMGRP_LINK as u32).expect("netlink events in the namespace");
                let i = nl.link_index("peer0").expect("the peer is in the namespace");
                (nl, ev, i)
            })
            .expect("enter the namespace");
        assert!(root.link_index("peer0").is_err(), "the peer is not in the root namespace");
        let noarp_up = (libc::IFF_UP | libc::IFF_NOARP) as u32;
        for (nl, i) in [(&mut root, root_index), (&mut inside, ns_index)] {
            nl.no_ipv6_autoconf(i).expect("addrgenmode none");
            nl.set_flags(i, noarp_up, noarp_up).expect("up");
        }
        events.wait_oper_up(root_index, Duration::from_secs(5)).expect("root end up");
        inside_events.wait_oper_up(ns_index, Duration::from_secs(5)).expect("namespace end up");
        let state = root.link(root_index).unwrap();
        assert_eq!(state.name.as_deref(), Some(root_if.as_str()));
        assert_ne!(state.flags & libc::IFF_NOARP as u32, 0, "{state:?}");
        // One queue of each kind on both ends, whatever the number of CPUs: as the kernel reports
        // them over netlink, and for the root end as sysfs (which shows the mounter's namespace
        // only) lists them.
        let peer = inside.link(ns_index).unwrap();
        for s in [&state, &peer] {
            assert_eq!((s.tx_queues, s.rx_queues), (Some(VETH_QUEUES), Some(VETH_QUEUES)), "{s:?}");
        }
        let sysfs = format!("/sys/class/net/{root_if}/queues");
        let mut queues: Vec<String> = std::fs::read_dir(&sysfs)
            .unwrap_or_else(|e| panic!("read {sysfs}: {e}"))
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        queues.sort();
        assert_eq!(queues, ["rx-0", "tx-0"], "{sysfs}");
        let pairs: [(IpAddr, IpAddr, u8); 2] = [
            (Ipv4Addr::new(198, 18, 99, 1).into(), Ipv4Addr::new(198, 18, 99, 2).into(), 24),
            ("2001:2:0:99::1".parse::<Ipv6Addr>().unwrap().into(), "2001:2:0:99::2".parse::<Ipv6Addr>().unwrap().into(), 64),
        ];
        for (a, b, len) in pairs {
            root.add_address(root_index, a, len).expect("root address");
            inside.add_address(ns_index, b, len).expect("namespace address");
            let err = inside.add_address(ns_index, b, len).expect_err("the same address twice");
            assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
            let listener = ns.run(|| TcpListener::bind(SocketAddr::new(b, 0))).unwrap().expect("bind in the namespace");
            let mut client = TcpStream::connect_timeout(&listener.local_addr().unwrap(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {a} -> {b}: {e}"));
            let (mut conn, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), a, "the client comes from the root end's address");
            use std::io::{Read, Write};
            client.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            conn.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
        }
        root.delete_link(root_index).expect("delete the pair");
        std::mem::forget(guard);
        let err = root.link_index(&root_if).expect_err("the root end is gone");
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        let gone = inside.link_index("peer0");
        assert!(gone.is_err(), "deleting one end deletes the peer: {gone:?}");
    }

    #[test]
    fn an_unknown_link_kind_is_unsupported() {
        if skip_unless_root("an_unknown_link_kind_is_unsupported") {
            return;
        }
        let ns = NetNs::new().unwrap();
        let err = ns
            .run(|| {
                let mut nl = Netlink::open().unwrap();
                let msg = Message::new(libc::RTM_NEWLINK, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16)
                    .ifinfomsg(0, 0, 0, 0)
                    .attr_str(libc::IFLA_IFNAME, "x0")
                    .begin(libc::IFLA_LINKINFO)
                    .attr_str(libc::IFLA_INFO_KIND, "no-such-kind")
                    .end();
                nl.request("create x0", msg).unwrap_err()
            })
            .unwrap();
        assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
        assert!(err.to_string().starts_with("create x0: "), "{err}");
    }
}
