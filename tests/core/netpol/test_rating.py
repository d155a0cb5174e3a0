"""Ratings over the standard topology: default-deny, the widest peer and its line, the
grade, and the (endpoint, port) pairs let in and out, counted against the simulator."""

from __future__ import annotations

from bpfleet_core.netpol import linting, locating, models, rating, simulating, validating
from tests.core.netpol import shared


def rated(spec: str, topology: models.Topology) -> tuple[models.Policy, rating.Rating]:
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: p, namespace: x}\nspec:\n" + spec
    )
    source = locating.parse(text).documents[0]
    policy = validating.validate(source.content).policy
    return policy, rating.rate(policy, topology, source=source)


def counted(policy: models.Policy, topology: models.Topology, direction: str) -> tuple[int, int]:
    """The pairs, one explain at a time: the definition the rating must meet."""
    allowed = total = 0
    selected = [name for name in topology.pods if models.selects(policy, topology, name)]
    for name in selected:
        for other in topology.pods:
            if other == name:
                continue
            server, client = (name, other) if direction == "ingress" else (other, name)
            for port in topology.pods[server].ports:
                total += 1
                explanation = simulating.explain(
                    [policy], topology, client, server, port.protocol, port.port
                )
                judged = (
                    explanation.audit_ingress
                    if direction == "ingress"
                    else explanation.audit_egress
                )
                allowed += judged.allowed
    return allowed, total


def test_open_to_the_internet_on_every_port_rates_lowest_and_names_its_line(
    topology: models.Topology,
) -> None:
    policy, result = rated(
        "  podSelector: {matchLabels: {pod: a}}\n"
        "  ingress:\n"
        "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n"
        "    ports: [{port: 80}]\n"
        "  - from:\n"
        "    - ipBlock: {cidr: 0.0.0.0/0}\n",
        topology,
    )
    ingress = result.ingress
    assert (ingress.isolated, ingress.grade, result.grade) == (True, "F", "F")
    assert ingress.widest is not None
    assert ingress.widest.description == "0.0.0.0/0"
    assert ingress.widest.reach == rating.ANYWHERE
    assert ingress.widest.ports == "every port"
    assert ingress.widest.span is not None
    assert ingress.widest.span.line == 10
    assert ingress.widest.loc == ("spec", "ingress", 1, "from", 0, "ipBlock", "cidr")
    assert ingress.outside
    assert "line 10" in ingress.summary
    assert (ingress.pairs_allowed, ingress.pairs_total) == counted(policy, topology, "ingress")
    assert ingress.pairs_allowed == ingress.pairs_total == 8 * 6  # to x/a: 8 clients, 6 ports
    assert (result.egress.isolated, result.egress.grade) == (False, None)
    assert result.egress.summary == "egress: not restricted by this policy"


def test_narrow_peers_on_listed_ports_rate_best(topology: models.Topology) -> None:
    policy, result = rated(
        "  podSelector: {matchLabels: {pod: a}}\n"
        "  policyTypes: [Ingress, Egress]\n"
        "  ingress:\n"
        "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n"
        "    ports: [{port: 80}]\n"
        "  egress:\n"
        "  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]\n",
        topology,
    )
    assert result.ingress.grade == "A"
    assert result.ingress.widest is not None
    assert result.ingress.widest.description == "pods pod=b of namespace x"
    assert (result.ingress.pairs_allowed, result.ingress.pairs_total) == counted(
        policy, topology, "ingress"
    )
    # x/a admits x/b on TCP/80 only.
    assert result.ingress.pairs_allowed == 1
    assert result.egress.grade == "C"
    assert result.egress.widest is not None
    assert result.egress.widest.reach == rating.SOME_NAMESPACES
    assert (result.egress.pairs_allowed, result.egress.pairs_total) == counted(
        policy, topology, "egress"
    )
    assert result.egress.pairs_allowed == 3 * 6
    assert result.grade == "C"


def test_default_deny_allows_nothing_and_rates_a(topology: models.Topology) -> None:
    policy, result = rated("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n", topology)
    for direction in (result.ingress, result.egress):
        assert (direction.isolated, direction.grade, direction.widest) == (True, "A", None)
        assert direction.pairs_allowed == 0
        assert direction.selected == 3
        assert "nothing allowed" in direction.summary
    assert result.ingress.pairs_total == counted(policy, topology, "ingress")[1] == 3 * 8 * 6


def test_the_widest_of_several_rules_is_the_worst_graded(topology: models.Topology) -> None:
    _, result = rated(
        "  podSelector: {matchLabels: {pod: a}}\n"
        "  ingress:\n"
        "  - from: [{podSelector: {}}]\n"
        "  - from: [{namespaceSelector: {}}]\n"
        "    ports: [{port: 81, protocol: UDP}]\n"
        "  - ports: [{port: 80}]\n",
        topology,
    )
    assert result.ingress.widest is not None
    assert result.ingress.widest.reach == rating.ANYWHERE
    assert result.ingress.widest.loc == ("spec", "ingress", 2)
    assert result.ingress.grade == "D"
    assert result.ingress.widest.description == "every source (no `from`)"


def test_an_audit_policy_is_rated_as_if_enforced(topology: models.Topology) -> None:
    document = shared.policy(
        "p",
        {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
        mode="audit",
    )
    policy = validating.validate(document).policy
    result = rating.rate(policy, topology)
    assert (result.ingress.pairs_allowed, result.ingress.grade) == (0, "A")
    assert result.to_dict()["ingress"]["defaultDeny"] is True


def test_ratings_count_made_up_witnesses_only_when_asked(topology: models.Topology) -> None:
    policy = validating.validate(
        shared.policy("p", {"podSelector": {"matchLabels": {"pod": "q"}}})
    ).policy
    result = rating.rate(policy, topology)
    assert result.ingress.selected == 0
    assert (result.ingress.pairs_allowed, result.ingress.pairs_total) == (0, 0)
    assert linting.labels_matching(policy.spec.pod_selector) == {"pod": "q"}
