/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Shared between netpol.bpf.c and user space (bpfleet_agent.rulesets packs the same
 * layouts with struct). Include <linux/types.h> (or vmlinux.h on the BPF side) first.
 *
 * One rule set is ONE LPM trie holding every table, told apart by the key's first
 * byte. Two rule sets are installed at once, in the two slots of rule_sets, and the
 * one-entry array active_slot says which one is in force. Every packet reads
 * active_slot once and then uses that slot's trie alone, so it sees one whole rule set:
 * user space writes the other slot while nothing reads it, flips active_slot, and
 * touches the slot it left only after an RCU grace period (when no packet can still be
 * reading it).
 */
#ifndef __NETPOL_H
#define __NETPOL_H

enum netpol_table {
	NETPOL_TABLE_META = 0,       /* revision and counts of this rule set */
	NETPOL_TABLE_ENDPOINT = 1,   /* local endpoint address -> id, flags, counter key (exact) */
	NETPOL_TABLE_PEER = 2,       /* (endpoint, direction, view, peer address) -> class or group */
	NETPOL_TABLE_PORT = 3,       /* (endpoint, direction, view, class, proto, port) -> rule */
	NETPOL_TABLE_PORT_GROUP = 4, /* (group, proto, port): port lists shared by every endpoint */
};

enum netpol_direction {
	NETPOL_INGRESS = 0,
	NETPOL_EGRESS = 1,
};

enum netpol_view {
	NETPOL_VIEW_ENFORCE = 0,
	NETPOL_VIEW_AUDIT = 1,
};

/* Endpoint flags: isolation per direction and view; DIFFERS says the audit view has
 * rules of its own (otherwise its verdict is the enforce verdict, saving lookups). */
#define NETPOL_INGRESS_ISOLATED (1U << 0)
#define NETPOL_EGRESS_ISOLATED (1U << 1)
#define NETPOL_AUDIT_INGRESS_ISOLATED (1U << 2)
#define NETPOL_AUDIT_EGRESS_ISOLATED (1U << 3)
#define NETPOL_AUDIT_INGRESS_DIFFERS (1U << 4)
#define NETPOL_AUDIT_EGRESS_DIFFERS (1U << 5)

/* A peer-table value: addresses in this block match no rule (an except hole). */
#define NETPOL_NO_CLASS 0xffffffffU
/* A peer-table flag: exactly one rule allows these addresses; id is the port group of
 * that rule's ports (NETPOL_TABLE_PORT_GROUP) and key is the rule. Without it, id is a
 * peer class: the set of rules allowing them, whose ports are in NETPOL_TABLE_PORT. */
#define NETPOL_PEER_GROUP (1U << 0)

/* Prefix lengths (bits of the key after prefixlen) of full-length lookups. */
#define NETPOL_ADDR_PREFIX_BASE 64   /* table .. endpoint; the address follows */
#define NETPOL_FULL_ADDR_PREFIX 192  /* NETPOL_ADDR_PREFIX_BASE + 128 */
#define NETPOL_ANY_PROTOCOL_PREFIX 96 /* table .. peer_class */
#define NETPOL_ANY_PORT_PREFIX 112   /* .. protocol and its pad byte */
#define NETPOL_FULL_PORT_PREFIX 128  /* .. port */

/* 28 bytes. IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d), so one trie
 * serves both families and an IPv4 /n is a /(96+n) here. Multi-byte fields that a
 * prefix may cut (addr, port) are in network order; the others are always matched
 * whole, so their byte order does not matter. */
struct netpol_key {
	__u32 prefixlen;
	__u8 table;
	__u8 view;
	__u8 direction;
	__u8 pad0;
	__u32 endpoint;
	union {
		__u8 addr[16];
		struct {
			__u32 peer_class; /* or the port group */
			__u8 protocol;
			__u8 pad1;
			__be16 port;
			__u8 pad2[8];
		};
	};
};

/* 16 bytes; which fields mean what depends on the table. */
struct netpol_value {
	__u32 id;    /* endpoint: id; peer: class or group; meta: endpoint count */
	__u32 flags; /* endpoint: NETPOL_* flags; peer: NETPOL_PEER_GROUP; meta: rule count */
	__u64 key;   /* peer (group) and port: rule key; endpoint: deny key; meta: revision */
};

/* Keys of the verdict_stats map. */
enum netpol_verdict {
	NETPOL_ALLOWED = 0,        /* new flows allowed (first packet) */
	NETPOL_TRACKED = 1,        /* packets of flows already allowed */
	NETPOL_DENIED_EGRESS = 2,  /* packets dropped by the source's egress rules */
	NETPOL_DENIED_INGRESS = 3, /* packets dropped by the destination's ingress rules */
	NETPOL_AUDIT_DENIED = 4,   /* new flows passed that the audit view would drop */
	NETPOL_NOT_IP = 5,         /* frames passed without a look (ARP, ...) */
	NETPOL_VERDICT_MAX = 6,
};

/* Keys of the deny_stats map: what the policies isolating one endpoint denied (packets)
 * or would deny in audit (flows), by the endpoint's deny key. User space knows which
 * policies each deny key stands for. 16 bytes. */
enum netpol_deny_kind {
	NETPOL_DENY_INGRESS = 0,       /* = NETPOL_INGRESS */
	NETPOL_DENY_EGRESS = 1,        /* = NETPOL_EGRESS */
	NETPOL_AUDIT_DENY_INGRESS = 2, /* 2 + direction */
	NETPOL_AUDIT_DENY_EGRESS = 3,
};

struct netpol_deny {
	__u64 key;
	__u32 kind;
	__u32 pad;
};

#ifndef __BPFLEET_PKT_STATS
#define __BPFLEET_PKT_STATS
/* Per-CPU value; user space sums over CPUs. 16 bytes, no padding. */
struct pkt_stats {
	__u64 packets;
	__u64 bytes;
};
#endif

/* Connection tracking: a flow keyed with its lower (address, port) end first, so both
 * directions find the same entry with one lookup. 40 bytes. */
struct netpol_flow {
	__u8 addr_lo[16];
	__u8 addr_hi[16];
	__be16 port_lo;
	__be16 port_hi;
	__u8 protocol;
	__u8 pad[3];
};

struct netpol_flow_state {
	__u64 last_seen_ns;
	/* The sequence number of the SYN that opened a TCP flow: the same SYN met again at
	 * the second hook it crosses (or retransmitted) is not decided twice, while a new
	 * connection on the same ports (another ISN) is decided afresh. */
	__u32 syn_seq;
	__u32 pad;
};

#endif /* __NETPOL_H */
