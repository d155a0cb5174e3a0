// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Count packets and bytes per direction at the tc (tcx/clsact) hooks. */
/* Only the UAPI __sk_buff is read: fixed layout, so skip CO-RE relocations
 * and load without kernel BTF. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "tc_counter.h"

/* pkt_cls.h macro, absent from BTF-derived vmlinux.h. UNSPEC (not OK) lets
 * the next program in the tcx/clsact chain run and decide. */
#ifndef TC_ACT_UNSPEC
#define TC_ACT_UNSPEC (-1)
#endif

/* 0 = count every frame; else only frames with this EtherType (host order). */
const volatile __u16 only_ethertype = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIR_MAX);
	__type(key, __u32);
	__type(value, struct pkt_stats);
} dir_stats SEC(".maps");

static __always_inline void count(struct __sk_buff *skb, __u32 dir)
{
	struct pkt_stats *st;

	/* skb->protocol is the EtherType in network byte order. */
	if (only_ethertype && skb->protocol != bpf_htons(only_ethertype))
		return;

	st = bpf_map_lookup_elem(&dir_stats, &dir);
	if (st) {
		st->packets++;
		st->bytes += skb->len;
	}
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	count(skb, DIR_INGRESS);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	count(skb, DIR_EGRESS);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
