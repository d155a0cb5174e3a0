"""The network-policy datapath: the ``netpol`` program and its rule sets in the kernel.

``netpol`` is loaded and attached through ``loading`` (verified, pinned, adopted after
restarts like any program). Its rules live in two LPM tries, one per slot of the
``rule_sets`` map, and the one-entry array ``active_slot`` says which decides (the
layout is ``rulesets``'). Applying a rule set:

1. ``rulesets.RuleSetBuilder`` compiles it against the last one: the change, entry by
   entry (a new policy: everything; one rule of ten thousand: that rule's entries).
2. The change is written into the idle slot's trie, which no packet reads (a trie of
   its own, filled whole, when the change is most of it or the trie is full).
3. One write of ``active_slot`` puts it in force: every packet that starts deciding
   from then on reads the new slot, and each packet reads ``active_slot`` once.
4. After an RCU grace period (no packet can still be deciding with the slot left
   behind) the same change goes into that slot too, so the next change is again
   written once per slot. Step 3 is when the rules are in force; step 4 only readies
   the next swap.

Counters live outside the tries and survive every swap: flows allowed per rule, and
what each endpoint's policies denied, under keys the builder can name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bpfleet_agent import libbpf, loading, pins, preparing
from bpfleet_agent.permits import NodePermits
from bpfleet_agent.reconciling import Hook
from bpfleet_agent.rulesets import (
    DENY_KINDS,
    KEY_SIZE,
    META_COUNTS_KEY,
    META_KEY,
    VALUE,
    VALUE_SIZE,
    Delta,
    Denier,
    Direction,
    RuleNames,
    RuleSetBuilder,
    rule_base,
)
from bpfleet_core import features, signing
from bpfleet_core.manifests import AttachKind
from bpfleet_core.netpol.rules import EndpointRules
from bpfleet_core.protocol import POLICY_ARTIFACT, ProgramAssignment
from bpfleet_core.resources import ArtifactRef, AttachPoint, BpfProgramSpec

log = logging.getLogger(__name__)

ARTIFACT = ArtifactRef(name=POLICY_ARTIFACT, version="2.0.0")
PROGRAM_NAME = "netpol"
# Entry points and the tc hook of the HOST-side veth each one runs on.
FROM_POD_ENTRY, FROM_POD_HOOK = "pod_egress", "ingress"
TO_POD_ENTRY, TO_POD_HOOK = "pod_ingress", "egress"
# The maps this agent drives; an artifact without them is another layout.
MAPS = ("active_slot", "rule_sets", "flows", "verdict_stats", "rule_stats", "deny_stats")

FLOW_KEY_SIZE = 40  # struct netpol_flow
DENY_KEY = struct.Struct("=QII")  # struct netpol_deny
VERDICTS = ("allowed", "tracked", "denied_egress", "denied_ingress", "audit_denied", "not_ip")
SLOTS = 2
# A trie holds up to twice its entries (no memory is reserved: LPM tries allocate per
# entry), so changes go into it in place until it doubles.
_HEADROOM, _MIN_CAPACITY = 2, 4096
_SLOT_KEYS = [struct.pack("=I", slot) for slot in range(SLOTS)]
# Names of counters no longer live are kept up to twice the live ones and this many.
_FORGET_SLACK = 1024


def _counter_number(key: bytes) -> int:
    """The rule or deny key a counter map's key starts with."""
    number: int = struct.unpack_from("=Q", key)[0]
    return number


class DatapathError(Exception):
    """The datapath could not be set up or changed; what ran before still runs."""


@dataclass(frozen=True)
class Applied:
    revision: int
    endpoints: int
    rules: int
    audit_rules: int
    entries: int
    written: int  # entries written into the slot put in force
    rebuilt: bool  # that slot got a trie of its own, filled whole
    compile_seconds: float
    write_seconds: float
    # The write of active_slot: from its return, every new decision uses these rules.
    flip_seconds: float
    # An RCU grace period, then the same change into the slot left behind.
    settle_seconds: float

    @property
    def in_force_seconds(self) -> float:
        return self.compile_seconds + self.write_seconds + self.flip_seconds


@dataclass(frozen=True)
class Enforced:
    """What the kernel enforces now, read back from it."""

    revision: int | None  # None: no rule set yet (nothing is isolated)
    endpoints: int
    rules: int
    entries: int
    verdicts: dict[str, tuple[int, int]]  # name -> (packets, bytes)

    @property
    def allowed(self) -> int:
        return self.verdicts["allowed"][0]

    @property
    def denied(self) -> int:
        return self.verdicts["denied_egress"][0] + self.verdicts["denied_ingress"][0]

    @property
    def audit_denied(self) -> int:
        return self.verdicts["audit_denied"][0]


@dataclass
class Counts:
    """What one policy did on this node since the datapath was loaded."""

    flows: dict[tuple[Direction, int], int] = field(default_factory=dict)  # per rule
    denied: int = 0  # packets dropped at endpoints it isolates
    audit_denied: int = 0  # flows passed that it would drop (audit mode)


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
    missing = [name for name in MAPS if name not in {m.name for m in prepared.manifest.maps}]
    if missing:
        raise DatapathError(
            f"{artifact.name}@{artifact.version} is not a policy datapath this agent can "
            f"drive: it lacks the maps {', '.join(missing)} (netpol {ARTIFACT.version} has them)"
        )
    return hooks_for(prepared, interfaces)


@dataclass
class _Slot:
    fd: int
    map_id: int
    capacity: int


class PolicyDatapath:
    """The ``netpol`` program of one pin root: attach it, apply rule sets, read counters.

    Holds open fds of the pinned maps and tries; ``close()`` (or ``with``) releases
    them, and ``remove()`` detaches and unpins everything.
    """

    def __init__(self, kernel: loading.Kernel, desired: loading.Desired) -> None:
        self.kernel = kernel
        self.desired = desired
        self._fds: dict[str, int] = {}
        self._rule_sets_id: int | None = None
        self._slots: list[_Slot | None] = [None] * SLOTS
        # What the counters' keys stand for: kept across builders.
        self.names = RuleNames()
        self.deniers: dict[int, Denier] = {}
        self._builder = RuleSetBuilder(self.names, self.deniers)
        # Both slots hold exactly the builder's rule set: a change goes into each.
        self._in_sync = False

    # -- lifecycle

    def start(
        self, endpoints: Iterable[EndpointRules] | None = None, revision: int | None = None
    ) -> Applied | None:
        """Load, pin and attach ``desired``, adopting or upgrading what is pinned.

        Rules go in before any link runs a freshly loaded version, so no packet ever
        runs without them. A running copy keeps its rule set (an upgrade hands the
        maps to the new version) unless ``endpoints`` replaces it. ``revision`` labels
        the rule set, as in ``apply``.
        """
        applied: list[Applied] = []

        def fill(tag: str) -> None:
            self._open_maps(tag)
            if endpoints is not None or self._active_trie() is None:
                applied.append(self.apply(endpoints or (), revision))

        self._load(self.desired, fill)
        return applied[0] if applied else None

    def attach(self, desired: loading.Desired) -> None:
        """Make the links exactly ``desired.hooks`` (new endpoints, removed endpoints)."""
        self.desired = desired
        self._load(desired)

    def _load(
        self, desired: loading.Desired, before_links: Callable[[str], None] | None = None
    ) -> None:
        observed = loading.observe(self.kernel).get(desired.name)
        try:
            loading.apply(self.kernel, desired, observed, before_links=before_links)
        except (loading.NotLoaded, loading.NotAttached) as error:
            raise DatapathError(str(error)) from error
        self._open_maps(desired.tag)

    def _open_maps(self, tag: str) -> None:
        program = pins.for_program(self.kernel.pin_root, self.desired.name)
        opened: dict[str, int] = {}
        try:
            for map_name in MAPS:
                opened[map_name] = libbpf.get_pinned(program.map(tag, map_name))
        except libbpf.LibbpfError as error:
            for fd in opened.values():
                os.close(fd)
            raise DatapathError(f"{self.desired.name}: cannot open its maps: {error}") from error
        self.close_maps()
        self._fds = opened
        rule_sets_id = libbpf.map_info(opened["rule_sets"]).id
        if rule_sets_id != self._rule_sets_id:
            # Another program's rule sets (an upgrade that could not hand them over, or
            # a restarted agent): what each slot holds is not what the builder knows.
            self._rule_sets_id = rule_sets_id
            self._close_slots()
            self._reset_builder()
            for slot in range(SLOTS):
                self._slots[slot] = self._installed(slot)

    def _installed(self, slot: int) -> _Slot | None:
        raw = libbpf.map_lookup(self._fds["rule_sets"], _SLOT_KEYS[slot], 4)
        if raw is None:
            return None
        try:
            fd = libbpf.map_fd_by_id(struct.unpack("=I", raw)[0])
        except libbpf.LibbpfError:
            return None
        info = libbpf.map_info(fd)
        return _Slot(fd, info.id, info.max_entries)

    def map_path(self, map_name: str) -> Path:
        return pins.for_program(self.kernel.pin_root, self.desired.name).map(
            self.desired.tag, map_name
        )

    def close_maps(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}

    def _close_slots(self) -> None:
        for slot in self._slots:
            if slot is not None:
                with contextlib.suppress(OSError):
                    os.close(slot.fd)
        self._slots = [None] * SLOTS

    def close(self) -> None:
        self.close_maps()
        self._close_slots()
        self._rule_sets_id = None
        self._in_sync = False

    def remove(self) -> None:
        """Detach every link and unpin the program and its maps."""
        self.close()
        loading.remove(self.kernel, self.desired.name)

    def __enter__(self) -> PolicyDatapath:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- rule sets

    def _reset_builder(self) -> None:
        self._builder = RuleSetBuilder(self.names, self.deniers)
        self._in_sync = False

    def reset(self) -> None:
        """Forget what the slots hold: the next rule set is written whole into each, as
        after a restart."""
        self._reset_builder()

    def _check_slots(self) -> None:
        """Trust no slot whose trie is not the one this object put there (another
        process, a restarted agent of the same pins, replaced it)."""
        for slot in range(SLOTS):
            raw = libbpf.map_lookup(self._fds["rule_sets"], _SLOT_KEYS[slot], 4)
            installed = struct.unpack("=I", raw)[0] if raw else None
            current = self._slots[slot]
            if (current.map_id if current is not None else None) != installed:
                if current is not None:
                    os.close(current.fd)
                self._slots[slot] = self._installed(slot)
                self._reset_builder()

    def apply(self, endpoints: Iterable[EndpointRules], revision: int | None = None) -> Applied:
        """Put this rule set in force (see the module's docstring); counters and tracked
        flows carry on. If anything fails before the flip, the rule set in force stays
        untouched; a failure after it only costs the next change a fuller write."""
        started = time.perf_counter()
        self._check_slots()
        if revision is None:
            current = self.enforced_revision()
            revision = 1 if current is None else current + 1
        try:
            delta = self._builder.build(endpoints, revision)
        except ValueError:
            raise  # refused before the builder changed anything
        except Exception:
            self._reset_builder()
            raise
        compiled_at = time.perf_counter()
        in_sync, self._in_sync = self._in_sync, False
        active = self._active_slot()
        standby = 1 - active
        try:
            written, rebuilt = self._bring(standby, delta, in_sync)
            written_at = time.perf_counter()
            libbpf.map_update(self._fds["active_slot"], _SLOT_KEYS[0], _SLOT_KEYS[standby])
        except (libbpf.LibbpfError, OSError) as error:
            self._reset_builder()  # it is ahead of both slots now
            raise DatapathError(f"rule set {revision} not applied: {error}") from error
        flipped_at = time.perf_counter()
        self._builder.release()
        try:
            if self._fits(active, delta, in_sync):
                self._await_grace_period(active)
            self._bring(active, delta, in_sync)
            self._in_sync = True
        except (libbpf.LibbpfError, OSError) as error:
            log.warning("the idle rule-set slot lags (the next change rewrites it): %s", error)
        try:
            self._forget_old_counters()
        except libbpf.LibbpfError as error:
            log.warning("old counters not removed: %s", error)
        return Applied(
            revision=revision,
            endpoints=delta.endpoints,
            rules=delta.rules,
            audit_rules=delta.audit_rules,
            entries=delta.entries,
            written=written,
            rebuilt=rebuilt,
            compile_seconds=compiled_at - started,
            write_seconds=written_at - compiled_at,
            flip_seconds=flipped_at - written_at,
            settle_seconds=time.perf_counter() - flipped_at,
        )

    def _forget_old_counters(self) -> None:
        """Drop the counters of policies and endpoints long gone, once they outnumber the
        live ones: the counter maps are bounded, and each rule seen would keep an entry.
        (Their last increments may not have been reported: a bounded loss, once.)"""
        builder = self._builder
        cpus = libbpf.num_possible_cpus()
        if len(self.names) > 2 * len(builder.live_bases) + _FORGET_SLACK:
            dead = set(self.names.bases) - builder.live_bases
            fd = self._fds["rule_stats"]
            old = []
            for key, _ in libbpf.map_items(fd, 8, 8 * cpus):
                name = self.names.get(_counter_number(key))
                if name is None or rule_base(name.policy, name.direction) in dead:
                    old.append(key)
            libbpf.map_delete_batch(fd, b"".join(old), len(old))
            self.names.forget(dead)
        if len(self.deniers) > 2 * len(builder.live_deniers) + _FORGET_SLACK:
            gone = set(self.deniers) - builder.live_deniers
            fd = self._fds["deny_stats"]
            old = [
                key
                for key, _ in libbpf.map_items(fd, DENY_KEY.size, 8 * cpus)
                if _counter_number(key) in gone
            ]
            libbpf.map_delete_batch(fd, b"".join(old), len(old))
            for number in gone:
                del self.deniers[number]

    def _active_slot(self) -> int:
        raw = libbpf.map_lookup(self._fds["active_slot"], _SLOT_KEYS[0], 4)
        return struct.unpack("=I", raw)[0] % SLOTS if raw else 0

    def _bring(self, slot: int, delta: Delta, in_sync: bool) -> tuple[int, bool]:
        """Make ``slot`` hold the builder's rule set: ``delta`` written into its trie
        when it holds the one before, else a trie of its own. (entries written, rebuilt)"""
        current = self._slots[slot]
        entries = self._builder.entries
        if current is not None and self._fits(slot, delta, in_sync):
            if delta.deletes:
                libbpf.map_delete_batch(current.fd, b"".join(delta.deletes), len(delta.deletes))
            if delta.upserts:
                libbpf.map_update_batch(
                    current.fd,
                    b"".join(delta.upserts.keys()),
                    b"".join(delta.upserts.values()),
                    len(delta.upserts),
                )
            return delta.size, False
        capacity = max(_MIN_CAPACITY, len(entries) * _HEADROOM)
        trie = libbpf.map_create(
            "lpm_trie",
            f"netpol_r{delta.revision}",
            KEY_SIZE,
            VALUE_SIZE,
            capacity,
            flags=1,  # BPF_F_NO_PREALLOC: LPM tries require it
        )
        try:
            libbpf.map_update_batch(
                trie, b"".join(entries.keys()), b"".join(entries.values()), len(entries)
            )
            # Installing a map into a slot waits for a grace period; this slot is idle.
            libbpf.map_update(self._fds["rule_sets"], _SLOT_KEYS[slot], struct.pack("=I", trie))
        except BaseException:
            os.close(trie)
            raise
        if current is not None:
            os.close(current.fd)
        self._slots[slot] = _Slot(trie, libbpf.map_info(trie).id, capacity)
        return len(entries), True

    def _fits(self, slot: int, delta: Delta, in_sync: bool) -> bool:
        """Whether ``delta`` goes into ``slot``'s trie in place: it holds the rule set
        before, has room, and the change is not most of it."""
        current = self._slots[slot]
        entries = len(self._builder.entries)
        return (
            in_sync
            and current is not None
            and entries <= current.capacity
            and delta.size * 2 <= entries
        )

    def _await_grace_period(self, slot: int) -> None:
        """Return once no packet can still be deciding with ``slot``'s trie: installing
        the same trie in its slot again waits for an RCU grace period."""
        current = self._slots[slot]
        if current is not None:
            libbpf.map_update(
                self._fds["rule_sets"], _SLOT_KEYS[slot], struct.pack("=I", current.fd)
            )

    def _active_trie(self) -> _Slot | None:
        return self._slots[self._active_slot()]

    def _active_meta(self) -> tuple[int, int, int, int] | None:
        """(revision, endpoints, rules, entries) of the rule set in force."""
        trie = self._active_trie()
        if trie is None:
            return None
        raw = libbpf.map_lookup(trie.fd, META_KEY, VALUE_SIZE)
        counts = libbpf.map_lookup(trie.fd, META_COUNTS_KEY, VALUE_SIZE)
        if raw is None:
            return None
        endpoints, rules, revision = VALUE.unpack(raw)
        entries = VALUE.unpack(counts)[0] if counts is not None else 0
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

    def enforced(self) -> Enforced:
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
        )

    def counters_epoch(self) -> int:
        """Changes when the counters start again from zero (their map was made anew)."""
        return libbpf.map_info(self._fds["rule_stats"]).id

    def rule_flows(self) -> dict[int, int]:
        """Flows credited per rule key since the program was loaded, summed over CPUs."""
        cpus = libbpf.num_possible_cpus()
        flows: dict[int, int] = {}
        for key, value in libbpf.map_items(self._fds["rule_stats"], 8, 8 * cpus):
            (number,) = struct.unpack("=Q", key)
            flows[number] = sum(struct.unpack(f"={cpus}Q", value))
        return flows

    def denials(self) -> dict[tuple[int, int], int]:
        """(deny key, kind) -> packets denied or flows audit-denied, summed over CPUs."""
        cpus = libbpf.num_possible_cpus()
        counted: dict[tuple[int, int], int] = {}
        for key, value in libbpf.map_items(self._fds["deny_stats"], DENY_KEY.size, 8 * cpus):
            number, kind, _ = DENY_KEY.unpack(key)
            counted[(number, kind)] = sum(struct.unpack(f"={cpus}Q", value))
        return counted

    def counters(self) -> dict[str, Counts]:
        """Per policy (``namespace/name``): flows per rule, what it denied and would deny.
        Keys this agent cannot name (rules of a rule set from before its start that no
        later one had) are left out."""
        return by_policy(self.rule_flows(), self.denials(), self.names, self.deniers)


def by_policy(
    flows: dict[int, int],
    denials: dict[tuple[int, int], int],
    names: RuleNames,
    deniers: dict[int, Denier],
) -> dict[str, Counts]:
    """Counters by key -> by policy. A denial counts for every policy that decided it:
    an isolated direction denies what none of its policies allows."""
    result: dict[str, Counts] = {}
    for number, count in flows.items():
        name = names.get(number)
        if name is not None and count:
            counters = result.setdefault(name.policy, Counts())
            counters.flows[(name.direction, name.rule_index)] = count
    for (number, kind), count in denials.items():
        denier = deniers.get(number)
        if denier is None or not count or kind >= len(DENY_KINDS):
            continue
        audit = DENY_KINDS[kind][1] == "audit"
        for policy in denier.policies[kind]:
            counters = result.setdefault(policy, Counts())
            if audit:
                counters.audit_denied += count
            else:
                counters.denied += count
    return result
