"""The policy part of assignments, read so that what did not change is not read again.

A part changes mostly in small ways (one rule of one policy, one endpoint somewhere),
yet it may carry ten thousand rules. ``PolicyPartReader`` keeps the last part it read,
as JSON values and as models, and validates only what differs from it: a policy, rule,
peer or pod whose JSON equals the one at the same place last time is the very same
model object again. The models come out exactly as a whole validation would make them
(pydantic takes an instance of the right model as it is), and the compiler's cache,
which goes by identity, then recompiles only what changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from bpfleet_core.netpol import models
from bpfleet_core.protocol import AssignedPolicy, PolicyAssignment

_RULE_LISTS = (("ingress", "from", "from_"), ("egress", "to", "to"))


def _reuse(new: Any, old: Any, parsed: Sequence[BaseModel] | None) -> Any:
    """``new`` (a JSON list) with each item equal to ``old``'s at the same place replaced
    by the model ``parsed`` made of it; ``new`` itself when nothing can be reused."""
    if not isinstance(new, list) or not isinstance(old, list) or not parsed:
        return new
    if len(parsed) != len(old):
        return new
    return [
        parsed[index] if index < len(old) and item == old[index] else item
        for index, item in enumerate(new)
    ]


def _reuse_rules(new: Any, old: Any, parsed: Sequence[models.Rule] | None, peers: str) -> Any:
    """Rules reused whole where equal; in a rule that changed, its peers one by one."""
    if not isinstance(new, list) or not isinstance(old, list) or not parsed:
        return new
    if len(parsed) != len(old):
        return new
    reused: list[Any] = []
    for index, item in enumerate(new):
        if index >= len(old):
            reused.append(item)
        elif item == old[index]:
            reused.append(parsed[index])
        elif isinstance(item, dict) and isinstance(old[index], dict):
            rule = parsed[index]
            changed = dict(item)
            if peers in item:
                changed[peers] = _reuse(item[peers], old[index].get(peers), rule.peers)
            reused.append(changed)
        else:
            reused.append(item)
    return reused


def _reuse_document(new: Any, old: Any, parsed: models.Policy) -> Any:
    """A policy document whose rules that did not change are the models of ``parsed``."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return new
    spec, old_spec = new.get("spec"), old.get("spec")
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return new
    spec = dict(spec)
    for field, peers, _ in _RULE_LISTS:
        if field in spec:
            previous = parsed.spec.ingress if field == "ingress" else parsed.spec.egress
            spec[field] = _reuse_rules(spec[field], old_spec.get(field), previous, peers)
    return {**new, "spec": spec}


def _policy_name(raw: Any) -> str | None:
    try:
        metadata = raw["document"]["metadata"]
        return f"{metadata.get('namespace', 'default')}/{metadata['name']}"
    except (KeyError, TypeError):
        return None


class PolicyPartReader:
    """Reads policy parts one after another (see the module's docstring)."""

    def __init__(self) -> None:
        self._raw: Any = None
        self._part: PolicyAssignment | None = None
        self._policies: dict[str, tuple[Any, AssignedPolicy]] = {}
        self._pods: Mapping[str, Any] = {}
        self._topology: tuple[Any, models.Topology] | None = None
        self._retired: tuple[object, ...] = ()

    def read(self, raw: Any) -> PolicyAssignment:
        """The part as ``PolicyAssignment.model_validate(raw)`` would make it; raises
        its ``ValidationError`` (and forgets nothing it read before) when invalid."""
        if self._part is not None and raw == self._raw:
            return self._part
        if not isinstance(raw, dict):
            return PolicyAssignment.model_validate(raw)
        mixed = dict(raw)
        policies = raw.get("policies")
        if isinstance(policies, list):
            mixed["policies"] = [self._policy(item) for item in policies]
        topology = raw.get("topology")
        if self._topology is not None and topology == self._topology[0]:
            mixed["topology"] = self._topology[1]
        elif isinstance(topology, dict) and isinstance(topology.get("pods"), dict):
            pods = topology["pods"]
            old_pods = self._topology[1].pods if self._topology is not None else {}
            mixed["topology"] = {
                **topology,
                "pods": {
                    key: old_pods[key] if key in old_pods and self._pods.get(key) == pod else pod
                    for key, pod in pods.items()
                },
            }
        part = PolicyAssignment.model_validate(mixed)
        self._remember(raw, part)
        return part

    def _policy(self, raw: Any) -> Any:
        name = _policy_name(raw)
        known = self._policies.get(name) if name is not None else None
        if known is None:
            return raw
        old_raw, parsed = known
        if raw == old_raw:
            return parsed
        if not isinstance(raw, dict) or not isinstance(old_raw, dict):
            return raw
        return {
            **raw,
            "document": _reuse_document(
                raw.get("document"), old_raw.get("document"), parsed.document
            ),
        }

    def release(self) -> None:
        """Free the part before the last (as many objects as the last one: a caller may
        want the new part enforced first)."""
        self._retired = ()

    def _remember(self, raw: dict[str, Any], part: PolicyAssignment) -> None:
        self._retired = (self._raw, self._part, self._policies, self._topology)
        self._raw, self._part = raw, part
        self._policies = {}
        for item, parsed in zip(raw.get("policies") or (), part.policies, strict=False):
            name = _policy_name(item)
            if name is not None:
                self._policies[name] = (item, parsed)
        topology = raw.get("topology")
        self._topology = (topology, part.topology)
        self._pods = topology.get("pods", {}) if isinstance(topology, dict) else {}
