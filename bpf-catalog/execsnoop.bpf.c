// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Report every successful exec() with pid, ppid, uid, comm and filename. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "execsnoop.h"

/* Guard the documented layout: user space decodes by fixed offsets. */
_Static_assert(sizeof(struct exec_event) == 156, "exec_event size");
_Static_assert(__builtin_offsetof(struct exec_event, comm) == 12, "comm offset");
_Static_assert(__builtin_offsetof(struct exec_event, filename) == 28, "filename offset");

/* -1 = every uid; otherwise only execs by this uid. */
const volatile __s64 target_uid = -1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Execs that passed the filter; ring drops show up as count > events seen. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_count SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct task_struct *task;
	struct exec_event *e;
	__u32 zero = 0, off;
	__u64 *cnt;

	if (target_uid >= 0 && uid != (__u32)target_uid)
		return 0;

	/* Count before reserving so a full ring never hides an exec. */
	cnt = bpf_map_lookup_elem(&exec_count, &zero);
	if (cnt)
		(*cnt)++;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;

	task = (struct task_struct *)bpf_get_current_task();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = uid;
	/* comm was already switched to the new image's name by exec. */
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	/* __data_loc: low 16 bits = offset of the string from the record start. */
	off = ctx->__data_loc_filename & 0xFFFF;
	if (bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
				      (void *)ctx + off) < 0)
		e->filename[0] = '\0';

	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
