// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Emit one record per TCP connection when it closes: addresses, ports,
 * owner, lifetime and byte counts. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tcplife.h"

_Static_assert(sizeof(struct tcplife_event) == 96, "tcplife_event size");
_Static_assert(__builtin_offsetof(struct tcplife_event, pid) == 64, "pid offset");
_Static_assert(__builtin_offsetof(struct tcplife_event, comm) == 74, "comm offset");

/* socket.h macros, absent from vmlinux.h. */
#define AF_INET		2
#define AF_INET6	10

#define MAX_SOCKS	10240

/* 0 = any. Ports in host byte order, as the tracepoint reports them. */
const volatile __u16 target_sport = 0;
const volatile __u16 target_dport = 0;
const volatile __u16 target_family = 0;

/* Keyed by the struct sock pointer: unique while the socket lives. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} birth SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SOCKS);
	__type(key, __u64);
	__type(value, struct tcplife_ident);
} idents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline void record_ident(__u64 *key, __u64 flags)
{
	struct tcplife_ident id = {};

	id.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(id.comm, sizeof(id.comm));
	bpf_map_update_elem(&idents, key, &id, flags);
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sk = (__u64)ctx->skaddr;
	int newstate = ctx->newstate;
	struct tcplife_ident *id;
	struct tcplife_event *e;
	struct tcp_sock *tp;
	__u64 *start, now;
	__u16 family;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	family = ctx->family;
	if (target_family && family != target_family)
		return 0;

	if (newstate != TCP_CLOSE) {
		/* Births only for opening states, so listeners and sockets
		 * already closing when we attached are skipped. */
		if (newstate < TCP_FIN_WAIT1) {
			now = bpf_ktime_get_ns();
			bpf_map_update_elem(&birth, &sk, &now, BPF_NOEXIST);
			record_ident(&sk, BPF_NOEXIST);
		}
		/* These run in the owner's syscall context (connect, close);
		 * passive opens are born in softirq under a random task. */
		if (newstate == TCP_SYN_SENT || newstate == TCP_FIN_WAIT1 ||
		    newstate == TCP_LAST_ACK)
			record_ident(&sk, BPF_ANY);
		return 0;
	}

	start = bpf_map_lookup_elem(&birth, &sk);
	if (!start)
		goto cleanup;

	/* Ports are filtered only here: an active open's sport is still 0
	 * at SYN_SENT, so filtering at birth would lose it. */
	if (target_sport && ctx->sport != target_sport)
		goto cleanup;
	if (target_dport && ctx->dport != target_dport)
		goto cleanup;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		goto cleanup;
	/* Ring memory is not zeroed; clear so padding and unused address
	 * bytes are stable. */
	__builtin_memset(e, 0, sizeof(*e));

	now = bpf_ktime_get_ns();
	e->ts_us = now / 1000;
	e->span_us = (now - *start) / 1000;

	tp = (struct tcp_sock *)ctx->skaddr;
	e->rx_bytes = BPF_CORE_READ(tp, bytes_received);
	e->tx_bytes = BPF_CORE_READ(tp, bytes_acked);

	id = bpf_map_lookup_elem(&idents, &sk);
	if (id) {
		e->pid = id->pid;
		__builtin_memcpy(e->comm, id->comm, sizeof(e->comm));
	}

	e->sport = ctx->sport;
	e->dport = ctx->dport;
	e->family = family;
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	}
	bpf_ringbuf_submit(e, 0);

cleanup:
	bpf_map_delete_elem(&birth, &sk);
	bpf_map_delete_elem(&idents, &sk);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
