"""Validation rejects what the Kubernetes API server rejects, saying where and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bpfleet_core.netpol import models, validating
from tests.core.netpol.shared import policy


def ingress_port(**port: Any) -> dict[str, Any]:
    return policy("p", {"ingress": [{"ports": [{"port": 80}, port]}]})


def ingress_peer(peer: dict[str, Any]) -> dict[str, Any]:
    return policy("p", {"ingress": [{"from": [peer]}]})


def pod_selector(selector: dict[str, Any]) -> dict[str, Any]:
    return policy("p", {"podSelector": selector})


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.validate(document)
    return [str(problem) for problem in raised.value.problems]


PORT = "spec.ingress[0].ports[1]"
PEER = "spec.ingress[0].from[0]"
REJECTED = [
    (
        ingress_port(protocol="ICMP"),
        f'{PORT}.protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"',
    ),
    (ingress_port(protocol="tcp"), f'{PORT}.protocol: Unsupported value: "tcp"'),
    (
        ingress_port(port=0),
        f"{PORT}.port: Invalid value: 0: must be between 1 and 65535, inclusive",
    ),
    (
        ingress_port(port=65536),
        f"{PORT}.port: Invalid value: 65536: must be between 1 and 65535, inclusive",
    ),
    (
        ingress_port(port="a-very-long-port-name"),
        f'{PORT}.port: Invalid value: "a-very-long-port-name": must be no more than 15 characters',
    ),
    (
        ingress_port(port="HTTP"),
        f'{PORT}.port: Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
    ),
    (
        ingress_port(port="web_port"),
        f'{PORT}.port: Invalid value: "web_port": must contain only alpha-numeric',
    ),
    (
        ingress_port(port="8080"),
        f'{PORT}.port: Invalid value: "8080": must contain at least one letter (a-z)',
    ),
    (
        ingress_port(port="-web"),
        f'{PORT}.port: Invalid value: "-web": must not begin or end with a hyphen',
    ),
    (
        ingress_port(port="web-"),
        f'{PORT}.port: Invalid value: "web-": must not begin or end with a hyphen',
    ),
    (
        ingress_port(port="my--web"),
        f'{PORT}.port: Invalid value: "my--web": must not contain consecutive hyphens',
    ),
    (
        ingress_port(port=True),
        f"{PORT}.port: Invalid value: true: must be a port number or a port name",
    ),
    (
        ingress_port(port=8080, endPort=80),
        f"{PORT}.endPort: Invalid value: 80: must be greater than or equal to `port`",
    ),
    (
        ingress_port(port=80, endPort=65536),
        f"{PORT}.endPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
    ),
    (
        ingress_port(endPort=90),
        f"{PORT}.endPort: Invalid value: 90: may not be specified when `port` is not specified",
    ),
    (
        ingress_port(port="http", endPort=90),
        f"{PORT}.endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
    ),
    (ingress_peer({}), f"{PEER}: Required value: must specify a peer"),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        f"{PEER}: Forbidden: may not specify both ipBlock and another peer",
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}),
        f"{PEER}: Forbidden: may not specify both ipBlock and another peer",
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.1"}}),
        f'{PEER}.ipBlock.cidr: Invalid value: "10.0.0.1": must be a valid CIDR value',
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        f'{PEER}.ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR value',
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "example.com/8"}}),
        f'{PEER}.ipBlock.cidr: Invalid value: "example.com/8": must be a valid CIDR value',
    ),
    (ingress_peer({"ipBlock": {"cidr": ""}}), f"{PEER}.ipBlock.cidr: Required value"),
    (ingress_peer({"ipBlock": {}}), f"{PEER}.ipBlock.cidr: Required value"),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}),
        f'{PEER}.ipBlock.except[0]: Invalid value: "10.0.0.0/16": must be a strict subset of `cidr`',
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        f'{PEER}.ipBlock.except[0]: Invalid value: "10.1.0.0/24": must be a strict subset of `cidr`',
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}),
        f'{PEER}.ipBlock.except[0]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}}),
        f'{PEER}.ipBlock.except[0]: Invalid value: "fd00::/64": must be a strict subset of `cidr` (an IPv6 block cannot be inside an IPv4 one)',
    ),
    (
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["nonsense"]}}),
        f'{PEER}.ipBlock.except[0]: Invalid value: "nonsense": must be a valid CIDR value',
    ),
    (
        policy("p", {"policyTypes": ["Ingress", "Outbound"]}),
        'spec.policyTypes[1]: Unsupported value: "Outbound": supported values: "Ingress", "Egress"',
    ),
    (
        policy("p", {"policyTypes": ["Ingress", "Egress", "Ingress"]}),
        'spec.policyTypes: Invalid value: ["Ingress", "Egress", "Ingress"]: may not specify more than two policyTypes',
    ),
    (
        pod_selector({"matchLabels": {"bad key": "a"}}),
        'spec.podSelector.matchLabels: Invalid value: "bad key": name part must consist of alphanumeric characters',
    ),
    (
        pod_selector({"matchLabels": {"a/b/c": "a"}}),
        'spec.podSelector.matchLabels: Invalid value: "a/b/c": a qualified name must consist of',
    ),
    (
        pod_selector({"matchLabels": {"Example.com/app": "a"}}),
        'spec.podSelector.matchLabels: Invalid value: "Example.com/app": prefix part a lowercase RFC 1123 subdomain',
    ),
    (
        pod_selector({"matchLabels": {"/app": "a"}}),
        'spec.podSelector.matchLabels: Invalid value: "/app": prefix part must be non-empty',
    ),
    (
        pod_selector({"matchLabels": {"a" * 64: "a"}}),
        "name part must be no more than 63 characters",
    ),
    (
        pod_selector({"matchLabels": {"app": "-web"}}),
        'spec.podSelector.matchLabels.app: Invalid value: "-web": a valid label must be an empty string or consist of',
    ),
    (pod_selector({"matchLabels": {"app": "x" * 64}}), "must be no more than 63 characters"),
    (
        pod_selector({"matchLabels": {"app": 1}}),
        "spec.podSelector.matchLabels.app: Invalid value: 1: must be a string",
    ),
    (
        pod_selector({"matchExpressions": [{"key": "app", "operator": "In"}]}),
        "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        pod_selector({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}),
        "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        pod_selector({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}),
        "spec.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
    ),
    (
        pod_selector(
            {"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": ["a"]}]}
        ),
        "spec.podSelector.matchExpressions[0].values: Forbidden",
    ),
    (
        pod_selector({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}),
        'spec.podSelector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator',
    ),
    (
        pod_selector({"matchExpressions": [{"key": "app!", "operator": "Exists"}]}),
        'spec.podSelector.matchExpressions[0].key: Invalid value: "app!": name part must consist of',
    ),
    (
        pod_selector({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]}),
        'spec.podSelector.matchExpressions[0].values[0]: Invalid value: "a b": a valid label must be',
    ),
    (
        ingress_peer({"namespaceSelector": {"matchLabels": {"ns": "a b"}}}),
        f'{PEER}.namespaceSelector.matchLabels.ns: Invalid value: "a b"',
    ),
    (
        ingress_peer({"podSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}),
        f"{PEER}.podSelector.matchExpressions[0].values: Required value",
    ),
    (
        policy("p", {"egress": [{"to": [{}]}]}),
        "spec.egress[0].to[0]: Required value: must specify a peer",
    ),
    (
        policy("p", {"egress": [{"ports": [{"port": 70000}]}]}),
        "spec.egress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    ),
    (
        policy("p", {"mode": "audit"}),
        "spec.mode: unknown field (nodeSelector and mode need apiVersion bpfleet.io/v1alpha1)",
    ),
    (policy("p", {"podSelecter": {}}), "spec.podSelecter: unknown field"),
    (
        policy("p", {"ingress": [{"from": [{"ipblock": {"cidr": "10.0.0.0/8"}}]}]}),
        f"{PEER}.ipblock: unknown field",
    ),
    (
        policy("p", {}, mode="monitor"),
        'spec.mode: Unsupported value: "monitor": supported values: "enforce", "audit"',
    ),
    (
        policy("p", {}, nodeSelector={"matchLabels": {"bad key": "x"}}),
        'spec.nodeSelector.matchLabels: Invalid value: "bad key"',
    ),
    (
        policy("Bad_Name", {}),
        'metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain',
    ),
    (
        policy("p", {}, namespace="a.b"),
        'metadata.namespace: Invalid value: "a.b": a lowercase RFC 1123 label',
    ),
    (
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {}},
        "metadata.name: Required value",
    ),
    (
        {
            "apiVersion": "networking.k8s.io/v1beta1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
        },
        'apiVersion: Unsupported value: "networking.k8s.io/v1beta1": supported values: "networking.k8s.io/v1", "bpfleet.io/v1alpha1"',
    ),
    ({"kind": "NetworkPolicy", "metadata": {"name": "p"}}, "apiVersion: Required value"),
    (
        {**policy("p", {}), "kind": "BpfProgram"},
        'kind: Unsupported value: "BpfProgram": supported values: "NetworkPolicy"',
    ),
    (
        policy("p", {"ingress": {"from": []}}),
        'spec.ingress: Invalid value: {"from": []}: must be a list',
    ),
]


@pytest.mark.parametrize(
    ("document", "expected"), REJECTED, ids=[expected[:70] for _, expected in REJECTED]
)
def test_rejected_as_the_api_server_rejects(document: dict[str, Any], expected: str) -> None:
    found = problems(document)
    assert any(expected in problem for problem in found), found


def test_every_problem_is_reported_at_once() -> None:
    document = policy(
        "p",
        {
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            "ingress": [{"from": [{}], "ports": [{"port": 0}, {"port": 80, "endPort": 79}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}],
        },
    )
    assert [problem.split(":")[0] for problem in problems(document)] == [
        "spec.podSelector.matchExpressions[0].values",
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].endPort",
        "spec.ingress[0].from[0]",
        "spec.egress[0].to[0].ipBlock.except[0]",
    ]


def test_problems_carry_their_field_path() -> None:
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.validate(ingress_port(port=80, endPort=1))
    (problem,) = raised.value.problems
    assert problem.loc == ("spec", "ingress", 0, "ports", 1, "endPort")
    assert problem.path == "spec.ingress[0].ports[1].endPort"


def test_host_bits_are_normalised_with_a_warning() -> None:
    document = policy(
        "p",
        {
            "egress": [
                {
                    "to": [
                        {"ipBlock": {"cidr": "10.0.1.5/16", "except": ["10.0.1.9/24"]}},
                        {"ipBlock": {"cidr": "FD00::1/64"}},
                    ]
                }
            ]
        },
    )
    validated = validating.validate(document)
    assert validated.policy.spec.egress is not None
    peers = validated.policy.spec.egress[0].to
    assert peers is not None
    assert peers[0].ip_block == models.IPBlock(cidr="10.0.0.0/16", except_=("10.0.1.0/24",))
    assert peers[1].ip_block is not None
    assert peers[1].ip_block.cidr == "fd00::/64"
    assert [str(warning) for warning in validated.warnings] == [
        "spec.egress[0].to[0].ipBlock.cidr: '10.0.1.5/16' has host bits set: it means '10.0.0.0/16', and is used as that",
        "spec.egress[0].to[0].ipBlock.except[0]: '10.0.1.9/24' has host bits set: it means '10.0.1.0/24', and is used as that",
        "spec.egress[0].to[1].ipBlock.cidr: 'FD00::1/64' has host bits set: it means 'fd00::/64', and is used as that",
    ]


def test_an_except_judged_after_normalising_its_block() -> None:
    # 10.0.1.5/16 is 10.0.0.0/16, which 10.0.200.0/24 is inside.
    validated = validating.validate(
        ingress_peer({"ipBlock": {"cidr": "10.0.1.5/16", "except": ["10.0.200.0/24"]}})
    )
    assert len(validated.warnings) == 1


def test_a_plain_kubernetes_policy_is_enforced_everywhere() -> None:
    validated = validating.validate(policy("web", {"podSelector": {"matchLabels": {"app": "web"}}}))
    assert isinstance(validated.policy, models.NetworkPolicy)
    assert validated.policy.mode == "enforce"
    assert validated.policy.node_selector is None
    assert validated.policy.key == "x/web"
    assert validated.warnings == ()


def test_a_bpfleet_policy_has_mode_and_node_selector() -> None:
    audit = validating.validate(
        policy("web", {}, mode="audit", nodeSelector={"matchLabels": {"zone": "a"}})
    )
    assert isinstance(audit.policy, models.BpfleetNetworkPolicy)
    assert audit.policy.mode == "audit"
    assert audit.policy.node_selector == models.LabelSelector(match_labels={"zone": "a"})
    enforce = validating.validate({**policy("web", {}), "apiVersion": "bpfleet.io/v1alpha1"})
    assert enforce.policy.mode == "enforce"


def test_missing_namespace_means_default_and_missing_spec_selects_all() -> None:
    validated = validating.validate(
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}}
    )
    assert validated.policy.key == "default/p"
    assert validated.policy.spec.pod_selector == models.LabelSelector()
    assert validated.policy.spec.effective_policy_types() == {"Ingress"}


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, {"Ingress"}),
        ({"egress": []}, {"Ingress"}),  # upstream defaults on len(egress) != 0
        ({"egress": [{}]}, {"Ingress", "Egress"}),
        ({"policyTypes": [], "egress": [{}]}, {"Ingress", "Egress"}),
        ({"policyTypes": ["Egress"], "ingress": [{}]}, {"Egress"}),
        ({"policyTypes": ["Ingress", "Egress"]}, {"Ingress", "Egress"}),
    ],
)
def test_policy_types_default_as_upstream(spec: dict[str, Any], types: set[str]) -> None:
    assert validating.validate(policy("p", spec)).policy.spec.effective_policy_types() == types


def test_camel_case_on_the_wire() -> None:
    document = policy(
        "p",
        {
            "podSelector": {
                "matchLabels": {"a": "b"},
                "matchExpressions": [{"key": "c", "operator": "Exists"}],
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                    "ports": [{"port": 80, "endPort": 90, "protocol": "UDP"}],
                }
            ],
        },
    )
    validated = validating.validate(document)
    assert validated.policy.model_dump(by_alias=True, exclude_none=True, mode="json") == document


# --- YAML files -----------------------------------------------------------------------

TWO_POLICIES = """\
# a comment
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: x}
spec:
  podSelector: {}
---
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: bad
  namespace: x
spec:
  ingress:
    - ports:
        - port: 80
        - port: 81
          endPort: 79
"""


def test_multi_document_files_report_file_line_and_document(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(TWO_POLICIES)
    sources = validating.parse_yaml(path.read_text(), str(path))
    assert [(source.index, source.line) for source in sources] == [(0, 2), (2, 9)]
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([path])
    (problem,) = raised.value.problems
    assert (problem.file, problem.line, problem.document) == (str(path), 19, 2)
    assert str(problem) == (
        f"{path}:19: spec.ingress[0].ports[1].endPort: Invalid value: 79: must be greater than or "
        "equal to `port` (document 3)"
    )


def test_a_problem_on_a_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  namespace: x\n"
    )
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([path])
    assert [str(problem) for problem in raised.value.problems] == [
        f"{path}:3: metadata.name: Required value"
    ]


def test_yaml_syntax_errors_have_a_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nspec:\n  ingress: [\n")
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([path])
    (problem,) = raised.value.problems
    assert problem.file == str(path)
    assert problem.line == 4
    assert str(problem).startswith(f"{path}:4: invalid YAML")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nmetadata: {name: q}\n"
    )
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([path])
    assert [str(problem) for problem in raised.value.problems] == [
        f"{path}:4: metadata: duplicate key"
    ]


def test_a_policy_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TWO_POLICIES.split("---", maxsplit=1)[0])
    (tmp_path / "b.yml").write_text(TWO_POLICIES.split("---", maxsplit=1)[0])
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([tmp_path])
    assert [str(problem) for problem in raised.value.problems] == [
        f"{tmp_path / 'b.yml'}:4: metadata.name: policy x/good is already defined at {tmp_path / 'a.yaml'}:2"
    ]


def test_directories_expand_to_their_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "one.yml").write_text(TWO_POLICIES.split("---", maxsplit=1)[0])
    (tmp_path / "two.yaml").write_text(
        TWO_POLICIES.split("---", maxsplit=1)[0].replace("name: good", "name: other")
    )
    (tmp_path / "notes.txt").write_text("not a policy")
    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    loaded = validating.load_policies([tmp_path])
    assert sorted(item.policy.key for item in loaded) == ["x/good", "x/other"]
    assert [item.origin for item in loaded] == [
        f"{tmp_path / 'nested' / 'one.yml'}:2",
        f"{tmp_path / 'two.yaml'}:2",
    ]


def test_warnings_are_located(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: bpfleet.io/v1alpha1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  mode: audit\n"
        "  egress:\n    - to:\n        - ipBlock:\n            cidr: 192.168.1.7/24\n"
    )
    (loaded,) = validating.load_policies([path])
    assert [str(warning) for warning in loaded.warnings] == [
        f"{path}:9: spec.egress[0].to[0].ipBlock.cidr: '192.168.1.7/24' has host bits set: it means '192.168.1.0/24', and is used as that"
    ]


def test_unreadable_and_non_mapping_documents(tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(validating.PolicyValidationError) as raised:
        validating.load_policies([listing, tmp_path / "missing.yaml"])
    assert [str(problem) for problem in raised.value.problems] == [
        f"{listing}:1: a policy document must be a mapping",
        f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory",
    ]
