"""Flow-test files: parsed with lines and columns, judged by the simulator, failures
explained; a file's own endpoints make a topology when none is given."""

from __future__ import annotations

import pytest

from bpfleet_core.netpol import flowtests, models, simulating
from tests.core.netpol import shared

POLICY = shared.policy(
    "a-from-b",
    {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                "ports": [{"port": "serve-80-tcp"}],
            }
        ],
    },
)

TEXT = """\
# what x/a-from-b must do
flows:
  - x/b -> x/a TCP/80 expect allow
  - x/b -> x/a tcp/serve-80-tcp expect allow
  - x/c -> x/a TCP/80 expect deny
  - x/b -> x/a TCP/81 expect allow   # wrong on purpose
  - 203.0.113.9 -> x/b UDP/53 expect allow
  - x/a -> x/nope TCP/80 expect allow
  - x/b -> x/a TCP/http expect allow
"""


def test_flows_are_read_with_their_lines() -> None:
    parsed = flowtests.parse(TEXT, "a-from-b.flows.yaml")
    assert parsed.problems == ()
    assert parsed.topology is None
    first = parsed.tests[0]
    assert (first.line, first.column, first.client, first.server) == (3, 5, "x/b", "x/a")
    assert (first.protocol, first.port, first.expect) == ("TCP", 80, "allow")
    assert parsed.tests[1].port == "serve-80-tcp"
    assert parsed.tests[4].client == "203.0.113.9"
    assert [test.line for test in parsed.tests] == list(range(3, 10))


def test_flows_are_judged_by_the_simulator(topology: models.Topology) -> None:
    policies = shared.policies([POLICY])
    results = flowtests.run(flowtests.parse(TEXT).tests, policies, topology)
    assert [result.passed for result in results] == [True, True, True, False, True, False, False]
    wrong = results[3]
    assert wrong.allowed is False
    assert wrong.explanation is not None
    assert (
        wrong.explanation.to_dict()
        == simulating.explain(policies, topology, "x/b", "x/a", "TCP", 81).to_dict()
    )
    assert "FAIL" in str(wrong)
    assert "no ingress rule allows x/b on 81/TCP" in str(wrong)
    document = wrong.to_dict()
    assert (document["verdict"], document["expect"], document["line"]) == ("deny", "allow", 6)
    assert document["reason"][0].endswith("denied")
    assert results[1].port == 80  # the named port, resolved on the server
    assert results[5].error == "'x/nope' is neither a pod of the topology nor an IP address"
    assert results[6].error == "x/a declares no TCP port named 'http'"
    assert results[0].to_dict()["explanation"] is None  # passing rows carry no explanation


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("x/b -> x/a TCP/80", "not a flow"),
        ("x/b => x/a TCP/80 expect allow", "not a flow"),
        ("x/b -> x/a ICMP/80 expect allow", "protocol must be TCP, UDP or SCTP"),
        ("x/b -> x/a TCP/0 expect deny", "port must be between 1 and 65535"),
        ("x/b -> x/a TCP/99999 expect deny", "port must be between 1 and 65535"),
        ("x/b -> x/a TCP/Web--port expect deny", "neither a number nor a port name"),
        ("b -> x/a TCP/80 expect deny", "neither namespace/name nor an IP address"),
        ("x/b -> x/a TCP/80 expect maybe", "not a flow"),
    ],
)
def test_a_bad_row_is_a_problem_on_its_line(row: str, words: str) -> None:
    parsed = flowtests.parse(
        f"flows:\n  - x/a -> x/b TCP/80 expect allow\n  - {row}\n", "f.flows.yaml"
    )
    [problem] = parsed.problems
    assert (problem.line, problem.column) == (3, 5)
    assert words in problem.message
    assert str(problem).startswith("f.flows.yaml:3:5: ")
    assert len(parsed.tests) == 1


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("flows: [\n", 2, "invalid YAML"),
        ("", 1, "no flows"),
        ("- a -> b\n", 1, "a flow-test file is a mapping"),
        ("flows: x/a -> x/b TCP/80 expect allow\n", 1, "`flows` must be a list"),
        ("flows: []\ncases: []\n", 2, "unknown field 'cases'"),
        ("flows:\n  - {from: x/a}\n", 2, "a flow is one line"),
        ("flows: []\n---\nflows: []\n", 3, "holds one document"),
    ],
)
def test_a_bad_file_is_a_located_problem(text: str, line: int, words: str) -> None:
    parsed = flowtests.parse(text)
    assert parsed.problems, parsed
    assert parsed.problems[0].line == line
    assert words in parsed.problems[0].message


def test_too_many_flows_are_refused() -> None:
    rows = "".join(
        f"  - x/a -> x/b TCP/{1 + i % 60000} expect allow\n" for i in range(flowtests.MAX_FLOWS + 1)
    )
    parsed = flowtests.parse("flows:\n" + rows)
    assert parsed.tests == ()
    assert f"at most {flowtests.MAX_FLOWS} flows" in parsed.problems[0].message
    rows = "".join(f"  - x/a -> x/b TCP/{1 + i} expect allow\n" for i in range(flowtests.MAX_FLOWS))
    assert len(flowtests.parse("flows:\n" + rows).tests) == flowtests.MAX_FLOWS


def test_a_file_declares_its_own_endpoints() -> None:
    parsed = flowtests.parse(
        """\
flows:
  - shop/web -> shop/db TCP/pg expect allow
  - shop/batch -> shop/db TCP/5432 expect deny
endpoints:
  shop/web: {labels: {app: web}}
  shop/batch: {labels: {app: batch}}
  shop/db: {labels: {app: db}, ip: 10.0.0.2, ports: [{name: pg, port: 5432}]}
namespaces:
  shop: {team: payments}
"""
    )
    assert parsed.problems == ()
    topology = parsed.topology
    assert topology is not None
    assert topology.namespaces["shop"] == {
        "kubernetes.io/metadata.name": "shop",
        "team": "payments",
    }
    assert str(topology.pods["shop/db"].ip) == "10.0.0.2"
    assert str(topology.pods["shop/web"].ip).startswith("198.18.")
    policies = shared.policies(
        [
            shared.policy(
                "db",
                {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
                },
                namespace="shop",
            )
        ]
    )
    assert all(result.passed for result in flowtests.run(parsed.tests, policies, topology))


def test_bad_endpoints_are_located() -> None:
    parsed = flowtests.parse(
        "flows: []\nendpoints:\n  shop/web: {labels: {app: web}, ip: not-an-ip}\n  db: {}\n"
    )
    assert parsed.topology is None
    assert {problem.line for problem in parsed.problems} >= {3}
    assert any("ip" in problem.message for problem in parsed.problems)


def test_flow_test_files_are_named_after_their_policy() -> None:
    assert flowtests.is_flow_test_file("policies/db.flows.yaml")
    assert flowtests.is_flow_test_file("db.flows.yml")
    assert not flowtests.is_flow_test_file("db.yaml")
