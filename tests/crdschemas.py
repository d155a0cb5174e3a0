"""The generated CRDs' schemas as a JSON Schema validator, the way the API server
applies them to every write."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "charts" / "bpfleet" / "crds"


def as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` in JSON Schema (draft 4) terms, for the validator."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: as_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        elif "anyOf" in converted:
            converted["anyOf"] = [*converted["anyOf"], {"type": "null"}]
    return converted


@cache
def openapi_schema(kind: str) -> dict[str, Any]:
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    raise KeyError(f"no CRD for kind {kind}")


def crd_errors(document: dict[str, Any]) -> list[str]:
    """Why the API server would refuse ``document``; empty when it would accept it."""
    validator = jsonschema.Draft4Validator(as_json_schema(openapi_schema(document["kind"])))
    return [
        f"{'.'.join(str(part) for part in error.absolute_path) or '<object>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]
