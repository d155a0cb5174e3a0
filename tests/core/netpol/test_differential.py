"""Random policies over random small topologies: the compiled rules, evaluated as the
datapath evaluates them (``compiling.verdict``), decide every flow as the simulator does.

Besides whole matrices, each direction is compared on its own (a blanket deny on one
side would otherwise hide a wrong answer on the other), for pod pairs and for addresses
outside the topology, in the enforce and the audit view.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfleet_core.netpol import compiling, models, simulating, validating
from bpfleet_core.netpol.rules import EndpointRules

NAMESPACES = ("n1", "n2", "n3")
NAMESPACE_LABELS = {"team": ("a", "b"), "env": ("p", "q")}
POD_LABELS = {"app": ("w", "d"), "tier": ("1", "2")}
ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.0.130", "10.0.1.1", "10.0.1.2", "10.1.0.1")
ADDRESSES_V6 = ("fd00::1", "fd00::2:1")
OUTSIDE = ("10.0.0.200", "fd00::99")
CIDRS = (
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.0.0/25",
    "10.0.0.128/25",
    "10.0.1.0/24",
    "10.0.0.1/32",
    "10.0.1.2/32",
    "::/0",
    "fd00::/16",
    "fd00::/64",
    "fd00::2:0/112",
)
PORT_NAMES = ("web", "dns", "metrics")
PROTOCOLS: tuple[models.Protocol, ...] = ("TCP", "UDP", "SCTP")
PROBE_PORTS = (80, 81, 1000, 8080)

Scenario = tuple[models.Topology, list[dict[str, Any]], list[tuple[models.Protocol, int]]]


def mostly(
    strategy: st.SearchStrategy[Any], rarely: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``strategy`` three times in four, ``rarely`` otherwise."""
    return st.integers(0, 3).flatmap(lambda pick: rarely if pick == 0 else strategy)


def some(strategy: st.SearchStrategy[Any], max_size: int) -> st.SearchStrategy[list[Any]]:
    """Mostly one or more items; now and then an empty list (which means "all")."""
    return mostly(st.lists(strategy, min_size=1, max_size=max_size), st.just([]))


def labels(
    vocabulary: dict[str, tuple[str, ...]], min_size: int = 0
) -> st.SearchStrategy[dict[str, str]]:
    pairs = [(key, value) for key, values in vocabulary.items() for value in values]
    chosen = st.lists(
        st.sampled_from(pairs), min_size=min_size, max_size=2, unique_by=lambda pair: pair[0]
    )
    return chosen.map(dict)


def requirements(vocabulary: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from((*vocabulary, "other"))
    values = sorted({value for options in vocabulary.values() for value in options})
    with_values = st.fixed_dictionaries(
        {
            "key": keys,
            "operator": st.sampled_from(("In", "NotIn")),
            "values": st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True),
        }
    )
    without_values = st.fixed_dictionaries(
        {"key": keys, "operator": st.sampled_from(("Exists", "DoesNotExist"))}
    )
    return with_values | without_values


def selectors(vocabulary: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    match_labels = labels(vocabulary, min_size=1)
    match_expressions = st.lists(requirements(vocabulary), min_size=1, max_size=2)
    return st.one_of(
        st.just({}),
        st.fixed_dictionaries({"matchLabels": match_labels}),
        st.fixed_dictionaries({"matchExpressions": match_expressions}),
        st.fixed_dictionaries({"matchLabels": match_labels, "matchExpressions": match_expressions}),
    )


def strictly_inside(outer: str) -> list[str]:
    network = ipaddress.ip_network(outer)
    return [
        text
        for text in CIDRS
        if (inner := ipaddress.ip_network(text)).version == network.version
        and inner.prefixlen > network.prefixlen
        and inner.network_address in network
    ]


@st.composite
def ip_blocks(draw: st.DrawFn) -> dict[str, Any]:
    cidr = draw(st.sampled_from(CIDRS))
    block: dict[str, Any] = {"cidr": cidr}
    inside = strictly_inside(cidr)
    if inside and draw(st.booleans()):
        block["except"] = draw(
            st.lists(st.sampled_from(inside), min_size=1, max_size=2, unique=True)
        )
    return block


def peers() -> st.SearchStrategy[dict[str, Any]]:
    pods = selectors(POD_LABELS)
    namespaces = selectors(NAMESPACE_LABELS)
    return st.one_of(
        st.fixed_dictionaries({"podSelector": pods}),
        st.fixed_dictionaries({"namespaceSelector": namespaces}),
        st.fixed_dictionaries({"podSelector": pods, "namespaceSelector": namespaces}),
        st.fixed_dictionaries({"ipBlock": ip_blocks()}),
    )


@st.composite
def ports(draw: st.DrawFn, served: list[tuple[str, models.Protocol]]) -> dict[str, Any]:
    """A port entry; named ports mostly name a port some pod serves (``served``)."""
    port: dict[str, Any] = {}
    if draw(st.integers(0, 2)):
        port["protocol"] = draw(st.sampled_from(PROTOCOLS))
    kind = draw(st.sampled_from(("number", "number", "name", "name", "none")))
    if kind == "name":
        if served and draw(st.integers(0, 3)):
            port["port"], port["protocol"] = draw(st.sampled_from(served))
        else:
            port["port"] = draw(st.sampled_from((*PORT_NAMES, "nope")))
    elif kind == "number":
        port["port"] = number = draw(st.sampled_from(PROBE_PORTS))
        if draw(st.booleans()):
            ends = [end for end in (81, 1000, 8080, 65535) if end >= number]
            port["endPort"] = draw(st.sampled_from(ends))
    return port


def rules(
    peers_field: str, served: list[tuple[str, models.Protocol]]
) -> st.SearchStrategy[dict[str, Any]]:
    entries = st.lists(ports(served), min_size=1, max_size=2)
    any_port = st.sampled_from((None, []))  # absent or empty: every port
    return st.fixed_dictionaries(
        {peers_field: some(peers(), 3), "ports": mostly(entries, any_port)}
    )


@st.composite
def policy_documents(draw: st.DrawFn, name: str, topology: models.Topology) -> dict[str, Any]:
    served = sorted(
        {(port.name or "", port.protocol) for pod in topology.pods.values() for port in pod.ports}
    )
    spec = draw(
        st.fixed_dictionaries(
            {"podSelector": selectors(POD_LABELS)},
            optional={
                "policyTypes": st.sampled_from(
                    ([], ["Ingress"], ["Egress"], ["Ingress", "Egress"])
                ),
                "ingress": some(rules("from", served), 3),
                "egress": some(rules("to", served), 3),
            },
        )
    )
    api_version = "networking.k8s.io/v1"
    if draw(st.booleans()):
        api_version = "bpfleet.io/v1alpha1"
        spec["mode"] = draw(st.sampled_from(("enforce", "audit")))
    namespace = draw(st.sampled_from(sorted(topology.namespaces)))
    return {
        "apiVersion": api_version,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@st.composite
def topologies(draw: st.DrawFn) -> models.Topology:
    namespaces = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3, unique=True))
    pool = ADDRESSES + ADDRESSES_V6 if draw(st.booleans()) else ADDRESSES
    count = draw(st.integers(min_value=2, max_value=5))
    addresses = draw(st.lists(st.sampled_from(pool), min_size=count, max_size=count, unique=True))
    container_ports = st.dictionaries(
        st.sampled_from(PORT_NAMES),
        st.tuples(st.sampled_from(PROBE_PORTS), st.sampled_from(PROTOCOLS)),
        min_size=1,
        max_size=3,
    )
    pods = {
        f"{draw(st.sampled_from(namespaces))}/p{index}": {
            "labels": draw(labels(POD_LABELS)),
            "ip": address,
            "ports": [
                {"name": name, "port": port, "protocol": protocol}
                for name, (port, protocol) in draw(container_ports).items()
            ],
        }
        for index, address in enumerate(addresses)
    }
    return models.Topology.model_validate(
        {"namespaces": {name: draw(labels(NAMESPACE_LABELS)) for name in namespaces}, "pods": pods}
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    topology = draw(topologies())
    count = draw(st.integers(min_value=1, max_value=4))
    documents = [draw(policy_documents(f"p{index}", topology)) for index in range(count)]
    # Every flow the pods serve, and a few more.
    served = sorted(
        {(port.protocol, port.port) for pod in topology.pods.values() for port in pod.ports}
    )
    others = st.tuples(st.sampled_from(PROTOCOLS), st.sampled_from(PROBE_PORTS))
    return topology, documents, served + draw(st.lists(others, max_size=2, unique=True))


def check_pair(
    policies: list[models.Policy],
    topology: models.Topology,
    compiled: dict[str, EndpointRules],
    client: str,
    server: str,
    flow: tuple[models.Protocol, int],
) -> None:
    """Each direction on its own, in both views, then the verdicts."""
    protocol, port = flow
    expected = simulating.explain(policies, topology, client, server, protocol, port)
    src = simulating.endpoint(topology, client).address
    dst = simulating.endpoint(topology, server).address
    where = (client, server, protocol, port)
    for view, egress, ingress in (
        ("enforce", expected.egress, expected.ingress),
        ("audit", expected.audit_egress, expected.audit_ingress),
    ):
        if client in compiled:
            rules = compiled[client].egress if view == "enforce" else compiled[client].audit_egress
            assert compiling.allows(rules, dst, protocol, port) == egress.allowed, (
                *where,
                view,
                "egress",
            )
        if server in compiled:
            rules = (
                compiled[server].ingress if view == "enforce" else compiled[server].audit_ingress
            )
            assert compiling.allows(rules, src, protocol, port) == ingress.allowed, (
                *where,
                view,
                "ingress",
            )
    assert compiling.verdict(compiled, src, dst, protocol, port) == expected.allowed, where
    audit = compiling.verdict(compiled, src, dst, protocol, port, view="audit")
    assert audit == expected.audit_allowed, where


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_compiled_rules_decide_as_the_simulator(scenario: Scenario) -> None:
    topology, documents, flows = scenario
    policies = [validating.validate(document).policy for document in documents]
    compiled = compiling.compile_policies(policies, topology)
    pods = topology.pod_order()
    for protocol, port in flows:
        for view in ("enforce", "audit"):
            simulated = simulating.matrix(policies, topology, protocol, port, view=view)
            address = {pod: topology.pods[pod].ip for pod in pods}
            from_rules = {
                client: {
                    server: compiling.verdict(
                        compiled, address[client], address[server], protocol, port, view=view
                    )
                    for server in pods
                }
                for client in pods
            }
            assert from_rules == simulated["allowed"], (protocol, port, view)
        for client in pods:
            for server in (*pods, *OUTSIDE):
                check_pair(policies, topology, compiled, client, server, (protocol, port))
                if server in OUTSIDE:
                    check_pair(policies, topology, compiled, server, client, (protocol, port))
