/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Shared between execsnoop.bpf.c and user space.
 * Include <linux/types.h> (or vmlinux.h on the BPF side) first.
 */
#ifndef __EXECSNOOP_H
#define __EXECSNOOP_H

#define EXECSNOOP_COMM_LEN	16
#define EXECSNOOP_FILENAME_LEN	128

/*
 * Ring buffer record, 156 bytes, 4-byte aligned, no padding anywhere:
 *
 *   offset  size  field
 *        0     4  pid       tgid of the process that exec'd
 *        4     4  ppid      tgid of its real parent
 *        8     4  uid
 *       12    16  comm      NUL-terminated, already the new image's name
 *       28   128  filename  NUL-terminated, truncated if longer
 *      156        (end)
 */
struct exec_event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	char comm[EXECSNOOP_COMM_LEN];
	char filename[EXECSNOOP_FILENAME_LEN];
};

#endif /* __EXECSNOOP_H */
