/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Shared between tc_counter.bpf.c, cgroup_counter.bpf.c and user space.
 * Include <linux/types.h> (or vmlinux.h on the BPF side) first.
 */
#ifndef __TC_COUNTER_H
#define __TC_COUNTER_H

/* Keys of the dir_stats map. */
enum pkt_dir {
	DIR_INGRESS = 0,
	DIR_EGRESS = 1,
	DIR_MAX = 2,
};

#ifndef __BPFLEET_PKT_STATS
#define __BPFLEET_PKT_STATS
/* Per-CPU value; user space sums over CPUs. 16 bytes, no padding. */
struct pkt_stats {
	__u64 packets;
	__u64 bytes;
};
#endif

#endif /* __TC_COUNTER_H */
