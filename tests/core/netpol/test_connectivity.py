"""The bitset engine against the simulator: every pair, both views, random policies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from bpfleet_core.netpol import connectivity, models, simulating, validating
from tests.core.netpol import shared
from tests.core.netpol.test_differential import Scenario, scenarios


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_pair_is_judged_as_explain_judges_it(scenario: Scenario) -> None:
    topology, documents, flows = scenario
    policies = [validating.validate(document).policy for document in documents]
    index = connectivity.Index(topology)
    for protocol, port in flows:
        for view in ("enforce", "audit"):
            judged = connectivity.judge(index, policies, protocol, port, view=view)
            rows = judged.rows()
            for client, client_name in enumerate(index.names):
                for server, server_name in enumerate(index.names):
                    expected = simulating.explain(
                        policies, topology, client_name, server_name, protocol, port
                    )
                    verdict = expected.allowed if view == "enforce" else expected.audit_allowed
                    where = (client_name, server_name, protocol, port, view)
                    assert bool(rows[client] >> server & 1) == verdict, where
                    assert judged.allowed(client, server) == verdict, where
                    if client != server:
                        egress = expected.egress if view == "enforce" else expected.audit_egress
                        ingress = expected.ingress if view == "enforce" else expected.audit_ingress
                        assert bool(judged.servers_of(client) >> server & 1) == egress.allowed
                        assert bool(judged.clients_of(server) >> client & 1) == ingress.allowed


def test_rows_for_some_clients_only(topology: models.Topology) -> None:
    policies = shared.policies(
        [
            shared.policy(
                "a",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                },
            )
        ]
    )
    index = connectivity.Index(topology)
    judged = connectivity.judge(index, policies, "TCP", 80)
    every = judged.rows()
    some = judged.rows(index.bit("x/b") | index.bit("y/a"))
    assert set(some) == {index.position["x/b"], index.position["y/a"]}
    for client, row in some.items():
        assert row == every[client]
    assert every[index.position["x/b"]] >> index.position["x/a"] & 1
    assert not every[index.position["y/a"]] >> index.position["x/a"] & 1


def test_selections_by_labels_namespaces_blocks_and_named_ports(topology: models.Topology) -> None:
    index = connectivity.Index(topology)
    assert index.pods(index.pods_matching(models.LabelSelector(match_labels={"pod": "a"}))) == [
        "x/a",
        "y/a",
        "z/a",
    ]
    assert index.pods(
        index.in_namespaces_matching(
            models.LabelSelector.model_validate(
                {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x", "y"]}]}
            )
        )
    ) == ["z/a", "z/b", "z/c"]
    block = models.IPBlock.model_validate(
        {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24", "10.0.3.3/32"]}
    )
    assert index.pods(index.in_block(block)) == ["x/a", "x/b", "x/c", "z/a", "z/b"]
    assert index.in_block(models.IPBlock(cidr="::/0")) == 0
    named = models.NetworkPolicyIngressRule.model_validate(
        {"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}
    )
    assert index.servers_for(named, "UDP", 81) == index.everyone
    assert index.servers_for(named, "UDP", 80) == 0
    assert index.servers_for(named, "TCP", 81) == 0
    assert index.pods(index.serving("SCTP", 80)) == list(index.names)
    assert index.served() == sorted((p, n) for n in (80, 81) for p in ("SCTP", "TCP", "UDP"))
