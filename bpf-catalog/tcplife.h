/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Shared between tcplife.bpf.c and user space.
 * Include <linux/types.h> (or vmlinux.h on the BPF side) first.
 */
#ifndef __TCPLIFE_H
#define __TCPLIFE_H

#define TCPLIFE_COMM_LEN	16

/* Who owned the socket; value of the idents map. */
struct tcplife_ident {
	__u32 pid;
	char comm[TCPLIFE_COMM_LEN];
};

/*
 * Ring buffer record, 96 bytes, 8-byte aligned. The only padding is the
 * explicit tail, so the offsets equal the natural C/ctypes layout:
 *
 *   offset  size  field
 *        0    16  saddr     IPv4: first 4 bytes, rest zero; IPv6: all 16
 *       16    16  daddr     same, network byte order
 *       32     8  ts_us     bpf_ktime_get_ns()/1000 at close (CLOCK_MONOTONIC)
 *       40     8  span_us   lifetime from first state change to TCP_CLOSE
 *       48     8  rx_bytes  tcp_sock.bytes_received
 *       56     8  tx_bytes  tcp_sock.bytes_acked
 *       64     4  pid       tgid recorded in process context (see .bpf.c)
 *       68     2  sport     host byte order
 *       70     2  dport     host byte order
 *       72     2  family    AF_INET (2) or AF_INET6 (10)
 *       74    16  comm      NUL-terminated
 *       90     6  __pad     always zero
 *       96        (end)
 */
struct tcplife_event {
	__u8 saddr[16];
	__u8 daddr[16];
	__u64 ts_us;
	__u64 span_us;
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u32 pid;
	__u16 sport;
	__u16 dport;
	__u16 family;
	char comm[TCPLIFE_COMM_LEN];
	__u8 __pad[6];
};

#endif /* __TCPLIFE_H */
