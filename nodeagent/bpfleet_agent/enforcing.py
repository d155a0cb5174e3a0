"""The policy part of the desired state, enforced on this node's endpoints.

The part is compiled for the endpoints the endpoints file declares (those the fleet
topology places on this node, at the same IP, whose host-side veth exists) and put
into the ``netpol`` datapath. A node no policy applies to runs no datapath at all:
nothing is isolated there, and its pods' traffic pays for nothing. A part that cannot
be enforced leaves what is enforced in place, and the report says why.

A new part is mostly the last one with a small change. The part comes from
``policyparts`` with unchanged pieces as the same objects, the compiler's cache turns
those into the same rules, and the datapath writes only the entries that differ: a
one-rule change costs about one rule's work, whatever the size of the policy.

Reports carry counters per policy and rule, bounded in number: the ones that changed
since the last report the API took (``delivered``), the largest changes first.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bpfleet_agent import datapath, libbpf, loading, preparing
from bpfleet_agent.desired import EndpointsFile
from bpfleet_agent.gcpause import gc_paused
from bpfleet_agent.permits import NodePermits
from bpfleet_core import features, signing
from bpfleet_core.netpol import compiling
from bpfleet_core.netpol.models import selects
from bpfleet_core.protocol import (
    MAX_REPORTED_POLICIES,
    MAX_REPORTED_RULES,
    POLICY_ARTIFACT,
    POLICY_PROGRAM,
    PolicyAssignment,
    PolicyCounters,
    PolicyReport,
    PolicyState,
    ProgramState,
    RuleCounter,
)
from bpfleet_core.resources import ArtifactRef

log = logging.getLogger(__name__)

# (policy, direction, rule index) for flows; (policy, "denied" | "audit_denied", 0).
CounterKey = tuple[str, str, int]


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Enforcement:
    """How the last change was enforced, for logs and benchmarks."""

    revision: int
    rules_seconds: float  # verifying the datapath if needed, and policies -> rules
    applied: datapath.Applied | None  # None: a running datapath kept its rule set

    @property
    def in_force_seconds(self) -> float:
        applied = self.applied.in_force_seconds if self.applied is not None else 0.0
        return self.rules_seconds + applied


@dataclass(frozen=True)
class _Prepared:
    """A verified ``netpol`` for these hooks, and what it was verified against."""

    artifact: ArtifactRef
    interfaces: tuple[str, ...]
    trust: signing.TrustStore
    report: features.FeatureReport
    desired: loading.Desired


class PolicyEnforcer:
    """The ``netpol`` datapath of one pin root, and what was last enforced with it."""

    def __init__(
        self,
        kernel: loading.Kernel,
        *,
        node_name: str,
        artifact_dirs: Sequence[Path],
        endpoints: EndpointsFile,
        permits: NodePermits | None = None,
    ) -> None:
        self.kernel = kernel
        self.node_name = node_name
        self.artifact_dirs = list(artifact_dirs)
        self.endpoints = endpoints
        self.permits = permits or NodePermits()
        self._datapath: datapath.PolicyDatapath | None = None
        self._cache = compiling.CompileCache()
        self._prepared: _Prepared | None = None
        # What was last applied (the part, by identity: the reader hands back the same
        # object for the same part) and the local endpoints it was applied on; the
        # policies in force, as namespace/name@generation.
        self._applied: tuple[PolicyAssignment, tuple[tuple[str, str], ...]] | None = None
        self._refs: list[str] = []
        self.last_enforcement: Enforcement | None = None
        # Counter values the API has (from delivered reports), and those of reports
        # built but not yet delivered.
        # (``delivered`` runs on the reporter's thread, hence the lock.)
        self._reported: dict[CounterKey, int] = {}
        self._reported_epoch: int | None = None
        self._pending: list[tuple[PolicyReport, dict[CounterKey, int]]] = []
        self._reports_lock = threading.Lock()

    def reconcile(
        self,
        part: PolicyAssignment | None,
        error: str,
        held: preparing.Rejection | None,
        pinned: bool,
        *,
        trust: signing.TrustStore,
        report: features.FeatureReport,
    ) -> PolicyReport | None:
        """Enforce ``part`` on this node's endpoints; None when no part applies and no
        datapath runs. ``held``: why the ``netpol`` artifact is not here yet.
        ``pinned``: the datapath's pins exist (perhaps from an earlier run).

        Never raises: whatever goes wrong is the report's message, and what was
        enforced stays enforced."""
        try:
            return self._reconcile(part, error, held, pinned, trust=trust, report=report)
        except Exception as failure:
            log.exception("the policy part failed; what was enforced stays")
            return self._status(
                PolicyState.FAILED, f"policy part failed: {type(failure).__name__}: {failure}"
            )

    def _reconcile(
        self,
        part: PolicyAssignment | None,
        error: str,
        held: preparing.Rejection | None,
        pinned: bool,
        *,
        trust: signing.TrustStore,
        report: features.FeatureReport,
    ) -> PolicyReport | None:
        declared = self.endpoints.read()
        if error:
            return self._status(PolicyState.FAILED, f"policy assignment: {error}")
        if part is None:
            problem = self._remove(pinned)
            return self._status(PolicyState.FAILED, problem) if problem else None
        if part.artifact is None:
            return self._status(
                PolicyState.FAILED, "the fleet API has no netpol artifact to enforce policies with"
            )
        if part.artifact.name != POLICY_ARTIFACT:
            # Whatever its signature, another artifact is no policy datapath: swapping it in
            # would end enforcement. What is enforced stays.
            return self._status(
                PolicyState.FAILED,
                f"the policy part names artifact {part.artifact.name}, not {POLICY_ARTIFACT}; "
                "refused",
            )
        if held is not None:
            state = (
                PolicyState.PENDING if held.state == ProgramState.PENDING else PolicyState.FAILED
            )
            return self._status(state, f"netpol artifact: {held.message}")
        pods = part.topology.pods
        assigned = sorted(
            endpoint.key
            for endpoint in (declared.endpoints if declared else ())
            if (pod := pods.get(endpoint.key)) is not None
            and pod.node == self.node_name
            and pod.ip == endpoint.ip
        )
        mine = {endpoint.key: endpoint for endpoint in (declared.endpoints if declared else ())}
        present = [key for key in assigned if _interface_exists(mine[key].interface)]
        absent = sorted(set(assigned) - set(present))
        notes = [f"no interface for {', '.join(absent)}"] if absent else []
        if not present:
            problem = self._remove(pinned)
            return self._status(
                PolicyState.FAILED if problem else PolicyState.ENFORCING,
                problem or "; ".join([*notes, "none of its endpoints is here to enforce on"]),
            )
        local = tuple((key, mine[key].interface) for key in present)
        if self._applied is None or self._applied != (part, local) or self._datapath is None:
            try:
                with gc_paused():
                    self._enforce(part, present, sorted({i for _, i in local}), trust, report)
            except (datapath.DatapathError, ValueError, libbpf.LibbpfError, OSError) as failure:
                log.error("policy revision %d not enforced: %s", part.revision, failure)
                return self._status(
                    PolicyState.FAILED, f"revision {part.revision} not enforced: {failure}"
                )
            self._applied = (part, local)
            self._refs = [
                assigned_policy.ref
                for assigned_policy in part.policies
                if any(selects(assigned_policy.document, part.topology, key) for key in present)
            ]
            log.info(
                "policy revision %d enforced on %d endpoint(s): %s",
                part.revision,
                len(present),
                ", ".join(self._refs) or "no policy selects them",
            )
        return self._status(PolicyState.ENFORCING, "; ".join(notes))

    def _prepare(
        self,
        artifact: ArtifactRef,
        interfaces: list[str],
        trust: signing.TrustStore,
        report: features.FeatureReport,
    ) -> loading.Desired:
        """The verified datapath for these hooks: verified again only when the artifact,
        the trust store or the kernel's features changed (the verified bytes are kept)."""
        hooks = tuple(interfaces)
        known = self._prepared
        if (
            known is not None
            and known.artifact == artifact
            and known.trust is trust
            and known.report is report
        ):
            if known.interfaces == hooks:
                return known.desired
            desired = datapath.hooks_for(known.desired, interfaces)
        else:
            desired = datapath.prepare(
                interfaces,
                artifact_dirs=self.artifact_dirs,
                trust=trust,
                report=report,
                name=POLICY_PROGRAM,
                artifact=artifact,
                permits=self.permits,
            )
        self._prepared = _Prepared(artifact, hooks, trust, report, desired)
        return desired

    def _enforce(
        self,
        part: PolicyAssignment,
        present: list[str],
        interfaces: list[str],
        trust: signing.TrustStore,
        report: features.FeatureReport,
    ) -> None:
        assert part.artifact is not None
        started = time.perf_counter()
        desired = self._prepare(part.artifact, interfaces, trust, report)
        rules = compiling.compile_policies(
            [assigned.document for assigned in part.policies],
            part.topology,
            node_endpoints=set(present),
            cache=self._cache,
        )
        compiled = time.perf_counter() - started
        if self._datapath is None:
            policy = datapath.PolicyDatapath(self.kernel, desired)
            try:
                applied = policy.start(rules.values(), revision=part.revision)
            except BaseException:
                policy.close()
                raise
            self._datapath = policy
        else:
            # Rules first: a new endpoint's hook never runs without its rules.
            applied = self._datapath.apply(rules.values(), part.revision)
            if desired is not self._datapath.desired:
                self._datapath.attach(desired)
        self._cache.release()  # what the last part compiled to, now the new one is in force
        self.last_enforcement = Enforcement(part.revision, compiled, applied)

    def _remove(self, pinned: bool) -> str:
        """Detach and unpin the datapath; why not, if it could not be."""
        if self._datapath is None and not pinned:
            return ""
        try:
            if self._datapath is not None:
                self._datapath.remove()
            else:
                loading.remove(self.kernel, POLICY_PROGRAM)  # left by an earlier run
        except (libbpf.LibbpfError, OSError) as error:
            log.error("policy datapath not removed: %s", error)
            return f"the policy datapath could not be removed: {error}"
        log.info("policy datapath removed: no policy applies to this node's endpoints")
        self._datapath, self._applied, self._refs = None, None, []
        return ""

    # -- reports

    def delivered(self, report: PolicyReport | None) -> None:
        """The API took ``report``: its counter values are the API's now."""
        with self._reports_lock:
            for index, (pending, values) in enumerate(self._pending):
                if pending is report:
                    self._reported.update(values)
                    del self._pending[: index + 1]
                    return

    def _status(self, state: PolicyState, message: str) -> PolicyReport:
        """What is in force now (read back from the kernel), in ``state``."""
        if self.endpoints.error:
            message = "; ".join(part for part in (message, self.endpoints.error) if part)
        enforced = epoch = None
        counters: list[PolicyCounters] = []
        values: dict[CounterKey, int] = {}
        if self._datapath is not None:
            try:
                enforced = self._datapath.enforced()
                epoch = self._datapath.counters_epoch()
                counters, values = self._counters(epoch)
            except (libbpf.LibbpfError, OSError) as error:
                message = "; ".join(part for part in (message, f"counters: {error}") if part)
        report = PolicyReport(
            state=state,
            message=message,
            revision=enforced.revision if enforced else None,
            policies=list(self._refs) if enforced else [],
            endpoints=enforced.endpoints if enforced else 0,
            rules=enforced.rules if enforced else 0,
            entries=enforced.entries if enforced else 0,
            allowed=enforced.allowed if enforced else 0,
            denied=enforced.denied if enforced else 0,
            audit_denied=enforced.audit_denied if enforced else 0,
            counters_since=epoch,
            counters=counters,
            updated_at=datetime.now(UTC),
        )
        if values:
            with self._reports_lock:
                self._pending = [*self._pending[-3:], (report, values)]
        return report

    def _counters(self, epoch: int) -> tuple[list[PolicyCounters], dict[CounterKey, int]]:
        """The counters that differ from what the API has, the largest changes first,
        within the report's bounds; and their values."""
        assert self._datapath is not None
        current: dict[CounterKey, int] = {}
        for policy, counts in self._datapath.counters().items():
            for (direction, index), flows in counts.flows.items():
                current[(policy, direction, index)] = flows
            current[(policy, "denied", 0)] = counts.denied
            current[(policy, "audit_denied", 0)] = counts.audit_denied
        with self._reports_lock:
            if epoch != self._reported_epoch:
                # Counters that started again from zero: what the API has is another life's.
                self._reported, self._reported_epoch, self._pending = {}, epoch, []
            self._reported = {k: v for k, v in self._reported.items() if k in current}
            reported = dict(self._reported)
        return counters_to_report(current, reported)


def counters_to_report(
    current: Mapping[CounterKey, int], reported: Mapping[CounterKey, int]
) -> tuple[list[PolicyCounters], dict[CounterKey, int]]:
    """The counters of ``current`` that differ from what the API has (``reported``),
    the largest changes first, within a report's bounds (rules, policies); and the
    values included. A policy listed carries its totals, changed or not."""
    changed = sorted(
        (key for key, value in current.items() if reported.get(key, 0) != value),
        key=lambda key: current[key] - reported.get(key, 0),
        reverse=True,
    )
    by_policy: dict[str, PolicyCounters] = {}
    values: dict[CounterKey, int] = {}
    rules = 0
    for key in changed:
        policy, kind, index = key
        counters = by_policy.get(policy)
        if counters is None:
            if len(by_policy) == MAX_REPORTED_POLICIES:
                continue
            counters = by_policy[policy] = PolicyCounters(policy=policy)
        if kind in ("ingress", "egress"):
            if rules == MAX_REPORTED_RULES:
                continue
            counters.rules.append(RuleCounter(direction=kind, index=index, flows=current[key]))
            rules += 1
        values[key] = current[key]
    for policy, counters in by_policy.items():
        counters.denied = current.get((policy, "denied", 0), 0)
        counters.audit_denied = current.get((policy, "audit_denied", 0), 0)
        values[(policy, "denied", 0)] = counters.denied
        values[(policy, "audit_denied", 0)] = counters.audit_denied
    return sorted(by_policy.values(), key=lambda item: item.policy), values
