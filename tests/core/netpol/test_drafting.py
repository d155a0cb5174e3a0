"""A draft in the fleet: located validation, replacement of stored policies, the matrix
restricted to what the draft concerns, the diff, lints, ratings, flows, explain."""

from __future__ import annotations

import pytest
import yaml

from bpfleet_core.netpol import drafting, flowtests, models, simulating, validating
from tests.core.netpol import shared

DB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}]
"""


def test_validation_problems_carry_path_line_column_and_the_validators_words() -> None:
    draft = drafting.read(DB.replace("port: 80", "port: 0"))
    assert not draft.valid
    [problem] = draft.diagnostics
    assert problem.severity == "error"
    assert problem.path == "spec.ingress[0].ports[0].port"
    assert (problem.span.line, problem.span.column) == (8, 14)
    assert problem.to_dict()["text"] == (
        "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    )


def test_the_validator_refuses_what_the_draft_reports() -> None:
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.validate(yaml.safe_load(DB.replace("port: 80", "port: 0")))
    draft = drafting.read(DB.replace("port: 80", "port: 0"))
    assert [item.to_dict()["text"] for item in draft.diagnostics] == [
        str(problem) for problem in raised.value.problems
    ]


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        (DB[: DB.index("  - from")] + "  - from: [{podSel", 7, 19, "invalid YAML"),
        (DB.replace("spec:", "spec:\n  podSelector: {}"), 6, 3, "duplicate key"),
        (DB.replace("ingress", "ingres"), 6, 3, "unknown field"),
        (DB.replace("apiVersion: networking.k8s.io/v1\n", ""), 1, 1, "apiVersion: Required value"),
        ("", None, None, None),
    ],
)
def test_half_typed_text_is_problems_never_an_exception(
    text: str, line: int | None, column: int | None, words: str | None
) -> None:
    draft = drafting.read(text)
    if words is None:
        assert (draft.diagnostics, draft.documents) == ((), ())
        return
    problem = draft.diagnostics[0]
    assert (problem.span.line, problem.span.column) == (line, column), problem
    assert words in str(problem) or words in problem.to_dict()["text"]


def test_warnings_are_reported_and_leave_the_draft_valid() -> None:
    draft = drafting.read(
        DB.replace("[{podSelector: {matchLabels: {pod: b}}}]", "[{ipBlock: {cidr: 10.0.2.3/24}}]")
    )
    assert draft.valid
    [warning] = draft.diagnostics
    assert warning.severity == "warning"
    assert "has host bits set" in warning.message


def test_documents_and_duplicates_in_one_draft() -> None:
    draft = drafting.read(DB + "---\n" + DB)
    assert not draft.valid
    assert [item.policy is not None for item in draft.documents] == [True, False]
    assert "already defined in document 1" in draft.diagnostics[0].message
    assert draft.diagnostics[0].span.line == 12  # metadata of the second document
    many = "---\n".join(
        DB.replace("name: db", f"name: db{i}") for i in range(drafting.MAX_DOCUMENTS + 1)
    )
    draft = drafting.read(many)
    assert len(draft.documents) == drafting.MAX_DOCUMENTS
    assert f"at most {drafting.MAX_DOCUMENTS} documents" in draft.diagnostics[0].message


def stored_policies() -> list[models.Policy]:
    return shared.policies(
        [
            shared.policy(
                "db",
                {
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {}}]}],
                },
            ),
            shared.policy("z-deny", {"podSelector": {}, "policyTypes": ["Ingress"]}, namespace="z"),
        ]
    )


def test_the_draft_replaces_its_stored_version(topology: models.Topology) -> None:
    stored = stored_policies()
    result = drafting.simulate(drafting.read(DB), stored, topology)
    assert result.replaced == ("x/db",)
    # Before: x/a admits all of x; after: only x/b, on 80.
    assert result.diff is not None
    assert (result.diff.allowed, result.diff.denied) == (0, 1)
    assert [(c.client, c.server, c.change) for c in result.diff.cells] == [("x/c", "x/a", "denied")]
    after = [p for p in stored if p.key != "x/db"] + drafting.read(DB).policies
    for cell_client in topology.pods:
        for cell_server in topology.pods:
            expected = simulating.allowed(after, topology, cell_client, cell_server, "TCP", 80)
            matrix = result.matrix
            assert matrix is not None
            if cell_client in matrix.endpoints and cell_server in matrix.endpoints:
                row = matrix.after[matrix.endpoints.index(cell_client)]
                mark = row[matrix.endpoints.index(cell_server)]
                assert mark == ("-" if cell_client == cell_server else "." if expected else "X")
    assert result.selections[0].endpoints == ("x/a",)
    ports = {(item.protocol, item.port): item for item in result.ports}
    assert ports[("TCP", 443)].denied == 2  # x/b and x/c lose every other port of x/a


def test_the_matrix_shows_the_endpoints_the_draft_concerns_first(topology: models.Topology) -> None:
    result = drafting.simulate(drafting.read(DB), stored_policies(), topology)
    assert result.matrix is not None
    # Selected (x/a), the other side of changed cells (x/c), peers (x/a, x/b, x/c: podSelector {}).
    assert result.matrix.endpoints == ("x/a", "x/b", "x/c")
    assert result.matrix.relevant == 3
    assert not result.matrix.truncated
    limited = drafting.simulate(
        drafting.read(DB), stored_policies(), topology, drafting.Options(limit=2)
    )
    assert limited.matrix is not None
    assert limited.matrix.endpoints == ("x/a", "x/c")
    assert limited.matrix.truncated
    everyone = drafting.simulate(
        drafting.read(DB), stored_policies(), topology, drafting.Options(everyone=True, limit=500)
    )
    assert everyone.matrix is not None
    assert len(everyone.matrix.endpoints) == 9


def test_this_policy_only_drops_the_rest_of_the_fleet(topology: models.Topology) -> None:
    whole = drafting.simulate(drafting.read(DB), stored_policies(), topology)
    alone = drafting.simulate(
        drafting.read(DB), stored_policies(), topology, drafting.Options(this_policy_only=True)
    )
    assert whole.matrix is not None
    assert alone.matrix is not None
    # z-deny is gone from both sides: the same diff, but z is open in the matrix.
    assert alone.diff is not None
    assert whole.diff is not None
    assert alone.diff.summary == whole.diff.summary
    everyone = drafting.Options(this_policy_only=True, everyone=True)
    alone_all = drafting.simulate(drafting.read(DB), stored_policies(), topology, everyone)
    assert alone_all.matrix is not None
    z_a = alone_all.matrix.endpoints.index("z/a")
    assert alone_all.matrix.after[alone_all.matrix.endpoints.index("x/b")][z_a] == "."


def test_lints_ratings_and_flows_come_with_the_simulation(topology: models.Topology) -> None:
    text = DB.replace(
        "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n    ports",
        "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n  - ports",
    )
    flows = flowtests.parse(
        "flows:\n  - z/c -> x/a TCP/80 expect deny\n  - x/b -> x/a TCP/81 expect allow\n"
    )
    result = drafting.simulate(drafting.read(text), stored_policies(), topology, flows=flows)
    assert [item.code for item in result.lints] == ["split-ports"]
    assert result.lints[0].document == 0
    assert result.ratings[0].ingress.grade == "D"
    assert [item.passed for item in result.flows] == [False, True]
    document = result.to_dict()
    assert document["flows"]["failed"] == 1
    assert document["lints"][0]["line"] == 8
    assert document["ratings"][0]["ingress"]["widest"]["line"] == 8


def test_invalid_documents_take_no_part(topology: models.Topology) -> None:
    text = DB + "---\n" + DB.replace("name: db", "name: broken").replace("port: 80", "port: 0")
    result = drafting.simulate(drafting.read(text), stored_policies(), topology)
    assert [item.policy for item in result.selections] == ["x/db"]
    assert not result.draft.valid


def test_explain_locates_the_allowing_rule_in_the_draft_and_in_stored_text(
    topology: models.Topology,
) -> None:
    stored = stored_policies()
    stored.append(
        validating.validate(
            shared.policy(
                "b-in",
                {
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"ports": [{"port": 80}]}],
                },
            )
        ).policy
    )
    draft = drafting.read(DB)
    cell = drafting.explain(
        draft, stored, topology, client="x/b", server="x/a", protocol="TCP", port=80
    )
    assert cell.explanation.allowed
    [rule] = cell.allowing
    assert (rule.origin, rule.policy, rule.document) == ("draft", "x/db", 0)
    assert rule.span is not None
    assert rule.span.line == 7
    assert rule.to_dict()["ref"] == "x/db ingress rule 0"
    [isolating] = cell.isolating
    assert isolating.origin == "draft"
    cell = drafting.explain(
        draft, stored, topology, client="x/c", server="x/b", protocol="TCP", port=80
    )
    [rule] = cell.allowing
    assert (rule.origin, rule.policy) == ("stored", "x/b-in")
    rendered = drafting.render(stored[-1]).splitlines()
    assert rule.span is not None
    assert rendered[rule.span.line - 1].lstrip().startswith("- ports")
    with pytest.raises(ValueError, match="neither a pod"):
        drafting.explain(
            draft, stored, topology, client="x/q", server="x/a", protocol="TCP", port=80
        )


def test_a_proposals_message_says_what_the_simulator_found(topology: models.Topology) -> None:
    text = DB.replace(
        "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n    ports",
        "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n  - ports",
    )
    flows = flowtests.parse("flows:\n  - x/c -> x/a TCP/80 expect deny\n")
    result = drafting.simulate(drafting.read(text), stored_policies(), topology, flows=flows)
    message = drafting.proposal_message(result)
    title, _, body = message.partition("\n\n")
    assert result.diff is not None
    assert title == f"x/db: {result.diff.summary} on TCP/80"
    lines = body.splitlines()
    assert f"- TCP/80: {result.diff.summary}" in lines
    # Other ports: those changed with their counts, the rest named once.
    others = [p for p in result.ports if (p.protocol, p.port) != ("TCP", 80)]
    changed = [p for p in others if p.allowed or p.denied]
    assert changed  # this draft closes x/a's other ports
    for item in changed:
        assert f"- {item.protocol}/{item.port}: {item.summary}" in lines
    same = ", ".join(f"{p.protocol}/{p.port}" for p in others if not (p.allowed or p.denied))
    assert (f"- no change on {same}" in lines) == bool(same)
    assert "- split-ports (line 8): " + result.lints[0].message in lines
    passed = sum(item.passed for item in result.flows)
    assert f"Flow tests: {passed} passed, {1 - passed} failed." in lines

    # Each changed cell named, up to a bound, then how many more.
    replaced = drafting.simulate(drafting.read(DB), stored_policies(), topology)
    clean = drafting.proposal_message(replaced)
    assert clean.splitlines()[3:5] == [
        "- TCP/80: +0 allowed, -1 denied",
        "  - newly denied: x/c -> x/a",
    ]
    assert "Lints: none." in clean
    assert "Flow tests" not in clean  # none were given


def test_a_proposals_title_speaks_of_the_port_the_draft_changes(
    topology: models.Topology,
) -> None:
    """Judged on a port the draft leaves alone, the title names one it changes."""
    stored = shared.policies([shared.policy("db", yaml.safe_load(DB)["spec"])])
    moved_to_5432 = drafting.read(DB.replace("port: 80", "port: 5432"))
    result = drafting.simulate(moved_to_5432, stored, topology, drafting.Options(port=8080))
    assert result.diff is not None
    assert (result.diff.allowed, result.diff.denied) == (0, 0)
    moved = [item for item in result.ports if item.allowed or item.denied]
    assert {(item.protocol, item.port) for item in moved} == {("TCP", 80), ("TCP", 5432)}
    lines = drafting.proposal_message(result).splitlines()
    first = moved[0]
    assert lines[0] == f"x/db: {first.summary} on {first.protocol}/{first.port}"
    assert lines[3] == f"- {first.protocol}/{first.port}: {first.summary}"
    assert not lines[4].startswith("  - ")  # its cells were not listed: no "and N more"
    # before, judged on TCP/8080 alone, the title said nothing changed
    assert "+0 allowed, -0 denied" not in lines[0]


def test_a_proposals_message_names_at_most_so_many_cells(topology: models.Topology) -> None:
    deny_x = DB.replace("name: db", "name: deny-all").split("spec:")[0] + (
        "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n"
    )
    result = drafting.simulate(drafting.read(deny_x), [], topology)
    assert result.diff is not None
    assert result.diff.denied > drafting.MESSAGE_CELLS  # every client of x's three pods
    lines = drafting.proposal_message(result).splitlines()
    named = [line for line in lines if line.startswith("  - newly denied: ")]
    assert len(named) == drafting.MESSAGE_CELLS
    assert f"  - and {result.diff.denied - drafting.MESSAGE_CELLS} more" in lines
