"""Lints: the NetworkPolicy mistakes people make by hand, each proved by the simulator.

A lint names a field (path, and line and column when the policy came from text), says
in plain words what the policy really does, may offer fixes as structured edits, and
carries the flow that proves it: a concrete client, server, protocol and port with the
simulator's verdict and explanation. A lint is only raised when the simulator confirms
its claim on the topology given; when the topology lacks an endpoint the claim needs
(say, a pod in a namespace some selector names), one is made up for the proof and
listed as a ``Witness``, so the claim is still computed, never only written.

| code | what |
|---|---|
| ``split-peer`` | ``namespaceSelector`` and ``podSelector`` as two peers (ORed), meant as one |
| ``split-ports`` | ``ports`` in a rule of its own (an extra ``-``): open to every peer |
| ``egress-without-dns`` | egress isolated and no rule lets DNS (port 53) out |
| ``own-namespace-peer`` | a ``podSelector``-only peer matching pods only in other namespaces |
| ``empty-pod-selector`` | ``podSelector: {}`` selects every endpoint of the namespace |
| ``allow-all-rule`` | an empty rule (``- {}``) allows everyone, outside the fleet too |
| ``host-bits-cidr`` | ``10.0.1.12/24`` acts as ``10.0.1.0/24`` |
| ``selects-nothing`` | the policy selects no endpoint of the fleet now |
| ``deny-all-egress`` | ``Egress`` in ``policyTypes`` with no egress rule denies all egress |

A policy gets at most ``MAX_PER_CODE`` lints of one code (a policy of thousands of
CIDRs written with host bits would otherwise cost a proof each).

Fixes are structured edits (``editing``): field paths and new values, which an editor
applies keeping the user's comments.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from bpfleet_core.netpol import connectivity, diagramming, models, simulating, validating
from bpfleet_core.netpol.editing import Edit, EditError, Fix, apply_edits
from bpfleet_core.netpol.locating import Loc, LocatedDocument, Span
from bpfleet_core.netpol.models import Direction, Protocol

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

# Documentation addresses (RFC 5737, RFC 3849): outside any fleet, never a real peer.
OUTSIDE = ("203.0.113.10", "198.51.100.10", "2001:db8::10")
# Made-up endpoints take addresses from the benchmarking range (RFC 2544).
WITNESS_NETWORK = ipaddress.ip_network("198.18.0.0/15")
DNS_PORT = 53
_POLICY = TypeAdapter[models.Policy](models.AnyPolicy)
MAX_PER_CODE = 10
DEFAULT_PORT: tuple[Protocol, int] = ("TCP", 80)


# --- proofs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Witness:
    """An endpoint made up for a proof, because the topology has none like it."""

    name: str  # "<namespace>/<pod>"
    labels: Mapping[str, str]
    ip: str
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    node_labels: Mapping[str, str] | None = None
    ports: tuple[models.ContainerPort, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": self.name,
            "labels": dict(self.labels),
            "ip": self.ip,
            "namespaceLabels": dict(self.namespace_labels),
        }
        if self.node_labels is not None:
            found["nodeLabels"] = dict(self.node_labels)
        if self.ports:
            found["ports"] = [port.model_dump(exclude_none=True) for port in self.ports]
        return found


def with_witnesses(topology: models.Topology, witnesses: Sequence[Witness]) -> models.Topology:
    """``topology`` plus the made-up endpoints (their namespaces and nodes too)."""
    if not witnesses:
        return topology
    pods, namespaces, nodes = dict(topology.pods), dict(topology.namespaces), dict(topology.nodes)
    for witness in witnesses:
        namespace = witness.name.partition("/")[0]
        if namespace not in namespaces:
            namespaces[namespace] = {
                models.NAMESPACE_NAME_LABEL: namespace,
                **witness.namespace_labels,
            }
        node = None
        if witness.node_labels is not None:
            node = f"node-of-{witness.name.replace('/', '-')}"
            nodes[node] = dict(witness.node_labels)
        pods[witness.name] = models.Pod(
            labels=dict(witness.labels),
            ip=ipaddress.ip_address(witness.ip),
            ports=witness.ports,
            node=node,
        )
    order = topology.order
    if order is not None:
        order = (*order, *(witness.name for witness in witnesses))
    return topology.model_copy(
        update={"pods": pods, "namespaces": namespaces, "nodes": nodes, "order": order}
    )


@dataclass(frozen=True)
class Proof:
    """A flow and the simulator's verdict on it: the evidence for a lint."""

    client: str
    server: str
    protocol: Protocol
    port: int
    judged_with: Literal["policy", "fleet"]  # the policy alone, or with every other one
    allowed: bool
    explanation: simulating.Explanation
    witnesses: tuple[Witness, ...] = ()
    allowed_once_fixed: bool | None = None  # the verdict with the first fix applied

    @property
    def flow(self) -> str:
        return f"{self.client} -> {self.server} {self.protocol}/{self.port}"

    def __str__(self) -> str:
        return f"{self.flow}: {'allowed' if self.allowed else 'denied'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "server": self.server,
            "protocol": self.protocol,
            "port": self.port,
            "judgedWith": self.judged_with,
            "verdict": "allow" if self.allowed else "deny",
            "verdictOnceFixed": (
                None
                if self.allowed_once_fixed is None
                else ("allow" if self.allowed_once_fixed else "deny")
            ),
            "explanation": self.explanation.to_dict(),
            "witnesses": [witness.to_dict() for witness in self.witnesses],
        }


@dataclass(frozen=True)
class Lint:
    code: str
    severity: Severity
    policy: str  # "<namespace>/<name>"
    loc: Loc
    message: str
    proof: Proof
    fixes: tuple[Fix, ...] = ()
    span: Span | None = None  # where in the text, when the policy came from text
    document: int | None = None  # which document of the text

    @property
    def path(self) -> str:
        return validating.render_loc(self.loc)

    @property
    def line(self) -> int | None:
        return self.span.line if self.span is not None else None

    def __str__(self) -> str:
        where = f"{self.span.line}:{self.span.column}: " if self.span is not None else ""
        return (
            f"{where}{self.severity}: {self.code}: {self.path}: {self.message} "
            f"[{self.proof}{' (made-up endpoints)' if self.proof.witnesses else ''}]"
        )

    def to_dict(self) -> dict[str, Any]:
        span = self.span
        return {
            "code": self.code,
            "severity": self.severity,
            "policy": self.policy,
            "document": self.document,
            "path": list(self.loc),
            "pathText": self.path,
            "line": span.line if span else None,
            "column": span.column if span else None,
            "endLine": span.end_line if span else None,
            "endColumn": span.end_column if span else None,
            "message": self.message,
            "fixes": [fix.to_dict() for fix in self.fixes],
            "proof": self.proof.to_dict(),
        }


# --- selectors, made to match or not ------------------------------------------------------


def labels_matching(selector: models.LabelSelector) -> dict[str, str] | None:
    """Labels ``selector`` matches, or None when it can match nothing."""
    labels = dict(selector.match_labels or {})
    for req in selector.match_expressions or ():
        if req.operator == "In" and req.key not in labels and req.values:
            labels[req.key] = req.values[0]
        elif req.operator == "Exists" and req.key not in labels:
            labels[req.key] = "any"
    return labels if selector.matches(labels) else None


def labels_not_matching(selector: models.LabelSelector) -> dict[str, str] | None:
    """Labels ``selector`` does not match, or None when it matches every label set."""
    candidates: list[dict[str, str]] = [{}]
    for key, value in (selector.match_labels or {}).items():
        candidates.append({key: "other" if value != "other" else "another"})
    for req in selector.match_expressions or ():
        if req.operator == "NotIn" and req.values:
            candidates.append({req.key: req.values[0]})
        elif req.operator == "DoesNotExist":
            candidates.append({req.key: "any"})
    return next((labels for labels in candidates if not selector.matches(labels)), None)


def _is_empty(selector: models.LabelSelector | None) -> bool:
    return selector is not None and not selector.match_labels and not selector.match_expressions


def _words(direction: Direction) -> tuple[str, str, str]:
    """(peer field, the far side, its plural) for a direction."""
    if direction == "ingress":
        return "from", "source", "sources"
    return "to", "destination", "destinations"


# --- one policy's lints ------------------------------------------------------------------


@dataclass
class _Context:
    policy: models.Policy
    topology: models.Topology
    index: connectivity.Index
    others: Sequence[models.Policy]
    content: Mapping[str, Any]
    live: bool
    witness_count: int = 0

    @cached_property
    def selected(self) -> list[str]:
        return self.index.pods(self.index.selecting(self.policy))

    @cached_property
    def used_addresses(self) -> set[str]:
        return {str(pod.ip) for pod in self.topology.pods.values()}

    def raw(self, loc: Loc) -> Any:
        """The value at ``loc`` as written (None when absent)."""
        found: Any = self.content
        for part in loc:
            if isinstance(found, Mapping) and isinstance(part, str):
                found = found.get(part)
            elif isinstance(found, list) and isinstance(part, int) and part < len(found):
                found = found[part]
            else:
                return None
        return found

    def verdict(self, explanation: simulating.Explanation) -> bool:
        """The verdict this policy's mode gives (audit: what it would drop)."""
        return explanation.allowed if self.policy.mode == "enforce" else explanation.audit_allowed

    def egress_denied(self, explanation: simulating.Explanation) -> bool:
        """Whether the client's egress is what denies (not the server's ingress)."""
        judged = explanation.egress if self.policy.mode == "enforce" else explanation.audit_egress
        return not judged.allowed

    # --- endpoints for proofs

    def witness(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        namespace_labels: Mapping[str, str] | None = None,
        node_labels: Mapping[str, str] | None = None,
        ports: tuple[models.ContainerPort, ...] = (),
        role: str = "pod",
    ) -> Witness:
        self.witness_count += 1
        taken = self.used_addresses
        address = next(
            str(candidate) for candidate in WITNESS_NETWORK.hosts() if str(candidate) not in taken
        )
        taken.add(address)
        existing = self.topology.namespaces.get(namespace)
        return Witness(
            name=f"{namespace}/{role}-{self.witness_count}",
            labels=dict(labels),
            ip=address,
            namespace_labels=dict(
                namespace_labels if existing is None and namespace_labels else {}
            ),
            node_labels=node_labels,
            ports=ports,
        )

    def named_ports(self, rules: Sequence[models.Rule]) -> tuple[models.ContainerPort, ...]:
        """Container ports for every port name ``rules`` use (numbers as the fleet has them)."""
        known = {
            (port.name, port.protocol): port.port
            for pod in self.topology.pods.values()
            for port in pod.ports
            if port.name is not None
        }
        found: dict[str, models.ContainerPort] = {}
        for rule in rules:
            for item in rule.ports or ():
                if isinstance(item.port, str) and item.port not in found:
                    number = known.get((item.port, item.protocol), 8000 + len(found))
                    found[item.port] = models.ContainerPort(
                        name=item.port, port=number, protocol=item.protocol
                    )
        return tuple(found.values())

    def subject(self, avoid: str | None = None) -> tuple[str, tuple[Witness, ...]] | None:
        """An endpoint the policy selects: a real one, or one made up to fit."""
        real = [name for name in self.selected if name != avoid]
        if real:
            return real[0], ()
        labels = labels_matching(self.policy.spec.pod_selector)
        node_labels = None
        if self.policy.node_selector is not None:
            node_labels = labels_matching(self.policy.node_selector)
            if node_labels is None:
                return None
        if labels is None:
            return None
        made = self.witness(
            self.policy.namespace,
            labels,
            node_labels=node_labels,
            ports=self.named_ports(self.policy.spec.ingress or ()),
            role="selected",
        )
        return made.name, (made,)

    def outside(self, accept: Callable[[str], bool] = lambda _: True) -> str | None:
        return next(
            (item for item in OUTSIDE if item not in self.used_addresses and accept(item)), None
        )

    # --- the proof itself

    def prove(
        self,
        client: str,
        server: str,
        witnesses: Sequence[Witness],
        *,
        rule: models.Rule | None,
        expect: bool,
        fix: Fix | None = None,
        fleet: bool = False,
        check: Callable[[simulating.Explanation], bool] | None = None,
    ) -> Proof | None:
        """The flow ``client -> server`` on a port ``rule`` lets through (any port the
        server serves when ``rule`` is None), judged by the simulator; None unless the
        verdict is ``expect`` (and ``check`` holds)."""
        world = with_witnesses(self.topology, witnesses)
        server_pod = world.pods.get(server)
        flow = _port_for(rule, server_pod) if rule is not None else _any_port(server_pod)
        if flow is None:
            return None
        protocol, port = flow
        policies = [self.policy, *self.others] if fleet else [self.policy]
        explanation = simulating.explain(policies, world, client, server, protocol, port)
        if self.verdict(explanation) != expect or (check is not None and not check(explanation)):
            return None
        once_fixed = None
        if fix is not None:
            fixed = self.fixed(fix)
            if fixed is not None:
                fixed_set = [fixed, *self.others] if fleet else [fixed]
                once_fixed = self.verdict(
                    simulating.explain(fixed_set, world, client, server, protocol, port)
                )
        return Proof(
            explanation.client,
            explanation.server,
            protocol,
            port,
            "fleet" if fleet else "policy",
            expect,
            explanation,
            tuple(witnesses),
            once_fixed,
        )

    def fixed(self, fix: Fix) -> models.Policy | None:
        """The policy with ``fix`` applied, read by the models alone: fixes write valid
        values (the tests validate them), and the validator's checks of every other
        field of a large policy would cost more than the proof itself."""
        try:
            return _POLICY.validate_python(apply_edits(self.content, fix.edits))
        except (EditError, ValidationError):
            return None

    def lint(
        self,
        code: str,
        severity: Severity,
        loc: Loc,
        message: str,
        proof: Proof,
        *,
        fixes: Sequence[Fix] = (),
    ) -> Lint:
        return Lint(code, severity, self.policy.key, loc, message, proof, tuple(fixes))


def _any_port(server: models.Pod | None) -> tuple[Protocol, int]:
    """A port to show a flow on when any will do: the server's first, or TCP/80."""
    if server is not None and server.ports:
        return server.ports[0].protocol, server.ports[0].port
    return DEFAULT_PORT


def _port_for(rule: models.Rule, server: models.Pod | None) -> tuple[Protocol, int] | None:
    """A protocol and port that ``rule``'s ports match on ``server``."""
    if not rule.ports:
        return _any_port(server)
    for item in rule.ports:
        if item.port is None:
            served = (
                [port.port for port in server.ports if port.protocol == item.protocol]
                if server
                else []
            )
            return item.protocol, served[0] if served else DEFAULT_PORT[1]
        if isinstance(item.port, int):
            return item.protocol, item.port
        if server is not None:
            number = server.named_port(item.port, item.protocol)
            if number is not None:
                return item.protocol, number
    return None


def _flow(direction: Direction, subject: str, other: str) -> tuple[str, str]:
    """(client, server) for a flow between the selected endpoint and the far side."""
    return (other, subject) if direction == "ingress" else (subject, other)


def _rules(policy: models.Policy) -> Iterator[tuple[Direction, int, models.Rule]]:
    for direction in ("ingress", "egress"):
        for index, rule in enumerate(policy.spec.rules(direction)):
            yield direction, index, rule


def _unmatched(
    ctx: _Context, peers: Sequence[models.NetworkPolicyPeer], world: models.Topology, name: str
) -> bool:
    return not _matched_by(ctx, peers, name, world)


def _matched_by(
    ctx: _Context, peers: Sequence[models.NetworkPolicyPeer], name: str, world: models.Topology
) -> bool:
    other = simulating.endpoint(world, name)
    return any(simulating.peer_matches(peer, ctx.policy, world, other) for peer in peers)


# --- the lints -------------------------------------------------------------------------


def _split_peer(ctx: _Context) -> Iterator[Lint]:
    for direction, number, rule in _rules(ctx.policy):
        peers = rule.peers or ()
        only_namespaces = [
            i
            for i, p in enumerate(peers)
            if p.namespace_selector is not None and p.pod_selector is None and p.ip_block is None
        ]
        only_pods = [
            i
            for i, p in enumerate(peers)
            if p.pod_selector is not None
            and p.namespace_selector is None
            and p.ip_block is None
            and not _is_empty(p.pod_selector)
        ]
        if not only_namespaces or not only_pods:
            continue
        first_ns, first_pod = only_namespaces[0], only_pods[0]
        namespaces = peers[first_ns].namespace_selector
        pods = peers[first_pod].pod_selector
        assert namespaces is not None
        assert pods is not None
        keep, drop = sorted((first_ns, first_pod))
        field_name, side, _ = _words(direction)
        here: Loc = ("spec", direction, number, field_name)
        fix = Fix(
            "Make them one peer (both must match)",
            (
                Edit(
                    "replace",
                    (*here, keep),
                    {
                        "namespaceSelector": ctx.raw((*here, first_ns, "namespaceSelector")),
                        "podSelector": ctx.raw((*here, first_pod, "podSelector")),
                    },
                ),
                Edit("remove", (*here, drop)),
            ),
        )
        subject = ctx.subject()
        if subject is None:
            continue
        selected, made = subject
        others = [peer for index, peer in enumerate(peers) if index != first_ns]
        # A pod in a namespace the namespaceSelector matches, without the pod labels:
        # allowed only because the two selectors are ORed.
        candidates = [
            name
            for name in ctx.index.pods(ctx.index.in_namespaces_matching(namespaces))
            if name != selected
            and not pods.matches(ctx.topology.pods[name].labels)
            and not _matched_by(ctx, others, name, ctx.topology)
        ]
        witnesses = list(made)
        if candidates:
            other = candidates[0]
        else:
            labels = labels_not_matching(pods)
            ns_labels = labels_matching(namespaces)
            if labels is None or ns_labels is None:
                continue
            existing = [
                name
                for name, nslabels in ctx.topology.namespaces.items()
                if namespaces.matches(nslabels)
            ]
            namespace = existing[0] if existing else "matching-namespace"
            made_other = ctx.witness(
                namespace,
                labels,
                namespace_labels=ns_labels,
                ports=ctx.named_ports([rule]) if direction == "egress" else (),
                role="other",
            )
            witnesses.append(made_other)
            other = made_other.name
            if _matched_by(ctx, others, other, with_witnesses(ctx.topology, witnesses)):
                continue
        client, server = _flow(direction, selected, other)
        proof = ctx.prove(client, server, witnesses, rule=rule, expect=True, fix=fix)
        if proof is None:
            continue
        yield ctx.lint(
            "split-peer",
            "warning",
            here,
            f"namespaceSelector {namespaces.describe()} and podSelector {pods.describe()} "
            f"are two peers, which are ORed: every pod of the matching namespaces is a "
            f"{side}, whatever its labels (and pods {pods.describe()} only in namespace "
            f"{ctx.policy.namespace}). In one peer they would both have to match.",
            proof,
            fixes=[fix],
        )


def _split_ports(ctx: _Context) -> Iterator[Lint]:
    for direction in ("ingress", "egress"):
        rules = ctx.policy.spec.rules(direction)
        with_peers = [i for i, rule in enumerate(rules) if rule.peers and not rule.ports]
        for number, rule in enumerate(rules):
            if not rule.ports or rule.peers or not with_peers:
                continue
            partner = max((i for i in with_peers if i < number), default=with_peers[0])
            peers = rules[partner].peers or ()
            field_name, side, sides = _words(direction)
            keep, drop = sorted((partner, number))
            fix = Fix(
                f"Make them one rule ({field_name} and ports both must match)",
                (
                    Edit(
                        "replace",
                        ("spec", direction, keep),
                        {
                            field_name: ctx.raw(("spec", direction, partner, field_name)),
                            "ports": ctx.raw(("spec", direction, number, "ports")),
                        },
                    ),
                    Edit("remove", ("spec", direction, drop)),
                ),
            )
            subject = ctx.subject()
            if subject is None:
                continue
            selected, made = subject
            world = with_witnesses(ctx.topology, made)
            # A far side none of the partner's peers matches: an outside address, or a
            # pod serving the port when the rule names its port.
            other = ctx.outside(partial(_unmatched, ctx, peers, world))
            witnesses = list(made)
            needs_pod = direction == "egress" and any(isinstance(p.port, str) for p in rule.ports)
            if other is None or needs_pod:
                candidates = [
                    name
                    for name in ctx.topology.pods
                    if name != selected
                    and not _matched_by(ctx, peers, name, world)
                    and _port_for(rule, ctx.topology.pods[name]) is not None
                ]
                if candidates:
                    other = candidates[0]
                else:
                    made_other = ctx.witness(
                        "elsewhere", {}, ports=ctx.named_ports([rule]), role="other"
                    )
                    witnesses.append(made_other)
                    other = made_other.name
            client, server = _flow(direction, selected, other)
            proof = ctx.prove(client, server, witnesses, rule=rule, expect=True, fix=fix)
            if proof is None:
                continue
            yield ctx.lint(
                "split-ports",
                "warning",
                ("spec", direction, number, "ports"),
                f"{direction} rule {number} has ports but no `{field_name}`: it is a rule of "
                f"its own (the `-` before `ports`), so these ports are open to every {side}, "
                f"and the {sides} of rule {partner} are allowed on every port. In one rule, "
                f"`{field_name}` and `ports` would both have to match.",
                proof,
                fixes=[fix],
            )


def _allows_dns_statically(rules: Sequence[models.Rule]) -> bool:
    """Whether some egress rule names port 53 (or every port of an outside peer)."""
    for rule in rules:
        if not rule.ports:
            if not rule.peers or any(peer.ip_block is not None for peer in rule.peers):
                return True
            continue
        for item in rule.ports:
            if item.protocol not in ("UDP", "TCP"):
                continue
            if item.port is None or item.port in {"dns", "dns-tcp"}:
                return True
            if isinstance(item.port, int):
                last = item.end_port if item.end_port is not None else item.port
                if item.port <= DNS_PORT <= last:
                    return True
    return False


def _egress_without_dns(ctx: _Context) -> Iterator[Lint]:
    if "Egress" not in ctx.policy.spec.effective_policy_types():
        return
    subject = ctx.subject()
    if subject is None:
        return
    selected, made = subject
    world = with_witnesses(ctx.topology, made)
    isolating = [
        policy
        for policy in (ctx.policy, *ctx.others)
        if "Egress" in policy.spec.effective_policy_types()
        and models.selects(policy, world, selected)
    ]
    servers = diagramming.dns_servers(ctx.topology, ctx.index)
    if not servers and _allows_dns_statically([r for p in isolating for r in p.spec.egress or ()]):
        return
    target = servers[0] if servers else "10.96.0.10"
    if any(
        ctx.verdict(simulating.explain(isolating, world, selected, server, "UDP", DNS_PORT))
        for server in servers
    ):
        return
    egress = ctx.raw(("spec", "egress"))
    rule = diagramming.dns_rule(ctx.topology, ctx.index)
    if isinstance(egress, list):
        edit = Edit("add", ("spec", "egress", len(egress)), rule)
    else:
        edit = Edit("add", ("spec", "egress"), [rule])
    fix = Fix("Allow DNS (UDP and TCP 53)", (edit,))
    dns_rule = models.NetworkPolicyEgressRule(
        ports=(models.NetworkPolicyPort(protocol="UDP", port=DNS_PORT),)
    )
    proof = ctx.prove(
        selected,
        target,
        made,
        rule=dns_rule,
        expect=False,
        fix=fix,
        fleet=True,
        check=ctx.egress_denied,
    )
    if proof is None:
        return
    loc: Loc = ("spec", "policyTypes") if ctx.raw(("spec", "policyTypes")) else ("spec", "egress")
    where = f"DNS ({target})" if servers else "DNS (port 53)"
    yield ctx.lint(
        "egress-without-dns",
        "warning",
        loc,
        f"egress is isolated and no rule lets {where} out: the selected endpoints cannot "
        "resolve names.",
        proof,
        fixes=[fix],
    )


def _own_namespace_peer(ctx: _Context) -> Iterator[Lint]:
    if not ctx.live:
        return
    for direction, number, rule in _rules(ctx.policy):
        field_name, side, _ = _words(direction)
        for position, peer in enumerate(rule.peers or ()):
            selector = peer.pod_selector
            if selector is None or _is_empty(selector) or peer.namespace_selector is not None:
                continue
            matching = ctx.index.pods_matching(selector)
            if not matching or matching & ctx.index.namespace(ctx.policy.namespace):
                continue
            elsewhere = ctx.index.pods(matching)
            namespaces = sorted({ctx.topology.namespace_of(name) for name in elsewhere})
            if len(namespaces) == 1:
                value: dict[str, Any] = {
                    "matchLabels": {models.NAMESPACE_NAME_LABEL: namespaces[0]}
                }
            else:
                value = {
                    "matchExpressions": [
                        {"key": models.NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}
                    ]
                }
            here: Loc = ("spec", direction, number, field_name, position)
            fix = Fix(
                f"Look in namespace{'s' if len(namespaces) > 1 else ''} {', '.join(namespaces)}",
                (Edit("add", (*here, "namespaceSelector"), value),),
            )
            subject = ctx.subject(avoid=elsewhere[0])
            if subject is None:
                continue
            selected, made = subject
            client, server = _flow(direction, selected, elsewhere[0])
            proof = ctx.prove(client, server, made, rule=rule, expect=False, fix=fix)
            if proof is None:
                continue
            count = len(elsewhere)
            yield ctx.lint(
                "own-namespace-peer",
                "warning",
                (*here, "podSelector"),
                f"a podSelector without namespaceSelector only looks in the policy's own "
                f"namespace ({ctx.policy.namespace}), where no endpoint has "
                f"{selector.describe()}; {count} endpoint{'s' if count > 1 else ''} in "
                f"{', '.join(namespaces)} {'have' if count > 1 else 'has'} them and "
                f"{'are' if count > 1 else 'is'} not a {side}.",
                proof,
                fixes=[fix],
            )


def _empty_pod_selector(ctx: _Context) -> Iterator[Lint]:
    if not _is_empty(ctx.policy.spec.pod_selector):
        return
    subject = ctx.subject()
    if subject is None:
        return
    selected, made = subject
    types = ctx.policy.spec.effective_policy_types()
    direction: Direction = "ingress" if "Ingress" in types else "egress"
    elsewhere = (
        name
        for name in ctx.topology.pods
        if ctx.topology.namespace_of(name) != ctx.policy.namespace
    )
    far = [ctx.outside(), next(elsewhere, None)]

    def isolates(explanation: simulating.Explanation) -> bool:
        judged = explanation.ingress if direction == "ingress" else explanation.egress
        return ctx.policy.key in judged.isolating

    proof = None
    for expect in (False, True):  # a flow it denies shows the selection best
        for other in far:
            if other is None:
                continue
            client, server = _flow(direction, selected, other)
            proof = ctx.prove(client, server, made, rule=None, expect=expect, check=isolates)
            if proof is not None:
                break
        if proof is not None:
            break
    if proof is None:
        return
    count = len(ctx.selected)
    yield ctx.lint(
        "empty-pod-selector",
        "info",
        ("spec", "podSelector"),
        f"podSelector {{}} selects every endpoint of namespace {ctx.policy.namespace} "
        f"({count} now), and every one added later.",
        proof,
    )


def _allow_all_rule(ctx: _Context) -> Iterator[Lint]:
    for direction, number, rule in _rules(ctx.policy):
        if rule.peers or rule.ports:
            continue
        subject = ctx.subject()
        outside = ctx.outside()
        if subject is None or outside is None:
            continue
        selected, made = subject
        field_name, side, sides = _words(direction)
        fix = Fix(
            f"Only endpoints of the fleet as {sides}",
            (
                Edit(
                    "replace",
                    ("spec", direction, number),
                    {field_name: [{"namespaceSelector": {}}]},
                ),
            ),
        )
        client, server = _flow(direction, selected, outside)
        proof = ctx.prove(client, server, made, rule=rule, expect=True, fix=fix)
        if proof is None:
            continue
        yield ctx.lint(
            "allow-all-rule",
            "warning",
            ("spec", direction, number),
            f"an empty {direction} rule allows every {side} on every port and protocol, "
            "outside the fleet too (not only the fleet's endpoints).",
            proof,
            fixes=[fix],
        )


def _host_bits_cidr(ctx: _Context) -> Iterator[Lint]:
    for direction, number, rule in _rules(ctx.policy):
        field_name = _words(direction)[0]
        for position, peer in enumerate(rule.peers or ()):
            if peer.ip_block is None:
                continue
            here: Loc = ("spec", direction, number, field_name, position, "ipBlock")
            written: list[tuple[str | int, Any]] = [("cidr", ctx.raw((*here, "cidr")))]
            written += [
                (index, text) for index, text in enumerate(ctx.raw((*here, "except")) or [])
            ]
            for which, text in written:
                if not isinstance(text, str):
                    continue
                network = models.parse_network(text)
                address = ipaddress.ip_address(text.partition("/")[0])
                if address == network.network_address:
                    continue
                loc: Loc = (*here, "cidr") if which == "cidr" else (*here, "except", which)
                block = peer.ip_block
                excepted = block.excepted if which == "cidr" else ()
                fixes = [
                    Fix(f"Write {network} (what it means)", (Edit("replace", loc, str(network)),))
                ]
                if which == "cidr":
                    host = f"{address}/{address.max_prefixlen}"
                    fixes.append(
                        Fix(f"Only {address}: write {host}", (Edit("replace", loc, host),))
                    )
                witness = _address_in(ctx, network, address, excepted)
                if witness is None:
                    continue
                subject = ctx.subject(avoid=witness)
                if subject is None:
                    continue
                selected, made = subject
                client, server = _flow(direction, selected, witness)
                expect = which == "cidr"
                proof = ctx.prove(client, server, made, rule=rule, expect=expect, fix=fixes[-1])
                if proof is None:
                    continue
                yield ctx.lint(
                    "host-bits-cidr",
                    "warning",
                    loc,
                    f"{text} has host bits set: it acts as {network}, so {witness} "
                    f"{'matches' if expect else 'is excepted'} too, not only {address}.",
                    proof,
                    fixes=fixes,
                )


def _address_in(
    ctx: _Context,
    network: models.Network,
    written: models.Address,
    excepted: Sequence[models.Network],
) -> str | None:
    """An address of ``network`` other than the one written: a pod's if one is there."""

    def fits(address: models.Address) -> bool:
        return address != written and not any(address in block for block in excepted)

    for name, pod in ctx.topology.pods.items():
        if pod.ip in network and fits(pod.ip):
            return name
    for offset in range(min(network.num_addresses, 4)):
        candidate = network.network_address + offset
        if fits(candidate) and str(candidate) not in ctx.used_addresses:
            return str(candidate)
    return None


def _selects_nothing(ctx: _Context) -> Iterator[Lint]:
    if not ctx.live or ctx.selected or not ctx.topology.pods:
        return
    policy = ctx.policy
    selector = policy.spec.pod_selector
    in_namespace = ctx.index.pods(ctx.index.namespace(policy.namespace))
    labelled = ctx.index.pods(
        ctx.index.namespace(policy.namespace) & ctx.index.pods_matching(selector)
    )
    elsewhere = ctx.index.pods(
        ctx.index.pods_matching(selector) & ~ctx.index.namespace(policy.namespace)
    )
    if labelled:  # the labels match; the node selector excludes them
        example = labelled[0]
        reason = (
            f"{len(labelled)} endpoint(s) of namespace {policy.namespace} have "
            f"{selector.describe()} but none is on a node the nodeSelector matches"
        )
    elif in_namespace:
        example = in_namespace[0]
        reason = (
            f"namespace {policy.namespace} has {len(in_namespace)} endpoint(s), none with "
            f"{selector.describe()}"
        )
    elif elsewhere:
        example = elsewhere[0]
        reason = (
            f"namespace {policy.namespace} has no endpoint; {example} has "
            f"{selector.describe()} but a policy selects only in its own namespace"
        )
    else:
        example = next(iter(ctx.topology.pods))
        reason = (
            f"namespace {policy.namespace} has no endpoint, and no endpoint has "
            f"{selector.describe()}"
        )
    outside = ctx.outside()
    if outside is None:
        return
    types = policy.spec.effective_policy_types()
    direction: Direction = "ingress" if "Ingress" in types else "egress"
    client, server = _flow(direction, example, outside)

    def unselected(explanation: simulating.Explanation) -> bool:
        judged = explanation.ingress if direction == "ingress" else explanation.egress
        return policy.key not in judged.isolating

    proof = ctx.prove(client, server, (), rule=None, expect=True, check=unselected)
    if proof is None:
        return
    yield ctx.lint(
        "selects-nothing",
        "warning",
        ("spec", "podSelector"),
        f"selects no endpoint of the fleet now: {reason}.",
        proof,
    )


def _deny_all_egress(ctx: _Context) -> Iterator[Lint]:
    spec = ctx.policy.spec
    if "Egress" not in spec.effective_policy_types() or spec.egress:
        return
    subject = ctx.subject()
    if subject is None:
        return
    selected, made = subject
    # An address outside the fleet: its own ingress is not policed, so the verdict is
    # this side's egress alone.
    destination = ctx.outside() or next(
        (name for name in ctx.topology.pods if name != selected), None
    )
    if destination is None:
        return
    types = ctx.raw(("spec", "policyTypes"))
    fixes = []
    if isinstance(types, list) and "Ingress" in types and spec.ingress:
        fixes.append(
            Fix(
                "Restrict ingress only",
                (Edit("replace", ("spec", "policyTypes"), [t for t in types if t != "Egress"]),),
            )
        )
    proof = ctx.prove(
        selected,
        destination,
        made,
        rule=None,
        expect=False,
        fix=fixes[0] if fixes else None,
        fleet=True,  # no lint when another policy in force lets the endpoints out
        check=ctx.egress_denied,
    )
    if proof is None:
        return
    count = len(ctx.selected)
    yield ctx.lint(
        "deny-all-egress",
        "warning" if fixes else "info",
        ("spec", "policyTypes") if types is not None else ("spec",),
        f"Egress is in policyTypes and there is no egress rule: every connection the "
        f"{count} selected endpoint(s) open is denied, DNS included.",
        proof,
        fixes=fixes,
    )


CHECKS: tuple[Callable[[_Context], Iterator[Lint]], ...] = (
    _split_peer,
    _split_ports,
    _egress_without_dns,
    _own_namespace_peer,
    _empty_pod_selector,
    _allow_all_rule,
    _host_bits_cidr,
    _selects_nothing,
    _deny_all_egress,
)
CODES = (
    "split-peer",
    "split-ports",
    "egress-without-dns",
    "own-namespace-peer",
    "empty-pod-selector",
    "allow-all-rule",
    "host-bits-cidr",
    "selects-nothing",
    "deny-all-egress",
)


def lint(
    policy: models.Policy,
    topology: models.Topology,
    *,
    others: Sequence[models.Policy] = (),
    source: LocatedDocument | None = None,
    index: connectivity.Index | None = None,
    live: bool = True,
) -> list[Lint]:
    """Every lint of ``policy`` over ``topology``, in the order of the text.

    ``others`` are the other policies in force (a DNS rule may live in one of them);
    ``source`` is the document as written (CIDRs before normalising, lines and columns);
    ``live`` says the topology is the fleet's real one, so "selects nothing" and
    "peer only in its own namespace" can be judged (not on made-up topologies).
    """
    content = source.content if source is not None and isinstance(source.content, Mapping) else None
    if content is None:
        content = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    ctx = _Context(
        policy,
        topology,
        index if index is not None and index.topology is topology else connectivity.Index(topology),
        [other for other in others if other is not policy],
        content,
        live,
    )
    found = [item for check in CHECKS for item in itertools.islice(check(ctx), MAX_PER_CODE)]
    if source is not None:
        found = [
            Lint(
                item.code,
                item.severity,
                item.policy,
                item.loc,
                item.message,
                item.proof,
                item.fixes,
                source.span_of(item.loc),
                source.index,
            )
            for item in found
        ]
    return sorted(found, key=lambda item: (item.line or 0, CODES.index(item.code)))
