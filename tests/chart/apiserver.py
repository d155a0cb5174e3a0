"""A stand-in Kubernetes API server, enough for kubectl's `apply --dry-run=client`.

No kube-apiserver runs here, and kubectl asks a server even for a client-side dry run:
discovery (to map kinds to resources), the OpenAPI v2 document it validates objects
against, and each object (to tell create from update). This serves discovery from
kmock's bundled resource lists (recorded from a real API server), Kubernetes' own
schemas of the version of the kubectl the project installs (from the pinned
kubernetes-validate package), encoded as the protobuf document kubectl asks for, and
404 for every object. It advertises no server-side field validation, so kubectl checks
every field itself: unknown fields, wrong types and missing required fields fail.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import yaml

# kubectl asks for gnostic's openapi_v2.Document as protobuf (Accept:
# application/com.github.proto-openapi.spec.v2@v1.0+protobuf) and parses the body as that.
OPENAPI_V2_PROTOBUF = "application/octet-stream"
GVK_EXTENSION = "x-kubernetes-group-version-kind"


def resource_lists() -> list[dict[str, Any]]:
    """APIResourceLists of a real API server, as kmock bundles them."""
    bundled = resources.files(kmock).joinpath("_internal/resources.json.gz").read_bytes()
    return list(json.loads(gzip.decompress(bundled)))


def kubernetes_definitions(version: str) -> dict[str, Any]:
    """Kubernetes ``version``'s definitions (JSON Schema 2020-12, as packaged)."""
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    document = json.loads((root / f"v{version}-local" / "_definitions.json").read_text())
    return dict(document["$defs"])


# ---------------------------------------------------------------- the OpenAPI document


def swagger_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A packaged JSON Schema back to the OpenAPI v2 form Kubernetes publishes: one type
    (nullability is not OpenAPI v2's), int-or-string for the oneOf types, #/definitions
    references. What kubectl's validator does not read is left out."""
    if "$ref" in schema:
        return {"$ref": schema["$ref"].replace("#/$defs/", "#/definitions/")}
    if "oneOf" in schema:  # IntOrString and Quantity: a string type accepts either
        return {"type": "string", "format": "int-or-string"}
    converted: dict[str, Any] = {}
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else [kind for kind in kinds or [] if kind != "null"]
    if kinds:
        (converted["type"],) = kinds
    if "format" in schema:
        converted["format"] = schema["format"]
    if "required" in schema:
        converted["required"] = list(schema["required"])
    if "properties" in schema:
        converted["properties"] = {
            name: swagger_schema(value) for name, value in schema["properties"].items()
        }
    if "items" in schema:
        converted["items"] = swagger_schema(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        converted["additionalProperties"] = swagger_schema(schema["additionalProperties"])
    if GVK_EXTENSION in schema:
        converted[GVK_EXTENSION] = schema[GVK_EXTENSION]
    return converted


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _named(name: str, value: bytes) -> bytes:
    """gnostic's Named* message: name = 1, value = 2."""
    return _field(1, name) + _field(2, value)


def _schema_message(schema: dict[str, Any]) -> bytes:
    """gnostic's openapi_v2.Schema, with the fields ``swagger_schema`` keeps."""
    out = b""
    if "$ref" in schema:
        out += _field(1, schema["$ref"])
    if "format" in schema:
        out += _field(2, schema["format"])
    for name in schema.get("required", []):
        out += _field(19, name)
    if "additionalProperties" in schema:
        out += _field(21, _field(1, _schema_message(schema["additionalProperties"])))
    if "type" in schema:
        out += _field(22, _field(1, schema["type"]))
    if "items" in schema:
        out += _field(23, _field(1, _schema_message(schema["items"])))
    if "properties" in schema:
        named = b"".join(
            _field(1, _named(name, _schema_message(value)))
            for name, value in schema["properties"].items()
        )
        out += _field(25, named)
    if GVK_EXTENSION in schema:
        any_yaml = _field(2, yaml.safe_dump(schema[GVK_EXTENSION]))
        out += _field(31, _named(GVK_EXTENSION, any_yaml))
    return out


def openapi_v2_document(version: str) -> bytes:
    """The OpenAPI v2 document (protobuf) of Kubernetes ``version``: its definitions, no
    paths (so no operation offers server-side field validation)."""
    definitions = b"".join(
        _field(1, _named(name, _schema_message(swagger_schema(schema))))
        for name, schema in sorted(kubernetes_definitions(version).items())
    )
    info = _field(1, "Kubernetes") + _field(2, f"v{version}")
    return _field(1, "2.0") + _field(2, info) + _field(8, b"") + _field(9, definitions)


# ------------------------------------------------------------------------ the server


class StandInApiServer:
    """Serves discovery, the OpenAPI document and 404s on a loopback port."""

    def __init__(self, kubernetes_version: str) -> None:
        self.lists = resource_lists()
        self.openapi = openapi_v2_document(kubernetes_version)
        self.requests: list[str] = []
        self.url = ""
        self.cache = Path()  # where a client caches its discovery of this server

    def discovery(self, path: str) -> dict[str, Any] | None:
        core = [item for item in self.lists if item["groupVersion"] == "v1"]
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/api/v1":
            return core[0] if core else None
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for item in self.lists:
                if "/" in item["groupVersion"]:
                    group, version = item["groupVersion"].split("/")
                    groups.setdefault(group, []).append(version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [
                            {"groupVersion": f"{group}/{v}", "version": v} for v in versions
                        ],
                        "preferredVersion": {
                            "groupVersion": f"{group}/{versions[0]}",
                            "version": versions[0],
                        },
                    }
                    for group, versions in groups.items()
                ],
            }
        if path.startswith("/apis/"):
            wanted = path.removeprefix("/apis/")
            for item in self.lists:
                if item["groupVersion"] == wanted:
                    return item
        return None

    @contextlib.contextmanager
    def serving(self) -> Iterator[StandInApiServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        thread = threading.Thread(target=server.serve_forever, name="stand-in-apiserver")
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            thread.join(10)
            server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                stand_in.requests.append(f"GET {path}")
                if path == "/openapi/v2":
                    self._answer(200, stand_in.openapi, OPENAPI_V2_PROTOBUF)
                    return
                found = stand_in.discovery(path)
                if found is not None:
                    self._answer(200, json.dumps(found).encode(), "application/json")
                    return
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f"{path} not found",
                }
                self._answer(404, json.dumps(status).encode(), "application/json")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler
