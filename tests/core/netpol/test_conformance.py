"""Every published conformance case, in the simulator and through the compiled rules.

Cases come from ``../shared/netpol/cases.json`` (skipped, saying why, when absent), plus
UDP and SCTP cases of our own in the same format. ``label_changes`` are applied to the
topology before their probe and stay applied for the probes after it: the topology of
one case is changed in place, as the upstream e2e suite changes the cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from bpfleet_core.netpol import compiling, models, simulating
from tests.core.netpol import shared

ALL_ALLOWED = {
    client: "".join("-" if client == server else "." for server in shared.ORDER)
    for client in shared.ORDER
}


def expected(
    columns: dict[str, str] | None = None, rows: dict[str, str] | None = None
) -> dict[str, str]:
    """All allowed, but for the given server columns and client rows (``-`` kept)."""
    table = {client: list(row) for client, row in ALL_ALLOWED.items()}
    for server, marks in (columns or {}).items():
        for client, mark in zip(shared.ORDER, marks, strict=True):
            table[client][shared.ORDER.index(server)] = mark
    for client, marks in (rows or {}).items():
        table[client] = list(marks)
    for client in shared.ORDER:
        table[client][shared.ORDER.index(client)] = "-"
    return {client: "".join(marks) for client, marks in table.items()}


def probe(protocol: str, port: int, rows: dict[str, str], **changes: Any) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "port": port,
        "label_changes": changes or None,
        "expected_rows": rows,
    }


FROM_Y = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}
OWN_CASES: list[dict[str, Any]] = [
    {
        "id": "B01-udp-81-only",
        "policies": [
            shared.policy(
                "udp-81",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}],
                },
            )
        ],
        "probes": [
            probe("UDP", 81, ALL_ALLOWED),
            probe("UDP", 80, expected(columns={"x/a": "XXXXXXXXX"})),
            probe("SCTP", 81, expected(columns={"x/a": "XXXXXXXXX"})),
        ],
    },
    {
        "id": "B02-sctp-80-from-ns-y",
        "policies": [
            shared.policy(
                "sctp-from-y",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [FROM_Y], "ports": [{"port": 80, "protocol": "SCTP"}]}],
                },
            )
        ],
        "probes": [
            probe("SCTP", 80, expected(columns={"x/a": "XXX...XXX"})),
            probe("SCTP", 81, expected(columns={"x/a": "XXXXXXXXX"})),
            probe("TCP", 80, expected(columns={"x/a": "XXXXXXXXX"})),
        ],
    },
    {
        "id": "B03-named-udp-port",
        "policies": [
            shared.policy(
                "named-udp",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}],
                },
            )
        ],
        "probes": [
            probe("UDP", 81, ALL_ALLOWED),
            probe("UDP", 80, expected(columns={"x/a": "XXXXXXXXX"})),
            probe("TCP", 81, expected(columns={"x/a": "XXXXXXXXX"})),
        ],
    },
    {
        # A UDP port's name under protocol TCP names no port: nothing is allowed.
        "id": "B04-named-port-protocol-mismatch",
        "policies": [
            shared.policy(
                "mismatch",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "TCP"}]}],
                },
            )
        ],
        "probes": [
            probe("TCP", 81, expected(columns={"x/a": "XXXXXXXXX"})),
            probe("UDP", 81, expected(columns={"x/a": "XXXXXXXXX"})),
        ],
    },
    {
        "id": "B05-egress-sctp-81-to-ns-y",
        "policies": [
            shared.policy(
                "egress-sctp",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [FROM_Y], "ports": [{"protocol": "SCTP", "port": 81}]}],
                },
            )
        ],
        "probes": [
            probe("SCTP", 81, expected(rows={"x/a": "-XX...XXX"})),
            probe("SCTP", 80, expected(rows={"x/a": "-XXXXXXXX"})),
            probe("UDP", 81, expected(rows={"x/a": "-XXXXXXXX"})),
        ],
    },
    {
        "id": "B06-endport-range-from-pod-b",
        "policies": [
            shared.policy(
                "range",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                            "ports": [{"port": 80, "endPort": 81}],
                        }
                    ],
                },
            )
        ],
        "probes": [
            probe("TCP", 81, expected(columns={"x/a": "X.XXXXXXX"})),
            probe("TCP", 80, expected(columns={"x/a": "X.XXXXXXX"})),
            probe("UDP", 80, expected(columns={"x/a": "XXXXXXXXX"})),
        ],
    },
    {
        "id": "B07-egress-named-port-to-udp",
        "policies": [
            shared.policy(
                "egress-named",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}],
                },
                namespace="z",
            )
        ],
        "probes": [
            probe("UDP", 80, ALL_ALLOWED),
            probe("UDP", 81, expected(rows={"z/a": "XXXXXX-XX"})),
            probe("TCP", 80, expected(rows={"z/a": "XXXXXX-XX"})),
        ],
    },
    {
        "id": "B09-ip-blocks-with-excepts-over-pods",
        "policies": [
            shared.policy(
                "in-except-y",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [
                        {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}}]}
                    ],
                },
            ),
            shared.policy(
                "out-except",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [
                                {
                                    "ipBlock": {
                                        "cidr": "10.0.0.0/16",
                                        "except": ["10.0.1.0/24", "10.0.3.3/32"],
                                    }
                                }
                            ]
                        }
                    ],
                },
                namespace="z",
            ),
        ],
        "probes": [
            probe("TCP", 80, expected(columns={"x/a": "-..XXX..."}, rows={"z/a": "XXX...-.X"})),
            probe("SCTP", 81, expected(columns={"x/a": "-..XXX..."}, rows={"z/a": "XXX...-.X"})),
        ],
    },
    {
        "id": "B08-label-changes-accumulate",
        "policies": [
            shared.policy(
                "needs-both-labels",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"ns2": "updated"}},
                                    "podSelector": {"matchLabels": {"pod2": "updated"}},
                                }
                            ]
                        }
                    ],
                },
            )
        ],
        "probes": [
            probe("UDP", 80, expected(columns={"x/a": "XXXXXXXXX"})),
            probe(
                "UDP",
                80,
                expected(columns={"x/a": "XXXXXXXXX"}),
                nslabels={"y": {"ns2": "updated"}},
            ),
            probe(
                "UDP",
                80,
                expected(columns={"x/a": "XXXX.XXXX"}),
                podlabels={"y/b": {"pod2": "updated"}},
            ),
        ],
    },
]


def _probes(
    case: dict[str, Any], topology: models.Topology
) -> list[tuple[dict[str, Any], models.Topology]]:
    probes = []
    for item in case["probes"]:
        changes = item.get("label_changes") or {}
        topology = topology.with_labels(changes.get("podlabels"), changes.get("nslabels"))
        probes.append((item, topology))
    return probes


def _check(case: dict[str, Any], topology: models.Topology) -> None:
    policies = shared.policies(case["policies"])
    for number, (item, world) in enumerate(_probes(case, topology)):
        label = f"{case['id']} probe {number} ({item['port']}/{item['protocol']})"
        assert world.pod_order() == shared.ORDER
        simulated = simulating.rows(
            simulating.matrix(policies, world, item["protocol"], item["port"]), shared.ORDER
        )
        assert simulated == item["expected_rows"], label
        rules = compiling.compile_policies(policies, world)
        compiled = {
            client: "".join(
                "-"
                if client == server
                else "."
                if compiling.verdict(
                    rules,
                    world.pods[client].ip,
                    world.pods[server].ip,
                    item["protocol"],
                    item["port"],
                )
                else "X"
                for server in shared.ORDER
            )
            for client in shared.ORDER
        }
        assert compiled == item["expected_rows"], f"{label}, compiled"


PUBLISHED = shared.cases()


@pytest.mark.skipif(not PUBLISHED, reason=shared.ABSENT)
@pytest.mark.parametrize("case", PUBLISHED, ids=[case["id"] for case in PUBLISHED])
def test_published_case(case: dict[str, Any]) -> None:
    _check(case, shared.shared_topology())


@pytest.mark.parametrize("case", OWN_CASES, ids=[case["id"] for case in OWN_CASES])
def test_own_case(case: dict[str, Any], topology: models.Topology) -> None:
    _check(case, topology)


def test_the_standard_topology_is_the_published_one(topology: models.Topology) -> None:
    published = shared.shared_topology()
    assert published.namespaces == topology.namespaces
    assert published.pods == topology.pods
    assert published.pod_order() == topology.pod_order() == shared.ORDER


def test_published_cases_cover_every_probe() -> None:
    if not PUBLISHED:
        pytest.skip(shared.ABSENT)
    probes = sum(len(case["probes"]) for case in PUBLISHED)
    assert probes >= len(PUBLISHED) >= 13
