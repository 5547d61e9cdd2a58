//! Just enough rtnetlink for the veth scenarios (issue 7): a network namespace, a veth pair with
//! one end in it, addresses, link flags and state. The guest is a static `/init` with no shell,
//! no `ip` binary and no async runtime, so the messages are built and read with
//! netlink-packet-route (which carries every attribute used here: veth peers with their own
//! queue counts and namespace fd, `IFLA_AF_SPEC` / `AF_INET6` address generation mode,
//! `IFA_F_NODAD`, operstate) and sent over a blocking netlink-sys socket.
//!
//! Every change asks for an ACK and returns only once the kernel answered it, so when a call
//! returns the work is done: the link exists, the address is assigned and its prefix route is in
//! the table. The one step the kernel finishes later on its own is a link's readiness (carrier,
//! operstate and qdisc are set by the linkwatch worker after `IFF_UP`); [`Netlink::wait_oper_up`]
//! waits for the kernel's notification of it rather than for a guessed delay.
//!
//! One small helper is ours, [`kernel_says`]: netlink-packet-core keeps what follows the errno
//! of an `NLMSG_ERROR` as opaque bytes, and the extended ACK's text (`NLMSGERR_ATTR_MSG`,
//! include/uapi/linux/netlink.h) sits there, after the echoed request header.

use std::{
    ffi::CStr,
    fs::File,
    io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use netlink_packet_core::{
    ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CREATE,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage},
    link::{
        AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
        LinkMessage,
    },
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// `NLMSGERR_ATTR_MSG` (netlink.h): the extended ACK's text, when the kernel gives one.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `nlmsghdr`: the request header the kernel echoes (alone, with `NETLINK_CAP_ACK`) in an error.
const NLMSG_HDRLEN: usize = 16;
/// The transmit and receive queues each end of a veth pair gets (see [`Netlink::create_veth`]).
pub const VETH_QUEUES: u32 = 1;
/// No reply may take longer than this: a guard against a lost message, not a synchronisation.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The extended ACK's text in what follows the errno of an `NLMSG_ERROR` (`ErrorMessage::header`):
/// with `NETLINK_CAP_ACK` the echoed request is its header alone, and with `NLM_F_ACK_TLVS` on
/// the reply the attributes follow it.
pub fn kernel_says(reply_flags: u16, after_code: &[u8]) -> Option<String> {
    if reply_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    NlasIterator::new(after_code.get(NLMSG_HDRLEN..)?)
        .flatten()
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|nla| CStr::from_bytes_until_nul(nla.value()).ok().map(|s| s.to_string_lossy().into_owned()))
        .filter(|t| !t.is_empty())
}

/// What an `NLMSG_ERROR` says: Ok for an ACK, else the errno and the kernel's text.
pub fn ack_result(what: &str, reply_flags: u16, e: &ErrorMessage) -> Result<()> {
    if e.code.is_none() {
        return Ok(());
    }
    let mut err = Error::new(what, e.to_io());
    err.kernel_says = kernel_says(reply_flags, &e.header);
    Err(err)
}

/// Splits a datagram read from a netlink socket into its messages.
pub fn messages(buf: &[u8]) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("netlink message length {len} of {}", rest.len())));
        }
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink message: {e}")))?;
        out.push(m);
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(out)
}

/// The bytes of request `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and sequence `seq`.
pub fn request_bytes(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    m.finalize();
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

fn link_message(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// An rtnetlink socket. It acts in the network namespace of the thread that opened it, whatever
/// thread uses it later.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket for requests (no multicast groups).
    pub fn open() -> Result<Self> {
        Self::open_groups(0)
    }

    /// A socket that also hears the rtnetlink multicast `groups` (`RTMGRP_LINK`, ...).
    pub fn open_groups(groups: u32) -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| context("netlink socket", e))?;
        socket.bind(&SocketAddr::new(0, groups)).map_err(|e| context("netlink bind", e))?;
        // Kernels before 4.12 lack EXT_ACK: their errors then come without the text, so a
        // failure here is ignored.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let tv = libc::timeval { tv_sec: REPLY_TIMEOUT.as_secs() as _, tv_usec: 0 };
        // SAFETY: a timeval option of the right size on a socket we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Self { socket, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = request_bytes(msg, flags, self.seq);
        self.socket.send(&bytes, 0)?;
        Ok(self.seq)
    }

    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.clear();
        self.socket.recv(buf, 0).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, format!("no netlink reply within {REPLY_TIMEOUT:?}"))
            } else {
                e
            }
        })
    }

    /// Sends `msg` (with the extra header `flags`) and waits for its ACK; returns the messages
    /// that came before it (a GET's answer). `what` names the request in errors.
    pub fn request(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, flags).map_err(|e| context(what, e))?;
        let mut buf = Vec::with_capacity(32 * 1024);
        let mut replies = Vec::new();
        loop {
            self.recv(&mut buf).map_err(|e| context(what, e))?;
            for m in messages(&buf).map_err(|e| context(what, e))? {
                if m.header.sequence_number != seq {
                    continue; // a notification or an older request's leftover
                }
                match m.payload {
                    NetlinkPayload::Error(e) => return ack_result(what, m.header.flags, &e).map(|()| replies),
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
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
        let msg = veth_request(name, peer, peer_ns.as_raw_fd(), mac);
        self.request(&format!("create veth {name} (peer {peer})"), msg, NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// The index of the link called `name` in this socket's namespace.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        let mut m = link_message(0);
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = self.request(&format!("get link {name}"), RouteNetlinkMessage::GetLink(m), 0)?;
        replies
            .iter()
            .find_map(|r| link_state(r).map(|s| s.index))
            .ok_or_else(|| Error::new(&format!("get link {name}"), io::Error::new(io::ErrorKind::InvalidData, "no link in the reply")))
    }

    /// Sets the interface flags in `change` to their values in `flags` (`IFF_UP`, `IFF_NOARP`).
    pub fn set_flags(&mut self, index: u32, flags: u32, change: u32) -> Result<()> {
        let mut m = link_message(index);
        m.header.flags = LinkFlags::from_bits_retain(flags);
        m.header.change_mask = LinkFlags::from_bits_retain(change);
        self.request(&format!("set flags {flags:#x}/{change:#x} on link {index}"), RouteNetlinkMessage::NewLink(m), 0).map(drop)
    }

    /// Turns off IPv6 address generation on a link: no link-local address, and with it no
    /// duplicate address detection and no router solicitation from the link.
    pub fn no_ipv6_autoconf(&mut self, index: u32) -> Result<()> {
        let mut m = link_message(index);
        m.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)])]));
        self.request(&format!("addrgenmode none on link {index}"), RouteNetlinkMessage::NewLink(m), 0).map(drop)
    }

    /// Assigns `addr/prefix_len` to a link. IPv6 addresses are added with `IFA_F_NODAD`: usable
    /// at once, with no duplicate address detection to wait for.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = prefix_len;
        m.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => {
                m.header.flags = AddressHeaderFlags::Nodad;
                AddressFamily::Inet6
            }
        };
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        self.request(&format!("add address {addr}/{prefix_len} to link {index}"), RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Deletes a link (for a veth end, the peer goes with it).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        self.request(&format!("delete link {index}"), RouteNetlinkMessage::DelLink(link_message(index)), 0).map(drop)
    }

    /// The link's state as the kernel reports it now (the tests read flags and names with it).
    #[cfg(test)]
    pub fn link(&mut self, index: u32) -> Result<LinkState> {
        let replies = self.request(&format!("get link {index}"), RouteNetlinkMessage::GetLink(link_message(index)), 0)?;
        replies
            .iter()
            .find_map(link_state)
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
        self.send(RouteNetlinkMessage::GetLink(link_message(index)), 0).map_err(|e| context(&what, e))?;
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::with_capacity(32 * 1024);
        let mut last = None;
        while Instant::now() < deadline {
            match self.recv(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                Err(e) => return Err(context(&what, e)),
            }
            for m in messages(&buf).map_err(|e| context(&what, e))? {
                let inner = match m.payload {
                    NetlinkPayload::Error(e) => {
                        ack_result(&what, m.header.flags, &e)?;
                        continue;
                    }
                    NetlinkPayload::InnerMessage(inner @ RouteNetlinkMessage::NewLink(_)) => inner,
                    _ => continue,
                };
                if let Some(s) = link_state(&inner).filter(|s| s.index == index) {
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

/// `RTM_NEWLINK` of a veth pair (see [`Netlink::create_veth`]).
pub fn veth_request(name: &str, peer: &str, peer_ns_fd: i32, mac: [u8; 6]) -> RouteNetlinkMessage {
    let mut peer_msg = link_message(0);
    peer_msg.attributes = vec![
        LinkAttribute::IfName(peer.to_owned()),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::NumTxQueues(VETH_QUEUES),
        LinkAttribute::NumRxQueues(VETH_QUEUES),
        LinkAttribute::NetNsFd(peer_ns_fd),
    ];
    let mut m = link_message(0);
    m.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::NumTxQueues(VETH_QUEUES),
        LinkAttribute::NumRxQueues(VETH_QUEUES),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth), LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg)))]),
    ];
    RouteNetlinkMessage::NewLink(m)
}

/// What an `RTM_NEWLINK` says about a link.
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

/// Reads a link message (`RTM_NEWLINK`); None for any other message.
pub fn link_state(msg: &RouteNetlinkMessage) -> Option<LinkState> {
    let RouteNetlinkMessage::NewLink(link) = msg else { return None };
    let mut state =
        LinkState { index: link.header.index, flags: link.header.flags.bits(), name: None, operstate: None, tx_queues: None, rx_queues: None };
    for a in &link.attributes {
        match a {
            LinkAttribute::IfName(n) => state.name = Some(n.clone()),
            LinkAttribute::OperState(s) => state.operstate = Some(u8::from(*s)),
            LinkAttribute::NumTxQueues(n) => state.tx_queues = Some(*n),
            LinkAttribute::NumRxQueues(n) => state.rx_queues = Some(*n),
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
        let bytes = request_bytes(veth_request("ab", "cd", 7, [2, 0, 0, 0, 0, 1]), NLM_F_CREATE | NLM_F_EXCL, 9);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), libc::RTM_NEWLINK);
        let flags = u16::from_ne_bytes(bytes[6..8].try_into().unwrap());
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        // It reads back as it was built: the peer carries its own name, queues and namespace fd.
        let [m] = &messages(&bytes).unwrap()[..] else { panic!("one message") };
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = &m.payload else { panic!("{m:?}") };
        assert!(link.attributes.contains(&LinkAttribute::IfName("ab".into())));
        let peer = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(info) => info.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                _ => None,
            }),
            _ => None,
        });
        let peer = peer.expect("veth peer");
        for want in [LinkAttribute::IfName("cd".into()), LinkAttribute::NumTxQueues(VETH_QUEUES), LinkAttribute::NumRxQueues(VETH_QUEUES), LinkAttribute::NetNsFd(7)] {
            assert!(peer.attributes.contains(&want), "{want:?} in {peer:?}");
        }
    }

    #[test]
    fn acks_and_errors_decode() {
        let error = |code: i32, rest: &[u8]| {
            let mut payload = code.to_ne_bytes().to_vec();
            payload.extend_from_slice(rest);
            <ErrorMessage as netlink_packet_core::Parseable<_>>::parse(&netlink_packet_core::ErrorBuffer::new(&payload)).unwrap()
        };
        assert!(ack_result("x", 0, &error(0, &[0u8; NLMSG_HDRLEN])).is_ok());
        let mut rest = vec![0u8; NLMSG_HDRLEN];
        let text = b"Unknown device type\0";
        rest.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        rest.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        rest.extend_from_slice(text);
        let nack = error(-libc::EOPNOTSUPP, &rest);
        let e = ack_result("create veth a", NLM_F_ACK_TLVS, &nack).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP), "{e}");
        assert!(e.to_string().starts_with("create veth a: ") && e.to_string().ends_with("(Unknown device type)"), "{e}");
        // Without NLM_F_ACK_TLVS what follows the code is the echoed request, not text.
        let e = ack_result("x", 0, &nack).unwrap_err();
        assert!(!e.to_string().contains("Unknown"), "{e}");
        assert!(messages(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]).is_err());
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
                let mut m = link_message(0);
                m.attributes = vec![
                    LinkAttribute::IfName("x0".into()),
                    LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Other("no-such-kind".into()))]),
                ];
                let msg = RouteNetlinkMessage::NewLink(m);
                nl.request("create x0", msg, NLM_F_CREATE | NLM_F_EXCL).unwrap_err()
            })
            .unwrap();
        assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
        assert!(err.to_string().starts_with("create x0: "), "{err}");
    }
}
