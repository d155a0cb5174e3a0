// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Count IPv4 TCP connect() attempts with a kprobe on tcp_v4_connect. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} connect_count SEC(".maps");

/* BPF_KPROBE maps args to pt_regs per __TARGET_ARCH_*, set by the Makefile. */
SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(trace_connect, struct sock *sk)
{
	__u32 zero = 0;
	__u64 *cnt;

	if (!sk)
		return 0;
	cnt = bpf_map_lookup_elem(&connect_count, &zero);
	if (cnt)
		(*cnt)++;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
