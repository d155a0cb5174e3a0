"""The compiler's output (the datapath's contract), and that it decides as the simulator does."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfleet_core.netpol import compiling, models, validating
from bpfleet_core.netpol.rules import DirectionRules, PeerBlock, PortRange, Prefix, Rule
from tests.core.netpol import test_differential as differential
from tests.core.netpol.shared import policies, policy
from tests.core.netpol.test_simulating import POD_A, named_port_topology


def net(text: str) -> Prefix:
    return Prefix.parse(text)


def host(text: str) -> PeerBlock:
    return PeerBlock(net(text))


def test_ingress_peers_and_ports(topology: models.Topology) -> None:
    document = policy(
        "web",
        {
            "podSelector": POD_A,
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
                    ]
                },
                {
                    "ports": [
                        {"port": 80},
                        {"port": 1000, "endPort": 2000, "protocol": "UDP"},
                        {"protocol": "SCTP"},
                        {"port": "serve-81-tcp"},
                        {"port": "no-such-port"},
                    ]
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"ns": "y"}},
                            "podSelector": {"matchLabels": {"pod": "c"}},
                        }
                    ],
                    "ports": [{"port": "nope"}],
                },
            ],
        },
    )
    compiled = compiling.compile_policies(policies([document]), topology)
    assert list(compiled) == ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    x_a = compiled["x/a"]
    assert x_a.endpoint == "x/a"
    assert x_a.address == ipaddress.ip_address("10.0.1.1")
    assert x_a.ingress == DirectionRules(
        isolated=True,
        rules=(
            Rule(
                "x/web",
                0,
                (host("10.0.1.2/32"), PeerBlock(net("192.168.0.0/16"), (net("192.168.1.0/24"),))),
                (PortRange(None),),
            ),
            Rule(
                "x/web",
                1,
                None,
                (
                    PortRange("TCP", 80, 80),
                    PortRange("UDP", 1000, 2000),
                    PortRange("SCTP", 0, 65535),
                    PortRange("TCP", 81, 81),
                ),
            ),
            Rule("x/web", 2, (host("10.0.2.3/32"),), ()),
        ),
        policies=("x/web",),
    )
    assert x_a.egress == DirectionRules()
    assert x_a.audit_ingress == x_a.ingress
    assert compiled["x/b"].ingress == DirectionRules(isolated=False, rules=())


def test_egress_named_ports_split_by_destination() -> None:
    world = named_port_topology()
    document = policy(
        "out",
        {
            "podSelector": POD_A,
            "policyTypes": ["Egress"],
            "egress": [
                {"ports": [{"port": "web"}, {"port": 53, "protocol": "UDP"}]},
                {
                    "to": [{"ipBlock": {"cidr": "10.0.2.0/24", "except": ["10.0.2.3/32"]}}],
                    "ports": [{"port": "web"}],
                },
                {"to": [{"namespaceSelector": {}}], "ports": [{"port": "web", "protocol": "UDP"}]},
            ],
        },
    )
    egress = compiling.compile_policies(policies([document]), world)["x/a"].egress
    assert egress == DirectionRules(
        isolated=True,
        rules=(
            Rule("x/out", 0, None, (PortRange("UDP", 53, 53),)),
            Rule("x/out", 0, (host("10.0.2.2/32"),), (PortRange("TCP", 8080, 8080),)),
            Rule("x/out", 0, (host("10.0.2.3/32"),), (PortRange("TCP", 9090, 9090),)),
            # An ipBlock with a named port: only the pods inside the block that have the port.
            Rule("x/out", 1, (host("10.0.2.2/32"),), (PortRange("TCP", 8080, 8080),)),
            # A named port that no pod serves on that protocol: a rule that never matches.
            Rule("x/out", 2, (host("10.0.1.1/32"), host("10.0.2.2/32"), host("10.0.2.3/32")), ()),
        ),
        policies=("x/out",),
    )


def test_enforce_and_audit_views(topology: models.Topology) -> None:
    enforce = policy("in", {"podSelector": POD_A, "ingress": [{"ports": [{"port": 80}]}]})
    audit = policy("audit", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, mode="audit")
    compiled = compiling.compile_policies(policies([enforce, audit]), topology)
    x_a, x_b = compiled["x/a"], compiled["x/b"]
    assert x_a.ingress.rules == (Rule("x/in", 0, None, (PortRange("TCP", 80, 80),)),)
    assert x_a.audit_ingress.rules == x_a.ingress.rules  # the audit policy adds isolation
    assert x_a.egress == DirectionRules()
    assert x_a.audit_ingress.policies == ("x/in", "x/audit")
    assert x_a.audit_egress == DirectionRules(isolated=True, policies=("x/audit",))
    assert x_b.ingress == DirectionRules()
    assert x_b.audit_ingress == DirectionRules(isolated=True, policies=("x/audit",))
    a, b = x_a.address, x_b.address
    assert compiling.verdict(compiled, b, a, "TCP", 80)
    assert compiling.verdict(compiled, b, a, "TCP", 80, view="audit") is False
    assert compiling.verdict(compiled, a, b, "UDP", 81)
    assert compiling.verdict(compiled, a, b, "UDP", 81, view="audit") is False


def test_only_this_nodes_endpoints(topology: models.Topology) -> None:
    compiled = compiling.compile_policies([], topology, node_endpoints={"y/b", "x/c"})
    assert list(compiled) == ["x/c", "y/b"]
    with pytest.raises(ValueError, match="not pods of the topology: q/q"):
        compiling.compile_policies([], topology, node_endpoints={"q/q"})


def test_ipv6_pods_are_128_blocks() -> None:
    world = models.Topology.model_validate(
        {
            "namespaces": {"x": {}},
            "pods": {"x/a": {"ip": "fd00::1", "labels": {"pod": "a"}}, "x/b": {"ip": "fd00::2"}},
        }
    )
    document = policy("p", {"podSelector": {}, "ingress": [{"from": [{"podSelector": POD_A}]}]})
    compiled = compiling.compile_policies(policies([document]), world)
    assert compiled["x/b"].ingress.rules[0].peers == (host("fd00::1/128"),)
    assert compiling.verdict(compiled, "fd00::1", "fd00::2", "TCP", 80)
    assert not compiling.verdict(compiled, "fd00::2", "fd00::1", "TCP", 80)
    assert not compiling.verdict(compiled, "10.0.0.1", "fd00::1", "TCP", 80)


def test_addresses_that_are_no_endpoint_are_not_policed(topology: models.Topology) -> None:
    deny = policy("deny", {"podSelector": POD_A, "policyTypes": ["Ingress", "Egress"]})
    compiled = compiling.compile_policies(policies([deny]), topology)
    assert compiling.verdict(compiled, "192.0.2.1", "198.51.100.1", "TCP", 80)
    assert not compiling.verdict(compiled, "192.0.2.1", "10.0.1.1", "TCP", 80)
    assert not compiling.verdict(compiled, "10.0.1.1", "192.0.2.1", "TCP", 80)
    assert compiling.verdict(compiled, "10.0.1.1", "10.0.1.1", "TCP", 80)
    partial = compiling.compile_policies(policies([deny]), topology, node_endpoints={"x/b"})
    assert compiling.verdict(
        partial, "10.0.1.2", "10.0.1.1", "TCP", 80
    )  # x/a is enforced elsewhere


# --- the compile cache: what did not change comes back as the very same objects ----


def _allow_list(count: int, changed: int | None = None) -> dict[str, object]:
    rules = [
        {"from": [{"ipBlock": {"cidr": f"192.168.{i >> 8}.{i & 255}/32"}}], "ports": [{"port": 80}]}
        for i in range(count)
    ]
    if changed is not None:
        rules[changed] = {"from": [{"ipBlock": {"cidr": "192.0.2.7/32"}}], "ports": [{"port": 80}]}
    return policy("allow", {"podSelector": POD_A, "ingress": rules})


def _replace_rule(
    document: models.Policy, index: int, rule: models.NetworkPolicyIngressRule
) -> models.Policy:
    """``document`` with one ingress rule replaced; every other rule the same object."""
    ingress = list(document.spec.ingress or ())
    ingress[index] = rule
    spec = document.spec.model_copy(update={"ingress": tuple(ingress)})
    return document.model_copy(update={"spec": spec})


def test_the_cache_hands_back_what_did_not_change(topology: models.Topology) -> None:
    (document,) = policies([_allow_list(50)])
    cache = compiling.CompileCache()
    first = compiling.compile_policies([document], topology, cache=cache)["x/a"].ingress.rules
    again = compiling.compile_policies([document], topology, cache=cache)["x/a"].ingress.rules
    assert all(a is b for a, b in zip(first, again, strict=True))
    (other,) = policies([_allow_list(50, changed=7)])
    changed = _replace_rule(document, 7, (other.spec.ingress or ())[7])
    result = compiling.compile_policies([changed], topology, cache=cache)
    rules = result["x/a"].ingress.rules
    assert [i for i, (a, b) in enumerate(zip(first, rules, strict=True)) if a is not b] == [7]
    assert rules[7].peers == (host("192.0.2.7/32"),)
    assert result == compiling.compile_policies([changed], topology)


def test_a_new_topology_recompiles_selectors_and_keeps_ip_blocks(
    topology: models.Topology,
) -> None:
    document = policy(
        "mixed",
        {
            "podSelector": POD_A,
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]},
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]},
            ],
        },
    )
    (parsed,) = policies([document])
    cache = compiling.CompileCache()
    before = compiling.compile_policies([parsed], topology, cache=cache)["x/a"].ingress.rules
    moved = topology.with_labels(podlabels={"x/c": {"pod": "b"}})
    result = compiling.compile_policies([parsed], moved, cache=cache)
    after = result["x/a"].ingress.rules
    assert after[0] is before[0]
    assert after[1] is not before[1]
    assert result == compiling.compile_policies([parsed], moved)


def test_named_ports_resolve_per_endpoint_through_the_cache() -> None:
    world = named_port_topology()
    document = policy("named", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]})
    (parsed,) = policies([document])
    cache = compiling.CompileCache()
    for _ in range(2):
        assert compiling.compile_policies([parsed], world, cache=cache) == (
            compiling.compile_policies([parsed], world)
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(differential.scenarios(), min_size=2, max_size=4), st.randoms())
def test_compiling_through_the_cache_changes_nothing(
    steps: list[differential.Scenario], chance: random.Random
) -> None:
    """Policies and topologies one after another (some kept as the same objects, as the
    agent keeps what did not change): the cache's results are the uncached ones."""
    cache = compiling.CompileCache()
    previous: list[models.Policy] = []
    topology: models.Topology | None = None
    for world, documents, _ in steps:
        if topology is None or chance.random() < 0.7:
            topology = world
        parsed = [validating.validate(document).policy for document in documents]
        kept = [old for old in previous if chance.random() < 0.5]
        chosen = [*kept, *parsed]
        known = {key for key in topology.pods}
        chosen = [p for p in chosen if p.namespace in topology.namespaces]
        expected = compiling.compile_policies(chosen, topology)
        assert compiling.compile_policies(chosen, topology, cache=cache) == expected
        subset = set(sorted(known)[: len(known) // 2])
        assert compiling.compile_policies(
            chosen, topology, node_endpoints=subset, cache=cache
        ) == compiling.compile_policies(chosen, topology, node_endpoints=subset)
        previous = chosen
