"""The simulator's semantics, one rule of Kubernetes NetworkPolicy at a time, and explain()."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bpfleet_core.netpol import models, simulating
from tests.core.netpol.shared import ORDER, column, policies, policy

POD_A = {"matchLabels": {"pod": "a"}}


def rows(
    documents: list[dict[str, Any]],
    topology: models.Topology,
    protocol: str = "TCP",
    port: int = 80,
    **options: Any,
) -> dict[str, str]:
    return simulating.rows(
        simulating.matrix(policies(documents), topology, protocol, port, **options), ORDER
    )


def test_matrix_has_the_contract_shape(topology: models.Topology) -> None:
    result = simulating.matrix([], topology, "TCP", 80)
    assert list(result) == ["protocol", "port", "allowed"]
    assert (result["protocol"], result["port"]) == ("TCP", 80)
    assert list(result["allowed"]) == list(ORDER)
    assert all(list(row) == list(ORDER) for row in result["allowed"].values())
    assert all(all(row.values()) for row in result["allowed"].values())
    assert json.dumps(result).startswith(
        '{"protocol": "TCP", "port": 80, "allowed": {"x/a": {"x/a": true, '
    )


def test_self_is_always_allowed(topology: models.Topology) -> None:
    deny_all = policy("deny", {"policyTypes": ["Ingress", "Egress"]})
    result = simulating.matrix(policies([deny_all]), topology, "UDP", 81)
    assert result["allowed"]["x/a"]["x/a"] is True
    assert result["allowed"]["x/a"]["x/b"] is False


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_empty_ingress_list_isolates_and_allows_nothing(
    topology: models.Topology, protocol: str
) -> None:
    got = rows([policy("deny", {"podSelector": POD_A, "ingress": []})], topology, protocol)
    assert column(got, "x/a") == "-XXXXXXXX"
    assert column(got, "x/b") == ".-......."


@pytest.mark.parametrize(
    "rule",
    [{}, {"from": []}, {"ports": []}, {"from": [], "ports": []}],
    ids=["{}", "from-empty", "ports-empty", "both-empty"],
)
def test_an_empty_rule_allows_everything(topology: models.Topology, rule: dict[str, Any]) -> None:
    documents = [
        policy("deny", {"ingress": []}),
        policy("allow", {"podSelector": POD_A, "ingress": [rule]}),
    ]
    got = rows(documents, topology, "SCTP", 81)
    assert column(got, "x/a") == "-........"
    assert column(got, "x/b") == "X-XXXXXXX"


def test_egress_is_isolated_only_when_policy_types_say_so(topology: models.Topology) -> None:
    # No policyTypes and an empty egress list: the API server defaults to Ingress only.
    got = rows([policy("p", {"podSelector": POD_A, "ingress": [{}], "egress": []})], topology)
    assert got["x/a"] == "-........"
    got = rows(
        [policy("p", {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": []})], topology
    )
    assert got["x/a"] == "-XXXXXXXX"
    # An egress rule makes the default Ingress + Egress: ingress is then isolated too.
    got = rows(
        [policy("p", {"podSelector": POD_A, "egress": [{"ports": [{"port": 81}]}]})],
        topology,
        port=81,
    )
    assert got["x/a"] == "-........"
    assert column(got, "x/a") == "-XXXXXXXX"


def test_allows_of_all_selecting_policies_are_unioned(topology: models.Topology) -> None:
    documents = [
        policy(
            "from-b",
            {
                "podSelector": POD_A,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
            },
        ),
        policy(
            "from-c",
            {
                "podSelector": POD_A,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}],
            },
        ),
    ]
    assert column(rows(documents, topology), "x/a") == "-..XXXXXX"


def test_client_egress_and_server_ingress_must_both_allow(topology: models.Topology) -> None:
    egress_to_y = policy(
        "out",
        {
            "podSelector": POD_A,
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    ingress_from_z = policy(
        "in",
        {
            "podSelector": POD_A,
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
        },
        namespace="y",
    )
    got = rows([egress_to_y, ingress_from_z], topology)
    assert got["x/a"] == "-XXX..XXX"  # y/a's ingress refuses what x/a's egress allows
    assert column(got, "y/a") == "XXX-XX..."


def test_pod_selector_alone_means_the_policys_namespace(topology: models.Topology) -> None:
    got = rows(
        [
            policy(
                "p",
                {
                    "podSelector": POD_A,
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                },
            )
        ],
        topology,
    )
    assert column(got, "x/a") == "-.XXXXXXX"


def test_namespace_selector_alone_means_every_pod_there(topology: models.Topology) -> None:
    got = rows(
        [
            policy(
                "p",
                {
                    "podSelector": POD_A,
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
                },
            )
        ],
        topology,
    )
    assert column(got, "x/a") == "-XXXXX..."


def test_selectors_in_one_peer_are_anded_and_peers_ored(topology: models.Topology) -> None:
    anded = {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"ns": "z"}},
                "podSelector": {"matchLabels": {"pod": "b"}},
            }
        ]
    }
    ored = {
        "from": [
            {"namespaceSelector": {"matchLabels": {"ns": "z"}}},
            {"podSelector": {"matchLabels": {"pod": "b"}}},
        ]
    }
    assert (
        column(rows([policy("p", {"podSelector": POD_A, "ingress": [anded]})], topology), "x/a")
        == "-XXXXXX.X"
    )
    assert (
        column(rows([policy("p", {"podSelector": POD_A, "ingress": [ored]})], topology), "x/a")
        == "-.XXXX..."
    )


def test_empty_selectors(topology: models.Topology) -> None:
    every_pod = {"from": [{"namespaceSelector": {}}]}
    own_namespace = {"from": [{"podSelector": {}}]}
    assert (
        column(rows([policy("p", {"podSelector": POD_A, "ingress": [every_pod]})], topology), "x/a")
        == "-........"
    )
    assert (
        column(
            rows([policy("p", {"podSelector": POD_A, "ingress": [own_namespace]})], topology), "x/a"
        )
        == "-..XXXXXX"
    )


def test_match_expressions(topology: models.Topology) -> None:
    def allowed_from(*expressions: dict[str, Any]) -> str:
        peer = {"namespaceSelector": {}, "podSelector": {"matchExpressions": list(expressions)}}
        return column(
            rows([policy("p", {"podSelector": POD_A, "ingress": [{"from": [peer]}]})], topology),
            "x/a",
        )

    assert allowed_from({"key": "pod", "operator": "In", "values": ["b"]}) == "-.XX.XX.X"
    assert allowed_from({"key": "pod", "operator": "NotIn", "values": ["b"]}) == "-X..X..X."
    assert allowed_from({"key": "pod", "operator": "Exists"}) == "-........"
    assert allowed_from({"key": "pod", "operator": "DoesNotExist"}) == "-XXXXXXXX"
    assert allowed_from({"key": "absent", "operator": "NotIn", "values": ["x"]}) == "-........"


def test_ip_block_matches_pod_addresses_minus_excepts(topology: models.Topology) -> None:
    block = {"ipBlock": {"cidr": "10.0.2.0/24", "except": ["10.0.2.2/32"]}}
    got = rows([policy("p", {"podSelector": POD_A, "ingress": [{"from": [block]}]})], topology)
    assert column(got, "x/a") == "-XX.X.XXX"
    got = rows(
        [
            policy(
                "p", {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": [{"to": [block]}]}
            )
        ],
        topology,
    )
    assert got["x/a"] == "-XX.X.XXX"


def test_port_ranges_and_protocol_only_ports(topology: models.Topology) -> None:
    ranged = policy(
        "p",
        {
            "podSelector": POD_A,
            "ingress": [{"ports": [{"port": 81, "endPort": 90, "protocol": "UDP"}]}],
        },
    )
    assert column(rows([ranged], topology, "UDP", 85), "x/a") == "-........"
    assert column(rows([ranged], topology, "UDP", 80), "x/a") == "-XXXXXXXX"
    assert column(rows([ranged], topology, "TCP", 85), "x/a") == "-XXXXXXXX"
    sctp = policy("p", {"podSelector": POD_A, "ingress": [{"ports": [{"protocol": "SCTP"}]}]})
    assert column(rows([sctp], topology, "SCTP", 65535), "x/a") == "-........"
    assert column(rows([sctp], topology, "TCP", 80), "x/a") == "-XXXXXXXX"


def named_port_topology() -> models.Topology:
    """y/b serves "web" on 8080, y/c on 9090; x/a has no "web" port."""
    web = {"ports": [{"name": "web", "port": 8080}]}
    return models.Topology.model_validate(
        {
            "namespaces": {"x": {}, "y": {}},
            "pods": {
                "x/a": {"labels": {"pod": "a"}, "ip": "10.0.1.1"},
                "y/b": {"labels": {"pod": "b"}, "ip": "10.0.2.2", **web},
                "y/c": {
                    "labels": {"pod": "c"},
                    "ip": "10.0.2.3",
                    "ports": [{"name": "web", "port": 9090}],
                },
            },
        }
    )


def test_named_ports_resolve_against_the_destination_pod() -> None:
    world = named_port_topology()
    egress = policy(
        "out",
        {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]},
    )
    allowed = simulating.matrix(policies([egress]), world, "TCP", 8080)["allowed"]
    assert allowed["x/a"] == {"x/a": True, "y/b": True, "y/c": False}
    allowed = simulating.matrix(policies([egress]), world, "TCP", 9090)["allowed"]
    assert allowed["x/a"] == {"x/a": True, "y/b": False, "y/c": True}
    # Addresses outside the topology have no named ports.
    assert not simulating.allowed(policies([egress]), world, "x/a", "192.0.2.1", "TCP", 8080)
    ingress = policy(
        "in", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}, namespace="y"
    )
    allowed = simulating.matrix(policies([ingress]), world, "TCP", 9090)["allowed"]
    assert [allowed[client]["y/c"] for client in ("x/a", "y/b")] == [True, True]
    assert [allowed[client]["y/b"] for client in ("x/a", "y/c")] == [False, False]


def test_audit_policies_do_not_restrict_but_are_reported(topology: models.Topology) -> None:
    audit = policy("deny-all", {"podSelector": POD_A, "policyTypes": ["Ingress"]}, mode="audit")
    assert column(rows([audit], topology), "x/a") == "-........"
    assert column(rows([audit], topology, view="audit"), "x/a") == "-XXXXXXXX"
    explanation = simulating.explain(policies([audit]), topology, "y/b", "x/a", "TCP", 80)
    assert explanation.allowed
    assert not explanation.audit_allowed
    assert explanation.audit_denied
    assert str(explanation) == (
        "y/b -> x/a 80/TCP: allowed (audit: would be denied)\n"
        "  egress:  y/b is not isolated for egress: no policy selects it\n"
        "  ingress: x/a is not isolated for ingress: no policy selects it\n"
        "  audit ingress: x/a is isolated for ingress by policy x/deny-all and no ingress rule allows y/b on 80/TCP"
    )


def test_node_selector_limits_the_pods_a_policy_applies_to() -> None:
    world = models.Topology.model_validate(
        {
            "namespaces": {"x": {}},
            "nodes": {"n1": {"zone": "a"}, "n2": {"zone": "b"}},
            "pods": {
                "x/a": {"ip": "10.0.0.1", "node": "n1"},
                "x/b": {"ip": "10.0.0.2", "node": "n2"},
                "x/c": {"ip": "10.0.0.3"},
            },
        }
    )
    deny = policy("deny", {"podSelector": {}}, nodeSelector={"matchLabels": {"zone": "a"}})
    allowed = simulating.matrix(policies([deny]), world, "TCP", 80)["allowed"]
    assert [allowed["x/c"][server] for server in ("x/a", "x/b")] == [False, True]
    assert allowed["x/a"]["x/c"] is True


def test_label_changes_make_a_new_topology(topology: models.Topology) -> None:
    changed = topology.with_labels({"x/b": {"pod2": "updated"}}, {"y": {"ns2": "updated"}})
    assert changed.pods["x/b"].labels == {"pod": "b", "pod2": "updated"}
    assert changed.namespaces["y"] == {
        "kubernetes.io/metadata.name": "y",
        "ns": "y",
        "ns2": "updated",
    }
    assert topology.pods["x/b"].labels == {"pod": "b"}
    with pytest.raises(KeyError):
        topology.with_labels({"q/a": {"a": "b"}})


def test_topology_checks() -> None:
    base = {"namespaces": {"x": {}}, "pods": {"x/a": {"ip": "10.0.0.1"}}}
    models.Topology.model_validate(base)
    for bad in (
        {**base, "pods": {"a": {"ip": "10.0.0.1"}}},
        {**base, "pods": {"q/a": {"ip": "10.0.0.1"}}},
        {**base, "pods": {"x/a": {"ip": "10.0.0.1"}, "x/b": {"ip": "10.0.0.1"}}},
        {**base, "order": ["x/a", "x/b"]},
        {
            **base,
            "pods": {
                "x/a": {
                    "ip": "10.0.0.1",
                    "ports": [{"name": "w", "port": 1}, {"name": "w", "port": 2}],
                }
            },
        },
        {**base, "pods": {"x/a": {"ip": "10.0.0.300"}}},
    ):
        with pytest.raises(ValueError, match=r"."):
            models.Topology.model_validate(bad)


# --- explain ----------------------------------------------------------------------------


def test_explain_names_the_isolating_policy_when_denied(topology: models.Topology) -> None:
    deny = policy("deny-all", {"podSelector": {}, "policyTypes": ["Egress"]})
    explanation = simulating.explain(policies([deny]), topology, "x/a", "y/b", "TCP", 80)
    assert not explanation.allowed
    assert (
        explanation.egress.reason
        == "x/a is isolated for egress by policy x/deny-all and no egress rule allows y/b:80/TCP"
    )
    assert explanation.egress.isolating == ("x/deny-all",)
    assert explanation.ingress.reason == "y/b is not isolated for ingress: no policy selects it"
    assert str(explanation).splitlines()[0] == "x/a -> y/b 80/TCP: denied"


def test_explain_names_the_rules_that_allow(topology: models.Topology) -> None:
    documents = [
        policy(
            "web",
            {
                "podSelector": POD_A,
                "ingress": [
                    {"ports": [{"port": 81}]},
                    {"from": [{"namespaceSelector": {}}], "ports": [{"port": 80}]},
                ],
            },
        ),
        policy("all", {"podSelector": {}, "ingress": [{}]}),
    ]
    explanation = simulating.explain(policies(documents), topology, "z/c", "x/a", "TCP", 80)
    assert explanation.allowed
    assert [str(ref) for ref in explanation.ingress.allowed_by] == [
        "x/web ingress rule 1",
        "x/all ingress rule 0",
    ]
    assert explanation.ingress.isolating == ("x/web", "x/all")
    assert (
        explanation.ingress.reason
        == "z/c on 80/TCP is allowed by x/web ingress rule 1, x/all ingress rule 0"
    )
    as_json = explanation.to_dict()
    assert as_json["ingress"]["allowedBy"] == ["x/web ingress rule 1", "x/all ingress rule 0"]
    assert as_json["allowed"] is True


def test_explain_with_several_isolating_policies(topology: models.Topology) -> None:
    documents = [
        policy("one", {"podSelector": POD_A}),
        policy("two", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
    ]
    explanation = simulating.explain(policies(documents), topology, "x/b", "x/a", "UDP", 80)
    assert (
        explanation.ingress.reason
        == "x/a is isolated for ingress by policies x/one, x/two and no ingress rule allows x/b on 80/UDP"
    )


def test_explain_outside_addresses_and_loopback(topology: models.Topology) -> None:
    egress = policy(
        "out",
        {
            "podSelector": POD_A,
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}],
        },
    )
    outside = simulating.explain(policies([egress]), topology, "x/a", "192.0.2.7", "TCP", 443)
    assert outside.allowed
    assert outside.ingress.policed is False
    assert (
        outside.ingress.reason
        == "192.0.2.7 is not a pod of the topology: its ingress is not policed"
    )
    inside = simulating.explain(policies([egress]), topology, "x/a", "10.0.2.2", "TCP", 443)
    assert inside.server == "y/b"  # a pod's address names the pod
    assert not inside.allowed
    loop = simulating.explain(policies([egress]), topology, "x/a", "x/a", "TCP", 80)
    assert loop.allowed
    assert str(loop) == "x/a -> x/a 80/TCP: allowed (a pod's traffic to itself is not policed)"


@pytest.mark.parametrize(
    ("client", "protocol", "port", "message"),
    [
        ("q/a", "TCP", 80, "'q/a' is neither a pod of the topology nor an IP address"),
        ("x/a", "ICMP", 80, "protocol must be one of TCP, UDP, SCTP"),
        ("x/a", "TCP", 0, "port must be between 1 and 65535"),
    ],
)
def test_explain_refuses_unknown_endpoints_and_bad_flows(
    topology: models.Topology, client: str, protocol: str, port: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        simulating.explain([], topology, client, "x/b", protocol, port)
