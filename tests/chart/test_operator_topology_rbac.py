"""The operator reads what the policy topology is made of, and nothing more of it."""

from __future__ import annotations

from tests.chart.conftest import Rendered


def test_the_operator_watches_pods_and_namespaces_read_only(default: Rendered) -> None:
    role = default.find("ClusterRole", "-operator")
    verbs: dict[str, set[str]] = {}
    for rule in role["rules"]:
        if rule["apiGroups"] == [""]:
            for resource in rule["resources"]:
                verbs.setdefault(resource, set()).update(rule["verbs"])
    for resource in ("pods", "namespaces", "nodes"):
        assert verbs[resource] == {"get", "list", "watch"}, resource
