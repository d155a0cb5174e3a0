"""Network policies in the fleet: endpoints, policies, what each node must enforce, and
what each node reports enforcing. Like ``fleet``, these functions never commit.

Distribution: a node's policy part holds every policy that selects one of its endpoints
(node selectors honoured), the newest ``netpol`` artifact, and the topology narrowed to
what those policies can reach: the node's own pods, the pods their rules can resolve
to, those pods' namespaces and the node's own labels (``bpfleet_core.netpol.narrowing``;
the rest of the fleet changes nothing the node enforces). After any change that can
alter a part (a policy, a node's endpoints, workloads or pod CIDRs, namespace or node
labels, a new ``netpol`` upload), ``sync`` asks ``policyindex`` which nodes it can
concern and bumps the revision of exactly those whose part's fingerprint differs: an
endpoint change reaches the nodes whose policies can select it, and its own node.
Policies reach all selected nodes at once: there are no rollout steps, as in Kubernetes.

Counters: each node reports, per policy, flows per rule and what it denied; they are
kept per node and policy (``NodePolicy.counters``), for the generation the node
enforces, and summed over the fleet in the policy's views.

Concurrency: every such change first updates the one ``PolicyEpoch`` row (``lock``).
On PostgreSQL that row lock queues the changes, and each one's reads then see what the
previous one committed; on SQLite the update takes the database's write lock. Without
it two changes could each recompute from a view lacking the other's, and a node would
keep a stale part without a revision to tell it otherwise.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from bpfleet_api import policyindex
from bpfleet_api.changes import (
    Changes,
    Conflict,
    Invalid,
    NotFound,
    bump_revisions,
    get_node,
)
from bpfleet_api.models import (
    Artifact,
    Namespace,
    Node,
    NodeEndpoints,
    NodePolicy,
    NodePolicyAssignment,
    NodePolicyStatus,
    NodeWorkloads,
    Policy,
    PolicyEpoch,
    utcnow,
)
from bpfleet_core.netpol import models, validating
from bpfleet_core.netpol.models import Address, Network
from bpfleet_core.protocol import (
    POLICY_ARTIFACT,
    AssignedPolicy,
    Endpoint,
    EndpointSet,
    PolicyAssignment,
    PolicyReport,
    PolicyState,
    Workload,
    parse_policy_ref,
)
from bpfleet_core.resources import ArtifactRef

_LOCKED = "bpfleet.policy-lock"
_IN_CHUNK = 500  # values in one IN (...): SQLite limits the parameters of a statement

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
#
# The topology is built from what an admin says, never from a node's word alone: an
# admin (the operator, from Kubernetes) sets namespace labels, each node's pod CIDRs
# and, where it can, each node's workloads. An agent declares its endpoints; only IPs
# inside its node's pod CIDRs are taken, and once an admin set the node's workloads,
# those are its entries and the agent adds only their interfaces.


def _ranges(node: Node) -> list[Network]:
    return [ipaddress.ip_network(cidr) for cidr in node.pod_cidrs or []]


def _inside(address: Address, ranges: Iterable[Network]) -> bool:
    return any(address in network for network in ranges)


def _workloads(session: Session, node: str) -> dict[str, Workload] | None:
    """The workloads an admin set for a node, by key; None when none were set."""
    row = session.get(NodeWorkloads, node)
    if row is None:
        return None
    return {item.key: item for item in map(Workload.model_validate, row.workloads)}


def _declared(session: Session, node: str) -> list[Endpoint]:
    row = session.get(NodeEndpoints, node)
    return [Endpoint.model_validate(item) for item in row.endpoints] if row else []


def _vouched(endpoint: Endpoint, workloads: Mapping[str, Workload] | None) -> bool:
    """Is the endpoint one of the workloads an admin set (same name, same IP)?"""
    workload = workloads.get(endpoint.key) if workloads is not None else None
    return workload is not None and workload.ip == endpoint.ip


def hosts_endpoints(session: Session, node: str) -> bool:
    workloads = session.get(NodeWorkloads, node)
    declared = session.get(NodeEndpoints, node)
    return bool(workloads and workloads.workloads) or bool(declared and declared.endpoints)


def entries_of(session: Session, node: Node) -> list[Workload]:
    """A node's entries in the topology: the admin's workloads if set, else the
    endpoints its agent declared inside its pod CIDRs."""
    workloads = _workloads(session, node.name)
    if workloads is not None:
        return list(workloads.values())
    ranges = _ranges(node)
    return [e for e in _declared(session, node.name) if _inside(e.ip, ranges)]


def endpoints_of(session: Session, node: str) -> list[Endpoint]:
    """A node's entries with the interfaces its agent declared for them: labels, IP and
    ports from the topology's source, the interface from the agent."""
    row = session.get(Node, node)
    if row is None:
        return []
    interfaces = {(e.key, e.ip): e.interface for e in _declared(session, node)}
    return [
        Endpoint(
            **entry.model_dump(exclude={"interface"}), interface=interfaces[(entry.key, entry.ip)]
        )
        for entry in entries_of(session, row)
        if (entry.key, entry.ip) in interfaces
    ]


def _too_many(node: str, count: int, limit: int) -> Invalid:
    return Invalid(
        f"node {node} has {count} endpoints; at most {limit} are allowed "
        "(BPFLEET_API_MAX_ENDPOINTS_PER_NODE)"
    )


def put_endpoints(session: Session, node: str, declared: EndpointSet, limit: int) -> Changes:
    """Store what a node's agent declares: each IP inside the node's pod CIDRs (or one of
    the workloads an admin set for it), none held by another node. Namespace labels in
    the declaration are ignored: they are an admin's (``put_namespace``)."""
    lock(session)
    row = get_node(session, node)
    if len(declared.endpoints) > limit:
        raise _too_many(node, len(declared.endpoints), limit)
    workloads = _workloads(session, node)
    ranges = _ranges(row)
    shown = ", ".join(map(str, ranges)) or "none set"
    outside = [
        f"endpoint {endpoint.key}: IP {endpoint.ip} is outside the node's pod CIDRs ({shown})"
        for endpoint in declared.endpoints
        if not _vouched(endpoint, workloads) and not _inside(endpoint.ip, ranges)
    ]
    if outside:
        raise Invalid(
            f"node {node} may declare endpoints only inside its pod CIDRs ({shown})", outside
        )
    if workloads is None:
        _refuse_held(session, node, declared.endpoints)
    endpoints = [e.model_dump(mode="json", by_alias=True) for e in declared.endpoints]
    stored = session.get(NodeEndpoints, node)
    if stored is not None and stored.endpoints == endpoints:
        return Changes()  # said again (an agent restart): nothing to recompute
    stored = stored or NodeEndpoints(node=node)
    stored.endpoints, stored.updated_at = endpoints, utcnow()
    session.add(stored)
    session.flush()
    return sync(session)


def _refuse_held(session: Session, node: str, endpoints: list[Endpoint]) -> None:
    """Refuse endpoints, or IPs, that another node's entries hold."""
    index = policyindex.current(session, writing=True)
    problems = []
    with index.lock:
        for endpoint in endpoints:
            by_key, by_ip = index.claimants(endpoint.key, endpoint.ip)
            if others := sorted(by_key - {node}):
                problems.append(f"endpoint {endpoint.key} is on node {others[0]}")
            elif others := sorted(by_ip - {node}):
                holder = next(
                    entry.key for _, entry in index.claims_of(others[0]) if entry.ip == endpoint.ip
                )
                problems.append(
                    f"endpoint {endpoint.key}: IP {endpoint.ip} belongs to {holder} on node "
                    f"{others[0]}"
                )
    if problems:
        raise Conflict("endpoints held by other nodes", problems)


def set_pod_cidrs(session: Session, node: str, cidrs: list[Network]) -> tuple[Node, Changes]:
    """Set the ranges a node's agent may declare endpoints in (a Kubernetes Node's
    ``spec.podCIDRs``); declared endpoints outside them leave the topology."""
    lock(session)
    row = get_node(session, node)
    row.pod_cidrs = [str(cidr) for cidr in cidrs]
    session.add(row)
    session.flush()
    return row, sync(session)


def set_workloads(session: Session, node: str, workloads: list[Workload], limit: int) -> Changes:
    """Set what runs on a node (the operator sends the node's pods): from now on the
    node's topology entries are exactly these; its agent only adds their interfaces."""
    lock(session)
    get_node(session, node)
    if len(workloads) > limit:
        raise _too_many(node, len(workloads), limit)
    stored = [workload.model_dump(mode="json", by_alias=True) for workload in workloads]
    row = session.get(NodeWorkloads, node)
    if row is not None and row.workloads == stored:
        return Changes()
    row = row or NodeWorkloads(node=node)
    row.workloads, row.updated_at = stored, utcnow()
    session.add(row)
    session.flush()
    return sync(session)


def forget_node(session: Session, node: str) -> None:
    """Drop a node's endpoints and policy state (the node itself is being deleted)."""
    lock(session)
    for table in (NodeEndpoints, NodeWorkloads, NodePolicyAssignment, NodePolicyStatus):
        row = session.get(table, node)
        if row is not None:
            session.delete(row)
    for row in session.exec(select(NodePolicy).where(NodePolicy.node == node)).all():
        session.delete(row)
    session.flush()


# ----------------------------------------------------------------------- namespaces


def namespaces(session: Session) -> list[Namespace]:
    return list(session.exec(select(Namespace).order_by(col(Namespace.name))).all())


def put_namespace(
    session: Session, name: str, labels: Mapping[str, str]
) -> tuple[Namespace, Changes]:
    """Set a namespace's labels, which namespaceSelector peers match. The name label
    (``kubernetes.io/metadata.name``) is the API's to set, as the API server's is."""
    given = labels.get(models.NAMESPACE_NAME_LABEL)
    if given is not None and given != name:
        raise Invalid(
            f"namespace {name}: the label {models.NAMESPACE_NAME_LABEL} is always the "
            f"namespace's name, not {given!r}"
        )
    stored = {models.NAMESPACE_NAME_LABEL: name, **dict(sorted(labels.items()))}
    lock(session)
    row = session.get(Namespace, name)
    if row is not None and row.labels == stored:
        return row, Changes()
    row = row or Namespace(name=name)
    row.labels, row.updated_at = stored, utcnow()
    session.add(row)
    session.flush()
    return row, sync(session)


def delete_namespace(session: Session, name: str) -> Changes:
    lock(session)
    row = session.get(Namespace, name)
    if row is None:
        raise NotFound(f"namespace {name} has no labels set")
    session.delete(row)
    session.flush()
    return sync(session)


@dataclass(frozen=True)
class _Sources:
    """Every node's topology entries, read in three queries: an admin's workloads, and
    for the other nodes the endpoints their agents declared inside their pod CIDRs."""

    labels: dict[str, dict[str, str]]  # node labels, of every node
    admin: dict[str, list[Workload]]
    declared: dict[str, list[Endpoint]]

    def entries(self) -> Iterator[tuple[str, Workload]]:
        """(node, entry): an admin's first, then nodes by name."""
        for source in (self.admin, self.declared):
            for node in sorted(source):
                for entry in source[node]:
                    yield node, entry


def _sources(session: Session) -> _Sources:
    nodes = session.exec(select(Node.name, Node.labels, Node.pod_cidrs)).all()
    labels = {name: dict(node_labels) for name, node_labels, _ in nodes}
    ranges = {name: [ipaddress.ip_network(c) for c in cidrs or []] for name, _, cidrs in nodes}
    admin = {
        row.node: [Workload.model_validate(item) for item in row.workloads]
        for row in session.exec(select(NodeWorkloads)).all()
        if row.node in labels
    }
    declared = {
        row.node: [
            endpoint
            for endpoint in map(Endpoint.model_validate, row.endpoints)
            if _inside(endpoint.ip, ranges[row.node])  # declared before the ranges changed
        ]
        for row in session.exec(select(NodeEndpoints)).all()
        if row.node in labels and row.node not in admin
    }
    return _Sources(labels, admin, declared)


def fleet_topology(session: Session) -> models.Topology:
    """Every node's entries with their node, the namespaces with the labels an admin
    set, and the labels of the nodes hosting entries. Where two nodes claim one pod or
    IP, an admin's workloads come first, then nodes by name. Built in a fixed order, so
    the same fleet state gives the same document (and fingerprint)."""
    sources = _sources(session)
    pods: dict[str, models.Pod] = {}
    owners: set[Address] = set()
    for node, entry in sources.entries():
        if entry.key in pods or entry.ip in owners:
            continue  # held by an earlier source; never let one break the topology
        owners.add(entry.ip)
        pods[entry.key] = models.Pod(
            labels=dict(sorted(entry.labels.items())),
            ip=entry.ip,
            ports=tuple(entry.ports),
            node=node,
        )
    labelled = {row.name: dict(row.labels) for row in namespaces(session)}
    names = set(labelled) | {key.partition("/")[0] for key in pods}
    hosts = sorted({pod.node for pod in pods.values() if pod.node is not None})
    return models.Topology(
        namespaces={name: dict(sorted(labelled.get(name, {}).items())) for name in sorted(names)},
        pods=dict(sorted(pods.items())),
        nodes={name: dict(sorted(sources.labels[name].items())) for name in hosts},
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


def sync(session: Session) -> Changes:
    """Bring the policy parts of the nodes a change touched up to date: bump and report
    those whose part's fingerprint changed (``policyindex`` says which nodes to look at
    and what each one's part is made of)."""
    lock(session)
    index = policyindex.current(session, writing=True)
    with index.lock:
        seen = index.take_changes()
        candidates = seen.candidates(index)
        reassigning = seen.reassigning(index)
        with session.no_autoflush:
            if seen.artifact:
                candidates |= set(session.exec(select(NodePolicyAssignment.node)).all())
            assigned = {
                row.node: row for row in _rows_of(session, NodePolicyAssignment, candidates)
            }
            registered = {row.name for row in _rows_of(session, Node, candidates, column="name")}
        fingerprints = {node: index.fingerprint(node) for node in sorted(candidates & registered)}
        wanted = {
            node: {key: index.policies[key].generation for key in index.policies_of(node)}
            for node in sorted(reassigning & registered)
        }
        artifact = index.artifact
    changed = [
        node
        for node, fingerprint in fingerprints.items()
        if (assigned[node].fingerprint if node in assigned else None) != fingerprint
    ]
    revisions = bump_revisions(session, changed)
    for node in changed:
        fingerprint, current = fingerprints[node], assigned.get(node)
        if fingerprint is None:
            assert current is not None
            session.delete(current)
            continue
        current = current or NodePolicyAssignment(node=node, revision=0, fingerprint="")
        current.revision, current.fingerprint = revisions[node], fingerprint
        current.artifact = artifact.model_dump(mode="json", by_alias=True) if artifact else None
        session.add(current)
    _mark_desired(session, wanted)
    session.flush()
    return Changes(set(changed))


def _rows_of(
    session: Session, table: Any, nodes: Iterable[str], *, column: str = "node"
) -> list[Any]:
    """The rows of ``table`` whose ``column`` is one of ``nodes``, read in chunks."""
    wanted = sorted(set(nodes))
    rows: list[Any] = []
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        rows.extend(session.exec(select(table).where(col(getattr(table, column)).in_(chunk))).all())
    return rows


def _marks_of(session: Session, nodes: Iterable[str]) -> list[NodePolicy]:
    marks: list[NodePolicy] = _rows_of(session, NodePolicy, nodes)
    return marks


def _mark_desired(session: Session, wanted: Mapping[str, Mapping[tuple[str, str], int]]) -> None:
    """The desired generation of each policy on each of these nodes (None: not wanted
    there any more; a row nothing enforces nor wants goes)."""
    seen = set()
    for mark in _marks_of(session, wanted):
        generation = wanted[mark.node].get((mark.namespace, mark.name))
        seen.add((mark.node, mark.namespace, mark.name))
        if mark.desired_generation == generation:
            continue
        if generation is None and mark.enforced_generation is None:
            session.delete(mark)
            continue
        mark.desired_generation, mark.updated_at = generation, utcnow()
        session.add(mark)
    fresh = [
        {
            "node": node,
            "namespace": namespace,
            "name": name,
            "desired_generation": generation,
            "updated_at": utcnow(),
        }
        for node, targets in wanted.items()
        for (namespace, name), generation in targets.items()
        if (node, namespace, name) not in seen
    ]
    if fresh:  # one statement: a first sync writes a row per node and policy
        session.execute(insert(NodePolicy), fresh)


def part_of(session: Session, node: str) -> PolicyAssignment | None:
    """The policy part of a node's assignments (None: no policy selects its endpoints):
    the policies that select them, and the topology narrowed to what those need
    (``bpfleet_core.netpol.narrowing``)."""
    row = session.get(NodePolicyAssignment, node)
    if row is None:
        return None
    marks = session.exec(
        select(NodePolicy)
        .where(NodePolicy.node == node, col(NodePolicy.desired_generation).is_not(None))
        .order_by(col(NodePolicy.namespace), col(NodePolicy.name))
    ).all()
    index = policyindex.current(session)
    with index.lock:
        policies = []
        for mark in marks:
            key = (mark.namespace, mark.name)
            record = index.policies.get(key)
            if record is not None:
                policies.append(
                    AssignedPolicy(generation=record.generation, document=record.policy)
                )
        topology = index.part_topology(node, [(m.namespace, m.name) for m in marks])
    return PolicyAssignment(
        revision=row.revision,
        artifact=ArtifactRef.model_validate(row.artifact) if row.artifact else None,
        policies=policies,
        topology=topology,
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
        # Counters are kept per policy (below), not with the node's report.
        status.report = report.model_dump(mode="json", by_alias=True, exclude={"counters"})
        status.updated_at = utcnow()
        session.add(status)
        for ref in report.policies:
            namespace, name, generation = parse_policy_ref(ref)
            enforced[(namespace, name)] = generation
    marks = {
        (mark.namespace, mark.name): mark
        for mark in session.exec(select(NodePolicy).where(NodePolicy.node == node)).all()
    }
    for key, mark in list(marks.items()):
        now_enforced = enforced.get(key)
        if mark.enforced_generation == now_enforced:
            continue
        if now_enforced is None and mark.desired_generation is None:
            session.delete(mark)
            del marks[key]
            continue
        mark.enforced_generation, mark.updated_at = now_enforced, utcnow()
        session.add(mark)
    for (namespace, name), generation in enforced.items():
        if (namespace, name) not in marks:
            marks[(namespace, name)] = NodePolicy(
                node=node, namespace=namespace, name=name, enforced_generation=generation
            )
            session.add(marks[(namespace, name)])
    if report is not None and report.counters_since is not None:
        _record_counters(session, report, marks)


# ----------------------------------------------------------------------------- counters
#
# NodePolicy.counters, per node and policy: {"generation": G, "since": S, "denied": [T, L],
# "auditDenied": [T, L], "rules": {"ingress/0": [T, L], ...}}. T is the total for the
# generation G the node enforces; L the last cumulative value the node reported in its
# counters' life S. A datapath counts per rule across generations (a rule keeps its
# place's key), so a new generation starts its totals at 0 from the values it found; a
# new life (the datapath loaded anew) starts the values at 0 and keeps the totals.


def _rule_counts(document: Mapping[str, Any]) -> dict[str, int]:
    spec = document.get("spec") or {}
    return {direction: len(spec.get(direction) or ()) for direction in ("ingress", "egress")}


def _advance(pair: list[int] | None, value: int) -> list[int]:
    total, last = pair if pair is not None else (0, 0)
    # Counters only grow within a life; less than before is a count started again.
    return [total + (value - last if value >= last else value), value]


def _record_counters(
    session: Session, report: PolicyReport, marks: Mapping[tuple[str, str], NodePolicy]
) -> None:
    """Add a report's counters to the policies the node enforces. Counters of policies
    it does not enforce, and of rules the policy does not have, are not kept (a node's
    word names only what it was given)."""
    for counted in report.counters:
        namespace, _, name = counted.policy.partition("/")
        mark = marks.get((namespace, name))
        policy = session.get(Policy, (namespace, name))
        if mark is None or mark.enforced_generation is None or policy is None:
            continue
        stored = dict(mark.counters or {})
        if stored.get("since") != report.counters_since:
            stored = {
                **stored,
                "since": report.counters_since,
                "denied": [(stored.get("denied") or [0, 0])[0], 0],
                "auditDenied": [(stored.get("auditDenied") or [0, 0])[0], 0],
                "rules": {k: [v[0], 0] for k, v in (stored.get("rules") or {}).items()},
            }
        if stored.get("generation") != mark.enforced_generation:
            stored = {
                "generation": mark.enforced_generation,
                "since": report.counters_since,
                "denied": [0, (stored.get("denied") or [0, 0])[1]],
                "auditDenied": [0, (stored.get("auditDenied") or [0, 0])[1]],
                "rules": {k: [0, v[1]] for k, v in (stored.get("rules") or {}).items()},
            }
        stored["denied"] = _advance(stored.get("denied"), counted.denied)
        stored["auditDenied"] = _advance(stored.get("auditDenied"), counted.audit_denied)
        rules = dict(stored.get("rules") or {})
        limits = _rule_counts(policy.document)
        for rule in counted.rules:
            if rule.index < limits[rule.direction]:
                key = f"{rule.direction}/{rule.index}"
                rules[key] = _advance(rules.get(key), rule.flows)
        stored["rules"] = rules
        mark.counters = stored
        session.add(mark)


@dataclass(frozen=True)
class PolicyCounts:
    """What a policy did, summed: flows per rule (every rule of its document, in order),
    packets denied at endpoints it isolates, flows it would deny (audit mode)."""

    rules: list[tuple[str, int, int]]  # (direction, index, flows)
    denied: int = 0
    audit_denied: int = 0


def _counts(document: Mapping[str, Any], stored: Iterable[Mapping[str, Any]]) -> PolicyCounts:
    flows: dict[str, int] = defaultdict(int)
    denied = audit_denied = 0
    for counters in stored:
        for key, (total, _) in (counters.get("rules") or {}).items():
            flows[key] += total
        denied += (counters.get("denied") or [0])[0]
        audit_denied += (counters.get("auditDenied") or [0])[0]
    limits = _rule_counts(document)
    return PolicyCounts(
        rules=[
            (direction, index, flows.get(f"{direction}/{index}", 0))
            for direction in ("ingress", "egress")
            for index in range(limits[direction])
        ],
        denied=denied,
        audit_denied=audit_denied,
    )


def policy_counts(session: Session, rows: Iterable[Policy]) -> dict[tuple[str, str], PolicyCounts]:
    """Per policy, what the fleet counted for its current generation, summed."""
    policies = {(row.namespace, row.name): row for row in rows}
    query = select(NodePolicy).where(col(NodePolicy.counters).is_not(None))
    if len(policies) == 1:
        ((namespace, name),) = policies
        query = query.where(NodePolicy.namespace == namespace, NodePolicy.name == name)
    found: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for mark in session.exec(query).all():
        row = policies.get((mark.namespace, mark.name))
        counters = mark.counters or {}
        if row is not None and counters.get("generation") == row.generation:
            found[(mark.namespace, mark.name)].append(counters)
    return {key: _counts(row.document, found.get(key, ())) for key, row in policies.items()}


def node_counts(session: Session, policy: Policy) -> dict[str, PolicyCounts]:
    """Per node, what it counted for ``policy`` (the generation it enforces)."""
    marks = session.exec(
        select(NodePolicy).where(
            NodePolicy.namespace == policy.namespace,
            NodePolicy.name == policy.name,
            col(NodePolicy.counters).is_not(None),
        )
    ).all()
    return {mark.node: _counts(policy.document, [mark.counters or {}]) for mark in marks}
