"""Each template validates and does what its title says, by the simulator."""

from __future__ import annotations

import pytest

from bpfleet_core.netpol import drafting, flowtests, lessons, templates

FLOWS = {
    "default-deny-ingress": [
        "shop/web -> shop/db TCP/5432 expect deny",
        "monitoring/prometheus -> shop/web TCP/80 expect deny",
        "shop/web -> kube-system/coredns UDP/53 expect allow",
    ],
    "default-deny-egress": [
        "shop/web -> kube-system/coredns UDP/53 expect allow",
        "shop/web -> kube-system/coredns TCP/53 expect allow",
        "shop/web -> shop/db TCP/5432 expect deny",
        "shop/web -> 203.0.113.10 TCP/443 expect deny",
    ],
    "same-namespace": [
        "shop/web -> shop/db TCP/5432 expect allow",
        "monitoring/prometheus -> shop/db TCP/5432 expect deny",
    ],
    "from-namespace": [
        "monitoring/prometheus -> shop/db TCP/5432 expect allow",
        "shop/web -> shop/db TCP/5432 expect deny",
    ],
    "internet": [
        "shop/web -> 203.0.113.10 TCP/443 expect allow",
        "shop/web -> 10.1.2.3 TCP/443 expect deny",
        "shop/web -> 192.168.1.1 TCP/443 expect deny",
        "shop/web -> kube-system/coredns UDP/53 expect allow",
        "shop/web -> shop/db TCP/5432 expect deny",
    ],
}


@pytest.mark.parametrize("template", templates.render("shop"), ids=lambda item: item.id)
def test_each_template_does_what_it_says(template: templates.Template) -> None:
    draft = drafting.read(template.text)
    assert draft.valid, [str(item) for item in draft.diagnostics]
    assert "#" in template.text or template.id in ("same-namespace", "from-namespace")
    tests = flowtests.parse("flows:\n" + "".join(f"  - {row}\n" for row in FLOWS[template.id]))
    result = drafting.simulate(draft, [], lessons.DEMO_TOPOLOGY, None, tests)
    failing = [item.text for item in result.flows if not item.passed]
    assert failing == []
    assert [policy.namespace for policy in draft.policies] == ["shop"]


def test_the_peer_namespace_is_the_one_asked_for() -> None:
    [template] = [item for item in templates.render("shop", "batch") if item.id == "from-namespace"]
    assert "kubernetes.io/metadata.name: batch" in template.text
    assert template.title == "From namespace batch"
