"""The endpoints file and the policy part of a desired state, as the agent reads them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bpfleet_agent.desired import (
    DesiredStateError,
    EndpointsError,
    EndpointsFile,
    desired_from_document,
    parse_assignments,
    parse_desired,
    parse_endpoints,
)
from bpfleet_core.protocol import POLICY_PROGRAM

DB = {
    "namespace": "shop",
    "name": "db",
    "labels": {"app": "db"},
    "ip": "10.1.0.2",
    "interface": "vdb",
    "ports": [{"name": "pg", "port": 5432}],
}


def test_the_file_is_yaml_or_json_a_mapping_or_a_bare_list() -> None:
    mapping = parse_endpoints(f"endpoints: [{json.dumps(DB)}]\nnamespaces: {{shop: {{team: a}}}}\n")
    assert [e.key for e in mapping.endpoints] == ["shop/db"]
    assert mapping.namespaces == {"shop": {"team": "a"}}
    assert parse_endpoints(json.dumps([DB])).endpoints == mapping.endpoints
    assert parse_endpoints("").endpoints == []


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ([{**DB, "ip": "10.1.0.256"}], "endpoints.0.ip"),
        ([{**DB, "interface": "a/b"}], "endpoints.0.interface"),
        ([{**DB, "namespace": "Shop"}], "endpoints.0.namespace"),
        ([{**DB, "labels": {"app": "no spaces"}}], "invalid label value"),
        ([{**DB, "ports": [{"name": "pg", "port": 1}, {"name": "pg", "port": 2}]}], "unique: pg"),
        ([DB, {**DB, "ip": "10.1.0.3"}], "endpoint listed twice: shop/db"),
        ([DB, {**DB, "name": "db2"}], "IP listed twice: 10.1.0.2"),
        ({"endpoints": [DB], "pods": []}, "pods"),
    ],
)
def test_bad_files_say_what_is_wrong(document: object, says: str) -> None:
    with pytest.raises(EndpointsError, match=says.replace(".", r"\.")):
        parse_endpoints(json.dumps(document))


def test_a_broken_file_keeps_the_last_good_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yaml"
    watched = EndpointsFile(path)

    def names() -> list[str]:
        current = watched.read()
        assert current is not None
        return [endpoint.name for endpoint in current.endpoints]

    assert names() == []  # no file yet: no endpoints
    path.write_text(json.dumps([DB]))
    assert names() == ["db"]
    path.write_text("endpoints: [")
    os.utime(path, ns=(1, 1))  # a different stamp, whatever the clock's resolution
    assert names() == ["db"]
    assert "not valid YAML" in watched.error
    assert EndpointsFile(None).read() is None  # not configured: nothing declared


def test_the_policy_part_is_judged_apart_from_the_programs() -> None:
    program = {
        "name": POLICY_PROGRAM,
        "spec": {
            "artifact": {"name": "x", "version": "1"},
            "attach": [{"entryPoint": "e", "type": "tracepoint"}],
        },
    }
    parsed = desired_from_document(
        {"revision": 3, "programs": [program], "policy": {"revision": "x"}}
    )
    assert parsed.state.revision == 3
    assert parsed.state.policy is None
    assert "reserved" in parsed.invalid[POLICY_PROGRAM]
    assert parsed.policy_error.startswith("revision: ")


def test_an_endpoints_file_not_text_or_nested_too_deep_keeps_the_last_good_endpoints(
    tmp_path: Path,
) -> None:
    path = tmp_path / "endpoints.yaml"
    watched = EndpointsFile(path)
    path.write_text(json.dumps([DB]))
    assert watched.read() is not None
    for stamp, content, says in (
        (1, b"\xff\xfe not text", "can't decode"),
        (2, b"[" * 20_000 + b"]" * 20_000, "nested deeper than"),
    ):
        path.write_bytes(content)
        os.utime(path, ns=(stamp, stamp))
        current = watched.read()
        assert current is not None
        assert [endpoint.name for endpoint in current.endpoints] == ["db"]
        assert says in watched.error


@pytest.mark.parametrize("parse", [parse_desired, parse_assignments])
def test_a_desired_state_nested_too_deep_is_refused_whole_not_a_crash(
    parse: Callable[[str], object],
) -> None:
    with pytest.raises(DesiredStateError, match=r"nested (too deeply|deeper than)"):
        parse("[" * 200_000 + "]" * 200_000)
