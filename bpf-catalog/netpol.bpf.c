// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Kubernetes NetworkPolicy enforcement at the host side of each endpoint's veth.
 *
 * tc ingress on the host-side veth sees what the pod sends (its egress), tc egress
 * what it receives (its ingress). Both hooks run the same decision: a new flow must
 * be allowed by the source's egress rules when the source is a local endpoint AND by
 * the destination's ingress rules when the destination is one. Allowed flows enter
 * an LRU connection table, so replies and the rest of the flow pass on one lookup;
 * each flow is decided once, at the first hook it meets.
 *
 * The rules live in one LPM trie per rule set (layout in netpol.h). Two rule sets are
 * installed, one per slot of rule_sets; active_slot says which one decides. User space
 * fills the idle slot, flips active_slot with one write, and waits an RCU grace period
 * before it touches the slot it left; every packet reads active_slot exactly once.
 */
/* Only UAPI __sk_buff fields and packet bytes are read: no CO-RE relocations needed. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "netpol.h"

#ifndef TC_ACT_SHOT
#define TC_ACT_SHOT 2
#endif
/* Allowed traffic goes on to the next program of the tcx chain (TCX_NEXT), so a
 * policy never overrides what another program decides after it. */
#ifndef TC_ACT_UNSPEC
#define TC_ACT_UNSPEC (-1)
#endif

#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)
#define IP_OFFSET_MASK 0x1fff
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define IPPROTO_ICMPV6_NR 58
#define NDP_FIRST_TYPE 133 /* router solicitation .. redirect: the link needs them */
#define NDP_LAST_TYPE 137

/* Idle time after which a tracked flow is decided again. TCP flows are also decided
 * again on every SYN, so a reused port pair never inherits an old verdict. */
const volatile __u64 tcp_idle_timeout_s = 7200;
const volatile __u64 other_idle_timeout_s = 60;

struct rule_trie {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* a template: every rule set is sized by user space */
	/* Sizes, not __type(): clang emits only a forward declaration for a type reached
	 * through the outer map's pointers, and libbpf cannot size that. Rule sets are
	 * created from user space without BTF anyway. */
	__uint(key_size, sizeof(struct netpol_key));
	__uint(value_size, sizeof(struct netpol_value));
};

/* Which slot of rule_sets is in force: 0 or 1. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct rule_trie);
} rule_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct netpol_flow);
	__type(value, struct netpol_flow_state);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NETPOL_VERDICT_MAX);
	__type(key, __u32);
	__type(value, struct pkt_stats);
} verdict_stats SEC(".maps");

/* Flows allowed per rule, keyed by the rule's stable key (a hash of policy, direction
 * and index), so the counts survive rule-set swaps. A flow is credited to one rule per
 * view: the first, in policy order, that allows it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} rule_stats SEC(".maps");

/* What the policies of one endpoint denied (packets) or would deny in audit (flows). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct netpol_deny);
	__type(value, __u64);
} deny_stats SEC(".maps");

struct packet {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 tcp_flags;
	__u32 tcp_seq;
};

static __always_inline void count(__u32 verdict, struct __sk_buff *skb)
{
	struct pkt_stats *stats = bpf_map_lookup_elem(&verdict_stats, &verdict);

	if (stats) {
		stats->packets++;
		stats->bytes += skb->len;
	}
}

static __always_inline void add_one(void *map, const void *key)
{
	__u64 one = 1, *counter = bpf_map_lookup_elem(map, key);

	if (counter)
		(*counter)++;
	else
		bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
}

static __always_inline void count_rule(__u64 rule)
{
	if (rule)
		add_one(&rule_stats, &rule);
}

static __always_inline void count_deny(__u64 key, __u32 kind)
{
	struct netpol_deny deny = { .key = key, .kind = kind };

	if (key)
		add_one(&deny_stats, &deny);
}

static __always_inline void map_ipv4(__u8 *out, __be32 address)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &address, 4);
}

/* Fill ports and TCP flags from the L4 header at offset; 0 if absent or unreadable. */
static __always_inline void read_ports(struct __sk_buff *skb, __u32 offset, struct packet *pkt)
{
	__be16 ports[2];
	__u8 flags;

	if (pkt->protocol != IPPROTO_TCP && pkt->protocol != IPPROTO_UDP &&
	    pkt->protocol != IPPROTO_SCTP)
		return;
	if (bpf_skb_load_bytes(skb, offset, ports, sizeof(ports)) < 0)
		return;
	pkt->sport = ports[0];
	pkt->dport = ports[1];
	if (pkt->protocol != IPPROTO_TCP)
		return;
	if (bpf_skb_load_bytes(skb, offset + 13, &flags, 1) == 0)
		pkt->tcp_flags = flags;
	bpf_skb_load_bytes(skb, offset + 4, &pkt->tcp_seq, sizeof(pkt->tcp_seq));
}

/* 1: an IP packet to decide; 0: pass it without a look. */
static __always_inline int parse(struct __sk_buff *skb, struct packet *pkt)
{
	__u32 l3 = sizeof(struct ethhdr);

	if (skb->protocol == ETH_P_IP_BE) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)) < 0)
			return 0;
		map_ipv4(pkt->saddr, ip.saddr);
		map_ipv4(pkt->daddr, ip.daddr);
		pkt->protocol = ip.protocol;
		/* A later fragment carries no ports; its first fragment was decided. */
		if (ip.frag_off & bpf_htons(IP_OFFSET_MASK))
			return 0;
		read_ports(skb, l3 + ip.ihl * 4, pkt);
		return 1;
	}
	if (skb->protocol == ETH_P_IPV6_BE) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, l3, &ip6, sizeof(ip6)) < 0)
			return 0;
		__builtin_memcpy(pkt->saddr, &ip6.saddr, 16);
		__builtin_memcpy(pkt->daddr, &ip6.daddr, 16);
		pkt->protocol = ip6.nexthdr; /* extension headers are not followed */
		if (pkt->protocol == IPPROTO_ICMPV6_NR) {
			__u8 type;

			if (bpf_skb_load_bytes(skb, l3 + sizeof(ip6), &type, 1) == 0 &&
			    type >= NDP_FIRST_TYPE && type <= NDP_LAST_TYPE)
				return 0;
		}
		read_ports(skb, l3 + sizeof(ip6), pkt);
		return 1;
	}
	return 0;
}

static __always_inline void flow_of(const struct packet *pkt, struct netpol_flow *flow)
{
	int source_first = 0;

	/* Order the two ends by (address, port) so both directions share one key. */
	for (int i = 0; i < 16; i++) {
		if (pkt->saddr[i] != pkt->daddr[i]) {
			source_first = pkt->saddr[i] < pkt->daddr[i];
			goto ordered;
		}
	}
	source_first = bpf_ntohs(pkt->sport) <= bpf_ntohs(pkt->dport);
ordered:
	__builtin_memset(flow, 0, sizeof(*flow));
	if (source_first) {
		__builtin_memcpy(flow->addr_lo, pkt->saddr, 16);
		__builtin_memcpy(flow->addr_hi, pkt->daddr, 16);
		flow->port_lo = pkt->sport;
		flow->port_hi = pkt->dport;
	} else {
		__builtin_memcpy(flow->addr_lo, pkt->daddr, 16);
		__builtin_memcpy(flow->addr_hi, pkt->saddr, 16);
		flow->port_lo = pkt->dport;
		flow->port_hi = pkt->sport;
	}
	flow->protocol = pkt->protocol;
}

static __always_inline struct netpol_value *find_endpoint(void *rules, const __u8 *addr)
{
	struct netpol_key key = {
		.prefixlen = NETPOL_FULL_ADDR_PREFIX,
		.table = NETPOL_TABLE_ENDPOINT,
	};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(rules, &key);
}

/* Does this endpoint's rule view for this direction allow the packet's peer (the
 * destination for egress, the source for ingress) and port? *rule gets the credited
 * rule's key. Not inlined: four copies of its key would overflow the 512-byte stack
 * (and BPF calls take five arguments, hence direction and view packed in one). */
static __noinline int allows(void *rules, __u32 endpoint, __u32 direction_view,
			     const struct packet *pkt, __u64 *rule)
{
	__u8 direction = direction_view & 0xff;
	struct netpol_key key = {
		.prefixlen = NETPOL_FULL_ADDR_PREFIX,
		.table = NETPOL_TABLE_PEER,
		.view = direction_view >> 8,
		.direction = direction,
		.endpoint = endpoint,
	};
	struct netpol_value *found;
	__u32 peer_class, grouped;
	__u64 credited;

	__builtin_memcpy(key.addr, direction == NETPOL_EGRESS ? pkt->daddr : pkt->saddr, 16);
	found = bpf_map_lookup_elem(rules, &key);
	if (!found || found->id == NETPOL_NO_CLASS)
		return 0;
	peer_class = found->id;
	grouped = found->flags & NETPOL_PEER_GROUP;
	credited = found->key;

	__builtin_memset(key.addr, 0, 16);
	key.prefixlen = NETPOL_FULL_PORT_PREFIX;
	if (grouped) {
		/* One rule: its port list is shared, outside this endpoint's scope. */
		key.table = NETPOL_TABLE_PORT_GROUP;
		key.view = 0;
		key.direction = 0;
		key.endpoint = 0;
	} else {
		key.table = NETPOL_TABLE_PORT;
	}
	key.peer_class = peer_class;
	key.protocol = pkt->protocol;
	key.port = pkt->dport;
	found = bpf_map_lookup_elem(rules, &key);
	if (!found)
		return 0;
	*rule = grouped ? credited : found->key;
	return 1;
}

struct decision {
	__u32 denied_by;    /* 0, or the NETPOL_DENIED_* verdict */
	__u32 deny_kind;    /* NETPOL_DENY_*: which side denied */
	__u64 deny_key;     /* the deny key of the endpoint whose policies denied */
	__u32 audit_denied; /* the audit view denies what the enforce view allows */
	__u32 audit_kind;
	__u64 audit_key;
	/* Credited rules: enforce ingress, enforce egress, audit ingress, audit egress (an
	 * audit rule only when it is not the rule the enforce view credited). */
	__u64 rules[4];
};

/* Decide one direction of one endpoint, in both views. */
static __always_inline void decide_side(void *rules, const struct netpol_value *endpoint,
					__u8 direction, const struct packet *pkt,
					struct decision *out)
{
	__u32 isolated = direction == NETPOL_EGRESS ? NETPOL_EGRESS_ISOLATED
						    : NETPOL_INGRESS_ISOLATED;
	__u32 audit_isolated = direction == NETPOL_EGRESS ? NETPOL_AUDIT_EGRESS_ISOLATED
							  : NETPOL_AUDIT_INGRESS_ISOLATED;
	__u32 audit_differs = direction == NETPOL_EGRESS ? NETPOL_AUDIT_EGRESS_DIFFERS
							 : NETPOL_AUDIT_INGRESS_DIFFERS;
	__u32 flags = endpoint->flags, id = endpoint->id;
	__u64 deny_key = endpoint->key, rule = 0, audit_rule = 0;

	if ((flags & isolated) &&
	    !allows(rules, id, direction | NETPOL_VIEW_ENFORCE << 8, pkt, &rule)) {
		if (!out->denied_by) {
			out->denied_by = direction == NETPOL_EGRESS ? NETPOL_DENIED_EGRESS
								    : NETPOL_DENIED_INGRESS;
			out->deny_kind = direction;
			out->deny_key = deny_key;
		}
		return;
	}
	out->rules[direction & 1] = rule;
	if (!(flags & audit_differs) || !(flags & audit_isolated))
		return;
	if (!allows(rules, id, direction | NETPOL_VIEW_AUDIT << 8, pkt, &audit_rule)) {
		if (!out->audit_denied) {
			out->audit_denied = 1;
			out->audit_kind = NETPOL_AUDIT_DENY_INGRESS + direction;
			out->audit_key = deny_key;
		}
		return;
	}
	if (audit_rule != rule)
		out->rules[2 + (direction & 1)] = audit_rule;
}

static __noinline void decide(const struct packet *pkt, struct decision *out)
{
	__u32 zero = 0, slot, *active;
	struct netpol_value *source, *destination;
	void *rules;

	/* The one read of the active slot: everything below uses that slot's trie. */
	active = bpf_map_lookup_elem(&active_slot, &zero);
	if (!active)
		return;
	slot = *(volatile __u32 *)active;
	rules = bpf_map_lookup_elem(&rule_sets, &slot);
	if (!rules)
		return; /* no rule set yet: nothing is isolated */
	source = find_endpoint(rules, pkt->saddr);
	if (source)
		decide_side(rules, source, NETPOL_EGRESS, pkt, out);
	destination = find_endpoint(rules, pkt->daddr);
	if (destination)
		decide_side(rules, destination, NETPOL_INGRESS, pkt, out);
}

static __always_inline int enforce(struct __sk_buff *skb)
{
	struct packet pkt = {};
	struct netpol_flow flow;
	struct netpol_flow_state *tracked, state = {};
	struct decision decision = {};
	__u64 now, idle_limit;
	int opens_connection;

	if (!parse(skb, &pkt)) {
		count(NETPOL_NOT_IP, skb);
		return TC_ACT_UNSPEC;
	}
	flow_of(&pkt, &flow);
	now = bpf_ktime_get_ns();
	opens_connection = pkt.protocol == IPPROTO_TCP && (pkt.tcp_flags & TCP_FLAG_SYN) &&
			   !(pkt.tcp_flags & TCP_FLAG_ACK);
	idle_limit = (pkt.protocol == IPPROTO_TCP ? tcp_idle_timeout_s : other_idle_timeout_s) *
		     1000000000ULL;

	tracked = bpf_map_lookup_elem(&flows, &flow);
	if (tracked && (!opens_connection || tracked->syn_seq == pkt.tcp_seq) &&
	    now - tracked->last_seen_ns < idle_limit) {
		tracked->last_seen_ns = now;
		count(NETPOL_TRACKED, skb);
		return TC_ACT_UNSPEC;
	}

	decide(&pkt, &decision);
	if (decision.denied_by) {
		if (tracked)
			bpf_map_delete_elem(&flows, &flow);
		count(decision.denied_by, skb);
		count_deny(decision.deny_key, decision.deny_kind);
		return TC_ACT_SHOT;
	}
	state.last_seen_ns = now;
	state.syn_seq = opens_connection ? pkt.tcp_seq : 0;
	bpf_map_update_elem(&flows, &flow, &state, BPF_ANY);
	count(NETPOL_ALLOWED, skb);
	for (int i = 0; i < 4; i++)
		count_rule(decision.rules[i]);
	if (decision.audit_denied) {
		count(NETPOL_AUDIT_DENIED, skb);
		count_deny(decision.audit_key, decision.audit_kind);
	}
	return TC_ACT_UNSPEC;
}

/* tc ingress of the host-side veth: traffic the pod sends. */
SEC("tc")
int pod_egress(struct __sk_buff *skb)
{
	return enforce(skb);
}

/* tc egress of the host-side veth: traffic the pod receives. */
SEC("tc")
int pod_ingress(struct __sk_buff *skb)
{
	return enforce(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
