// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Count packets and bytes per direction for the sockets of a cgroup. */
/* Only the UAPI __sk_buff is read: fixed layout, so skip CO-RE relocations
 * and load without kernel BTF. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "tc_counter.h"

/* Same layout as tc_counter's dir_stats so user space reads both alike. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIR_MAX);
	__type(key, __u32);
	__type(value, struct pkt_stats);
} dir_stats SEC(".maps");

static __always_inline void count(struct __sk_buff *skb, __u32 dir)
{
	struct pkt_stats *st = bpf_map_lookup_elem(&dir_stats, &dir);

	/* At this hook skb->len starts at the IP header (no L2). */
	if (st) {
		st->packets++;
		st->bytes += skb->len;
	}
}

SEC("cgroup_skb/ingress")
int cgroup_ingress(struct __sk_buff *skb)
{
	count(skb, DIR_INGRESS);
	return 1; /* allow */
}

SEC("cgroup_skb/egress")
int cgroup_egress(struct __sk_buff *skb)
{
	count(skb, DIR_EGRESS);
	return 1; /* allow */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
