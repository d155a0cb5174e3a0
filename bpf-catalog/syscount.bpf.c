// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Count system calls by syscall number. */
/* Only the UAPI bpf_raw_tracepoint_args is read: fixed layout, so skip CO-RE
 * relocations and load without kernel BTF. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define MAX_SYSCALLS 512

/* 0 = every process; otherwise only this tgid (user-space "pid"). */
const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, __u64);
} syscall_counts SEC(".maps");

/* Raw tracepoint: no argument marshalling, cheapest per-syscall hook. */
SEC("raw_tracepoint/sys_enter")
int count_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	/* sys_enter(struct pt_regs *regs, long id) */
	__u64 id = ctx->args[1];
	__u32 key;
	__u64 *cnt;

	if (target_tgid && (bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	/* id is -1 for invalid syscalls; the bound also satisfies the verifier. */
	if (id >= MAX_SYSCALLS)
		return 0;

	key = id;
	cnt = bpf_map_lookup_elem(&syscall_counts, &key);
	if (cnt)
		(*cnt)++;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
