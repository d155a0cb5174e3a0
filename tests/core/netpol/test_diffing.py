"""Semantic diff: the changed cells are exactly those whose simulated verdict differs."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from bpfleet_core.netpol import connectivity, diffing, models, simulating, validating
from tests.core.netpol import shared
from tests.core.netpol.test_differential import Scenario, scenarios

DENY_X = shared.policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_A_FROM_Y = shared.policy(
    "allow",
    {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
    },
)


def test_a_deny_all_denies_every_cell_into_the_namespace(topology: models.Topology) -> None:
    after = shared.policies([DENY_X])
    result = diffing.diff([], after, topology, "TCP", 80)
    assert (result.allowed, result.denied) == (0, 3 * 8)  # 3 servers, 8 clients each
    assert result.summary == "+0 allowed, -24 denied"
    assert result.complete
    assert all(cell.server.startswith("x/") and cell.change == "denied" for cell in result.cells)
    assert not any(cell.client == cell.server for cell in result.cells)


def test_allowing_back_counts_what_comes_back(topology: models.Topology) -> None:
    deny = shared.policies([DENY_X])
    both = [*deny, *shared.policies([ALLOW_A_FROM_Y])]
    result = diffing.diff(deny, both, topology, "TCP", 80)
    assert (result.allowed, result.denied) == (3, 0)
    assert {(cell.client, cell.server) for cell in result.cells} == {
        ("y/a", "x/a"),
        ("y/b", "x/a"),
        ("y/c", "x/a"),
    }
    limited = diffing.diff([], both, topology, "TCP", 80, limit=2)
    assert len(limited.cells) == 2
    assert not limited.complete
    assert limited.denied == 3 * 8 - 3


def test_ports_diff_and_the_ports_worth_diffing(topology: models.Topology) -> None:
    after = shared.policies(
        [
            shared.policy(
                "p",
                {
                    "podSelector": {},
                    "ingress": [
                        {"ports": [{"port": 81}, {"port": "serve-80-udp", "protocol": "UDP"}]}
                    ],
                },
            )
        ]
    )
    flows = diffing.common_ports(after, topology)
    assert flows[:2] == [("TCP", 81), ("UDP", 80)]
    assert ("TCP", 443) in flows
    results = diffing.diff_ports([], after, topology, flows)
    by_flow = {(item.protocol, item.port): item for item in results}
    assert by_flow[("TCP", 81)].denied == 0
    assert by_flow[("UDP", 80)].denied == 0
    assert by_flow[("TCP", 80)].denied == 24
    assert all(item.cells == () for item in results)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), scenarios())
def test_the_cells_are_the_verdicts_that_differ(one: Scenario, other: Scenario) -> None:
    topology, documents, flows = one
    before = [validating.validate(document).policy for document in documents]
    # The other scenario's policies, moved into this topology's namespaces.
    namespace = sorted(topology.namespaces)[0]
    changed = [
        validating.validate(
            {**document, "metadata": {"name": f"o{i}", "namespace": namespace}}
        ).policy
        for i, document in enumerate(other[1])
    ]
    after = [*before[:1], *changed]
    index = connectivity.Index(topology)
    for protocol, port in flows[:3]:
        result = diffing.diff(before, after, index, protocol, port)
        expected = set()
        for client in topology.pods:
            for server in topology.pods:
                old = simulating.allowed(before, topology, client, server, protocol, port)
                new = simulating.allowed(after, topology, client, server, protocol, port)
                if old != new:
                    expected.add((client, server, "allowed" if new else "denied"))
        assert {(c.client, c.server, c.change) for c in result.cells} == expected
        assert result.allowed + result.denied == len(expected)
