"""CustomResourceDefinitions rendered from the resource models.

The models in ``resources`` and ``netpol.models`` are the single description of what a
``bpfleet.io`` object may hold; this module turns their pydantic JSON schemas into
``apiextensions.k8s.io/v1`` CRDs, so the API server refuses what the operator would.

The API server wants a *structural* OpenAPI v3.0 schema, which JSON Schema as pydantic
writes it is not. The translation:

- ``$ref`` is inlined (no ``$defs``); a reference's own description is kept unless the
  field gives one.
- ``X | None`` becomes ``X`` with ``nullable: true`` (no ``anyOf`` with ``null``).
- ``int | str`` becomes ``x-kubernetes-int-or-string: true``, the only union that
  structural schemas type; any other union of scalars keeps unknown fields and says the
  allowed types in its description (the models check them again).
- ``exclusiveMinimum: n`` (JSON Schema 2020-12) becomes OpenAPI 3.0's boolean form.
- ``additionalProperties: false`` is dropped: the server prunes unknown fields itself,
  and OpenAPI v3 in CRDs forbids it beside ``properties``.
- Spec defaults that are scalars become CRD defaults, so ``kubectl get`` and
  ``kubectl explain`` show them; defaults of lists and objects, and every status
  default, stay with the models (the operator writes status whole).

``render_all()`` returns the YAML text per file; ``scripts/gen_crds.py`` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from bpfleet_core.netpol.models import BpfleetNetworkPolicySpec
from bpfleet_core.resources import (
    API_GROUP,
    API_VERSION,
    BpfProgramSpec,
    BpfProgramStatus,
    GitSourceSpec,
    GitSourceStatus,
    NetworkPolicyStatus,
    ObjectMeta,
)

Schema = dict[str, Any]

CATEGORY = "bpfleet"
# Keywords OpenAPI v3.0 in a CRD cannot carry, or that only name things in JSON Schema.
_DROPPED = frozenset({"title", "$defs", "examples"})
# Keywords a structural schema refuses, or that pydantic would only emit for a model
# this module does not know how to translate yet: failing loudly beats a wrong CRD.
_UNSUPPORTED = frozenset(
    {"prefixItems", "propertyNames", "patternProperties", "oneOf", "allOf", "not", "if"}
)
_SCALARS = frozenset({"string", "integer", "number", "boolean"})
# The order keys are written in, so a person reads what a field is before its parts.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "nullable",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "x-kubernetes-int-or-string",
    "anyOf",
    "x-kubernetes-preserve-unknown-fields",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
)


class SchemaError(ValueError):
    """A model uses a construct that has no structural equivalent here."""


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""

    def render(self) -> Schema:
        column: Schema = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        return column


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


def _ready_condition(field: str) -> str:
    return f'.status.conditions[?(@.type=="Ready")].{field}'


@dataclass(frozen=True)
class ResourceKind:
    """One custom resource: names, scope, models and how ``kubectl get`` prints it."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Cluster", "Namespaced"]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    spec_required: bool
    columns: tuple[PrinterColumn, ...]
    restrict_name: bool = False  # metadata.name must fit ObjectMeta.name (a DNS label)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def file_name(self) -> str:
        return f"{self.crd_name}.yaml"


RESOURCE_KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        kind="BpfProgram",
        plural="bpfprograms",
        short_names=("bpfprog", "bpfp"),
        # A node runs one program per name, whichever namespace asked for it.
        scope="Cluster",
        description=(
            "A signed eBPF artifact, where its entry points attach, its load-time "
            "configuration, the nodes that run it and how a change rolls out to them. "
            "Status is a summary; per-node detail lives in the fleet API."
        ),
        spec=BpfProgramSpec,
        status=BpfProgramStatus,
        spec_required=True,
        columns=(
            PrinterColumn("Ready", ".status.ready", description="Attached nodes/desired nodes."),
            PrinterColumn("Revision", ".status.revision", description="Git revision of the spec."),
            PrinterColumn("Status", _ready_condition("reason"), description="Why Ready is so."),
            AGE,
        ),
        restrict_name=True,
    ),
    ResourceKind(
        kind="NetworkPolicy",
        plural="networkpolicies",
        # Not "netpol": kubectl resolves that to networking.k8s.io's NetworkPolicy.
        short_names=("bnp",),
        scope="Namespaced",
        description=(
            "A networking.k8s.io/v1 NetworkPolicy enforced by bpfleet's eBPF datapath, "
            "with a node selector and a mode (enforce, or audit: report without dropping)."
        ),
        spec=BpfleetNetworkPolicySpec,
        status=NetworkPolicyStatus,
        spec_required=False,
        columns=(
            PrinterColumn("Mode", ".spec.mode"),
            PrinterColumn("Ready", ".status.ready", description="Enforcing nodes/desired nodes."),
            AGE,
        ),
    ),
    ResourceKind(
        kind="GitSource",
        plural="gitsources",
        short_names=("gitsrc",),
        scope="Namespaced",
        description=(
            "A Git repository whose manifests are validated together and applied "
            "all-or-nothing; the last good revision stays applied otherwise."
        ),
        spec=GitSourceSpec,
        status=GitSourceStatus,
        spec_required=True,
        columns=(
            PrinterColumn("URL", ".spec.url"),
            PrinterColumn("Revision", ".status.lastAppliedRevision"),
            PrinterColumn("Ready", _ready_condition("status")),
            PrinterColumn("Status", _ready_condition("message")),
            AGE,
        ),
        restrict_name=True,
    ),
)


# ------------------------------------------------------------------ schema translation


def _resolve(node: Schema, definitions: Mapping[str, Schema]) -> Schema:
    """``node`` with its ``$ref`` replaced by the definition, the node's own keys winning."""
    while "$ref" in node:
        reference = node["$ref"]
        prefix = "#/$defs/"
        if not reference.startswith(prefix) or reference[len(prefix) :] not in definitions:
            raise SchemaError(f"cannot resolve {reference!r}")
        own = {key: value for key, value in node.items() if key != "$ref"}
        node = {**definitions[reference[len(prefix) :]], **own}
    return node


def _plain(description: str) -> str:
    """Without the reStructuredText quoting of docstrings: kubectl explain shows it raw."""
    return description.replace("``", "")


def _union(node: Schema, branches: list[Schema], definitions: Mapping[str, Schema]) -> Schema:
    types = []
    for branch in branches:
        resolved = _resolve(branch, definitions)
        if resolved.get("type") not in _SCALARS or set(resolved) - {"type"}:
            raise SchemaError(f"only unions of plain scalars are supported, not {branches}")
        types.append(resolved["type"])
    own = {key: value for key, value in node.items() if key not in {"anyOf", "default", *_DROPPED}}
    if "description" in own:
        own["description"] = _plain(own["description"])
    if sorted(types) == ["integer", "string"]:
        # The one typed union structural schemas allow.
        return {
            **own,
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
    described = own.get("description", "").rstrip()
    own["description"] = f"{described} One of: {', '.join(types)}.".strip()
    return {**own, "x-kubernetes-preserve-unknown-fields": True}


def _structural(node: Schema, definitions: Mapping[str, Schema], *, defaults: bool) -> Schema:
    node = _resolve(node, definitions)
    if "anyOf" in node:
        branches = [branch for branch in node["anyOf"] if branch != {"type": "null"}]
        nullable = len(branches) < len(node["anyOf"])
        outer = {key: value for key, value in node.items() if key != "anyOf"}
        if len(branches) == 1:
            merged = {**_resolve(branches[0], definitions), **outer}
            node = _structural(merged, definitions, defaults=defaults)
        else:
            node = _union(outer, branches, definitions)
        if nullable:
            node["nullable"] = True
        return _ordered(node)

    unsupported = _UNSUPPORTED & set(node)
    if unsupported:
        raise SchemaError(f"no structural form for {sorted(unsupported)} in {node}")
    if node.get("uniqueItems"):
        raise SchemaError("CRDs refuse uniqueItems: true (quadratic to check)")

    result: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "description":
            result[key] = _plain(value)
        elif key == "const":
            result["enum"] = [value]
        elif key == "default":
            # Lists, objects and absence stay the models' business.
            if defaults and not (value is None or isinstance(value, list | dict)):
                result["default"] = value
        elif key in {"exclusiveMinimum", "exclusiveMaximum"}:
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            result[bound] = value
            result[key] = True
        elif key == "properties":
            result["properties"] = {
                name: _structural(child, definitions, defaults=defaults)
                for name, child in value.items()
            }
        elif key == "items":
            result["items"] = _structural(value, definitions, defaults=defaults)
        elif key == "additionalProperties":
            if isinstance(value, dict) and "properties" not in node:
                result[key] = _structural(value, definitions, defaults=defaults)
        else:
            result[key] = value
    if "type" not in result and not _untyped_allowed(result):
        raise SchemaError(f"node without a type: {result}")
    return _ordered(result)


def _ordered(node: Schema) -> Schema:
    rank = {key: index for index, key in enumerate(_KEY_ORDER)}
    return {key: node[key] for key in sorted(node, key=lambda k: (rank.get(k, len(rank)), k))}


def _untyped_allowed(node: Schema) -> bool:
    return bool(
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    )


def structural_schema(model: type[BaseModel], *, defaults: bool = False) -> Schema:
    """The structural OpenAPI v3.0 schema of ``model`` as it is written (camelCase)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}), defaults=defaults)


def _metadata_schema(resource: ResourceKind) -> Schema:
    if not resource.restrict_name:
        return {"type": "object"}
    name = structural_schema(ObjectMeta)["properties"]["name"]
    # A structural schema may constrain only name and generateName in metadata.
    return {"type": "object", "properties": {"name": name}}


def openapi_schema(resource: ResourceKind) -> Schema:
    """The ``openAPIV3Schema`` of one resource: its spec and status under the envelope."""
    spec = _ordered(
        {"description": "The desired state.", **structural_schema(resource.spec, defaults=True)}
    )
    status = _ordered(
        {
            **structural_schema(resource.status),
            "description": "Observed state, written by the operator: a summary and kstatus "
            "conditions.",
        }
    )
    schema: Schema = {
        "description": resource.description,
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": _metadata_schema(resource),
            "spec": spec,
            "status": status,
        },
    }
    if resource.spec_required:
        schema["required"] = ["spec"]
    return schema


def render(resource: ResourceKind) -> Schema:
    """The CustomResourceDefinition of ``resource``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/part-of": "bpfleet"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "scope": resource.scope,
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [column.render() for column in resource.columns],
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


_HEADER = (
    "# GENERATED by scripts/gen_crds.py from the models in bpfleet_core; do not edit.\n"
    "# Regenerate with `make crds`.\n"
)


class _Dumper(yaml.SafeDumper):
    """Writes shared sub-schemas out in full: anchors and aliases would puzzle readers."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(document: Schema) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return _HEADER + body


def render_all() -> dict[str, str]:
    """File name -> YAML text, one CRD per file."""
    return {resource.file_name: to_yaml(render(resource)) for resource in RESOURCE_KINDS}
