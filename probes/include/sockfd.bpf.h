/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * From a syscall's arguments to a connection tuple, shared by the dns and network probes: the
 * socket behind an fd of the current task (walked through current->files with CO-RE), and the peer
 * an unconnected socket's syscall names in its user sockaddr. Include after the libbpf headers and
 * sock.bpf.h.
 *
 * The user-space structs below are the LP64 syscall ABI, read with bpf_probe_read_user (5.5). They
 * are not kernel types, so they are not CO-RE relocated: their layout is fixed by the ABI.
 */
#ifndef __TAPIO_SOCKFD_BPF_H__
#define __TAPIO_SOCKFD_BPF_H__

#include "sock.h"

/* Kernel constants (include/linux/net.h, include/uapi/linux/stat.h, include/uapi/linux/in.h). */
#define TAPIO_SOCK_STREAM 1
#define TAPIO_SOCK_DGRAM 2
#define TAPIO_S_IFMT 00170000
#define TAPIO_S_IFSOCK 0140000
#define TAPIO_IPPROTO_UDP 17

struct tapio_user_iovec {
	__u64 base;
	__u64 len;
};

struct tapio_user_msghdr {
	__u64 name;
	__u32 namelen;
	__u32 _pad0;
	__u64 iov;
	__u64 iovlen;
	__u64 control;
	__u64 controllen;
	__u32 flags;
	__u32 _pad1;
};
_Static_assert(sizeof(struct tapio_user_msghdr) == 56, "msghdr ABI");

/* struct mmsghdr: a msghdr and the kernel-written length, padded to 64 bytes. */
#define TAPIO_USER_MMSGHDR_SIZE 64

/* sockaddr_in and sockaddr_in6 share family and port; v4 address or v6 flowinfo follows. */
struct tapio_user_sockaddr {
	__u16 family;
	__be16 port;
	__u32 v4;       /* sockaddr_in.sin_addr, or sockaddr_in6.sin6_flowinfo */
	__u8 v6[16];    /* sockaddr_in6.sin6_addr */
};

/*
 * The socket behind `fd` of the current task, as a flow; `*skp` gets the socket. Returns 0 unless
 * it is an AF_INET or AF_INET6 stream or datagram socket. The fd is checked against the table's
 * max_fds before the slot is read, so a stale or hostile fd number reads nothing.
 */
static __always_inline int tapio_flow_sock_of_fd(__u64 fd, struct tapio_flow *f, struct sock **skp)
{
	struct task_struct___sockfd *task = (void *)bpf_get_current_task();
	struct files_struct *files;
	struct fdtable *fdt;
	struct file **fds, *file = NULL;
	struct inode *inode;
	struct socket *sock;
	struct sock *sk;
	short type;

	if (!task)
		return 0;
	files = BPF_CORE_READ(task, files);
	if (!files)
		return 0;
	fdt = BPF_CORE_READ(files, fdt);
	if (!fdt)
		return 0;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (!fds)
		return 0;
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	inode = BPF_CORE_READ(file, f_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & TAPIO_S_IFMT) != TAPIO_S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	type = BPF_CORE_READ(sock, type);
	if (type != TAPIO_SOCK_STREAM && type != TAPIO_SOCK_DGRAM)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	*skp = sk;
	return tapio_read_flow(f, sk, type == TAPIO_SOCK_STREAM ? TAPIO_IPPROTO_TCP : TAPIO_IPPROTO_UDP);
}

/* The socket behind `fd` of the current task, as a flow (see tapio_flow_sock_of_fd). */
static __always_inline int tapio_flow_of_fd(__u64 fd, struct tapio_flow *f)
{
	struct sock *sk = NULL;

	return tapio_flow_sock_of_fd(fd, f, &sk);
}

/* An unconnected socket has no peer: take it from the sockaddr the syscall carries. */
static __always_inline void tapio_peer_from_sockaddr(struct tapio_flow *f, __u64 uaddr)
{
	struct tapio_user_sockaddr sa = {};

	if (!uaddr || f->dport != 0)
		return;
	/* sockaddr_in is 16 bytes: read that much first, the v6 address only for AF_INET6. */
	if (bpf_probe_read_user(&sa, 8, (void *)uaddr))
		return;
	if (sa.family == TAPIO_AF_INET && f->ip_version == 4) {
		f->daddr.v4 = sa.v4;
	} else if (sa.family == TAPIO_AF_INET6 && f->ip_version == 6) {
		if (bpf_probe_read_user(f->daddr.v6, sizeof(f->daddr.v6), (void *)(uaddr + 8)))
			return;
	} else {
		return;
	}
	f->dport = bpf_ntohs(sa.port);
}

#endif /* __TAPIO_SOCKFD_BPF_H__ */
