"""The compiler's output (the datapath's contract), and that it decides as the simulator does."""

from __future__ import annotations

import ipaddress

import pytest

from bpfleet_core.netpol import compiling, models
from bpfleet_core.netpol.rules import DirectionRules, PeerBlock, PortRange, Prefix, Rule
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
