/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Shared between xdp_counter.bpf.c and user space.
 * Include <linux/types.h> (or vmlinux.h on the BPF side) first.
 */
#ifndef __XDP_COUNTER_H
#define __XDP_COUNTER_H

/* proto_stats has one slot per IP protocol number (0..255). */
#define XDP_COUNTER_MAX_PROTO	256
/* Slot used for non-IP and unparseable frames (collides with IANA's
 * reserved protocol 255, which never appears on the wire). */
#define XDP_COUNTER_NON_IP_KEY	255

#ifndef __BPFLEET_PKT_STATS
#define __BPFLEET_PKT_STATS
/* Per-CPU value; user space sums over CPUs. 16 bytes, no padding. */
struct pkt_stats {
	__u64 packets;
	__u64 bytes;
};
#endif

#endif /* __XDP_COUNTER_H */
