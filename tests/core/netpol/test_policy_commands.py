"""``bpfleet policy`` (matrix, explain, validate), run through a root app as ``bpfleet``
mounts it: the JSON contract, file handling, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest
import typer
import yaml
from typer.testing import CliRunner, Result

from bpfleet_cli import policy_commands
from bpfleet_core.netpol import models
from tests.core.netpol import shared

root = typer.Typer(pretty_exceptions_enable=False)
root.add_typer(policy_commands.app, name="policy")

DENY_ALL_X = shared.policy("deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_A = shared.policy(
    "allow-all-to-a",
    {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {}}]}],
    },
)


def bpfleet(*args: str | Path) -> Result:
    return CliRunner().invoke(root, ["policy", *map(str, args)])


def refused(result: Result) -> str:
    """A bad-input failure: exit 1, no traceback; returns stderr."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return result.stderr


@pytest.fixture
def topology_file(tmp_path: Path, topology: models.Topology) -> Path:
    path = tmp_path / "topology.json"
    path.write_text(topology.model_dump_json(exclude_none=True))
    return path


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump_all([DENY_ALL_X, ALLOW_A], sort_keys=False))
    return path


def test_matrix_prints_the_json_contract(topology_file: Path, policy_file: Path) -> None:
    result = bpfleet(
        "matrix", "--topology", topology_file, "--protocol", "TCP", "--port", "80", policy_file
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(
        '{"protocol": "TCP", "port": 80, "allowed": {"x/a": {"x/a": true, '
    )
    printed = json.loads(result.stdout)
    assert list(printed["allowed"]) == list(shared.ORDER)
    assert shared.column(_rows(printed), "x/a") == "-........"
    assert shared.column(_rows(printed), "x/b") == "X-XXXXXXX"
    assert result.stderr == ""


def _rows(printed: dict[str, object]) -> dict[str, str]:
    from bpfleet_core.netpol import simulating

    return simulating.rows(cast(simulating.Matrix, printed), shared.ORDER)


def test_matrix_takes_directories_and_lowercase_protocols(
    tmp_path: Path, topology_file: Path
) -> None:
    folder = tmp_path / "repo"
    (folder / "team").mkdir(parents=True)
    (folder / "team" / "deny.yml").write_text(yaml.safe_dump(DENY_ALL_X))
    (folder / "README.md").write_text("not a policy")
    result = bpfleet(
        "matrix", "--topology", topology_file, "--protocol", "sctp", "--port", "81", folder
    )
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["protocol"], printed["port"]) == ("SCTP", 81)
    assert shared.column(_rows(printed), "x/a") == "-XXXXXXXX"


def test_matrix_without_policies_allows_everything(topology_file: Path) -> None:
    result = bpfleet("matrix", "--topology", topology_file, "--port", "80")
    assert result.exit_code == 0, result.stderr
    assert all(all(row.values()) for row in json.loads(result.stdout)["allowed"].values())


def test_matrix_audit_view(tmp_path: Path, topology_file: Path) -> None:
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(shared.policy("deny-all", {"podSelector": {}}, mode="audit")))
    enforced = json.loads(
        bpfleet("matrix", "--topology", topology_file, "--port", "80", path).stdout
    )
    audited = json.loads(
        bpfleet("matrix", "--topology", topology_file, "--port", "80", "--audit", path).stdout
    )
    assert enforced["allowed"]["y/a"]["x/a"] is True
    assert audited["allowed"]["y/a"]["x/a"] is False


def test_matrix_on_the_published_data(tmp_path: Path) -> None:
    topology = shared.shared_topology()  # skips without the shared data
    (case,) = [case for case in shared.cases() if case["id"] == "C02-cyclonus-base-test-policy"]
    path = tmp_path / "c02.yaml"
    path.write_text(yaml.safe_dump_all(case["policies"]))
    for probe in case["probes"]:
        result = bpfleet(
            "matrix",
            "--topology",
            shared.TOPOLOGY,
            "--protocol",
            probe["protocol"],
            "--port",
            str(probe["port"]),
            path,
        )
        assert result.exit_code == 0, result.stderr
        assert _rows(json.loads(result.stdout)) == probe["expected_rows"]
    assert topology.pod_order() == shared.ORDER


def test_explain_says_which_policy_decided(topology_file: Path, policy_file: Path) -> None:
    denied = bpfleet(
        "explain",
        "--topology",
        topology_file,
        "--from",
        "y/a",
        "--to",
        "x/b",
        "--port",
        "80",
        policy_file,
    )
    assert denied.exit_code == 0, denied.stderr
    assert denied.stdout.splitlines() == [
        "y/a -> x/b 80/TCP: denied",
        "  egress:  y/a is not isolated for egress: no policy selects it",
        "  ingress: x/b is isolated for ingress by policy x/deny-all and no ingress rule allows y/a on 80/TCP",
    ]
    allowed = bpfleet(
        "explain",
        "--topology",
        topology_file,
        "--from",
        "y/a",
        "--to",
        "x/a",
        "--port",
        "80",
        "--json",
        policy_file,
    )
    assert allowed.exit_code == 0, allowed.stderr
    document = json.loads(allowed.stdout)
    assert document["allowed"] is True
    assert document["ingress"]["allowedBy"] == ["x/allow-all-to-a ingress rule 0"]
    assert document["ingress"]["isolating"] == ["x/deny-all", "x/allow-all-to-a"]


def test_validate_accepts_and_counts(policy_file: Path) -> None:
    result = bpfleet("validate", policy_file)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "2 policies valid\n"


def test_validate_reports_file_line_field_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: networking.k8s.io/v1\n"
        "kind: NetworkPolicy\n"
        "metadata: {name: web, namespace: x}\n"
        "spec:\n"
        "  ingress:\n"
        "    - from:\n"
        "        - ipBlock: {cidr: 10.0.0.0/8}\n"
        "          podSelector: {}\n"
        "      ports:\n"
        "        - port: 8080\n"
        "          endPort: 80\n"
        "  egress:\n"
        "    - to:\n"
        "        - ipBlock: {cidr: 10.1.2.3/16}\n"
    )
    result = bpfleet("validate", path)
    stderr = refused(result)
    assert stderr.splitlines() == [
        f"{path}:11: spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        f"{path}:7: spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
    ]


def test_validate_prints_normalisation_warnings(tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text(
        yaml.safe_dump(
            shared.policy("p", {"egress": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/16"}}]}]})
        )
    )
    result = bpfleet("validate", path)
    assert result.exit_code == 0
    assert result.stdout == "1 policy valid\n"
    assert result.stderr.startswith(f"warning: {path}:")
    assert (
        "spec.egress[0].to[0].ipBlock.cidr: '10.1.2.3/16' has host bits set: it means '10.1.0.0/16'"
        in result.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["matrix", "--topology", "{missing}", "--port", "80"],
            "bpfleet: cannot read topology {missing}: No such file or directory",
        ),
        (
            ["matrix", "--topology", "{topology}", "--port", "80", "--protocol", "ICMP"],
            "bpfleet: --protocol must be TCP, UDP or SCTP, not 'ICMP'",
        ),
        (
            ["matrix", "--topology", "{topology}", "--port", "0"],
            "bpfleet: --port must be between 1 and 65535, not 0",
        ),
        (
            ["matrix", "--topology", "{topology}", "--port", "80", "{missing}"],
            "bpfleet: no such file or directory: {missing}",
        ),
        (
            ["matrix", "--topology", "{garbage}", "--port", "80"],
            "bpfleet: topology {garbage} is not JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (
            ["matrix", "--topology", "{no_pods}", "--port", "80"],
            "bpfleet: topology {no_pods}: pods: Field required",
        ),
        (
            ["explain", "--topology", "{topology}", "--from", "q/a", "--to", "x/a", "--port", "80"],
            "bpfleet: 'q/a' is neither a pod of the topology nor an IP address",
        ),
        (["validate"], "bpfleet: no policy files given"),
        (["validate", "{empty}"], "bpfleet: no *.yaml or *.yml files in {empty}"),
        (
            ["validate", "{broken}"],
            "{broken}:2: invalid YAML: while parsing a flow node, expected the node content, but found '<stream end>'",
        ),
        (
            ["matrix", "--topology", "{topology}", "--port", "80", "{broken}"],
            "{broken}:2: invalid YAML",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, topology_file: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.json").write_text("no json here")
    (tmp_path / "no-pods.json").write_text('{"namespaces": {}}')
    (tmp_path / "broken.yaml").write_text("spec: [\n")
    places = {
        "missing": tmp_path / "missing.json",
        "topology": topology_file,
        "garbage": tmp_path / "garbage.json",
        "no_pods": tmp_path / "no-pods.json",
        "empty": tmp_path / "empty",
        "broken": tmp_path / "broken.yaml",
    }
    stderr = refused(bpfleet(*(arg.format(**places) for arg in args)))
    assert stderr.splitlines() == [message.format(**places)] or stderr.startswith(
        message.format(**places)
    )
    assert len(stderr.splitlines()) == 1


# --- lint ---------------------------------------------------------------------------------

SPLIT_PORTS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
  - ports: [{port: 80}]
"""


def test_lint_prints_each_finding_with_its_proof_and_the_rating(tmp_path: Path) -> None:
    path = tmp_path / "db.yaml"
    path.write_text(SPLIT_PORTS)
    (tmp_path / "db.flows.yaml").write_text("flows: []\n")  # beside it, never linted
    result = bpfleet("lint", tmp_path)
    assert result.exit_code == 0, result.output  # warnings only
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{path}:8:5: warning: split-ports: spec.ingress[1].ports: ")
    assert lines[1] == "    proof: 203.0.113.10 -> x/selected-1 TCP/80: allowed (made-up endpoints)"
    assert lines[2].startswith("    fix: Make them one rule")
    assert f"{path}: x/db: grade D" in lines
    assert "    egress: not restricted by this policy" in lines
    failing = bpfleet("lint", "--fail-on", "warning", path)
    assert failing.exit_code == 1
    assert failing.stdout == result.stdout


def test_lint_with_a_topology_judges_the_real_endpoints(
    tmp_path: Path, topology_file: Path
) -> None:
    path = tmp_path / "nothing.yaml"
    path.write_text(SPLIT_PORTS.replace("pod: a}}\n  ingress", "pod: zz}}\n  ingress"))
    result = bpfleet("lint", "--topology", topology_file, "--json", path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["files"][0]
    assert {lint["code"] for lint in report["lints"]} == {"selects-nothing", "split-ports"}
    assert report["ratings"][0]["ingress"]["pairsTotal"] == 0
    alone = json.loads(bpfleet("lint", "--json", path).stdout)["files"][0]
    assert {lint["code"] for lint in alone["lints"]} == {"split-ports"}


def test_lint_fails_on_invalid_policies_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SPLIT_PORTS.replace("port: 80", "port: 0"))
    result = bpfleet("lint", path)
    assert result.exit_code == 1
    assert (
        f"{path}:8:14: error: spec.ingress[1].ports[0].port: Invalid value: 0: "
        "must be between 1 and 65535, inclusive"
    ) in result.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [\n")
    assert "broken.yaml:2:1: error: invalid YAML" in bpfleet("lint", broken).stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "no policy files given"),
        (("nope.yaml",), "no such file or directory"),
        (("--fail-on", "never", "x.yaml"), "--fail-on must be error, warning or info"),
    ],
)
def test_lint_refuses_bad_input(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    (tmp_path / "x.yaml").write_text(SPLIT_PORTS)
    arguments = [arg if not arg.endswith(".yaml") else str(tmp_path / arg) for arg in args]
    assert words in refused(bpfleet("lint", *arguments))
