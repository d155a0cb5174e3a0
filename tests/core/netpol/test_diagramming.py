"""The diagram of a policy: boxes per side with their state and the rules admitting
them, the edits a denied box offers (applied, they allow it: the simulator says so),
rules located by line, and the mode switch."""

from __future__ import annotations

import pytest
import yaml

from bpfleet_core.netpol import diagramming, drafting, editing, lessons, models, simulating

TOPOLOGY = lessons.DEMO_TOPOLOGY
DB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}   # the database
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 5432}]
  - from:
    - namespaceSelector: {matchLabels: {team: sre}}
"""


def diagram(text: str) -> diagramming.Diagram:
    draft = drafting.read(text)
    [document] = draft.documents
    assert document.policy is not None, draft.diagnostics
    return diagramming.draw(document.policy, TOPOLOGY, source=document.source)


def box(found: diagramming.Diagram, direction: str, kind: str) -> diagramming.Box:
    return next(b for b in found.boxes if (b.direction, b.kind) == (direction, kind))


def test_each_box_says_whether_its_peers_get_through_and_by_which_rule() -> None:
    found = diagram(DB)
    assert [(b.direction, b.kind, b.state, b.rules) for b in found.boxes] == [
        ("ingress", "namespace", "allowed", (0,)),
        ("ingress", "other-namespaces", "allowed", (1,)),
        ("ingress", "outside", "denied", ()),
        ("egress", "namespace", "denied", ()),
        ("egress", "other-namespaces", "denied", ()),
        ("egress", "outside", "denied", ()),
        ("egress", "dns", "denied", ()),
    ]
    first, second = found.rules
    assert (first.span and first.span.line, first.span and first.span.end_line) == (8, 10)
    assert [peer.description for peer in first.peers] == ["pods app=web of namespace shop"]
    assert first.ports == "TCP/5432"
    assert second.span is not None
    assert second.span.line == 11
    assert box(found, "ingress", "outside").summary == (
        "denied: no ingress rule lets outside (ipBlock) in"
    )


def test_a_direction_the_policy_does_not_isolate_is_unrestricted() -> None:
    found = diagram(DB.replace("policyTypes: [Ingress, Egress]", "policyTypes: [Ingress]"))
    assert {b.state for b in found.boxes if b.direction == "egress"} == {"unrestricted"}
    assert all(not b.actions for b in found.boxes if b.direction == "egress")


@pytest.mark.parametrize(
    ("peer", "boxes"),
    [
        ("{podSelector: {}}", ("namespace",)),
        ("{namespaceSelector: {}}", ("namespace", "other-namespaces")),
        ("{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}", ("namespace",)),
        ("{namespaceSelector: {matchLabels: {team: nobody}}}", ("other-namespaces",)),
        ("{ipBlock: {cidr: 192.0.2.0/24}}", ("outside",)),
    ],
)
def test_which_box_a_peer_belongs_to_is_judged_on_the_topology(
    peer: str, boxes: tuple[str, ...]
) -> None:
    text = DB.split("  ingress:", maxsplit=1)[0] + f"  ingress:\n  - from: [{peer}]\n"
    assert diagram(text).rules[0].boxes == boxes


def test_dns_is_a_rule_whose_ports_take_53_towards_a_dns_server() -> None:
    egress = DB.split("  ingress:", maxsplit=1)[0] + "  egress:\n"
    to_dns = egress + (
        "  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]\n"
        "    ports: [{protocol: UDP, port: 53}]\n"
    )
    to_db = egress + "  - to: [{podSelector: {matchLabels: {app: db}}}]\n    ports: [{port: 53}]\n"
    assert "dns" in diagram(to_dns).rules[0].boxes
    assert "dns" not in diagram(to_db).rules[0].boxes
    assert box(diagram(to_db), "egress", "dns").state == "denied"


@pytest.mark.parametrize(
    ("direction", "kind", "client", "server", "protocol", "port"),
    [
        ("egress", "dns", "shop/db", "kube-system/coredns", "UDP", 53),
        ("egress", "namespace", "shop/db", "shop/web", "TCP", 80),
        ("egress", "other-namespaces", "shop/db", "monitoring/prometheus", "TCP", 9090),
        ("egress", "outside", "shop/db", "203.0.113.10", "TCP", 443),
        ("ingress", "outside", "203.0.113.10", "shop/db", "TCP", 5432),
    ],
)
def test_a_denied_boxs_action_allows_it_once_applied(
    direction: str, kind: str, client: str, server: str, protocol: models.Protocol, port: int
) -> None:
    draft = drafting.read(DB)
    [document] = draft.documents
    assert document.policy is not None
    found = diagramming.draw(document.policy, TOPOLOGY, source=document.source)
    [action] = box(found, direction, kind).actions
    before = simulating.explain([document.policy], TOPOLOGY, client, server, protocol, port)
    assert not before.allowed
    fixed = drafting.read(
        yaml.safe_dump(editing.apply_edits(document.source.content, action.edits))
    )
    [policy] = fixed.policies
    after = simulating.explain([policy], TOPOLOGY, client, server, protocol, port)
    assert after.allowed, after.lines()
    assert box(diagramming.draw(policy, TOPOLOGY), direction, kind).state == "allowed"


def test_the_internet_leaves_out_the_private_ranges() -> None:
    found = diagram(DB)
    [action] = box(found, "ingress", "outside").actions
    assert action.edits[0].value == {"from": [diagramming.INTERNET]}
    assert diagramming.INTERNET["ipBlock"]["except"] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ]


def test_the_mode_switches_and_a_kubernetes_document_becomes_a_bpfleet_one() -> None:
    found = diagram(DB)
    assert found.mode == "enforce"
    [audit] = found.modes.values()
    assert [(edit.op, edit.path, edit.value) for edit in audit.edits] == [
        ("replace", ("apiVersion",), "bpfleet.io/v1alpha1"),
        ("add", ("spec", "mode"), "audit"),
    ]
    draft = drafting.read(DB)
    content = editing.apply_edits(draft.documents[0].source.content, audit.edits)
    [policy] = drafting.read(yaml.safe_dump(content)).policies
    assert policy.mode == "audit"
    back = diagramming.draw(policy, TOPOLOGY)
    assert list(back.modes) == ["enforce"]
