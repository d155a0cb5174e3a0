"""Network policies in the fleet: endpoints, policies, what each node must enforce, and
what each node reports enforcing. Like ``fleet``, these functions never commit.

Distribution: a node's policy part holds every policy that selects one of its endpoints
(node selectors honoured), the fleet topology the compiler resolves peers against, and
the newest ``netpol`` artifact. ``sync`` recomputes every node's part after any change
that can alter one (a policy, an endpoint set, node labels, a new ``netpol`` upload) and
bumps the revision of exactly the nodes whose part differs. Policies reach all selected
nodes at once: there are no rollout steps, as in Kubernetes.

Concurrency: every such change first updates the one ``PolicyEpoch`` row (``lock``).
On PostgreSQL that row lock queues the changes, and each one's reads then see what the
previous one committed; on SQLite the update takes the database's write lock. Without
it two changes could each recompute from a view lacking the other's, and a node would
keep a stale part without a revision to tell it otherwise.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import update
from sqlmodel import Session, col, select

from bpfleet_api.fleet import Changes, Conflict, Invalid, NotFound, _bump
from bpfleet_api.models import (
    Artifact,
    Node,
    NodeEndpoints,
    NodePolicy,
    NodePolicyAssignment,
    NodePolicyStatus,
    Policy,
    PolicyEpoch,
    utcnow,
)
from bpfleet_core.netpol import models, validating
from bpfleet_core.protocol import (
    POLICY_ARTIFACT,
    AssignedPolicy,
    Endpoint,
    EndpointSet,
    PolicyAssignment,
    PolicyReport,
    PolicyState,
    parse_policy_ref,
)
from bpfleet_core.resources import ArtifactRef

_POLICY = TypeAdapter[models.Policy](models.AnyPolicy)
_LOCKED = "bpfleet.policy-lock"

ENFORCING, PENDING, FAILED, REMOVING = "Enforcing", "Pending", "Failed", "Removing"


# ------------------------------------------------------------------------- locking


def lock(session: Session) -> None:
    """Serialise policy redistribution (see the module's docstring). Call it before
    changing any node row in the same transaction, so two changes never wait on each
    other's rows in opposite orders. Idempotent within a transaction."""
    transaction = session.get_transaction()
    if transaction is not None and session.info.get(_LOCKED) is transaction:
        return
    result = session.execute(
        update(PolicyEpoch).where(col(PolicyEpoch.id) == 1).values(epoch=col(PolicyEpoch.epoch) + 1)
    )
    if getattr(result, "rowcount", 1) == 0:  # a database the migration did not seed
        session.add(PolicyEpoch(id=1, epoch=1))
        session.flush()
    session.info[_LOCKED] = session.get_transaction()


# ------------------------------------------------------------------------ endpoints


def hosts_endpoints(session: Session, node: str) -> bool:
    row = session.get(NodeEndpoints, node)
    return row is not None and bool(row.endpoints)


def endpoints_of(session: Session, node: str) -> list[Endpoint]:
    row = session.get(NodeEndpoints, node)
    return [Endpoint.model_validate(item) for item in row.endpoints] if row else []


def put_endpoints(session: Session, node: str, declared: EndpointSet) -> Changes:
    """Store what a node declares; refuse endpoints or IPs another node holds."""
    lock(session)
    keys = {endpoint.key: endpoint for endpoint in declared.endpoints}
    addresses = {str(endpoint.ip): endpoint for endpoint in declared.endpoints}
    problems = []
    for other in session.exec(select(NodeEndpoints).where(NodeEndpoints.node != node)).all():
        for item in other.endpoints:
            theirs = Endpoint.model_validate(item)
            if theirs.key in keys:
                problems.append(f"endpoint {theirs.key} is on node {other.node}")
            elif str(theirs.ip) in addresses:
                problems.append(
                    f"endpoint {addresses[str(theirs.ip)].key}: IP {theirs.ip} belongs to "
                    f"{theirs.key} on node {other.node}"
                )
    if problems:
        raise Conflict("endpoints held by other nodes", problems)
    endpoints = [endpoint.model_dump(mode="json", by_alias=True) for endpoint in keys.values()]
    namespaces = {name: dict(labels) for name, labels in sorted(declared.namespaces.items())}
    row = session.get(NodeEndpoints, node)
    if row is not None and row.endpoints == endpoints and row.namespaces == namespaces:
        return Changes()  # said again (an agent restart): nothing to recompute
    row = row or NodeEndpoints(node=node)
    row.endpoints, row.namespaces, row.updated_at = endpoints, namespaces, utcnow()
    session.add(row)
    session.flush()
    return sync(session)


def forget_node(session: Session, node: str) -> None:
    """Drop a node's endpoints and policy state (the node itself is being deleted)."""
    lock(session)
    for table in (NodeEndpoints, NodePolicyAssignment, NodePolicyStatus):
        row = session.get(table, node)
        if row is not None:
            session.delete(row)
    for row in session.exec(select(NodePolicy).where(NodePolicy.node == node)).all():
        session.delete(row)
    session.flush()


def fleet_topology(session: Session) -> models.Topology:
    """Every endpoint with its node, the namespaces with labels, and the labels of the
    nodes hosting endpoints. Built in a fixed order, so the same fleet state gives the
    same document (and fingerprint)."""
    labels = dict(session.exec(select(Node.name, Node.labels)).all())
    pods: dict[str, models.Pod] = {}
    owners: set[str] = set()
    namespaces: dict[str, dict[str, str]] = {}
    rows = session.exec(select(NodeEndpoints).order_by(col(NodeEndpoints.node))).all()
    for row in rows:
        if row.node not in labels:
            continue
        for name, namespace_labels in row.namespaces.items():
            merged = namespaces.setdefault(name, {})
            for key, value in namespace_labels.items():
                merged.setdefault(key, value)  # nodes disagreeing: the first by name wins
        for item in row.endpoints:
            endpoint = Endpoint.model_validate(item)
            if endpoint.key in pods or str(endpoint.ip) in owners:
                continue  # put_endpoints refuses these; never let one break the topology
            owners.add(str(endpoint.ip))
            pods[endpoint.key] = models.Pod(
                labels=dict(sorted(endpoint.labels.items())),
                ip=endpoint.ip,
                ports=tuple(endpoint.ports),
                node=row.node,
            )
    for key in pods:
        namespaces.setdefault(key.partition("/")[0], {})
    hosts = sorted({pod.node for pod in pods.values() if pod.node is not None})
    return models.Topology(
        namespaces={name: dict(sorted(namespaces[name].items())) for name in sorted(namespaces)},
        pods=dict(sorted(pods.items())),
        nodes={name: dict(sorted(dict(labels[name]).items())) for name in hosts},
    )


def netpol_artifact(session: Session) -> ArtifactRef | None:
    """The newest uploaded ``netpol`` artifact, digest pinned."""
    newest = session.exec(
        select(Artifact)
        .where(Artifact.name == POLICY_ARTIFACT)
        .order_by(col(Artifact.uploaded_at).desc())
    ).first()
    if newest is None:
        return None
    return ArtifactRef(name=newest.name, version=newest.version, digest=newest.digest)


# ----------------------------------------------------------------------- distribution


def _parsed(row: Policy) -> models.Policy:
    return _POLICY.validate_python(row.document)


def _fingerprint(
    artifact: ArtifactRef | None, topology_digest: str, policies: Mapping[tuple[str, str], int]
) -> str:
    lines = [
        artifact.digest or "" if artifact else "",
        topology_digest,
        *(f"{ns}/{name}@{generation}" for (ns, name), generation in sorted(policies.items())),
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def sync(session: Session) -> Changes:
    """Recompute every node's policy part; bump and report the nodes whose part changed."""
    lock(session)
    rows = session.exec(select(Policy)).all()
    assigned = {row.node: row for row in session.exec(select(NodePolicyAssignment)).all()}
    marks = session.exec(select(NodePolicy)).all()
    if not rows and not assigned and not marks:
        return Changes()  # no policies anywhere: nothing to compute (most fleets, often)
    wanted: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    artifact, topology_digest = None, ""
    if rows:
        topology = fleet_topology(session)
        by_namespace: dict[str, list[str]] = defaultdict(list)
        for key in topology.pods:
            by_namespace[topology.namespace_of(key)].append(key)
        for row in rows:
            policy = _parsed(row)
            for key in by_namespace.get(row.namespace, ()):
                node = topology.pods[key].node
                if node is not None and models.selects(policy, topology, key):
                    wanted[node][(row.namespace, row.name)] = row.generation
        artifact = netpol_artifact(session)
        dumped = topology.model_dump_json(by_alias=True).encode()
        topology_digest = hashlib.sha256(dumped).hexdigest()
    changes = Changes()
    # Sorted, so concurrent writers of several node rows always take them in one order.
    for node in sorted(set(wanted) | set(assigned)):
        current = assigned.get(node)
        targets = wanted.get(node)
        if not targets:
            if current is not None:
                _bump(session, node)
                session.delete(current)
                changes.nodes.add(node)
            continue
        fingerprint = _fingerprint(artifact, topology_digest, targets)
        if current is not None and current.fingerprint == fingerprint:
            continue
        revision = _bump(session, node)
        current = current or NodePolicyAssignment(node=node, revision=revision, fingerprint="")
        current.revision, current.fingerprint = revision, fingerprint
        current.artifact = artifact.model_dump(mode="json", by_alias=True) if artifact else None
        session.add(current)
        changes.nodes.add(node)
    _mark_desired(session, marks, wanted)
    session.flush()
    return changes


def _mark_desired(
    session: Session,
    marks: Iterable[NodePolicy],
    wanted: Mapping[str, Mapping[tuple[str, str], int]],
) -> None:
    seen = set()
    for mark in marks:
        generation = wanted.get(mark.node, {}).get((mark.namespace, mark.name))
        seen.add((mark.node, mark.namespace, mark.name))
        if mark.desired_generation == generation:
            continue
        if generation is None and mark.enforced_generation is None:
            session.delete(mark)
            continue
        mark.desired_generation, mark.updated_at = generation, utcnow()
        session.add(mark)
    for node, targets in wanted.items():
        for (namespace, name), generation in targets.items():
            if (node, namespace, name) not in seen:
                session.add(
                    NodePolicy(
                        node=node, namespace=namespace, name=name, desired_generation=generation
                    )
                )


def part_of(session: Session, node: str) -> PolicyAssignment | None:
    """The policy part of a node's assignments (None: no policy selects its endpoints)."""
    row = session.get(NodePolicyAssignment, node)
    if row is None:
        return None
    marks = session.exec(
        select(NodePolicy)
        .where(NodePolicy.node == node, col(NodePolicy.desired_generation).is_not(None))
        .order_by(col(NodePolicy.namespace), col(NodePolicy.name))
    ).all()
    policies = []
    for mark in marks:
        policy = session.get(Policy, (mark.namespace, mark.name))
        if policy is not None:
            policies.append(AssignedPolicy(generation=policy.generation, document=_parsed(policy)))
    return PolicyAssignment(
        revision=row.revision,
        artifact=ArtifactRef.model_validate(row.artifact) if row.artifact else None,
        policies=policies,
        topology=fleet_topology(session),
    )


# --------------------------------------------------------------------------- policies


def validate_document(
    namespace: str, name: str, document: dict[str, Any]
) -> validating.ValidatedPolicy:
    """The validator's verdict on a PUT body, whose metadata must name the path's policy
    (missing metadata is filled in from the path)."""
    metadata = document.get("metadata")
    if metadata is None:
        metadata = {}
    if isinstance(metadata, dict):
        metadata = {"name": name, "namespace": namespace, **metadata}
        problems = [
            f'metadata.{field}: Invalid value: "{metadata[field]}": must match the {field} in '
            f'the path ("{expected}")'
            for field, expected in (("namespace", namespace), ("name", name))
            if metadata[field] != expected
        ]
        if problems:
            raise Invalid(f"NetworkPolicy {namespace}/{name}: metadata does not match", problems)
        document = {**document, "metadata": metadata}
    try:
        return validating.validate(document)
    except validating.PolicyValidationError as error:
        raise Invalid(
            f"NetworkPolicy {namespace}/{name} is invalid",
            [str(problem) for problem in error.problems],
        ) from error


def stored_form(policy: models.Policy) -> dict[str, Any]:
    return policy.model_dump(mode="json", by_alias=True, exclude_none=True)


def put_policy(
    session: Session, namespace: str, name: str, document: dict[str, Any]
) -> tuple[Policy, list[str], Changes]:
    """Store a policy; a changed document bumps its generation and redistributes it.
    The same document again changes nothing. Returns the validator's warnings too."""
    validated = validate_document(namespace, name, document)
    stored = stored_form(validated.policy)
    warnings = [str(warning) for warning in validated.warnings]
    lock(session)
    row = session.get(Policy, (namespace, name))
    if row is not None and row.document == stored:
        return row, warnings, Changes()
    if row is None:
        row = Policy(namespace=namespace, name=name, generation=1, mode="", document=stored)
    else:
        row.generation += 1
        row.document, row.updated_at = stored, utcnow()
    row.mode = validated.policy.mode
    session.add(row)
    session.flush()
    return row, warnings, sync(session)


def get_policy(session: Session, namespace: str, name: str) -> Policy:
    row = session.get(Policy, (namespace, name))
    if row is None:
        raise NotFound(f"NetworkPolicy {namespace}/{name} does not exist")
    return row


def delete_policy(session: Session, namespace: str, name: str) -> Changes:
    """Forget a policy; it stays listed on each node until the node reports it gone."""
    lock(session)
    session.delete(get_policy(session, namespace, name))
    session.flush()
    return sync(session)


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class PolicySummary:
    desired: int
    enforcing: int
    failed: int
    pending: int


@dataclass(frozen=True)
class NodeRow:
    node: str
    generation: int | None  # what the node enforces; None: nothing of this policy yet
    state: str
    message: str
    updated_at: Any


def _row_state(mark: NodePolicy, status: NodePolicyStatus | None) -> tuple[str, str]:
    said = status.message if status is not None else ""
    if mark.desired_generation is None:
        return REMOVING, (
            f"no longer assigned; the node still enforces generation {mark.enforced_generation}"
        )
    if mark.enforced_generation == mark.desired_generation:
        return ENFORCING, said
    if status is not None and status.state == PolicyState.FAILED.value:
        return FAILED, said
    if status is None:
        return PENDING, "the node has not reported enforcing it yet"
    if mark.enforced_generation is not None:
        return PENDING, f"the node enforces generation {mark.enforced_generation}; {said}".rstrip(
            "; "
        )
    return PENDING, said


def _statuses(session: Session, nodes: Iterable[str]) -> dict[str, NodePolicyStatus]:
    wanted = sorted(set(nodes))
    if not wanted:
        return {}
    return {
        row.node: row
        for row in session.exec(
            select(NodePolicyStatus).where(col(NodePolicyStatus.node).in_(wanted))
        ).all()
    }


def node_rows(session: Session, namespace: str, name: str) -> list[NodeRow]:
    marks = session.exec(
        select(NodePolicy)
        .where(NodePolicy.namespace == namespace, NodePolicy.name == name)
        .order_by(col(NodePolicy.node))
    ).all()
    statuses = _statuses(session, (mark.node for mark in marks))
    rows = []
    for mark in marks:
        state, message = _row_state(mark, statuses.get(mark.node))
        rows.append(NodeRow(mark.node, mark.enforced_generation, state, message, mark.updated_at))
    return rows


def summaries(session: Session, policies: Iterable[Policy]) -> dict[tuple[str, str], PolicySummary]:
    keys = {(policy.namespace, policy.name) for policy in policies}
    query = select(NodePolicy).where(col(NodePolicy.desired_generation).is_not(None))
    if len(keys) == 1:  # one policy's view: its rows only, by the (namespace, name) index
        ((namespace, name),) = keys
        query = query.where(NodePolicy.namespace == namespace, NodePolicy.name == name)
    marks = [mark for mark in session.exec(query).all() if (mark.namespace, mark.name) in keys]
    statuses = _statuses(session, (mark.node for mark in marks))
    counts: dict[tuple[str, str], dict[str, int]] = {
        key: {ENFORCING: 0, FAILED: 0, PENDING: 0} for key in keys
    }
    for mark in marks:
        state, _ = _row_state(mark, statuses.get(mark.node))
        counts[(mark.namespace, mark.name)][state] += 1
    return {
        key: PolicySummary(
            desired=sum(count.values()),
            enforcing=count[ENFORCING],
            failed=count[FAILED],
            pending=count[PENDING],
        )
        for key, count in counts.items()
    }


def status_of(session: Session, node: str) -> PolicyReport | None:
    row = session.get(NodePolicyStatus, node)
    return PolicyReport.model_validate(row.report) if row is not None else None


def record_report(session: Session, node: str, report: PolicyReport | None) -> None:
    """Store what a node enforces; None means nothing (its datapath is gone)."""
    status = session.get(NodePolicyStatus, node)
    enforced: dict[tuple[str, str], int] = {}
    if report is None:
        if status is not None:
            session.delete(status)
    else:
        status = status or NodePolicyStatus(node=node, state=report.state.value)
        status.state, status.message = report.state.value, report.message
        status.revision = report.revision
        status.report = report.model_dump(mode="json", by_alias=True)
        status.updated_at = utcnow()
        session.add(status)
        for ref in report.policies:
            namespace, name, generation = parse_policy_ref(ref)
            enforced[(namespace, name)] = generation
    marks = {
        (mark.namespace, mark.name): mark
        for mark in session.exec(select(NodePolicy).where(NodePolicy.node == node)).all()
    }
    for key, mark in marks.items():
        now_enforced = enforced.get(key)
        if mark.enforced_generation == now_enforced:
            continue
        if now_enforced is None and mark.desired_generation is None:
            session.delete(mark)
            continue
        mark.enforced_generation, mark.updated_at = now_enforced, utcnow()
        session.add(mark)
    for (namespace, name), generation in enforced.items():
        if (namespace, name) not in marks:
            session.add(
                NodePolicy(
                    node=node, namespace=namespace, name=name, enforced_generation=generation
                )
            )
