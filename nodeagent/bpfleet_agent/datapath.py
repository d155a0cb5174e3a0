"""The network-policy datapath: compiled rules -> the ``netpol`` program's maps.

Two halves. The pure half turns ``EndpointRules`` (the compiler's output, see
``bpfleet_core.netpol.rules``) into the entries of one LPM trie, laid out as
``bpf-catalog/netpol.h`` describes:

- peers: every ``PeerBlock`` cidr and except of one endpoint, direction and view becomes
  a prefix; the most specific prefix holding an address names its *peer class*, the set
  of rules whose peers contain that address. An except is simply a more specific
  prefix whose class lacks the rule, so the trie needs no negative entries.
- ports: per class, the union of its rules' port ranges, each range cut into masked
  prefixes (80-90 = 80/13, 88/15, 90/16), valued with the rule that allows them.

The kernel half loads and attaches ``netpol`` through ``loading`` (verified, pinned,
adopted after restarts like any program) and swaps rule sets: a fresh trie is filled
while inactive, then put into the one-slot outer map ``active_rules`` with a single
update. The program reads that slot once per packet, so every packet is decided by one
whole rule set. Counters live outside the trie and survive every swap.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import ipaddress
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NamedTuple

from bpfleet_agent import libbpf, loading, pins, preparing
from bpfleet_agent.permits import NodePermits
from bpfleet_agent.reconciling import Hook
from bpfleet_core import features, signing
from bpfleet_core.manifests import AttachKind
from bpfleet_core.netpol.rules import DirectionRules, EndpointRules, PortRange, Rule
from bpfleet_core.protocol import POLICY_ARTIFACT, ProgramAssignment
from bpfleet_core.resources import ArtifactRef, AttachPoint, BpfProgramSpec

ARTIFACT = ArtifactRef(name=POLICY_ARTIFACT, version="1.0.0")
PROGRAM_NAME = "netpol"
# Entry points and the tc hook of the HOST-side veth each one runs on.
FROM_POD_ENTRY, FROM_POD_HOOK = "pod_egress", "ingress"
TO_POD_ENTRY, TO_POD_HOOK = "pod_ingress", "egress"

Direction = Literal["ingress", "egress"]
View = Literal["enforce", "audit"]

# ----------------------------------------------------------------- the map layout

# enum netpol_table / netpol_direction / netpol_view, and the endpoint flags.
TABLE_META, TABLE_ENDPOINT, TABLE_PEER, TABLE_PORT = 0, 1, 2, 3
DIRECTIONS: dict[Direction, int] = {"ingress": 0, "egress": 1}
VIEWS: dict[View, int] = {"enforce": 0, "audit": 1}
INGRESS_ISOLATED = 1 << 0
EGRESS_ISOLATED = 1 << 1
AUDIT_INGRESS_ISOLATED = 1 << 2
AUDIT_EGRESS_ISOLATED = 1 << 3
AUDIT_INGRESS_DIFFERS = 1 << 4
AUDIT_EGRESS_DIFFERS = 1 << 5
NO_CLASS = 0xFFFF_FFFF

KEY_SIZE, VALUE_SIZE = 28, 16  # struct netpol_key, struct netpol_value
FLOW_KEY_SIZE = 40  # struct netpol_flow
ADDR_PREFIX_BASE = 64  # table, view, direction, pad, endpoint id: always matched whole
FULL_ADDR_PREFIX = ADDR_PREFIX_BASE + 128
ANY_PROTOCOL_PREFIX = 96  # ... and the peer class
ANY_PORT_PREFIX = 112  # ... and the protocol with its pad byte
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
VERDICTS = ("allowed", "tracked", "denied_egress", "denied_ingress", "audit_denied", "not_ip")

_HEADER = struct.Struct("=IBBBBI")  # prefixlen, table, view, direction, pad, endpoint
_VALUE = struct.Struct("=IIQ")
_IPV4_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, where IPv4 lives in the trie's address space
_ADDRESS_BITS = 128

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_bits(address: Address) -> int:
    """An address in the trie's 128-bit space (IPv4 as ::ffff:a.b.c.d)."""
    return _IPV4_MAPPED | int(address) if address.version == 4 else int(address)


def network_prefix(network: Network) -> tuple[int, int]:
    """(value, length) in the 128-bit space: IPv4 a.b.c.d/n is ::ffff:a.b.c.d/(96+n)."""
    if network.version == 4:
        return _IPV4_MAPPED | int(network.network_address), 96 + network.prefixlen
    return int(network.network_address), network.prefixlen


@dataclass(frozen=True)
class Scope:
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
    return _key(TABLE_PEER, scope, ADDR_PREFIX_BASE + length, prefix_value.to_bytes(16))


def port_key(
    scope: Scope, peer_class: int, protocol: int | None, port: int = 0, port_bits: int = 0
) -> bytes:
    """``protocol`` None: every protocol; else the ``port_bits`` leading bits of ``port``."""
    if protocol is None:
        return _key(TABLE_PORT, scope, ANY_PROTOCOL_PREFIX, struct.pack("=I", peer_class))
    tail = struct.pack("=IBB", peer_class, protocol, 0) + port.to_bytes(2, "big")
    return _key(TABLE_PORT, scope, ANY_PORT_PREFIX + port_bits, tail)


META_KEY = _key(TABLE_META, _NO_SCOPE, FULL_ADDR_PREFIX, b"")


def pack_value(first: int, second: int = 0, rule: int = 0) -> bytes:
    return _VALUE.pack(first, second, rule)


# ------------------------------------------------------------------- pure compiling


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
    starts: dict[tuple[int, int], list[int]] = {}  # boundary -> blocks whose cidr it is
    holes: dict[tuple[int, int], list[int]] = {}  # boundary -> blocks it is an except of
    owner: list[int] = []  # block id -> rule index
    for index, rule in enumerate(rules):
        for block in rule.peers or ():
            block_id = len(owner)
            owner.append(index)
            starts.setdefault(network_prefix(block.cidr), []).append(block_id)
            for hole in block.excepts:
                holes.setdefault(network_prefix(hole), []).append(block_id)
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
        (1 << _ADDRESS_BITS, empty, empty, any_peer)
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
        push((start + (1 << (_ADDRESS_BITS - length)), inside, excepted, here))
        if here != parent_rules:
            add(PeerPrefix(start, length, here))
    return result


def _disjoint_partition(
    starts: dict[tuple[int, int], list[int]], owner: list[int]
) -> list[PeerPrefix] | None:
    """The common large case, CIDR lists without excepts, none inside another: each
    prefix stands for exactly the rules whose blocks it is. None if any nest."""
    ordered = sorted(starts)
    end = 0
    for value, length in ordered:
        if value < end:
            return None  # inside the previous prefix: the general walk handles nesting
        end = value + (1 << (_ADDRESS_BITS - length))
    rule_of = owner.__getitem__
    return [
        PeerPrefix(value, length, frozenset(map(rule_of, starts[value, length])))
        for value, length in ordered
    ]


@functools.lru_cache(maxsize=1 << 17)
def rule_key(policy: str, direction: Direction, index: int) -> int:
    """A stable 64-bit name for a policy rule: per-rule counters are keyed by it, so they
    carry across rule-set swaps and agent restarts without any registry. Never 0."""
    digest = hashlib.blake2b(f"{policy}\0{direction}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class RuleName(NamedTuple):
    policy: str
    direction: Direction
    rule_index: int  # in the policy's ingress or egress list

    def __str__(self) -> str:
        return f"{self.policy} {self.direction}[{self.rule_index}]"


@dataclass
class CompiledRuleSet:
    """Everything one rule-set trie holds, as packed keys and values."""

    revision: int
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    endpoints: int = 0
    rules: dict[int, RuleName] = field(default_factory=dict)  # enforce-view rules by key
    audit_rules: dict[int, RuleName] = field(default_factory=dict)

    def add(self, key: bytes, value: bytes) -> None:
        self.keys.append(key)
        self.values.append(value)

    @property
    def entries(self) -> int:
        return len(self.keys)


# The hot path packs whole keys with one Struct each (28 bytes: see _key); the port is
# stored in network order, i.e. packed as the native int of its big-endian bytes.
_PEER_KEY = struct.Struct("=IBBBBI16s")
_PORT_KEY = struct.Struct("=IBBBBIIBBH8x")


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


def _compile_direction(
    out: CompiledRuleSet, endpoint: int, direction: Direction, view: View, rules: DirectionRules
) -> None:
    direction_id, view_id = DIRECTIONS[direction], VIEWS[view]
    keys = [rule_key(rule.policy, direction, rule.index) for rule in rules.rules]
    names = out.rules if view == "enforce" else out.audit_rules
    for rule, number in zip(rules.rules, keys, strict=True):
        names[number] = RuleName(rule.policy, direction, rule.index)
    add_key, add_value = out.keys.append, out.values.append
    pack_peer, pack_port, pack = _PEER_KEY.pack, _PORT_KEY.pack, _VALUE.pack
    classes: dict[frozenset[int], int] = {}  # rule set -> class id, in order of appearance
    for prefix in peer_partition(rules.rules):
        peer_class = classes.setdefault(prefix.rules, len(classes)) if prefix.rules else NO_CLASS
        add_key(
            pack_peer(
                ADDR_PREFIX_BASE + prefix.length, TABLE_PEER, view_id, direction_id, 0, endpoint,
                prefix.value.to_bytes(16),
            )
        )  # fmt: skip
        add_value(pack(peer_class, 0, 0))
    # Port prefixes of each distinct port list, deduplicated: rules often share one.
    prefixes_of: dict[tuple[PortRange, ...], tuple[tuple[int, int, int], ...]] = {}
    for rule in rules.rules:
        if rule.ports not in prefixes_of:
            found = (p for port_range in rule.ports for p in _port_prefixes(port_range))
            prefixes_of[rule.ports] = tuple(dict.fromkeys(found))
    port_rules: dict[bytes, int] = {}
    for members, peer_class in classes.items():
        if len(members) == 1:
            # One rule: its prefixes are distinct already, so no entry can repeat.
            (index,) = members
            credited = pack(0, 0, keys[index])
            for prefixlen, protocol, port in prefixes_of[rules.rules[index].ports]:
                add_key(
                    pack_port(
                        prefixlen, TABLE_PORT, view_id, direction_id, 0, endpoint, peer_class,
                        protocol, 0, port,
                    )
                )  # fmt: skip
                add_value(credited)
            continue
        # Lowest rule index first: on an identical prefix the first rule is credited.
        for index in sorted(members):
            for prefixlen, protocol, port in prefixes_of[rules.rules[index].ports]:
                key = pack_port(
                    prefixlen, TABLE_PORT, view_id, direction_id, 0, endpoint, peer_class,
                    protocol, 0, port,
                )  # fmt: skip
                if key not in port_rules:
                    port_rules[key] = keys[index]
    for key, credited_key in port_rules.items():
        add_key(key)
        add_value(pack(0, 0, credited_key))


_SIDES = (
    ("ingress", INGRESS_ISOLATED, AUDIT_INGRESS_ISOLATED, AUDIT_INGRESS_DIFFERS),
    ("egress", EGRESS_ISOLATED, AUDIT_EGRESS_ISOLATED, AUDIT_EGRESS_DIFFERS),
)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Compiling allocates hundreds of thousands of small objects and no cycles; the
    cyclic collector would otherwise rescan every live object again and again (it
    more than doubled the time of a 10,000-rule compile)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile_rule_set(endpoints: Iterable[EndpointRules], revision: int) -> CompiledRuleSet:
    """The whole trie for these endpoints. Endpoint ids are positions in address order
    (they only need to be unique within one rule set: each set is a trie of its own)."""
    with _gc_paused():
        return _compile_rule_set(endpoints, revision)


def _compile_rule_set(endpoints: Iterable[EndpointRules], revision: int) -> CompiledRuleSet:
    compiled = CompiledRuleSet(revision)
    ordered = sorted(endpoints, key=lambda e: address_bits(e.address))
    for previous, current in itertools.pairwise(ordered):
        if previous.address == current.address:
            raise ValueError(
                f"{previous.endpoint} and {current.endpoint} share the address {current.address}"
            )
    for endpoint_id, rules in enumerate(ordered, start=1):
        flags = 0
        for side, isolated, audit_isolated, audit_differs in _SIDES:
            direction: Direction = "ingress" if side == "ingress" else "egress"
            enforce = rules.ingress if direction == "ingress" else rules.egress
            audit = rules.audit_ingress if direction == "ingress" else rules.audit_egress
            if enforce.isolated:
                flags |= isolated
                _compile_direction(compiled, endpoint_id, direction, "enforce", enforce)
            if audit.isolated:
                flags |= audit_isolated
            if audit is not enforce and audit != enforce:
                # Only a view that differs needs entries of its own (and lookups).
                flags |= audit_differs
                if audit.isolated:
                    _compile_direction(compiled, endpoint_id, direction, "audit", audit)
        compiled.add(endpoint_key(rules.address), pack_value(endpoint_id, flags))
    compiled.endpoints = len(ordered)
    compiled.add(META_KEY, pack_value(compiled.endpoints, len(compiled.rules), revision))
    return compiled


# -------------------------------------------------------------------- the kernel


class DatapathError(Exception):
    """The datapath could not be set up or changed; what ran before still runs."""


@dataclass(frozen=True)
class Applied:
    revision: int
    endpoints: int
    rules: int
    audit_rules: int
    entries: int
    compile_seconds: float
    load_seconds: float  # creating and filling the new trie
    # The single outer-map update. The kernel returns from it only after an RCU grace
    # period, so once apply() returns no packet is still being decided by the old set.
    swap_seconds: float


@dataclass(frozen=True)
class Enforced:
    """What the kernel enforces now, read back from it."""

    revision: int | None  # None: no rule set yet (nothing is isolated)
    endpoints: int
    rules: int
    entries: int
    verdicts: dict[str, tuple[int, int]]  # name -> (packets, bytes)
    rule_flows: dict[str, int]  # rule (name, or hex key if unknown) -> flows allowed

    @property
    def allowed(self) -> int:
        return self.verdicts["allowed"][0]

    @property
    def denied(self) -> int:
        return self.verdicts["denied_egress"][0] + self.verdicts["denied_ingress"][0]

    @property
    def audit_denied(self) -> int:
        return self.verdicts["audit_denied"][0]


def assignment(
    interfaces: Sequence[str], name: str = PROGRAM_NAME, artifact: ArtifactRef = ARTIFACT
) -> ProgramAssignment:
    """The program entry that runs ``netpol`` on both tc hooks of these host-side veths."""
    # The spec needs an interface even before any endpoint exists; the hooks actually
    # attached always come from ``hooks_for``.
    targets = tuple(interfaces) or ("lo",)
    attach = tuple(
        AttachPoint(entry_point=entry, type=AttachKind.TC, direction=hook, interfaces=targets)
        for entry, hook in ((FROM_POD_ENTRY, FROM_POD_HOOK), (TO_POD_ENTRY, TO_POD_HOOK))
    )
    return ProgramAssignment(name=name, spec=BpfProgramSpec(artifact=artifact, attach=attach))


def hooks_for(desired: loading.Desired, interfaces: Sequence[str]) -> loading.Desired:
    """``desired`` attached to exactly these host-side veths (both tc hooks of each)."""
    hooks = tuple(
        Hook(entry, AttachKind.TC, interface, direction)
        for interface in interfaces
        for entry, direction in ((FROM_POD_ENTRY, FROM_POD_HOOK), (TO_POD_ENTRY, TO_POD_HOOK))
    )
    return replace(desired, hooks=hooks)


def prepare(
    interfaces: Sequence[str],
    *,
    artifact_dirs: Sequence[Path],
    trust: signing.TrustStore,
    report: features.FeatureReport,
    name: str = PROGRAM_NAME,
    artifact: ArtifactRef = ARTIFACT,
    permits: NodePermits | None = None,
) -> loading.Desired:
    """Verify and check the ``netpol`` artifact like any program; raise if refused.
    Of ``permits`` only the minimum versions apply: the hooks are the node's own."""
    prepared = preparing.prepare(
        assignment(interfaces, name, artifact),
        artifact_dirs=artifact_dirs,
        trust=trust,
        report=report,
        permits=(permits or NodePermits()).versions_only(),
    )
    if isinstance(prepared, preparing.Rejection):
        raise DatapathError(f"{prepared.state.value} ({prepared.reason}): {prepared.message}")
    return hooks_for(prepared, interfaces)


class PolicyDatapath:
    """The ``netpol`` program of one pin root: attach it, swap rule sets, read counters.

    Holds open fds of the pinned maps; ``close()`` (or ``with``) releases them, and
    ``remove()`` detaches and unpins everything.
    """

    def __init__(self, kernel: loading.Kernel, desired: loading.Desired) -> None:
        self.kernel = kernel
        self.desired = desired
        self._fds: dict[str, int] = {}
        self._names: dict[int, RuleName] = {}

    # -- lifecycle

    def start(
        self, endpoints: Iterable[EndpointRules] | None = None, revision: int | None = None
    ) -> Applied | None:
        """Load, pin and attach ``desired``, adopting or upgrading what is pinned.

        On a fresh node the rules go in before any hook exists, so no packet ever runs
        without them. A running copy keeps its rule set (an upgrade hands the maps to
        the new version) unless ``endpoints`` replaces it. ``revision`` labels the rule
        set, as in ``apply``.
        """
        observed = loading.observe(self.kernel).get(self.desired.name)
        applied = None
        if observed is None or not observed.links:
            self._load(replace(self.desired, hooks=()))
            applied = self.apply(endpoints or (), revision)
            self._load(self.desired)
            return applied
        self._load(self.desired)
        if endpoints is not None or self._active_inner_id() is None:
            applied = self.apply(endpoints or (), revision)
        return applied

    def attach(self, desired: loading.Desired) -> None:
        """Make the links exactly ``desired.hooks`` (new endpoints, removed endpoints)."""
        self.desired = desired
        self._load(desired)

    def _load(self, desired: loading.Desired) -> None:
        observed = loading.observe(self.kernel).get(desired.name)
        try:
            loading.apply(self.kernel, desired, observed)
        except (loading.NotLoaded, loading.NotAttached) as error:
            raise DatapathError(str(error)) from error
        self._open_maps(desired.tag)

    def _open_maps(self, tag: str) -> None:
        program = pins.for_program(self.kernel.pin_root, self.desired.name)
        for map_name in ("active_rules", "flows", "verdict_stats", "rule_stats"):
            fd = libbpf.get_pinned(program.map(tag, map_name))
            if map_name in self._fds:
                os.close(self._fds[map_name])
            self._fds[map_name] = fd

    def map_path(self, map_name: str) -> Path:
        return pins.for_program(self.kernel.pin_root, self.desired.name).map(
            self.desired.tag, map_name
        )

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def remove(self) -> None:
        """Detach every link and unpin the program and its maps."""
        self.close()
        loading.remove(self.kernel, self.desired.name)

    def __enter__(self) -> PolicyDatapath:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- rule sets

    def apply(self, endpoints: Iterable[EndpointRules], revision: int | None = None) -> Applied:
        """Replace the whole rule set atomically; counters and tracked flows carry on.

        The new trie is built and filled while nothing reads it, then one update of the
        outer map's slot makes it the rule set every later packet reads. If anything
        fails before that update, the old rule set stays in force untouched.
        """
        started = time.perf_counter()
        if revision is None:
            current = self.enforced_revision()
            revision = 1 if current is None else current + 1
        compiled = compile_rule_set(endpoints, revision)
        compiled_at = time.perf_counter()
        trie = libbpf.map_create(
            "lpm_trie",
            f"netpol_r{revision}",
            KEY_SIZE,
            VALUE_SIZE,
            compiled.entries,
            flags=1,  # BPF_F_NO_PREALLOC: LPM tries require it
        )
        try:
            libbpf.map_update_batch(
                trie, b"".join(compiled.keys), b"".join(compiled.values), compiled.entries
            )
            filled_at = time.perf_counter()
            libbpf.map_update(
                self._fds["active_rules"], struct.pack("=I", 0), struct.pack("=I", trie)
            )
            swapped_at = time.perf_counter()
        except libbpf.LibbpfError as error:
            raise DatapathError(f"rule set {revision} not applied: {error}") from error
        finally:
            os.close(trie)  # the outer map holds the trie now (or nothing does)
        self._names.update(compiled.rules)
        return Applied(
            revision=revision,
            endpoints=compiled.endpoints,
            rules=len(compiled.rules),
            audit_rules=len(compiled.audit_rules),
            entries=compiled.entries,
            compile_seconds=compiled_at - started,
            load_seconds=filled_at - compiled_at,
            swap_seconds=swapped_at - filled_at,
        )

    def _active_inner_id(self) -> int | None:
        raw = libbpf.map_lookup(self._fds["active_rules"], struct.pack("=I", 0), 4)
        return struct.unpack("=I", raw)[0] if raw else None

    def _active_meta(self) -> tuple[int, int, int, int] | None:
        """(revision, endpoints, rules, entries) of the trie in force, from the kernel."""
        inner_id = self._active_inner_id()
        if inner_id is None:
            return None
        try:
            fd = libbpf.map_fd_by_id(inner_id)
        except libbpf.LibbpfError:
            return None  # swapped out and freed between the two calls
        try:
            raw = libbpf.map_lookup(fd, META_KEY, VALUE_SIZE)
            entries = libbpf.map_info(fd).max_entries
        finally:
            os.close(fd)
        if raw is None:
            return None
        endpoints, rules, revision = _VALUE.unpack(raw)
        return revision, endpoints, rules, entries

    def enforced_revision(self) -> int | None:
        meta = self._active_meta()
        return meta[0] if meta else None

    def flush_flows(self) -> int:
        """Forget every tracked flow (the next packet of each is decided afresh)."""
        fd = self._fds["flows"]
        keys = list(libbpf.map_keys(fd, FLOW_KEY_SIZE))
        return sum(libbpf.map_delete(fd, key) for key in keys)

    # -- reporting

    def enforced(self, per_rule: bool = True) -> Enforced:
        """``per_rule=False`` skips reading every rule's flow count (one lookup per
        rule), for callers that only want the totals, often."""
        meta = self._active_meta()
        totals = loading.read_counter_map(self.map_path("verdict_stats"))
        verdicts = {
            name: (totals.get(index, (0, 0))[0], totals.get(index, (0, 0))[1])
            for index, name in enumerate(VERDICTS)
        }
        return Enforced(
            revision=meta[0] if meta else None,
            endpoints=meta[1] if meta else 0,
            rules=meta[2] if meta else 0,
            entries=meta[3] if meta else 0,
            verdicts=verdicts,
            rule_flows=self.rule_flows() if per_rule else {},
        )

    def rule_flows(self) -> dict[str, int]:
        """Flows allowed per rule since the program was loaded, summed over CPUs."""
        fd = self._fds["rule_stats"]
        cpus = libbpf.num_possible_cpus()
        flows: dict[str, int] = {}
        for key in list(libbpf.map_keys(fd, 8)):
            raw = libbpf.map_lookup(fd, key, 8 * cpus)
            if raw is None:
                continue
            total = sum(struct.unpack(f"={cpus}Q", raw))
            (number,) = struct.unpack("=Q", key)
            name = self._names.get(number)
            flows[str(name) if name else f"{number:016x}"] = total
        return flows
