"""Policies to start from: the common shapes, written out for one namespace.

| id | what it does |
|---|---|
| ``default-deny-ingress`` | every endpoint of the namespace isolated for ingress, nothing let in |
| ``default-deny-egress`` | every endpoint isolated for egress, only DNS let out |
| ``same-namespace`` | ingress only from endpoints of the same namespace |
| ``from-namespace`` | ingress only from endpoints of one other namespace |
| ``internet`` | egress to the Internet: every address but the private ranges |

Each is YAML text with comments saying what each part is for, so a person starts
from something that reads; ``tests/core/netpol/test_templates.py`` proves with the
simulator that each does what this table says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bpfleet_core.netpol import diagramming, models

DEFAULT_PEER_NAMESPACE = "monitoring"


@dataclass(frozen=True)
class Template:
    id: str
    title: str
    description: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "text": self.text,
        }


def _head(name: str, namespace: str) -> str:
    return (
        f"apiVersion: {models.KUBERNETES_API_VERSION}\n"
        "kind: NetworkPolicy\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {namespace}\n"
    )


def _list(items: tuple[str, ...], indent: int) -> str:
    return "".join(f"{' ' * indent}- {item}\n" for item in items)


def render(namespace: str, peer_namespace: str = DEFAULT_PEER_NAMESPACE) -> list[Template]:
    """Every template, for a policy in ``namespace`` (``from-namespace`` admits
    ``peer_namespace``)."""
    name_label = models.NAMESPACE_NAME_LABEL
    return [
        Template(
            "default-deny-ingress",
            "Default-deny ingress",
            "Nothing may connect to the namespace's endpoints until another policy allows it.",
            _head("default-deny-ingress", namespace) + "spec:\n"
            "  podSelector: {}        # every endpoint of the namespace\n"
            "  policyTypes:\n"
            "    - Ingress            # isolated for ingress; no rule lets anything in\n",
        ),
        Template(
            "default-deny-egress",
            "Default-deny egress, DNS allowed",
            "The namespace's endpoints may open no connection but DNS lookups.",
            _head("default-deny-egress", namespace) + "spec:\n"
            "  podSelector: {}        # every endpoint of the namespace\n"
            "  policyTypes:\n"
            "    - Egress\n"
            "  egress:\n"
            "    # DNS only: names still resolve\n"
            "    - ports:\n"
            f"        - {{protocol: UDP, port: {diagramming.DNS_PORT}}}\n"
            f"        - {{protocol: TCP, port: {diagramming.DNS_PORT}}}\n",
        ),
        Template(
            "same-namespace",
            "Same namespace only",
            "Endpoints of this namespace may connect to each other; nobody else may.",
            _head("same-namespace", namespace) + "spec:\n"
            "  podSelector: {}\n"
            "  policyTypes:\n"
            "    - Ingress\n"
            "  ingress:\n"
            "    - from:\n"
            "        - podSelector: {}  # a pod selector alone: this namespace's endpoints\n",
        ),
        Template(
            "from-namespace",
            f"From namespace {peer_namespace}",
            f"Only endpoints of namespace {peer_namespace} may connect.",
            _head(f"from-{peer_namespace}", namespace) + "spec:\n"
            "  podSelector: {}\n"
            "  policyTypes:\n"
            "    - Ingress\n"
            "  ingress:\n"
            "    - from:\n"
            "        - namespaceSelector:\n"
            "            matchLabels:\n"
            f"              {name_label}: {peer_namespace}\n",
        ),
        Template(
            "internet",
            "To the Internet, not private ranges",
            "Endpoints may connect to public addresses (and resolve names), not to private ranges.",
            _head("internet-egress", namespace) + "spec:\n"
            "  podSelector: {}\n"
            "  policyTypes:\n"
            "    - Egress\n"
            "  egress:\n"
            "    - to:\n"
            "        - ipBlock:\n"
            "            cidr: 0.0.0.0/0\n"
            "            except:        # the private ranges (RFC 1918)\n"
            + _list(diagramming.PRIVATE_RANGES, 14)
            + "    - ports:               # DNS, wherever the resolver is\n"
            f"        - {{protocol: UDP, port: {diagramming.DNS_PORT}}}\n"
            f"        - {{protocol: TCP, port: {diagramming.DNS_PORT}}}\n",
        ),
    ]
