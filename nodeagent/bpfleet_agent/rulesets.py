"""Rule sets: compiled rules -> the entries of the ``netpol`` program's LPM trie (pure).

The layout is ``bpf-catalog/netpol.h``'s. Per endpoint, direction and view (a *scope*):

- peers: every ``PeerBlock`` cidr and except becomes a prefix; the most specific prefix
  holding an address says which rules' peers contain it. An except is simply a more
  specific prefix without the rule, so the trie needs no negative entries. A prefix
  that one rule alone allows names that rule and its *port group* (one port list,
  shared by every scope: an allow-list of ten thousand CIDRs on one port is ten
  thousand peer entries and one port entry). A prefix several rules allow names a
  *peer class* of this scope, whose port entries credit the first rule per port.
- ports: each range cut into masked prefixes (80-90 = 80/13, 88/15, 90/16).

``RuleSetBuilder`` keeps what it built and compiles the next rule set against it: ids
(endpoints, classes, groups) stay stable, scopes whose rules are the same objects are
not looked at again, and in a scope of plain disjoint CIDRs (the large allow-list) only
the prefixes of the rules that changed are recomputed. What it returns is the change,
entry by entry: the datapath writes only that.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import struct
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from bpfleet_agent.gcpause import gc_paused
from bpfleet_core.netpol.rules import (
    ADDRESS_BITS,
    Address,
    DirectionRules,
    EndpointRules,
    PortRange,
    Prefix,
    Rule,
    address_bits,
)

Direction = Literal["ingress", "egress"]
View = Literal["enforce", "audit"]

# enum netpol_table / netpol_direction / netpol_view, and the flags.
TABLE_META, TABLE_ENDPOINT, TABLE_PEER, TABLE_PORT, TABLE_PORT_GROUP = 0, 1, 2, 3, 4
DIRECTIONS: dict[Direction, int] = {"ingress": 0, "egress": 1}
VIEWS: dict[View, int] = {"enforce": 0, "audit": 1}
INGRESS_ISOLATED = 1 << 0
EGRESS_ISOLATED = 1 << 1
AUDIT_INGRESS_ISOLATED = 1 << 2
AUDIT_EGRESS_ISOLATED = 1 << 3
AUDIT_INGRESS_DIFFERS = 1 << 4
AUDIT_EGRESS_DIFFERS = 1 << 5
NO_CLASS = 0xFFFF_FFFF
PEER_GROUP = 1 << 0

KEY_SIZE, VALUE_SIZE = 28, 16  # struct netpol_key, struct netpol_value
ADDR_PREFIX_BASE = 64  # table, view, direction, pad, endpoint id: always matched whole
FULL_ADDR_PREFIX = ADDR_PREFIX_BASE + 128
ANY_PROTOCOL_PREFIX = 96  # ... and the peer class
ANY_PORT_PREFIX = 112  # ... and the protocol with its pad byte
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}

_HEADER = struct.Struct("=IBBBBI")  # prefixlen, table, view, direction, pad, endpoint
VALUE = struct.Struct("=IIQ")  # id, flags, key
# Whole keys packed with one Struct each; the port is stored in network order, i.e.
# packed as the native int of its big-endian bytes.
_PEER_KEY = struct.Struct("=IBBBBI16s")
_PORT_KEY = struct.Struct("=IBBBBIIBBH8x")


class Scope(NamedTuple):
    """Whose rules a peer or port entry belongs to."""

    endpoint: int
    direction: int
    view: int


_NO_SCOPE = Scope(0, 0, 0)


def _key(table: int, scope: Scope, prefixlen: int, tail: bytes) -> bytes:
    header = _HEADER.pack(prefixlen, table, scope.view, scope.direction, 0, scope.endpoint)
    return header + tail.ljust(16, b"\0")


def endpoint_key(address: Address) -> bytes:
    return _key(TABLE_ENDPOINT, _NO_SCOPE, FULL_ADDR_PREFIX, address_bits(address).to_bytes(16))


def peer_key(scope: Scope, prefix_value: int, length: int) -> bytes:
    return _PEER_KEY.pack(
        ADDR_PREFIX_BASE + length, TABLE_PEER, scope.view, scope.direction, 0, scope.endpoint,
        prefix_value.to_bytes(16),
    )  # fmt: skip


def port_key(
    scope: Scope, peer_class: int, protocol: int | None, port: int = 0, port_bits: int = 0
) -> bytes:
    """A port entry of a peer class; ``protocol`` None: every protocol; else the
    ``port_bits`` leading bits of ``port``."""
    return _port_key(TABLE_PORT, scope, peer_class, protocol, port=port, port_bits=port_bits)


def group_key(group: int, protocol: int | None, port: int = 0, port_bits: int = 0) -> bytes:
    """A port entry of a port group (shared by every scope)."""
    return _port_key(TABLE_PORT_GROUP, _NO_SCOPE, group, protocol, port=port, port_bits=port_bits)


def _port_key(
    table: int, scope: Scope, number: int, protocol: int | None, *, port: int, port_bits: int
) -> bytes:
    if protocol is None:
        return _key(table, scope, ANY_PROTOCOL_PREFIX, struct.pack("=I", number))
    tail = struct.pack("=IBB", number, protocol, 0) + port.to_bytes(2, "big")
    return _key(table, scope, ANY_PORT_PREFIX + port_bits, tail)


# (endpoints, rules, revision) and (entries, audit rules) of the rule set.
META_KEY = _key(TABLE_META, _NO_SCOPE, FULL_ADDR_PREFIX, b"")
META_COUNTS_KEY = _key(TABLE_META, Scope(1, 0, 0), FULL_ADDR_PREFIX, b"")


def pack_value(first: int, second: int = 0, key: int = 0) -> bytes:
    return VALUE.pack(first, second, key)


# ------------------------------------------------------------------------ pieces


def port_range_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """Cover ``first..last`` exactly with aligned blocks: [(start, prefix bits of 16)]."""
    if not 0 <= first <= last <= 0xFFFF:
        raise ValueError(f"not a port range: {first}-{last}")
    blocks: list[tuple[int, int]] = []
    start = first
    while start <= last:
        # The largest power-of-two block aligned at start that stays within the range.
        size = start & -start if start else 1 << 16
        while start + size - 1 > last:
            size >>= 1
        blocks.append((start, 17 - size.bit_length()))
        start += size
    return blocks


@functools.lru_cache(maxsize=4096)
def _port_prefixes(port_range: PortRange) -> tuple[tuple[int, int, int], ...]:
    """(prefixlen, protocol, port in network order) of each trie prefix of a range."""
    if port_range.protocol is None:
        return ((ANY_PROTOCOL_PREFIX, 0, 0),)
    protocol = PROTOCOL_NUMBERS[port_range.protocol]
    return tuple(
        (ANY_PORT_PREFIX + bits, protocol, socket.htons(start))
        for start, bits in port_range_prefixes(port_range.first, port_range.last)
    )


@functools.lru_cache(maxsize=4096)
def _list_prefixes(ports: tuple[PortRange, ...]) -> tuple[tuple[int, int, int], ...]:
    """The prefixes of a rule's whole port list, each once."""
    return tuple(dict.fromkeys(p for port_range in ports for p in _port_prefixes(port_range)))


class PeerPrefix(NamedTuple):
    """One trie prefix in the 128-bit space and the rules (indices) it stands for."""

    value: int
    length: int
    rules: frozenset[int]


def peer_partition(rules: Sequence[Rule]) -> list[PeerPrefix]:
    """Prefixes whose most-specific match gives, for any address, the exact set of
    ``rules`` (by index) whose peers contain it. Addresses matching no prefix match no
    rule. Entries equal to their parent's are left out; an empty set is kept where it
    cuts a hole (an except) into a non-empty parent.

    Why this is exact: prefixes nest or are disjoint, so the most specific boundary
    holding an address lies inside every boundary that holds it; membership in
    "cidr minus excepts" is thus decided by that boundary's ancestors alone.
    """
    any_peer = frozenset(i for i, rule in enumerate(rules) if rule.peers is None)
    starts: dict[Prefix, list[int]] = {}  # boundary -> blocks whose cidr it is
    holes: dict[Prefix, list[int]] = {}  # boundary -> blocks it is an except of
    owner: list[int] = []  # block id -> rule index
    for index, rule in enumerate(rules):
        for block in rule.peers or ():
            block_id = len(owner)
            owner.append(index)
            starts.setdefault(block.cidr, []).append(block_id)
            for hole in block.excepts:
                holes.setdefault(hole, []).append(block_id)
    if not holes and not any_peer:
        flat = _disjoint_partition(starts, owner)
        if flat is not None:
            return flat
    result = [PeerPrefix(0, 0, any_peer)] if any_peer else []
    # Sorted by (value, length), a prefix comes right after its ancestors: a depth-first
    # walk keeping the open ancestors on a stack of (end, inside, excepted, rules), where
    # end is the first address past the prefix. Written tight: it runs once per cidr.
    empty: frozenset[int] = frozenset()
    stack: list[tuple[int, frozenset[int], frozenset[int], frozenset[int]]] = [
        (1 << ADDRESS_BITS, empty, empty, any_peer)
    ]
    push, pop, add = stack.append, stack.pop, result.append
    starts_at, holes_at, rule_of = starts.get, holes.get, owner.__getitem__
    for boundary in sorted(starts.keys() | holes.keys()):
        start, length = boundary
        while stack[-1][0] <= start:
            pop()
        _, inside, excepted, parent_rules = stack[-1]
        if (opened := starts_at(boundary)) is not None:
            inside = inside.union(opened)
        if (cut := holes_at(boundary)) is not None:
            excepted = excepted.union(cut)
        active = inside - excepted if excepted else inside
        here = any_peer.union(map(rule_of, active)) if active else any_peer
        push((start + (1 << (ADDRESS_BITS - length)), inside, excepted, here))
        if here != parent_rules:
            add(PeerPrefix(start, length, here))
    return result


def _disjoint_partition(
    starts: dict[Prefix, list[int]], owner: list[int]
) -> list[PeerPrefix] | None:
    """The common large case, CIDR lists without excepts, none inside another: each
    prefix stands for exactly the rules whose blocks it is. None if any nest."""
    ordered = sorted(starts)
    if _nested(ordered):
        return None
    rule_of = owner.__getitem__
    return [PeerPrefix(p.value, p.length, frozenset(map(rule_of, starts[p]))) for p in ordered]


def _nested(ordered: Sequence[Prefix]) -> bool:
    end = 0
    for value, length in ordered:
        if value < end:
            return True
        end = value + (1 << (ADDRESS_BITS - length))
    return False


# Rule keys: one hash per policy and direction (its *base*), plus the rule's index times
# an odd constant, so every rule of a policy has a key of its own without a hash each.
_MASK = (1 << 64) - 1
_STRIDE = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_STRIDE_INVERSE = pow(_STRIDE, -1, 1 << 64)
_MAX_RULE_INDEX = 1 << 31


@functools.lru_cache(maxsize=1 << 14)
def rule_base(policy: str, direction: Direction) -> int:
    digest = hashlib.blake2b(f"{policy}\0{direction}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def rule_key(policy: str, direction: Direction, index: int) -> int:
    """A stable 64-bit name for a policy rule: per-rule counters are keyed by it, so they
    carry across rule-set swaps and agent restarts without any registry."""
    return (rule_base(policy, direction) + index * _STRIDE) & _MASK


class RuleName(NamedTuple):
    policy: str
    direction: Direction
    rule_index: int  # in the policy's ingress or egress list

    def __str__(self) -> str:
        return f"{self.policy} {self.direction}[{self.rule_index}]"


class RuleNames:
    """What rule keys stand for: the policies (and directions) seen, by base. A key is
    resolved (and remembered) when a counter under it is read."""

    def __init__(self) -> None:
        self.bases: dict[int, tuple[str, Direction]] = {}
        self._resolved: dict[int, RuleName | None] = {}

    def add(self, policy: str, direction: Direction) -> None:
        base = rule_base(policy, direction)
        if base not in self.bases:
            self.bases[base] = (policy, direction)
            self._resolved = {k: v for k, v in self._resolved.items() if v is not None}

    def get(self, key: int) -> RuleName | None:
        if key in self._resolved:
            return self._resolved[key]
        found = None
        for base, (policy, direction) in self.bases.items():
            index = ((key - base) * _STRIDE_INVERSE) & _MASK
            if index < _MAX_RULE_INDEX:
                found = RuleName(policy, direction, index)
                break
        self._resolved[key] = found
        return found

    def forget(self, bases: Iterable[int]) -> None:
        for base in bases:
            self.bases.pop(base, None)
        self._resolved = {}

    def __len__(self) -> int:
        return len(self.bases)


# The deny counters' kinds (enum netpol_deny_kind): direction + 2 * view.
DENY_KINDS: tuple[tuple[Direction, View], ...] = (
    ("ingress", "enforce"),
    ("egress", "enforce"),
    ("ingress", "audit"),
    ("egress", "audit"),
)


@dataclass(frozen=True)
class Denier:
    """What one endpoint's deny key stands for: per kind, the policies that decide."""

    endpoint: str
    policies: tuple[tuple[str, ...], ...]  # by DENY_KINDS


def deny_key(denier: Denier) -> int:
    """The counter key of an endpoint's denials, stable while its policies are."""
    text = "\0".join([denier.endpoint, *("\1".join(kind) for kind in denier.policies)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") or 1


# ------------------------------------------------------------------------ building


@dataclass
class Delta:
    """The change from the previous rule set to this one, entry by entry."""

    revision: int
    upserts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)
    endpoints: int = 0
    rules: int = 0
    audit_rules: int = 0
    entries: int = 0  # in the whole rule set

    @property
    def size(self) -> int:
        return len(self.upserts) + len(self.deletes)


# Changes of up to this many prefixes (or an eighth of a scope's) are made in place.
_SMALL_CHANGE = 64


class _Flat:
    """A scope of plain CIDRs (no excepts, no any-peer rule), none inside another:
    which rules own each prefix, and the prefixes in order, to tell whether a new
    one nests."""

    def __init__(self, owners: dict[Prefix, list[int]], ordered: list[Prefix]) -> None:
        self.owners = owners
        self.ordered = ordered

    def move(
        self, removed: list[tuple[Prefix, int]], added: list[tuple[Prefix, int]]
    ) -> set[Prefix] | None:
        """Take the removed (prefix, rule) pairs out and put the added in; the prefixes
        touched, or None (and nothing changed) if a removed prefix is shared with
        another rule or an added one is taken or nests."""
        # A rule may list a block twice; its prefix is owned once.
        removed = list(dict.fromkeys(removed))
        added = list(dict.fromkeys(added))
        owners = self.owners
        for prefix, index in removed:
            if owners.get(prefix) != [index]:
                return None  # shared with another rule: its class would change
        for prefix, _ in removed:
            del owners[prefix]
            del self.ordered[bisect_left(self.ordered, prefix)]
        for done, (prefix, index) in enumerate(added):
            if prefix in owners or self.nests(prefix):
                self._restore(removed, added[:done])
                return None
            owners[prefix] = [index]
            insort(self.ordered, prefix)
        return {prefix for prefix, _ in removed} | {prefix for prefix, _ in added}

    def _restore(self, removed: list[tuple[Prefix, int]], added: list[tuple[Prefix, int]]) -> None:
        for prefix, _ in added:
            del self.owners[prefix]
            del self.ordered[bisect_left(self.ordered, prefix)]
        for prefix, index in removed:
            self.owners[prefix] = [index]
            insort(self.ordered, prefix)

    def nests(self, prefix: Prefix) -> bool:
        """Whether ``prefix`` contains or is contained by another prefix (not itself)."""
        at = bisect_left(self.ordered, prefix)
        if at < len(self.ordered) and self.ordered[at] == prefix:
            return False
        if at > 0:
            before = self.ordered[at - 1]
            if before.value + (1 << (ADDRESS_BITS - before.length)) > prefix.value:
                return True
        if at < len(self.ordered):
            after = self.ordered[at]
            if after.value < prefix.value + (1 << (ADDRESS_BITS - prefix.length)):
                return True
        return False


@dataclass
class _ScopeState:
    rules: tuple[Rule, ...]
    keys: list[int]  # rule keys by position
    bases: set[int]  # of the policies (and direction) they belong to
    entries: dict[bytes, bytes]  # this scope's peer and peer-class port entries
    groups: Counter[int]  # port groups its peer entries name, and how often
    classes: dict[frozenset[int], int]  # rule positions -> class id, stable
    flat: _Flat | None


class RuleSetBuilder:
    """Builds rule sets one after another; each ``build`` returns what changed.

    ``names`` and ``deniers`` say what the counters' keys stand for: every rule and
    endpoint it has seen (pass dicts of your own to keep them beyond the builder)."""

    def __init__(
        self, names: RuleNames | None = None, deniers: dict[int, Denier] | None = None
    ) -> None:
        self.entries: dict[bytes, bytes] = {}
        self.names = RuleNames() if names is None else names
        self.deniers: dict[int, Denier] = {} if deniers is None else deniers
        self._endpoint_ids: dict[int, int] = {}  # address bits -> id
        self._scopes: dict[Scope, _ScopeState] = {}
        self._groups: dict[tuple[PortRange, ...], int] = {}
        self._group_uses: Counter[int] = Counter()
        self._endpoint_entries: dict[bytes, bytes] = {}
        # The keys the rule set in force uses (the others name old counters).
        self.live_bases: set[int] = set()
        self.live_deniers: set[int] = set()
        # What the last build replaced, freed by ``release``.
        self._retired: list[object] = []

    def build(self, endpoints: Iterable[EndpointRules], revision: int) -> Delta:
        """Compile these endpoints' rules as the next rule set. Raises ``ValueError``
        (and changes nothing) when two endpoints share an address."""
        with gc_paused():
            return self._build(list(endpoints), revision)

    def release(self) -> None:
        """Free what the last build replaced (as much as it built: a caller may want the
        new rule set in force first)."""
        self._retired = []

    def _build(self, endpoints: list[EndpointRules], revision: int) -> Delta:
        by_address: dict[int, EndpointRules] = {}
        for endpoint in endpoints:
            bits = address_bits(endpoint.address)
            if bits in by_address:
                raise ValueError(
                    f"{by_address[bits].endpoint} and {endpoint.endpoint} share the address "
                    f"{endpoint.address}"
                )
            by_address[bits] = endpoint
        changes: dict[bytes, bytes | None] = {}  # key -> new value, None: deleted
        wanted_scopes = self._endpoints(by_address, changes)
        self._retired = []
        for scope in self._scopes.keys() - wanted_scopes.keys():
            removed = self._scopes.pop(scope)
            self._retired.append(removed)
            _diff(removed.entries, {}, changes)
            self._group_uses.subtract(removed.groups)
        for scope, rules in wanted_scopes.items():
            self._update_scope(scope, rules, changes)
        self._update_groups(changes)
        live_rules = {key for state in self._scopes.values() for key in state.keys}
        audit_rules = {
            key for scope, state in self._scopes.items() if scope.view for key in state.keys
        }
        changes[META_KEY] = pack_value(len(by_address), len(live_rules), revision)
        delta = Delta(
            revision, endpoints=len(by_address), rules=len(live_rules), audit_rules=len(audit_rules)
        )
        for key, value in changes.items():
            if value is None:
                if self.entries.pop(key, None) is not None:
                    delta.deletes.append(key)
            elif self.entries.get(key) != value:
                self.entries[key] = value
                delta.upserts[key] = value
        entries = len(self.entries) + (META_COUNTS_KEY not in self.entries)
        counts = pack_value(entries, len(audit_rules))
        if self.entries.get(META_COUNTS_KEY) != counts:
            self.entries[META_COUNTS_KEY] = delta.upserts[META_COUNTS_KEY] = counts
        delta.entries = entries
        self.live_bases = {base for state in self._scopes.values() for base in state.bases}
        return delta

    def _endpoints(
        self, by_address: dict[int, EndpointRules], changes: dict[bytes, bytes | None]
    ) -> dict[Scope, DirectionRules]:
        """The endpoint entries (their changes into ``changes``), and the scopes wanted."""
        ids = self._assign_ids(by_address)
        wanted: dict[Scope, DirectionRules] = {}
        entries: dict[bytes, bytes] = {}
        self.live_deniers = set()
        for bits, endpoint in by_address.items():
            flags, policies = 0, []
            for direction, enforce, audit in (
                ("ingress", endpoint.ingress, endpoint.audit_ingress),
                ("egress", endpoint.egress, endpoint.audit_egress),
            ):
                side = DIRECTIONS[direction]  # type: ignore[index]
                isolated, audit_isolated, differs = _FLAGS[side]
                if enforce.isolated:
                    flags |= isolated
                    wanted[Scope(ids[bits], side, 0)] = enforce
                if audit.isolated:
                    flags |= audit_isolated
                if audit is not enforce and audit != enforce:
                    # Only a view that differs needs entries of its own (and lookups).
                    flags |= differs
                    if audit.isolated:
                        wanted[Scope(ids[bits], side, 1)] = audit
                policies.append((enforce.policies, audit.policies))
            denier = Denier(
                endpoint.endpoint,
                (policies[0][0], policies[1][0], policies[0][1], policies[1][1]),
            )
            deny = deny_key(denier)
            self.deniers[deny] = denier
            self.live_deniers.add(deny)
            key = _key(TABLE_ENDPOINT, _NO_SCOPE, FULL_ADDR_PREFIX, bits.to_bytes(16))
            entries[key] = pack_value(ids[bits], flags, deny)
        _diff(self._endpoint_entries, entries, changes)
        self._endpoint_entries = entries
        return wanted

    def _assign_ids(self, by_address: dict[int, EndpointRules]) -> dict[int, int]:
        """Endpoint ids stay as long as the endpoint does, so its entries do too."""
        for bits in self._endpoint_ids.keys() - by_address.keys():
            del self._endpoint_ids[bits]
        used = set(self._endpoint_ids.values())
        candidate = 1
        for bits in by_address:
            if bits not in self._endpoint_ids:
                while candidate in used:
                    candidate += 1
                self._endpoint_ids[bits] = candidate
                used.add(candidate)
        return self._endpoint_ids

    # -- one scope

    def _update_scope(
        self, scope: Scope, rules: DirectionRules, changes: dict[bytes, bytes | None]
    ) -> None:
        state = self._scopes.get(scope)
        new_rules = rules.rules
        direction: Direction = "ingress" if scope.direction == 0 else "egress"
        if state is not None and state.rules is new_rules:
            return
        changed: list[int] = []
        if state is not None:
            old_rules = state.rules
            common = min(len(old_rules), len(new_rules))
            changed = [i for i in range(common) if old_rules[i] is not new_rules[i]]
            changed += range(common, max(len(old_rules), len(new_rules)))
            if not changed:
                state.rules = new_rules
                return
            if state.flat is not None and self._update_flat(
                scope, state, new_rules, changed, changes
            ):
                return
        self._compile_scope(scope, direction, new_rules, state, changes)

    def _compile_scope(
        self,
        scope: Scope,
        direction: Direction,
        rules: tuple[Rule, ...],
        previous: _ScopeState | None,
        changes: dict[bytes, bytes | None],
    ) -> None:
        keys, bases = _rule_keys(rules, direction, self.names)
        old_classes = previous.classes if previous is not None else {}
        classes: dict[frozenset[int], int] = {}
        entries: dict[bytes, bytes] = {}
        groups: Counter[int] = Counter()
        flat = _flat_index(rules)
        members_of: Iterable[tuple[int, int, Sequence[int] | frozenset[int]]]
        if flat is not None:
            owners = flat.owners
            members_of = ((prefix.value, prefix.length, owners[prefix]) for prefix in flat.ordered)
        else:
            members_of = peer_partition(rules)
        pack_peer, pack = _PEER_KEY.pack, VALUE.pack
        view, side, endpoint = scope.view, scope.direction, scope.endpoint
        last_ports: tuple[PortRange, ...] | None = None
        group = 0
        for value, length, members in members_of:
            if len(members) == 1:
                (index,) = members
                ports = rules[index].ports
                if ports is not last_ports:
                    last_ports, group = ports, self._group(ports)
                groups[group] += 1
                entry = pack(group, PEER_GROUP, keys[index])
            elif not members:
                entry = pack(NO_CLASS, 0, 0)
            else:
                member_set = frozenset(members)
                if member_set not in classes:
                    classes[member_set] = _class_id(member_set, old_classes, classes)
                entry = pack(classes[member_set], 0, 0)
            key = pack_peer(
                ADDR_PREFIX_BASE + length, TABLE_PEER, view, side, 0, endpoint, value.to_bytes(16)
            )
            entries[key] = entry
        for member_set, class_id in classes.items():
            self._class_entries(
                scope, class_id, member_set, rules=rules, keys=keys, entries=entries
            )
        _diff(previous.entries if previous is not None else {}, entries, changes)
        if previous is not None:
            self._retired.append(previous)
            self._group_uses.subtract(previous.groups)
        self._group_uses.update(groups)
        self._scopes[scope] = _ScopeState(rules, keys, bases, entries, groups, classes, flat)

    @staticmethod
    def _class_entries(
        scope: Scope,
        class_id: int,
        members: frozenset[int],
        *,
        rules: Sequence[Rule],
        keys: Sequence[int],
        entries: dict[bytes, bytes],
    ) -> None:
        # Lowest rule index first: on an identical prefix the first rule is credited.
        for index in sorted(members):
            credited = pack_value(0, 0, keys[index])
            for prefixlen, protocol, port in _list_prefixes(rules[index].ports):
                key = _PORT_KEY.pack(
                    prefixlen, TABLE_PORT, scope.view, scope.direction, 0, scope.endpoint,
                    class_id, protocol, 0, port,
                )  # fmt: skip
                entries.setdefault(key, credited)

    def _update_flat(
        self,
        scope: Scope,
        state: _ScopeState,
        rules: tuple[Rule, ...],
        changed: list[int],
        changes: dict[bytes, bytes | None],
    ) -> bool:
        """Update a flat scope for the rules at ``changed`` alone; False (nothing
        touched) when the change is not one this can do: an except or any-peer rule,
        a nesting prefix, or a prefix more than one rule owns."""
        flat = state.flat
        assert flat is not None
        if len(changed) > max(_SMALL_CHANGE, len(state.rules) // 8):
            return False  # most of it: compiling the scope whole is quicker
        moved = _moved_prefixes(state.rules, rules, changed)
        if moved is None:
            return False
        removed, added = moved
        if len(removed) + len(added) > max(_SMALL_CHANGE, len(flat.ordered) // 8):
            return False  # most of it: compiling the scope whole is quicker
        touched = flat.move(removed, added)
        if touched is None:
            return False
        direction: Direction = "ingress" if scope.direction == 0 else "egress"
        keys = list(state.keys)
        del keys[len(rules) :]
        for index in changed:
            if index < len(rules):
                rule = rules[index]
                number = rule_key(rule.policy, direction, rule.index)
                self.names.add(rule.policy, direction)
                state.bases.add(rule_base(rule.policy, direction))
                if index < len(keys):
                    keys[index] = number
                else:
                    keys.append(number)
        for prefix in touched:
            key = peer_key(scope, prefix.value, prefix.length)
            old_value = state.entries.pop(key, None)
            if old_value is not None:
                old_group = VALUE.unpack(old_value)[0]
                state.groups[old_group] -= 1
                self._group_uses[old_group] -= 1
            members = flat.owners.get(prefix)
            if members is None:
                changes[key] = None
                continue
            (index,) = members
            group = self._group(rules[index].ports)
            state.groups[group] += 1
            self._group_uses[group] += 1
            value = pack_value(group, PEER_GROUP, keys[index])
            state.entries[key] = value
            changes[key] = value
        state.rules, state.keys = rules, keys
        return True

    # -- port groups

    def _group(self, ports: tuple[PortRange, ...]) -> int:
        group = self._groups.get(ports)
        if group is None:
            used = set(self._groups.values())
            group = next(number for number in range(len(used) + 1) if number not in used)
            self._groups[ports] = group
        return group

    def _update_groups(self, changes: dict[bytes, bytes | None]) -> None:
        """Entries for every group in use; none for groups no longer named."""
        for ports, group in list(self._groups.items()):
            uses = self._group_uses.get(group, 0)
            group_entries = {
                _PORT_KEY.pack(
                    prefixlen, TABLE_PORT_GROUP, 0, 0, 0, 0, group, protocol, 0, port
                ): pack_value(0)
                for prefixlen, protocol, port in _list_prefixes(ports)
            }
            if uses > 0:
                for key, value in group_entries.items():
                    if self.entries.get(key) != value:
                        changes[key] = value
            else:
                for key in group_entries:
                    changes[key] = None
                del self._groups[ports]
                self._group_uses.pop(group, None)


def _moved_prefixes(
    old_rules: Sequence[Rule], rules: Sequence[Rule], changed: list[int]
) -> tuple[list[tuple[Prefix, int]], list[tuple[Prefix, int]]] | None:
    """The (prefix, rule) pairs the rules at ``changed`` no longer have and now have;
    None when a new rule is no plain CIDR list."""
    removed: list[tuple[Prefix, int]] = []
    added: list[tuple[Prefix, int]] = []
    for index in changed:
        old = old_rules[index] if index < len(old_rules) else None
        new = rules[index] if index < len(rules) else None
        if new is not None and (new.peers is None or any(block.excepts for block in new.peers)):
            return None
        old_blocks = old.peers or () if old is not None else ()
        new_blocks = new.peers or () if new is not None else ()
        if (
            old is not None
            and new is not None
            and (old.policy, old.index, old.ports) == (new.policy, new.index, new.ports)
            and len(old_blocks) == len(new_blocks)
        ):
            # The same rule with other peers: only the blocks that differ.
            for old_block, new_block in zip(old_blocks, new_blocks, strict=True):
                if old_block is not new_block and old_block != new_block:
                    removed.append((old_block.cidr, index))
                    added.append((new_block.cidr, index))
        else:
            removed.extend((block.cidr, index) for block in old_blocks)
            added.extend((block.cidr, index) for block in new_blocks)
    return removed, added


def _rule_keys(
    rules: Sequence[Rule], direction: Direction, names: RuleNames
) -> tuple[list[int], set[int]]:
    """The rules' keys, and the bases they use (registered with ``names``)."""
    keys = []
    bases = set()
    policy, base = None, 0
    for rule in rules:
        if rule.policy != policy:
            policy, base = rule.policy, rule_base(rule.policy, direction)
            if base not in bases:
                bases.add(base)
                names.add(policy, direction)
        keys.append((base + rule.index * _STRIDE) & _MASK)
    return keys, bases


def _flat_index(rules: Sequence[Rule]) -> _Flat | None:
    """The index of a scope of plain CIDRs none of which nests in another; None if the
    scope is not one (then ``peer_partition`` does the general walk)."""
    owners: dict[Prefix, list[int]] = {}
    for index, rule in enumerate(rules):
        if rule.peers is None:
            return None
        for cidr, excepts in rule.peers:
            if excepts:
                return None
            found = owners.get(cidr)
            if found is None:
                owners[cidr] = [index]
            elif found[-1] != index:
                found.append(index)
    ordered = sorted(owners)
    return None if _nested(ordered) else _Flat(owners, ordered)


_FLAGS = (
    (INGRESS_ISOLATED, AUDIT_INGRESS_ISOLATED, AUDIT_INGRESS_DIFFERS),
    (EGRESS_ISOLATED, AUDIT_EGRESS_ISOLATED, AUDIT_EGRESS_DIFFERS),
)


def _class_id(
    members: frozenset[int], old: dict[frozenset[int], int], new: dict[frozenset[int], int]
) -> int:
    """The id the same rule set had before, else the lowest free one."""
    if members in old and old[members] not in new.values():
        return old[members]
    taken = set(new.values()) | {
        number for other, number in old.items() if other != members and other not in new
    }
    return next(number for number in range(len(taken) + 1) if number not in taken)


def _diff(
    old: dict[bytes, bytes], new: dict[bytes, bytes], changes: dict[bytes, bytes | None]
) -> None:
    for key in old.keys() - new.keys():
        changes.setdefault(key, None)
    for key, value in new.items():
        if old.get(key) != value:
            changes[key] = value


def compile_rule_set(endpoints: Iterable[EndpointRules], revision: int) -> dict[bytes, bytes]:
    """The whole trie for these endpoints, as a fresh builder makes it."""
    builder = RuleSetBuilder()
    builder.build(endpoints, revision)
    return dict(builder.entries)
