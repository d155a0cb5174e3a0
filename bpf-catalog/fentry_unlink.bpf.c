// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Count unlink()/unlinkat() calls via fentry (BPF trampoline). Needs the
 * BPF_PROG_TYPE_TRACING program type and kernel BTF, so it is the catalog's
 * probe for kernels built without trampoline support. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unlink_count SEC(".maps");

/* Arguments come typed from BTF; libbpf resolves do_unlinkat's BTF id at load. */
SEC("fentry/do_unlinkat")
int BPF_PROG(trace_unlink, int dfd, struct filename *name)
{
	__u32 zero = 0;
	__u64 *cnt;

	cnt = bpf_map_lookup_elem(&unlink_count, &zero);
	if (cnt)
		(*cnt)++;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
