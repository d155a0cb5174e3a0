"""The CRDs in the chart: generated from the models, structural, and agreeing with them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from bpfleet_core import crds
from bpfleet_core.netpol.models import BpfleetNetworkPolicy
from bpfleet_core.resources import BpfProgram, GitSource
from tests.crdschemas import as_json_schema

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "charts" / "bpfleet" / "crds"
KINDS = {resource.kind: resource for resource in crds.RESOURCE_KINDS}


def test_committed_crds_are_what_the_models_render() -> None:
    rendered = crds.render_all()
    on_disk = {path.name: path.read_text() for path in CRD_DIR.glob("*.yaml")}
    assert sorted(on_disk) == sorted(rendered), "CRD files differ: run `make crds`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run `make crds`"


# --------------------------------------------------------------------- structural


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every schema node below ``node``, with a readable path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def crd_schema(kind: str) -> dict[str, Any]:
    document = yaml.safe_load((CRD_DIR / KINDS[kind].file_name).read_text())
    schema: dict[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_structural(kind: str) -> None:
    schema = crd_schema(kind)
    for path, node in walk(schema):
        text = repr(node)
        assert "$ref" not in text, path
        assert "$defs" not in text, path
        untyped = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or untyped, f"{path or '<root>'} has no type"
        if "anyOf" in node:
            # The one union a structural schema allows, and nothing typed inside it.
            assert node.get("x-kubernetes-int-or-string"), path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not {"allOf", "oneOf", "not", "title", "const"} & set(node), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be boolean"
        if node.get("x-kubernetes-list-type") == "map":
            required = set(node["items"].get("required", ()))
            assert set(node["x-kubernetes-list-map-keys"]) <= required, path
    metadata = schema["properties"]["metadata"]
    assert set(metadata.get("properties", {})) <= {"name", "generateName"}


def test_crd_names_scope_and_columns() -> None:
    by_kind = {
        kind: yaml.safe_load((CRD_DIR / resource.file_name).read_text())
        for kind, resource in KINDS.items()
    }
    program = by_kind["BpfProgram"]["spec"]
    assert program["scope"] == "Cluster"
    assert program["names"]["shortNames"] == ["bpfprog", "bpfp"]
    assert by_kind["NetworkPolicy"]["spec"]["scope"] == "Namespaced"
    assert by_kind["GitSource"]["spec"]["scope"] == "Namespaced"
    short_names = [name for doc in by_kind.values() for name in doc["spec"]["names"]["shortNames"]]
    assert "netpol" not in short_names  # kubectl's name for networking.k8s.io policies
    assert len(short_names) == len(set(short_names))
    for doc in by_kind.values():
        spec = doc["spec"]
        assert spec["group"] == "bpfleet.io"
        assert spec["names"]["categories"] == ["bpfleet"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1"
        assert version["served"] is version["storage"] is True
        assert version["subresources"] == {"status": {}}
        assert version["additionalPrinterColumns"][-1]["name"] == "Age"
    columns = {
        column["name"]: column["jsonPath"]
        for column in program["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Ready"] == ".status.ready"
    assert columns["Status"] == '.status.conditions[?(@.type=="Ready")].reason'


def test_useful_constraints_survive() -> None:
    spec = crd_schema("BpfProgram")["properties"]["spec"]["properties"]
    assert spec["attach"]["minItems"] == 1
    assert "xdp" in spec["attach"]["items"]["properties"]["type"]["enum"]
    assert spec["artifact"]["properties"]["digest"]["nullable"] is True
    assert spec["artifact"]["properties"]["digest"]["pattern"] == "^[0-9a-f]{64}$"
    assert spec["rollout"]["properties"]["bakeSeconds"]["maximum"] == 86_400
    assert spec["config"]["additionalProperties"]["x-kubernetes-preserve-unknown-fields"]
    assert spec["config"]["description"] == "Values for the object's const volatile globals."
    policy = crd_schema("NetworkPolicy")["properties"]["spec"]["properties"]
    port = policy["ingress"]["items"]["properties"]["ports"]["items"]["properties"]["port"]
    assert port["x-kubernetes-int-or-string"] is True
    assert policy["mode"]["enum"] == ["enforce", "audit"]
    assert policy["mode"]["default"] == "enforce"
    status = crd_schema("GitSource")["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert "default" not in repr(status)


def test_unions_without_a_structural_form_are_refused() -> None:
    class Odd(BaseModel):
        value: int | list[int]

    with pytest.raises(crds.SchemaError):
        crds.structural_schema(Odd)


# ------------------------------------------------------------- sample manifests


def crd_errors(document: dict[str, Any]) -> list[str]:
    schema = as_json_schema(crd_schema(document["kind"]))
    validator = jsonschema.Draft4Validator(schema)
    return [error.message for error in validator.iter_errors(document)]


PROGRAM: dict[str, Any] = {
    "apiVersion": "bpfleet.io/v1alpha1",
    "kind": "BpfProgram",
    "metadata": {"name": "xdp-counter"},
    "spec": {
        "artifact": {"name": "xdp_counter", "version": "1.0.0", "digest": None},
        "attach": [{"entryPoint": "xdp_count", "type": "xdp", "interfaces": ["eth0"]}],
        "config": {"count_non_ip": False, "limit": 3, "label": "edge"},
        "nodeSelector": {
            "matchLabels": {"tier": "edge"},
            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
        },
        "rollout": {"steps": ["1", "25%", "100%"], "bakeSeconds": 30, "failureBudget": 0},
    },
}
POLICY: dict[str, Any] = {
    "apiVersion": "bpfleet.io/v1alpha1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "lb"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [{"port": 80}, {"protocol": "TCP", "port": "http", "endPort": None}],
            }
        ],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 53}]}],
        "nodeSelector": {"matchLabels": {"tier": "edge"}},
        "mode": "audit",
    },
}
SOURCE: dict[str, Any] = {
    "apiVersion": "bpfleet.io/v1alpha1",
    "kind": "GitSource",
    "metadata": {"name": "fleet", "namespace": "bpfleet"},
    "spec": {
        "url": "https://git.example.org/platform/fleet.git",
        "ref": {"branch": "main"},
        "path": "clusters/prod",
        "interval": "1m30s",
        "secretRef": {"name": "fleet-credentials"},
        "trustedSigningKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9v platform"],
        "prune": True,
    },
}
MODELS: dict[str, type[BaseModel]] = {
    "BpfProgram": BpfProgram,
    "NetworkPolicy": BpfleetNetworkPolicy,
    "GitSource": GitSource,
}


@pytest.mark.parametrize("document", [PROGRAM, POLICY, SOURCE], ids=lambda d: d["kind"])
def test_valid_manifests_pass_the_crd_and_the_model(document: dict[str, Any]) -> None:
    assert crd_errors(document) == []
    MODELS[document["kind"]].model_validate(document)


def changed(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` set (``-`` deletes the key)."""
    copied = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = copied
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value == "-":
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return copied


INVALID: list[tuple[dict[str, Any], str, Any]] = [
    (PROGRAM, "metadata.name", "Not_A_Label"),
    (PROGRAM, "spec.attach", []),
    (PROGRAM, "spec.attach.0.type", "teleport"),
    (PROGRAM, "spec.attach.0.xdpMode", "turbo"),
    (PROGRAM, "spec.attach.0.interfaces", ["a/b"]),
    (PROGRAM, "spec.artifact.digest", "not-a-digest"),
    (PROGRAM, "spec.artifact.version", "../../etc"),
    (PROGRAM, "spec.rollout.steps", ["0%"]),
    (PROGRAM, "spec.rollout.bakeSeconds", -1),
    (PROGRAM, "spec.nodeSelector.matchExpressions.0.operator", "Near"),
    (PROGRAM, "spec.artifact", "-"),
    (PROGRAM, "spec", "-"),
    (POLICY, "spec.mode", "block"),
    (POLICY, "spec.policyTypes", ["Sideways"]),
    (POLICY, "spec.ingress.0.ports.0.protocol", "ICMP"),
    (POLICY, "spec.ingress.0.ports.0.port", 1.5),
    (POLICY, "spec.ingress.0.from.1.ipBlock", {"except": ["10.1.0.0/16"]}),
    (SOURCE, "spec.url", "-"),
    (SOURCE, "spec.url", ""),
    (SOURCE, "spec.interval", "5 minutes"),
    (SOURCE, "spec.ref.commit", "HEAD~1"),
    (SOURCE, "spec.prune", "maybe"),
    (SOURCE, "metadata.name", "Fleet"),
]


@pytest.mark.parametrize(
    ("document", "path", "value"),
    [pytest.param(*case, id=f"{case[0]['kind']}:{case[1]}={case[2]!r}") for case in INVALID],
)
def test_invalid_manifests_fail_the_crd_and_the_model(
    document: dict[str, Any], path: str, value: Any
) -> None:
    bad = changed(document, path, value)
    assert crd_errors(bad), f"the CRD accepts {path}={value!r}"
    with pytest.raises(ValidationError):
        MODELS[document["kind"]].model_validate(bad)


def test_config_values_are_open_to_the_crd_and_checked_by_the_model() -> None:
    # Structural schemas cannot type a union of scalars: the CRD keeps the value and
    # the model (then the API, against the artifact) refuses it.
    bad = changed(PROGRAM, "spec.config.limit", [1, 2])
    assert crd_errors(bad) == []
    with pytest.raises(ValidationError):
        BpfProgram.model_validate(bad)


def test_defaults_are_valid_for_their_fields() -> None:
    for kind in KINDS:
        for path, node in walk(crd_schema(kind)):
            if "default" in node:
                schema = as_json_schema({key: v for key, v in node.items() if key != "default"})
                assert jsonschema.Draft4Validator(schema).is_valid(node["default"]), path
