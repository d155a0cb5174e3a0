"""The policy part of the desired state, enforced on this node's endpoints.

The part is compiled for the endpoints the endpoints file declares (those the fleet
topology places on this node, at the same IP, whose host-side veth exists) and swapped
into the ``netpol`` datapath. A node no policy applies to runs no datapath at all:
nothing is isolated there, and its pods' traffic pays for nothing. A part that cannot
be enforced leaves what is enforced in place, and the report says why.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bpfleet_agent import datapath, libbpf, loading, preparing
from bpfleet_agent.desired import EndpointsFile
from bpfleet_agent.permits import NodePermits
from bpfleet_core import features, signing
from bpfleet_core.netpol import compiling
from bpfleet_core.netpol.models import selects
from bpfleet_core.protocol import (
    POLICY_ARTIFACT,
    POLICY_PROGRAM,
    PolicyAssignment,
    PolicyReport,
    PolicyState,
    ProgramState,
)

log = logging.getLogger(__name__)


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


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
        # What was last applied (a digest of the part and the local endpoints), and the
        # policies in force, as namespace/name@generation.
        self._applied: str | None = None
        self._refs: list[str] = []
        # The part last seen and its digest: a part carries the fleet's whole topology,
        # too much to hash again on every pass.
        self._part: tuple[PolicyAssignment, str] | None = None

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
        topology = part.topology
        mine = {endpoint.key: endpoint for endpoint in (declared.endpoints if declared else ())}
        assigned = [
            key
            for key, pod in topology.pods.items()
            if pod.node == self.node_name and key in mine and mine[key].ip == pod.ip
        ]
        present = [key for key in assigned if _interface_exists(mine[key].interface)]
        absent = sorted(set(assigned) - set(present))
        notes = [f"no interface for {', '.join(absent)}"] if absent else []
        if not present:
            problem = self._remove(pinned)
            return self._status(
                PolicyState.FAILED if problem else PolicyState.ENFORCING,
                problem or "; ".join([*notes, "none of its endpoints is here to enforce on"]),
            )
        interfaces = sorted({mine[key].interface for key in present})
        if self._part is None or self._part[0] is not part:
            digest = hashlib.sha256(part.model_dump_json(by_alias=True).encode()).hexdigest()
            self._part = (part, digest)
        applied = f"{self._part[1]} {[(key, mine[key].interface) for key in present]}"
        if applied != self._applied or self._datapath is None:
            try:
                self._enforce(part, present, interfaces, trust, report)
            except (datapath.DatapathError, ValueError, libbpf.LibbpfError, OSError) as failure:
                log.error("policy revision %d not enforced: %s", part.revision, failure)
                return self._status(
                    PolicyState.FAILED, f"revision {part.revision} not enforced: {failure}"
                )
            self._applied = applied
            self._refs = [
                assigned_policy.ref
                for assigned_policy in part.policies
                if any(selects(assigned_policy.document, topology, key) for key in present)
            ]
            log.info(
                "policy revision %d enforced on %d endpoint(s): %s",
                part.revision,
                len(present),
                ", ".join(self._refs) or "no policy selects them",
            )
        return self._status(PolicyState.ENFORCING, "; ".join(notes))

    def _enforce(
        self,
        part: PolicyAssignment,
        present: list[str],
        interfaces: list[str],
        trust: signing.TrustStore,
        report: features.FeatureReport,
    ) -> None:
        assert part.artifact is not None
        desired = datapath.prepare(
            interfaces,
            artifact_dirs=self.artifact_dirs,
            trust=trust,
            report=report,
            name=POLICY_PROGRAM,
            artifact=part.artifact,
            permits=self.permits,
        )
        rules = compiling.compile_policies(
            [assigned.document for assigned in part.policies],
            part.topology,
            node_endpoints=set(present),
        )
        if self._datapath is None:
            policy = datapath.PolicyDatapath(self.kernel, desired)
            try:
                policy.start(rules.values(), revision=part.revision)
            except BaseException:
                policy.close()
                raise
            self._datapath = policy
            return
        # Rules first: a new endpoint's hook never runs without its rules.
        self._datapath.apply(rules.values(), part.revision)
        self._datapath.attach(desired)

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

    def _status(self, state: PolicyState, message: str) -> PolicyReport:
        """What is in force now (read back from the kernel), in ``state``."""
        if self.endpoints.error:
            message = "; ".join(part for part in (message, self.endpoints.error) if part)
        enforced = None
        if self._datapath is not None:
            try:
                enforced = self._datapath.enforced()
            except (libbpf.LibbpfError, OSError) as error:
                message = "; ".join(part for part in (message, f"counters: {error}") if part)
        return PolicyReport(
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
            updated_at=datetime.now(UTC),
        )
