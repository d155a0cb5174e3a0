"""The fleet's topology in memory, and what each policy selects and needs from it.

``policies.sync`` asks, after every change, which nodes' policy parts changed. Working
that out from the whole fleet each time (100,000 endpoints, 1,000 policies) costs
seconds; this index keeps the answer and follows changes instead:

- pods: the fleet's entries (an admin's workloads, or the endpoints a node declared
  inside its pod CIDRs; on a clash an admin's first, then nodes by name), each with
  the form its own node gets (with its node) and the form others get (without), and a
  digest of what a part shows of it (its namespace's labels included);
- per policy: its *targets* (the pods it selects, node selectors honoured) and the
  pods it *needs* (``bpfleet_core.netpol.narrowing``: what its rules can resolve
  to), with a sum of the needed pods' digests that changes whenever they do;
- label postings per namespace, so a selector finds its candidates without looking at
  every pod.

A node's part is its pods and what its policies need; its fingerprint is made of its
pods' digests and, per policy, the generation and the needed-digest sum: an endpoint
change reaches exactly the nodes with a policy that needs it (before or after), and the
nodes hosting it.

The index is this process's: ``refresh`` brings it up to what the database holds,
reading only what changed (rows carry update times; policies their generations), so
several API processes each keep theirs. Its notes of what changed (``take_changes``)
say where to look; the fingerprints, kept in the database, say what really changed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlmodel import Session, col, select

from bpfleet_api.models import (
    Artifact,
    Namespace,
    Node,
    NodeEndpoints,
    NodeWorkloads,
    Policy,
    PolicyEpoch,
)
from bpfleet_core.netpol import models, narrowing
from bpfleet_core.netpol.models import Address, Network
from bpfleet_core.protocol import POLICY_ARTIFACT, Workload
from bpfleet_core.resources import ArtifactRef

_POLICY = TypeAdapter[models.Policy](models.AnyPolicy)
_MASK = (1 << 64) - 1
# Beyond this many changed pods, policies are evaluated against the postings rather
# than each changed pod against every policy.
_BULK = 256
_IN_CHUNK = 500  # values in one IN (...): SQLite limits the parameters of a statement

PolicyKey = tuple[str, str]


def _digest(*parts: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b"\0".join(parts), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class PodRecord:
    key: str
    node: str
    ip: Address
    labels: dict[str, str]
    ports: tuple[models.ContainerPort, ...]
    own: models.Pod  # as its node gets it
    peer: models.Pod  # as other nodes get it: without its node
    digest: int  # what parts show of it, its namespace's labels included

    @property
    def namespace(self) -> str:
        return self.key.partition("/")[0]


@dataclass
class PolicyRecord:
    key: PolicyKey
    generation: int
    policy: models.Policy
    targets: set[str] = field(default_factory=set)
    needed: set[str] = field(default_factory=set)
    needed_sum: int = 0  # of the needed pods' digests, modulo 2**64


@dataclass
class IndexChanges:
    """Where to look after a refresh: nodes whose own pods or labels changed; policies
    whose generation, targets or needed pods changed, with the nodes they had before."""

    nodes: set[str] = field(default_factory=set)
    policies: dict[PolicyKey, set[str]] = field(default_factory=dict)
    # Of those, the policies new, gone, changed or evaluated anew: which of their
    # nodes must enforce what may differ (when one pod's targeting changes, only its
    # own nodes' policies do, and they are in ``nodes``).
    reassigned: set[PolicyKey] = field(default_factory=set)
    artifact: bool = False

    def candidates(self, index: PolicyIndex) -> set[str]:
        found = set(self.nodes)
        for key, before in self.policies.items():
            found |= before | index.nodes_of(key)
        return found

    def reassigning(self, index: PolicyIndex) -> set[str]:
        """The nodes whose set of policies (or their generations) may have changed."""
        found = set(self.nodes)
        for key in self.reassigned:
            found |= self.policies.get(key, set()) | index.nodes_of(key)
        return found


@dataclass
class _NodeRows:
    """What the index last read of a node's rows."""

    labels: dict[str, str]
    pod_cidrs: list[str] | None
    workloads: datetime | None
    endpoints: datetime | None


class PolicyIndex:
    """See the module's docstring. Methods lock; ``refresh`` before reading."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pods: dict[str, PodRecord] = {}
        self.policies: dict[PolicyKey, PolicyRecord] = {}
        self.namespaces: dict[str, dict[str, str]] = {}  # labels an admin set
        self.node_labels: dict[str, dict[str, str]] = {}
        self.artifact: ArtifactRef | None = None
        self._rows: dict[str, _NodeRows] = {}
        self._claims: dict[str, list[tuple[bool, Workload]]] = {}  # node -> (admin?, entry)
        # Who claims each pod key and each IP (a clash: more than one node).
        self._key_claims: dict[str, set[str]] = defaultdict(set)
        self._ip_claims: dict[Address, set[str]] = defaultdict(set)
        self._by_namespace: dict[str, set[str]] = defaultdict(set)
        self._by_node: dict[str, set[str]] = defaultdict(set)
        self._postings: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(dict)
        self._named: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._targeted_by: dict[str, set[PolicyKey]] = defaultdict(set)
        self._needed_by: dict[str, set[PolicyKey]] = defaultdict(set)
        self.changes = IndexChanges()
        self._epoch: int | None = None  # of the last refresh that read committed state

    # ------------------------------------------------------------------ reading

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self.namespaces.get(name) or {models.NAMESPACE_NAME_LABEL: name}

    def nodes_of(self, key: PolicyKey) -> set[str]:
        record = self.policies.get(key)
        if record is None:
            return set()
        pods = self.pods
        return {pods[pod].node for pod in record.targets if pod in pods}

    def policies_of(self, node: str) -> set[PolicyKey]:
        found: set[PolicyKey] = set()
        for pod in self._by_node.get(node, ()):
            found |= self._targeted_by.get(pod, set())
        return found

    def fingerprint(self, node: str) -> str | None:
        """What a node's part is made of, digested; None: no policy selects its pods."""
        policies = sorted(self.policies_of(node))
        if not policies:
            return None
        own = sorted((key, self.pods[key].digest) for key in self._by_node.get(node, ()))
        lines = [
            self.artifact.digest or "" if self.artifact else "",
            repr(sorted(self.node_labels.get(node, {}).items())),
            *(f"{key} {digest:x}" for key, digest in own),
            *(
                f"{ns}/{name}@{self.policies[(ns, name)].generation} "
                f"{self.policies[(ns, name)].needed_sum:x}"
                for ns, name in policies
            ),
        ]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def part_topology(self, node: str, policies: Iterable[PolicyKey]) -> models.Topology:
        """The topology a node's part carries (``narrowing.narrowed``, from the index)."""
        own = self._by_node.get(node, set())
        chosen = set(own)
        for key in policies:
            record = self.policies.get(key)
            if record is not None:
                chosen |= record.needed
        pods = {
            key: self.pods[key].own if key in own else self.pods[key].peer for key in sorted(chosen)
        }
        names = sorted({key.partition("/")[0] for key in pods})
        nodes = (
            {node: dict(sorted(self.node_labels[node].items()))} if node in self.node_labels else {}
        )
        return models.Topology.model_construct(
            namespaces={name: self.namespace_labels(name) for name in names},
            pods=pods,
            order=None,
            nodes=nodes,
            loopback=None,
        )

    def take_changes(self) -> IndexChanges:
        changes, self.changes = self.changes, IndexChanges()
        return changes

    def claims_of(self, node: str) -> list[tuple[bool, Workload]]:
        return self._claims.get(node, [])

    def claimants(self, key: str, ip: Address) -> tuple[set[str], set[str]]:
        """The nodes claiming this pod key, and those claiming this IP."""
        return set(self._key_claims.get(key, ())), set(self._ip_claims.get(ip, ()))

    def _set_claims(self, node: str, claims: list[tuple[bool, Workload]] | None) -> None:
        for _, entry in self._claims.pop(node, []):
            self._key_claims[entry.key].discard(node)
            self._ip_claims[entry.ip].discard(node)
        if claims is not None:
            self._claims[node] = claims
            for _, entry in claims:
                self._key_claims[entry.key].add(node)
                self._ip_claims[entry.ip].add(node)

    # ---------------------------------------------------------------- refreshing

    def refresh(self, session: Session, *, writing: bool = False) -> None:
        """Read what changed in the database since the last refresh. Every change takes
        the policy lock, which counts (``PolicyEpoch``): an epoch already read means
        nothing changed, and costs one query. ``writing``: the session holds the lock
        and has changed rows it may yet roll back, so its epoch proves nothing later."""
        with self.lock:
            epoch = session.exec(select(PolicyEpoch.epoch).where(col(PolicyEpoch.id) == 1)).first()
            if not writing and epoch is not None and epoch == self._epoch:
                return
            self._epoch = None if writing else epoch
            self._refresh_namespaces(session)
            changed = self._refresh_nodes(session)
            if changed:
                self._settle_pods(changed)
            self._refresh_policies(session)
            self._refresh_artifact(session)

    def _refresh_artifact(self, session: Session) -> None:
        newest = session.exec(
            select(Artifact.name, Artifact.version, Artifact.digest)
            .where(Artifact.name == POLICY_ARTIFACT)
            .order_by(col(Artifact.uploaded_at).desc())
        ).first()
        artifact = (
            ArtifactRef(name=newest[0], version=newest[1], digest=newest[2]) if newest else None
        )
        if artifact != self.artifact:
            self.artifact = artifact
            self.changes.artifact = True

    def _refresh_namespaces(self, session: Session) -> None:
        labels = {row.name: dict(row.labels) for row in session.exec(select(Namespace)).all()}
        if labels == self.namespaces:
            return
        changed = {
            name
            for name in labels.keys() | self.namespaces.keys()
            if labels.get(name) != self.namespaces.get(name)
        }
        self.namespaces = labels
        # Which policies' needs a namespace's labels can change: namespace selectors.
        selective = [
            record
            for record in self.policies.values()
            if any(
                peer.namespace_selector is not None
                for direction in ("ingress", "egress")
                for rule in record.policy.spec.rules(direction)
                for peer in rule.peers or ()
            )
        ]
        for name in changed:
            for key in list(self._by_namespace.get(name, ())):
                old = self.pods[key]
                new = self._record(key, old.node, old)  # a new digest: parts show the labels
                self.pods[key] = new
                self.changes.nodes.add(new.node)
                for policy_key in self._needed_by.get(key, set()):
                    self._redigest(self.policies[policy_key], old, new)
                for record in selective:
                    self._evaluate(record, key, new, new)

    def _refresh_nodes(self, session: Session) -> set[str]:
        """Nodes whose claims may have changed (label changes are applied here)."""
        nodes = {
            name: (dict(labels), list(cidrs) if cidrs is not None else None)
            for name, labels, cidrs in session.exec(
                select(Node.name, Node.labels, Node.pod_cidrs)
            ).all()
        }
        workloads = dict(session.exec(select(NodeWorkloads.node, NodeWorkloads.updated_at)).all())
        endpoints = dict(session.exec(select(NodeEndpoints.node, NodeEndpoints.updated_at)).all())
        changed: set[str] = set()
        for name in self._rows.keys() - nodes.keys():
            del self._rows[name]
            self._set_claims(name, None)
            self._set_node_labels(name, None)
            changed.add(name)
        reread: list[str] = []
        for name, (labels, cidrs) in nodes.items():
            seen = _NodeRows(labels, cidrs, workloads.get(name), endpoints.get(name))
            before = self._rows.get(name)
            if before == seen:
                continue
            self._rows[name] = seen
            if before is None or before.labels != labels:
                self._set_node_labels(name, labels)
            if before is None or (before.pod_cidrs, before.workloads, before.endpoints) != (
                seen.pod_cidrs,
                seen.workloads,
                seen.endpoints,
            ):
                reread.append(name)
        for name, claims in _claims(session, reread, {n: nodes[n][1] for n in reread}):
            self._set_claims(name, claims)
            changed.add(name)
        return changed

    def _refresh_policies(self, session: Session) -> None:
        stored = {
            (namespace, name): generation
            for namespace, name, generation in session.exec(
                select(Policy.namespace, Policy.name, Policy.generation)
            ).all()
        }
        for key in self.policies.keys() - stored.keys():
            self._drop_policy(key)
        reread = [
            key
            for key, generation in stored.items()
            if key not in self.policies or self.policies[key].generation != generation
        ]
        for start in range(0, len(reread), _IN_CHUNK):
            wanted = set(reread[start : start + _IN_CHUNK])
            namespaces = {namespace for namespace, _ in wanted}
            with session.no_autoflush:
                rows = session.exec(
                    select(Policy).where(col(Policy.namespace).in_(namespaces))
                ).all()
            for row in rows:
                if (row.namespace, row.name) in wanted:
                    self._set_policy(
                        (row.namespace, row.name),
                        row.generation,
                        _POLICY.validate_python(row.document),
                    )

    # -------------------------------------------------------------------- pods

    def _winners(self, changed: set[str]) -> tuple[set[str], dict[str, tuple[str, Workload]]]:
        """The pod keys the changed nodes' claims touch, and who holds each now: an
        admin's claim first, then nodes by name; a claim whose key or IP an earlier one
        holds is left out. Claims that clash with no other are settled alone."""
        touched = {key for node in changed for key in self._by_node.get(node, ())}
        touched |= {entry.key for node in changed for _, entry in self._claims.get(node, ())}
        clash = any(
            len(self._key_claims[entry.key]) > 1 or len(self._ip_claims[entry.ip]) > 1
            for node in changed
            for _, entry in self._claims.get(node, ())
        )
        if not clash and not any(len(self._key_claims.get(key, ())) > 1 for key in touched):
            winners = {
                entry.key: (node, entry)
                for node in changed
                for _, entry in self._claims.get(node, ())
            }
            return touched, winners
        ordered = sorted(
            (not admin, node, index, entry)
            for node, claims in self._claims.items()
            for index, (admin, entry) in enumerate(claims)
        )
        winners, owners = {}, set()
        for _, node, _, entry in ordered:
            if entry.key in winners or entry.ip in owners:
                continue
            owners.add(entry.ip)
            winners[entry.key] = (node, entry)
        return touched | self.pods.keys() | winners.keys(), winners

    def _settle_pods(self, changed: set[str]) -> None:
        touched, winners = self._winners(changed)
        replaced = []
        for key in touched:
            old = self.pods.get(key)
            won = winners.get(key)
            new = self._record(key, won[0], won[1]) if won is not None else None
            if old != new:
                replaced.append((key, old, new))
        if len(replaced) <= _BULK:
            for key, old, new in replaced:
                self._replace_pod(key, old, new)
                for record in self.policies.values():
                    self._evaluate(record, key, old, new)
            return
        # Many pods (a first read, say): every policy is evaluated again, against the
        # postings, rather than each pod against every policy.
        before = {policy_key: self.nodes_of(policy_key) for policy_key in self.policies}
        for key, old, new in replaced:
            self._replace_pod(key, old, new)
        for policy_key, record in list(self.policies.items()):
            self._set_policy(
                policy_key, record.generation, record.policy, before=before[policy_key]
            )

    def _record(self, key: str, node: str, entry: Workload | PodRecord) -> PodRecord:
        labels = dict(sorted(entry.labels.items()))
        ports = tuple(entry.ports)
        own = models.Pod.model_construct(labels=labels, ip=entry.ip, ports=ports, node=node)
        peer = models.Pod.model_construct(labels=labels, ip=entry.ip, ports=ports, node=None)
        namespace = key.partition("/")[0]
        shown = peer.model_dump_json(by_alias=True).encode()
        labels_shown = repr(sorted(self.namespace_labels(namespace).items())).encode()
        return PodRecord(
            key, node, entry.ip, labels, ports, own, peer, _digest(shown, labels_shown)
        )

    def _replace_pod(self, key: str, old: PodRecord | None, new: PodRecord | None) -> None:
        if old is not None:
            self._unindex(old)
            self.changes.nodes.add(old.node)
        if new is not None:
            self.pods[key] = new
            self._index(new)
            self.changes.nodes.add(new.node)
        else:
            self.pods.pop(key, None)

    def _index(self, record: PodRecord) -> None:
        key, namespace = record.key, record.namespace
        self._by_namespace[namespace].add(key)
        self._by_node[record.node].add(key)
        for label, value in record.labels.items():
            self._postings[(namespace, label)].setdefault(value, set()).add(key)
        for port in record.ports:
            if port.name is not None:
                self._named[(port.name, port.protocol)].add(key)

    def _unindex(self, record: PodRecord) -> None:
        key, namespace = record.key, record.namespace
        self._by_namespace[namespace].discard(key)
        self._by_node[record.node].discard(key)
        for label, value in record.labels.items():
            self._postings[(namespace, label)].get(value, set()).discard(key)
        for port in record.ports:
            if port.name is not None:
                self._named[(port.name, port.protocol)].discard(key)

    def _set_node_labels(self, node: str, labels: dict[str, str] | None) -> None:
        if labels is None:
            self.node_labels.pop(node, None)
        else:
            self.node_labels[node] = labels
        self.changes.nodes.add(node)
        selective = [r for r in self.policies.values() if r.policy.node_selector is not None]
        for key in list(self._by_node.get(node, ())):
            record_pod = self.pods[key]
            for record in selective:
                self._evaluate(record, key, record_pod, record_pod)

    # ---------------------------------------------------------------- policies

    def _targets(self, policy: models.Policy, record: PodRecord) -> bool:
        if record.namespace != policy.namespace:
            return False
        if not policy.spec.pod_selector.matches(record.labels):
            return False
        selector = policy.node_selector
        return selector is None or selector.matches(self.node_labels.get(record.node, {}))

    def _needs(self, policy: models.Policy, record: PodRecord) -> bool:
        return narrowing.needs(
            policy, record.key, record.peer, self.namespace_labels(record.namespace)
        )

    def _evaluate(
        self, record: PolicyRecord, key: str, old: PodRecord | None, new: PodRecord | None
    ) -> None:
        """Bring one policy's targets and needed pods up to one pod's change."""
        was_target = key in record.targets
        is_target = new is not None and self._targets(record.policy, new)
        if was_target or is_target:
            if was_target != is_target or (
                old is not None and new is not None and old.node != new.node
            ):
                # Only this pod's nodes enforce other policies for it (changes.nodes).
                self._note_policy(record, before_change=True)
            if is_target:
                record.targets.add(key)
                self._targeted_by[key].add(record.key)
            else:
                record.targets.discard(key)
                self._targeted_by[key].discard(record.key)
        was_needed = key in record.needed
        is_needed = new is not None and self._needs(record.policy, new)
        if not was_needed and not is_needed:
            return
        if (
            was_needed
            and is_needed
            and old is not None
            and new is not None
            and old.digest == new.digest
        ):
            return
        self._note_policy(record, before_change=False)
        if was_needed:
            assert old is not None
            record.needed_sum = (record.needed_sum - old.digest) & _MASK
            if not is_needed:
                record.needed.discard(key)
                self._needed_by[key].discard(record.key)
        if is_needed:
            assert new is not None
            record.needed_sum = (record.needed_sum + new.digest) & _MASK
            record.needed.add(key)
            self._needed_by[key].add(record.key)

    def _redigest(self, record: PolicyRecord, old: PodRecord, new: PodRecord) -> None:
        """A needed pod shows differently (its namespace's labels changed)."""
        self._note_policy(record, before_change=False)
        record.needed_sum = (record.needed_sum - old.digest + new.digest) & _MASK

    def _note_policy(self, record: PolicyRecord, *, before_change: bool) -> None:
        """Remember the nodes a changing policy had (before its targets change)."""
        if record.key not in self.changes.policies:
            self.changes.policies[record.key] = self.nodes_of(record.key)

    def _drop_policy(self, key: PolicyKey) -> None:
        record = self.policies[key]
        self._note_policy(record, before_change=True)
        self.changes.reassigned.add(key)
        for pod in record.targets:
            self._targeted_by[pod].discard(key)
        for pod in record.needed:
            self._needed_by[pod].discard(key)
        del self.policies[key]

    def _set_policy(
        self,
        key: PolicyKey,
        generation: int,
        policy: models.Policy,
        *,
        before: set[str] | None = None,
    ) -> None:
        """Evaluate a new or changed policy against the postings. ``before``: the nodes
        it had, when its pods changed under it (else they are read here)."""
        old = self.policies.get(key)
        if key not in self.changes.policies:
            self.changes.policies[key] = (
                before if before is not None else self.nodes_of(key) if old else set()
            )
        self.changes.reassigned.add(key)
        if old is not None:
            for pod in old.targets:
                self._targeted_by[pod].discard(key)
            for pod in old.needed:
                self._needed_by[pod].discard(key)
        record = PolicyRecord(key, generation, policy)
        record.targets = {
            pod
            for pod in self._candidates(policy.namespace, policy.spec.pod_selector)
            if self._targets(policy, self.pods[pod])
        }
        record.needed = {
            pod for pod in self._needed_candidates(policy) if self._needs(policy, self.pods[pod])
        }
        record.needed_sum = sum(self.pods[pod].digest for pod in record.needed) & _MASK
        for pod in record.targets:
            self._targeted_by[pod].add(key)
        for pod in record.needed:
            self._needed_by[pod].add(key)
        self.policies[key] = record

    def _candidates(self, namespace: str, selector: models.LabelSelector | None) -> set[str]:
        """A superset of the pods of ``namespace`` that ``selector`` selects."""
        everyone = self._by_namespace.get(namespace, set())
        if selector is None or not (selector.match_labels or selector.match_expressions):
            return set(everyone)
        best: set[str] | None = None
        for label, value in (selector.match_labels or {}).items():
            found = self._postings.get((namespace, label), {}).get(value, set())
            if best is None or len(found) < len(best):
                best = found
        for requirement in selector.match_expressions or ():
            values = self._postings.get((namespace, requirement.key), {})
            if requirement.operator == "In":
                found = set().union(*(values.get(v, set()) for v in requirement.values or ()))
            elif requirement.operator == "Exists":
                found = set().union(*values.values())
            else:
                continue  # NotIn, DoesNotExist: no postings narrow those
            if best is None or len(found) < len(best):
                best = found
        return set(everyone if best is None else best)

    def _needed_candidates(self, policy: models.Policy) -> set[str]:
        """A superset of the pods ``policy`` needs (``narrowing.needs`` decides)."""
        found: set[str] = set()
        for direction in ("ingress", "egress"):
            for rule in policy.spec.rules(direction):
                for peer in rule.peers or ():
                    if peer.ip_block is not None:
                        continue
                    if peer.namespace_selector is None:
                        spaces: Iterable[str] = (policy.namespace,)
                    else:
                        selector = peer.namespace_selector
                        spaces = [
                            name
                            for name in list(self._by_namespace)
                            if selector.matches(self.namespace_labels(name))
                        ]
                    for space in spaces:
                        found |= self._candidates(space, peer.pod_selector)
                if direction == "egress":
                    for port in rule.ports or ():
                        if isinstance(port.port, str):
                            found |= self._named.get((port.port, port.protocol), set())
        return found


def _claims(
    session: Session, nodes: list[str], cidrs: Mapping[str, list[str] | None]
) -> Iterator[tuple[str, list[tuple[bool, Workload]]]]:
    """Each node's claims to pods: an admin's workloads if set, else the endpoints its
    agent declared inside its pod CIDRs (as ``policies.entries_of`` says). Read in
    batches: a first refresh reads every node."""
    for start in range(0, len(nodes), _IN_CHUNK):
        chunk = nodes[start : start + _IN_CHUNK]
        with session.no_autoflush:
            admin = {
                row.node: row.workloads
                for row in session.exec(
                    select(NodeWorkloads).where(col(NodeWorkloads.node).in_(chunk))
                ).all()
            }
            declared = {
                row.node: row.endpoints
                for row in session.exec(
                    select(NodeEndpoints).where(col(NodeEndpoints.node).in_(chunk))
                ).all()
            }
        for node in chunk:
            if node in admin:
                yield node, [(True, Workload.model_validate(item)) for item in admin[node]]
                continue
            ranges: list[Network] = [ipaddress.ip_network(c) for c in cidrs.get(node) or []]
            claims = []
            for item in declared.get(node, ()):
                # Stored as the API validated it: only the interface is not the topology's.
                workload = Workload.model_validate(
                    {key: value for key, value in item.items() if key != "interface"}
                )
                if any(workload.ip in network for network in ranges):
                    claims.append((False, workload))
            yield node, claims


# One index per database this process uses (tests run several).
_INDEXES: weakref.WeakKeyDictionary[Any, PolicyIndex] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def current(session: Session, *, writing: bool = False) -> PolicyIndex:
    """This process's index of ``session``'s database, brought up to what the session
    sees (see ``PolicyIndex.refresh``). Hold its ``lock`` while reading it."""
    engine = session.get_bind()
    with _INDEXES_LOCK:
        index = _INDEXES.get(engine)
        if index is None:
            index = _INDEXES[engine] = PolicyIndex()
    index.refresh(session, writing=writing)
    return index
