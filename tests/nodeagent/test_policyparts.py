"""The agent's reader of policy parts: what it reuses comes out exactly as a whole
validation would make it, and what did not change is the very same object."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bpfleet_agent.policyparts import PolicyPartReader
from bpfleet_core.protocol import PolicyAssignment


def _rule(cidr: str, port: int = 5201) -> dict[str, Any]:
    return {"from": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": port}]}


def part(
    rules: list[dict[str, Any]], generation: int = 1, revision: int = 1, **pods: str
) -> dict[str, Any]:
    return {
        "revision": revision,
        "artifact": None,
        "policies": [
            {
                "generation": generation,
                "document": {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"namespace": "x", "name": "allow"},
                    "spec": {"podSelector": {}, "ingress": rules},
                },
            }
        ],
        "topology": {
            "namespaces": {"x": {}},
            "pods": {
                key: {"ip": ip, "node": "n1" if index == 0 else None}
                for index, (key, ip) in enumerate({"x/a": "10.0.0.1", **pods}.items())
            },
        },
    }


def test_unchanged_rules_peers_and_pods_are_the_same_objects() -> None:
    reader = PolicyPartReader()
    rules = [_rule(f"10.1.0.{i}/32") for i in range(20)]
    first = reader.read(part(rules, **{"x/b": "10.0.0.2"}))
    changed = copy.deepcopy(rules)
    changed[7] = _rule("192.0.2.1/32")
    # one peer of a long peer list changed: the others stay the same objects too
    changed[3] = {"from": [*rules[3]["from"], {"ipBlock": {"cidr": "198.51.100.0/24"}}]}
    raw = part(changed, generation=2, revision=2, **{"x/b": "10.0.0.2", "x/c": "10.0.0.3"})
    second = reader.read(json.loads(json.dumps(raw)))
    assert second == PolicyAssignment.model_validate(raw)
    old = first.policies[0].document.spec.ingress or ()
    new = second.policies[0].document.spec.ingress or ()
    assert [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a is not b] == [3, 7]
    assert (new[3].from_ or ())[0] is (old[3].from_ or ())[0]
    assert second.topology.pods["x/b"] is first.topology.pods["x/b"]
    # the same part again is the same object
    assert reader.read(json.loads(json.dumps(raw))) is second


def test_an_invalid_part_is_refused_and_forgets_nothing() -> None:
    reader = PolicyPartReader()
    good = part([_rule("10.1.0.1/32")])
    first = reader.read(good)
    broken = copy.deepcopy(good)
    broken["policies"][0]["document"]["spec"]["ingress"][0]["ports"][0]["port"] = "not a port!"
    broken["policies"][0]["generation"] = 2
    broken["topology"]["pods"]["x/a"]["ip"] = "nonsense"
    with pytest.raises(ValidationError):
        reader.read(broken)
    assert reader.read(copy.deepcopy(good)) is first


_CIDRS = st.integers(0, 40).map(lambda n: f"10.2.0.{n}/32")
_RULES = st.lists(
    st.tuples(st.lists(_CIDRS, min_size=1, max_size=3), st.sampled_from([80, 443, 5201])),
    max_size=6,
).map(
    lambda rules: [
        {**_rule(cidrs[0], port), "from": [{"ipBlock": {"cidr": c}} for c in cidrs]}
        for cidrs, port in rules
    ]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_RULES, st.booleans()), min_size=1, max_size=5))
def test_reading_parts_one_after_another_is_validating_each_whole(
    steps: list[tuple[list[dict[str, Any]], bool]],
) -> None:
    reader = PolicyPartReader()
    for revision, (rules, extra_pod) in enumerate(steps, start=1):
        pods = {"x/b": "10.0.0.2"} if extra_pod else {}
        raw = part(rules, generation=revision, revision=revision, **pods)
        assert reader.read(json.loads(json.dumps(raw))) == PolicyAssignment.model_validate(raw)
