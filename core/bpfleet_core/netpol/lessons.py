"""The editor's tutorial: short lessons on a small demo topology.

Each lesson gives a goal in a sentence, a policy that misses it (the classic mistake
of its topic) and flow tests that say what the goal means; it is done when its flow
tests pass, as the simulator judges them on the demo topology (the editor asks the
API's ``simulate`` with this topology, never a verdict of its own). The five topics
are those every NetworkPolicy tutorial teaches: reaching across namespaces, egress to
a pod, DNS, how rules and peers combine, and what empty selectors mean.

Explanations are not written here: why a flow is allowed or denied comes from the
simulator when the lesson runs. ``tests/core/netpol/test_lessons.py`` proves that each
start fails its flow tests and each solution passes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bpfleet_core.netpol import models

DEMO_TOPOLOGY = models.Topology.model_validate(
    {
        "namespaces": {
            "shop": {"team": "payments"},
            "monitoring": {"team": "sre"},
            "kube-system": {},
        },
        "pods": {
            "shop/web": {
                "labels": {"app": "web"},
                "ip": "10.10.1.10",
                "ports": [{"name": "http", "port": 80}],
            },
            "shop/db": {
                "labels": {"app": "db"},
                "ip": "10.10.1.20",
                "ports": [{"name": "pg", "port": 5432}],
            },
            "shop/batch": {"labels": {"app": "batch"}, "ip": "10.10.1.30"},
            "monitoring/prometheus": {
                "labels": {"app": "prometheus"},
                "ip": "10.10.2.10",
                "ports": [{"name": "web", "port": 9090}],
            },
            "kube-system/coredns": {
                "labels": {"k8s-app": "kube-dns"},
                "ip": "10.10.0.10",
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
        "nodes": {},
    }
)


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    goal: str
    start: str  # the policy the lesson opens with
    flows: str  # its flow-test file
    solution: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "goal": self.goal,
            "start": self.start,
            "flows": self.flows,
            "solution": self.solution,
        }


def _policy(name: str, spec: str) -> str:
    return (
        "apiVersion: networking.k8s.io/v1\n"
        "kind: NetworkPolicy\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  namespace: shop\n"
        "spec:\n" + spec
    )


def _flows(*rows: str) -> str:
    return "flows:\n" + "".join(f"  - {row}\n" for row in rows)


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "cross-namespace",
        "Across namespaces",
        "Prometheus, in namespace monitoring, must scrape the web endpoints on port 80; "
        "batch, in shop, must not reach them.",
        _policy(
            "web-ingress",
            "  podSelector:\n"
            "    matchLabels: {app: web}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - podSelector:\n"
            "            matchLabels: {app: prometheus}\n"
            "      ports:\n"
            "        - port: 80\n",
        ),
        _flows(
            "monitoring/prometheus -> shop/web TCP/80 expect allow",
            "shop/batch -> shop/web TCP/80 expect deny",
        ),
        _policy(
            "web-ingress",
            "  podSelector:\n"
            "    matchLabels: {app: web}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - namespaceSelector:\n"
            "            matchLabels: {kubernetes.io/metadata.name: monitoring}\n"
            "          podSelector:\n"
            "            matchLabels: {app: prometheus}\n"
            "      ports:\n"
            "        - port: 80\n",
        ),
    ),
    Lesson(
        "egress-to-pod",
        "Egress to a pod",
        "Web may open connections to the database on port 5432 and look names up, "
        "and nothing else.",
        _policy(
            "web-egress",
            "  podSelector:\n"
            "    matchLabels: {app: web}\n"
            "  policyTypes: [Egress]\n"
            "  egress:\n"
            "    - ports:\n"
            "        - {protocol: UDP, port: 53}\n",
        ),
        _flows(
            "shop/web -> shop/db TCP/5432 expect allow",
            "shop/web -> kube-system/coredns UDP/53 expect allow",
            "shop/web -> monitoring/prometheus TCP/9090 expect deny",
        ),
        _policy(
            "web-egress",
            "  podSelector:\n"
            "    matchLabels: {app: web}\n"
            "  policyTypes: [Egress]\n"
            "  egress:\n"
            "    - ports:\n"
            "        - {protocol: UDP, port: 53}\n"
            "    - to:\n"
            "        - podSelector:\n"
            "            matchLabels: {app: db}\n"
            "      ports:\n"
            "        - port: 5432\n",
        ),
    ),
    Lesson(
        "dns",
        "DNS",
        "Batch may reach the database on 5432, and must be able to resolve names "
        "(kube-dns, UDP 53).",
        _policy(
            "batch-egress",
            "  podSelector:\n"
            "    matchLabels: {app: batch}\n"
            "  policyTypes: [Egress]\n"
            "  egress:\n"
            "    - to:\n"
            "        - podSelector:\n"
            "            matchLabels: {app: db}\n"
            "      ports:\n"
            "        - port: 5432\n",
        ),
        _flows(
            "shop/batch -> kube-system/coredns UDP/53 expect allow",
            "shop/batch -> shop/db TCP/5432 expect allow",
            "shop/batch -> shop/web TCP/80 expect deny",
        ),
        _policy(
            "batch-egress",
            "  podSelector:\n"
            "    matchLabels: {app: batch}\n"
            "  policyTypes: [Egress]\n"
            "  egress:\n"
            "    - to:\n"
            "        - podSelector:\n"
            "            matchLabels: {app: db}\n"
            "      ports:\n"
            "        - port: 5432\n"
            "    - to:\n"
            "        - namespaceSelector:\n"
            "            matchLabels: {kubernetes.io/metadata.name: kube-system}\n"
            "          podSelector:\n"
            "            matchLabels: {k8s-app: kube-dns}\n"
            "      ports:\n"
            "        - {protocol: UDP, port: 53}\n"
            "        - {protocol: TCP, port: 53}\n",
        ),
    ),
    Lesson(
        "combining-rules",
        "How rules combine",
        "Only web may reach the database, and only on port 5432.",
        _policy(
            "db-ingress",
            "  podSelector:\n"
            "    matchLabels: {app: db}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - podSelector:\n"
            "            matchLabels: {app: web}\n"
            "    - ports:\n"
            "        - port: 5432\n",
        ),
        _flows(
            "shop/web -> shop/db TCP/5432 expect allow",
            "shop/batch -> shop/db TCP/5432 expect deny",
            "shop/web -> shop/db TCP/22 expect deny",
        ),
        _policy(
            "db-ingress",
            "  podSelector:\n"
            "    matchLabels: {app: db}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - podSelector:\n"
            "            matchLabels: {app: web}\n"
            "      ports:\n"
            "        - port: 5432\n",
        ),
    ),
    Lesson(
        "empty-selectors",
        "Empty selectors",
        "Every endpoint of namespace shop may reach the database on 5432; "
        "nothing from another namespace may.",
        _policy(
            "db-ingress",
            "  podSelector:\n"
            "    matchLabels: {app: db}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - namespaceSelector: {}\n"
            "      ports:\n"
            "        - port: 5432\n",
        ),
        _flows(
            "shop/batch -> shop/db TCP/5432 expect allow",
            "shop/web -> shop/db TCP/5432 expect allow",
            "monitoring/prometheus -> shop/db TCP/5432 expect deny",
        ),
        _policy(
            "db-ingress",
            "  podSelector:\n"
            "    matchLabels: {app: db}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - podSelector: {}\n"
            "      ports:\n"
            "        - port: 5432\n",
        ),
    ),
)
