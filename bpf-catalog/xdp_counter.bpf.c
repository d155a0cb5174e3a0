// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Count packets and bytes per IP protocol at the XDP hook. */
/* Only UAPI/wire-format structs are read (xdp_md, packet headers): their
 * layout is fixed, so skip CO-RE relocations and load without kernel BTF. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_counter.h"

/* Build-time revision; an upgrade test builds with -DXDP_COUNTER_REVISION=2. */
#ifndef XDP_COUNTER_REVISION
#define XDP_COUNTER_REVISION 1
#endif

/* UAPI macros are not part of BTF, so vmlinux.h lacks them. */
#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD
#define ETH_P_8021Q	0x8100
#define ETH_P_8021AD	0x88A8
#define XDP_MAX_VLAN_DEPTH 2

/* Count frames that are not IPv4/IPv6 (or too short to parse) under key 255. */
const volatile bool count_non_ip = true;
/* Which build is loaded; user space can read it back from .rodata. */
const volatile __u32 revision = XDP_COUNTER_REVISION;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_COUNTER_MAX_PROTO);
	__type(key, __u32);
	__type(value, struct pkt_stats);
} proto_stats SEC(".maps");

/* Returns the IP protocol number, or -1 for non-IP/truncated frames. */
static __always_inline int parse_l4_proto(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	void *cursor;
	__u16 h_proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return -1;
	h_proto = eth->h_proto;
	cursor = eth + 1;

	/* Peel up to two VLAN tags (QinQ) so tagged IP is not "non-IP". */
#pragma unroll
	for (i = 0; i < XDP_MAX_VLAN_DEPTH; i++) {
		struct vlan_hdr *vh = cursor;

		if (h_proto != bpf_htons(ETH_P_8021Q) &&
		    h_proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return -1;
		h_proto = vh->h_vlan_encapsulated_proto;
		cursor = vh + 1;
	}

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = cursor;

		if ((void *)(iph + 1) > data_end)
			return -1;
		return iph->protocol;
	}
	if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = cursor;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		/* First next-header only; extension headers are not walked. */
		return ip6h->nexthdr;
	}
	return -1;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt_stats *st;
	__u32 key;
	int proto;

	/* Never true for a real build; keeps revision referenced by the code.
	 * The verifier prunes it since .rodata is frozen at load. */
	if (revision == 0)
		return XDP_PASS;

	proto = parse_l4_proto(data, data_end);
	if (proto < 0) {
		if (!count_non_ip)
			return XDP_PASS;
		key = XDP_COUNTER_NON_IP_KEY;
	} else {
		key = proto & 0xff;
	}

	st = bpf_map_lookup_elem(&proto_stats, &key);
	if (st) {
		/* Per-CPU slot: plain increments are race-free. Linear part
		 * only; multi-buffer fragments are not included. */
		st->packets++;
		st->bytes += data_end - data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
